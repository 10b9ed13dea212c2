"""Observables against independent NumPy formulas: through jax.jit, for one event and a batch, on the
three kinds of grid, and shape mismatches that raise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hepgan.physics import observables as obs

GRIDS = [(25, 25, 25), (51, 51, 25), (45, 16, 9)]  # fixed25, angle51, a CaloChallenge-like r x alpha x z


def _showers(grid: tuple[int, int, int], b: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.exponential(1e-3, (b, *grid)) * (rng.random((b, *grid)) < 0.3)
    return x.astype(np.float32)


def _np_moments(p: np.ndarray) -> np.ndarray:
    i = np.arange(p.shape[1])
    m1 = (p * i).sum(1) / p.sum(1)
    m2 = (p * (i[None, :] - m1[:, None]) ** 2).sum(1) / p.sum(1)
    return np.stack([m1, m2], 1)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("b", [1, 5])
def test_basic_observables_match_numpy(grid: tuple[int, int, int], b: int) -> None:
    x = _showers(grid, b, seed=b)
    e = np.linspace(10, 400, b).astype(np.float32)
    xd, ed = jnp.asarray(x), jnp.asarray(e)
    x64 = x.astype(np.float64)
    tot = x64.sum((1, 2, 3))
    np.testing.assert_allclose(jax.jit(obs.total_energy)(xd), tot, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(obs.sampling_fraction)(xd, ed), tot / e, rtol=1e-5)
    px, py, pz = jax.jit(obs.profiles)(xd)
    np.testing.assert_allclose(px, x64.sum((2, 3)), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(py, x64.sum((1, 3)), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(pz, x64.sum((1, 2)), rtol=1e-5, atol=1e-9)
    mom = np.asarray(jax.jit(obs.moments)(xd))
    for a, axes in enumerate([(2, 3), (1, 3), (1, 2)]):
        np.testing.assert_allclose(mom[:, a], _np_moments(x64.sum(axes)), rtol=1e-4)
    np.testing.assert_array_equal(jax.jit(obs.hits)(xd), (x > 2e-4).sum((1, 2, 3)))
    np.testing.assert_array_equal(jax.jit(obs.hits, static_argnums=1)(xd, 1e-3), (x > 1e-3).sum((1, 2, 3)))
    thirds = np.array_split(np.arange(grid[2]), 3)
    fr = np.stack([x64[..., t].sum((1, 2, 3)) / tot for t in thirds], 1)
    np.testing.assert_allclose(jax.jit(obs.depth_fractions)(xd), fr, rtol=1e-4)
    thr = (0.0, 1e-4, 1e-3)
    sp = np.stack([((x < t) | (x <= 0)).mean((1, 2, 3)) for t in thr], 1)
    np.testing.assert_allclose(jax.jit(obs.sparsity, static_argnums=1)(xd, thr), sp, rtol=1e-6)
    idx = np.array([np.unravel_index(np.argmax(v), grid) for v in x])
    np.testing.assert_array_equal(jax.jit(obs.max_position)(xd), idx)
    np.testing.assert_array_equal(jax.jit(obs.shower_max_layer)(xd), x64.sum((1, 2)).argmax(1))


def test_thirds_split_25_layers_9_8_8() -> None:
    assert obs.depth_thirds(25) == ((0, 9), (9, 17), (17, 25))
    with pytest.raises(ValueError, match="at least 3 layers"):
        obs.depth_thirds(2)


@pytest.mark.parametrize("grid", GRIDS)
def test_cell_spectrum_matches_numpy_histogram(grid: tuple[int, int, int]) -> None:
    x = _showers(grid, 3, seed=7)
    counts = np.asarray(jax.jit(obs.cell_spectrum)(jnp.asarray(x)))
    ref, _ = np.histogram(x[x > 0].astype(np.float64), bins=obs.spectrum_edges())
    np.testing.assert_array_equal(counts, ref)


def _np_angle(x: np.ndarray, cell: float, layer: float) -> np.ndarray:
    """Energy-weighted least-squares line through the per-layer y barycentres (np.polyfit weights are
    1/sigma, hence the square root)."""
    out = []
    y = (np.arange(x.shape[2]) + 0.5) * cell
    z = (np.arange(x.shape[3]) + 0.5) * layer
    for ev in x.astype(np.float64):
        el = ev.sum((0, 1))
        ok = el > 0
        yl = (ev.sum(0) * y[:, None]).sum(0)[ok] / el[ok]
        slope = np.polyfit(z[ok], yl, 1, w=np.sqrt(el[ok]))[0]
        out.append(np.pi / 2 - np.arctan(slope))
    return np.array(out)


@pytest.mark.parametrize("theta_deg", [60.0, 75.0, 90.0, 110.0])
def test_measured_angle_of_a_straight_track(theta_deg: float) -> None:
    """A pencil track along (y, z) = (cot theta, 1) * depth is measured at its own angle (up to the
    cell discretisation), and agrees with the NumPy weighted fit exactly."""
    cell, layer = 5.1, 4.0
    grid = (51, 51, 25)
    x = np.zeros((1, *grid), np.float32)
    th = np.deg2rad(theta_deg)
    for k in range(grid[2]):
        zc = (k + 0.5) * layer
        yc = 25.5 * cell + (zc - 50.0) / np.tan(th)
        j = int(np.floor(yc / cell))
        f = yc / cell - 0.5 - j  # split the energy between two cells so the barycentre is exact
        x[0, 25, j, k] += 1 - f
        x[0, 25, j + 1, k] += f
    got = np.asarray(jax.jit(obs.measured_angle, static_argnums=(1, 2))(jnp.asarray(x), cell, layer))
    np.testing.assert_allclose(got, [th], atol=1e-4)
    np.testing.assert_allclose(got, _np_angle(x, cell, layer), atol=1e-5)


def test_measured_angle_random_batch_matches_numpy() -> None:
    x = _showers((25, 25, 25), 4, seed=3)
    got = jax.jit(obs.measured_angle, static_argnums=(1, 2))(jnp.asarray(x), 5.1, 4.0)
    np.testing.assert_allclose(got, _np_angle(x, 5.1, 4.0), atol=2e-5)


def test_compute_all_is_consistent_with_single_functions() -> None:
    x = _showers((25, 25, 25), 6, seed=11)
    e = np.full(6, 100.0, np.float32)
    out = obs.compute_all(jnp.asarray(x), jnp.asarray(e), cell_size_mm=5.1, layer_thickness_mm=4.0)
    assert set(obs.SCALAR_NAMES) <= set(out)
    for k in obs.SCALAR_NAMES:
        assert out[k].shape == (6,) and out[k].dtype == jnp.float32, k
    np.testing.assert_allclose(out["sf"], x.astype(np.float64).sum((1, 2, 3)) / 100.0, rtol=1e-5)
    np.testing.assert_allclose(out["z_var"], _np_moments(x.astype(np.float64).sum((1, 2)))[:, 1], rtol=1e-4)
    # sparsity and spectrum come from the per-event cell histogram there: same numbers as the direct forms
    sp = np.stack([((x < t) | (x <= 0)).mean((1, 2, 3)) for t in obs.SPARSITY_THRESHOLDS], 1)
    np.testing.assert_allclose(out["sparsity"], sp, rtol=1e-6)
    ref, _ = np.histogram(x[x > 0].astype(np.float64), bins=obs.spectrum_edges())
    np.testing.assert_array_equal(out["spectrum"], ref)


def test_compute_all_rejects_sparsity_thresholds_off_the_spectrum_edges() -> None:
    x = jnp.zeros((2, 25, 25, 25), jnp.float32)
    with pytest.raises(ValueError, match=r"sparsity threshold 0\.0002"):
        obs.compute_all(x, jnp.ones((2,), jnp.float32), sparsity_thresholds=(0.0, 2e-4))


def test_empty_event_gives_zeros_not_nan() -> None:
    x = jnp.zeros((2, 25, 25, 25), jnp.float32)
    out = obs.compute_all(x, jnp.ones((2,), jnp.float32))
    for k in obs.SCALAR_NAMES:
        assert np.all(np.isfinite(np.asarray(out[k]))), k
    np.testing.assert_allclose(out["angle"], np.pi / 2)


def test_shape_mismatches_raise() -> None:
    x = jnp.zeros((3, 25, 25, 25), jnp.float32)
    with pytest.raises(ValueError, match=r"energy must be \[B\]=3"):
        jax.jit(obs.sampling_fraction)(x, jnp.ones((4,), jnp.float32))
    with pytest.raises(ValueError, match=r"\[B, X, Y, Z\]"):
        obs.total_energy(jnp.zeros((25, 25, 25), jnp.float32))
    with pytest.raises(ValueError, match=r"\[B, X, Y, Z\]"):
        jax.jit(obs.moments)(jnp.zeros((3, 25, 25), jnp.float32))
    with pytest.raises(ValueError, match=r"energy must be \[B\]=3"):
        obs.compute_all(x, jnp.ones((3, 1), jnp.float32))


def test_compute_all_inside_an_outer_jit() -> None:
    """Training calls the observables inside its own jitted step."""
    x = _showers((25, 25, 25), 2, seed=5)

    @jax.jit
    def step(s: jax.Array, e: jax.Array) -> jax.Array:
        return jnp.mean(obs.compute_all(s, e, cell_size_mm=5.1, layer_thickness_mm=4.0)["sf"])

    got = step(jnp.asarray(x), jnp.full((2,), 50.0, jnp.float32))
    np.testing.assert_allclose(got, np.mean(x.astype(np.float64).sum((1, 2, 3)) / 50.0), rtol=1e-5)


def test_measured_angle_bias_and_its_response_calibration() -> None:
    from hepgan.data.simulate import SimulatorConfig, simulate
    from hepgan.data.types import Showers
    from hepgan.physics.extract import extract

    def sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
        s = simulate(
            600,
            energy="uniform:10:500",
            theta_deg=(60.0, 120.0),
            config=SimulatorConfig(geometry="angle51"),
            seed=seed,
        )
        assert s.theta is not None
        o = extract(Showers(ecal=s.ecal, energy=s.energy, theta=s.theta))
        return s.theta.astype(np.float64), o.scalars["angle"]

    theta, measured = sample(31)
    edge = np.degrees(theta) < 66.0
    bias = np.degrees(measured - theta)
    # the documented bias: towards normal incidence, about +3.5 degrees near 60 and -3.5 near 120
    assert 2.5 < bias[edge].mean() < 4.5
    assert -4.5 < bias[np.degrees(theta) > 114.0].mean() < -2.5
    response = obs.angle_response(theta, measured)
    # on an independent sample the expected measurement leaves no bias worth a loss term
    theta2, measured2 = sample(32)
    expected = np.asarray(jax.jit(obs.expected_measured_angle)(jnp.asarray(theta2, jnp.float32), response))
    resid = np.degrees(measured2 - expected)
    for lo in range(60, 120, 10):
        sel = (np.degrees(theta2) >= lo) & (np.degrees(theta2) < lo + 10)
        assert abs(resid[sel].mean()) < 0.6, (lo, resid[sel].mean())
    with pytest.raises(ValueError, match="theta and measured must be"):
        obs.angle_response(theta[:10], measured[:10])
