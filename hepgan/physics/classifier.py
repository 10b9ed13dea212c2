"""Classifier test: can a small network tell generated from reference showers?

A two-hidden-layer MLP (JAX + optax, fixed seed) learns to label generated (1) against reference (0)
events; the ROC AUC on events it never saw says how well: 0.5 means indistinguishable, 1.0 (or 0.0)
perfectly separable. The AUC error is the Hanley-McNeil (1982) standard error, so "compatible with 0.5"
has a number attached.

The protocol follows the CaloChallenge 2022 evaluation (``code/evaluate.py`` of CaloChallenge/homepage:
train/test/validation 60/20/20, the model kept from the epoch that did best on a split it was not trained
on, the AUC on a third split):

1. **Each distinct event under one label only.** Rows found in both sets (``evaluate(x, x)``, or a
   generator that returns events of the reference) are each kept on one side, chosen at random, half
   each. Otherwise a network that memorises its training events scores every held-out copy with the
   label its twin had in training, the opposite one: a set compared with itself gave AUC 0.31.
2. **Balanced classes:** both sets are cut to the smaller size.
3. **Split on events:** each set is split 60/20/20 into train/validation/test, identical rows always in
   the same split.
4. **Early stopping:** AdamW on minibatches, one validation loss (BCE) per epoch; the parameters of the
   best validation epoch are kept and training stops after ``patience`` epochs without improvement.
5. **AUC on the test split.**

Written with JAX/optax because they are the project's stack; scikit-learn is not a dependency.
"""

from __future__ import annotations

import hashlib
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

SPLIT = (0.6, 0.2, 0.2)
"""Train / validation / test fractions of each set (the CaloChallenge evaluation's split)."""


def auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> tuple[float, float]:
    """ROC AUC ``P(score_pos > score_neg)`` (ties count 1/2) from the rank sum, and its Hanley-McNeil
    standard error. ``scores_pos: [P]``, ``scores_neg: [Q]``."""
    p, q = len(scores_pos), len(scores_neg)
    ranks = stats.rankdata(np.concatenate([scores_pos, scores_neg]))
    a = float((ranks[:p].sum() - p * (p + 1) / 2) / (p * q))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (p - 1) * (q1 - a * a) + (q - 1) * (q2 - a * a)) / (p * q)
    return a, float(np.sqrt(max(var, 0.0)))


def row_keys(a: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of ``a: [N, F]`` -> ``[N]`` uint64: equal rows (bit for bit) get equal keys.

    Hashing one row at a time keeps memory flat for raw-cell inputs (tens of kB per row); a collision
    between different rows (probability ~N^2 / 2^64) would only merge two events into one group."""
    a = np.ascontiguousarray(a)
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in a)
    return np.frombuffer(digests, dtype=np.uint64).copy()


def split_events(
    keys: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split rows with ``keys: [N]`` into parts of about ``fractions`` of ``N`` rows (sum 1), rows with
    equal keys always in one part. Returns one index array per part."""
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    order = rng.permutation(len(uniq))
    start = np.cumsum(counts[order]) - counts[order]  # rows before each group, in the shuffled order
    bounds = np.cumsum(fractions)[:-1] * len(keys)
    part = np.empty(len(uniq), np.int64)
    part[order] = np.searchsorted(bounds, start, side="right")
    row_part = part[inverse]
    return [np.flatnonzero(row_part == k) for k in range(len(fractions))]


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


def _optimizer(lr: float) -> optax.GradientTransformation:
    return optax.adamw(lr, weight_decay=1e-4)


@jax.jit
def _loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(_forward(params, x), y))


@partial(jax.jit, static_argnames=("batch", "lr"))
def _epoch(
    params: Any, opt_state: Any, key: jax.Array, x: jax.Array, y: jax.Array, *, batch: int, lr: float
) -> tuple[Any, Any]:
    """One pass over a fresh permutation of ``x: [N, F]`` in minibatches (the last one topped up from
    the start of the permutation, so that every step has the same shape)."""
    n = x.shape[0]
    steps = -(-n // batch)
    idx = jax.random.permutation(key, n)[jnp.arange(steps * batch) % n].reshape(steps, batch)
    opt = _optimizer(lr)

    def step(carry: Any, rows: jax.Array) -> tuple[Any, None]:
        p, s = carry
        g = jax.grad(_loss)(p, x[rows], y[rows])
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), idx)
    return params, opt_state


def _one_label_per_event(
    g: np.ndarray, r: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Drop rows so that no distinct event is in both sets: each shared one stays on one side, chosen
    at random, half each. Returns ``(g, keys_g, r, keys_r, n_shared)``."""
    kg, kr = row_keys(g), row_keys(r)
    shared = np.intersect1d(kg, kr)
    if shared.size == 0:
        return g, kg, r, kr, 0
    to_gen = shared[rng.permutation(shared.size)[: (shared.size + 1) // 2]]
    keep_g = ~np.isin(kg, shared) | np.isin(kg, to_gen)
    keep_r = ~np.isin(kr, to_gen)
    return g[keep_g], kg[keep_g], r[keep_r], kr[keep_r], int(shared.size)


def feature_pair(gen: np.ndarray, ref: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``gen: [N, F]`` and ``ref: [M, F]`` as float32; ``ValueError`` naming ``name`` unless both are 2-D
    with the same number of features ``F``."""
    g = np.asarray(gen, np.float32)
    r = np.asarray(ref, np.float32)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1]:
        raise ValueError(
            f"{name}: generated and reference inputs must be [N, F] arrays with the same F; "
            f"got {g.shape} and {r.shape}"
        )
    return g, r


