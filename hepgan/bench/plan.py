"""Start-up of one sweep array task against the length N of its plan: indexed read vs whole-plan read.

An array task of an N-entry plan needs its own entries only. Measured here, for N = 10^2 ... 10^6:

- ``startup``: a fresh process running ``hepgan-sweep run PLAN K --dry-run`` (``python -m
  hepgan.cli.sweep``), which resolves task K exactly as a training task does (index header, the task's
  offsets, its own lines) and prints its entries instead of training; for K = first, middle and last
  entry, timed from launch to exit.
- ``baseline``: the task path before the index, in a fresh process with the same imports: the whole plan
  parsed twice (once for the entry count, once for the entries), as ``run`` did; N <= 10^5 (10^6 would
  take minutes), task K = the middle entry, one process at the largest N (it takes seconds).
- ``lookup``: in-process time of :func:`hepgan.sweep.plan.read_plan_entries` alone (median of repeats).

The plans are written directly as text (realistic lines of about 160 bytes: six overrides and Optuna
metadata), then indexed with ``index_plan`` (that time is reported too). They are read from the page cache
right after being written; on a shared file system the whole-plan read is slower still.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hepgan.sweep.plan import PLAN_HEADER, index_plan, plan_index_path, read_plan_entries

SIZES = (10**2, 10**3, 10**4, 10**5, 10**6)
QUICK_SIZES = (10**2, 10**3, 10**4)
BASELINE_MAX = 10**5

# the task path before the plan index: cmd_run counted the entries with read_plan, run_plan_entries read
# the plan again for the task's entry; the imports are those of `python -m hepgan.cli.sweep`
_BASELINE_CHILD = """
import json, sys
import hepgan.cli.sweep
try:
    import optuna
except ImportError:
    pass
from hepgan.sweep.plan import read_plan, task_entries
path, task = sys.argv[1], int(sys.argv[2])
indices = task_entries(task, len(read_plan(path)))
entries = read_plan(path)
for i in indices:
    print(json.dumps({"index": i, "overrides": list(entries[i].overrides)}))
"""


def write_bench_plan(path: str | os.PathLike, n: int) -> Path:
    """Write an ``n``-entry plan of realistic lines (about 160 bytes each) straight as text; no index.

    Entry ``i`` is ``optim.lr_g=... optim.lr_d=... train.batch_size=... model=... train.label_flip=...
    +tag='grid run <i>'  # optuna_study=bench optuna_trial=<i>``, so every line is distinct.
    """
    if n < 1:
        raise ValueError(f"plan size must be >= 1; got {n}")
    models = ("fixed25_paper", "fixed25", "anglegan_paper")
    lines = [PLAN_HEADER, f"# benchmark plan: {n} entries"]
    lines += [
        f"optim.lr_g={1e-5 * (1 + i % 97):.6g} optim.lr_d={1e-5 * (1 + i % 89):.6g} "
        f"train.batch_size={32 * (1 + i % 8)} model={models[i % 3]} train.label_flip={(i % 11) / 100:.2f} "
        f"+tag='grid run {i:08d}'  # optuna_study=bench optuna_trial={i}"
        for i in range(n)
    ]
    p = Path(path)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _child(argv: list[str]) -> tuple[float, str]:
    """Wall seconds of one fresh Python process and its stdout; RuntimeError when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv[:3]} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc.stdout


def _resolved_index(stdout: str) -> int:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("{"))
    return int(json.loads(line)["index"])


