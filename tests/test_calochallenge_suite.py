"""The CaloChallenge suite: geometry, features on hand-built showers, separation power, classifier, FPD/KPD,
the published table and ``hepgan-evaluate --suite calochallenge`` on small files written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from hepgan.cli.evaluate import main
from hepgan.data.types import Showers
from hepgan.physics import calochallenge as cc
from hepgan.physics import fpd as fpdlib
from hepgan.physics.calochallenge.classifier import (
    ClassifierSettings,
    isotonic_apply,
    isotonic_fit,
    low_level_inputs,
)
from hepgan.physics.calochallenge.separation import log_edges, separation_power_counts

# a small cylindrical geometry (3 layers x 4 angles x 3 radii): 26 high-level features, so that FPD is in
# its linear regime at a few hundred events
SMALL = cc.Binning("small", n_layers=3, n_alpha=4, r_edges=(0.0, 2.0, 5.0, 9.0))


def toy_showers(
    n: int, seed: int, binning: cc.Binning = cc.DATASET_2, width: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth electromagnetic-like showers ``[n, V]`` MeV with log-uniform energies 1 GeV .. 1 TeV: a
    Gaussian longitudinal profile, an exponential radial profile of scale ``4 mm * width``, gamma noise."""
    rng = np.random.default_rng(seed)
    e_inc = 10 ** rng.uniform(3, 6, n)
    z = np.arange(binning.n_layers, dtype=np.float64)
    peak = binning.n_layers * (0.15 + 0.05 * np.log10(e_inc / 1e3))
    prof = np.exp(-0.5 * ((z[None] - peak[:, None]) / (0.15 * binning.n_layers)) ** 2)
    prof /= prof.sum(1, keepdims=True)
    radial = np.exp(-binning.r_centres() / (4.0 * width))
    radial /= radial.sum()
    mean = e_inc[:, None, None, None] * prof[:, :, None, None] * radial[None, None, None, :] / binning.n_alpha
    mean = np.broadcast_to(mean, (n, binning.n_layers, binning.n_alpha, binning.n_r))
    return rng.gamma(2.0, mean / 2.0).reshape(n, -1), e_inc


def one_voxel(binning: cc.Binning, layer: int, alpha: int, r: int, energy: float) -> np.ndarray:
    """One shower ``[1, V]`` with ``energy`` MeV in one voxel, placed by the challenge's flat index."""
    s = np.zeros((1, binning.n_voxels))
    s[0, (layer * binning.n_alpha + alpha) * binning.n_r + r] = energy
    return s


# --- geometry ---------------------------------------------------------------------------------------


def test_dataset_binnings_match_the_challenge_geometry() -> None:
    b2, b3 = cc.get_binning("2"), cc.get_binning("3")
    # dataset 2: 9 radial bins of 4.65 mm (0.5 Moliere radius), 16 angles; dataset 3: half the radial bin
    np.testing.assert_allclose(b2.r_edges, 4.65 * np.arange(10), rtol=0, atol=1e-12)
    np.testing.assert_allclose(b3.r_edges, 2.325 * np.arange(19), rtol=0, atol=1e-12)
    assert (b2.n_layers, b2.n_alpha, b2.n_r, b2.n_voxels) == (45, 16, 9, 6480)
    assert (b3.n_layers, b3.n_alpha, b3.n_r, b3.n_voxels) == (45, 50, 18, 40500)
    assert b2.grid == (16, 9, 45) and b3.grid == (50, 18, 45)
    assert cc.THRESHOLD_MEV == pytest.approx(0.01515, rel=1e-3)  # 15.15 keV
    assert cc.dataset_for_voxels(6480) is b2 and cc.dataset_for_voxels(40500) is b3
    with pytest.raises(ValueError, match="6480"):
        cc.dataset_for_voxels(368)
    with pytest.raises(ValueError, match="'2'"):
        cc.get_binning("1")


def test_angular_bins_split_minus_pi_to_pi_evenly() -> None:
    a = cc.DATASET_2.alpha_centres()
    step = 2 * math.pi / 16
    np.testing.assert_allclose(a, -math.pi + step * (np.arange(16) + 0.5), atol=1e-12)
    x, y = cc.DATASET_2.voxel_xy()
    # voxel (alpha 3, r 2) of a layer: flat position 3 * 9 + 2
    rc, ac = 4.65 * 2.5, -math.pi + step * 3.5
    assert (x[29], y[29]) == pytest.approx((rc * math.cos(ac), rc * math.sin(ac)), abs=1e-12)


