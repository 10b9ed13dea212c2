"""Where training events come from: the ``ShowerSource`` protocol, its implementations, ``open_source``.

A source is a fixed, indexable set of showers. The training :class:`~hepgan.data.pipeline.Pipeline`
asks it for events by index (``read(indices)``) and never cares whether they come from the embedded
simulator or from 3DGAN HDF5 files. Every source describes itself (``describe()``) for the run manifest.

- :class:`SimulatedSource`: ``n`` events of :func:`hepgan.data.simulate.simulate`, generated once (in
  chunks via ``iter_simulate``). Small sets are kept in memory; sets above ``in_memory_max_gb`` are
  written once into an on-disk cache of HDF5 files (:mod:`hepgan.data.cache`) and their rows are read
  from there on demand. Event ``i`` depends only on ``(seed, start + i)``.
- :class:`FileSource`: HDF5 files in any format :mod:`hepgan.data.formats` reads (3DGAN fixed-angle,
  3DGAN variable-angle, CaloChallenge). Random access: the requested indices are sorted and grouped per
  file and read through a ``formats.RowReader`` kept open per file (conditions kept in memory;
  uncompressed 3DGAN files by positional reads of their cell dataset). With ``cache=True`` the files
  that cannot be read directly are kept in RAM (decoded) after their first touch, within a memory
  budget.
- :class:`SubsetSource`: a fixed selection of another source's events (train/reference splits).
- :func:`open_source`: a :class:`~hepgan.data.config.DataConfig` -> ``Sources(train, reference)``; the
  reference set is for physics validation and never shares an event with the training set.

The data config lives in :mod:`hepgan.data.config`, the file readers in :mod:`hepgan.data.formats`, the
file hashes of ``describe()`` in :mod:`hepgan.data.hashing`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from hepgan.data import cache as sim_cache
from hepgan.data import formats
from hepgan.data.config import KINDS, DataConfig
from hepgan.data.geometry import get_geometry
from hepgan.data.hashing import file_sha256
from hepgan.data.simulate import EnergySpec, SimulatorConfig, default_workers, iter_simulate, parse_theta
from hepgan.data.types import Showers

# Reference events of a simulated source are events [REFERENCE_START, REFERENCE_START + n_reference) of the
# same seed's stream: the contract "event i depends only on (seed, i)" then guarantees that they never
# coincide with training events [0, n_events), for any n_events below this offset.
REFERENCE_START = 1_000_000_000

# Hold-out selection of reference events from files uses its own fixed seed so the reference set is the
# same for every training seed (runs of a sweep are validated against identical events).
_SPLIT_SEED = 0x3D6A9


# ----------------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------------


@runtime_checkable
class ShowerSource(Protocol):
    """A fixed, indexable set of showers (see the module docstring)."""

    def __len__(self) -> int:
        """Number of events."""
        ...

    @property
    def grid(self) -> tuple[int, int, int]:
        """Cell grid ``(X, Y, Z)``."""
        ...

    @property
    def has_theta(self) -> bool:
        """Whether events carry an incidence angle (else ``theta`` is ``None``, meaning ``pi/2``)."""
        ...

    def read(self, indices: np.ndarray) -> Showers:
        """Events ``indices`` (``[k]`` ints in ``[0, len)``, any order, repeats allowed), in that order.

        A source whose ``read`` always returns new arrays that it keeps no reference to may say so with a
        class attribute ``fresh_arrays = True``; the pipeline then preprocesses them in place.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance (files with sizes and sha256, or simulator settings and seed)."""
        ...


def _check_indices(indices: np.ndarray | Sequence[int], n: int, who: str) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(
            f"{who}.read: indices must be a 1-D integer array; got dtype {idx.dtype}, shape {idx.shape}"
        )
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{who}.read: indices must lie in [0, {n}); got min {idx.min()}, max {idx.max()}")
    return idx


def _empty_like(grid: tuple[int, int, int], has_theta: bool) -> Showers:
    return Showers(
        ecal=np.zeros((0, *grid), np.float32),
        energy=np.zeros(0, np.float32),
        theta=np.zeros(0, np.float32) if has_theta else None,
    )


# ----------------------------------------------------------------------------------------------------
# In memory and simulated
# ----------------------------------------------------------------------------------------------------


class ArraySource:
    """Showers already in memory, as a source (tests, small data sets, generated samples).

    ``extra`` arrays of the showers are dropped: the pipeline reads only ``ecal``, ``energy``, ``theta``.
    """

    fresh_arrays = True  # read() indexes with an integer array: always a copy

    def __init__(self, showers: Showers, provenance: dict[str, Any] | None = None) -> None:
        self.showers = Showers(showers.ecal, showers.energy, showers.theta)
        self._provenance = provenance or {"kind": "array"}

    def __len__(self) -> int:
        return len(self.showers)

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.showers.grid

    @property
    def has_theta(self) -> bool:
        return self.showers.theta is not None

    def read(self, indices: np.ndarray) -> Showers:
        """Events ``indices`` in the given order: ``ecal [k, X, Y, Z]`` GeV, ``energy [k]`` GeV, ``theta``."""
        return self.showers[_check_indices(indices, len(self), type(self).__name__)]

    def describe(self) -> dict[str, Any]:
        return {**self._provenance, "n_events": len(self), "grid": list(self.grid)}


class SimulatedSource:
    """``n`` events of the embedded simulator, generated once on first use.

    Event ``i`` of this source is simulator event ``start + i`` of stream ``seed``, so two sources with the
    same seed and disjoint ``[start, start + n)`` ranges never share an event.

    Where the events live depends on their size, ``n * (X*Y*Z + 2) * 4`` bytes:

    - up to ``in_memory_max_gb``: generated on the first ``read`` (thread-safe) by streaming
      ``iter_simulate`` into preallocated arrays, and kept in memory; each process of a multi-process run
      generates its own identical copy.
    - above: written once into the on-disk cache (:func:`hepgan.data.cache.ensure`: HDF5 files in the
      3DGAN layout under ``cache_dir``, shared by every process, job and later run with the same
      settings), on the first ``read`` unless :meth:`prepare` was called; rows are then read from those
      files on demand (:class:`FileSource`), so the process holds only what ``read`` returns. The values
      are bitwise those of the in-memory path.

    Args:
        n: number of events.
        energy: primary energy spec (``"uniform:10:500"``, ...), see :func:`hepgan.data.simulate.simulate`.
        theta_deg: fixed angle or ``(lo, hi)`` range in degrees, or a string ``"90"`` / ``"60:120"``
            (see :func:`hepgan.data.simulate.parse_theta`).
        config: simulator settings (``None`` = defaults, fixed25 geometry).
        seed: simulator seed.
        start: index of the first event in the seed's stream.
        workers: simulator processes (0 = one per usable core).
        chunk: events per ``iter_simulate`` chunk (in-memory path).
        progress: show the simulator's progress bar while generating.
        cache_dir: folder of the on-disk cache (``None``: :func:`hepgan.data.cache.default_cache_dir`).
        in_memory_max_gb: the largest set kept in memory; larger sets use the disk cache (0 = always).

    Raises:
        ValueError: ``n <= 0``; an in-memory set larger than 80 % of this machine's memory; a disk-cached
            set larger than the free space of the cache's file system (checked unless the set is there).
    """

    fresh_arrays = True  # read() indexes with an integer array or reads into new arrays: always a copy

    def __init__(
        self,
        n: int,
        energy: Any = "uniform:10:500",
        theta_deg: float | tuple[float, float] | str = 90.0,
        config: Any = None,
        seed: int = 0,
        start: int = 0,
        workers: int = 1,
        chunk: int = 2048,
        progress: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        in_memory_max_gb: float = 1.0,
    ) -> None:
        if int(n) <= 0:
            raise ValueError(f"SimulatedSource: n must be > 0; got {n}")
        if int(workers) < 0:
            raise ValueError(f"SimulatedSource: workers must be >= 0 (0 = one per core); got {workers}")
        self.n = int(n)
        self.energy = energy
        self.theta_deg = parse_theta(theta_deg)
        self.config = config if config is not None else SimulatorConfig()
        self.seed, self.start, self.chunk = int(seed), int(start), int(chunk)
        self.workers = int(workers) or default_workers()
        self.progress = bool(progress)
        self._grid = tuple(int(g) for g in self.config.grid_geometry().shape)
        self._set = sim_cache.SimulatedSet(
            n=self.n,
            start=self.start,
            seed=self.seed,
            energy=EnergySpec.coerce(energy),
            theta_deg=self.theta_deg,
            config=self.config,
        )
        need = self._set.nbytes
        self.on_disk = need > float(in_memory_max_gb) * 1e9
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else sim_cache.default_cache_dir()
        if self.on_disk:
            if not sim_cache.is_complete(self._set, self.cache_path):
                sim_cache.check_space(self._set, self.cache_dir)
        else:
            ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
            if ram and need > 0.8 * ram:
                raise ValueError(
                    f"SimulatedSource: {self.n} events of grid {self._grid} need {need / 1e9:.1f} GB in "
                    f"memory, more than 80 % of this machine's {ram / 1e9:.1f} GB; lower "
                    "data.in_memory_max_gb so that they are cached on disk and streamed"
                )
        self._data: Showers | None = None
        self._files: FileSource | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    @property
    def grid(self) -> tuple[int, int, int]:
        return self._grid  # type: ignore[return-value]

    @property
    def has_theta(self) -> bool:
        return True

    @property
    def cache_path(self) -> Path:
        """The folder of this set in the disk cache (whether or not it is used or exists yet)."""
        return sim_cache.cache_path(self._set, self.cache_dir)

    def prepare(self) -> Path | None:
        """Make the events now rather than on the first ``read``: write the disk cache (or find it
        complete) and return its folder, or simulate into memory and return ``None``."""
        if self.on_disk:
            return self._file_source().paths[0].parent
        self.materialise()
        return None

    def _file_source(self) -> FileSource:
        with self._lock:
            if self._files is None:
                folder = sim_cache.ensure(
                    self._set, self.cache_dir, workers=self.workers, progress=self.progress
                )
                files = FileSource(sim_cache.files_of(folder), cache=False)
                if len(files) != self.n or files.grid != self.grid:
                    files.close()
                    raise ValueError(
                        f"simulated-data cache {folder}: holds {len(files)} events of grid "
                        f"{files.grid}, expected {self.n} of {self.grid}; delete the folder to rebuild it"
                    )
                self._files = files
            return self._files

    def materialise(self) -> Showers:
        """All ``n`` events: ``ecal [n, X, Y, Z]`` GeV, ``energy [n]`` GeV, ``theta [n]`` rad. Generated once
        and kept for an in-memory set; read from the disk cache (a new copy each call) otherwise."""
        if self.on_disk:
            return self.read(np.arange(self.n))
        with self._lock:
            if self._data is None:
                self._data = self._generate()
            return self._data

    def _generate(self) -> Showers:
        ecal = np.empty((self.n, *self._grid), np.float32)
        energy = np.empty(self.n, np.float32)
        theta = np.empty(self.n, np.float32)
        pos = 0
        for part in iter_simulate(
            self.n,
            energy=self.energy,
            theta_deg=self.theta_deg,
            config=self.config,
            seed=self.seed,
            start=self.start,
            workers=self.workers,
            progress=self.progress,
            chunk=min(self.chunk, self.n),
        ):
            k = len(part)
            ecal[pos : pos + k] = part.ecal
            energy[pos : pos + k] = part.energy
            theta[pos : pos + k] = part.theta_or_normal()
            pos += k
        if pos != self.n:
            raise RuntimeError(f"SimulatedSource: the simulator returned {pos} events, expected {self.n}")
        return Showers(ecal=ecal, energy=energy, theta=theta)

    def read(self, indices: np.ndarray) -> Showers:
        """Events ``indices`` in the given order: ``ecal [k, X, Y, Z]`` GeV, ``energy [k]`` GeV,
        ``theta [k]`` rad."""
        idx = _check_indices(indices, self.n, "SimulatedSource")
        if not self.on_disk:
            return self.materialise()[idx]
        got = self._file_source().read(idx)
        # fixed25 files at normal incidence store no angle; the simulator's angle there is pi/2 exactly
        return Showers(got.ecal, got.energy, got.theta_or_normal())

    def close(self) -> None:
        """Close the cache files (they reopen on the next read); an in-memory set is kept."""
        with self._lock:
            if self._files is not None:
                self._files.close()

    def describe(self) -> dict[str, Any]:
        c = self.config
        cfg = dataclasses.asdict(c) if dataclasses.is_dataclass(c) and not isinstance(c, type) else repr(c)
        energy = self.energy if isinstance(self.energy, str | int | float) else repr(self.energy)
        return _jsonable(
            {
                "kind": "simulated",
                "n_events": self.n,
                "grid": list(self.grid),
                "seed": self.seed,
                "start": self.start,
                "energy": energy,
                "theta_deg": list(self.theta_deg),
                "simulator": cfg,
            }
        )


class SubsetSource:
    """A fixed selection ``indices`` of another source; event ``i`` is ``parent[indices[i]]``.

    ``note`` (JSON-able) says how the selection was made and goes into :meth:`describe` together with a
    sha256 of the index array, so a manifest pins the exact events.
    """

    def __init__(self, parent: ShowerSource, indices: np.ndarray, note: dict[str, Any] | None = None) -> None:
        self.parent = parent
        self.indices = _check_indices(indices, len(parent), "SubsetSource")
        self.note = note or {}

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def fresh_arrays(self) -> bool:
        """Whether ``read`` returns new arrays: as the parent's."""
        return bool(getattr(self.parent, "fresh_arrays", False))

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.parent.grid

    @property
    def has_theta(self) -> bool:
        return self.parent.has_theta

    def read(self, indices: np.ndarray) -> Showers:
        """Events ``indices`` of the subset in the given order (see :meth:`ShowerSource.read`)."""
        return self.parent.read(self.indices[_check_indices(indices, len(self), "SubsetSource")])

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "subset",
            "n_events": len(self),
            "indices_sha256": hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest(),
            **self.note,
            "of": self.parent.describe(),
        }