def _task_startup(plan: Path, k: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` fresh processes running ``hepgan-sweep run PLAN k --dry-run``."""
    times = []
    for _ in range(repeats):
        wall, out = _child(["-m", "hepgan.cli.sweep", "run", str(plan), str(k), "--dry-run"])
        if _resolved_index(out) != k:
            raise RuntimeError(f"task {k} of {plan} resolved another entry: {out[:500]}")
        times.append(wall)
    return times


def _baseline_startup(plan: Path, k: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` fresh processes taking the whole-plan task path (two full parses)."""
    times = []
    for _ in range(repeats):
        wall, out = _child(["-c", _BASELINE_CHILD, str(plan), str(k)])
        if _resolved_index(out) != k:
            raise RuntimeError(f"baseline task {k} of {plan} resolved another entry: {out[:500]}")
        times.append(wall)
    return times


def _lookup(plan: Path, k: int, repeats: int) -> float:
    """Median in-process seconds of ``read_plan_entries(plan, [k])``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        read_plan_entries(plan, [k])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(
    quick: bool = False,
    *,
    sizes: Sequence[int] | None = None,
    baseline_max: int = BASELINE_MAX,
    repeats: int | None = None,
    lookup_repeats: int = 200,
    workdir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Task start-up against plan length, with the index and (baseline, same run) without it.

    ``sizes``: plan lengths (default 10^2..10^6; ``quick``: 10^2..10^4); ``baseline_max``: the largest N
    given the whole-plan baseline; ``repeats``: fresh processes per figure (default 5, ``quick`` 1);
    ``workdir``: where the plans go (default a temporary folder, removed afterwards).

    Returns ``{"per_n": [...], "index_startup_ratio": t(N_max)/t(N_min), "index_lookup_ratio": ...,
    "interpreter_s": ..., ...}``; per N: ``startup_s`` (first/middle/last task: the fastest of the fresh
    processes, the least disturbed by other work on the machine; all of them in ``startup_runs_s``),
    ``startup_task_s`` (median of the three), ``baseline_startup_s`` (fastest, or None above
    ``baseline_max``; runs in ``baseline_runs_s``), ``old_over_new`` (baseline over
    ``startup_task_s``), ``lookup_s`` (first/middle/last, in process, median), ``plan_bytes``,
    ``index_bytes``, ``index_build_s`` (one byte scan, as a task does for a plan without index).
    """
    sizes = tuple(sizes) if sizes is not None else (QUICK_SIZES if quick else SIZES)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"plan sizes must be >= 1; got {sizes}")
    repeats = repeats if repeats is not None else (1 if quick else 5)
    if repeats < 1 or lookup_repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats} and lookup_repeats {lookup_repeats}")
    import numpy  # noqa: F401  (imported once here, so that index_build_s is the scan alone)

    with tempfile.TemporaryDirectory(prefix="hepgan-plan-bench-", dir=workdir) as d:
        interpreter = statistics.median(_child(["-c", "pass"])[0] for _ in range(repeats))
        per_n: list[dict[str, Any]] = []
        for n in sizes:
            plan = Path(d) / f"plan_{n}.txt"
            t0 = time.perf_counter()
            write_bench_plan(plan, n)
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            index_plan(plan)
            build_s = time.perf_counter() - t0
            tasks = {"first": 0, "middle": n // 2, "last": n - 1}
            runs = {name: _task_startup(plan, k, repeats) for name, k in tasks.items()}
            startup = {name: min(t) for name, t in runs.items()}
            lookup = {name: _lookup(plan, k, lookup_repeats) for name, k in tasks.items()}
            baseline_runs = None
            if n <= baseline_max:
                baseline_runs = _baseline_startup(plan, tasks["middle"], repeats if n < baseline_max else 1)
            baseline = None if baseline_runs is None else min(baseline_runs)
            task_s = statistics.median(startup.values())
            lookup_s = statistics.median(lookup.values())
            row: dict[str, Any] = {
                "n": n,
                "plan_bytes": plan.stat().st_size,
                "index_bytes": plan_index_path(plan).stat().st_size,
                "write_s": write_s,
                "index_build_s": build_s,
                "startup_s": startup,
                "startup_runs_s": runs,
                "startup_task_s": task_s,
                "baseline_startup_s": baseline,
                "baseline_runs_s": baseline_runs,
                "old_over_new": None if baseline is None else baseline / task_s,
                "lookup_s": lookup,
                "lookup_median_s": lookup_s,
            }
            per_n.append(row)
            print(
                f"   N={n:>8}: task start-up {task_s:.3f} s, lookup "
                f"{lookup_s * 1e6:.0f} us, whole-plan baseline "
                + ("-" if baseline is None else f"{baseline:.3f} s ({baseline / task_s:.1f}x)"),
                flush=True,
            )
            plan.unlink()
            plan_index_path(plan).unlink()
    lo, hi = per_n[0], per_n[-1]
    return {
        "sizes": list(sizes),
        "repeats": repeats,
        "lookup_repeats": lookup_repeats,
        "baseline_max": baseline_max,
        "interpreter_s": interpreter,
        "per_n": per_n,
        "index_startup_ratio": hi["startup_task_s"] / lo["startup_task_s"],
        "index_lookup_ratio": hi["lookup_median_s"] / lo["lookup_median_s"],
        "goal": "task start-up independent of N: index_startup_ratio close to 1",
    }
