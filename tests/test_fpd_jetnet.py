"""FPD/KPD conventions: JetNet's kernel, batch schedule and seeding against independent NumPy code, and
the convention recorded in the metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, optimize

from hepgan.physics import fpd as fpd_mod
from hepgan.physics.extract import ObservableSet
from hepgan.physics.metrics import evaluate_observables
from hepgan.physics.observables import SCALAR_NAMES, SPARSITY_THRESHOLDS, spectrum_edges


def _features(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)) * np.array([1.0, 2.0, 0.5, 3.0]) + shift


def _numpy_kpd_jetnet(x: np.ndarray, y: np.ndarray, batch: int, batches: int) -> tuple[float, float]:
    """JetNet's KPD written out: normalise by the reference's max |x|, batch i drawn with replacement
    by default_rng(42 + 1000 i), unbiased MMD^2 with (x.y / d + 1)^4, median and half the 16-84 % range."""
    scale = np.abs(x).max(0)
    xn, yn = x / scale, y / scale
    d = x.shape[1]
    vals = []
    for i in range(batches):
        rng = np.random.default_rng(42 + 1000 * i)
        a = xn[rng.choice(len(xn), size=batch)]
        b = yn[rng.choice(len(yn), size=batch)]
        off = ~np.eye(batch, dtype=bool)
        kxx = (np.einsum("if,jf->ij", a, a) / d + 1.0) ** 4
        kyy = (np.einsum("if,jf->ij", b, b) / d + 1.0) ** 4
        kxy = (np.einsum("if,jf->ij", a, b) / d + 1.0) ** 4
        vals.append(kxx[off].mean() + kyy[off].mean() - 2.0 * kxy.mean())
    q16, q84 = np.percentile(vals, [16.275, 83.725])
    return float(np.median(vals)), float((q84 - q16) / 2)


def test_kpd_jetnet_equals_numpy_with_the_same_batches() -> None:
    x, y = _features(0, 700), _features(1, 650, shift=0.5)
    got = fpd_mod.kpd(x, y, convention="jetnet", batch_size=300, num_batches=6)
    want = _numpy_kpd_jetnet(x, y, batch=300, batches=6)
    assert got == pytest.approx(want, rel=1e-9)
    assert got[0] > 3 * got[1]  # the shift is seen


def test_kpd_jetnet_defaults_are_jetnets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernel degree 4, 10 batches of 5000 drawn with replacement (more than the 300 events the sets
    hold), seed 42; the hepgan convention instead: degree 3, batches of at most half the smaller set."""
    seen: list[tuple[int, int, int]] = []

    def spy(a: np.ndarray, b: np.ndarray, degree: int = 3) -> float:
        seen.append((len(a), len(b), degree))
        return float(len(seen))

    monkeypatch.setattr(fpd_mod, "mmd_poly_unbiased", spy)
    x, y = _features(0, 300), _features(1, 320)
    info: dict[str, object] = {}
    fpd_mod.kpd(x, y, convention="jetnet", info=info)
    assert seen == [(5000, 5000, 4)] * 10
    assert info["seed"] == 42 and info["replace"] is True and info["convention"] == "jetnet"
    seen.clear()
    fpd_mod.kpd(x, y)
    assert seen == [(150, 150, 3)] * 10


def test_fpd_jetnet_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """10 batch sizes evenly spaced in 1/N from 20000 to 50000, 20 resamplings each."""
    calls: list[int] = []
    real = fpd_mod.frechet_distance

    def spy(*args: np.ndarray, **kwargs: str) -> float:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fpd_mod, "frechet_distance", spy)
    info: dict[str, object] = {}
    fpd_mod.fpd(_features(0, 600), _features(1, 600), convention="jetnet", info=info)
    sizes = info["sizes"]
    assert isinstance(sizes, list) and len(sizes) == 10
    # JetNet truncates 1 / (1 / 50000) to int32: 49999, kept so that the draws are JetNet's
    assert sizes == [int(v) for v in (1 / np.linspace(1 / 20_000, 1 / 50_000, 10)).astype(np.int32)]
    assert sizes[0] == 20_000 and sizes[-1] in (49_999, 50_000)
    np.testing.assert_allclose(np.diff(1.0 / np.asarray(sizes)), (1 / 50_000 - 1 / 20_000) / 9, rtol=1e-3)
    assert len(calls) == 10 * 20 and info["num_batches"] == 20 and info["seed"] == 42