# --- features -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "layer", "alpha", "r"), [("2", 0, 0, 0), ("2", 17, 5, 8), ("2", 44, 15, 3), ("3", 30, 37, 11)]
)
def test_one_lit_voxel_gives_its_bin_centre(dataset: str, layer: int, alpha: int, r: int) -> None:
    b = cc.get_binning(dataset)
    e_inc, e = 5000.0, 1234.5
    f = cc.compute_features(one_voxel(b, layer, alpha, r, e), np.array([[e_inc]]), b)
    dr = 41.85 / b.n_r
    rc = dr * (r + 0.5)
    ac = -math.pi + 2 * math.pi / b.n_alpha * (alpha + 0.5)
    assert f.e_layer[0, layer] == e and f.e_tot[0] == e
    assert f.e_ratio[0] == pytest.approx(e / e_inc)
    assert f.ec_eta[0, layer] == pytest.approx(rc * math.cos(ac), abs=1e-9)
    assert f.ec_phi[0, layer] == pytest.approx(rc * math.sin(ac), abs=1e-9)
    assert f.ec_r[0, layer] == pytest.approx(rc, abs=1e-9)
    # width 0 up to the cancellation in sqrt(<x^2> - <x>^2), which the challenge's formula shares
    for name in ("width_eta", "width_phi", "width_r"):
        assert getattr(f, name)[0, layer] == pytest.approx(0, abs=1e-5), name
    # the challenge's "sparsity" is the fraction of voxels left at 0
    assert f.sparsity[0, layer] == pytest.approx(1 - 1 / b.voxels_per_layer)
    others = np.arange(b.n_layers) != layer
    assert np.all(f.sparsity[0, others] == 1) and np.all(f.e_layer[0, others] == 0)
    for name in ("ec_eta", "ec_phi", "ec_r", "width_eta", "width_phi", "width_r"):
        assert np.all(getattr(f, name)[0, others] == 0), name  # empty layers: 0, not NaN


def test_two_voxels_give_midpoint_and_half_distance() -> None:
    b = cc.DATASET_2
    s = one_voxel(b, 7, 2, 1, 300.0) + one_voxel(b, 7, 9, 6, 300.0)
    f = cc.compute_features(s, np.array([1000.0]), b)
    x, y = b.voxel_xy()
    i, j = 2 * 9 + 1, 9 * 9 + 6
    assert f.ec_eta[0, 7] == pytest.approx((x[i] + x[j]) / 2)
    assert f.ec_phi[0, 7] == pytest.approx((y[i] + y[j]) / 2)
    assert f.width_eta[0, 7] == pytest.approx(abs(x[i] - x[j]) / 2)
    assert f.width_phi[0, 7] == pytest.approx(abs(y[i] - y[j]) / 2)
    assert f.width_r[0, 7] == pytest.approx(4.65 * 5 / 2)
    assert f.sparsity[0, 7] == pytest.approx(1 - 2 / 144)


def test_threshold_zeroes_voxels_below_15_keV() -> None:
    b = cc.DATASET_2
    s = one_voxel(b, 3, 0, 0, 0.015) + one_voxel(b, 4, 0, 0, 0.016)
    f = cc.compute_features(s, np.array([100.0]), b)
    assert f.e_layer[0, 3] == 0 and f.sparsity[0, 3] == 1
    assert f.e_layer[0, 4] == 0.016 and f.e_tot[0] == 0.016
    assert cc.compute_features(s, np.array([100.0]), b, threshold=0.0).e_tot[0] == pytest.approx(0.031)


def test_high_level_vector_has_the_challenge_layout() -> None:
    s, e = toy_showers(5, 0)
    f = cc.compute_features(s, e, cc.DATASET_2)
    v = f.hlf_vector()
    assert v.shape == (5, 362)
    np.testing.assert_allclose(v[:, 0], np.log10(e))
    np.testing.assert_allclose(v[:, 1:46], np.log10(f.e_layer + 1e-8))
    np.testing.assert_allclose(v[:, 46:91], f.ec_eta / 100)
    np.testing.assert_allclose(v[:, 1 + 5 * 45], np.log10(f.e_tot + 1e-8))
    np.testing.assert_allclose(v[:, 2 + 5 * 45 : 2 + 6 * 45], f.sparsity)
    np.testing.assert_allclose(v[:, -45:], f.width_r / 100)


