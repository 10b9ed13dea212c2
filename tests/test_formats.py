"""The HDF5 shower formats: exact round trips, the public layouts, streaming, and every bad-input error."""

from __future__ import annotations

import inspect
from pathlib import Path

import h5py
import numpy as np
import pytest

from hepgan.cli.data import main as data_main
from hepgan.data import formats as F
from hepgan.data.types import Showers

SMALL = (4, 5, 6)  # distinct sizes so that a transposed axis cannot pass unnoticed


def make_showers(
    n: int, grid: tuple[int, int, int] = SMALL, *, theta: bool = True, seed: int = 0, extra: bool = False
) -> Showers:
    rng = np.random.default_rng(seed)
    e = rng.uniform(2.0, 500.0, n).astype(np.float32)
    cells = rng.exponential(1.0, (n, *grid)).astype(np.float32)
    cells *= rng.random((n, *grid)) < 0.3  # sparse like real showers
    ecal = (cells * (0.02 * e[:, None, None, None] / np.prod(grid))).astype(np.float32)
    ext = {}
    if extra:
        ext = {
            "eta": rng.normal(size=n).astype(np.float32),
            "phi": rng.uniform(-3, 3, n).astype(np.float64),
            "pdgID": np.full(n, 11, dtype=np.int32),
            "HCAL": rng.random((n, 2, 2, 3)).astype(np.float32),
        }
    th = rng.uniform(np.radians(60), np.radians(120), n).astype(np.float32) if theta else None
    return Showers(ecal=ecal, energy=e, theta=th, extra=ext)


def assert_same(a: Showers, b: Showers) -> None:
    np.testing.assert_array_equal(a.ecal, b.ecal)
    assert a.ecal.dtype == b.ecal.dtype == np.float32
    np.testing.assert_array_equal(a.energy, b.energy)
    if a.theta is None:
        assert b.theta is None
    else:
        np.testing.assert_array_equal(a.theta, b.theta)


# ---------------------------------------------------------------------------------------------------
# Round trips and the public layouts
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_round_trip_is_exact(tmp_path: Path, fmt: str) -> None:
    s = make_showers(9, extra=True)
    path = F.write_file(tmp_path / "x.h5", s, fmt)
    assert F.detect_format(path) == fmt
    r = F.read_file(path)
    assert_same(s, r)
    for k in ("eta", "phi", "HCAL", "pdgID"):
        np.testing.assert_array_equal(r.extra[k], s.extra[k])
    assert r.extra["phi"].dtype == np.float64  # extras keep their dtype
    assert not list(tmp_path.glob("*.part"))


def test_fixed25_layout_matches_the_public_files(tmp_path: Path) -> None:
    s = make_showers(6, (25, 25, 25), theta=False)
    path = F.write_file(tmp_path / "f.h5", s, "fixed25")
    with h5py.File(path, "r") as f:
        assert set(f) == {"ECAL", "target"}
        assert f["ECAL"].shape == (6, 25, 25, 25) and f["ECAL"].dtype == np.float32
        assert f["target"].shape == (6, 2) and f["target"].dtype == np.float32
        np.testing.assert_array_equal(f["target"][:, 1], s.energy)
        np.testing.assert_array_equal(f["target"][:, 0], np.full(6, 11.0))  # electrons by default
        assert f["ECAL"].compression == "gzip" and f["ECAL"].compression_opts == 1  # the default storage
    path = F.write_file(tmp_path / "plain.h5", s, "fixed25", compression=None)
    with h5py.File(path, "r") as f:
        assert f["ECAL"].chunks is None and f["ECAL"].compression is None  # contiguous, uncompressed


def test_fixed25_at_normal_incidence_stores_no_theta(tmp_path: Path) -> None:
    s = make_showers(4, (25, 25, 25), theta=False)
    s.theta = np.full(4, np.pi / 2, dtype=np.float32)  # what a simulator at 90 degrees gives
    path = F.write_file(tmp_path / "f.h5", s, "fixed25")
    with h5py.File(path, "r") as f:
        assert set(f) == {"ECAL", "target"}
    r = F.read_file(path)
    assert r.theta is None
    np.testing.assert_array_equal(r.theta_or_normal(), s.theta)
    tilted = make_showers(4, (25, 25, 25))
    with pytest.raises(ValueError, match="started with normal incidence"):
        F.write_files([s, tilted], tmp_path / "mixed", fmt="fixed25", events_per_file=8)
    assert not list((tmp_path / "mixed").glob("*"))  # the aborted file leaves nothing behind


