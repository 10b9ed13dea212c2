"""CPU layout benchmark: the trainer's throughput with XLA's one shared device against one device per core.

``hepgan-bench layout`` runs ``hepgan-train`` itself (so it measures what training runs: the same config
groups, scaling rules, preprocessing and step) for the demo config and for the paper fixed25 model, each
in both CPU layouts, alternating, in fresh processes:

- ``shared``: ``parallel.cpu_layout=shared parallel.backend=xla``, XLA's one CPU device on all cores;
- ``per_core``: the default, one device per usable core with one compute thread each, backend ``auto``
  (``shard_map`` with global-batch BatchNorm).

Each run trains ``warmup + timed`` steps with the metrics logged every step; the figure is the median of
the per-step ``showers_per_s`` rows after the warm-up (compilation and the step-0 validation excluded).
The ratio per_core / shared is taken within each repeat, so both sides saw the same machine state.
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hepgan.parallel.cpu import usable_cores

LAYOUTS = {
    "shared": ["parallel.cpu_layout=shared", "parallel.backend=xla"],
    "per_core": ["parallel.cpu_layout=per_core", "parallel.backend=auto"],
}
# small data: the benchmark times steps, not the simulation of a training set
_COMMON = [
    "data.n_events=512",
    "data.n_reference=64",
    "train.val_metrics=[sf]",
    "train.report=false",
    "train.val_every_epochs=0",
    "train.ckpt_every_steps=0",
    "train.ckpt_every_epochs=1000",
    "logging.every_steps=1",
    "logging.progress=false",
    "logging.tensorboard=false",
]
CONFIGS = {
    "demo": [],  # the packaged defaults: what `make demo` trains
    "paper_fixed25": ["experiment=paper_fixed25", "train.batch_size=16"],
}


def _train(config: list[str], layout: list[str], steps: int, out: Path) -> list[float]:
    """Per-step showers/s of one ``hepgan-train`` process (``XLA_FLAGS`` cleared, so the layout decides)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    exe = Path(sys.executable).with_name("hepgan-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hepgan.cli.train"]
    args = [*config, *_COMMON, *layout, f"train.max_steps={steps}", f"out={out}"]
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"hepgan-train {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    with open(out / "train.csv") as f:
        return [float(row["showers_per_s"]) for row in csv.DictReader(f)]


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Both configs x both layouts, ``repeats`` times alternating; returns showers/s and ratios."""
    repeats = repeats or (1 if quick else 3)
    warmup, timed = (2, 3) if quick else (3, 8)
    configs = {"demo": CONFIGS["demo"]} if quick else CONFIGS
    out: dict[str, Any] = {
        "usable_cores": usable_cores(),
        "warmup_steps": warmup,
        "timed_steps": timed,
        "repeats": repeats,
        "layouts": LAYOUTS,
        "configs": configs,
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="hepgan-layout-") as tmp:
        for name, config in configs.items():
            rows: dict[str, list[float]] = {k: [] for k in LAYOUTS}
            ratios = []
            for r in range(repeats):
                for layout, flags in LAYOUTS.items():
                    rates = _train(config, flags, warmup + timed, Path(tmp) / f"{name}-{layout}-{r}")
                    rows[layout].append(statistics.median(rates[warmup:]))
                ratios.append(rows["per_core"][-1] / rows["shared"][-1])
                print(
                    f"   {name} repeat {r}: shared {rows['shared'][-1]:.2f}, per_core "
                    f"{rows['per_core'][-1]:.2f} showers/s ({ratios[-1]:.2f}x)",
                    flush=True,
                )
            out["results"][name] = {
                "showers_per_s": rows,
                "median_showers_per_s": {k: statistics.median(v) for k, v in rows.items()},
                "ratio_per_core_over_shared": ratios,
                "median_ratio": statistics.median(ratios),
            }
    return out