def classifier_auc(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    seed: int = 0,
    hidden: tuple[int, ...] = (64, 64),
    max_epochs: int = 200,
    patience: int = 10,
    batch: int = 128,
    lr: float = 1e-3,
    split: tuple[float, float, float] = SPLIT,
    name: str = "classifier",
) -> dict[str, float]:
    """Train on ``gen: [N, F]`` (label 1) vs ``ref: [M, F]`` (label 0) with the protocol of the module
    docstring and return ``{"auc", "auc_err"}`` on the test split, plus ``n_train``, ``n_val``,
    ``n_test`` (events, both labels), ``n_shared`` (distinct events found in both sets), ``epochs``
    (trained) and ``best_epoch`` (kept). Inputs are standardised with the training split's mean and
    spread. Raises :class:`InsufficientEventsError` when fewer than :data:`MIN_EVENTS` distinct events
    per label remain, ``ValueError`` for arrays that are not ``[N, F]`` with one ``F``."""
    g, r = feature_pair(gen, ref, name)
    if len(split) != 3 or min(split) <= 0 or not np.isclose(sum(split), 1.0):
        raise ValueError(
            f"{name}: split must be three positive train/validation/test fractions summing to 1; got {split}"
        )
    rng = np.random.default_rng(seed)
    g, kg, r, kr, n_shared = _one_label_per_event(g, r, rng)
    n = min(len(g), len(r))
    if n < MIN_EVENTS:
        where = "in each set" + (" once events found in both sets are kept on one side" if n_shared else "")
        raise InsufficientEventsError(name, MIN_EVENTS, n, where)
    pick_g, pick_r = rng.permutation(len(g))[:n], rng.permutation(len(r))[:n]
    g, kg, r, kr = g[pick_g], kg[pick_g], r[pick_r], kr[pick_r]
    parts_g, parts_r = split_events(kg, split, rng), split_events(kr, split, rng)

    def xy(k: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = g[parts_g[k]], r[parts_r[k]]
        return np.concatenate([a, b]), np.concatenate(
            [np.ones(len(a), np.float32), np.zeros(len(b), np.float32)]
        )

    (x_train, y_train), (x_val, y_val) = xy(0), xy(1)
    mu, sd = x_train.mean(0), x_train.std(0)
    sd[sd == 0] = 1.0

    def prep(a: np.ndarray) -> jax.Array:
        return jnp.asarray((a - mu) / sd)

    xt, yt, xv, yv = prep(x_train), jnp.asarray(y_train), prep(x_val), jnp.asarray(y_val)
    key_init, key = jax.random.split(jax.random.key(seed))
    params = _init(key_init, (x_train.shape[1], *hidden, 1))
    batch = min(batch, len(x_train))
    # optax mixes Python floats with its int32 step count, which strict dtype promotion rejects
    with jax.numpy_dtype_promotion("standard"):
        opt_state = _optimizer(lr).init(params)
        best_loss, best_params, best_epoch, epoch = np.inf, params, 0, 0
        for epoch in range(1, max_epochs + 1):
            key, k = jax.random.split(key)
            params, opt_state = _epoch(params, opt_state, k, xt, yt, batch=batch, lr=lr)
            val_loss = float(_loss(params, xv, yv))
            if val_loss < best_loss:
                best_loss, best_params, best_epoch = val_loss, params, epoch
            elif epoch - best_epoch >= patience:
                break
    fwd = jax.jit(_forward)
    s_g = np.asarray(fwd(best_params, prep(g[parts_g[2]])))
    s_r = np.asarray(fwd(best_params, prep(r[parts_r[2]])))
    a, err = auc(s_g, s_r)
    return {
        "auc": a,
        "auc_err": err,
        "n_train": float(len(x_train)),
        "n_val": float(len(x_val)),
        "n_test": float(len(s_g) + len(s_r)),
        "n_shared": float(n_shared),
        "epochs": float(epoch),
        "best_epoch": float(best_epoch),
    }


def cell_inputs(ecal: np.ndarray, energy: np.ndarray, threshold: float = 1e-4) -> np.ndarray:
    """Raw-cell classifier inputs ``[N, X*Y*Z + 1]``: ``log1p(cell / threshold)`` (compresses the five
    decades of cell energies without losing the empty cells) and ``log10(E / GeV)``.
    ``ecal: [N, X, Y, Z] GeV``, ``energy: [N] GeV``."""
    flat = np.log1p(np.maximum(np.asarray(ecal, np.float32).reshape(len(ecal), -1), 0.0) / threshold)
    return np.concatenate([flat, np.log10(np.asarray(energy, np.float32))[:, None]], axis=1)
