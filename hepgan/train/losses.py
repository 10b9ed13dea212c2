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


ADV_LOSSES = ("bce", "hinge", "lsgan")
"""Real/fake losses (``train.adv_loss``): the papers' binary cross-entropy (non-saturating for the
generator, as Keras trains it with label 1 on fakes), the hinge loss (Lim & Ye 2017; Miyato et al. 2018)
and the least-squares loss (Mao et al. 2017) on the logit."""


def adversarial(
    logit: jax.Array, label: jax.Array, kind: str = "bce", *, generator: bool = False
) -> jax.Array:
    """The real/fake loss of one discriminator evaluation, mean over the batch.

    ``logit: [B]`` pre-sigmoid discriminator output; ``label: [B]`` in [0, 1] (1 = real; label flips give
    the other value); ``kind``: one of :data:`ADV_LOSSES`; ``generator``: the generator's loss (its
    labels are 1), which differs from the discriminator's only for ``hinge`` (``-mean(logit)``).
    ``bce``: :func:`bce_with_logits`. ``hinge``: ``mean(relu(1 - s * logit))``, ``s = 2 label - 1``.
    ``lsgan``: ``mean((logit - label)^2)``.
    """
    _check(logit, label, "adversarial")
    if kind == "bce":
        return bce_with_logits(logit, label)
    if kind == "hinge":
        if generator:
            return -jnp.mean(logit)
        return jnp.mean(jax.nn.relu(1.0 - (2.0 * label - 1.0) * logit))
    if kind == "lsgan":
        return jnp.mean(jnp.square(logit - label))
    raise ValueError(f"train.adv_loss: unknown {kind!r}; valid: {list(ADV_LOSSES)}")


# Loss terms per architecture, in the order of the Keras ``loss=[...]`` lists, and the paper weights.
TERMS: dict[str, tuple[str, ...]] = {
    "fixed25": ("bce", "energy", "ecal"),
    "angle51": ("bce", "energy", "angle", "ecal"),
    "ds2": ("bce", "energy", "ecal"),
    "ds3": ("bce", "energy", "ecal"),
}
PAPER_WEIGHTS: dict[str, tuple[float, ...]] = {
    "fixed25": (2.0, 0.1, 0.1),
    "angle51": (3.0, 0.1, 25.0, 0.1),
    # no paper for the CaloChallenge grids: the fixed-angle model's weights
    "ds2": (2.0, 0.1, 0.1),
    "ds3": (2.0, 0.1, 0.1),
}


def gan_loss(
    out: dict[str, jax.Array],
    *,
    label: jax.Array,
    energy: jax.Array,
    ecal: jax.Array,
    theta: jax.Array | None,
    weights: dict[str, float],
    adv: str = "bce",
    generator: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted multi-task loss of one discriminator evaluation.

    ``out``: the discriminator's heads (``logit [B]``, ``energy [B]`` in E/100, ``ecal [B]`` cell sum in
    scaled file units, ``angle [B]`` rad for angle51); ``label [B]`` real/fake target; ``energy [B]`` E/100;
    ``ecal [B]`` target cell sum; ``theta [B]`` rad or None; ``weights``: term name -> weight, its keys
    choose the terms; the real/fake term keeps the key ``"bce"`` whatever ``adv`` (the loss, see
    :func:`adversarial`; ``generator`` selects the generator's form).
    Returns (weighted total, per-term values).
    """
    terms: dict[str, jax.Array] = {}
    for name in weights:
        if name == "bce":
            terms[name] = adversarial(out["logit"], label, adv, generator=generator)
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
