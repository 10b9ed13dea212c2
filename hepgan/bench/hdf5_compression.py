"""HDF5 storage options against file size, writing time and the training pipeline's reading speed.

Run with ``hepgan-bench hdf5_compression`` (``--quick`` for a smoke run); the result goes to
``experiments/bench/hdf5_compression.json`` and the choice of ``formats.DEFAULT_COMPRESSION`` rests on
it (``docs/data.md``, "Storage").

For each case (``fixed25`` showers in the ``fixed25`` format, ``angle51`` in ``angle``, ``ds2`` in
``calochallenge``) the simulator makes ``n`` showers once; then for each storage variant (none, lzf and
gzip at levels 1 and 4, with and without the byte-shuffle filter, and with one event per chunk):

1. the showers are written with ``formats.write_files`` (wall seconds; bytes on disk);
2. the files are read ``repeats`` times, each time through new file handles, and the median is kept:

   - ``pipeline_cached``: what training from files does by default (``DataConfig.cache=True``): a
     :class:`~hepgan.data.source.FileSource` with its RAM cache under a
     :class:`~hepgan.data.pipeline.Pipeline` (shuffled, the model's preprocessing, prefetch 2, arrays on
     the default JAX device). ``first_epoch`` decodes each file once into the cache (uncompressed 3DGAN
     files are never cached: they are read by positional reads); ``later_epoch`` is the next epoch.
   - ``pipeline_stream``: the same without the RAM cache (``cache=False``, files beyond
     ``cache_max_gb``): every scattered row decodes its whole chunk; ``stream_steps`` batches timed.
   - ``sequential``: ``formats.iter_showers`` in chunks of 500 with the value checks, the path of
     ``hepgan-evaluate``, ``hepgan-data info`` and ``convert``.

"none" is the in-run baseline of every ratio. The files were just written, so the operating system's page
cache holds them: the figures compare decoding costs, not disks (a cold or network disk favours the
smaller files).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax

from hepgan.bench.common import pipeline_epoch_rates
from hepgan.data import formats
from hepgan.data.formats import Storage
from hepgan.data.simulate import SimulatorConfig, simulate
from hepgan.data.source import FileSource
from hepgan.data.types import Showers

# case -> (file format, energy spectrum, angle in degrees, batch); batches as the paper configs
CASES: dict[str, tuple[str, str, float | tuple[float, float], int]] = {
    "fixed25": ("fixed25", "uniform:10:500", 90.0, 128),
    "angle51": ("angle", "uniform:2:500", (60.0, 120.0), 64),
    "ds2": ("calochallenge", "loguniform:1:1000", 90.0, 128),
}

VARIANTS: dict[str, Storage] = {
    "none": Storage(),
    "lzf": Storage("lzf", shuffle=False),
    "lzf+shuffle": Storage("lzf", shuffle=True),
    "gzip:1": Storage("gzip", 1, shuffle=False),
    "gzip:1+shuffle": Storage("gzip", 1, shuffle=True),
    "gzip:4+shuffle": Storage("gzip", 4, shuffle=True),
    "lzf+shuffle,chunk=1": Storage("lzf", shuffle=True, chunk_events=1),
    "gzip:1+shuffle,chunk=1": Storage("gzip", 1, shuffle=True, chunk_events=1),
}
"""Storage variants by name; ``chunk=1``: one event per chunk (else about 1 MiB of whole events)."""

READS = ("pipeline_cached_first_epoch", "pipeline_cached_later_epoch", "pipeline_stream", "sequential")
"""The reading figures of every variant (showers/s)."""


def _chunks(showers: Showers, size: int = 500) -> Iterator[Showers]:
    for a in range(0, len(showers), size):
        yield showers[a : a + size]


def _pipeline_rates(
    paths: list[Path], arch: str, batch: int, cache: bool, seed: int, steps: int | None, epochs: int
) -> list[float]:
    """Showers/s of each of ``epochs`` shuffled epochs (``steps`` batches each, default all) through a
    new ``FileSource`` and ``Pipeline``; arrays waited for on the device."""
    src = FileSource(paths, cache=cache)
    try:
        return pipeline_epoch_rates(src, arch, batch, seed=seed, steps=steps, epochs=epochs)[0]
    finally:
        src.close()


def _sequential_rate(paths: list[Path]) -> float:
    t0 = time.perf_counter()
    n = sum(len(s) for s in formats.iter_showers(paths, chunk=500))
    return n / (time.perf_counter() - t0)


def _measure(paths: list[Path], arch: str, batch: int, repeats: int, stream_steps: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {k: [] for k in READS}
    for r in range(repeats):
        first, later = _pipeline_rates(paths, arch, batch, cache=True, seed=r, steps=None, epochs=2)
        runs["pipeline_cached_first_epoch"].append(first)
        runs["pipeline_cached_later_epoch"].append(later)
        (stream,) = _pipeline_rates(paths, arch, batch, cache=False, seed=r, steps=stream_steps, epochs=1)
        runs["pipeline_stream"].append(stream)
        runs["sequential"].append(_sequential_rate(paths))
    return {k: statistics.median(v) for k, v in runs.items()}


def run(
    quick: bool = False,
    *,
    cases: Sequence[str] | None = None,
    n: int | None = None,
    repeats: int | None = None,
    variants: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure every storage variant on every case; returns a JSON-able dict (sizes in bytes, times in
    seconds, rates in showers/s, ratios against ``"none"`` of the same case and run).

    Args:
        quick: small sizes (a smoke run).
        cases: names of :data:`CASES` (default all).
        n: showers per case (default 3000 fixed25, 1000 angle51, 3000 ds2; a tenth with ``quick``);
            at least one batch.
        repeats: reading repeats, median kept (default 3; 1 with ``quick``).
        variants: names of :data:`VARIANTS` (default all); ``"none"`` is always measured first.
    """
    names = list(CASES) if cases is None else list(cases)
    chosen = ["none", *(v for v in (variants or VARIANTS) if v != "none")]
    unknown = [c for c in names if c not in CASES] + [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ValueError(
            f"unknown cases or variants {unknown}; cases {list(CASES)}, variants {list(VARIANTS)}"
        )
    reps = repeats or (1 if quick else 3)
    stream_steps = 2 if quick else 8
    sizes = {"fixed25": 3000, "angle51": 1000, "ds2": 3000}
    out_cases: dict[str, Any] = {}
    for case in names:
        fmt, energy, theta, batch = CASES[case]
        count = n or (sizes[case] // 10 if quick else sizes[case])
        cfg = SimulatorConfig.for_geometry(case)
        t0 = time.perf_counter()
        showers = simulate(count, energy=energy, theta_deg=theta, config=cfg, seed=0, workers=2)
        sim_s = time.perf_counter() - t0
        if fmt == "fixed25":
            showers = Showers(showers.ecal, showers.energy)  # normal incidence: the public files' keys
        per_file = max(batch, count // 3)
        results: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="hepgan-bench-hdf5-") as tmp:
            for name in chosen:
                storage = VARIANTS[name]
                folder = Path(tmp) / name.replace(":", "").replace(",", "_").replace("+", "_")
                t0 = time.perf_counter()
                paths = formats.write_files(
                    _chunks(showers), folder, fmt=fmt, events_per_file=per_file, compression=storage
                )
                write_s = time.perf_counter() - t0
                size = sum(p.stat().st_size for p in paths)
                if name == "none":  # untimed: compile the device transfer, warm the allocator
                    _pipeline_rates(paths, case, batch, cache=False, seed=99, steps=2, epochs=1)
                reads = _measure(paths, case, batch, reps, stream_steps)
                results[name] = {
                    "codec": storage.codec or "none",
                    "level": storage.level,
                    "shuffle": bool(storage.codec and storage.shuffle),
                    "chunk_events": storage.chunk_events,
                    "bytes": size,
                    "write_seconds": write_s,
                    "read_showers_per_s": reads,
                }
                for p in paths:  # keep the temporary disk use at one variant
                    p.unlink()
        base = results["none"]
        for r in results.values():
            r["size_ratio_vs_none"] = r["bytes"] / base["bytes"]
            r["write_ratio_vs_none"] = r["write_seconds"] / base["write_seconds"]
            r["read_ratio_vs_none"] = {
                k: r["read_showers_per_s"][k] / base["read_showers_per_s"][k] for k in READS
            }
        out_cases[case] = {
            "format": fmt,
            "events": count,
            "events_per_file": per_file,
            "files": -(-count // per_file),
            "raw_cell_bytes": int(showers.ecal.nbytes) * (2 if fmt == "calochallenge" else 1),
            "global_batch": batch,
            "simulate_seconds": sim_s,
            "variants": results,
        }
        del showers
    return {
        "description": "HDF5 storage variants: size, write time, training-pipeline and sequential reading",
        "repeats": reps,
        "stream_steps": stream_steps,
        "statistic": "median over repeats, each through new file handles",
        "page_cache": "warm (files just written): decoding costs, not disk speed",
        "device": str(jax.devices()[0].device_kind),
        "cases": out_cases,
    }