def test_reads_a_file_written_like_the_3dgan_data(tmp_path: Path) -> None:
    # As the public EleEscan files: float64-able ECAL, target (N, 2) = (PDG id, E).
    rng = np.random.default_rng(1)
    ecal = rng.random((5, 25, 25, 25)) * 1e-3
    target = np.stack([np.array([11, -11, 11, 11, -11]), rng.uniform(10, 500, 5)], axis=1)
    p = tmp_path / "EleEscan_1_1.h5"
    with h5py.File(p, "w") as f:
        f["ECAL"] = ecal
        f["target"] = target
    s = F.read_file(p)
    assert s.grid == (25, 25, 25) and s.ecal.dtype == np.float32 and s.theta is None
    np.testing.assert_array_equal(s.ecal, ecal.astype(np.float32))
    np.testing.assert_array_equal(s.energy, target[:, 1].astype(np.float32))
    np.testing.assert_array_equal(s.extra["pdgID"], target[:, 0])
    # Written back, the particle ids survive in target[:, 0].
    out = F.write_file(tmp_path / "back.h5", s, "fixed25")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["target"][:, 0], target[:, 0])


def _angle_file(path: Path, n: int = 5, *, theta: bool, mtheta: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    d = {
        "ECAL": rng.random((n, 51, 51, 25)).astype(np.float32) * 1e-3,
        "energy": rng.uniform(2, 500, n).astype(np.float32),
        "eta": rng.normal(size=n).astype(np.float32),
        "HCAL": rng.random((n, 5, 5, 6)).astype(np.float32),
        "pdgID": np.full(n, 11, dtype=np.int64),
    }
    if theta:
        d["theta"] = rng.uniform(1.0, 2.1, n).astype(np.float32)
    if mtheta:
        d["mtheta"] = rng.uniform(1.0, 2.1, n).astype(np.float32)
    with h5py.File(path, "w") as f:
        for k, v in d.items():
            f[k] = v
    return d


def test_angle_file_with_theta_and_mtheta(tmp_path: Path) -> None:
    d = _angle_file(tmp_path / "a.h5", theta=True, mtheta=True)
    s = F.read_file(tmp_path / "a.h5")
    np.testing.assert_array_equal(s.theta, d["theta"])
    np.testing.assert_array_equal(s.extra["mtheta"], d["mtheta"])
    assert set(s.extra) == {"mtheta", "eta", "HCAL", "pdgID"}
    F.write_file(tmp_path / "b.h5", s, "angle")
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert set(f) == set(d)
        for k, v in d.items():
            np.testing.assert_array_equal(f[k][()], v)


def test_angle_file_with_only_mtheta_uses_it_as_theta(tmp_path: Path) -> None:
    d = _angle_file(tmp_path / "a.h5", theta=False, mtheta=True)
    s = F.read_file(tmp_path / "a.h5")
    np.testing.assert_array_equal(s.theta, d["mtheta"])
    # ...and writes back as an mtheta-only file, not claiming a generated angle it never had.
    F.write_file(tmp_path / "b.h5", s, "angle")
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert "theta" not in f and "mtheta" in f
    assert F.scan(tmp_path / "b.h5")[0].has_theta


def test_calochallenge_units_and_voxel_order(tmp_path: Path) -> None:
    X, Y, Z = SMALL
    s = make_showers(3)
    s.ecal[:] = 0
    s.ecal[0, 1, 2, 3] = 7.25  # one hot cell: x=1, y=2, z=3
    path = F.write_file(tmp_path / "c.h5", s, "calochallenge")
    with h5py.File(path, "r") as f:
        assert f["incident_energies"].shape == (3, 1)
        assert f["showers"].shape == (3, X * Y * Z)
        np.testing.assert_array_equal(f["incident_energies"][:, 0], s.energy.astype(np.float64) * 1000)
        flat = f["showers"][0]
        assert tuple(f.attrs["grid"]) == SMALL and f.attrs["voxel_order"] == "ZXY"
    assert np.flatnonzero(flat).tolist() == [((3 * X) + 1) * Y + 2]  # layer-major index
    assert flat.max() == 7250.0


def test_gev_mev_conversion_is_exact_for_awkward_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    s = make_showers(50)
    s.ecal[:] = rng.random(s.ecal.shape).astype(np.float32) * np.float32(1e-3) + np.float32(1e-7)
    s.energy[:] = np.float32(0.1) + rng.random(50).astype(np.float32)
    r = F.read_file(F.write_file(tmp_path / "c.h5", s, "calochallenge"))
    assert_same(s, r)


def test_calochallenge_without_grid_needs_geometry(tmp_path: Path) -> None:
    p = tmp_path / "dataset_2_1.h5"
    rng = np.random.default_rng(4)
    showers = rng.random((4, 60)) * 1e3
    with h5py.File(p, "w") as f:
        f["incident_energies"] = rng.uniform(1e3, 1e6, (4, 1))
        f["showers"] = showers
    with pytest.raises(F.ShowerFileError, match=r"dataset_2_1\.h5.*'showers'.*no voxel grid.*geometry"):
        F.read_file(p)
    s = F.read_file(p, geometry=(3, 4, 5))
    assert s.grid == (3, 4, 5)
    # Layer-major: the first X*Y voxels are layer z=0.
    np.testing.assert_allclose(s.ecal[:, :, :, 0].reshape(4, -1), showers[:, :12] / 1000, rtol=1e-7)
    with pytest.raises(F.ShowerFileError, match="60 voxels per event do not fill the grid"):
        F.read_file(p, geometry=(5, 5, 5))


def test_non_standard_grid_needs_its_attribute(tmp_path: Path) -> None:
    p = F.write_file(tmp_path / "s.h5", make_showers(3), "angle")
    assert F.read_file(p).grid == SMALL  # our writer declares the grid
    with h5py.File(p, "a") as f:
        del f.attrs["grid"]
    with pytest.raises(
        F.ShowerFileError, match=r"'ECAL'.*grid \(4, 5, 6\) differs from the expected \(51, 51, 25\)"
    ):
        F.read_file(p)


# ---------------------------------------------------------------------------------------------------
# Streaming, splitting, scanning
# ---------------------------------------------------------------------------------------------------


def test_write_files_splits_and_iter_showers_streams_in_order(tmp_path: Path) -> None:
    assert inspect.signature(F.write_files).parameters["events_per_file"].default == 10000
    parts = [make_showers(7, seed=i) for i in range(4)]  # 28 events
    paths = F.write_files(iter(parts), tmp_path / "out", fmt="angle", events_per_file=10, prefix="sim")
    assert [p.name for p in paths] == ["sim_0000.h5", "sim_0001.h5", "sim_0002.h5"]
    assert [len(F.ShowerFile(p)) for p in paths] == [10, 10, 8]
    chunks = list(F.iter_showers(tmp_path / "out", chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 2, 4, 4, 2, 4, 4]  # never spans files
    assert_same(Showers.concat(parts), Showers.concat(chunks))
    glob_chunks = list(F.iter_showers(str(tmp_path / "out" / "sim_000[12].h5"), chunk=100))
    assert [len(c) for c in glob_chunks] == [10, 8]
    assert not list((tmp_path / "out").glob("*.part"))


def test_lzf_compression_round_trip(tmp_path: Path) -> None:
    s = make_showers(30)
    paths = F.write_files([s], tmp_path, fmt="fixed25", events_per_file=20, compression="lzf")
    with h5py.File(paths[0], "r") as f:
        assert f["ECAL"].compression == "lzf"
    assert_same(s, Showers.concat(list(F.iter_showers(paths))))


def test_scan_reads_no_cell_data(tmp_path: Path) -> None:
    s = make_showers(6, theta=False)
    s.ecal[4, 0, 0, 0] = np.nan  # a cell check would fail: scan must not look
    F.write_file(tmp_path / "a.h5", s, "fixed25")
    F.write_file(tmp_path / "b.h5", make_showers(3), "calochallenge")
    infos = F.scan(tmp_path)
    assert [(i.path.name, i.format, i.n_events, i.grid, i.has_theta) for i in infos] == [
        ("a.h5", "fixed25", 6, SMALL, False),
        ("b.h5", "calochallenge", 3, SMALL, True),
    ]


def test_take_returns_events_in_the_requested_order(tmp_path: Path) -> None:
    s = make_showers(40)
    with F.ShowerFile(F.write_file(tmp_path / "a.h5", s, "angle")) as f:
        for idx in ([5, 1, 1, 39], [3, 2, 1], list(range(40))[::-7]):
            assert_same(s[np.array(idx)], f.take(idx))


# ---------------------------------------------------------------------------------------------------
# Bad input: one clear error per way a file can be wrong
# ---------------------------------------------------------------------------------------------------


def _h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


def _fixed(n: int = 6, grid: tuple[int, ...] = (25, 25, 25), nt: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    nt = n if nt is None else nt
    return {
        "ECAL": rng.random((n, *grid)).astype(np.float32),
        "target": np.stack([np.full(nt, 11.0), rng.uniform(10, 500, nt)], 1).astype(np.float32),
    }


def test_error_not_hdf5(tmp_path: Path) -> None:
    p = tmp_path / "notes.h5"
    p.write_text("ECAL,target\n1,2\n")
    with pytest.raises(F.ShowerFileError, match=r"notes\.h5: not an HDF5 file"):
        F.read_file(p)


def test_error_empty_file(tmp_path: Path) -> None:
    (tmp_path / "zero.h5").write_bytes(b"")
    with pytest.raises(F.ShowerFileError, match=r"zero\.h5: empty file \(0 bytes\)"):
        F.read_file(tmp_path / "zero.h5")
    h5py.File(tmp_path / "nodata.h5", "w").close()
    with pytest.raises(F.ShowerFileError, match=r"nodata\.h5: empty file: it holds no datasets"):
        F.detect_format(tmp_path / "nodata.h5")
    d = _fixed(0)
    with pytest.raises(F.ShowerFileError, match=r"none\.h5, key 'ECAL': empty file: it holds 0 events"):
        F.read_file(_h5(tmp_path / "none.h5", **d))


def test_error_unknown_format(tmp_path: Path) -> None:
    p = _h5(tmp_path / "other.h5", images=np.zeros((3, 4)), labels=np.zeros(3))
    with pytest.raises(
        F.ShowerFileError, match=r"other\.h5: unknown format: datasets \['images', 'labels'\].*fixed25"
    ):
        F.detect_format(p)


def test_error_missing_key(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    p = _h5(tmp_path / "noangle.h5", ECAL=rng.random((3, 51, 51, 25)), energy=np.ones(3))
    with pytest.raises(F.ShowerFileError, match=r"noangle\.h5, key 'theta': missing dataset.*'mtheta'"):
        F.read_file(p)


def test_error_wrong_rank_and_grid(tmp_path: Path) -> None:
    rank = _fixed()
    rank["ECAL"] = rank["ECAL"][:, :, :, 0]
    with pytest.raises(F.ShowerFileError, match=r"rank\.h5, key 'ECAL': expected .*rank 4.*\(6, 25, 25\)"):
        F.read_file(_h5(tmp_path / "rank.h5", **rank))
    with pytest.raises(F.ShowerFileError, match=r"grid\.h5, key 'ECAL': cell grid \(24, 25, 25\) differs"):
        F.read_file(_h5(tmp_path / "grid.h5", **_fixed(grid=(24, 25, 25))))
    bad_target = _fixed()
    bad_target["target"] = bad_target["target"][:, 1]
    with pytest.raises(F.ShowerFileError, match=r"key 'target': expected shape \[N, C >= 2\]"):
        F.read_file(_h5(tmp_path / "target.h5", **bad_target))


def test_error_length_mismatch(tmp_path: Path) -> None:
    with pytest.raises(
        F.ShowerFileError,
        match=r"len\.h5, key 'target': length mismatch: ECAL holds 6 events but target holds 5",
    ):
        F.read_file(_h5(tmp_path / "len.h5", **_fixed(6, nt=5)))
    d = _fixed()
    d["eta"] = np.zeros(4)
    with pytest.raises(F.ShowerFileError, match=r"key 'eta': length mismatch: 4 entries for 6 events"):
        F.scan(_h5(tmp_path / "eta.h5", **d))


@pytest.mark.parametrize(
    ("value", "what"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-0.5, "negative cell energy")],
)
def test_error_bad_cells_name_the_chunk_and_event(tmp_path: Path, value: float, what: str) -> None:
    d = _fixed(10)
    d["ECAL"][6, 3, 4, 5] = value
    p = _h5(tmp_path / "cells.h5", **d)
    it = F.iter_showers(p, chunk=4)
    assert len(next(it)) == 4  # events 0-3 are fine and stream out before the bad chunk
    with pytest.raises(
        F.ShowerFileError, match=rf"cells\.h5, key 'ECAL': events 4-7: event 6 has (a )?{what}"
    ):
        next(it)
    assert len(F.read_file(p, stop=6)) == 6
    assert F.read_file(p, check=False).ecal.shape == (10, 25, 25, 25)


@pytest.mark.parametrize("energy", [0.0, -3.0, np.nan])
def test_error_bad_primary_energy(tmp_path: Path, energy: float) -> None:
    d = _fixed(5)
    d["target"][2, 1] = energy
    with pytest.raises(
        F.ShowerFileError, match=r"key 'target': events 0-4: event 2 has primary energy .*> 0"
    ):
        F.read_file(_h5(tmp_path / "e.h5", **d))


def test_error_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(F.ShowerFileError, match="no such file or directory"):
        F.scan(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(F.ShowerFileError, match="directory holds no HDF5 shower files"):
        list(F.iter_showers(tmp_path / "empty"))


def test_error_format_forced_wrongly(tmp_path: Path) -> None:
    p = F.write_file(tmp_path / "a.h5", make_showers(2), "angle")
    with pytest.raises(F.ShowerFileError, match=r"asked to read as 'fixed25' but .* 'angle' layout"):
        F.read_file(p, fmt="fixed25")


# ---------------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------------


def test_cli_info_validate_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = make_showers(12)
    F.write_files([s], tmp_path / "d", fmt="angle", events_per_file=5)
    assert data_main(["info", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["file", "format", "events"]
    total = next(line for line in out if line.startswith("total")).split()
    assert total[:4] == ["total", "(3", "files)", "angle"] and total[4] == "12"
    sf = float(np.mean(s.ecal.reshape(12, -1).sum(1, dtype=np.float64) / s.energy))
    assert float(total[-1]) == pytest.approx(sf, abs=1e-5)
    assert total[5] == "4x5x6"

    assert data_main(["convert", str(tmp_path / "d"), str(tmp_path / "c"), "--format", "calochallenge"]) == 0
    assert_same(s, Showers.concat(list(F.iter_showers(tmp_path / "c"))))
    assert data_main(["validate", str(tmp_path / "c")]) == 0
    assert "all 1 files valid" in capsys.readouterr().out


def test_cli_validate_bad_file_exits_1_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _fixed(3)
    d["ECAL"][1, 0, 0, 0] = np.nan
    _h5(tmp_path / "bad.h5", **d)
    assert data_main(["validate", str(tmp_path / "bad.h5")]) == 1
    err = capsys.readouterr().err
    assert "bad.h5, key 'ECAL'" in err and "event 1" in err and "Traceback" not in err
    assert data_main(["info", str(tmp_path / "nowhere")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def _convert_inputs(tmp_path: Path) -> Path:
    """Two good files, then one whose last event is NaN (sorted last): convert fails after writing."""
    d = tmp_path / "in"
    F.write_files([make_showers(8, seed=1)], d, fmt="angle", events_per_file=4)  # showers_0000/0001
    bad = make_showers(3, seed=2)
    bad.ecal[2, 0, 0, 0] = np.nan
    F.write_file(d / "zz_bad.h5", bad, "angle")
    return d


def test_cli_convert_failing_midway_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _convert_inputs(tmp_path)
    out = tmp_path / "out"
    argv = ["convert", str(d), str(out), "--format", "calochallenge", "--events-per-file", "2"]
    assert data_main(argv) == 1
    err = capsys.readouterr().err
    assert "zz_bad.h5" in err and "Nothing was written to" in err and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no partial folder either

    # Into an existing folder the same: what was there stays, nothing new appears.
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert data_main(argv) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_cli_convert_refuses_a_folder_with_files_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    s = make_showers(6)
    F.write_files([s], src, fmt="angle", events_per_file=3)
    out = tmp_path / "out"
    F.write_files([make_showers(9, seed=3)], out, fmt="angle", events_per_file=3, prefix="old")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = ["convert", str(src), str(out), "--format", "fixed25", "--events-per-file", "6"]
    assert data_main(argv) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "3 HDF5 file(s)" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert data_main([*argv, "--overwrite"]) == 0
    assert [p.name for p in out.iterdir()] == ["showers_0000.h5"]  # exactly the new set
    assert_same(s, F.read_file(out / "showers_0000.h5"))


def test_write_folder_into_a_new_folder_and_nothing_for_no_events(tmp_path: Path) -> None:
    s = make_showers(5)
    paths = F.write_folder([s], tmp_path / "new", fmt="angle", events_per_file=2)
    assert [p.name for p in paths] == ["showers_0000.h5", "showers_0001.h5", "showers_0002.h5"]
    assert_same(s, Showers.concat([F.read_file(p) for p in paths]))
    assert F.write_folder([], tmp_path / "empty", fmt="angle") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
