"""Metrics against independent formulas and known facts, plus the errors users see."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from hepgan.data.types import Showers
from hepgan.physics import binning, classifier, distances, fpd
from hepgan.physics.errors import GridMismatchError, InsufficientEventsError
from hepgan.physics.extract import extract
from hepgan.physics.metrics import FAST, SCORE_OBSERVABLES, evaluate, gan3d_terms, resolve_metrics
from hepgan.physics.report import write_metrics, write_report


def _random_showers(
    n: int, seed: int, grid: tuple[int, int, int] = (12, 12, 9), width: float = 1.0
) -> Showers:
    """Blobs with a Gaussian transverse and a gamma-like longitudinal shape, energies 10..100 GeV."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = grid
    e = rng.uniform(10, 100, n)
    x = np.arange(nx) - (nx - 1) / 2
    y = np.arange(ny) - (ny - 1) / 2
    z = np.arange(nz) + 0.5
    w = width * rng.uniform(1.0, 2.0, n)
    tr = np.exp(-(x[None, :, None] ** 2 + y[None, None, :] ** 2) / (2 * w[:, None, None] ** 2))
    lo = z[None, :] ** 2 * np.exp(-z[None, :] / rng.uniform(1.0, 2.0, n)[:, None])
    ecal = tr[:, :, :, None] * lo[:, None, None, :] * rng.gamma(20, 1 / 20, (n, nx, ny, nz))
    ecal *= (0.02 * e * rng.normal(1, 0.05, n) / ecal.sum((1, 2, 3)))[:, None, None, None]
    return Showers(ecal=ecal.astype(np.float32), energy=e.astype(np.float32))


# ------------------------------------------------------------------ one-dimensional distances


def test_separation_power_formula_and_limits() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    gen = np.array([0.5, 0.5, 1.5, 2.5])  # normalised [0.5, 0.25, 0.25]
    ref = np.array([0.5, 1.5, 1.5, 1.5])  # normalised [0.25, 0.75, 0]
    h1, h2 = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.75, 0.0])
    expected = 0.5 * np.sum((h1 - h2) ** 2 / (h1 + h2))
    assert distances.separation_power(gen, ref, edges) == pytest.approx(expected)
    assert distances.separation_power(ref, ref, edges) == 0.0
    assert distances.separation_power(np.full(5, 0.5), np.full(5, 2.5), edges) == pytest.approx(1.0)


def test_separation_power_null_floor_is_as_documented() -> None:
    rng = np.random.default_rng(0)
    vals = [distances.separation_power(rng.normal(size=1000), rng.normal(size=1000)) for _ in range(40)]
    k = distances.n_hist_bins(1000)
    assert np.mean(vals) == pytest.approx(k / 4 * (2 / 1000), rel=0.3)


def test_chi2_ndf_matches_contingency_formula() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=500), rng.normal(0.1, 1, size=700)
    edges = distances.histogram_edges(b)
    t = np.stack([distances.histogram(a, edges), distances.histogram(b, edges)])
    t = t[:, t.sum(0) > 0]
    exp = t.sum(1, keepdims=True) * t.sum(0, keepdims=True) / t.sum()
    chi2 = ((t - exp) ** 2 / exp).sum()
    assert distances.chi2_ndf(a, b, edges)[0] == pytest.approx(chi2 / (t.shape[1] - 1))


def test_ks_and_w1_known_values() -> None:
    a = np.array([0.0, 1.0, 2.0, 3.0])
    assert distances.ks(a, a + 10) == 1.0
    assert distances.wasserstein1(a, a + 0.5) == pytest.approx(0.5)


def test_integer_observables_get_one_bin_per_value() -> None:
    edges = distances.histogram_edges(np.array([3.0, 4.0, 5.0, 4.0, 6.0] * 20))
    np.testing.assert_allclose(edges, [2.5, 3.5, 4.5, 5.5, 6.5])


