"""Learning-rate scaling rules, warm-up/decay schedules, per-player rules and the optimizers (NumPy
formulas): the ``optim`` and ``scaling`` groups through their one builder."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hepgan.train.scaling import (
    OPTIMIZERS,
    AdamConfig,
    LambConfig,
    OptimConfig,
    PlayerScaling,
    RMSpropConfig,
    ScalingConfig,
    build_optimizers,
    hyperparameters,
    lr_factor,
    make_optimizer,
    player_optimizer,
    resolve,
    schedule,
)

OPTIM = OptimConfig(name="rmsprop", lr_g=1e-3, lr_d=2e-3)


@pytest.mark.parametrize(
    ("rule", "batch", "ref", "want"),
    [
        ("none", 1024, 128, 1.0),
        ("linear", 1024, 128, 8.0),
        ("linear", 64, 128, 0.5),
        ("sqrt", 1024, 128, math.sqrt(8.0)),
        ("sqrt", 512, 128, 2.0),
    ],
)
def test_lr_factor(rule, batch, ref, want):
    assert lr_factor(rule, batch, ref) == pytest.approx(want)


def test_lr_factor_errors():
    with pytest.raises(ValueError, match=r"scaling\.rule"):
        lr_factor("cubic", 128, 128)
    with pytest.raises(ValueError, match="positive"):
        lr_factor("linear", 0, 128)


def test_warmup_then_constant_and_cosine():
    const = schedule(0.8, warmup_steps=10, total_steps=110, decay="constant")
    assert float(const(0)) == 0.0
    assert float(const(5)) == pytest.approx(0.4)
    assert float(const(10)) == pytest.approx(0.8)
    assert float(const(100)) == pytest.approx(0.8)
    cos = schedule(0.8, warmup_steps=10, total_steps=110, decay="cosine")
    # cosine over the 100 updates after warm-up: 0.8 * (1 + cos(pi t / 100)) / 2
    for t in (0, 25, 50, 100):
        assert float(cos(10 + t)) == pytest.approx(0.8 * (1 + math.cos(math.pi * t / 100)) / 2, abs=1e-6)
    assert float(schedule(0.3, warmup_steps=0, total_steps=5, decay="constant")(0)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"scaling\.decay"):
        schedule(0.1, warmup_steps=0, total_steps=1, decay="step")


def test_per_player_rules_and_effective_lr():
    cfg = ScalingConfig(
        rule="linear",
        ref_batch=128,
        warmup_steps=4,
        d=PlayerScaling(rule="sqrt", warmup_steps=0, lr_multiplier=0.5),
    )
    assert resolve(cfg, "g").rule == "linear" and resolve(cfg, "d").rule == "sqrt"
    opt = build_optimizers(OPTIM, cfg, 512, {"g": 100, "d": 100})
    assert opt.peak_lr["g"] == pytest.approx(1e-3 * 4)
    assert opt.peak_lr["d"] == pytest.approx(2e-3 * 0.5 * 2)
    lr = opt.effective_lr({"g": 2, "d": 2})
    assert lr["lr_g"] == pytest.approx(1e-3 * 4 / 2)  # halfway through the warm-up
    assert lr["lr_d"] == pytest.approx(2e-3)  # no warm-up for D
    desc = opt.describe()
    assert desc["g"]["factor"] == pytest.approx(4.0) and desc["optimizer"] == "rmsprop"
    with pytest.raises(ValueError, match=r"scaling\.d\.rule"):
        resolve(ScalingConfig(d=PlayerScaling(rule="log")), "d")


def test_rmsprop_is_the_keras_form():
    tx = make_optimizer("rmsprop", 0.1, rho=0.9, eps=1e-7)
    w, g = jnp.array([1.0, -2.0]), jnp.array([0.5, -0.1])
    u, _ = jax.jit(tx.update)(g, tx.init(w), w)
    v = 0.1 * np.asarray(g) ** 2
    np.testing.assert_allclose(u, -0.1 * np.asarray(g) / (np.sqrt(v) + 1e-7), rtol=1e-6)


def _layers():
    return {"a": jnp.array([[1.0, 2.0], [2.0, 0.0]]), "b": jnp.array([3.0, 4.0])}, {
        "a": jnp.array([[0.1, -0.2], [0.0, 0.4]]),
        "b": jnp.array([-1.0, 0.5]),
    }


def test_lars_first_step_layerwise_trust_ratio():
    params, grads = _layers()
    lr, eta = 0.5, 0.01
    tx = make_optimizer("lars", lr, trust_coefficient=eta, momentum=0.9)
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for k in params:
        w, g = np.asarray(params[k]), np.asarray(grads[k])
        want = -lr * eta * np.linalg.norm(w) / np.linalg.norm(g) * g
        np.testing.assert_allclose(u[k], want, rtol=1e-5)


def test_lamb_first_step_layerwise_trust_ratio():
    params, grads = _layers()
    lr = 0.01
    tx = make_optimizer("lamb", lr, b1=0.9, b2=0.999)
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for k in params:
        w, g = np.asarray(params[k]), np.asarray(grads[k])
        adam = g / (np.abs(g) + 1e-6)  # bias-corrected first Adam step
        want = -lr * np.linalg.norm(w) / np.linalg.norm(adam) * adam
        np.testing.assert_allclose(u[k], want, rtol=1e-4)


def test_player_overrides_over_the_shared_settings():
    r = resolve(ScalingConfig(), "d")  # the schema's defaults: none / 128 / 0 / constant
    assert (r.rule, r.ref_batch, r.warmup_steps, r.decay) == ("none", 128, 0, "constant")
    cfg = ScalingConfig(
        rule="sqrt", ref_batch=64, warmup_steps=3, decay="cosine", g=PlayerScaling(ref_batch=32)
    )
    r = resolve(cfg, "g")
    assert (r.rule, r.ref_batch, r.warmup_steps, r.decay) == ("sqrt", 32, 3, "cosine")
    assert resolve(cfg, "d").ref_batch == 64


def test_optim_name_picks_the_optimizer_and_its_own_defaults():
    opt = build_optimizers(OptimConfig(name="lamb"), ScalingConfig(), 128, {"g": 10, "d": 10})
    assert opt.optimizer == "lamb" and opt.hyperparameters == {**vars(LambConfig())}
    assert opt.describe()["hyperparameters"]["eps"] == 1e-6
    # optim.name=adam alone: Adam's b1/eps, not RMSprop's eps 1e-7
    assert hyperparameters(OptimConfig(name="adam")) == {"b1": 0.5, "b2": 0.999, "eps": 1e-8}
    assert hyperparameters(OptimConfig()) == {"rho": 0.9, "eps": 1e-7}
    for name in OPTIMIZERS:  # every optimizer builds from its own section
        w = jnp.ones(3)
        player_optimizer(OptimConfig(name=name), 1e-3).init(w)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("sgd", 0.1)
    with pytest.raises(ValueError, match=r"optim\.rmsprop: unknown hyperparameters \['b1'\]"):
        make_optimizer("rmsprop", 0.1, b1=0.9)


def test_player_optimizer_uses_only_the_chosen_section():
    # an Adam section with its own eps, RMSprop chosen: the RMSprop section's Keras eps is used
    optim = OptimConfig(rmsprop=RMSpropConfig(rho=0.5, eps=1e-3), adam=AdamConfig(eps=1.0))
    tx = player_optimizer(optim, 0.1)
    w, g = jnp.array([1.0, -2.0]), jnp.array([0.5, -0.1])
    u, _ = jax.jit(tx.update)(g, tx.init(w), w)
    v = 0.5 * np.asarray(g) ** 2
    np.testing.assert_allclose(u, -0.1 * np.asarray(g) / (np.sqrt(v) + 1e-3), rtol=1e-6)