def test_wrong_voxel_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[N, 40500\].*got shape \(2, 6480\)"):
        cc.compute_features(np.zeros((2, 6480)), np.ones(2), cc.DATASET_3)


def test_hepgan_showers_adapter_uses_the_challenge_voxel_order() -> None:
    b = cc.DATASET_2
    rng = np.random.default_rng(0)
    ecal = rng.random((3, 16, 9, 45)).astype(np.float32)  # [N, alpha, r, layer] GeV
    flat, e_inc, got = cc.from_showers(Showers(ecal=ecal, energy=np.array([1.0, 2.0, 3.0], np.float32)))
    assert got is b and flat.shape == (3, 6480)
    n, layer, alpha, r = 2, 31, 11, 4
    assert flat[n, (layer * 16 + alpha) * 9 + r] == pytest.approx(1000 * float(ecal[n, alpha, r, layer]))
    np.testing.assert_allclose(e_inc, [1000, 2000, 3000])
    with pytest.raises(ValueError, match="dataset 3"):
        cc.from_showers(Showers(ecal=ecal, energy=np.ones(3, np.float32)), "3")


# --- separation power -----------------------------------------------------------------------------------


def test_separation_power_limits_and_a_hand_computed_value() -> None:
    edges = np.linspace(0, 4, 5)
    a = np.array([0.5, 0.5, 1.5, 2.5])
    assert cc.separation_power(a, a, edges) == 0
    # no bin in common: 0.5 * (sum p + sum q) = 1
    assert cc.separation_power(np.array([0.5, 1.5]), np.array([2.5, 3.5]), edges) == pytest.approx(1.0)
    # p = (1/2, 1/2), q = (1, 0): 0.5 * (0.25 / 1.5 + 0.25 / 0.5) = 1/3
    assert cc.separation_power(np.array([0.5, 1.5]), np.array([0.2, 0.7]), edges) == pytest.approx(1 / 3)
    # entries outside the bins are not counted; normalisation is over the bins
    assert cc.separation_power(np.array([0.5, 9.0]), np.array([0.6, -3.0, 0.7]), edges) == 0
    assert math.isnan(separation_power_counts(np.zeros(4), np.ones(4)))
    assert log_edges(cc.THRESHOLD_MEV, cc.THRESHOLD_MEV, 40) is None


def test_separation_powers_per_feature_and_layer() -> None:
    s, e = toy_showers(300, 1)
    ref = cc.compute_features(s, e, cc.DATASET_2)
    same = cc.separation_powers(ref, ref, cc.THRESHOLD_MEV, voxel=(np.ones(49), np.ones(49)))
    for name, v in same.items():
        values = np.asarray(v, np.float64).ravel()
        assert np.all(values[np.isfinite(values)] == 0), name
        assert np.isfinite(values).any(), name
    assert all(len(same[k]) == 45 for k in ("E_layer", "EC_eta", "width_r", "sparsity"))  # type: ignore[arg-type]
    # every centre of energy moved by 5 mm in x: the EC_eta histograms (0.6 mm bins) no longer overlap
    # where the reference is narrow, while EC_phi is untouched
    shifted = ref[np.arange(len(ref))]
    shifted.ec_eta = ref.ec_eta + 5.0
    sep = cc.separation_powers(shifted, ref, cc.THRESHOLD_MEV)
    assert min(sep["EC_eta"][5:20]) > 0.9  # type: ignore[index]
    assert max(sep["EC_phi"]) == 0  # type: ignore[arg-type]
    summary = cc.summarise(sep)
    assert summary["max"] == pytest.approx(max(sep["EC_eta"]))  # type: ignore[arg-type]
    assert str(summary["max_where"]).startswith("EC_eta layer")


# --- classifier ---------------------------------------------------------------------------------------


def test_isotonic_fit_pools_adjacent_violators() -> None:
    xs, ys = isotonic_fit(np.arange(1.0, 6.0), np.array([1.0, 0.0, 1.0, 0.0, 1.0]))
    np.testing.assert_allclose(ys, [0.5, 0.5, 0.5, 0.5, 1 - 1e-6])
    np.testing.assert_allclose(
        isotonic_apply(xs, ys, np.array([0.0, 4.5, 9.0])), [0.5, 0.5 + 0.5 * (0.5 - 1e-6), 1 - 1e-6]
    )
    # ties in x are merged first: (0, 1) at x = 2 -> 0.5
    xs, ys = isotonic_fit(np.array([1.0, 2.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0, 1.0]))
    np.testing.assert_allclose(xs, [1, 2, 3])
    np.testing.assert_allclose(ys, [1e-6, 0.5, 1 - 1e-6])


