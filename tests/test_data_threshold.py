"""The reading cell threshold: the original 3DGAN readers' defaults, the override, and the same cells
whether a file is read by ``formats`` or by the training ``FileSource``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hepgan.data import formats as F
from hepgan.data.config import DataConfig
from hepgan.data.source import FileSource, open_source
from hepgan.data.types import Showers
from hepgan.train.config import value_problem

# one cell on each side of both defaults (1e-6, 1e-4), and an empty one
LEVELS = np.array([0.0, 5e-7, 2e-6, 5e-5, 2e-4, 0.3], np.float32)


def _showers(grid: tuple[int, int, int], n: int = 4) -> Showers:
    ecal = np.zeros((n, *grid), np.float32)
    ecal[:, 0, 0, : len(LEVELS)] = LEVELS
    theta = np.full(n, np.radians(75.0), np.float32)
    return Showers(ecal=ecal, energy=np.linspace(10, 100, n).astype(np.float32), theta=theta)


def _kept(s: Showers) -> np.ndarray:
    return s.ecal[:, 0, 0, : len(LEVELS)]


@pytest.mark.parametrize(
    ("fmt", "grid", "default"), [("fixed25", (25, 25, 25), 1e-6), ("angle", (51, 51, 25), 1e-4)]
)
def test_format_default_override_and_off(tmp_path: Path, fmt: str, grid: tuple, default: float) -> None:
    s = _showers(grid)
    path = F.write_file(tmp_path / "x.h5", s, fmt)
    assert F.DEFAULT_CELL_THRESHOLD[fmt] == default
    want = np.where(LEVELS < default, 0.0, LEVELS)
    np.testing.assert_array_equal(_kept(F.read_file(path, threshold=None)), np.broadcast_to(want, (4, 6)))
    # exact by default: conversion and round trips keep every stored value
    np.testing.assert_array_equal(F.read_file(path).ecal, s.ecal)
    np.testing.assert_array_equal(F.read_file(path, threshold=0).ecal, s.ecal)
    np.testing.assert_array_equal(_kept(F.read_file(path, threshold=1e-3))[0], [0, 0, 0, 0, 0, LEVELS[5]])
    # every read path applies it: ranges, scattered indices (with repeats), streaming
    with F.ShowerFile(path, threshold=None) as f:
        assert f.threshold == default
        np.testing.assert_array_equal(_kept(f.take([3, 1, 1]))[0], want)
    chunks = list(F.iter_showers(path, chunk=3, threshold=None))
    np.testing.assert_array_equal(_kept(chunks[-1])[0], want)


def test_bad_threshold_names_the_argument(tmp_path: Path) -> None:
    path = F.write_file(tmp_path / "x.h5", _showers((25, 25, 25)), "fixed25")
    for bad in (-1e-6, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"threshold: the cell threshold must be a finite energy >= 0"):
            F.read_file(path, threshold=bad)
    assert value_problem("data.cell_threshold", -1.0) is not None
    assert value_problem("data.cell_threshold", None) is None
    assert value_problem("data.cell_threshold", 1e-4) is None


def test_a_negative_cell_is_still_reported_with_a_threshold(tmp_path: Path) -> None:
    s = _showers((25, 25, 25))
    s.ecal[2, 1, 1, 1] = -1.0
    path = F.write_file(tmp_path / "x.h5", s, "fixed25")
    with pytest.raises(F.ShowerFileError, match="negative"):
        F.read_file(path, threshold=None)


def test_training_reads_the_cells_evaluation_reads(tmp_path: Path) -> None:
    s = _showers((51, 51, 25), n=6)
    F.write_file(tmp_path / "a.h5", s, "angle")
    F.write_file(tmp_path / "b.h5", s, "angle", compression="lzf")  # the h5py (not the direct) reader
    via_formats = F.read_file(tmp_path / "a.h5", threshold=None)
    for cache in (False, True):
        src = FileSource(sorted(tmp_path.glob("*.h5")), cache=cache, cell_threshold=None)
        got = src.read(np.array([7, 0, 11, 3]))
        np.testing.assert_array_equal(_kept(got), _kept(via_formats)[:4])
    # the config default is the format's; 0 keeps the stored cells
    cfg = DataConfig(kind="files", paths=[str(tmp_path / "a.h5")], reference_fraction=0.5)
    train = open_source(cfg).train
    assert float(train.read(np.arange(len(train))).ecal[:, 0, 0, 3].max()) == 0.0  # 5e-5 < 1e-4
    cfg.cell_threshold = 0.0
    train = open_source(cfg).train
    assert float(train.read(np.arange(len(train))).ecal[:, 0, 0, 3].min()) == pytest.approx(5e-5)
