"""The interface every shower file format implements (:class:`Format`), and what the formats share.

A :class:`Format` holds the rules of one HDF5 layout: which datasets it needs and how to recognise
them, how to check their shapes from the metadata (:meth:`Format.inspect`), where the cells, the
primary energy and the angle are and in which units (:meth:`Format.read_cells`,
:meth:`Format.read_energy`), its default cell threshold, and how to write showers into it
(:meth:`Format.create`, :meth:`Format.write`). The generic code in :mod:`hepgan.data.formats.core` and
:mod:`hepgan.data.formats.write` calls these and never branches on a format's name.

:class:`EcalFormat` is what the two 3DGAN layouts share: cells in an ``ECAL`` dataset
``[N, X, Y, Z]`` in GeV, which a reader may read row by row straight from the file.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import h5py
import numpy as np

from hepgan.data.types import Showers

# CaloChallenge files flatten layers outermost (layer-major); we keep that convention for the
# Cartesian grid: voxel index = ((z * X) + x) * Y + y.
DEFAULT_VOXEL_ORDER = "ZXY"

# The particle id written into target[:, 0] when the showers carry none: electrons, as the public
# fixed-angle files (EleEscan) and the electromagnetic showers of the simulator.
DEFAULT_PDG_ID = 11.0

MEV_PER_GEV = 1000.0

NORMAL = np.float32(np.pi / 2)
"""Normal incidence (rad): the angle of showers that carry none."""

Selection = slice | np.ndarray
"""Events to read: a range, or sorted unique indices ``[k]``."""


class ShowerFileError(ValueError):
    """A shower file that cannot be read as asked; the message names file, key and expectation."""

    def __init__(self, path: str | os.PathLike[str], message: str, key: str | None = None) -> None:
        self.path = Path(path)
        self.key = key
        where = f"{self.path}" + (f", key '{key}'" if key else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Layout:
    """What opening a file learned from its metadata: format, event count, grid and where things are.

    ``voxel_order`` is the flattening order of a flat cell dataset (CaloChallenge); the other formats
    store the grid's axes as they are.
    """

    spec: Format
    n: int
    grid: tuple[int, int, int]
    theta_key: str | None  # dataset holding Showers.theta
    extra_keys: tuple[str, ...] = ()
    voxel_order: str = DEFAULT_VOXEL_ORDER


class Sink(Protocol):
    """What a format writes into: the open file of a writer and the writer's settings."""

    f: h5py.File
    path: Path
    grid: tuple[int, int, int]
    normal_incidence: bool  # decided on the first piece: no angle, or all pi/2

    def new(self, name: str, event_shape: tuple[int, ...], dtype: Any, units: str | None = None) -> None:
        """Create dataset ``name`` of shape ``[N, *event_shape]`` (``N``: the file's event count)."""
        ...


def as_f32(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=np.float32)


def need(path: Path, ds: Mapping[str, h5py.Dataset], key: str, what: str) -> h5py.Dataset:
    """Dataset ``key`` of the file at ``path``, or a ``ShowerFileError`` saying ``what`` was expected."""
    if key not in ds:
        raise ShowerFileError(path, f"missing dataset; expected {what}", key)
    return ds[key]


class Format(ABC):
    """The rules of one HDF5 shower layout; one instance per format lives in ``formats.REGISTRY``.

    Subclasses set the class attributes and implement the reading and writing hooks. The hooks get
    the open ``h5py.File`` and the file's :class:`Layout`, and return arrays in the in-memory units of
    :class:`~hepgan.data.types.Showers` (cells and energies in GeV, float32).
    """

    name: ClassVar[str]
    """The format's name (``data.file_format``, ``--format``)."""
    expected: ClassVar[str]
    """What a file of this format holds, for error messages."""
    core_keys: ClassVar[frozenset[str]]
    """Datasets with a fixed meaning in this format (never passed through ``Showers.extra``)."""
    cell_key: ClassVar[str]
    """The dataset of the cell energies (named in errors about cells)."""
    energy_key: ClassVar[str]
    """The dataset of the primary energies (named in errors about them)."""
    cell_threshold: ClassVar[float]
    """Default reading threshold (GeV): cells below it read as 0 (the original readers' value)."""
    detect_order: ClassVar[int]
    """Detection tries the formats in increasing order; the first whose :meth:`matches` holds wins."""
    default_grid: ClassVar[tuple[int, int, int] | None] = None
    """The public data set's grid, expected when neither the file nor the caller declares one."""
    derived_extras: ClassVar[tuple[str, ...]] = ()
    """``Showers.extra`` keys every file of this format yields from its own datasets."""
    packed_extras: ClassVar[frozenset[str]] = frozenset()
    """``Showers.extra`` keys the writer stores inside the format's own datasets, not as datasets."""
    direct_cells: ClassVar[bool] = False
    """Whether a row of :attr:`cell_key` is an event's ``[X, Y, Z]`` cells in GeV as stored, so that an
    uncompressed contiguous dataset can be read by positional reads of its rows."""

    def __repr__(self) -> str:
        return f"<format {self.name}>"

    @abstractmethod
    def matches(self, keys: Set[str]) -> bool:
        """Whether a file with datasets ``keys`` is of this format."""

    @abstractmethod
    def inspect(
        self,
        path: Path,
        f: h5py.File,
        ds: Mapping[str, h5py.Dataset],
        want_grid: tuple[int, int, int] | None,
    ) -> tuple[Layout, dict[str, int]]:
        """Check this format's datasets from the metadata (no cell data read).

        ``want_grid`` is the grid declared by the caller or the file's ``grid`` attribute, if any.
        Returns the layout (without ``extra_keys``) and the event count of each dataset that must hold
        one entry per event, the cell dataset first. Raises ``ShowerFileError`` naming file and key.
        """

    @abstractmethod
    def read_cells(self, f: h5py.File, layout: Layout, sel: Selection) -> np.ndarray:
        """Cells of the selected events: ``[m, X, Y, Z]`` float32, GeV."""

    @abstractmethod
    def read_energy(
        self, f: h5py.File, layout: Layout, sel: Selection
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Primary energies of the selected events, ``[m]`` float32 GeV, and the extras stored with them
        (``derived_extras``)."""

    @abstractmethod
    def create(self, w: Sink, s: Showers) -> None:
        """Create this format's own datasets and attributes for showers like ``s``."""

    @abstractmethod
    def write(self, w: Sink, a: int, b: int, s: Showers) -> None:
        """Write ``s`` (``ecal: [b - a, X, Y, Z]`` GeV, ``energy: [b - a]`` GeV) into events ``[a, b)``
        of this format's own datasets. Raises ``ValueError`` for showers the format cannot hold."""

    def stores_theta(self, w: Sink, s: Showers, theta_is_mtheta: bool) -> bool:
        """Whether the writer stores a ``theta`` dataset: when the showers carry an angle other than
        ``extra["mtheta"]`` (an mtheta-only source stays mtheta-only)."""
        return s.theta is not None and not theta_is_mtheta


class EcalFormat(Format):
    """A 3DGAN layout: cells in ``ECAL`` ``[N, X, Y, Z]`` (GeV), conditions in datasets of their own."""

    cell_key = "ECAL"
    direct_cells = True

    def inspect(
        self,
        path: Path,
        f: h5py.File,
        ds: Mapping[str, h5py.Dataset],
        want_grid: tuple[int, int, int] | None,
    ) -> tuple[Layout, dict[str, int]]:
        """Check ``ECAL`` (rank, grid), then the conditions (:meth:`inspect_conditions`)."""
        ecal = need(path, ds, "ECAL", "cell energies [N, X, Y, Z]")
        if ecal.ndim != 4:
            raise ShowerFileError(
                path, f"expected cell energies of rank 4 [N, X, Y, Z]; found shape {ecal.shape}", "ECAL"
            )
        n = int(ecal.shape[0])
        grid = tuple(int(s) for s in ecal.shape[1:])
        expected = want_grid or self.default_grid
        if grid != expected:
            how = "declared by the file's 'grid' attribute or geometry" if want_grid else "for this format"
            raise ShowerFileError(
                path, f"cell grid {grid} differs from the expected {expected} ({how})", "ECAL"
            )
        lengths, theta_key = self.inspect_conditions(path, ds)
        layout = Layout(self, n, grid, theta_key)  # type: ignore[arg-type]  # three sizes, checked above
        return layout, {"ECAL": n, **lengths}

    @abstractmethod
    def inspect_conditions(
        self, path: Path, ds: Mapping[str, h5py.Dataset]
    ) -> tuple[dict[str, int], str | None]:
        """Check the energy and angle datasets; returns their event counts and the angle's key."""

    def read_cells(self, f: h5py.File, layout: Layout, sel: Selection) -> np.ndarray:
        """``ECAL`` of the selected events: ``[m, X, Y, Z]`` float32, GeV."""
        return as_f32(f["ECAL"][sel])
