"""What training records for the explain views: per-layer norms (``layers.csv``), the validation's
dynamics (``dynamics.csv``: D per energy bin, diversity), and TensorBoard as users read it (scalar groups,
shower images, observable histograms, hparams with the final physics metrics), read back with
TensorBoard's own event reader."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from explain_helpers import SHARED_STEPS as STEPS
from explain_helpers import shared_run, train_tiny


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_run(tmp_path_factory, "healthy"), shared_run(tmp_path_factory, "collapsed")


def test_layer_norms_every_n_steps_for_every_layer(runs):
    import json

    healthy, _ = runs
    rows = _rows(healthy / "layers.csv")
    assert sorted({int(r["step"]) for r in rows}) == [2, 4, 6, 8]
    layers = {(r["player"], r["layer"]) for r in rows}
    manifest = json.loads((healthy / "manifest.json").read_text())
    assert manifest["parameters"]["generator"] > 0
    assert {"dense", "conv1", "conv4", "bn1"} <= {layer for who, layer in layers if who == "g"}
    assert {"conv1", "head_logit", "bn2"} <= {layer for who, layer in layers if who == "d"}
    for r in rows:
        w, g, u, ratio = (float(r[k]) for k in ("weight_norm", "grad_norm", "update_norm", "update_ratio"))
        assert w > 0 and g >= 0 and u >= 0
        assert math.isclose(ratio, u / w, rel_tol=1e-6)
    # the layers' norms make up the player's: sqrt(sum of squares) = the train.csv parameter norm
    train = {int(r["step"]): r for r in _rows(healthy / "train.csv")}
    for who in ("g", "d"):
        total = math.sqrt(
            sum(float(r["weight_norm"]) ** 2 for r in rows if r["player"] == who and r["step"] == "8")
        )
        assert math.isclose(total, float(train[8][f"{who}_param_norm"]), rel_tol=1e-4)
    assert not any(k.startswith("layer/") for k in train[8])  # kept out of train.csv


def test_no_layer_norms_when_off(tmp_path):
    from hepgan.train.config import compose, to_config
    from hepgan.train.step import StepConfig

    conf = to_config(compose(["debug=default", "logging.layer_stats_every=0"]))
    assert conf.logging.layer_stats_every == 0
    run = train_tiny(
        tmp_path / "off", steps=2, extra=["logging.layer_stats_every=0", "logging.dynamics_events=0"]
    )
    assert not (run / "layers.csv").exists() and not (run / "dynamics.csv").exists()
    assert StepConfig.from_train(conf.train, arch="fixed25", cell_power=1.0).layer_stats is False


def test_dynamics_rows_per_validation_and_collapse_shows(runs):
    healthy, collapsed = runs
    for run in runs:
        rows = _rows(run / "dynamics.csv")
        assert sorted({int(r["step"]) for r in rows}) == [0, 4, 8]  # every validation
        for r in rows:
            if r["quantity"] in ("d_real", "d_fake"):
                assert 0.0 < float(r["value"]) < 1.0 and int(r["n"]) > 0
                assert float(r["lo"]) < float(r["hi"])
        assert not any(r["variable"] == "theta" for r in rows)  # fixed angle: no angle bins

    def final_diversity(run: Path, obs: str) -> list[float]:
        return [
            float(r["value"])
            for r in _rows(run / "dynamics.csv")
            if r["step"] == str(STEPS) and r["quantity"] == f"diversity/{obs}"
        ]

    # the generator that ignores its noise: showers at given conditions alike (depth spread ~0);
    # the healthy one keeps a spread comparable to (here, untrained: larger than) the data's
    for obs in ("z_mean", "x_var"):
        assert sorted(final_diversity(collapsed, obs))[2] < 0.1, obs  # the median of the five bins
        assert min(final_diversity(healthy, obs)) > 0.3, obs


def test_tensorboard_groups_images_histograms_hparams(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    healthy, _ = runs
    acc = EventAccumulator(str(healthy / "tb"), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    for tag in (
        "D/loss", "G/loss", "D/real_p", "D/fake_p", "G_terms/bce", "health/g_grad_norm", "optim/lr_g",
        "physics/physics_score", "physics_sep/sf", "layers_g/dense/grad_norm", "layers_d/conv1/update_ratio",
        "dynamics/d_real", "dynamics/diversity_z_mean", "hparams/best_physics_score",
    ):  # fmt: skip
        assert tag in scalars, tag
    assert not any(t.startswith(("train/", "val/")) for t in scalars)  # every metric has its group
    assert {"showers/single", "showers/mean_projections"} <= set(tags["images"])
    assert [e.step for e in acc.Images("showers/single")] == [0, 4, STEPS]
    assert acc.Images("showers/single")[0].height > 100
    assert {"observables_generated/sf", "observables_reference/z_mean"} <= set(tags["histograms"])
    hist = acc.Histograms("observables_generated/e_vis")[-1]
    assert hist.step == STEPS and hist.histogram_value.num == 256  # the validation's showers
    content = acc.PluginTagToContent("hparams")
    data = {plugin_data_pb2.HParamsPluginData.FromString(v).WhichOneof("data"): v for v in content.values()}
    start = plugin_data_pb2.HParamsPluginData.FromString(data["session_start_info"]).session_start_info
    assert start.hparams["train.batch_size"].number_value == 16
    assert start.hparams["model.size"].string_value == "tiny"
    exp = plugin_data_pb2.HParamsPluginData.FromString(data["experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} >= {"physics/physics_score", "hparams/best_physics_score"}


def test_resume_writes_no_row_twice(tmp_path):
    run = tmp_path / "resumed"
    extra = ["logging.layer_stats_every=1"]
    train_tiny(run, steps=4, extra=extra)
    train_tiny(run, steps=6, extra=extra)  # the same folder, two more steps: resumes at 4
    steps = [(r["step"], r["player"], r["layer"]) for r in _rows(run / "layers.csv")]
    assert len(steps) == len(set(steps)) and max(int(s) for s, _, _ in steps) == 6
    dyn = [(r["step"], r["quantity"], r["lo"]) for r in _rows(run / "dynamics.csv")]
    assert len(dyn) == len(set(dyn))


def test_dynamics_rows_bins_and_diversity_by_construction():
    """Angle bins where the angle varies; the diversity of a set that fluctuates like the data is about 1,
    of a smooth function of the conditions (here varying 16 times the data's fluctuation over the energy
    range, plus an angle term) below the collapse threshold 0.2."""
    import numpy as np

    from hepgan.train.probes import N_ENERGY_BINS, N_THETA_BINS, dynamics_rows

    rng = np.random.default_rng(0)
    n = 4000
    energy = rng.uniform(10.0, 500.0, n)
    theta = np.deg2rad(rng.uniform(60.0, 120.0, n))
    trend = 0.02 + 1e-5 * energy + 0.001 * np.cos(theta)
    real = {"sf": trend + 0.001 * rng.standard_normal(n)}
    like = {"sf": trend + 0.001 * rng.standard_normal(n)}
    smooth = {"sf": 0.02 + 0.004 * np.log(energy) + 0.002 * np.sin(3 * theta)}  # no noise
    d = np.full(n, 0.5)
    rows = dynamics_rows(3, d, d, energy, theta, like, real)
    theta_rows = [r for r in rows if r["variable"] == "theta" and r["quantity"] == "d_real"]
    assert len(theta_rows) == N_THETA_BINS and 60.0 <= float(theta_rows[0]["lo"]) < 61.0
    div = [float(r["value"]) for r in rows if r["quantity"] == "diversity/sf"]
    assert len(div) == N_ENERGY_BINS and all(0.85 < v < 1.15 for v in div)
    div = [
        float(r["value"])
        for r in dynamics_rows(3, d, d, energy, theta, smooth, real)
        if r["quantity"] == "diversity/sf"
    ]
    assert all(v < 0.2 for v in div)
    fixed = dynamics_rows(3, d, d, energy, np.full(n, np.pi / 2), like, real)
    assert not any(r["variable"] == "theta" for r in fixed)  # a fixed angle: no angle bins


def test_step_timing_columns_and_profile_trace(tmp_path):
    """Every train.csv row carries the measured per-step input wait and wall time; train.profile_steps
    writes a JAX profiler trace of those steps; a malformed range is a config error naming the key."""
    from hepgan.train.config import compose, to_config, validate

    run = train_tiny(
        tmp_path / "profiled", steps=4, extra=["train.profile_steps=[2,3]", "logging.dynamics_events=0"]
    )
    rows = _rows(run / "train.csv")
    for r in rows:
        wait, wall = float(r["input_seconds"]), float(r["step_seconds"])
        assert 0.0 <= wait <= wall and wall > 0.0
    traces = list((run / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0
    with pytest.raises(ValueError, match=r"train.profile_steps must be \[first, last\]"):
        validate(to_config(compose(["debug=default", "train.profile_steps=[3,2]"])))
