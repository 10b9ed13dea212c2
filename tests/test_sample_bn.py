"""Sampling with BatchNorm statistics recomputed for the sampling weights (train.sample_bn=recomputed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hepgan.models import ModelConfig, build
from hepgan.train.state import batch_norms, generate, init_state, recompute_bn_stats


@pytest.fixture(scope="module")
def tiny():
    g, d = build(ModelConfig(arch="fixed25", size="tiny"), nnx.Rngs(0))
    state, players = init_state(g, d, optax.sgd(1.0), optax.sgd(1.0), seed=0)
    # running statistics far from anything the generator produces, as after fast-moving weights
    state = state.replace(g=state.g.replace(batch_stats=jax.tree.map(lambda x: x + 3.0, state.g.batch_stats)))
    return state, players


def test_recomputed_statistics_are_those_of_a_batch_of_own_outputs(tiny) -> None:
    state, players = tiny
    g = players.generator(
        state.replace(g=state.g.replace(batch_stats=jax.tree.map(jnp.copy, state.g.batch_stats)))
    )
    energy = np.asarray([20.0, 150.0, 400.0], np.float32)
    recompute_bn_stats(g, energy, np.full(3, np.pi / 2, np.float32), seed=5, n=64)
    # the same 64 latent vectors in train mode (batch statistics) and in eval mode (the recomputed
    # running statistics) give the same showers
    key = jax.random.fold_in(jax.random.key(5), 0x53544154)
    k_pick, k_z = jax.random.split(key)
    pick = np.asarray(jax.random.randint(k_pick, (64,), 0, 3))
    z = g.latent(k_z, jnp.asarray(energy[pick]), jnp.full(64, np.pi / 2, jnp.float32))
    eval_out = np.asarray(g(z))
    g.train()
    np.testing.assert_allclose(eval_out, np.asarray(g(z)), rtol=2e-4, atol=1e-6)
    assert [bn.momentum for bn in batch_norms(g)] == [0.99, 0.99]


def test_generate_recomputed_leaves_the_state_alone_and_differs_from_running(tiny) -> None:
    state, players = tiny
    before = jax.tree.map(np.asarray, state.g.batch_stats)
    e, th = np.linspace(10, 500, 40).astype(np.float32), np.full(40, np.pi / 2, np.float32)
    rec = generate(players, state, e, th, batch=16, seed=1, bn_stats="recomputed")
    again = generate(players, state, e, th, batch=16, seed=1, bn_stats="recomputed")
    run = generate(players, state, e, th, batch=16, seed=1)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, state.g.batch_stats))
    np.testing.assert_array_equal(rec, again)  # deterministic
    assert rec.shape == run.shape == (40, 25, 25, 25) and not np.allclose(rec, run)
    with pytest.raises(ValueError, match="sample_bn"):
        generate(players, state, e, th, batch=16, seed=1, bn_stats="batch")