SMALL_NET = ClassifierSettings(n_hidden=32, n_layer=1, epochs=25, batch=100, lr=1e-3, name="test")


def test_classifier_separates_different_sets_and_not_equal_ones() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(800, 8)), rng.normal(size=(800, 8))
    shifted = b + np.r_[1.5, np.zeros(7)]
    far = cc.challenge_auc(shifted, a, SMALL_NET, seed=1)
    assert far["auc"] > 0.75 and far["n_val"] == 320 and far["n_train"] == 960
    near = cc.challenge_auc(b, a, SMALL_NET, seed=1)
    assert abs(near["auc"] - 0.5) < 4 * near["auc_err"] + 0.02
    assert 1 <= near["best_epoch"] <= near["epochs"] <= 25


def test_low_level_inputs_are_log_energy_and_voxels_over_energy() -> None:
    b = cc.DATASET_2
    s = one_voxel(b, 2, 1, 1, 50.0) + one_voxel(b, 3, 1, 1, 0.01)
    x = low_level_inputs(s, np.array([[2000.0]]), cc.THRESHOLD_MEV)
    assert x.shape == (1, 6481) and x.dtype == np.float32
    assert x[0, 0] == pytest.approx(math.log10(2000.0))
    assert x[0, 1 + (2 * 16 + 1) * 9 + 1] == pytest.approx(0.025)
    assert x[0, 1:].sum() == pytest.approx(0.025)  # the 10 keV voxel is below threshold


# --- FPD / KPD ----------------------------------------------------------------------------------------


def test_eigh_trace_matches_sqrtm() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 12)), rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fpdlib.frechet_distance(*args, trace_method="eigh") == pytest.approx(
        fpdlib.frechet_distance(*args), rel=1e-8
    )


def test_suite_on_identical_sets_gives_zero_distances() -> None:
    s, e = toy_showers(600, 2, SMALL)
    t, f = toy_showers(600, 3, SMALL, width=1.6)
    same = cc.evaluate(s, e, s, e, SMALL, classifier=None, fpd_batches=4)
    other = cc.evaluate(t, f, s, e, SMALL, classifier=None, fpd_batches=4)
    assert same["fpd"] <= 3 * same["fpd_err"] + 1e-4
    assert other["fpd"] > 10 * (same["fpd"] + same["fpd_err"])
    assert abs(same["kpd"]) < other["kpd"] / 10
    assert same["separation_summary"]["max"] == 0 and other["separation_summary"]["max"] > 0.1
    assert same["fpd_settings"]["features"] == 8 * 3 + 2 and same["comparable"]["fpd"] is False
    assert "auc_low" not in same


def test_too_few_events_is_refused() -> None:
    s, e = toy_showers(100, 2, SMALL)
    with pytest.raises(ValueError, match="at least 500"):
        cc.evaluate(s, e, s, e, SMALL, classifier=None)


# --- published table ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["2", "3"])
def test_published_table_is_complete_and_renders(dataset: str) -> None:
    rows = cc.published(dataset)
    assert rows[0]["name"] == "GEANT4"
    # GEANT4 against GEANT4 cannot be told apart: the classifiers sit at 0.5
    assert abs(rows[0]["auc_low"] - 0.5) < 0.01 and abs(rows[0]["auc_high"] - 0.5) < 0.01
    assert len({r["name"] for r in rows}) == len(rows)
    for r in rows:
        assert all(len(r["sep"][k]) == 45 for k in ("E_layer", "EC_eta", "width_r", "sparsity"))
        assert 0.4 < r["auc_low"] <= 1 and r["fpd_x1e3"] > 0
    assert "arXiv:2410.21611" in cc.published_source()["write_up"]
    fake = {"dataset": dataset, "auc_low": 0.61, "separation_power": {"E_ratio": 0.002}, "comparable": {}}
    table = cc.comparison_markdown(fake, name="mine")
    assert table.count("\n| ") == len(rows) + 2  # header, our row, one per submission
    assert "| **mine** | **0.6100** |" in table and "**0.002**" in table


# --- command line -------------------------------------------------------------------------------------


def write_cc(path: Path, showers: np.ndarray, energies: np.ndarray, skip: str | None = None) -> Path:
    with h5py.File(path, "w") as f:
        if skip != "showers":
            f["showers"] = showers.astype(np.float32)
        if skip != "incident_energies":
            f["incident_energies"] = energies.reshape(-1, 1)
    return path