# ----------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------


class FileSource:
    """Events of HDF5 shower files, with efficient random access.

    The files (``formats.expand_paths`` order) are opened once each (``formats.ShowerFile``: format,
    event count, grid and angle checked from the metadata) and concatenated; global index ``i`` is event
    ``i - offsets[f]`` of file ``f``. ``read(indices)`` groups the indices per file, reads each file's
    share in one go and returns the events in the requested order. Handles stay open (at most
    ``max_open`` at once, least recently used closed first), so a shuffled batch costs no file opens.
    Each file is read by a :class:`hepgan.data.formats.RowReader` (conditions held in memory; cells of
    uncompressed 3DGAN files by positional reads of the contiguous ``ECAL`` dataset, far faster than an
    HDF5 point selection; other files through their format's reader).

    Args:
        paths: files, directories or globs (see ``hepgan.data.formats.expand_paths``).
        cache: keep each file's decoded events in RAM after its first read, while the total stays under
            ``cache_max_gb``; later reads of a cached file are memory copies. Files beyond the budget
            are read from disk as without the cache. Files read directly (uncompressed 3DGAN layouts)
            are never copied into it: the OS page cache already keeps them in memory in their final
            form. The cache pays off for compressed or chunked files, whose random rows
            cost a chunk decompression each (slower than simulating), and for CaloChallenge files.
        cache_max_gb: RAM budget of the cache (per process).
        fmt: force a format name (default: detected per file).
        geometry: grid for CaloChallenge files without a ``grid`` attribute (preset name or ``(X, Y, Z)``).
        max_open: most files held open at once.
        cell_threshold: cells below it (GeV) are read as 0; ``None`` = each file's format default
            (``formats.DEFAULT_CELL_THRESHOLD``), 0 (the default) = the stored values.

    Raises:
        hepgan.data.formats.ShowerFileError: missing, unreadable or malformed files (names file and key).
        ValueError: files with different cell grids, or some with and some without an angle.

    ``describe()`` lists each file with format, events, bytes and sha256. Hashing reads every byte
    (about 1-2 s per GB) and is done only when ``describe()`` is called, then cached (see
    :func:`hepgan.data.hashing.file_sha256`); call it once, on one process, for the manifest.
    """

    fresh_arrays = True  # read() assembles every answer in newly allocated arrays

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        cache: bool = False,
        cache_max_gb: float = 8.0,
        fmt: str | None = None,
        geometry: Any = None,
        max_open: int = 64,
        cell_threshold: float | None = 0.0,
    ) -> None:
        self.paths = formats.expand_paths(paths)
        if not self.paths:
            raise ValueError("FileSource: no input files given")
        self.fmt, self.geometry, self.max_open = fmt, geometry, max(1, int(max_open))
        self._open: OrderedDict[int, formats.RowReader] = OrderedDict()
        self._lock = threading.RLock()
        self.infos = []
        for path in self.paths:  # formats validates every file's layout from its metadata
            with formats.ShowerFile(path, fmt=fmt, geometry=geometry) as h:
                self.infos.append(h.info())
        grids = {tuple(i.grid) for i in self.infos}
        if len(grids) != 1:
            detail = ", ".join(f"{i.path}: {tuple(i.grid)}" for i in self.infos)
            raise ValueError(f"FileSource: all files must share one cell grid; found {detail}")
        thetas = {bool(i.has_theta) for i in self.infos}
        if len(thetas) != 1:
            without = [str(i.path) for i in self.infos if not i.has_theta]
            raise ValueError(
                f"FileSource: some files carry an incidence angle and some do not (without: {without}); "
                "use files of one kind"
            )
        self.cell_thresholds = [formats.cell_threshold(i.format, cell_threshold) for i in self.infos]
        self._grid: tuple[int, int, int] = tuple(int(g) for g in grids.pop())  # type: ignore[assignment]
        self._has_theta = thetas.pop()
        self.counts = np.array([int(i.n_events) for i in self.infos], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.cache = bool(cache)
        self.cache_max_bytes = int(cache_max_gb * 1e9)
        self._cache: dict[int, Showers] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def grid(self) -> tuple[int, int, int]:
        return self._grid

    @property
    def has_theta(self) -> bool:
        return self._has_theta

    def _handle(self, f: int) -> formats.RowReader:
        with self._lock:
            h = self._open.get(f)
            if h is None:
                while len(self._open) >= self.max_open:
                    self._open.popitem(last=False)[1].close()
                h = formats.RowReader(self.paths[f], fmt=self.infos[f].format, geometry=self.geometry)
                self._open[f] = h
            self._open.move_to_end(f)
            return h

    def close(self) -> None:
        """Close the open files (they reopen on the next read) and drop the cache."""
        with self._lock:
            while self._open:
                self._open.popitem()[1].close()
            self._cache.clear()
            self._cached_bytes = 0

    def _cached(self, f: int) -> Showers | None:
        if not self.cache:
            return None
        with self._lock:
            hit = self._cache.get(f)
            if hit is not None:
                return hit
            if self._handle(f).direct:
                return None  # the OS page cache already holds these bytes in their final form
            need = int(self.counts[f]) * (int(np.prod(self._grid)) + 2) * 4
            if self._cached_bytes + need > self.cache_max_bytes:
                return None
            with formats.ShowerFile(self.paths[f], fmt=self.fmt, geometry=self.geometry) as h:
                s = h.read()
            data = Showers(s.ecal, s.energy, s.theta)  # extras are not needed for training
            self._cache[f] = data
            self._cached_bytes += need
            return data

    def _read_rows(self, f: int, rows: np.ndarray) -> Showers:
        """Rows ``rows`` (sorted, unique, file-local) of file ``f``."""
        data = self._cached(f)
        if data is not None:
            s = data[rows]
        else:
            with self._lock:  # h5py serialises anyway; the lock keeps the handle from closing under us
                s = self._handle(f).take(rows)
        # both branches return fresh arrays (fancy indexing, new reads), so thresholding in place is safe
        formats.apply_cell_threshold(s.ecal, self.cell_thresholds[f])
        return Showers(s.ecal, s.energy, s.theta)

    def read(self, indices: np.ndarray) -> Showers:
        """Events ``indices`` in the given order: ``ecal [k, X, Y, Z]`` GeV, ``energy [k]`` GeV, ``theta``
        ``[k]`` rad (``None`` for files without an angle). Extra per-event datasets are not returned."""
        idx = _check_indices(indices, len(self), "FileSource")
        if idx.size == 0:
            return _empty_like(self._grid, self._has_theta)
        # Sorted unique rows give one forward pass per file; each file's events are then scattered
        # straight to their places in the answer (one copy), or via the unique rows when repeated.
        order = np.argsort(idx, kind="stable")
        uniq = idx[order]
        repeated = uniq.size > 1 and bool((np.diff(uniq) == 0).any())
        if repeated:
            uniq, inverse = np.unique(idx, return_inverse=True)
            dest = np.arange(uniq.size)
        else:
            dest = order
        file_of = np.searchsorted(self.offsets, uniq, side="right") - 1
        cuts = np.flatnonzero(np.diff(file_of)) + 1
        ecal = np.empty((uniq.size, *self._grid), np.float32)
        energy = np.empty(uniq.size, np.float32)
        theta = np.empty(uniq.size, np.float32) if self._has_theta else None
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, uniq.size], strict=True):
            f = int(file_of[a])
            part = self._read_rows(f, uniq[a:b] - self.offsets[f])
            ecal[dest[a:b]] = part.ecal
            energy[dest[a:b]] = part.energy
            if theta is not None:
                theta[dest[a:b]] = part.theta
        out = Showers(ecal, energy, theta)
        return out[inverse] if repeated else out

    def describe(self) -> dict[str, Any]:
        files = [
            {
                "path": str(p),
                "format": info.format,
                "n_events": int(info.n_events),
                "size_bytes": p.stat().st_size,
                "sha256": file_sha256(p),
            }
            for p, info in zip(self.paths, self.infos, strict=True)
        ]
        return {
            "kind": "files",
            "n_events": len(self),
            "grid": list(self.grid),
            "has_theta": self.has_theta,
            "files": files,
        }


