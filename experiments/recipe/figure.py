"""Convergence figure of a recipe run: physics_score and classifier AUC against showers seen and time.

    python experiments/recipe/figure.py RUN_DIR experiments/recipe/convergence.png

Reads ``RUN_DIR/val.csv`` (written by hepgan-train, with ``showers_seen`` and ``train_seconds``) and
draws :func:`hepgan.physics.plots.convergence_figure`.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from hepgan.physics.plots import convergence_figure


def main(run_dir: str, out: str) -> None:
    """Write the convergence figure of the run in ``run_dir`` to ``out`` (PNG)."""
    with open(Path(run_dir) / "val.csv", newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    fig = convergence_figure(rows, title=f"{Path(run_dir).name}: validation on held-out showers")
    fig.savefig(out, dpi=110)
    print(f"wrote {out} ({len(rows)} validations)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
