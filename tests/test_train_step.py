"""The GAN update on toy players (the update does not depend on the architecture), and the optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hepgan.parallel import Reducer
from hepgan.train.scaling import OptimConfig, RMSpropConfig, player_optimizer
from hepgan.train.state import init_state
from hepgan.train.step import StepConfig, ecal_sum, make_step

GRID = (4, 4, 3)
B = 8


class ToyGenerator(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(5, 6, rngs=rngs)
        self.bn = nnx.BatchNorm(6, momentum=0.99, rngs=rngs)
        self.out = nnx.Linear(6, int(np.prod(GRID)), rngs=rngs)

    def latent(self, key, energy, theta=None):
        return (energy / 100.0)[:, None] * jax.random.normal(key, (energy.shape[0], 5))

    def __call__(self, z):
        return jax.nn.relu(self.out(self.bn(jax.nn.leaky_relu(self.dense(z), 0.3)))).reshape(-1, *GRID)


class ToyDiscriminator(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(int(np.prod(GRID)), 6, rngs=rngs)
        self.bn = nnx.BatchNorm(6, momentum=0.99, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.logit = nnx.Linear(6, 1, rngs=rngs)
        self.energy = nnx.Linear(6, 1, rngs=rngs)

    def __call__(self, x):
        h = self.drop(self.bn(jax.nn.leaky_relu(self.dense(x.reshape(x.shape[0], -1)), 0.3)))
        return {
            "logit": self.logit(h)[:, 0],
            "energy": self.energy(h)[:, 0],
            "ecal": jnp.sum(x, axis=(1, 2, 3)),
        }


def setup(ema_decay=0.999, lr=1e-3, **kw):
    rngs = nnx.Rngs(0)
    tx = player_optimizer(OptimConfig(), optax.constant_schedule(lr))  # a schedule: counts its updates
    state, players = init_state(ToyGenerator(rngs), ToyDiscriminator(rngs), tx, tx, seed=3)
    step = jax.jit(make_step(players, StepConfig(arch="fixed25", ema_decay=ema_decay, **kw)))
    rng = np.random.default_rng(0)
    batch = {
        "ecal": jnp.asarray(rng.uniform(0, 1, (B, *GRID)).astype(np.float32)),
        "energy": jnp.asarray(rng.uniform(0.1, 5, B).astype(np.float32)),
        "theta": jnp.full((B,), np.pi / 2, jnp.float32),
    }
    return state, step, batch


@pytest.fixture(scope="module")
def default():
    """One compiled paper-schedule step shared by the tests that need no other settings."""
    return setup()


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def counts(opt_state):
    """The optimizer's update counters (ScaleBySchedule count)."""
    return [int(x) for x in jax.tree.leaves(opt_state) if np.asarray(x).dtype == np.int32]


