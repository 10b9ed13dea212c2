"""``experiment=paper_fixed25`` and ``experiment=paper_angle51`` give the published set-ups.

The expected values are the papers' (the Keras ``EcalEnergyGan.py`` and ``AngleArch3dGAN.py`` training
scripts; Khattak et al., and EPJC 82 (2022) 386 for AngleGAN), written out here, not read from the YAML
files or the package's presets. They are checked on what a run is built from (:func:`build_run` without
data: the model as built, the preprocessing, the update's loss weights, the optimizers), so a default
that leaks in from the demo config, a scaling rule that moves the learning rate or a preset that drifts
from the paper fails here. tests/test_train_cli.py checks that every experiment composes at all.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hepgan.data.simulate import EnergySpec, parse_theta
from hepgan.train.config import compose
from hepgan.train.run import build_run

# The papers' facts per experiment.
PAPERS: dict[str, dict[str, Any]] = {
    "paper_fixed25": {
        "arch": "fixed25",
        "grid": (25, 25, 25),
        "energy_gev": (10.0, 500.0),  # electrons 10-500 GeV
        "theta_deg": None,  # one fixed angle
        "latent": 200,
        "g_params": (0.87e6, 1e4),  # "about 0.87 M": (figure, its last digit)
        "d_params": (73e3, 1e3),  # "about 73 k"
        "weights": {"bce": 2.0, "energy": 0.1, "ecal": 0.1},
        "batch": 128,
        # D on a real batch, then D on a fake batch (two optimizer updates), then G twice; 5 % label flips
        "paper_iteration": True,
        "cell_scale": 100.0,  # cells x100
        "cell_power": 1.0,
        "bn_epsilon": 1e-3,  # Keras' default
        "fakes_reuse_real_energy": None,  # not stated for the fixed-angle 3DGAN
    },
    "paper_angle51": {
        "arch": "angle51",
        "grid": (51, 51, 25),
        "energy_gev": (2.0, 500.0),
        "theta_deg": (60.0, 120.0),
        "latent": 256,  # [E/100, theta, N(0,1)^254]
        "g_params": (1.36e6, 1e4),  # "about 1.36 M"
        "d_params": None,  # the paper states no figure
        "weights": {"bce": 3.0, "energy": 0.1, "angle": 25.0, "ecal": 0.1},
        "batch": 64,
        "paper_iteration": None,  # not stated for AngleGAN
        "cell_scale": 1.0,
        "cell_power": 0.85,  # cells^0.85
        "bn_epsilon": 1e-6,
        "fakes_reuse_real_energy": True,  # fakes at the real batch's (E, theta)
    },
}
# Both papers: RMSprop at lr 1e-3 for generator and discriminator; energies enter as E/100.
PAPER_LR, ENERGY_SCALE = 1e-3, 0.01
# Keras RMSprop's defaults (rho 0.9, eps 1e-7 outside the square root): from zero state, a gradient g
# gives the first update -lr g / (sqrt(0.1 g^2) + 1e-7).
KERAS_RHO, KERAS_EPS = 0.9, 1e-7


def _about(n: int, stated: tuple[float, float]) -> bool:
    """``n`` rounds to the paper's "about" figure ``stated = (figure, its last digit's unit)``."""
    figure, unit = stated
    return round(n / unit) == round(figure / unit)


def _count(module: nnx.Module) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.fixture(scope="module", params=sorted(PAPERS))
def paper_run(request: pytest.FixtureRequest) -> tuple[dict[str, Any], Any]:
    cfg = compose([f"experiment={request.param}"])
    return PAPERS[request.param], build_run(cfg, parallel=False, data=False)


def test_data_is_the_papers_showers(paper_run) -> None:
    paper, run = paper_run
    data = run.conf.data
    assert data.kind == "simulated" and data.geometry == paper["arch"]
    assert EnergySpec.parse(data.energy) == EnergySpec("uniform", paper["energy_gev"])
    lo, hi = parse_theta(data.theta_deg)
    if paper["theta_deg"] is None:
        assert lo == hi
    else:
        assert (lo, hi) == pytest.approx(paper["theta_deg"])


def test_model_is_the_published_architecture(paper_run) -> None:
    paper, run = paper_run
    assert (run.model.arch, run.model.size) == (paper["arch"], "paper")
    g = run.players.generator(run.state, ema=False)
    d = run.players.discriminator(run.state)
    assert g.latent_dim == paper["latent"]
    assert _about(_count(g), paper["g_params"]), _count(g)
    if paper["d_params"] is not None:
        assert _about(_count(d), paper["d_params"]), _count(d)
    showers = nnx.eval_shape(lambda m, z: m(z), g, jax.ShapeDtypeStruct((2, g.latent_dim), jnp.float32))
    assert showers.shape == (2, *paper["grid"])
    for module in (g, d):  # Keras' momentum convention, and the paper's epsilon
        bns = [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.BatchNorm)]
        assert bns and all(bn.momentum == 0.99 and bn.epsilon == paper["bn_epsilon"] for bn in bns)


def test_preprocessing_is_the_papers(paper_run) -> None:
    paper, run = paper_run
    pre = run.preprocess
    assert pre.cell_scale == pytest.approx(paper["cell_scale"])
    assert pre.cell_power == pytest.approx(paper["cell_power"])
    assert pre.energy_scale == pytest.approx(ENERGY_SCALE)
    # the discriminator's ECAL-sum head and the loss's target undo the same power
    assert run.model.cell_power == pytest.approx(paper["cell_power"])
    assert run.step_config.cell_power == pytest.approx(paper["cell_power"])


def test_update_is_the_papers(paper_run) -> None:
    paper, run = paper_run
    tc = run.conf.train
    assert tc.batch_size == paper["batch"]
    if paper["paper_iteration"]:  # separate real and fake batches, as two Keras train_on_batch calls
        assert tc.schedule == "paper" and tc.d_batch == "separate"
        assert run.updates_per_step == {"d": 2, "g": 2}
        assert tc.label_flip == pytest.approx(0.05)
    assert tc.adv_loss == "bce"
    weights = run.step_config.loss_weights()
    assert list(weights) == list(paper["weights"])
    assert weights == pytest.approx(paper["weights"])
    if paper["fakes_reuse_real_energy"] is not None:
        assert (run.step_config.fake_energy_range is None) == paper["fakes_reuse_real_energy"]


def test_optimizer_is_rmsprop_at_the_papers_rate(paper_run) -> None:
    paper, run = paper_run
    opt = run.optimizers
    assert opt.optimizer == "rmsprop"
    # the rate at the experiment's own batch, after any batch-size scaling rule
    assert opt.peak_lr == pytest.approx({"g": PAPER_LR, "d": PAPER_LR})
    assert opt.global_batch == paper["batch"]
    # what a first step moves a weight by: the player's transform times its peak rate
    g = np.array([0.5, -2.0, 3.0], np.float32)
    expected = -PAPER_LR * g / (np.sqrt((1 - KERAS_RHO) * g**2) + KERAS_EPS)
    for player in (run.players.g, run.players.d):
        params = jnp.zeros(3, jnp.float32)
        updates, _ = player.tx.update(jnp.asarray(g), player.tx.init(params), params)
        np.testing.assert_allclose(PAPER_LR * np.asarray(updates), expected, rtol=1e-5)
