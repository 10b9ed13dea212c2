"""Optimizers, learning-rate schedules and batch-size scaling rules.

The 3DGAN papers train with Keras RMSprop at lr 1e-3; Keras and optax differ in two defaults that matter:
Keras RMSprop uses ``rho=0.9`` and ``epsilon=1e-7`` *outside* the square root
(``p -= lr * g / (sqrt(v) + eps)``), optax defaults to ``eps=1e-8`` inside it. :func:`make_optimizer`
builds the Keras form (``eps_in_sqrt=False``, accumulator starting at 0).
"""

from __future__ import annotations

import math
from typing import Any

import optax

SCALINGS = ("none", "linear", "sqrt")
DECAYS = ("constant", "cosine")
OPTIMIZERS = ("rmsprop", "adam")


def scaled_lr(base_lr: float, global_batch: int, ref_batch: int, rule: str) -> float:
    """Learning rate for ``global_batch`` from ``base_lr`` tuned at ``ref_batch``.

    ``linear``: ``base * B / B_ref`` (Goyal et al.; the Horovod 3DGAN used ``lr x workers``);
    ``sqrt``: ``base * sqrt(B / B_ref)`` (the rule that keeps gradient-noise scale for adaptive methods);
    ``none``: ``base``.
    """
    if rule not in SCALINGS:
        raise ValueError(f"optim.scaling: unknown rule {rule!r}; valid: {list(SCALINGS)}")
    if global_batch <= 0 or ref_batch <= 0:
        raise ValueError(f"optim: batch sizes must be positive, got {global_batch} and ref_batch={ref_batch}")
    ratio = global_batch / ref_batch
    return base_lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def lr_schedule(peak: float, *, warmup_steps: int, total_steps: int, decay: str) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then constant or cosine down to 0."""
    if decay not in DECAYS:
        raise ValueError(f"optim.decay: unknown {decay!r}; valid: {list(DECAYS)}")
    if decay == "constant":
        after = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
    if warmup_steps <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), after], [warmup_steps])


def make_optimizer(cfg: Any, lr: float, total_steps: int) -> optax.GradientTransformation:
    """One player's optimizer from ``cfg`` (an ``OptimConfig``) at base learning rate ``lr``.

    RMSprop and Adam updates are linear in the learning rate, so the trainer builds them with ``lr=1``
    and scales the updates by the rate kept in the state.

    ``total_steps`` counts this player's optimizer updates (it sets the cosine length).
    """
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}; valid: {list(OPTIMIZERS)}")
    sched = lr_schedule(lr, warmup_steps=cfg.warmup_steps, total_steps=total_steps, decay=cfg.decay)
    if cfg.name == "rmsprop":
        tx = optax.rmsprop(sched, decay=cfg.rho, eps=cfg.eps, eps_in_sqrt=False)
    else:
        tx = optax.adam(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.clip_norm is not None and cfg.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx
