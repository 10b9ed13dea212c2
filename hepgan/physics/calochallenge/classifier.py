"""The CaloChallenge binary classifier test (``cls-low`` and ``cls-high`` of the challenge's evaluation).

Reproduces the DNN protocol of ``code/evaluate.py`` of CaloChallenge/homepage:

- inputs: ``cls-low`` (the published "low-level" AUC) = ``[log10 E_inc, voxel energies / E_inc]`` after
  the readout threshold (:func:`low_level_inputs`); ``cls-high`` = the high-level feature vector
  (:meth:`~hepgan.physics.calochallenge.features.Features.hlf_vector`). No further scaling.
- labels: generated 0, reference 1; the AUC takes the reference as the positive class.
- split: each set shuffled and cut 60/20/20 into train / test / validation (the challenge fixes 60k /
  20k / 20k events for its 100k-event sets; the same fractions here), the parts of both sets pooled.
- network: ``Linear(F, H)``, then ``n_layer`` times ``Linear(H, H)``, each followed by LeakyReLU
  (slope 0.01), and ``Linear(H, 1)``; challenge defaults ``H = 2048``, ``n_layer = 2``, no dropout;
  PyTorch's default initialisation (weights and biases uniform in ``+-1/sqrt(fan_in)``).
- training: Adam (lr 2e-4, betas 0.9/0.999, eps 1e-8), BCE on logits, batch 1000 (the last partial batch
  of an epoch kept, at its own size), 50 epochs; after each epoch the accuracy on the test part; the
  parameters of the first epoch with the best accuracy are kept (training stops early only at accuracy 1).
- calibration: isotonic regression of the labels on the kept model's test-part probabilities (clipped to
  ``[1e-6, 1 - 1e-6]``, inputs beyond the fitted range clipped), applied to the validation part; the
  reported AUC (and JSD ``(log 2 - BCE) / log 2``) is that of the calibrated validation probabilities.

Differences: float32 instead of the challenge's float64; both sets are cut to the smaller size (the
challenge requires equal sizes); the AUC gets a Hanley-McNeil error. The published numbers are the mean
and spread of 10 trainings; one call here is one training.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hepgan.physics.calochallenge.features import CHUNK, apply_threshold
from hepgan.physics.classifier import auc, feature_pair
from hepgan.physics.errors import InsufficientEventsError

MIN_EVENTS = 100
"""Fewest events per set: below that the 20 % test and validation parts are too small to mean anything."""


@dataclass(frozen=True)
class ClassifierSettings:
    """Size and training of the challenge DNN; the defaults are the challenge's (``--cls_*`` options)."""

    n_hidden: int = 2048
    n_layer: int = 2
    epochs: int = 50
    batch: int = 1000
    lr: float = 2e-4
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    name: str = "challenge"

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        d = asdict(self)
        d["split"] = list(self.split)
        return d


CHALLENGE = ClassifierSettings()
"""The challenge's settings: 3 hidden layers of 2048, 50 epochs. The published AUCs used these."""

CPU = ClassifierSettings(n_hidden=256, epochs=20, name="cpu")
"""A CPU-sized variant: the same depth, protocol and optimiser with 256 instead of 2048 hidden units and
20 instead of 50 epochs (about 30x fewer operations for the low-level classifier of dataset 2). Its AUCs
are not the published protocol's: a smaller, shorter-trained network tends to separate less, so they can
read lower (better) than the challenge's would."""

PRESETS = {"challenge": CHALLENGE, "cpu": CPU}


def low_level_inputs(showers: np.ndarray, incident_energies: np.ndarray, threshold: float) -> np.ndarray:
    """The challenge's ``cls-low`` inputs ``[N, 1 + V]`` float32: ``log10(E_inc / MeV)``, then the voxel
    energies after the threshold divided by ``E_inc``. ``showers: [N, V]`` MeV, ``incident_energies:
    [N]`` or ``[N, 1]`` MeV, ``threshold`` MeV."""
    e_inc = np.asarray(incident_energies, np.float64).reshape(-1, 1)
    out = np.empty((len(showers), 1 + showers.shape[1]), np.float32)
    out[:, 0] = np.log10(e_inc[:, 0])
    for a in range(0, len(showers), CHUNK):
        b = min(a + CHUNK, len(showers))
        out[a:b, 1:] = apply_threshold(np.asarray(showers[a:b], np.float64), threshold) / e_inc[a:b]
    return out