def test_fpd_jetnet_equals_numpy_with_the_same_draws() -> None:
    """JetNet's FPD loop written out with the sizes scaled down: one default_rng(seed), rng.choice for
    the reference then the generated batch, Frechet distance with scipy's sqrtm, linear fit in 1/N."""
    x, y = _features(2, 800), _features(3, 900, shift=0.1)
    got = fpd_mod.fpd(
        x, y, convention="jetnet", min_samples=500, max_samples=1000, num_batches=3, num_points=4
    )
    scale = np.abs(x).max(0)
    xn, yn = x / scale, y / scale
    sizes = (1 / np.linspace(1 / 500, 1 / 1000, 4)).astype("int32")
    rng = np.random.default_rng(42)
    vals = []
    for size in sizes:
        pts = []
        for _ in range(3):
            a, b = xn[rng.choice(len(xn), size=size)], yn[rng.choice(len(yn), size=size)]
            ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
            diff = a.mean(0) - b.mean(0)
            tr = np.trace(np.real(linalg.sqrtm(ca @ cb)))
            pts.append(diff @ diff + np.trace(ca) + np.trace(cb) - 2 * tr)
        vals.append(np.mean(pts))
    p, cov = optimize.curve_fit(lambda t, c, m: c + m * t, 1 / sizes, vals, bounds=([0, 0], [np.inf, np.inf]))
    assert got == pytest.approx((p[0], np.sqrt(cov[0, 0])), rel=1e-6)


def test_conventions_differ_on_the_same_data() -> None:
    x, y = _features(4, 1200), _features(5, 1200, shift=0.1)
    hep, jet = fpd_mod.kpd(x, y, batch_size=500), fpd_mod.kpd(x, y, convention="jetnet", batch_size=500)
    assert hep[0] != pytest.approx(jet[0], rel=1e-3)
    info_h: dict[str, object] = {}
    info_j: dict[str, object] = {}
    f_h = fpd_mod.fpd(x, y, info=info_h)
    f_j = fpd_mod.fpd(x, y, convention="jetnet", num_batches=2, info=info_j)
    assert f_h[0] != pytest.approx(f_j[0], rel=1e-3)
    assert info_h["sizes"] != info_j["sizes"] and len(info_h["sizes"]) == 8  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="convention"):
        fpd_mod.kpd(x, y, convention="JetNet")


def _observables(seed: int, n: int) -> ObservableSet:
    rng = np.random.default_rng(seed)
    grid = (4, 4, 6)
    return ObservableSet(
        scalars={k: rng.normal(1.0, 0.1, n) for k in SCALAR_NAMES},
        profile_x=rng.random((n, grid[0])),
        profile_y=rng.random((n, grid[1])),
        profile_z=rng.random((n, grid[2])),
        sparsity=rng.random((n, len(SPARSITY_THRESHOLDS))),
        spectrum=rng.integers(0, 100, len(spectrum_edges()) - 1).astype(float),
        energy=rng.uniform(10, 500, n),
        theta=None,
        grid=grid,
    )


def test_metrics_record_the_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []

    def spy(a: np.ndarray, b: np.ndarray, degree: int = 3) -> float:
        seen.append((len(a), degree))
        return 0.0

    monkeypatch.setattr(fpd_mod, "mmd_poly_unbiased", spy)  # the kernels of 5000 events are not tested here
    g, r = _observables(0, 600), _observables(1, 600)
    m = evaluate_observables(g, r, metrics=["fpd", "kpd"], fpd_convention="jetnet")
    assert m["fpd_convention/jetnet"] == 1.0 and m["kpd_convention/jetnet"] == 1.0
    assert not any(k.endswith("/hepgan") for k in m)
    assert set(seen) == {(5000, 4)}
    seen.clear()
    m = evaluate_observables(g, r, metrics=["fpd", "kpd"])
    assert m["fpd_convention/hepgan"] == 1.0 and m["kpd_convention/hepgan"] == 1.0
    assert "fpd_convention/jetnet" not in m and set(seen) == {(300, 3)}
    with pytest.raises(ValueError, match="convention"):
        evaluate_observables(g, r, metrics=["fpd"], fpd_convention="cms")
