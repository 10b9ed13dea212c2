"""The AngleGAN (``model.arch=angle51``) training update, assembled as the trainer assembles it.

The tiny angle51 model on a few simulated 51x51x25 showers, two steps of the paper schedule: the metrics
carry every AngleGAN loss term (the measured-angle MAE included) for both players, finite, combined with
the AngleGAN paper's weights [3, 0.1, 25, 0.1]; and both the generator's and the discriminator's weights
move. The state is only read through the players' rebuilt modules, never through its fields.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from hepgan.train.config import compose
from hepgan.train.losses import TERMS
from hepgan.train.run import build_run

# The AngleGAN paper's loss weights, in the order of its Keras loss list [BCE, MAPE(E), MAE(angle),
# MAPE(ecal)] (EPJC 82 (2022) 386), written out here rather than read from the package.
PAPER_WEIGHTS = {"bce": 3.0, "energy": 0.1, "angle": 25.0, "ecal": 0.1}
STEPS = 2

TINY_ANGLE = [
    "model=tiny",
    "model.arch=angle51",
    "data=simulated_angle51",
    "data.n_events=32",
    "data.n_reference=16",
    "data.prefetch=0",
    "train.batch_size=8",
    "train.epochs=1",
    "train.aux_loss_scale=1.0",  # the paper's weights (the demo default scales the auxiliary terms)
]


def _weights(modules: list[nnx.Module]) -> list[list[np.ndarray]]:
    """Host copies of each module's trainable parameters (the step donates the state it is given)."""
    return [[np.array(x) for x in jax.tree.leaves(nnx.state(m, nnx.Param))] for m in modules]


def _players(run, state) -> list[nnx.Module]:
    return [run.players.generator(state, ema=False), run.players.discriminator(state)]


@pytest.fixture(scope="module")
def trained():
    run = build_run(compose(TINY_ANGLE), parallel=False)
    assert run.pipeline is not None
    before = _weights(_players(run, run.state))
    state, history = run.state, []
    for _ in range(STEPS):
        state, metrics = run.step(state, next(run.pipeline))
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    run.pipeline.close()
    return run, before, state, history


def test_angle_metrics_present_and_finite(trained):
    run, _, _, history = trained
    assert run.model.arch == "angle51"
    assert TERMS["angle51"] == ("bce", "energy", "angle", "ecal")
    for metrics in history:
        for term in TERMS["angle51"]:
            for key in (f"g_{term}", f"d_real_{term}", f"d_fake_{term}"):
                assert key in metrics, (key, sorted(metrics))
                assert np.isfinite(metrics[key]), (key, metrics[key])
        assert metrics["finite"] == 1.0
        # the measured-angle MAE is in radians: non-negative and, for 60-120 degree showers, below pi
        assert all(0.0 <= metrics[f"{p}_angle"] < np.pi for p in ("g", "d_real", "d_fake"))


def test_losses_weigh_the_terms_as_the_paper(trained):
    _, _, _, history = trained
    for metrics in history:
        for player in ("g", "d_real", "d_fake"):
            weighted = sum(w * metrics[f"{player}_{t}"] for t, w in PAPER_WEIGHTS.items())
            assert metrics[f"{player}_loss"] == pytest.approx(weighted, rel=1e-5), player


def test_both_players_weights_change(trained):
    run, before, state, history = trained
    after = _weights(_players(run, state))
    for name, old, new in zip(("generator", "discriminator"), before, after, strict=True):
        assert len(old) == len(new) > 0
        assert all(a.shape == b.shape for a, b in zip(old, new, strict=True)), name
        assert all(np.isfinite(b).all() for b in new), name
        changed = [not np.array_equal(a, b) for a, b in zip(old, new, strict=True)]
        # every weight array of both players takes part in the update
        assert all(changed), (name, changed)
    for metrics in history:
        assert metrics["g_update_norm"] > 0 and metrics["d_update_norm"] > 0
