"""The CaloChallenge dataset 2 and 3 geometries: presets, simulator binning, files, the cylindrical model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hepgan.data.formats import read_file, write_files
from hepgan.data.geometry import Geometry, get_geometry
from hepgan.data.simulate import SimulatorConfig, simulate
from hepgan.data.types import Showers
from hepgan.models import ModelConfig, build
from hepgan.models.conv import Conv3D
from hepgan.models.cylindrical import KERNEL, circular


def test_presets_are_the_challenge_binning() -> None:
    ds2, ds3 = get_geometry("ds2"), get_geometry("ds3")
    assert ds2.shape == (16, 9, 45) and ds3.shape == (50, 18, 45)
    assert np.prod(ds2.shape) == 6480 and np.prod(ds3.shape) == 40500
    # README of the challenge: 3.4 mm per readout layer (two 1.4 mm W + 0.3 mm Si layers); radial
    # pitch 4.65 mm (ds2) and 2.325 mm (ds3) up to 41.85 mm
    for g, pitch in ((ds2, 4.65), (ds3, 2.325)):
        assert g.cylindrical and g.layers_per_cell == 2
        assert g.layer_thickness_mm == pytest.approx(3.4)
        assert g.sampling_layer_mm == pytest.approx(1.7)
        np.testing.assert_allclose(np.diff(g.r_edges_mm), pitch)
        assert g.r_edges_mm[-1] == pytest.approx(41.85)
        alpha, r, z = g.cell_centers()
        assert alpha[0] == pytest.approx(-np.pi + np.pi / g.shape[0]) and r[0] == pytest.approx(pitch / 2)
        assert z[-1] == pytest.approx(44.5 * 3.4)


def test_cylindrical_geometry_errors() -> None:
    with pytest.raises(ValueError, match="r_edges_mm"):
        Geometry("bad", (4, 3, 5), 1.0, 1.7, 1.4, 0.3, kind="cylindrical", r_edges_mm=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="r_edges_mm"):
        Geometry("bad", (4, 2, 5), 1.0, 1.7, 1.4, 0.3, kind="cylindrical", r_edges_mm=(0.0, 2.0, 1.0))
    with pytest.raises(ValueError, match="kind"):
        Geometry("bad", (4, 2, 5), 1.0, 1.7, 1.4, 0.3, kind="polar")
    with pytest.raises(ValueError, match="layers_per_cell"):
        Geometry("bad", (4, 2, 5), 1.0, 3.4, 1.4, 0.3)  # 3.4 mm needs two sampling layers per cell
    with pytest.raises(ValueError, match="normal incidence"):
        simulate(2, energy="fixed:10", theta_deg=(60.0, 120.0), config=SimulatorConfig.for_geometry("ds2"))


def test_medium_uses_the_physical_sampling_layer() -> None:
    """F_S = X0_eff / (d_W + d_Si) of one 1.7 mm sampling layer, not of the 3.4 mm readout layer."""
    med = SimulatorConfig.for_geometry("ds2").medium()
    x0 = 1.7 / (1.4 / 3.504 + 0.3 / 93.70)  # thickness-weighted 1/X0 of the layer
    assert med.x0_mm == pytest.approx(x0, rel=1e-9)
    assert med.fs == pytest.approx(x0 / 1.7, rel=1e-9)


def _noiseless(name: str) -> SimulatorConfig:
    # no sampling fluctuation and no threshold: a cell's energy is its spot count x the spot energy,
    # so two binnings of the same spots can be compared exactly
    return SimulatorConfig.for_geometry(name, stochastic_term=0.0, constant_term=0.0, cell_threshold_gev=0.0)


def test_ds3_radial_bins_nest_in_ds2_bins() -> None:
    """The same spots binned twice: two ds3 radial bins (2.325 mm) are one ds2 bin (4.65 mm), layer by
    layer, so the radial binning of both grids agrees spot by spot."""
    a = simulate(6, energy="list:2,40,700", config=_noiseless("ds2"), seed=3)
    b = simulate(6, energy="list:2,40,700", config=_noiseless("ds3"), seed=3)
    r2 = a.ecal.sum(axis=1)  # [N, 9, 45]
    r3 = b.ecal.sum(axis=1).reshape(6, 9, 2, 45).sum(axis=2)
    np.testing.assert_allclose(r3, r2, rtol=2e-5, atol=1e-6)
    assert r2.sum() > 0


def test_azimuth_bins_are_uniform_and_the_energy_scale_is_the_incident_one() -> None:
    s = simulate(300, energy="loguniform:1:1000", config=SimulatorConfig.for_geometry("ds2"), seed=1)
    per_alpha = s.ecal.sum(axis=(0, 2, 3))
    spread = per_alpha.std() / per_alpha.mean()
    assert spread < 0.05  # 16 bins of a symmetric shower set; a mis-binned azimuth gives order 1
    ratio = s.ecal.sum(axis=(1, 2, 3)) / s.energy
    assert 0.93 < np.median(ratio) < 1.0  # cells on the incident scale, a little leakage
    lit = s.ecal[s.ecal > 0]
    assert lit.min() >= 0.5e-6 / 0.033  # the 15.15 keV readout threshold
    # the shower's core: most energy in the innermost radial bin, and it falls outwards
    radial = s.ecal.sum(axis=(0, 1, 3))
    assert np.argmax(radial) == 0 and radial[0] > 0.5 * radial.sum()
    assert np.all(np.diff(radial) < 0)


def test_challenge_files_are_read_without_a_grid_attribute(tmp_path: Path) -> None:
    """One lit cell [alpha=3, r=5, layer=7] is the challenge's voxel (7 * 16 + 3) * 9 + 5 on disk, and a
    file without hepgan's grid attribute reads back as the ds2 grid."""
    ecal = np.zeros((2, 16, 9, 45), np.float32)
    ecal[0, 3, 5, 7] = 1.5
    ecal[1, 15, 0, 44] = 0.25
    s = Showers(ecal=ecal, energy=np.array([10.0, 20.0], np.float32))
    (path,) = write_files([s], tmp_path, fmt="calochallenge")
    with h5py.File(path, "r+") as f:
        flat = f["showers"][...]
        assert flat[0, (7 * 16 + 3) * 9 + 5] == pytest.approx(1500.0)  # MeV
        assert flat[1, (44 * 16 + 15) * 9 + 0] == pytest.approx(250.0)
        assert np.count_nonzero(flat) == 2
        for key in list(f.attrs):
            del f.attrs[key]
    back = read_file(path)
    assert back.grid == (16, 9, 45)
    np.testing.assert_array_equal(back.ecal, ecal)
    np.testing.assert_array_equal(back.energy, s.energy)