def _binned_normal_separation(edges: np.ndarray, mu: tuple[float, float], sd: tuple[float, float]) -> float:
    """Separation power of two normal densities on ``edges``, tails folded into the edge bins."""
    from scipy import stats

    def h(m: float, s: float) -> np.ndarray:
        cdf = stats.norm.cdf(edges, m, s)
        p = np.diff(cdf)
        p[0] += cdf[0]
        p[-1] += 1 - cdf[-1]
        return p

    h1, h2 = h(mu[0], sd[0]), h(mu[1], sd[1])
    return float(0.5 * np.sum((h1 - h2) ** 2 / (h1 + h2)))


def test_rescaled_observable_gives_its_true_separation() -> None:
    rng = np.random.default_rng(20)
    ref = rng.normal(10.0, 1.0, 4000).astype(np.float32)
    gen = rng.normal(10.0, 1.0, 4000).astype(np.float32) * np.float32(1.05)
    edges = distances.histogram_edges(ref)
    true = _binned_normal_separation(edges, (10.5, 10.0), (1.05, 1.0))
    floor = len(edges) / 4 * (2 / 4000)
    assert distances.separation_power(gen, ref) == pytest.approx(true + floor, abs=0.02)
    assert true > 0.05  # the test has something to find
    assert distances.separation_power(ref, ref) == 0.0


def test_near_constant_observable_is_not_binned_at_the_rounding_level() -> None:
    rng = np.random.default_rng(21)
    # spread at float32 rounding (~1e-7 relative): physically a constant
    a = (3.0 + rng.normal(0, 3e-7, 2000)).astype(np.float32)
    b = (3.0 + rng.normal(0, 3e-7, 2000)).astype(np.float32)
    sep = distances.separation_power(a, b)
    assert np.isfinite(sep) and sep < 0.01
    assert distances.separation_power(a, a) == 0.0
    # a real rescaling of the same constant is total separation, not a rounding artefact
    assert distances.separation_power(a * np.float32(1.05), b) == pytest.approx(1.0)
    edges = distances.histogram_edges(b)
    assert np.all(np.diff(edges) >= distances.REL_RESOLUTION * 3.0 * (1 - 1e-9))
    assert len(edges) % 2 == 0  # an odd number of bins: the median in the middle of one


def _fixed_shape_showers(n: int, seed: int) -> Showers:
    """Every shower the same shape scaled by its energy: all moments and fractions constant."""
    rng = np.random.default_rng(seed)
    x = np.arange(12) - 5.5
    z = np.arange(9) + 0.5
    shape = np.exp(-(x[:, None, None] ** 2 + x[None, :, None] ** 2) / 2) * (z**2 * np.exp(-z / 1.5))
    e = rng.uniform(10, 100, n)
    ecal = 0.02 * e[:, None, None, None] * (shape / shape.sum())[None]
    return Showers(ecal=ecal.astype(np.float32), energy=e.astype(np.float32))


def test_cell_rescaling_moves_only_the_energy_scale() -> None:
    r = _fixed_shape_showers(400, seed=22)
    g = Showers(ecal=r.ecal * np.float32(1.05), energy=r.energy)
    m = evaluate(g, r, metrics=["separation"])
    # ratios of cell sums do not change under x1.05; float32 rounding does, by ~1e-7
    for name in ("x_mean", "x_var", "y_mean", "y_var", "z_mean", "z_var", "frac_first", "angle"):
        assert m[f"sep/{name}"] < 1e-3, (name, m[f"sep/{name}"])
    assert m["sep/sf"] == pytest.approx(1.0)  # the sampling fraction is a constant moved by 5 %


# ------------------------------------------------------------------ FPD / KPD


def test_frechet_distance_of_gaussians_analytic() -> None:
    mu1, mu2 = np.array([0.0, 1.0]), np.array([0.5, -1.0])
    c1, c2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    expected = 0.25 + 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2  # diagonal: sum (s1 - s2)^2
    assert fpd.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-6)


