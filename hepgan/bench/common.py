"""Shared helpers for benchmarks: machine description, timing, JSON results.

Benchmarks measure; tests never assert on time. Every result carries the machine it came from and, where
a speed-up is claimed, the baseline measured in the same run.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hepgan.fileio import write_json


def machine_info() -> dict[str, Any]:
    """Describe the machine and software a figure came from (CPU model, cores, JAX backend and devices)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import jax

        info["jax"] = jax.__version__
        info["backend"] = jax.default_backend()
        info["devices"] = [str(d.device_kind) for d in jax.devices()]
    except Exception as exc:  # a benchmark without JAX still records the machine
        info["jax_error"] = repr(exc)
    return info


def best_of(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Wall seconds of the fastest of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    ``fn`` must block until its work is done (call ``jax.block_until_ready`` on JAX outputs).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pipeline_epoch_rates(
    source: Any, arch: str, batch: int, *, seed: int, steps: int | None = None, epochs: int = 1
) -> tuple[list[float], int]:
    """Showers/s of each of ``epochs`` shuffled epochs of a training :class:`~hepgan.data.pipeline.Pipeline`
    over ``source`` (``arch``'s preprocessing, prefetch 2), timing ``steps`` batches per epoch (default
    all; the rest of an epoch is read untimed before the next), arrays waited for on the device.
    Returns the rates and the number of timed batches per epoch."""
    import jax

    from hepgan.data.pipeline import Pipeline, Preprocess

    pipe = Pipeline(source, batch, Preprocess.for_model(arch), seed=seed, process_index=0, process_count=1)
    n = pipe.steps_per_epoch if steps is None else min(steps, pipe.steps_per_epoch)
    rates = []
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            for _ in range(n):
                jax.block_until_ready(next(pipe))
            rates.append(n * batch / (time.perf_counter() - t0))
            if epoch + 1 < epochs:
                for _ in range(pipe.steps_per_epoch - n):  # finish the epoch untimed
                    next(pipe)
    finally:
        pipe.close()
    return rates, n


def write_result(name: str, result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``result`` (plus machine and date) to ``out_dir/<name>.json`` and return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **result,
    }
    return write_json(out / f"{name}.json", payload, sort_keys=False)
