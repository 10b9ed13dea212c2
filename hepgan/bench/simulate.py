"""Simulator throughput: showers/s per energy and per geometry, and the default training set end to end.

The target: the default training set (10^5 fixed25 showers, uniform 10-500 GeV) in under 5 minutes with
two worker processes on a 2-core machine, i.e. >= 333 showers/s. The single-process rate on a subset,
measured in the same run, is the baseline for the worker speed-up.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np

from hepgan.bench.common import best_of
from hepgan.data.simulate import SimulatorConfig, iter_simulate, simulate

TARGET_SHOWERS_PER_S = 1e5 / 300.0


def _rate(n: int, **kw: Any) -> float:
    return n / best_of(lambda: simulate(n, **kw), repeats=3, warmup=1)


def _stream(n: int, workers: int) -> dict[str, Any]:
    """Simulate ``n`` default-set showers as a stream (as ``hepgan-simulate`` does), keeping only totals."""
    t0 = time.perf_counter()
    count, visible = 0, 0.0
    for part in iter_simulate(n, energy="uniform:10:500", seed=1, workers=workers, chunk=1000):
        count += len(part)
        visible += float(part.ecal.sum(dtype=np.float64) / part.energy.sum(dtype=np.float64)) * len(part)
    wall = time.perf_counter() - t0
    return {
        "events": count,
        "workers": workers,
        "seconds": round(wall, 2),
        "showers_per_s": round(count / wall, 1),
        "mean_sampling_fraction": round(visible / max(count, 1), 5),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; ``quick`` uses small sizes (a smoke run, figures not meaningful)."""
    n_fixed = 200 if quick else 2000
    per_energy = {f"{e:g}": round(_rate(n_fixed, energy=float(e), seed=3), 1) for e in (10.0, 100.0, 500.0)}
    per_geometry = {
        "fixed25": round(_rate(n_fixed, energy="uniform:10:500", seed=3), 1),
        "angle51": round(
            _rate(
                n_fixed // 2,
                energy="uniform:2:500",
                theta_deg=(60.0, 120.0),
                config=SimulatorConfig(geometry="angle51"),
                seed=3,
            ),
            1,
        ),
    }
    n_full = 4000 if quick else 100_000
    baseline = _stream(2000 if quick else 10_000, workers=1)
    full = _stream(n_full, workers=2)
    return {
        "description": "GFLASH-style simulator, showers/s (single process unless stated)",
        "showers_per_s_by_energy_gev_fixed25": per_energy,
        "showers_per_s_by_geometry_uniform": per_geometry,
        "baseline_1_worker": baseline,
        "default_training_set": full,
        "speedup_2_workers_vs_1": round(full["showers_per_s"] / baseline["showers_per_s"], 2),
        "target_showers_per_s": round(TARGET_SHOWERS_PER_S, 1),
        "meets_target": bool(full["showers_per_s"] >= TARGET_SHOWERS_PER_S),
        "max_rss_mb_main_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "quick": quick,
    }