def test_fpd_same_distribution_is_compatible_with_zero_and_shift_is_measured() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(4000, 3))
    val, err = fpd.fpd(ref, rng.normal(size=(4000, 3)), seed=0)
    assert val <= max(3 * err, 1e-4)
    shifted = rng.normal(size=(4000, 3)) + np.array([0.5, 0.0, 0.0])
    scale = np.abs(ref).max(0)
    val, err = fpd.fpd(ref, shifted, seed=0)
    assert val == pytest.approx((0.5 / scale[0]) ** 2, rel=0.2)
    assert val > 5 * err


def test_mmd_matches_brute_force_and_kpd_null() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(6, 3))

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / 3 + 1) ** 3)

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(6)) / (7 * 6)
    assert fpd.mmd_poly_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)
    med, err = fpd.kpd(rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4)), seed=1)
    assert abs(med) <= 3 * err + 1e-4


# ------------------------------------------------------------------ classifier


def test_auc_matches_pair_counting() -> None:
    rng = np.random.default_rng(4)
    p, q = rng.normal(1, 1, 40), rng.normal(0, 1, 30)
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in p for b in q])
    a, err = classifier.auc(p, q)
    assert a == pytest.approx(pairs)
    assert 0 < err < 0.1
    assert classifier.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0]))[0] == 1.0


def test_classifier_separates_and_does_not_invent_differences() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(2000, 5))
    same = classifier.classifier_auc(rng.normal(size=(2000, 5)), ref, seed=0)
    assert 0.4 < same["auc"] < 0.6 and abs(same["auc"] - 0.5) < 4 * same["auc_err"]
    assert same["n_shared"] == 0 and same["n_test"] == 800 and same["n_val"] == 800
    assert 0 < same["best_epoch"] < same["epochs"]  # stopped early on the validation loss
    shifted = rng.normal(size=(2000, 5)) + np.array([0, 0, 1.5, 0, 0])  # Bayes AUC 0.86
    diff = classifier.classifier_auc(shifted, ref, seed=0)
    assert diff["auc"] > 0.8


def test_classifier_self_comparison_is_not_memorised() -> None:
    # heavy-tailed, continuous features: a memorising network would find its training events again
    x = np.random.default_rng(25).standard_t(3, size=(2000, 6))
    for seed in (0, 1):
        res = classifier.classifier_auc(x, x, seed=seed)
        assert 0.4 < res["auc"] < 0.6, res
        assert res["n_shared"] == 2000 and res["n_train"] + res["n_val"] + res["n_test"] == 2000
    # a partial overlap: the shared events are kept on one side only
    y = np.random.default_rng(26).standard_t(3, size=(1500, 6))
    res = classifier.classifier_auc(np.concatenate([x[:500], y]), x, seed=0)
    assert res["n_shared"] == 500 and 0.4 < res["auc"] < 0.6