# ----------------------------------------------------------------------------------------------------
# From the configuration
# ----------------------------------------------------------------------------------------------------


class Sources(NamedTuple):
    """The training set and the held-out reference set for validation (disjoint)."""

    train: ShowerSource
    reference: ShowerSource


def open_source(cfg: DataConfig, *, reference_start: int | None = None) -> Sources:
    """Build the ``(train, reference)`` sources a :class:`DataConfig` describes.

    - ``simulated``: train = events ``[0, n_events)`` of stream ``seed``; reference = events
      ``[R, R + n_reference)`` of the same stream with ``R = reference_start`` (default and smallest
      allowed: ``REFERENCE_START``), so the two are disjoint by construction. A later ``R`` gives a fresh
      reference sample that the run's validation never saw.
    - ``files`` with ``reference_paths``: train = ``paths``, reference = ``reference_paths`` (files in both
      lists are an error).
    - ``files`` without: a fixed random ``reference_fraction`` of the events of ``paths`` (seed
      ``_SPLIT_SEED``, the same for every training seed) is the reference; the rest (at most
      ``max_events``) is the training set.

    Raises:
        ValueError: a field with an invalid value (the message names it) or mismatched grids.
    """
    if cfg.kind == "simulated":
        start = REFERENCE_START if reference_start is None else int(reference_start)
        if start < REFERENCE_START:
            raise ValueError(
                f"open_source: reference_start must be >= {REFERENCE_START} (after every training event); "
                f"got {reference_start}"
            )
        return _open_simulated(cfg, start)
    if cfg.kind == "files":
        if reference_start is not None:
            raise ValueError("open_source: reference_start applies to simulated data only; data.kind='files'")
        return _open_files(cfg)
    raise ValueError(f"data.kind: expected one of {list(KINDS)}; got {cfg.kind!r}")


