"""Every registered format through the one interface: exact round trips, the training reader
(``RowReader`` / ``FileSource``) against ``read_file``, and the data modules' boundaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hepgan.data import formats as F
from hepgan.data.formats.base import Format
from hepgan.data.source import FileSource
from hepgan.data.types import Showers

SMALL = (4, 5, 6)  # distinct sizes so that a transposed axis cannot pass unnoticed


def _showers(n: int, *, seed: int = 0) -> Showers:
    rng = np.random.default_rng(seed)
    e = rng.uniform(2.0, 500.0, n).astype(np.float32)
    cells = rng.exponential(0.01, (n, *SMALL)).astype(np.float32) * (rng.random((n, *SMALL)) < 0.3)
    # values on both sides of every format's default threshold (1e-6, 1e-4 GeV)
    cells[:, 0, 0, :4] = np.array([5e-7, 2e-6, 5e-5, 2e-4], np.float32)
    theta = rng.uniform(np.radians(60), np.radians(120), n).astype(np.float32)
    extra = {"eta": rng.normal(size=n).astype(np.float32), "pdgID": np.full(n, -11, np.int32)}
    return Showers(ecal=cells, energy=e, theta=theta, extra=extra)


def _assert_equal(a: Showers, b: Showers) -> None:
    for x, y in ((a.ecal, b.ecal), (a.energy, b.energy), (a.theta, b.theta)):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)


def test_the_registry_holds_one_format_object_per_name() -> None:
    assert tuple(F.REGISTRY) == F.FORMATS == ("fixed25", "angle", "calochallenge")
    for name, spec in F.REGISTRY.items():
        assert isinstance(spec, Format) and spec.name == name
        assert F.get_format(name) is spec
        assert F.DEFAULT_CELL_THRESHOLD[name] == F.cell_threshold(name, None) == spec.cell_threshold
        assert spec.cell_key in spec.core_keys and spec.energy_key
    with pytest.raises(
        ValueError, match=r"unknown format 'hdf4'; valid: \['fixed25', 'angle', 'calochallenge'\]"
    ):
        F.get_format("hdf4")


@pytest.mark.parametrize("name", list(F.REGISTRY))
def test_every_registered_format_round_trips(tmp_path: Path, name: str) -> None:
    s = _showers(9)
    path = F.write_file(tmp_path / "x.h5", s, name)
    assert F.detect_format(path) == name
    with F.ShowerFile(path) as f:
        assert f.layout.spec is F.REGISTRY[name] and f.format == name
        assert (len(f), f.grid, f.has_theta) == (9, SMALL, True)
        back = f.read()
    _assert_equal(s, back)
    np.testing.assert_array_equal(back.extra["eta"], s.extra["eta"])
    np.testing.assert_array_equal(back.extra["pdgID"], s.extra["pdgID"])
    # streamed in pieces into several files, then read back as one stream: the same events
    paths = F.write_files([s[:4], s[4:]], tmp_path / "many", fmt=name, events_per_file=5)
    assert len(paths) == 2
    _assert_equal(s, Showers.concat(list(F.iter_showers(paths, chunk=3))))


@pytest.mark.parametrize("compression", [None, "lzf"])
@pytest.mark.parametrize("name", list(F.REGISTRY))
def test_row_reader_reads_what_read_file_reads(tmp_path: Path, name: str, compression: str | None) -> None:
    s = _showers(12, seed=1)
    path = F.write_file(tmp_path / "x.h5", s, name, compression=compression)
    want = F.read_file(path)
    rows = np.array([0, 2, 3, 4, 11])
    r = F.RowReader(path)
    try:
        assert r.format == name and len(r) == 12
        # positional reads exactly where the format's cells are the stored rows and stored plainly
        assert r.direct == (F.REGISTRY[name].direct_cells and compression is None)
        got = r.take(rows)
        assert not got.extra
        _assert_equal(Showers(want.ecal[rows], want.energy[rows], want.theta[rows]), got)
        assert len(r.take(np.array([], np.int64))) == 0
    finally:
        r.close()
        r.close()  # idempotent


@pytest.mark.parametrize("threshold", [0.0, None])
@pytest.mark.parametrize("name", list(F.REGISTRY))
def test_file_source_reads_the_rows_read_file_reads(
    tmp_path: Path, name: str, threshold: float | None
) -> None:
    a, b = _showers(7, seed=2), _showers(6, seed=3)
    F.write_file(tmp_path / "a.h5", a, name)
    F.write_file(tmp_path / "b.h5", b, name, compression="lzf")
    parts = [F.read_file(tmp_path / n, threshold=threshold) for n in ("a.h5", "b.h5")]
    every = Showers.concat([Showers(p.ecal, p.energy, p.theta) for p in parts])
    idx = np.array([12, 0, 7, 5, 6, 11, 2, 2, 9])  # both files, unsorted, a repeat
    for cache in (False, True):
        src = FileSource(tmp_path, cache=cache, cell_threshold=threshold)
        _assert_equal(every[idx], src.read(idx))
        src.close()


def test_row_reader_names_the_file_and_key_of_a_bad_value(tmp_path: Path) -> None:
    s = _showers(5)
    s.energy[3] = 0.0
    F.write_file(tmp_path / "e.h5", s, "calochallenge")
    with pytest.raises(
        F.ShowerFileError, match=r"e\.h5, key 'incident_energies': event 3 has primary energy"
    ):
        F.RowReader(tmp_path / "e.h5")
    s = _showers(5)
    s.ecal[1, 2, 2, 2] = np.inf
    F.write_file(tmp_path / "c.h5", s, "calochallenge")
    r = F.RowReader(tmp_path / "c.h5")
    r.take(np.array([0, 2]))
    with pytest.raises(
        F.ShowerFileError, match=r"c\.h5, key 'showers': event 1 has NaN, infinite or negative"
    ):
        r.take(np.array([1, 4]))
    r.close()


def test_the_data_config_loads_without_the_sources_and_readers() -> None:
    code = (
        "import sys, hepgan.data.config as c; c.DataConfig(kind='files'); "
        "print(sorted(m for m in ('hepgan.data.source', 'hepgan.data.formats', 'h5py') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
