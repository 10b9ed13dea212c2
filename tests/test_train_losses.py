"""The loss terms against independent NumPy formulas (Keras definitions), through jax.jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hepgan.train.losses import PAPER_WEIGHTS, bce_with_logits, gan_loss, mae, mape


def np_bce(logit: np.ndarray, label: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    return np.mean(-(label * np.log(p) + (1 - label) * np.log(1 - p)))


def np_mape(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    # Keras mean_absolute_percentage_error: the true value is the denominator, clipped at 1e-7
    t = target.astype(np.float64)
    return 100.0 * np.mean(np.abs(t - pred) / np.maximum(np.abs(t), 1e-7))


def np_mae(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(target.astype(np.float64) - pred))


CASES = [(bce_with_logits, np_bce), (mape, np_mape), (mae, np_mae)]


@pytest.mark.parametrize(("fn", "ref"), CASES)
@pytest.mark.parametrize("n", [1, 37])
def test_matches_numpy(fn, ref, n):
    rng = np.random.default_rng(n)
    pred = rng.normal(size=n).astype(np.float32)
    target = (
        (rng.random(n) > 0.5).astype(np.float32)
        if fn is bce_with_logits
        else rng.uniform(0.5, 3, n).astype(np.float32)
    )
    got = jax.jit(fn)(jnp.asarray(pred), jnp.asarray(target))
    assert got.shape == ()
    np.testing.assert_allclose(float(got), ref(pred, target), rtol=1e-5, atol=1e-6)


def test_mape_denominator_is_the_target():
    # |2 - 1| / 1 = 100 % with the target 1 as denominator; 50 % if the prediction were used
    assert float(mape(jnp.array([2.0]), jnp.array([1.0]))) == pytest.approx(100.0)
    assert float(mape(jnp.array([1.0]), jnp.array([2.0]))) == pytest.approx(50.0)
    # a zero target is clipped at Keras' epsilon instead of dividing by zero
    assert float(mape(jnp.array([1e-7]), jnp.array([0.0]))) == pytest.approx(100.0)


@pytest.mark.parametrize(("fn", "_"), CASES)
def test_shape_mismatch_raises(fn, _):
    with pytest.raises(ValueError, match="shape"):
        jax.jit(fn)(jnp.zeros((4,)), jnp.zeros((4, 1)))


def test_gan_loss_weights_terms():
    rng = np.random.default_rng(0)
    b = 16
    out = {
        k: jnp.asarray(rng.uniform(0.5, 2, b).astype(np.float32))
        for k in ("logit", "energy", "ecal", "angle")
    }
    label, e, ecal, theta = (rng.uniform(0.5, 2, b).astype(np.float32) for _ in range(4))
    label = (label > 1).astype(np.float32)
    weights = dict(zip(("bce", "energy", "angle", "ecal"), PAPER_WEIGHTS["angle51"], strict=True))
    total, terms = jax.jit(
        lambda o: gan_loss(o, label=label, energy=e, ecal=ecal, theta=theta, weights=weights)
    )(out)
    o = {k: np.asarray(v) for k, v in out.items()}
    expected = (
        3.0 * np_bce(o["logit"], label)
        + 0.1 * np_mape(o["energy"], e)
        + 25.0 * np_mae(o["angle"], theta)
        + 0.1 * np_mape(o["ecal"], ecal)
    )
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    assert set(terms) == {"bce", "energy", "angle", "ecal"}


def test_gan_loss_unknown_term():
    out = {"logit": jnp.zeros(2), "energy": jnp.ones(2), "ecal": jnp.ones(2)}
    with pytest.raises(ValueError, match="unknown loss term"):
        gan_loss(
            out,
            label=jnp.ones(2),
            energy=jnp.ones(2),
            ecal=jnp.ones(2),
            theta=None,
            weights={"bce": 1.0, "l2": 1.0},
        )


def test_aux_scale_scales_every_term_but_the_adversarial_one():
    from hepgan.train.step import StepConfig

    w = StepConfig(arch="fixed25", aux_scale=0.2).loss_weights()
    assert w == pytest.approx({"bce": 2.0, "energy": 0.02, "ecal": 0.02})
    w = StepConfig(arch="angle51", aux_scale=0.5).loss_weights()
    assert w == pytest.approx({"bce": 3.0, "energy": 0.05, "angle": 12.5, "ecal": 0.05})
    # explicit weights are taken as given; the scale applies to the paper's weights only
    assert StepConfig(weights=(1.0, 1.0, 1.0), aux_scale=0.2).loss_weights() == {
        "bce": 1.0,
        "energy": 1.0,
        "ecal": 1.0,
    }


def test_adversarial_variants_match_their_formulas():
    from hepgan.train.losses import adversarial

    logit = jnp.asarray([-2.0, -0.5, 0.3, 1.7], jnp.float32)
    label = jnp.asarray([0.0, 1.0, 0.0, 1.0], jnp.float32)
    s = 2 * np.asarray(label) - 1
    np.testing.assert_allclose(
        adversarial(logit, label, "hinge"), np.mean(np.maximum(0, 1 - s * np.asarray(logit))), rtol=1e-6
    )
    np.testing.assert_allclose(
        adversarial(logit, label, "hinge", generator=True), -np.mean(np.asarray(logit)), rtol=1e-6
    )
    np.testing.assert_allclose(
        adversarial(logit, label, "lsgan"), np.mean((np.asarray(logit) - np.asarray(label)) ** 2), rtol=1e-6
    )
    np.testing.assert_allclose(adversarial(logit, label, "bce"), bce_with_logits(logit, label), rtol=1e-6)
    # a confident, correct discriminator has zero hinge loss; the generator's hinge loss falls as its
    # fakes' logits rise
    assert float(adversarial(jnp.asarray([3.0, -3.0]), jnp.asarray([1.0, 0.0]), "hinge")) == 0.0
    with pytest.raises(ValueError, match="adv_loss"):
        adversarial(logit, label, "wasserstein")


def test_gan_loss_adv_keeps_the_bce_key():
    out = {
        "logit": jnp.asarray([0.5, -0.5]),
        "energy": jnp.asarray([1.0, 2.0]),
        "ecal": jnp.asarray([3.0, 4.0]),
    }
    kw = dict(label=jnp.ones(2), energy=jnp.asarray([1.0, 2.0]), ecal=jnp.asarray([3.0, 4.0]), theta=None)
    total, terms = gan_loss(out, weights={"bce": 1.0}, adv="lsgan", **kw)
    np.testing.assert_allclose(total, np.mean((np.asarray([0.5, -0.5]) - 1.0) ** 2), rtol=1e-6)
    assert set(terms) == {"bce"}
