"""Tiny trained runs for the explain tests: a healthy one and a deliberately collapsed one.

``collapsed_latent()`` (:mod:`hepgan.explain.faults`) is the fault injection: the generator ignores its
noise. Used around training *and* around the views that sample the generator, so the run is collapsed
wherever it is looked at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from hepgan.explain.faults import collapsed_latent

__all__ = ["collapsed_latent", "train_tiny"]


def train_tiny(out: Path, *, collapsed: bool = False, steps: int = 8, extra: Sequence[str] = ()) -> Path:
    """Train the tiny fixed-angle 3DGAN (``debug=default``: 64 simulated events, batch 16, 4 steps per
    epoch, validation each epoch on 256 reference showers) for ``steps`` steps into ``out``; with
    ``collapsed`` under :func:`collapsed_latent`. Logs every step, every checkpoint kept. Returns ``out``."""
    from hepgan.train import fit
    from hepgan.train.config import compose

    cfg = compose(
        [
            "debug=default",
            "data.n_reference=256",  # enough showers per energy bin for the diversity indicator
            f"train.max_steps={steps}",
            f"train.keep_last={steps + 1}",
            "parallel.devices=1",
            f"out={out}",
            *extra,
        ]
    )
    with collapsed_latent() if collapsed else contextlib.nullcontext():
        fit(cfg, handle_signals=False)
    return out
