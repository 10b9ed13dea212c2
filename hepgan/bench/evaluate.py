"""Benchmark: evaluate 10^4 generated against 10^4 reference fixed25 showers, all metrics and figures.

Target: under 2 minutes on a 2-core CPU. Reports the wall time of each stage (observables, each metric,
figures + report) and, as the baseline measured in the same run, the plain NumPy time of the total energy
and profiles of both sets (the floor any evaluation pays to touch every cell once).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np

from hepgan.data.simulate import SimulatorConfig, simulate
from hepgan.data.types import Showers
from hepgan.physics.extract import extract
from hepgan.physics.metrics import evaluate_observables
from hepgan.physics.report import write_report


def _numpy_floor(showers: Showers) -> None:
    x = showers.ecal
    x.sum(axis=(1, 2, 3))
    x.sum(axis=(2, 3))
    x.sum(axis=(1, 3))
    x.sum(axis=(1, 2))


def run(quick: bool = False) -> dict[str, Any]:
    """Time a full evaluation; ``quick`` uses 10^3 events per set."""
    n = 1_000 if quick else 10_000
    t0 = time.perf_counter()
    ref = simulate(n, energy="uniform:10:500", seed=1)
    gen = simulate(n, energy="uniform:10:500", config=SimulatorConfig(radial_scale=1.05), seed=2)
    t_sim = time.perf_counter() - t0

    t0 = time.perf_counter()
    _numpy_floor(gen)
    _numpy_floor(ref)
    t_floor = time.perf_counter() - t0

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    g, r = extract(gen), extract(ref)
    timings["observables"] = time.perf_counter() - t0
    metrics = evaluate_observables(g, r, metrics="all", seed=0, cells=(gen, ref), timings=timings)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_report(tmp, gen, ref, metrics, observables=(g, r))
    timings["figures_and_report"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    return {
        "events_per_set": n,
        "grid": list(ref.grid),
        "total_s": total,
        "target_s": 120.0,
        "within_target": bool(total < 120.0),
        "seconds_per_stage": timings,
        "baseline_numpy_sums_s": t_floor,
        "ratio_total_to_numpy_sums": total / t_floor if t_floor > 0 else float("nan"),
        "simulation_s": t_sim,
        "headline": {
            k: metrics[k] for k in ("physics_score", "sf_rel_error", "fpd", "kpd", "auc_hlf", "auc_cells")
        },
        "note": "generated = radial_scale 1.05, reference = default simulator; fixed25 grid",
        "mean_cell_energy_gev": float(np.mean(ref.ecal)),
    }
