"""The GFLASH-style simulator: physics facts, reproducibility, energy spectra, geometry and CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hepgan.data.geometry import PRESETS, Geometry, geometry_for_shape, get_geometry
from hepgan.data.simulate import (
    EnergySpec,
    SimulatorConfig,
    iter_simulate,
    longitudinal_parameters,
    parse_theta,
    simulate,
)

# --------------------------------------------------------------------------------------------------------
# geometry and medium
# --------------------------------------------------------------------------------------------------------


def test_presets_match_the_3dgan_grids() -> None:
    assert get_geometry("fixed25").shape == (25, 25, 25)
    assert get_geometry("angle51").shape == (51, 51, 25)
    for g in (PRESETS["fixed25"], PRESETS["angle51"]):  # the cylindrical presets: tests/test_cylindrical.py
        assert g.cell_size_mm == pytest.approx(5.1)
        assert g.layer_thickness_mm == pytest.approx(g.absorber_thickness_mm + g.sensor_thickness_mm)
        x, _, z = g.cell_centers()
        assert x.shape == (g.shape[0],) and z.shape == (g.shape[2],)
        np.testing.assert_allclose(x, -x[::-1], atol=1e-12)  # centred grid
        assert x[g.shape[0] // 2] == pytest.approx(0.0)
        assert z[0] == pytest.approx(g.layer_thickness_mm / 2)
    assert geometry_for_shape((51, 51, 25)).name == "angle51"


def test_unknown_geometry_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"fixed25.*angle51|angle51.*fixed25"):
        get_geometry("fixed52")
    with pytest.raises(ValueError, match="no geometry preset"):
        geometry_for_shape((10, 10, 10))
    with pytest.raises(ValueError, match="layer_thickness_mm"):
        Geometry("bad", (5, 5, 5), 5.1, 4.0, 3.0, 0.5)
    with pytest.raises(ValueError, match="unknown geometry"):
        SimulatorConfig(geometry="nope")


def test_effective_medium_against_layer_averages() -> None:
    cfg = SimulatorConfig()
    med = cfg.medium()
    g = cfg.grid_geometry()
    # 1/X0 and 1/R_M of a layered medium are thickness-weighted averages of 1/X0_i and 1/R_M,i
    x0 = g.layer_thickness_mm / (g.absorber_thickness_mm / 3.504 + g.sensor_thickness_mm / 93.70)
    rm = g.layer_thickness_mm / (g.absorber_thickness_mm / 9.327 + g.sensor_thickness_mm / 49.44)
    assert med.x0_mm == pytest.approx(x0, rel=1e-9)
    assert med.moliere_mm == pytest.approx(rm, rel=1e-9)
    assert med.fs == pytest.approx(x0 / g.layer_thickness_mm)
    assert med.ehat == pytest.approx(1 / (1 + 0.007 * 60))
    assert 70 < med.z_eff < 74 and 7.97 < med.ec_mev < 9.0
    # about one X0 per layer: 25 layers contain the 10-500 GeV showers
    assert 0.95 < g.layer_thickness_mm / med.x0_mm < 1.05


# --------------------------------------------------------------------------------------------------------
# physics facts
# --------------------------------------------------------------------------------------------------------


def _peak_layer(profile: np.ndarray) -> float:
    """Maximum of a layer profile: parabola through the log of the three layers around the largest."""
    k = int(np.argmax(profile))
    y0, y1, y2 = np.log(profile[k - 1 : k + 2])
    return k + 0.5 + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)


def test_mean_longitudinal_profile_is_the_gflash_gamma_profile() -> None:
    # without per-shower fluctuations every shower has the mean GFLASH profile: the mean layer fractions
    # must be differences of the gamma CDF (scipy), in depth units of X0_eff
    cfg = SimulatorConfig(geometry="angle51", longitudinal_fluctuations=False)
    energy = 50.0
    s = simulate(150, energy=energy, config=cfg, seed=11)
    med = cfg.medium()
    lp = longitudinal_parameters(np.array([energy]), med)
    t_max, alpha = np.exp(lp["mean_lnT"][0]), np.exp(lp["mean_ln_alpha"][0])
    beta = (alpha - 1) / t_max
    edges = np.arange(26) * cfg.grid_geometry().layer_thickness_mm / med.x0_mm
    expected = np.diff(stats.gamma.cdf(edges, alpha, scale=1 / beta))
    measured = s.ecal.sum(axis=(1, 2)).mean(axis=0) / (cfg.sampling_fraction * energy)
    main = expected > 0.02
    np.testing.assert_allclose(measured[main], expected[main], rtol=0.05)
    assert abs(measured.sum() - expected.sum()) < 0.02


def test_shower_maximum_grows_like_log_energy() -> None:
    # GFLASH: T = ln(E/Ec) + const, i.e. d T / d ln E = 1 X0_eff = layer/X0 layers per e-fold
    cfg = SimulatorConfig()
    med = cfg.medium()
    energies = np.array([10.0, 30.0, 100.0, 300.0])
    peaks = np.array(
        [_peak_layer(simulate(200, energy=e, seed=4).ecal.sum(axis=(0, 1, 2))) for e in energies]
    )
    slope, _ = np.polyfit(np.log(energies), peaks, 1)
    expected_slope = med.x0_mm / cfg.grid_geometry().layer_thickness_mm
    assert slope == pytest.approx(expected_slope, rel=0.1)
    t_mean = np.exp(longitudinal_parameters(energies, med)["mean_lnT"]) * expected_slope
    np.testing.assert_allclose(peaks, t_mean, atol=0.5)


def test_lateral_containment_in_moliere_radii() -> None:
    # PDG (Passage of particles through matter): ~90 % of the energy within R_M, ~99 % within 3.5 R_M
    cfg = SimulatorConfig()
    r_m = cfg.medium().moliere_mm
    x, y, _ = cfg.grid_geometry().cell_centers()
    radius = np.hypot(x[:, None], y[None, :])
    for energy in (10.0, 200.0):
        transverse = simulate(150, energy=energy, seed=7).ecal.sum(axis=3).mean(axis=0)
        total = transverse.sum()
        assert transverse[radius < r_m].sum() / total == pytest.approx(0.90, abs=0.04)
        assert transverse[radius < 2 * r_m].sum() / total > 0.94
        assert transverse[radius < 3.5 * r_m].sum() / total > 0.98


def _fit_resolution(energies: np.ndarray, cfg: SimulatorConfig, n: int, seed: int) -> tuple[float, float]:
    rel = []
    for e in energies:
        total = simulate(n, energy=float(e), config=cfg, seed=seed).ecal.sum(axis=(1, 2, 3), dtype=np.float64)
        rel.append(total.std() / total.mean())
    # (sigma/E)^2 = a^2 / E + b^2 is linear in (1/E, 1)
    design = np.stack([1 / energies, np.ones_like(energies)], axis=1)
    (a2, b2), *_ = np.linalg.lstsq(design, np.square(rel), rcond=None)
    return float(np.sqrt(max(a2, 0.0))), float(np.sqrt(max(b2, 0.0)))


@pytest.mark.parametrize(("a", "b"), [(0.17, 0.01), (0.30, 0.03)])
def test_energy_resolution_follows_configured_terms(a: float, b: float) -> None:
    cfg = SimulatorConfig(stochastic_term=a, constant_term=b)
    a_fit, b_fit = _fit_resolution(np.array([10.0, 25.0, 60.0, 150.0]), cfg, 400, seed=3)
    assert a_fit == pytest.approx(a, rel=0.12)
    # leakage fluctuations add a little to the constant term, never take from it
    assert b - 0.006 < b_fit < b + 0.008


def test_sampling_fraction_is_about_two_percent() -> None:
    s = simulate(300, energy="uniform:10:500", seed=8)
    sf = s.ecal.sum(axis=(1, 2, 3), dtype=np.float64) / s.energy
    # 2 % visible, minus one or two percent leakage out of the 25 x 25 x 25 window
    assert 0.0193 < sf.mean() < 0.0200


def _principal_angle_deg(ecal: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Per-shower direction in the Y-Z plane from the principal axis of the energy-weighted cells."""
    _, y, z = geometry.cell_centers()
    out = []
    for e in ecal.sum(axis=1, dtype=np.float64):  # [Y, Z]
        w = e / e.sum()
        dy, dz = y[:, None] - (w * y[:, None]).sum(), z[None, :] - (w * z[None, :]).sum()
        cov = np.array(
            [[(w * dy * dy).sum(), (w * dy * dz).sum()], [(w * dy * dz).sum(), (w * dz * dz).sum()]]
        )
        v = np.linalg.eigh(cov)[1][:, 1]
        v = -v if v[1] < 0 else v
        out.append(np.degrees(np.arctan2(v[1], v[0])))
    return np.asarray(out)


