"""HDF5 storage (compression) and provenance attributes of written shower files.

The command-line writers compress by default (``formats.DEFAULT_COMPRESSION``) and record what wrote a
file; round trips stay exact for every codec; files written the old way (plain datasets, no attributes)
read as before.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

import hepgan
from hepgan.cli.data import main as data_main
from hepgan.cli.simulate import main as simulate_main
from hepgan.data import formats as F
from hepgan.data.formats import Storage
from hepgan.data.simulate import SimulatorConfig
from hepgan.data.source import FileSource
from hepgan.data.types import Showers

GRID = (4, 5, 6)


def _showers(n: int, *, seed: int = 0, theta: bool = True) -> Showers:
    rng = np.random.default_rng(seed)
    e = rng.uniform(2.0, 500.0, n).astype(np.float32)
    cells = rng.exponential(1e-3, (n, *GRID)).astype(np.float32) * (rng.random((n, *GRID)) < 0.3)
    th = rng.uniform(1.0, 2.1, n).astype(np.float32) if theta else None
    return Showers(ecal=cells.astype(np.float32), energy=e, theta=th)


def _same(a: Showers, b: Showers) -> None:
    np.testing.assert_array_equal(a.ecal, b.ecal)
    np.testing.assert_array_equal(a.energy, b.energy)
    if a.theta is None:
        assert b.theta is None
    else:
        np.testing.assert_array_equal(a.theta, b.theta)


# --------------------------------------------------------------------------------------------------
# Storage options
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "codec", "level"),
    [
        (None, None, None),
        ("none", None, None),
        ("lzf", "lzf", None),
        ("gzip", "gzip", 1),
        ("GZIP:9", "gzip", 9),
    ],
)
def test_storage_parse(text: str | None, codec: str | None, level: int | None) -> None:
    s = Storage.parse(text)
    assert (s.codec, s.level) == (codec, level)
    assert Storage.parse(str(s)) == s  # the normalised text names the same storage


@pytest.mark.parametrize("bad", ["bz2", "gzip:0", "gzip:10", "lzf:3", "", "none:1"])
def test_storage_parse_refuses_with_the_valid_values(bad: str) -> None:
    with pytest.raises(ValueError, match=r"compression must be one of 'none', 'lzf', 'gzip'.*got"):
        Storage.parse(bad)


STORAGES = ["none", "lzf", "gzip", "gzip:9", Storage("gzip", 3, shuffle=True, chunk_events=1)]


@pytest.mark.parametrize("fmt", ["fixed25", "angle", "calochallenge"])
@pytest.mark.parametrize("storage", STORAGES, ids=str)
def test_round_trip_exact_for_every_compression(tmp_path: Path, fmt: str, storage: str | Storage) -> None:
    s = _showers(7, theta=fmt != "fixed25")
    want = Storage.parse(storage)
    path = F.write_file(tmp_path / "x.h5", s, fmt, compression=storage)
    _same(s, F.read_file(path))
    cells = {"fixed25": "ECAL", "angle": "ECAL", "calochallenge": "showers"}[fmt]
    with h5py.File(path, "r") as f:
        d = f[cells]
        assert d.compression == want.codec
        if want.codec is None:
            assert d.chunks is None  # contiguous: the positional-read layout
        else:
            assert d.shuffle == want.shuffle
            assert d.chunks[0] == (want.chunk_events or 7)  # tiny events: the whole file is one chunk
        if want.codec == "gzip":
            assert d.compression_opts == want.level
        assert f.attrs["hepgan_compression"] == str(want)
    # the training reader gives the same rows, positional reads or not
    src = FileSource(path)
    rows = np.array([5, 0, 3])
    np.testing.assert_array_equal(src.read(rows).ecal, s.ecal[rows])
    src.close()


def test_short_last_file_keeps_its_storage_and_count(tmp_path: Path) -> None:
    s = _showers(5)
    (path,) = F.write_files([s], tmp_path, fmt="angle", events_per_file=9, compression="gzip:6")
    with h5py.File(path, "r") as f:  # rewritten at 5 events: same codec and level
        assert f["ECAL"].shape[0] == 5
        assert (f["ECAL"].compression, f["ECAL"].compression_opts) == ("gzip", 6)
        assert int(f.attrs["hepgan_n_events"]) == 5
    _same(s, F.read_file(path))


def test_bad_compression_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression must be one of"):
        F.write_files([_showers(3)], tmp_path / "out", fmt="angle", compression="zstd")
    with pytest.raises(ValueError, match="compression must be one of"):
        F.write_folder([_showers(3)], tmp_path / "out", fmt="angle", compression="zstd")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# Provenance attributes
# --------------------------------------------------------------------------------------------------


def test_writer_records_version_time_count_and_caller_attrs(tmp_path: Path) -> None:
    attrs = F.provenance_attrs(tool="test", seed=42, geometry="g", settings={"a": [1, 2], "b": "x"})
    paths = F.write_files([_showers(5)], tmp_path, fmt="angle", events_per_file=3, attrs=attrs)
    provs = [F.file_provenance(p) for p in paths]
    assert [p["n_events"] for p in provs] == [3, 2]
    for p in provs:
        assert p["version"] == hepgan.__version__
        assert datetime.fromisoformat(p["created_utc"]).utcoffset().total_seconds() == 0
        assert (p["tool"], p["seed"], p["geometry"], p["format"]) == ("test", 42, "g", "angle")
        assert p["settings"] == {"a": [1, 2], "b": "x"}
        assert p["compression"] == "gzip:1"  # the library writers' default, as the commands'
    with h5py.File(paths[0], "r") as f:  # small plain values: a seed is an integer, settings one string
        assert isinstance(f.attrs["hepgan_seed"], np.integer)
        assert json.loads(f.attrs["hepgan_settings"]) == {"a": [1, 2], "b": "x"}


def test_caller_cannot_overwrite_what_the_writer_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hepgan_n_events"):
        F.write_file(tmp_path / "x.h5", _showers(2), "angle", attrs={"hepgan_n_events": 9})
    with pytest.raises(ValueError, match="hepgan_compression"):
        F.write_file(tmp_path / "y.h5", _showers(2), "angle", attrs={"hepgan_compression": "x"})


def test_old_style_file_without_attributes_reads_the_same(tmp_path: Path) -> None:
    """A fixed25 file written like the public data: plain contiguous datasets, no attribute at all."""
    rng = np.random.default_rng(3)
    ecal = (rng.exponential(1e-3, (6, 25, 25, 25)) * (rng.random((6, 25, 25, 25)) < 0.05)).astype(np.float32)
    target = np.stack([np.full(6, 11.0), rng.uniform(10, 500, 6)], axis=1).astype(np.float32)
    path = tmp_path / "EleEscan_old.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"], f["target"] = ecal, target
    assert F.file_provenance(path) == {}
    s = F.read_file(path)
    np.testing.assert_array_equal(s.ecal, ecal)
    np.testing.assert_array_equal(s.energy, target[:, 1])
    reader = F.RowReader(path)
    assert reader.direct  # the positional-read path, as before
    np.testing.assert_array_equal(reader.take(np.array([1, 4])).ecal, ecal[[1, 4]])
    reader.close()
    # and rewriting it compressed keeps every value
    out = F.write_file(tmp_path / "new.h5", s, "fixed25", compression="gzip")
    _same(s, F.read_file(out))
    assert set(h5py.File(out, "r")) == {"ECAL", "target"}


def test_file_provenance_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(F.ShowerFileError, match=r"nope\.h5"):
        F.file_provenance(tmp_path / "nope.h5")
    path = F.write_file(tmp_path / "x.h5", _showers(2), "angle")
    with h5py.File(path, "a") as f:
        f.attrs["hepgan_settings"] = "{broken"
    with pytest.raises(F.ShowerFileError, match=r"x\.h5.*'hepgan_settings' is not valid JSON"):
        F.file_provenance(path)


# --------------------------------------------------------------------------------------------------
# Command-line writers
# --------------------------------------------------------------------------------------------------


def _simulate(out: Path, *more: str) -> list[Path]:
    argv = ["--geometry", "fixed25", "--n-events", "12", "--seed", "7", "--workers", "1", "--no-progress"]
    assert simulate_main([*argv, "--out", str(out), *more]) == 0
    return sorted(out.glob("*.h5"))


def test_simulate_writes_compressed_with_provenance(tmp_path: Path) -> None:
    (path,) = _simulate(tmp_path / "sim")
    default = Storage.parse(F.DEFAULT_COMPRESSION)
    with h5py.File(path, "r") as f:
        assert f["ECAL"].compression == default.codec
        assert f["ECAL"].compression_opts == default.level
        assert f["ECAL"].shuffle is False and f["ECAL"].chunks[0] == 12  # 12 events < one 1 MiB chunk
        assert set(f) == {"ECAL", "target"}  # the public files' keys, nothing renamed
    p = F.file_provenance(path)
    assert (p["tool"], p["seed"], p["geometry"], p["format"], p["n_events"]) == (
        "hepgan-simulate",
        7,
        "fixed25",
        "fixed25",
        12,
    )
    assert p["version"] == hepgan.__version__
    assert p["settings"]["simulator"] == json.loads(
        json.dumps(SimulatorConfig.for_geometry("fixed25").describe())
    )
    assert p["settings"]["energy"] == "uniform:10:500" and p["settings"]["theta_deg"] == [90.0, 90.0]
    assert p["command"].startswith("hepgan-simulate ") and "--seed 7" in p["command"]


def test_simulate_compression_option(tmp_path: Path) -> None:
    (plain,) = _simulate(tmp_path / "plain", "--compression", "none")
    (lzf,) = _simulate(tmp_path / "lzf", "--compression", "lzf")
    with h5py.File(plain, "r") as f:
        assert f["ECAL"].compression is None and f["ECAL"].chunks is None
    with h5py.File(lzf, "r") as f:
        assert f["ECAL"].compression == "lzf"
    _same(F.read_file(plain), F.read_file(lzf))  # same seed, same showers, whatever the storage


def test_invalid_compression_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _simulate(tmp_path / "x", "--compression", "bz2")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        "--compression" in err
        and "compression must be one of 'none', 'lzf', 'gzip'" in err
        and "'bz2'" in err
    )
    with pytest.raises(SystemExit) as exc:
        data_main(["convert", str(tmp_path), str(tmp_path / "y"), "--format", "angle", "--compression", "gz"])
    assert exc.value.code == 2
    assert "compression must be one of" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_convert_writes_compressed_with_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (src,) = _simulate(tmp_path / "sim", "--compression", "none")
    out = tmp_path / "cc"
    assert data_main(["convert", str(src), str(out), "--format", "calochallenge"]) == 0
    (path,) = sorted(out.glob("*.h5"))
    default = Storage.parse(F.DEFAULT_COMPRESSION)
    with h5py.File(path, "r") as f:
        assert {"incident_energies", "showers"} <= set(f)  # the challenge's datasets, as they were
        assert f["showers"].compression == default.codec
    _same(F.read_file(src), F.read_file(path))
    p = F.file_provenance(path)
    assert (p["tool"], p["seed"], p["geometry"], p["format"]) == (
        "hepgan-data convert",
        7,
        "fixed25",
        "calochallenge",
    )
    assert p["settings"]["input_provenance"]["tool"] == "hepgan-simulate"
    assert p["settings"]["inputs"] == [str(src)]

    assert (
        data_main(
            ["convert", str(src), str(tmp_path / "gz4"), "--format", "angle", "--compression", "gzip:4"]
        )
        == 0
    )
    (gz4,) = sorted((tmp_path / "gz4").glob("*.h5"))
    with h5py.File(gz4, "r") as f:
        assert (f["ECAL"].compression, f["ECAL"].compression_opts) == ("gzip", 4)

    capsys.readouterr()
    assert data_main(["info", str(path), str(src)]) == 0
    text = capsys.readouterr().out
    assert "provenance" in text and "tool hepgan-data convert" in text and "seed 7" in text
    assert "tool hepgan-simulate" in text


# --------------------------------------------------------------------------------------------------
# The benchmark behind the default
# --------------------------------------------------------------------------------------------------


def test_benchmark_runs_tiny_and_writes_its_json(tmp_path: Path) -> None:
    from hepgan.bench import hdf5_compression
    from hepgan.bench.common import write_result

    result = hdf5_compression.run(quick=True, cases=["fixed25"], n=128, repeats=1, variants=["gzip:1"])
    path = write_result("hdf5_compression", result, tmp_path)
    data = json.loads(path.read_text())
    case = data["cases"]["fixed25"]
    assert set(case["variants"]) == {"none", "gzip:1"}  # "none" always: the baseline
    for v in case["variants"].values():
        assert {
            "bytes",
            "write_seconds",
            "read_showers_per_s",
            "size_ratio_vs_none",
            "read_ratio_vs_none",
        } <= set(v)
        assert set(v["read_showers_per_s"]) == set(hdf5_compression.READS)
        assert all(r > 0 for r in v["read_showers_per_s"].values())
    assert case["variants"]["none"]["size_ratio_vs_none"] == 1.0
    assert case["variants"]["gzip:1"]["bytes"] < case["variants"]["none"]["bytes"]
    assert {"machine", "date", "repeats"} <= set(data)
    with pytest.raises(ValueError, match="unknown cases or variants"):
        hdf5_compression.run(quick=True, cases=["nope"])
