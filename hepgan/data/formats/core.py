"""Reading shower files of any registered format: the registry, opening and checking a file, and the
two readers, :class:`ShowerFile` (ranges and indices, with every extra) and :class:`RowReader`
(scattered rows for training, with the fast positional-read path).

Nothing here knows a format's datasets: that is the :class:`~hepgan.data.formats.base.Format` objects'
business (``REGISTRY``); this module calls them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from hepgan.data.formats.angle import ANGLE
from hepgan.data.formats.base import Format, Layout, Selection, ShowerFileError, as_f32
from hepgan.data.formats.calochallenge import CALOCHALLENGE
from hepgan.data.formats.fixed25 import FIXED25
from hepgan.data.types import Showers

REGISTRY: dict[str, Format] = {spec.name: spec for spec in (FIXED25, ANGLE, CALOCHALLENGE)}
"""Every format, by name."""

FORMATS: tuple[str, ...] = tuple(REGISTRY)
"""The format names (``data.file_format``, ``--format``)."""

_DETECTION = sorted(REGISTRY.values(), key=lambda spec: spec.detect_order)

# Cell grids of the public data sets; a file may declare another grid in its ``grid`` attribute.
DEFAULT_GRID: dict[str, tuple[int, int, int]] = {
    name: spec.default_grid for name, spec in REGISTRY.items() if spec.default_grid is not None
}

# The original readers' cell thresholds (GeV): EcalEnergyTrain.GetprocData drops ECAL cells below 1e-6 for
# the fixed-angle data, AngleTrain3dGAN.GetDataAngle below 1e-4 for the variable-angle data. The
# CaloChallenge files come with their own readout threshold already applied.
DEFAULT_CELL_THRESHOLD: dict[str, float] = {name: spec.cell_threshold for name, spec in REGISTRY.items()}

# Names the geometry presets answer to when the geometry module is not importable.
_PRESET_GRIDS: dict[str, tuple[int, int, int]] = {
    "fixed25": (25, 25, 25),
    "angle51": (51, 51, 25),
    "ds2": (16, 9, 45),
    "ds3": (50, 18, 45),
}

_KNOWN_PER_EVENT = frozenset({"mtheta", "eta", "phi", "HCAL", "pdgID"})

_SUFFIXES = (".h5", ".hdf5", ".hdf")


def get_format(fmt: str) -> Format:
    """The registered :class:`Format` called ``fmt``; ``ValueError`` naming the valid ones otherwise."""
    if fmt not in REGISTRY:
        raise ValueError(f"unknown format {fmt!r}; valid: {list(FORMATS)}")
    return REGISTRY[fmt]


def cell_threshold(fmt: str, threshold: float | None = None) -> float:
    """The cell threshold (GeV) reading applies to a file of format ``fmt``: ``threshold`` itself, or the
    format's default (:data:`DEFAULT_CELL_THRESHOLD`) when it is ``None``. ``0`` means none. Raises
    ``ValueError`` for a negative or non-finite threshold or an unknown format."""
    if fmt not in DEFAULT_CELL_THRESHOLD:
        raise ValueError(
            f"unknown shower file format {fmt!r}; expected one of {list(DEFAULT_CELL_THRESHOLD)}"
        )
    if threshold is None:
        return DEFAULT_CELL_THRESHOLD[fmt]
    t = float(threshold)
    if not (np.isfinite(t) and t >= 0):
        raise ValueError(
            f"threshold: the cell threshold must be a finite energy >= 0 in GeV (0 = keep every cell, "
            f"None = the format's default {DEFAULT_CELL_THRESHOLD[fmt]:g} GeV); got {threshold!r}"
        )
    return t


def apply_cell_threshold(ecal: np.ndarray, threshold: float) -> np.ndarray:
    """Set cells below ``threshold`` (GeV) to 0 in place and return ``ecal: [N, X, Y, Z]``; 0 = no-op."""
    if threshold > 0:
        ecal[ecal < threshold] = 0.0
    return ecal


@dataclass(frozen=True)
class FileInfo:
    """What ``scan`` learns about a file from its metadata alone (no cell data read)."""

    path: Path
    format: str
    n_events: int
    grid: tuple[int, int, int]
    has_theta: bool
    extra_keys: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------
# Paths and geometry
# ---------------------------------------------------------------------------------------------------


def expand_paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand a file, a directory (its ``*.h5``/``*.hdf5`` files), a glob, or a list of these.

    Returns the files in a deterministic order (sorted within each directory or glob, list order
    otherwise). A path that matches nothing is a ``ShowerFileError``.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in _SUFFIXES and q.is_file())
            if not found:
                raise ShowerFileError(p, f"directory holds no HDF5 shower files ({', '.join(_SUFFIXES)})")
            out.extend(found)
        elif p.exists():
            out.append(p)
        elif glob.has_magic(str(item)):
            found = sorted(Path(q) for q in glob.glob(str(item)) if Path(q).is_file())
            if not found:
                raise ShowerFileError(p, "glob pattern matches no files")
            out.extend(found)
        else:
            raise ShowerFileError(p, "no such file or directory")
    return out


def shower_files_in(folder: str | os.PathLike[str]) -> list[Path]:
    """The HDF5 files (``*.h5``, ``*.hdf5``, ``*.hdf``) directly in ``folder``, sorted; ``[]`` when the
    folder does not exist."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(q for q in p.iterdir() if q.suffix.lower() in _SUFFIXES and q.is_file())