def _barycentre_angle_deg(ecal: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Per-shower angle from an energy-weighted straight-line fit of the layer y-barycentre vs depth."""
    _, y, z = geometry.cell_centers()
    out = []
    for e in ecal.sum(axis=1, dtype=np.float64):
        layer = e.sum(axis=0)
        hit = layer > 0
        y_bar = (e * y[:, None]).sum(axis=0)[hit] / layer[hit]
        slope = np.polyfit(z[hit], y_bar, 1, w=np.sqrt(layer[hit]))[0]  # dy/dz = cot(theta)
        out.append(np.degrees(np.arctan2(1.0, slope)))
    return np.asarray(out)


@pytest.mark.parametrize("theta", [60.0, 90.0, 120.0])
def test_shower_axis_follows_the_incident_angle(theta: float) -> None:
    cfg = SimulatorConfig(geometry="angle51")
    geo = cfg.grid_geometry()
    s = simulate(40, energy=100.0, theta_deg=theta, config=cfg, seed=5)
    np.testing.assert_allclose(s.theta, np.radians(theta), rtol=1e-6)
    assert _principal_angle_deg(s.ecal, geo).mean() == pytest.approx(theta, abs=1.5)
    # the layer-barycentre fit sees the tilt with the right sign; the transverse spread dilutes the slope
    # (y-on-z regression), so it reads a few degrees towards 90 for wide showers and exactly for narrow ones
    bary = _barycentre_angle_deg(s.ecal, geo).mean()
    assert bary == pytest.approx(theta, abs=5.0)
    assert abs(bary - 90.0) <= abs(theta - 90.0) + 0.5
    narrow = simulate(
        40, energy=100.0, theta_deg=theta, config=dataclasses.replace(cfg, radial_scale=0.05), seed=5
    )
    assert _barycentre_angle_deg(narrow.ecal, geo).mean() == pytest.approx(theta, abs=1.0)


def test_radial_scale_and_sampling_fraction_knobs() -> None:
    base_cfg = SimulatorConfig(geometry="angle51")
    base = simulate(100, energy=100.0, config=base_cfg, seed=9)
    wide = simulate(100, energy=100.0, config=dataclasses.replace(base_cfg, radial_scale=1.1), seed=9)
    x, _, _ = base_cfg.grid_geometry().cell_centers()

    def rms_x(ecal: np.ndarray) -> float:
        px = ecal.sum(axis=(0, 2, 3), dtype=np.float64)
        return float(np.sqrt((px * x**2).sum() / px.sum()))

    # same random numbers, every radius x 1.1: the transverse RMS grows by 10 % (less the cell smearing)
    assert 1.07 < rms_x(wide.ecal) / rms_x(base.ecal) < 1.11
    np.testing.assert_array_equal(wide.ecal.sum(axis=(1, 2)) > 0, base.ecal.sum(axis=(1, 2)) > 0)
    hot = simulate(100, energy=100.0, config=dataclasses.replace(base_cfg, sampling_fraction=0.0206), seed=9)
    np.testing.assert_allclose(hot.ecal, base.ecal * 1.03, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------------------------------
# reproducibility
# --------------------------------------------------------------------------------------------------------


def test_same_seed_same_showers_other_seed_other_showers() -> None:
    a = simulate(6, energy="uniform:10:500", theta_deg=(60, 120), seed=21, config=SimulatorConfig("angle51"))
    b = simulate(6, energy="uniform:10:500", theta_deg=(60, 120), seed=21, config=SimulatorConfig("angle51"))
    c = simulate(6, energy="uniform:10:500", theta_deg=(60, 120), seed=22, config=SimulatorConfig("angle51"))
    for k in ("ecal", "energy", "theta"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.ecal, c.ecal) and not np.array_equal(a.energy, c.energy)
    assert a.ecal.dtype == np.float32 and a.energy.dtype == np.float32 and a.theta.dtype == np.float32
    assert np.all(a.ecal >= 0)


def test_event_depends_only_on_seed_and_index() -> None:
    kw = {"energy": "loguniform:2:500", "theta_deg": (60.0, 120.0), "seed": 5}
    full = simulate(300, **kw)  # crosses the internal block boundary (256 events)
    for start, n in ((0, 1), (7, 3), (250, 20), (299, 1)):
        part = simulate(n, start=start, **kw)
        np.testing.assert_array_equal(part.ecal, full.ecal[start : start + n])
        np.testing.assert_array_equal(part.energy, full.energy[start : start + n])
        np.testing.assert_array_equal(part.theta, full.theta[start : start + n])
    streamed = list(iter_simulate(300, chunk=70, **kw))
    assert [len(p) for p in streamed] == [70, 70, 70, 70, 20]
    np.testing.assert_array_equal(np.concatenate([p.ecal for p in streamed]), full.ecal)


def test_worker_processes_give_the_same_showers() -> None:
    kw = {"energy": "uniform:10:500", "seed": 13, "start": 40}
    one = simulate(10, **kw)
    two = simulate(10, workers=2, **kw)
    np.testing.assert_array_equal(one.ecal, two.ecal)
    np.testing.assert_array_equal(one.energy, two.energy)
    streamed = list(iter_simulate(10, workers=2, chunk=3, **kw))
    np.testing.assert_array_equal(np.concatenate([p.ecal for p in streamed]), one.ecal)


def test_empty_request() -> None:
    s = simulate(0, energy=100.0, config=SimulatorConfig("angle51"))
    assert s.ecal.shape == (0, 51, 51, 25) and s.theta is not None and s.theta.shape == (0,)
    assert list(iter_simulate(0, energy=100.0)) == []


# --------------------------------------------------------------------------------------------------------
# energy spectra and angles
# --------------------------------------------------------------------------------------------------------


def test_energy_spectra() -> None:
    n = 2000
    u = np.random.default_rng(0).random(n)  # the spec maps uniforms; the simulator supplies them per event
    idx = np.arange(n)
    np.testing.assert_array_equal(EnergySpec.parse("fixed:100").sample(u, idx), 100.0)
    uni = EnergySpec.parse("uniform:10:500").sample(u, idx)
    assert uni.min() >= 10 and uni.max() <= 500
    assert stats.kstest(uni, stats.uniform(10, 490).cdf).pvalue > 1e-3
    log = EnergySpec.parse("loguniform:2:500").sample(u, idx)
    assert log.min() >= 2 and log.max() <= 500
    assert stats.kstest(np.log(log), stats.uniform(np.log(2), np.log(250)).cdf).pvalue > 1e-3
    assert stats.kstest(log, stats.uniform(2, 498).cdf).pvalue < 1e-6  # really not uniform in E
    np.testing.assert_array_equal(
        EnergySpec.parse("list:10,50,100").sample(u[:5], idx[:5] + 1), [50, 100, 10, 50, 100]
    )


def test_simulated_energies_and_angles() -> None:
    s = simulate(
        400, energy="loguniform:2:500", theta_deg=(60, 120), seed=1, config=SimulatorConfig("angle51")
    )
    assert s.energy.min() >= 2 and s.energy.max() <= 500
    assert stats.kstest(np.log(s.energy), stats.uniform(np.log(2), np.log(250)).cdf).pvalue > 1e-3
    deg = np.degrees(s.theta)
    assert deg.min() >= 60 - 1e-4 and deg.max() <= 120 + 1e-4 and deg.std() > 10
    cyc = simulate(5, energy=[10.0, 50.0, 100.0], start=4, seed=1)
    np.testing.assert_array_equal(cyc.energy, [50, 100, 10, 50, 100])  # cycled by global index
    # the energy of event i does not depend on the rest of the request
    assert simulate(1, energy="loguniform:2:500", start=123, seed=1).energy[0] == pytest.approx(
        simulate(200, energy="loguniform:2:500", seed=1).energy[123]
    )


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "fixed",
        "fixed:abc",
        "gauss:10:5",
        "uniform:10",
        "uniform:500:10",
        "list:",
        "fixed:-5",
        "fixed:nan",
    ],
)
def test_bad_energy_specs_are_clear_errors(spec: str) -> None:
    with pytest.raises(ValueError, match="energy"):
        EnergySpec.parse(spec)


def test_spec_round_trip_and_theta_parsing() -> None:
    for text in ("fixed:100", "uniform:10:500", "loguniform:2:500", "list:10,50,100"):
        assert str(EnergySpec.parse(text)) == text
    assert EnergySpec.coerce(42) == EnergySpec("fixed", (42.0,))
    assert EnergySpec.coerce([1.0, 2.0]).kind == "list"
    assert parse_theta(90) == (90.0, 90.0)
    assert parse_theta("60:120") == (60.0, 120.0)
    assert parse_theta((60, 120)) == (60.0, 120.0)
    for bad in ("0", "180", "120:60", "x", (10, 20, 30)):
        with pytest.raises(ValueError, match="angle"):
            parse_theta(bad)  # type: ignore[arg-type]


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="sampling_fraction"):
        SimulatorConfig(sampling_fraction=0.0)
    with pytest.raises(ValueError, match="radial_scale"):
        SimulatorConfig(radial_scale=-1.0)
    with pytest.raises(ValueError, match="max_spots"):
        SimulatorConfig(min_spots=10, max_spots=5)
    with pytest.raises(ValueError, match="n must be"):
        simulate(-1, energy=10.0)
    with pytest.raises(ValueError, match="workers"):
        simulate(3, energy=10.0, workers=0)


# --------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------


def test_cli_summary_only(capsys: pytest.CaptureFixture[str]) -> None:
    from hepgan.cli.simulate import main

    rc = main(
        [
            "--geometry",
            "fixed25",
            "--n-events",
            "30",
            "--energy",
            "fixed:50",
            "--summary-only",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "30" in out and "sampling fraction" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--geometry", "cube", "--n-events", "5", "--summary-only"],
        ["--energy", "uniform:500:10", "--n-events", "5", "--summary-only"],
        ["--theta", "200", "--n-events", "5", "--summary-only"],
        ["--n-events", "5"],  # neither --out nor --summary-only
        ["--geometry", "angle51", "--format", "fixed25", "--n-events", "5", "--out", "x"],
        ["--theta", "60", "--format", "fixed25", "--n-events", "5", "--out", "x"],
    ],
)
def test_cli_user_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from hepgan.cli.simulate import main

    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "hepgan-simulate" in err and "Traceback" not in err


def test_cli_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    formats = pytest.importorskip("hepgan.data.formats")
    if not hasattr(formats, "write_files") or not hasattr(formats, "read_file"):
        pytest.skip("hepgan.data.formats.write_files is not available yet")
    from hepgan.cli.simulate import main

    argv = ["--n-events", "25", "--energy", "uniform:10:500", "--seed", "1", "--events-per-file", "10"]
    rc = main([*argv, "--out", str(tmp_path), "--no-progress", "--prefix", "demo"])
    assert rc == 0
    files = sorted(tmp_path.glob("demo*"))
    assert len(files) == 3
    back = formats.read_file(files[0])
    ref = simulate(10, energy="uniform:10:500", seed=1)
    np.testing.assert_allclose(back.ecal, ref.ecal, rtol=1e-6)
    np.testing.assert_allclose(back.energy, ref.energy, rtol=1e-6)
    assert "files written" in capsys.readouterr().out


def test_cli_refuses_a_folder_with_hdf5_files_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hepgan.cli.simulate import main
    from hepgan.data.formats import read_file

    argv = ["--n-events", "6", "--energy", "fixed:50", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--prefix", "old", "--events-per-file", "3"]) == 0
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(old) == ["old_0000.h5", "old_0001.h5"]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        str(tmp_path) in err and "2 HDF5 file(s)" in err and "--overwrite" in err and "Traceback" not in err
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old  # nothing lost, nothing added
    assert main([*argv, "--overwrite", "--seed", "4"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["showers_0000.h5"]
    back = read_file(tmp_path / "showers_0000.h5")
    np.testing.assert_array_equal(back.ecal, simulate(6, energy="fixed:50", seed=4).ecal)
