"""hepgan.train: the GAN state, losses, the jitted update, the trainer ``fit`` and its checkpoints.

``fit(cfg) -> dict`` trains from a composed config (``hepgan.train.config.compose([...])``) and returns
the final metrics; ``hepgan-train`` is its command-line entry point.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NonFiniteError", "compose", "fit"]


def __getattr__(name: str) -> Any:
    # loaded on first use: importing hepgan.train should not pull in Hydra, Orbax and the models
    if name in ("fit", "NonFiniteError"):
        from hepgan.train import loop

        return getattr(loop, name)
    if name == "compose":
        from hepgan.train.config import compose

        return compose
    raise AttributeError(f"module 'hepgan.train' has no attribute {name!r}")
