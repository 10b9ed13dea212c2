"""Machine settings tried on the 2-core development VM: glibc malloc settings, one core per XLA compute
thread (pinned through Linux ``/proc``), and the page faults and system CPU time of the timed steps.

The scaling benchmark (:mod:`hepgan.bench.scaling`) times the trainer's step with one XLA thread per
worker and ``taskset`` cores; it neither sets the allocator nor places single threads. The scaling runs
of 2026-11-27 (experiments/scaling/README.md, docs/training.md "CPU runs: the memory allocator") did
both. This module applies them again from outside the package: its worker runs the benchmark's own
worker (:func:`hepgan.bench.scaling.worker`) and, through a stand-in for the worker's input pipeline,
pins the compute threads after warm-up and counts the page faults of the timed steps.

An investigation of one 2-core VM (README.md beside this script), not part of the package:

    python experiments/cpu_interference/vm_knobs.py [--backend shard_map] [--devices 2]
        [--malloc keep|hugetlb|default|TUNABLES] [--no-pin-threads] [--per-device-batch 8] [--quick]
        [--json FILE]

times one configuration in a fresh process as the benchmark's driver launched it then (``xla`` and
``shard_map``: one process with ``--devices`` simulated CPU devices on cores ``0..devices-1``; ``mpi`` and
``independent``: the benchmark's own launcher, one core per process, nothing to pin) and prints the
median step time, the page faults and the pinned threads; ``--json`` also writes the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hepgan.bench import scaling
from hepgan.bench.scaling import ONE_THREAD, per_device_batch_or_default

# The library's worker, kept before main() replaces scaling.worker in a worker process.
library_worker = scaling.worker

# glibc malloc: one heap, no mmap, no trimming, transparent huge pages, so a step's large XLA temporaries
# are reused rather than faulted in again each step (docs/training.md, "CPU runs: the memory allocator").
KEEP_MEMORY = (
    "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
    "glibc.malloc.trim_threshold=68719476736"
)
# The settings compared on 2026-11-27; "default" is glibc's own (no GLIBC_TUNABLES).
MALLOC = {"keep": KEEP_MEMORY, "hugetlb": "glibc.malloc.hugetlb=1", "default": ""}
TASKS = "/proc/self/task"


@contextlib.contextmanager
def malloc_settings(tunables: str) -> Iterator[None]:
    """``GLIBC_TUNABLES=tunables`` in this process's environment inside the block (``""``: unset), for the
    processes started there; glibc reads it at process start, so this process itself is unaffected.
    The previous value is restored on exit."""
    before = os.environ.get("GLIBC_TUNABLES")
    os.environ.pop("GLIBC_TUNABLES", None)
    if tunables:
        os.environ["GLIBC_TUNABLES"] = tunables
    try:
        yield
    finally:
        os.environ.pop("GLIBC_TUNABLES", None)
        if before is not None:
            os.environ["GLIBC_TUNABLES"] = before


def thread_cpu_ticks(tasks: str | Path = TASKS) -> dict[int, tuple[str, int]]:
    """``{thread id: (name, user + system CPU ticks)}`` of the threads listed in ``tasks`` (Linux
    ``/proc/<pid>/task``; default this process's)."""
    out = {}
    for task in Path(tasks).iterdir():
        try:
            name = (task / "comm").read_text().strip()
            # after the ")" closing the name: field 3 (state) first, so utime and stime are 11 and 12
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (name, int(fields[11]) + int(fields[12]))
    return out


def pin_compute_threads(n: int, tasks: str | Path = TASKS) -> list[dict[str, Any]]:
    """Pin the ``n`` busiest XLA compute threads of this process (``tf_XLA*``: with one intra-op thread
    per device, one thread runs each device's program) to the first ``n`` cores this process may use,
    one each; returns what was pinned (thread name, id, core, CPU ticks so far). The process's other
    threads (Python, input prefetch) keep the whole core set. Nothing for ``n < 2`` or without
    ``/proc``. Neither JAX nor XLA exposes thread placement for CPU devices, hence ``/proc``."""
    if n < 2 or not Path(tasks).is_dir():
        return []
    cores = sorted(os.sched_getaffinity(0))
    threads = thread_cpu_ticks(tasks).items()
    xla = [(ticks, tid, name) for tid, (name, ticks) in threads if name.startswith("tf_XLA")]
    busy = sorted(xla, reverse=True)[:n]
    pinned = []
    for core, (ticks, tid, name) in zip(cores, busy, strict=False):
        os.sched_setaffinity(tid, {core})
        pinned.append({"thread": name, "tid": tid, "core": core, "warmup_cpu_ticks": ticks})
    return pinned


def fault_counters() -> tuple[int, float]:
    """This process's minor page faults and system CPU seconds so far (``getrusage``)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


class TimedSteps:
    """Stands in for the benchmark worker's input pipeline, which the worker reads once per step: the
    ``warmup`` warm-up steps, 3 traced ones with ``profile``, then the timed ones; then it closes it.

    Before the first batch after warm-up it calls ``pin()`` (kept in :attr:`pinned`); over the timed
    steps, from their first batch to :meth:`close`, it counts page faults and system CPU time (on CPU,
    XLA's large temporaries come from malloc, and how often their pages are faulted in again is set by
    the allocator)."""

    def __init__(self, pipe: Any, warmup: int, profile: bool, pin: Callable[[], list[dict[str, Any]]]):
        self.pipe = pipe
        self.warmup = warmup
        self.first_timed = warmup + (3 if profile else 0)
        self.pin = pin
        self.batches = 0
        self.pinned: list[dict[str, Any]] = []
        self.before: tuple[int, float] | None = None
        self.after: tuple[int, float] | None = None

    def __iter__(self) -> TimedSteps:
        return self

    def __next__(self) -> Any:
        if self.batches == self.warmup:
            self.pinned = self.pin()
        if self.batches == self.first_timed:
            self.before = fault_counters()
        self.batches += 1
        return next(self.pipe)

    def close(self) -> None:
        """Close the pipeline, then read the counters: the end of the timed steps."""
        self.pipe.close()
        self.after = fault_counters()

    def per_step(self, steps: int) -> dict[str, float | None]:
        """Minor page faults and system CPU seconds per timed step (``None`` where not counted)."""
        if self.before is None or self.after is None:
            return {"minor_page_faults_per_step": None, "system_cpu_s_per_step": None}
        return {
            "minor_page_faults_per_step": (self.after[0] - self.before[0]) / steps,
            "system_cpu_s_per_step": (self.after[1] - self.before[1]) / steps,
        }


def instrumented_worker(
    a: argparse.Namespace, pin: Callable[[int], list[dict[str, Any]]] | None = pin_compute_threads
) -> dict[str, Any]:
    """The benchmark's worker (:func:`hepgan.bench.scaling.worker`, arguments ``a`` as its ``worker``
    command parses them) in this process, with ``pin(devices)`` after warm-up (``xla``/``shard_map``;
    ``None``: no pinning) and the page faults of the timed steps counted. Returns the worker's result
    plus ``pinned_threads``, ``glibc_tunables`` (this process's ``GLIBC_TUNABLES``),
    ``minor_page_faults_per_step`` and ``system_cpu_s_per_step``."""
    import hepgan.train.run as train_run

    build_run = train_run.build_run
    made: list[TimedSteps] = []

    def pin_now() -> list[dict[str, Any]]:
        return pin(a.devices) if pin is not None and a.backend != "mpi" else []

    def build_timed_run(*args: Any, **kw: Any) -> Any:
        run = build_run(*args, **kw)
        run.pipeline = TimedSteps(run.pipeline, a.warmup, bool(a.profile), pin_now)
        made.append(run.pipeline)
        return run

    train_run.build_run = build_timed_run
    try:
        res = library_worker(a)
    finally:
        train_run.build_run = build_run
    if len(made) != 1:
        raise RuntimeError(
            f"vm_knobs: expected the benchmark worker to build one run through "
            f"hepgan.train.run.build_run; it built {len(made)}"
        )
    timed = made[0]
    return {
        **res,
        "pinned_threads": timed.pinned,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        **timed.per_step(a.steps),
    }


def launch(
    backend: str,
    devices: int,
    per_device_batch: int,
    *,
    malloc: str = KEEP_MEMORY,
    pin: bool = True,
    size: str = "paper",
    conv_impl: str = "auto",
    steps: int = 8,
    warmup: int = 2,
    timeout: float = 1200,
) -> dict[str, Any]:
    """Time one configuration in fresh processes with ``GLIBC_TUNABLES=malloc`` (``""``: glibc's
    defaults); returns the (rank 0) worker's result.

    ``xla``/``shard_map``: this module's worker in one process with ``devices`` simulated CPU devices,
    one XLA thread each, allowed cores ``0..devices-1``, each device's compute thread pinned to its own
    core after warm-up (``pin``), page faults counted. ``mpi``/``independent``: the benchmark's own
    launcher (:func:`hepgan.bench.scaling._launch`), one core per process, step times only."""
    if backend in ("mpi", "independent"):
        with malloc_settings(malloc):
            return scaling._launch(
                backend, devices, per_device_batch, size=size, conv_impl=conv_impl, steps=steps, warmup=warmup
            )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        args = ["--backend", backend, "--devices", str(devices), "--per-device-batch", str(per_device_batch)]
        args += ["--size", size, "--conv-impl", conv_impl, "--steps", str(steps), "--warmup", str(warmup)]
        args += [] if pin else ["--no-pin-threads"]
        cmd = [sys.executable, str(Path(__file__).resolve()), "worker", *args, "--json", str(out)]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        # The device count first: XLA stops reading at the bare "intra_op_parallelism_threads=1".
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {ONE_THREAD}"
        env.pop("GLIBC_TUNABLES", None)
        if malloc:
            env["GLIBC_TUNABLES"] = malloc
        taskset = shutil.which("taskset")
        if taskset:
            cmd = [taskset, "-c", f"0-{min(devices, os.cpu_count() or 1) - 1}", *cmd]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"vm_knobs worker {backend} x{devices} failed:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python experiments/cpu_interference/vm_knobs.py [--backend B] [--devices N] [--malloc M]
    [--no-pin-threads] [--per-device-batch B] [--quick] [--json FILE]``, or the internal ``worker``
    (``vm_knobs.py worker [--no-pin-threads] <hepgan.bench.scaling worker arguments>``); returns the
    exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        w = argparse.ArgumentParser(prog="vm_knobs.py worker")
        w.add_argument("--no-pin-threads", dest="pin", action="store_false")
        known, rest = w.parse_known_args(argv[1:])
        pin = pin_compute_threads if known.pin else None
        # the benchmark's worker command (its arguments, its JSON) with this module's worker
        scaling.worker = lambda a: instrumented_worker(a, pin)  # type: ignore[assignment]
        return scaling.main(["worker", *rest])
    p = argparse.ArgumentParser(prog="vm_knobs.py", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--backend", choices=["xla", "shard_map", "mpi", "independent"], default="shard_map")
    p.add_argument("--devices", type=int, default=2, help="devices (processes for mpi, independent)")
    p.add_argument(
        "--malloc", default="keep", help=f"GLIBC_TUNABLES: one of {sorted(MALLOC)} or the string itself"
    )
    p.add_argument("--no-pin-threads", dest="pin", action="store_false")
    p.add_argument("--per-device-batch", type=int, default=None, help="default 8, 4 with --quick")
    p.add_argument("--quick", action="store_true", help="the tiny model, a few steps")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    res = launch(
        a.backend,
        a.devices,
        per_device_batch_or_default(a.per_device_batch, a.quick),
        malloc=MALLOC.get(a.malloc, a.malloc),
        pin=a.pin,
        size="tiny" if a.quick else "paper",
        steps=3 if a.quick else 8,
        warmup=1 if a.quick else 2,
    )
    faults = res.get("minor_page_faults_per_step")
    print(
        f"{a.backend} x{a.devices} malloc={a.malloc!r}: {res['step_s']:.3f} s/step (median), "
        f"page faults/step {'-' if faults is None else f'{faults:.1f}'}, "
        f"pinned {[(t['thread'], t['core']) for t in res.get('pinned_threads', [])]}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