def test_step_is_pure_and_keyed_by_step(default):
    state, step, batch = default
    s1, m1 = step(state, batch)
    s2, _m2 = step(state, batch)
    assert int(s1.step) == 1
    for a, b in zip(leaves(s1), leaves(s2), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(m1["finite"]) == 1.0
    # the same state at another step number draws other noise, flips and dropout
    s3, _ = step(state.replace(step=jnp.asarray(5, jnp.int32)), batch)
    assert not np.array_equal(leaves(s1.g.params)[0], leaves(s3.g.params)[0])


@pytest.mark.parametrize(
    ("schedule", "d_updates", "g_updates"), [("paper", 2, 2), ("n_critic", 3, 2), ("simultaneous", 1, 1)]
)
def test_schedule_update_counts(default, schedule, d_updates, g_updates):
    state, step, batch = (
        default if schedule == "paper" else setup(schedule=schedule, n_critic=3, ema_decay=0.0)
    )
    new, metrics = step(state, batch)
    if schedule != "paper":  # EMA off: the sampling weights are the trained ones
        for a, b in zip(leaves(new.ema_g_params), leaves(new.g.params), strict=True):
            np.testing.assert_array_equal(a, b)
    assert counts(new.d.opt_state) == [d_updates]
    assert counts(new.g.opt_state) == [g_updates]
    for k in (
        "d_loss",
        "g_loss",
        "d_grad_norm",
        "g_grad_norm",
        "d_param_norm",
        "g_update_norm",
        "d_update_norm",
    ):
        assert np.isfinite(float(metrics[k])), k
    assert float(metrics["d_update_norm"]) > 0 and float(metrics["g_update_norm"]) > 0


def test_health_norms_are_global_norms(default):
    state, step, batch = default
    new, m = step(state, batch)
    np.testing.assert_allclose(
        float(m["g_param_norm"]),
        np.sqrt(sum((x.astype(np.float64) ** 2).sum() for x in leaves(new.g.params))),
        rtol=1e-5,
    )
    diff = [
        a.astype(np.float64) - b for a, b in zip(leaves(new.d.params), leaves(state.d.params), strict=True)
    ]
    np.testing.assert_allclose(float(m["d_update_norm"]), np.sqrt(sum((d**2).sum() for d in diff)), rtol=1e-4)


def test_ema_lags_with_warmup(default):
    state, step, batch = default
    new, _ = step(state, batch)
    # first update: warm-up decay (1 + 0) / (10 + 0) = 0.1 of the old weights
    for e, old, p in zip(leaves(new.ema_g_params), leaves(state.g.params), leaves(new.g.params), strict=True):
        np.testing.assert_allclose(e, 0.1 * old + 0.9 * p, rtol=1e-5, atol=1e-7)


def test_lr_scale_zero_freezes_weights(default):
    state, step, batch = default
    new, _ = step(state.replace(lr_scale=jnp.zeros((), jnp.float32)), batch)
    for a, b in zip(
        leaves(new.g.params) + leaves(new.d.params),
        leaves(state.g.params) + leaves(state.d.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_nonfinite_is_flagged(default):
    state, step, batch = default
    batch = {**batch, "ecal": batch["ecal"].at[0, 0, 0, 0].set(jnp.nan)}
    _, m = step(state, batch)
    assert float(m["finite"]) == 0.0


def test_ecal_sum_undoes_power():
    x = np.random.default_rng(1).uniform(0, 2, (3, *GRID)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(ecal_sum(jnp.asarray(x**0.85), 0.85)), x.sum(axis=(1, 2, 3)), rtol=1e-5
    )


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="schedule"):
        setup(schedule="alternating")
    with pytest.raises(ValueError, match="3 weights"):
        StepConfig(arch="fixed25", weights=(1.0, 2.0)).loss_weights()


def test_rmsprop_matches_keras_formula():
    # Keras RMSprop: v = rho v + (1 - rho) g^2; p -= lr g / (sqrt(v) + eps), eps outside the root
    tx = player_optimizer(OptimConfig(name="rmsprop", rmsprop=RMSpropConfig(rho=0.9, eps=1e-7)), 1e-3)
    p = jnp.asarray([1.0, -2.0, 3.0])
    opt = tx.init(p)
    v, p_np = np.zeros(3), np.asarray(p, np.float64)
    rng = np.random.default_rng(0)
    for _ in range(5):
        g = rng.normal(size=3).astype(np.float32) * 1e-3
        u, opt = tx.update(jnp.asarray(g), opt, p)
        p = optax.apply_updates(p, u)
        v = 0.9 * v + 0.1 * g.astype(np.float64) ** 2
        p_np = p_np - 1e-3 * g / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(np.asarray(p), p_np, rtol=1e-5)


class CountingReducer(Reducer):
    """A two-worker mpi reducer that records every :meth:`Reducer.mean` (one synchronisation of the
    workers each) instead of communicating: tracing a step counts its collectives."""

    def __init__(self) -> None:
        super().__init__("mpi", workers=2)
        object.__setattr__(self, "calls", [])

    def mean(self, tree):
        self.calls.append(len(jax.tree.leaves(tree)))
        return tree

    def index(self):
        return 0


@pytest.mark.parametrize(("schedule", "d_updates", "g_updates"), [("paper", 2, 2), ("simultaneous", 1, 1)])
def test_one_collective_per_update_plus_two_per_step(schedule, d_updates, g_updates):
    # Each optimizer update averages its gradients, noise-scale norm and BatchNorm statistics in one
    # collective; the real batch's ECAL-sum fit and the metrics take one each. Every collective is a
    # synchronisation of all workers, so their count per step is part of the step's cost at scale.
    rngs = nnx.Rngs(0)
    tx = optax.sgd(1e-3)
    state, players = init_state(ToyGenerator(rngs), ToyDiscriminator(rngs), tx, tx, seed=3)
    reducer = CountingReducer()
    step = make_step(players, StepConfig(arch="fixed25", schedule=schedule), reducer=reducer)
    rng = np.random.default_rng(0)
    batch = {
        "ecal": jnp.asarray(rng.uniform(0, 1, (B, *GRID)).astype(np.float32)),
        "energy": jnp.asarray(rng.uniform(0.1, 5, B).astype(np.float32)),
        "theta": jnp.full((B,), np.pi / 2, jnp.float32),
    }
    jax.make_jaxpr(step)(state, batch)
    assert len(reducer.calls) == d_updates + g_updates + 2, reducer.calls


@pytest.mark.parametrize("adv", ["hinge", "lsgan"])
def test_adversarial_variants_train(adv):
    state, step, batch = setup(adv_loss=adv)
    _, m = step(state, batch)
    assert float(m["finite"]) == 1.0 and float(m["d_update_norm"]) > 0 and float(m["g_update_norm"]) > 0
    with pytest.raises(ValueError, match="adv_loss"):
        setup(adv_loss="wgan")


def test_joint_discriminator_batch():
    state, step, batch = setup(schedule="n_critic", n_critic=1, d_batch="joint")
    _, m = step(state, batch)
    _, m_sep = setup(schedule="n_critic", n_critic=1)[1](state, batch)
    assert float(m["finite"]) == 1.0
    # one BatchNorm evaluation of real + fake gives other D outputs than two separate ones
    assert float(m["d_real_p"]) != float(m_sep["d_real_p"])
    with pytest.raises(ValueError, match="d_batch=joint needs"):
        setup(d_batch="joint")
    with pytest.raises(ValueError, match="d_batch"):
        setup(schedule="n_critic", d_batch="mixed")