def grid_of(geometry: Any) -> tuple[int, int, int] | None:
    """Cell grid ``(X, Y, Z)`` from a ``Geometry``, a preset name, an ``(X, Y, Z)`` tuple or ``None``."""
    if geometry is None:
        return None
    if isinstance(geometry, str):
        try:
            from hepgan.data.geometry import get_geometry

            return tuple(int(s) for s in get_geometry(geometry).shape)  # type: ignore[return-value]
        except ImportError:
            if geometry in _PRESET_GRIDS:
                return _PRESET_GRIDS[geometry]
            raise ValueError(f"unknown geometry {geometry!r}; valid: {sorted(_PRESET_GRIDS)}") from None
    shape = getattr(geometry, "shape", geometry)
    try:
        grid = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(
            f"geometry must be a Geometry, a preset name or (X, Y, Z); got {geometry!r}"
        ) from None
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"geometry grid must be three positive sizes (X, Y, Z); got {grid}")
    return grid  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# Opening and inspecting a file (metadata only)
# ---------------------------------------------------------------------------------------------------


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise ShowerFileError(path, "no such file")
    if not path.is_file():
        raise ShowerFileError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ShowerFileError(path, "empty file (0 bytes); expected an HDF5 shower file")
    if not h5py.is_hdf5(path):
        raise ShowerFileError(path, "not an HDF5 file (no HDF5 signature); expected an HDF5 shower file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ShowerFileError(path, f"HDF5 file cannot be opened ({exc}); it may be truncated") from None


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    return {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}


def _all_expected() -> str:
    return "; ".join(f"{name}: {spec.expected}" for name, spec in REGISTRY.items())


def _format_from_keys(path: Path, keys: Iterable[str]) -> Format:
    keys = set(keys)
    for spec in _DETECTION:
        if spec.matches(keys):
            return spec
    if not keys:
        raise ShowerFileError(path, "empty file: it holds no datasets; expected one of: " + _all_expected())
    raise ShowerFileError(
        path,
        f"unknown format: datasets {sorted(keys)} match none of the known layouts; expected "
        + _all_expected(),
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """Format of one file from its dataset names: ``"fixed25"``, ``"angle"`` or ``"calochallenge"``."""
    p = Path(path)
    with _open_h5(p) as f:
        return _format_from_keys(p, _datasets(f)).name


def _attr_grid(f: h5py.File) -> tuple[int, int, int] | None:
    if "grid" not in f.attrs:
        return None
    g = np.asarray(f.attrs["grid"]).ravel()
    if g.shape != (3,):
        return None
    return tuple(int(v) for v in g)  # type: ignore[return-value]


def _inspect(path: Path, f: h5py.File, fmt: str | None, geometry: Any) -> Layout:
    """Check keys, ranks, grids and lengths from the metadata; no cell data are read."""
    ds = _datasets(f)
    found = _format_from_keys(path, ds)
    if fmt is not None:
        get_format(fmt)
        if fmt != found.name:
            raise ShowerFileError(
                path, f"asked to read as {fmt!r} but its datasets {sorted(ds)} are the {found.name!r} layout"
            )
    want_grid = grid_of(geometry) or _attr_grid(f)
    layout, lengths = found.inspect(path, f, ds, want_grid)
    n, theta_key = layout.n, layout.theta_key
    if theta_key is not None:
        if ds[theta_key].ndim != 1:
            raise ShowerFileError(path, f"expected angles [N] (rad); found {ds[theta_key].shape}", theta_key)
        lengths[theta_key] = int(ds[theta_key].shape[0])
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        first = next(iter(lengths))
        raise ShowerFileError(
            path,
            f"length mismatch: {first} holds {n} events but "
            + ", ".join(f"{k} holds {v}" for k, v in bad.items()),
            next(iter(bad)),
        )
    if n == 0:
        raise ShowerFileError(path, "empty file: it holds 0 events", next(iter(lengths)))
    # Everything else with one entry per event passes through Showers.extra (mtheta always does, so
    # that an mtheta-only file is written back as one). Known per-event keys must match N.
    extras = []
    for k, d in ds.items():
        if k in found.core_keys:
            continue
        if d.ndim >= 1 and d.shape[0] == n:
            extras.append(k)
        elif k in _KNOWN_PER_EVENT:
            held = d.shape[0] if d.ndim else "a scalar"
            raise ShowerFileError(path, f"length mismatch: {held} entries for {n} events", k)
    return dataclasses.replace(layout, extra_keys=tuple(sorted(extras)))


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _check_chunk(path: Path, layout: Layout, s: Showers, start: int, index: np.ndarray | None = None) -> None:
    """Cheap per-chunk sanity: finite non-negative cells, finite positive energies, finite angles.

    Events are numbered ``start + i`` in messages, or ``index[i]`` when read by index.
    """
    if index is None:
        index = np.arange(start, start + len(s))
    rng = f"events {int(index.min())}-{int(index.max())}"
    cell_key = layout.spec.cell_key
    flat = s.ecal.reshape(len(s), -1)
    # Whole-chunk min and max: NaN propagates through both, inf shows in one of them, negatives in
    # the min. Two cheap passes; the offending event is located only when something is wrong.
    lo, hi = flat.min(), flat.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        i = int(np.argmax(~np.isfinite(flat).all(axis=1)))
        raise ShowerFileError(
            path,
            f"{rng}: event {int(index[i])} has NaN or infinite cell energies; expected finite values",
            cell_key,
        )
    if lo < 0:
        mins = flat.min(axis=1)
        i = int(np.argmax(mins < 0))
        raise ShowerFileError(
            path,
            f"{rng}: event {int(index[i])} has a negative cell energy ({float(mins[i]):.4g}); "
            "expected deposits >= 0",
            cell_key,
        )
    e_bad = ~(np.isfinite(s.energy) & (s.energy > 0))
    if e_bad.any():
        i = int(np.argmax(e_bad))
        raise ShowerFileError(
            path,
            f"{rng}: event {int(index[i])} has primary energy {float(s.energy[i])!r}; "
            "expected a finite value > 0",
            layout.spec.energy_key,
        )
    if s.theta is not None:
        t_bad = ~np.isfinite(s.theta)
        if t_bad.any():
            i = int(np.argmax(t_bad))
            raise ShowerFileError(
                path,
                f"{rng}: event {int(index[i])} has a non-finite angle; expected radians",
                layout.theta_key,
            )


_T = TypeVar("_T", Showers, np.ndarray)


def _read_rows(read: Callable[[Selection], _T], rows: np.ndarray) -> _T:
    """``read`` of ``rows`` (sorted, unique, at least one): one contiguous hyperslab, indexed in memory,
    beats an HDF5 point selection unless the span is mostly unused."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo <= 4 * rows.size:
        return read(slice(lo, hi))[rows - lo]
    return read(rows)


class ShowerFile:
    """An open shower file: metadata checked on open, events read by range or index.

    Use as a context manager (``with ShowerFile(path) as f: f.read(0, 100)``) or call ``close()``.
    ``threshold``: cells below it (GeV) read as 0; ``None`` = the format's default
    (:data:`DEFAULT_CELL_THRESHOLD`); ``0`` (the default) = the stored values unchanged.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fmt: str | None = None,
        geometry: Any = None,
        threshold: float | None = 0.0,
    ) -> None:
        self.path = Path(path)
        self._f = _open_h5(self.path)
        try:
            self._layout = _inspect(self.path, self._f, fmt, geometry)
            self.threshold = cell_threshold(self._layout.spec.name, threshold)
        except BaseException:
            self._f.close()
            raise

    def __enter__(self) -> ShowerFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HDF5 file."""
        self._f.close()

    def __len__(self) -> int:
        return self._layout.n

    @property
    def format(self) -> str:
        """``"fixed25"``, ``"angle"`` or ``"calochallenge"``."""
        return self._layout.spec.name

    @property
    def layout(self) -> Layout:
        """What opening the file learned from its metadata (format object, events, grid, keys)."""
        return self._layout

    @property
    def grid(self) -> tuple[int, int, int]:
        """Cell grid ``(X, Y, Z)``."""
        return self._layout.grid

    @property
    def has_theta(self) -> bool:
        """Whether ``Showers.theta`` will be filled."""
        return self._layout.theta_key is not None

    def info(self) -> FileInfo:
        """The file's ``FileInfo`` (metadata only)."""
        lay = self._layout
        extra = set(lay.extra_keys) | set(lay.spec.derived_extras)
        return FileInfo(self.path, lay.spec.name, lay.n, lay.grid, self.has_theta, tuple(sorted(extra)))

    def read(self, start: int = 0, stop: int | None = None, *, check: bool = True) -> Showers:
        """Events ``[start, stop)`` as ``Showers`` (``ecal: [n, X, Y, Z] GeV``, ``energy: [n] GeV``,
        ``theta: [n] rad`` or ``None``); checked for NaN/inf/negative values unless ``check=False``."""
        n = self._layout.n
        stop = n if stop is None else stop
        if not (0 <= start <= stop <= n):
            raise ValueError(f"{self.path}: event range [{start}, {stop}) outside the file's {n} events")
        s = self._take(slice(start, stop))
        if check and len(s):
            _check_chunk(self.path, self._layout, s, start)
        apply_cell_threshold(s.ecal, self.threshold)  # after the check: a negative cell must still be seen
        return s

    def take(self, indices: Sequence[int] | np.ndarray, *, check: bool = True) -> Showers:
        """Events at ``indices`` (any order, repeats allowed), returned in that order."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        n = self._layout.n
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{self.path}: indices outside [0, {n})")
        if idx.size == 0:
            return self._take(slice(0, 0))
        uniq, inverse = np.unique(idx, return_inverse=True)
        s = _read_rows(self._take, uniq)
        if check:
            _check_chunk(self.path, self._layout, s, int(uniq[0]), uniq)
        apply_cell_threshold(s.ecal, self.threshold)
        return s[inverse]

    def _take(self, sel: Selection) -> Showers:
        lay, f = self._layout, self._f
        ecal = lay.spec.read_cells(f, lay, sel)
        energy, extra = lay.spec.read_energy(f, lay, sel)
        theta = None
        if lay.theta_key is not None:
            theta = as_f32(f[lay.theta_key][sel])
        for k in lay.extra_keys:
            extra[k] = np.asarray(f[k][sel])
        return Showers(ecal=ecal, energy=energy, theta=theta, extra=extra)


class RowReader:
    """Scattered rows of one shower file, as training reads them: cells, primary energy and angle only.

    Shuffled training reads a few scattered events per file and batch; HDF5 point selections cost far
    more than the bytes they move. So the per-event conditions (primary energy, angle: a few bytes per
    event) are read once on opening, checked and kept, and when the format's cell dataset holds the
    cells as they are read (:attr:`Format.direct_cells`: the 3DGAN ``ECAL``) and is stored contiguously,
    unfiltered, in floats (the library writers' default, and the simulated-data cache), its rows are
    read with positional reads (``preadv``, one per run of consecutive rows) straight into the answer
    (``direct``). Otherwise (compressed files: the command-line writers' default) the rows are read
    through the format (:meth:`Format.read_cells`, one hyperslab or point selection).
    Positional reads rather than a memory map: the bytes then stay in the OS page cache, outside the
    process, whose resident memory stays at the batches in flight however much of the file an epoch
    touches (batch schedulers count mapped pages as the job's memory). Every event's cells are checked
    the first time they are read (finite, non-negative).

    The file is opened and validated as a :class:`ShowerFile` (``fmt``, ``geometry`` as there); a direct
    reader then holds only a file descriptor, no HDF5 handle. No cell threshold is applied.
    """

    def __init__(self, path: str | os.PathLike[str], *, fmt: str | None = None, geometry: Any = None) -> None:
        self._fd: int | None = None
        self._file = ShowerFile(path, fmt=fmt, geometry=geometry)
        self.path = self._file.path
        self.layout = lay = self._file.layout
        spec, f = lay.spec, self._file._f
        try:
            self.energy, _ = spec.read_energy(f, lay, slice(None))
            self.theta = None if lay.theta_key is None else as_f32(f[lay.theta_key][()])
            bad = ~(np.isfinite(self.energy) & (self.energy > 0))
            if bad.any():
                raise ShowerFileError(
                    self.path,
                    f"event {int(np.argmax(bad))} has primary energy {float(self.energy[bad][0])!r}; "
                    "expected a finite value > 0",
                    spec.energy_key,
                )
            if self.theta is not None and not np.isfinite(self.theta).all():
                i = int(np.argmax(~np.isfinite(self.theta)))
                raise ShowerFileError(
                    self.path, f"event {i} has a non-finite angle; expected radians", lay.theta_key
                )
            cells = f[spec.cell_key]
            plist = cells.id.get_create_plist()
            offset = cells.id.get_offset()
            direct = (
                spec.direct_cells
                and plist.get_layout() == h5py.h5d.CONTIGUOUS
                and plist.get_nfilters() == 0
                and plist.get_external_count() == 0
                and offset is not None
                and cells.dtype.kind == "f"
                and hasattr(os, "preadv")
            )
            self.direct: bool = direct
            self._shape: tuple[int, ...] = tuple(cells.shape)
            self._dtype = cells.dtype
            self._offset = int(offset) if direct else 0
            self._row_bytes = int(np.prod(self._shape[1:])) * cells.dtype.itemsize
            self._checked = np.zeros(lay.n, bool)
            if direct:
                self._fd = os.open(self.path, os.O_RDONLY)
        except BaseException:
            self._file.close()
            raise
        if direct:  # everything needed is in memory or one read away: no HDF5 handle to hold
            self._file.close()

    def __len__(self) -> int:
        return self.layout.n

    @property
    def format(self) -> str:
        """The file's format name."""
        return self.layout.spec.name

    def _pread_rows(self, rows: np.ndarray) -> np.ndarray:
        """Cells of ``rows`` (sorted, unique) as ``[k, X, Y, Z]`` in the file's dtype."""
        assert self._fd is not None
        out = np.empty((rows.size, *self._shape[1:]), self._dtype)
        raw = out.reshape(-1).view(np.uint8)
        rb = self._row_bytes
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, rows.size], strict=True):
            view = memoryview(raw[a * rb : b * rb])  # type: ignore[arg-type]  # ndarray is a buffer
            pos = self._offset + int(rows[a]) * rb
            while view.nbytes:  # a short read (signals, network file systems) continues where it stopped
                got = os.preadv(self._fd, [view], pos)
                if got <= 0:
                    raise ShowerFileError(
                        self.path,
                        f"file ends before event {int(rows[b - 1])}; truncated?",
                        self.layout.spec.cell_key,
                    )
                view, pos = view[got:], pos + got
        return out

    def take(self, rows: np.ndarray) -> Showers:
        """Events at ``rows`` (sorted, unique ints in ``[0, len)``): ``ecal [k, X, Y, Z]`` float32 GeV,
        ``energy [k]`` float32 GeV, ``theta [k]`` float32 rad or ``None``. No extras, no threshold."""
        rows = np.asarray(rows, dtype=np.int64)
        lay = self.layout
        if self.direct:
            if self._fd is None:
                raise ValueError(f"{self.path}: reader is closed")
            ecal = as_f32(self._pread_rows(rows)) if rows.size else np.zeros((0, *lay.grid), np.float32)
        elif rows.size:
            ecal = _read_rows(lambda sel: lay.spec.read_cells(self._file._f, lay, sel), rows)
        else:
            ecal = lay.spec.read_cells(self._file._f, lay, slice(0, 0))
        new = ~self._checked[rows]
        if new.any():
            flat = ecal[new].reshape(int(new.sum()), -1)
            bad = ~np.isfinite(flat.sum(axis=1)) | (flat.min(axis=1) < 0)
            if bad.any():
                i = int(rows[new][np.argmax(bad)])
                raise ShowerFileError(
                    self.path,
                    f"event {i} has NaN, infinite or negative cell energies; expected >= 0",
                    lay.spec.cell_key,
                )
            self._checked[rows[new]] = True
        theta = None if self.theta is None else self.theta[rows]
        return Showers(ecal=ecal, energy=self.energy[rows], theta=theta)

    def close(self) -> None:
        """Close the file descriptor and the HDF5 file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._file._f.id.valid:
            self._file.close()

    def __del__(self) -> None:
        # A reader dropped without close(): do not leak the descriptor.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def read_file(
    path: str | os.PathLike[str],
    *,
    start: int = 0,
    stop: int | None = None,
    fmt: str | None = None,
    geometry: Any = None,
    check: bool = True,
    threshold: float | None = 0.0,
) -> Showers:
    """Read events ``[start, stop)`` of one file as ``Showers`` (``ecal: [n, X, Y, Z] GeV``,
    ``energy: [n] GeV``, ``theta: [n] rad`` or ``None``).

    ``fmt`` forces a format (else detected from the keys); ``geometry`` (``Geometry``, preset name or
    ``(X, Y, Z)``) supplies the grid of a CaloChallenge file that lacks our ``grid`` attribute;
    ``threshold`` (GeV): cells below it read as 0, ``None`` = the format's default
    (:data:`DEFAULT_CELL_THRESHOLD`), ``0`` (the default) = the stored values unchanged.
    """
    with ShowerFile(path, fmt=fmt, geometry=geometry, threshold=threshold) as f:
        return f.read(start, stop, check=check)


def iter_showers(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    chunk: int = 1000,
    fmt: str | None = None,
    geometry: Any = None,
    check: bool = True,
    threshold: float | None = 0.0,
) -> Iterator[Showers]:
    """Stream ``Showers`` of at most ``chunk`` events from a file, directory, glob or list of them.

    Files are read in ``expand_paths`` order, one open at a time; a chunk never spans two files
    (the last chunk of a file may be shorter). Memory stays at one chunk. ``threshold`` as for
    :func:`read_file` (each file gets its own format's default when ``None``).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    for path in expand_paths(paths):
        with ShowerFile(path, fmt=fmt, geometry=geometry, threshold=threshold) as f:
            for start in range(0, len(f), chunk):
                yield f.read(start, min(start + chunk, len(f)), check=check)


def scan(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, geometry: Any = None
) -> list[FileInfo]:
    """``FileInfo`` (path, format, events, grid, angle presence) of every file, from metadata only."""
    out = []
    for path in expand_paths(paths):
        with ShowerFile(path, geometry=geometry) as f:
            out.append(f.info())
    return out