@pytest.fixture(scope="module")
def ds2_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cc")
    gen, e_gen = toy_showers(500, 11, width=1.2)
    ref, e_ref = toy_showers(500, 12)
    return {"gen": write_cc(d / "gen.h5", gen, e_gen), "ref": write_cc(d / "ref.h5", ref, e_ref)}


def test_cli_runs_the_suite_and_writes_metrics_table_figures(
    ds2_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(ds2_files["gen"]), str(ds2_files["ref"]), "--suite", "calochallenge", "--out", str(tmp_path)]
    rc = main([*args, "--classifier", "cpu", "--fpd-batches", "1"])
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=_strict_json)
    assert m["dataset"] == "2" and m["n_generated"] == m["n_reference"] == 500
    sep = m["separation_power"]
    assert set(sep) == {"E_ratio", "voxel", "E_layer", "EC_eta", "EC_phi", "EC_r", "width_eta", "width_phi",
                        "width_r", "sparsity"}  # fmt: skip
    assert len(sep["width_r"]) == 45 and {"mean", "max", "max_where"} <= set(m["separation_summary"])
    for key in ("auc_low", "auc_high", "fpd", "kpd"):
        assert m[key] is not None and m[f"{key}_err"] >= 0
    assert m["classifier"]["settings"]["name"] == "cpu" and m["comparable"]["classifier"] is False
    assert "**this evaluation**" in (tmp_path / "comparison.md").read_text()
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"layer_energy.png", "energy_ratio.png", "shapes.png", "voxel_spectrum.png"} <= figures
    out = capsys.readouterr().out
    assert "separation power" in out and "auc_low" in out and "not comparable" in out


def _strict_json(token: str) -> None:
    raise AssertionError(f"metrics.json holds {token}, which is not JSON")


def _run_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*args, "--suite", "calochallenge", "--classifier", "off"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def test_cli_wrong_dataset_names_file_key_and_counts(
    ds2_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_error(
        [str(ds2_files["gen"]), str(ds2_files["ref"]), "--dataset", "3", "--out", str(tmp_path)], capsys
    )
    assert str(ds2_files["ref"]) in err and "'showers'" in err and "6480" in err and "40500" in err


def test_cli_unknown_voxel_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_cc(tmp_path / "bad.h5", np.ones((600, 100)), np.ones(600))
    err = _run_error([str(bad), str(bad), "--out", str(tmp_path / "o")], capsys)
    assert str(bad) in err and "100 voxels" in err


@pytest.mark.parametrize("key", ["showers", "incident_energies"])
def test_cli_missing_key(
    key: str, ds2_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s, e = toy_showers(4, 0)
    bad = write_cc(tmp_path / "bad.h5", s, e, skip=key)
    err = _run_error([str(bad), str(ds2_files["ref"]), "--out", str(tmp_path / "o")], capsys)
    assert f"{bad}, key '{key}': missing" in err


def test_cli_negative_energies(
    ds2_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s, e = toy_showers(600, 0)
    s[7, 100] = -2.0
    neg = write_cc(tmp_path / "neg.h5", s, e)
    err = _run_error([str(neg), str(ds2_files["ref"]), "--out", str(tmp_path / "o")], capsys)
    assert str(neg) in err and "'showers'" in err and "negative" in err
    s, e = toy_showers(600, 0)
    e[3] = 0.0
    zero = write_cc(tmp_path / "zero.h5", s, e)
    err = _run_error([str(zero), str(ds2_files["ref"]), "--out", str(tmp_path / "o")], capsys)
    assert "'incident_energies'" in err and "> 0 MeV" in err


def test_cli_too_few_events(
    ds2_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_error(
        [str(ds2_files["gen"]), str(ds2_files["ref"]), "--max-events", "200", "--out", str(tmp_path)], capsys
    )
    assert "holds 200 events" in err and "at least 500" in err and str(ds2_files["gen"]) in err


def test_cli_refuses_a_voxel_order_other_than_the_challenges(
    ds2_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s, e = toy_showers(4, 0)
    bad = write_cc(tmp_path / "xyz.h5", s, e)
    with h5py.File(bad, "a") as f:
        f.attrs["voxel_order"] = "XYZ"
    err = _run_error([str(bad), str(ds2_files["ref"]), "--out", str(tmp_path / "o")], capsys)
    assert str(bad) in err and "voxel_order" in err