def _open_simulated(cfg: DataConfig, reference_start: int) -> Sources:
    get_geometry(cfg.geometry)  # a clear error for an unknown name before anything else
    for name in ("n_events", "n_reference"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"data.{name}: expected a positive integer; got {v!r}")
    if cfg.n_events > REFERENCE_START:
        raise ValueError(f"data.n_events: at most {REFERENCE_START} simulated events; got {cfg.n_events}")
    try:
        theta = parse_theta(cfg.theta_deg)
    except ValueError as exc:
        raise ValueError(f"data.theta_deg: {exc}") from None
    overrides = dict(cfg.simulator or {})
    try:
        sim_cfg = SimulatorConfig.for_geometry(cfg.geometry, **overrides)
    except TypeError as exc:
        fields = [f.name for f in dataclasses.fields(SimulatorConfig)]
        raise ValueError(
            f"data.simulator: unknown simulator setting in {overrides}; valid: {fields}"
        ) from exc

    if not isinstance(cfg.workers, int) or cfg.workers < 1:
        raise ValueError(f"data.workers: expected an integer >= 1; got {cfg.workers!r}")
    limit = cfg.in_memory_max_gb
    if not isinstance(limit, int | float) or not limit >= 0:
        raise ValueError(f"data.in_memory_max_gb: expected a number >= 0; got {limit!r}")

    def make(n: int, start: int) -> SimulatedSource:
        return SimulatedSource(
            n,
            energy=cfg.energy,
            theta_deg=theta,
            config=sim_cfg,
            seed=cfg.seed,
            start=start,
            workers=cfg.workers,
            cache_dir=cfg.cache_dir,
            in_memory_max_gb=float(limit),
        )

    return Sources(train=make(cfg.n_events, 0), reference=make(cfg.n_reference, reference_start))


