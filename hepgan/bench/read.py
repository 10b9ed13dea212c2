"""Reading fixed25 HDF5 files into preprocessed training batches, against the simulator's speed.

Requirement measured: reading a directory of fixed25 files into preprocessed batches runs at least 10x
faster than the simulator on the same machine. Run with ``hepgan-bench read`` (``--quick`` for a smoke
run); the result goes to ``experiments/bench/read.json``.

What runs, in one process:

1. baseline: the simulator makes ``n_sim`` fixed25 showers with ``workers=2`` (showers/s, best of two
   runs, worker start-up included);
2. those showers, repeated, are written as fixed25 files of ``events_per_file`` events
   (uncompressed, ``compression=None``) into a temporary directory (file contents do not change reading
   speed; repeating them saves simulator time);
3. a :class:`~hepgan.data.pipeline.Pipeline` over a :class:`~hepgan.data.source.FileSource` of that
   directory iterates full epochs: global batch 128, shuffled (random access across the files), fixed25
   preprocessing, prefetch 2, arrays placed on the default JAX device and waited for (showers/s, best
   of two epochs). This is the figure the requirement is judged on.
4. for comparison, a smaller set written with ``compression="lzf"`` (chunked): read without the RAM
   cache (a few batches: every random row decompresses its whole chunk) and with it (``cache=True``,
   the ``DataConfig`` default: the first epoch loads the files, a later one is served from memory).

The files were just written, so the OS page cache holds them: the figures are for a warm page cache (a
node-local disk or a well-cached parallel file system), not a cold disk. On a VM the cached first epoch
also pays first-touch page faults of the freshly allocated cache, which vary with the host's load.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax

from hepgan.bench.common import best_of, pipeline_epoch_rates
from hepgan.data import formats
from hepgan.data.simulate import simulate
from hepgan.data.source import FileSource
from hepgan.data.types import Showers


def _rate(source: FileSource, batch: int, seed: int, steps: int | None = None) -> tuple[float, int]:
    """Showers/s over ``steps`` shuffled batches (default: one epoch), waited for on the device."""
    rates, n = pipeline_epoch_rates(source, "fixed25", batch, seed=seed, steps=steps)
    return rates[0], n


def _repeat(showers: Showers, n: int) -> Iterator[Showers]:
    """``showers`` repeated up to ``n`` events."""
    m = len(showers)
    return (showers[: min(m, n - s)] for s in range(0, n, m))


def run(quick: bool = False) -> dict[str, Any]:
    """Measure simulator and file-reading throughput; returns a JSON-able dict (rates in showers/s)."""
    if quick:
        n_sim, n_events, per_file, n_packed, packed_per_file = 400, 2000, 1000, 1000, 500
    else:
        n_sim, n_events, per_file, n_packed, packed_per_file = 2000, 20000, 10000, 5000, 2500
    batch = 128

    out: dict[str, Any] = {}

    def sim() -> None:
        out["showers"] = simulate(n_sim, energy="uniform:10:500", seed=0, workers=2)

    sim_s = best_of(sim, repeats=2, warmup=0)
    sim_rate = n_sim / sim_s
    showers = out.pop("showers")

    with tempfile.TemporaryDirectory(prefix="hepgan-bench-read-") as tmp:
        plain, packed = Path(tmp) / "plain", Path(tmp) / "lzf"
        t0 = time.perf_counter()
        paths = formats.write_files(
            _repeat(showers, n_events), plain, fmt="fixed25", events_per_file=per_file, compression=None
        )
        write_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in paths)
        formats.write_files(
            _repeat(showers, n_packed),
            packed,
            fmt="fixed25",
            events_per_file=packed_per_file,
            compression="lzf",
        )
        del showers

        src = FileSource(plain)
        (r1, steps), (r2, _) = _rate(src, batch, seed=1), _rate(src, batch, seed=2)
        files_rate = max(r1, r2)
        src.close()

        slow = FileSource(packed, cache=False)
        lzf_rate, lzf_steps = _rate(slow, batch, seed=1, steps=4)
        slow.close()
        cached = FileSource(packed, cache=True)
        lzf_first, _ = _rate(cached, batch, seed=2)  # loads every file into RAM
        lzf_cached, _ = _rate(cached, batch, seed=3)
        cached.close()

    return {
        "description": "fixed25 files -> shuffled preprocessed batches (Pipeline) vs the simulator",
        "simulator": {"events": n_sim, "workers": 2, "seconds": sim_s, "showers_per_s": sim_rate},
        "files": {
            "events": n_events,
            "files": len(paths),
            "events_per_file": per_file,
            "bytes": size,
            "write_seconds": write_s,
        },
        "pipeline": {
            "global_batch": batch,
            "shuffle": True,
            "prefetch": 2,
            "steps_per_epoch": steps,
            "device": str(jax.devices()[0].device_kind),
            "showers_per_s": files_rate,
        },
        "ratio_vs_simulator": files_rate / sim_rate,
        "requirement": "uncompressed fixed25 files -> preprocessed batches >= 10x the simulator",
        "requirement_met": bool(files_rate / sim_rate >= 10.0),
        "lzf_compressed": {
            "events": n_packed,
            "events_per_file": packed_per_file,
            "no_cache_showers_per_s": lzf_rate,
            "no_cache_steps_timed": lzf_steps,
            "cache_first_epoch_showers_per_s": lzf_first,
            "cache_showers_per_s": lzf_cached,
            "ratio_no_cache_vs_simulator": lzf_rate / sim_rate,
            "ratio_cache_vs_simulator": lzf_cached / sim_rate,
        },
        "page_cache": "warm (files just written)",
    }
