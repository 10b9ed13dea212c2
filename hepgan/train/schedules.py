"""The ``optim`` group's view of optimizers and learning-rate rules.

The mechanism lives in :mod:`hepgan.train.scaling` (rules, warm-up/decay schedules, the Keras-form
RMSprop, Adam, LARS, LAMB); this module only maps an ``OptimConfig`` onto it, for code that builds one
player's optimizer from the ``optim`` group alone (benchmarks, tests).

The 3DGAN papers train with Keras RMSprop at lr 1e-3; Keras and optax differ in two defaults that matter:
Keras RMSprop uses ``rho=0.9`` and ``epsilon=1e-7`` *outside* the square root
(``p -= lr * g / (sqrt(v) + eps)``), optax defaults to ``eps=1e-8`` inside it. The optimizers here are the
Keras form.
"""

from __future__ import annotations

from typing import Any

import optax

from hepgan.train import scaling

SCALINGS = scaling.RULES
DECAYS = scaling.DECAYS
OPTIMIZERS = ("rmsprop", "adam")


def scaled_lr(base_lr: float, global_batch: int, ref_batch: int, rule: str) -> float:
    """Learning rate for ``global_batch`` from ``base_lr`` tuned at ``ref_batch``.

    ``linear``: ``base * B / B_ref`` (Goyal et al.; the Horovod 3DGAN used ``lr x workers``);
    ``sqrt``: ``base * sqrt(B / B_ref)`` (Hoffer et al.); ``none``: ``base``.
    """
    if rule not in SCALINGS:
        raise ValueError(f"optim.scaling: unknown rule {rule!r}; valid: {list(SCALINGS)}")
    return base_lr * scaling.lr_factor(rule, global_batch, ref_batch)


def lr_schedule(peak: float, *, warmup_steps: int, total_steps: int, decay: str) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then constant or cosine down to 0."""
    return scaling.schedule(peak, warmup_steps=warmup_steps, total_steps=total_steps, decay=decay)


def make_optimizer(cfg: Any, lr: float, total_steps: int) -> optax.GradientTransformation:
    """One player's optimizer from ``cfg`` (an ``OptimConfig``) at base learning rate ``lr``.

    ``total_steps`` counts this player's optimizer updates (it sets the cosine length).
    """
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}; valid: {list(OPTIMIZERS)}")
    sched = lr_schedule(lr, warmup_steps=cfg.warmup_steps, total_steps=total_steps, decay=cfg.decay)
    return scaling.make_optimizer(
        cfg.name, sched, rho=cfg.rho, eps=cfg.eps, b1=cfg.b1, b2=cfg.b2, clip_norm=cfg.clip_norm
    )
