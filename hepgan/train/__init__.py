"""hepgan.train: the GAN state, losses, the jitted update, the trainer ``fit`` and its checkpoints.

``fit(cfg) -> dict`` trains from a composed config (``hepgan.train.config.compose([...])``) and returns
the final metrics; ``hepgan-train`` is its command-line entry point. ``build_run(cfg) -> Run`` assembles
the parts of a run (models, state, update, pipeline, backend) the one way every entry point does
(:mod:`hepgan.train.run`). ``compile_step(cfg)`` compiles a
config's step without training it; ``evaluate_checkpoint(run_dir)`` scores a run's generator on fresh
held-out showers (:mod:`hepgan.train.api`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NonFiniteError",
    "Preempted",
    "Run",
    "build_run",
    "compile_step",
    "compose",
    "evaluate_checkpoint",
    "fit",
]


def __getattr__(name: str) -> Any:
    # loaded on first use: importing hepgan.train should not pull in Hydra, Orbax and the models
    if name in ("fit", "NonFiniteError", "Preempted"):
        from hepgan.train import loop

        return getattr(loop, name)
    if name in ("compile_step", "evaluate_checkpoint"):
        from hepgan.train import api

        return getattr(api, name)
    if name in ("build_run", "Run"):
        from hepgan.train import run

        return getattr(run, name)
    if name == "compose":
        from hepgan.train.config import compose

        return compose
    raise AttributeError(f"module 'hepgan.train' has no attribute {name!r}")
