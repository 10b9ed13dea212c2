"""The 3DGAN loss terms, written to match the Keras functions the papers trained with.

Every function reduces over the batch and returns a scalar; a shape mismatch between prediction and target
raises instead of broadcasting (a ``[B]`` vs ``[B, 1]`` broadcast silently turns a mean error into a mean
over ``B * B`` pairs, a classic bug of GAN ports).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# Keras clips the MAPE denominator at K.epsilon() = 1e-7.
KERAS_EPSILON = 1e-7


def _check(pred: jax.Array, target: jax.Array, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: prediction shape {pred.shape} and target shape {target.shape} differ; "
            "both must be [B] (one value per event)"
        )


def bce_with_logits(logit: jax.Array, label: jax.Array) -> jax.Array:
    """Binary cross-entropy of a real/fake logit, mean over the batch.

    ``logit: [B]`` pre-sigmoid discriminator output; ``label: [B]`` in [0, 1] (1 = real). Equal to Keras
    ``binary_crossentropy`` on ``sigmoid(logit)`` except that Keras clips probabilities at 1e-7; working on
    logits is the numerically stable form of the same loss.
    """
    _check(logit, label, "bce_with_logits")
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logit, label.astype(logit.dtype)))


def mape(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute percentage error as Keras ``mean_absolute_percentage_error``, in percent.

    ``100 * mean(|target - pred| / max(|target|, 1e-7))``: the *true* value (``target``) is the
    denominator, so a generator cannot lower the loss by inflating its prediction. ``pred, target: [B]``.
    """
    _check(pred, target, "mape")
    denom = jnp.maximum(jnp.abs(target), KERAS_EPSILON)
    return 100.0 * jnp.mean(jnp.abs(target - pred) / denom)


def mae(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error, ``mean(|target - pred|)`` (the angle loss, rad). ``pred, target: [B]``."""
    _check(pred, target, "mae")
    return jnp.mean(jnp.abs(target - pred))


# Loss terms per architecture, in the order of the Keras ``loss=[...]`` lists, and the paper weights.
TERMS: dict[str, tuple[str, ...]] = {
    "fixed25": ("bce", "energy", "ecal"),
    "angle51": ("bce", "energy", "angle", "ecal"),
}
PAPER_WEIGHTS: dict[str, tuple[float, ...]] = {
    "fixed25": (2.0, 0.1, 0.1),
    "angle51": (3.0, 0.1, 25.0, 0.1),
}


def gan_loss(
    out: dict[str, jax.Array],
    *,
    label: jax.Array,
    energy: jax.Array,
    ecal: jax.Array,
    theta: jax.Array | None,
    weights: dict[str, float],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted multi-task loss of one discriminator evaluation.

    ``out``: the discriminator's heads (``logit [B]``, ``energy [B]`` in E/100, ``ecal [B]`` cell sum in
    scaled file units, ``angle [B]`` rad for angle51); ``label [B]`` real/fake target; ``energy [B]`` E/100;
    ``ecal [B]`` target cell sum; ``theta [B]`` rad or None; ``weights``: term name -> weight, its keys
    choose the terms. Returns (weighted total, per-term values).
    """
    terms: dict[str, jax.Array] = {}
    for name in weights:
        if name == "bce":
            terms[name] = bce_with_logits(out["logit"], label)
        elif name == "energy":
            terms[name] = mape(out["energy"], energy)
        elif name == "ecal":
            terms[name] = mape(out["ecal"], ecal)
        elif name == "angle":
            if theta is None or "angle" not in out:
                raise ValueError("the 'angle' loss term needs theta in the batch and an 'angle' head")
            terms[name] = mae(out["angle"], theta)
        else:
            raise ValueError(f"unknown loss term {name!r}; valid: bce, energy, ecal, angle")
    total = sum((weights[k] * v for k, v in terms.items()), start=jnp.zeros((), jnp.float32))
    return total, terms