@pytest.mark.parametrize("arch", ["ds2", "ds3"])
def test_cylindrical_models_have_the_grid(arch: str) -> None:
    g, d = build(ModelConfig(arch=arch, size="tiny"), nnx.Rngs(0))
    z = g.latent(jax.random.key(1), jnp.array([1.0, 31.6, 1000.0]))
    np.testing.assert_allclose(np.asarray(z[:, 0]), [0.0, 0.5, 1.0], atol=1e-3)  # log10(E) / 3
    x = nnx.jit(lambda m, a: m(a))(g, z)
    assert x.shape == (3, *get_geometry(arch).shape) and bool(jnp.all(x >= 0))
    out = nnx.jit(lambda m, a: m(a))(d, x)
    assert {k: v.shape for k, v in out.items()} == {"logit": (3,), "energy": (3,), "ecal": (3,)}
    # the ECAL head is the sum of the cells before the power transform
    np.testing.assert_allclose(out["ecal"], jnp.sum(x**2, axis=(1, 2, 3)), rtol=1e-5)


def test_convolutions_wrap_around_in_azimuth() -> None:
    """Rolling a shower in alpha rolls every circular convolution's output the same way (no edge at
    alpha = 0), while a zero-padded one would differ at the ends."""
    conv = Conv3D(2, 3, KERNEL, padding=((0, 0), (1, 1), (2, 2)), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 16, 9, 45, 2))
    f = nnx.jit(circular)
    y = f(conv, x)
    assert y.shape == (2, 16, 9, 45, 3)
    np.testing.assert_allclose(f(conv, jnp.roll(x, 5, axis=1)), jnp.roll(y, 5, axis=1), atol=1e-5)


def test_config_rejects_fixed25_conditioning_for_ds2() -> None:
    with pytest.raises(ValueError, match="conditioning"):
        ModelConfig(arch="ds2", conditioning="product_and_value").resolve()
    with pytest.raises(ValueError, match="latent_dim"):
        ModelConfig(arch="ds2", size="tiny", latent_dim=1).resolve()
    assert dataclasses.replace(ModelConfig(arch="ds3", size="small")).resolve().cell_power == 0.5


def test_presets_agree_with_the_evaluation_binning() -> None:
    """The simulator's cells and the CaloChallenge suite's voxels are the same bins."""
    from hepgan.physics.calochallenge import get_binning

    for name, dataset in (("ds2", "2"), ("ds3", "3")):
        g, b = get_geometry(name), get_binning(dataset)
        assert g.shape == b.grid
        alpha, r, _ = g.cell_centers()
        np.testing.assert_allclose(alpha, b.alpha_centres(), atol=1e-12)
        np.testing.assert_allclose(r, b.r_centres(), atol=1e-9)