def _open_files(cfg: DataConfig) -> Sources:
    if not cfg.paths:
        raise ValueError("data.paths: kind='files' needs at least one file, directory or glob")
    if cfg.max_events is not None and (not isinstance(cfg.max_events, int) or cfg.max_events <= 0):
        raise ValueError(f"data.max_events: expected a positive integer or null; got {cfg.max_events!r}")

    def files(paths: Sequence[str]) -> FileSource:
        return FileSource(
            paths,
            cache=cfg.cache,
            cache_max_gb=cfg.cache_max_gb,
            fmt=cfg.file_format,
            geometry=cfg.file_geometry,
            cell_threshold=cfg.cell_threshold,
        )

    full = files(cfg.paths)
    rng = np.random.default_rng(_SPLIT_SEED)
    n = len(full)
    if cfg.reference_paths:
        reference = files(cfg.reference_paths)
        overlap = {p.resolve() for p in full.paths} & {p.resolve() for p in reference.paths}
        if overlap:
            raise ValueError(f"data.reference_paths: files also in data.paths: {sorted(map(str, overlap))}")
        if reference.grid != full.grid:
            raise ValueError(
                f"data.reference_paths: cell grid {reference.grid} differs from data.paths' {full.grid}"
            )
        if cfg.max_events is None or cfg.max_events >= n:
            return Sources(full, reference)
        train_idx = np.sort(rng.permutation(n)[: cfg.max_events])
        return Sources(
            SubsetSource(
                full, train_idx, {"split": "train", "split_seed": _SPLIT_SEED, "max_events": cfg.max_events}
            ),
            reference,
        )
    f = cfg.reference_fraction
    if not isinstance(f, int | float) or not 0 < f < 1:
        raise ValueError(f"data.reference_fraction: expected a number in (0, 1); got {f!r}")
    n_ref = round(f * n)
    if n_ref < 1 or n_ref >= n:
        raise ValueError(
            f"data.reference_fraction: {f} of {n} events leaves {n_ref} reference and {n - n_ref} training "
            "events; both need at least one (give more events or reference_paths)"
        )
    perm = rng.permutation(n)
    ref_idx, train_idx = perm[:n_ref], perm[n_ref:]
    if cfg.max_events is not None:
        train_idx = train_idx[: cfg.max_events]
    note = {"split_seed": _SPLIT_SEED, "reference_fraction": f}
    return Sources(
        train=SubsetSource(
            full, np.sort(train_idx), {"split": "train", **note, "max_events": cfg.max_events}
        ),
        reference=SubsetSource(full, np.sort(ref_idx), {"split": "reference", **note}),
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, str | int | float | bool) or x is None:
        return x
    return repr(x)
