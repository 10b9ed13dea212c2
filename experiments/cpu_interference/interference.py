"""What a busy neighbour core costs one training worker: the ceiling of data-parallel efficiency on a
shared CPU.

Two data-parallel workers on two cores of one CPU share that CPU's last-level cache (L3) and memory
bandwidth, so even workers that never communicate are slower together than one alone (the scaling
benchmark's ``independent`` configuration). This measurement says which shared resource it is. It times
the scaling benchmark's one-worker configuration (the trainer's step of the paper fixed-angle 3DGAN, one
XLA thread, pinned to core 0; :func:`hepgan.bench.scaling._launch`, with the ``KEEP_MEMORY`` malloc
settings of ``vm_knobs.py`` beside this script) alone and next to each of three neighbour processes
pinned to core 1:

- ``spin``: a pure-Python loop: the core is busy, the caches and memory are almost untouched;
- ``dram``: copies between two 512 MiB arrays: memory bandwidth, far beyond any cache;
- ``llc``: copies between two arrays that together fill the last-level cache (its size from sysfs):
  the shared cache is kept busy.

Each repeat measures the four cases in turn; ``slowdown`` is the case's step time over the step time
alone of the same repeat (a 1.15 slowdown caps a 2-worker efficiency at 1 / 1.15 = 87 %).

An investigation of one 2-core VM (README.md beside this script), not part of the package:

    python experiments/cpu_interference/interference.py --out experiments/cpu_interference [--repeats R]
        [--per-device-batch B] [--quick]

writes ``interference.json`` into ``--out`` (default: this folder); ``--quick`` runs the tiny model, one
repeat, a few steps.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vm_knobs import KEEP_MEMORY, malloc_settings  # beside this script

from hepgan.bench.scaling import _launch, per_device_batch_or_default

DRAM_BYTES = 512 * 2**20  # per array: far larger than any last-level cache
_COPY_LOOP = (
    "import numpy as np\n"
    "a = np.ones({n} // 8); b = np.empty_like(a)\n"
    "while True:\n"
    "    np.copyto(b, a); np.copyto(a, b)\n"
)
SPIN = "while True:\n    pass\n"


def last_level_cache_bytes(
    default: int = 32 * 2**20, cache_dir: str | Path = "/sys/devices/system/cpu/cpu0/cache"
) -> int:
    """Size in bytes of the largest cache of CPU 0 (Linux sysfs ``cache_dir/index*/size``, e.g.
    "32768K"); ``default`` where sysfs does not say."""
    sizes = []
    for f in Path(cache_dir).glob("index*/size"):
        text = f.read_text().strip().upper()
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        with contextlib.suppress(ValueError):
            sizes.append(int(text.rstrip("KMG")) * unit)
    return max(sizes, default=default)


def neighbours(llc_bytes: int | None = None) -> dict[str, str | None]:
    """The neighbour programs by name (Python source, run with ``python -c``); ``None`` = no neighbour.
    ``llc`` copies between two arrays of half the last-level cache each."""
    llc = llc_bytes or last_level_cache_bytes()
    return {
        "alone": None,
        "spin": SPIN,
        "dram": _COPY_LOOP.format(n=DRAM_BYTES),
        "llc": _COPY_LOOP.format(n=llc // 2),
    }


@contextlib.contextmanager
def neighbour(code: str | None, core: int, settle_s: float = 1.0) -> Iterator[subprocess.Popen[bytes] | None]:
    """Run ``python -c code`` pinned to ``core`` for the duration of the ``with`` block, then kill it
    (also when the block raises). ``code=None``: no neighbour. ``settle_s``: seconds given to the
    neighbour to start (import numpy, allocate) before the block runs."""
    if code is None:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        os.sched_setaffinity(proc.pid, {core})
        time.sleep(settle_s)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"interference benchmark: the neighbour process ended early:\n{err[-2000:]}")
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def run(quick: bool = False, repeats: int = 3, per_device_batch: int | None = None) -> dict[str, Any]:
    """Step time of one worker on core 0 alone and next to each neighbour on core 1, ``repeats`` times.

    ``per_device_batch``: showers per step (default 8 as in the scaling benchmark; 4 with ``quick``).
    Returns the JSON-able result: every measurement, and per neighbour the slowdowns (step time over the
    same repeat's step time alone), their median and the efficiency cap ``1 / median slowdown``.
    Needs at least 2 cores.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError(
            f"interference benchmark: needs 2 cores (one for the worker, one for the neighbour); "
            f"this process may use {len(cores)} ({cores})"
        )
    batch = per_device_batch_or_default(per_device_batch, quick)
    kw: dict[str, Any] = {
        "size": "tiny" if quick else "paper",
        "conv_impl": "auto",
        "steps": 3 if quick else 8,
        "warmup": 1 if quick else 2,
    }
    llc = last_level_cache_bytes()
    programs = neighbours(llc)
    runs: list[dict[str, Any]] = []
    for rep in range(1 if quick else max(1, repeats)):
        alone = None
        for name, code in programs.items():
            # the worker is pinned to the first core it may use (_launch with one worker), the neighbour
            # to the second; only the worker runs with the malloc settings, as when this was recorded
            with neighbour(code, cores[1]), malloc_settings(KEEP_MEMORY):
                r = _launch("xla", 1, batch, **kw)
            alone = r["step_s"] if name == "alone" else alone
            runs.append(
                {
                    "repeat": rep,
                    "neighbour": name,
                    "step_s": r["step_s"],
                    "step_s_all": r["step_s_all"],
                    "slowdown": r["step_s"] / alone if alone else None,
                }
            )
            print(f"   repeat {rep} {name:6s} {r['step_s']:.3f} s/step", flush=True)
    return {
        "model": {"arch": "fixed25", "size": kw["size"], "conv_impl": "auto", "schedule": "paper"},
        "per_device_batch": batch,
        "worker_core": cores[0],
        "neighbour_core": cores[1],
        "last_level_cache_bytes": llc,
        "dram_copy_bytes": 2 * DRAM_BYTES,
        "glibc_tunables": KEEP_MEMORY,
        "runs": runs,
        "summary": summarize(runs),
        "notes": (
            "slowdown = step time next to the neighbour / step time alone in the same repeat; "
            "efficiency_cap = 1 / median slowdown, the most a 2-worker data-parallel run can reach when "
            "its other worker loads the machine as this neighbour does"
        ),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per neighbour (``runs[i]["neighbour"]``, ``alone`` excluded): every repeat's ``slowdown``, the
    median and ``efficiency_cap = 1 / median``."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["neighbour"] for r in runs if r["neighbour"] != "alone"):
        slow = [r["slowdown"] for r in runs if r["neighbour"] == name and r["slowdown"] is not None]
        med = statistics.median(slow) if slow else None
        out[name] = {"slowdown": slow, "median_slowdown": med, "efficiency_cap": 1 / med if med else None}
    return out


def main(argv: list[str] | None = None) -> int:
    """``python experiments/cpu_interference/interference.py [--quick] [--out DIR] [--repeats R]
    [--per-device-batch B]``; returns the exit code."""
    p = argparse.ArgumentParser(prog="interference.py", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--per-device-batch", type=int, default=None)
    a = p.parse_args(argv)
    from hepgan.bench.common import write_result

    result = run(quick=a.quick, repeats=a.repeats, per_device_batch=a.per_device_batch)
    for name, c in result["summary"].items():
        slow = ", ".join(f"{x:.3f}" for x in c["slowdown"])
        cap = 100 * c["efficiency_cap"]
        print(f"{name:6s} slowdown median {c['median_slowdown']:.3f} ({slow}); efficiency cap {cap:.1f} %")
    print(f"wrote {write_result('interference', result, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