def isotonic_fit(
    x: np.ndarray, y: np.ndarray, y_min: float = 1e-6, y_max: float = 1 - 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of ``y: [N]`` on ``x: [N]`` (pool-adjacent-violators; equal ``x``
    values first merged into their mean ``y``), fitted values clipped to ``[y_min, y_max]``. Returns the
    knots ``(xs [K], ys [K])``; :func:`isotonic_apply` interpolates linearly between them."""
    xs, inverse, counts = np.unique(np.asarray(x, np.float64), return_inverse=True, return_counts=True)
    w = counts.astype(np.float64)
    ym = np.bincount(inverse, weights=np.asarray(y, np.float64)) / w
    # blocks of pooled knots: value, weight, number of knots
    val: list[float] = []
    wt: list[float] = []
    size: list[int] = []
    for v, ww in zip(ym, w, strict=True):
        val.append(float(v))
        wt.append(float(ww))
        size.append(1)
        while len(val) > 1 and val[-2] > val[-1]:
            v2, w2, s2 = val.pop(), wt.pop(), size.pop()
            merged = wt[-1] + w2
            val[-1] = (val[-1] * wt[-1] + v2 * w2) / merged
            wt[-1] = merged
            size[-1] += s2
    ys = np.repeat(np.asarray(val), size)
    return xs, np.clip(ys, y_min, y_max)


def isotonic_apply(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Evaluate the fit of :func:`isotonic_fit` at ``x: [M]``: linear between knots, constant beyond."""
    return np.interp(np.asarray(x, np.float64), xs, ys)


def _init(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """PyTorch ``nn.Linear`` default initialisation: weights and biases uniform in ``+-1/sqrt(fan_in)``."""
    params = []
    for k, (n_in, n_out) in zip(
        jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes), strict=True
    ):
        kw, kb = jax.random.split(k)
        bound = float(1.0 / np.sqrt(n_in))
        params.append(
            {
                "w": jax.random.uniform(kw, (n_in, n_out), jnp.float32, -bound, bound),
                "b": jax.random.uniform(kb, (n_out,), jnp.float32, -bound, bound),
            }
        )
    return params


def _forward(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.leaky_relu(x @ layer["w"] + layer["b"][None, :], negative_slope=0.01)
    return (x @ params[-1]["w"] + params[-1]["b"][None, :])[:, 0]


def _loss(params: Any, x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """Mean BCE over the rows with weight 1 (padding rows carry weight 0)."""
    bce = optax.sigmoid_binary_cross_entropy(_forward(params, x), y)
    return jnp.sum(w * bce) / jnp.maximum(jnp.sum(w), 1.0)


@partial(jax.jit, static_argnames=("batch", "lr"))
def _epoch(
    params: Any, opt_state: Any, key: jax.Array, x: jax.Array, y: jax.Array, *, batch: int, lr: float
) -> tuple[Any, Any]:
    """One epoch over a fresh permutation of ``x: [N, F]`` in batches of ``batch``; the last batch holds
    the remaining ``N mod batch`` rows (padded to the batch shape with rows of weight 0)."""
    n = x.shape[0]
    steps = -(-n // batch)
    pad = steps * batch - n
    perm = jnp.concatenate([jax.random.permutation(key, n), jnp.zeros((pad,), jnp.int32)])
    weight = jnp.concatenate([jnp.ones((n,), jnp.float32), jnp.zeros((pad,), jnp.float32)])
    opt = optax.adam(lr)

    def step(carry: Any, rows_w: tuple[jax.Array, jax.Array]) -> tuple[Any, None]:
        p, s = carry
        rows, w = rows_w
        g = jax.grad(_loss)(p, x[rows], y[rows], w)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, opt_state), _ = jax.lax.scan(
        step, (params, opt_state), (perm.reshape(steps, batch), weight.reshape(steps, batch))
    )
    return params, opt_state


_forward_jit = jax.jit(_forward)


def _logits(params: Any, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    return np.concatenate(
        [np.asarray(_forward_jit(params, jnp.asarray(x[a : a + chunk]))) for a in range(0, len(x), chunk)]
    ).astype(np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def challenge_auc(
    gen: np.ndarray,
    ref: np.ndarray,
    settings: ClassifierSettings = CHALLENGE,
    *,
    seed: int = 0,
    name: str = "classifier",
) -> dict[str, float]:
    """Train the challenge DNN on ``gen: [N, F]`` (label 0) against ``ref: [M, F]`` (label 1) with the
    protocol of the module docstring. Returns ``auc`` (calibrated, on the validation part: the published
    quantity), ``auc_err`` (Hanley-McNeil), ``auc_uncalibrated``, ``jsd``, ``accuracy`` (validation,
    calibrated), ``best_epoch``, ``epochs`` (trained) and ``n_train``, ``n_test``, ``n_val`` (events of
    both labels). Both sets are first cut to the smaller size. Raises :class:`InsufficientEventsError`
    below :data:`MIN_EVENTS` events per set, ``ValueError`` for inputs that are not ``[N, F]`` with one F."""
    g, r = feature_pair(gen, ref, name)
    n = min(len(g), len(r))
    if n < MIN_EVENTS:
        raise InsufficientEventsError(name, MIN_EVENTS, n, "in each set")
    rng = np.random.default_rng(seed)
    g, r = g[rng.permutation(len(g))[:n]], r[rng.permutation(len(r))[:n]]
    cuts = np.cumsum((n * np.asarray(settings.split)).astype(int))[:-1]
    parts = []
    for pg, pr in zip(np.split(g, cuts), np.split(r, cuts), strict=True):
        x = np.concatenate([pg, pr])
        y = np.concatenate([np.zeros(len(pg), np.float32), np.ones(len(pr), np.float32)])
        order = rng.permutation(len(x))
        parts.append((x[order], y[order]))
    (x_train, y_train), (x_test, y_test), (x_val, y_val) = parts

    key_init, key = jax.random.split(jax.random.key(seed))
    params = _init(key_init, (x_train.shape[1], *([settings.n_hidden] * (settings.n_layer + 1)), 1))
    xt, yt = jnp.asarray(x_train), jnp.asarray(y_train)
    batch = min(settings.batch, len(x_train))
    best_acc, best_params, best_epoch, epoch = -np.inf, params, 0, 0
    # optax mixes Python floats with its int32 step count, which strict dtype promotion rejects
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optax.adam(settings.lr).init(params)
        for epoch in range(1, settings.epochs + 1):
            key, k = jax.random.split(key)
            params, opt_state = _epoch(params, opt_state, k, xt, yt, batch=batch, lr=settings.lr)
            # the challenge's np.round(sigmoid): exactly 0.5 rounds to 0
            acc = float(np.mean((_logits(params, x_test) > 0) == (y_test > 0.5)))
            if acc > best_acc:
                best_acc, best_params, best_epoch = acc, params, epoch
            if acc == 1.0:
                break
    p_test = _sigmoid(_logits(best_params, x_test))
    p_val = _sigmoid(_logits(best_params, x_val))
    xs, ys = isotonic_fit(p_test, y_test)
    p_cal = isotonic_apply(xs, ys, p_val)
    is_ref = y_val > 0.5
    a, err = auc(p_cal[is_ref], p_cal[~is_ref])
    a_raw, _ = auc(p_val[is_ref], p_val[~is_ref])
    bce = -np.mean(np.where(is_ref, np.log(p_cal), np.log1p(-p_cal)))
    return {
        "auc": a,
        "auc_err": err,
        "auc_uncalibrated": a_raw,
        "jsd": float((np.log(2.0) - bce) / np.log(2.0)),
        "accuracy": float(np.mean((p_cal > 0.5) == is_ref)),
        "best_epoch": float(best_epoch),
        "epochs": float(epoch),
        "n_train": float(len(x_train)),
        "n_test": float(len(x_test)),
        "n_val": float(len(x_val)),
    }
