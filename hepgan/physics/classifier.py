"""Classifier test: can a small network tell generated from reference showers?

A two-hidden-layer MLP (JAX + optax, fixed seed) is trained on a balanced, shuffled split and scored on
held-out events by the ROC AUC: 0.5 means indistinguishable, 1.0 (or 0.0) perfectly separable. The AUC
error is the Hanley-McNeil (1982) standard error, so "compatible with 0.5" has a number attached.
Written with JAX/optax because they are the project's stack; scikit-learn is not needed for an MLP and
a rank-sum AUC.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from hepgan.physics.errors import InsufficientEventsError

MIN_EVENTS = 200
"""Fewest events per set: with fewer, the held-out AUC error exceeds ~0.05 and the test says nothing."""

MAX_CELL_EVENTS = 5000
"""Events per set fed to the raw-cell classifier: its input is the whole grid, and beyond a few thousand
events the test gets slower without the verdict changing."""


def auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> tuple[float, float]:
    """ROC AUC ``P(score_pos > score_neg)`` (ties count 1/2) from the rank sum, and its Hanley-McNeil
    standard error. ``scores_pos: [P]``, ``scores_neg: [Q]``."""
    p, q = len(scores_pos), len(scores_neg)
    ranks = stats.rankdata(np.concatenate([scores_pos, scores_neg]))
    a = float((ranks[:p].sum() - p * (p + 1) / 2) / (p * q))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (p - 1) * (q1 - a * a) + (q - 1) * (q2 - a * a)) / (p * q)
    return a, float(np.sqrt(max(var, 0.0)))


def _init(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    for k, (n_in, n_out) in zip(keys, itertools.pairwise(sizes), strict=True):
        w = jax.random.normal(k, (n_in, n_out), jnp.float32) * jnp.sqrt(jnp.float32(2.0 / n_in))
        params.append({"w": w, "b": jnp.zeros((n_out,), jnp.float32)})
    return params


def _forward(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"][None, :])
    return (x @ params[-1]["w"] + params[-1]["b"][None, :])[:, 0]


@partial(jax.jit, static_argnames=("sizes", "steps", "batch", "lr"))
def _train(
    key: jax.Array, x: jax.Array, y: jax.Array, *, sizes: tuple[int, ...], steps: int, batch: int, lr: float
) -> list[dict[str, jax.Array]]:
    k_init, k_data = jax.random.split(key)
    params = _init(k_init, sizes)
    opt = optax.adamw(lr, weight_decay=1e-4)

    def loss_fn(p: Any, xb: jax.Array, yb: jax.Array) -> jax.Array:
        return jnp.mean(optax.sigmoid_binary_cross_entropy(_forward(p, xb), yb))

    def step(carry: Any, k: jax.Array) -> tuple[Any, None]:
        p, s = carry
        idx = jax.random.randint(k, (batch,), 0, x.shape[0])
        g = jax.grad(loss_fn)(p, x[idx], y[idx])
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_data, steps))
    return params


def classifier_auc(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    seed: int = 0,
    hidden: tuple[int, ...] = (64, 64),
    steps: int = 400,
    batch: int = 256,
    lr: float = 1e-3,
    test_fraction: float = 0.3,
    name: str = "classifier",
) -> dict[str, float]:
    """Train on ``gen: [N, F]`` (label 1) vs ``ref: [M, F]`` (label 0) and return held-out
    ``{"auc", "auc_err", "n_train", "n_test"}``. Both sets are cut to the smaller size (balanced
    classes) and standardised with the training split's mean and spread."""
    n = min(len(gen), len(ref))
    if n < MIN_EVENTS:
        raise InsufficientEventsError(name, MIN_EVENTS, n, "in each set")
    rng = np.random.default_rng(seed)
    g = np.asarray(gen, np.float32)[rng.permutation(len(gen))[:n]]
    r = np.asarray(ref, np.float32)[rng.permutation(len(ref))[:n]]
    n_test = max(int(n * test_fraction), 1)
    x_train = np.concatenate([g[n_test:], r[n_test:]])
    y_train = np.concatenate([np.ones(n - n_test, np.float32), np.zeros(n - n_test, np.float32)])
    mu, sd = x_train.mean(0), x_train.std(0)
    sd[sd == 0] = 1.0

    def prep(a: np.ndarray) -> jax.Array:
        return jnp.asarray((a - mu) / sd)

    # optax mixes Python floats with its int32 step count, which strict dtype promotion rejects
    with jax.numpy_dtype_promotion("standard"):
        params = _train(
            jax.random.key(seed),
            prep(x_train),
            jnp.asarray(y_train),
            sizes=(x_train.shape[1], *hidden, 1),
            steps=steps,
            batch=min(batch, len(x_train)),
            lr=lr,
        )
    fwd = jax.jit(_forward)
    a, err = auc(np.asarray(fwd(params, prep(g[:n_test]))), np.asarray(fwd(params, prep(r[:n_test]))))
    return {"auc": a, "auc_err": err, "n_train": float(len(x_train)), "n_test": float(2 * n_test)}


def cell_inputs(ecal: np.ndarray, energy: np.ndarray, threshold: float = 1e-4) -> np.ndarray:
    """Raw-cell classifier inputs ``[N, X*Y*Z + 1]``: ``log1p(cell / threshold)`` (compresses the five
    decades of cell energies without losing the empty cells) and ``log10(E / GeV)``.
    ``ecal: [N, X, Y, Z] GeV``, ``energy: [N] GeV``."""
    flat = np.log1p(np.maximum(np.asarray(ecal, np.float32).reshape(len(ecal), -1), 0.0) / threshold)
    return np.concatenate([flat, np.log10(np.asarray(energy, np.float32))[:, None]], axis=1)