def test_event_split_keeps_identical_rows_together() -> None:
    rng = np.random.default_rng(27)
    rows = rng.normal(size=(300, 4))
    data = rows[rng.integers(0, 300, 1000)]  # many events repeated
    keys = classifier.row_keys(data)
    assert len(np.unique(keys)) == len(np.unique(data, axis=0))
    parts = classifier.split_events(keys, classifier.SPLIT, np.random.default_rng(0))
    assert sorted(np.concatenate(parts)) == list(range(1000))
    sets = [set(keys[p].tolist()) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert abs(len(parts[0]) - 600) < 30 and abs(len(parts[2]) - 200) < 30


# ------------------------------------------------------------------ evaluate


def test_identical_sets_give_zero_everywhere() -> None:
    s = _random_showers(300, seed=6)
    m = evaluate(s, s, metrics="fast")
    assert m["physics_score"] == 0.0 and m["sf_rel_error"] == 0.0
    assert m["gan3d_metric"] == 0.0 and m["gan3d_metric_legacy"] == 0.0
    assert all(v == 0.0 for k, v in m.items() if k.startswith("sep"))


def test_gan3d_terms_match_numpy_formula_and_legacy_duplicates_moments() -> None:
    g, r = _random_showers(200, seed=7), _random_showers(200, seed=8, width=1.2)
    go, ro = extract(g, pitch=(1.0, 1.0)), extract(r, pitch=(1.0, 1.0))
    t = gan3d_terms(go, ro, with_angle=False)

    def mom(s: np.ndarray, axes: tuple[int, int]) -> tuple[float, float]:
        p = s.astype(np.float64).sum(axes)
        i = np.arange(p.shape[1])
        m1 = (p * i).sum(1) / p.sum(1)
        m2 = (p * (i[None, :] - m1[:, None]) ** 2).sum(1) / p.sum(1)
        return m1.mean(), m2.mean()

    axes = [(2, 3), (1, 3), (1, 2)]
    rel = np.array(
        [[abs(a - b) / abs(a) for a, b in zip(mom(r.ecal, ax), mom(g.ecal, ax), strict=True)] for ax in axes]
    )
    assert t["moments"] == pytest.approx(rel.mean(0).sum() / 2, rel=1e-6)
    prof = []
    for ax in axes:
        pr, pg = r.ecal.astype(np.float64).sum(ax).mean(0), g.ecal.astype(np.float64).sum(ax).mean(0)
        ok = pr > 1e-3 * pr.max()
        prof.append(np.mean(np.abs(pr[ok] - pg[ok]) / pr[ok]))
    assert t["profiles"] == pytest.approx(np.mean(prof), rel=1e-5)
    m = evaluate(g, r, metrics=["gan3d"], energy_bins=[0, 1000])
    assert m["gan3d_metric_legacy"] == pytest.approx(m["gan3d_metric"] + m["gan3d_moments"])
    legacy = evaluate(g, r, metrics=["gan3d"], energy_bins=[0, 1000], duplicate_moment_term=True)
    assert legacy["gan3d_metric"] == pytest.approx(m["gan3d_metric_legacy"])


def test_gan3d_metric_is_bounded_for_near_empty_reference_cells() -> None:
    r, g = _random_showers(200, seed=23), _random_showers(200, seed=24)
    # the reference leaves the outer x columns (almost) empty, the generated set does not
    r.ecal[:, :2] = 0.0
    r.ecal[:, 2] *= 1e-30
    g.ecal[:, :3] += np.float32(1e-6)  # a faint halo: 3e-4 GeV in all, next to showers of 0.2-2 GeV
    t = gan3d_terms(extract(g, pitch=(1.0, 1.0)), extract(r, pitch=(1.0, 1.0)), with_angle=False)
    assert np.isfinite(t["profiles"]) and t["profiles"] < 1.0, t
    # the same cells in the core of the profile are counted
    g2 = Showers(ecal=r.ecal * np.float32(1.3), energy=r.energy)
    t2 = gan3d_terms(extract(g2, pitch=(1.0, 1.0)), extract(r, pitch=(1.0, 1.0)), with_angle=False)
    assert t2["profiles"] == pytest.approx(0.3, rel=1e-4)
    # point-like showers at the grid edge: moment denominators are floored, not ~0
    p = Showers(ecal=np.zeros((50, 12, 12, 9), np.float32), energy=np.full(50, 50.0, np.float32))
    p.ecal[:, 0, 0, 0] = 1.0
    q = Showers(ecal=p.ecal.copy(), energy=p.energy)
    q.ecal[:, 1, 0, 0] = 1e-3
    t3 = gan3d_terms(extract(q, pitch=(1.0, 1.0)), extract(p, pitch=(1.0, 1.0)), with_angle=False)
    assert 0 < t3["moments"] < 0.01


def test_sf_rel_error_is_per_bin_relative_error_of_mean() -> None:
    r = _random_showers(400, seed=9)
    g = Showers(ecal=r.ecal * np.float32(1.05), energy=r.energy)
    m = evaluate(g, r, metrics=["sf"])
    assert m["sf_rel_error"] == pytest.approx(0.05, rel=1e-4)
    assert set(m) >= {"physics_score", "sf_rel_error"}


def test_discrete_energies_make_one_bin_each() -> None:
    e = np.repeat([10.0, 50.0, 100.0], 30)
    bins = binning.make_bins(e, None)
    assert len(bins) == 3
    assert [int(b.mask(e, None).sum()) for b in bins] == [30, 30, 30]
    assert "50 GeV" in bins[1].label


def test_metric_names_and_groups() -> None:
    assert resolve_metrics("fast") == FAST
    assert resolve_metrics(["classifier", "fpd"]) == ("classifier_hlf", "classifier_cells", "fpd")
    with pytest.raises(ValueError, match="unknown metric 'bogus'"):
        resolve_metrics(["bogus"])


def test_grid_mismatch_raises() -> None:
    a = _random_showers(50, seed=10)
    b = _random_showers(50, seed=11, grid=(12, 12, 10))
    with pytest.raises(GridMismatchError, match=r"grid \(12, 12, 9\).*\(12, 12, 10\)"):
        evaluate(a, b, metrics="fast")


def test_too_few_events_names_metric_and_count() -> None:
    a, b = _random_showers(150, seed=12), _random_showers(150, seed=13)
    x = extract(a).features(("e_vis", "sf"))
    with pytest.raises(InsufficientEventsError, match=r"'fpd' needs at least 500 events.*got 150"):
        fpd.fpd(x, x)
    with pytest.raises(InsufficientEventsError, match=r"'classifier_hlf' needs at least 200"):
        classifier.classifier_auc(x, x, name="classifier_hlf")
    # an energy bin of the reference that the generated set does not populate: every metric needs the
    # bins, so this is not a metric to skip but an evaluation that cannot be done
    with pytest.raises(InsufficientEventsError, match=r"generated set in bin E 60-1000"):
        evaluate(a[a.energy < 50], b, metrics="fast", energy_bins=[0, 60, 1000])


def test_metric_too_small_a_sample_is_skipped_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _random_showers(64, seed=14), _random_showers(64, seed=15)
    skipped: dict[str, str] = {}
    m = evaluate(a, b, metrics="all", skipped=skipped)
    assert skipped == {
        "fpd": "needs >= 500 events in each set; got 64",
        "kpd": "needs >= 100 events in each set; got 64",
        "classifier_hlf": "needs >= 200 events in each set; got 64",
        "classifier_cells": "needs >= 200 events in each set; got 64",
    }
    assert not {"fpd", "fpd_err", "kpd", "auc_hlf", "auc_cells"} & set(m)
    # the metrics the sample suffices for are all there, and the dict stays one of numbers
    assert {"physics_score", "sf_rel_error", "gan3d_metric", "chi2ndf/sf"} <= set(m)
    assert all(isinstance(float(v), float) for v in m.values())
    # a caller that passes no dict (the training loop) still gets its metrics, and the log says why
    with caplog.at_level(logging.WARNING, logger="hepgan.physics.metrics"):
        assert evaluate(a, b, metrics=["sf", "fpd"]).keys() == {
            *("n_generated", "n_reference", "n_bins", "physics_score"),
            *("sf_rel_error", "sf_rel_error_max", "sep_mean", "sep_rms", "sep_max", "sep/cell_spectrum"),
            *(f"sep/{n}" for n in SCORE_OBSERVABLES),
        }
    assert "metric 'fpd' skipped: needs >= 500 events in each set; got 64" in caplog.text

    html = write_report(tmp_path, a, b, m, skipped=skipped).read_text()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["skipped"] == skipped
    assert saved["physics_score"] == pytest.approx(m["physics_score"])
    assert "Skipped metrics" in html and "<b>fpd</b>: needs &gt;= 500 events in each set; got 64" in html
    # nothing skipped: no "skipped" key, so readers of the numbers see only numbers
    write_metrics(tmp_path / "plain", {"physics_score": 0.5}, skipped={})
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text()) == {"physics_score": 0.5}
