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
  file; uncompressed 3DGAN files are read by positional reads of their cell dataset (conditions kept
  in memory), other files through ``formats.ShowerFile.take`` on a handle kept open per file. With
  ``cache=True`` the files that cannot be read directly are kept in RAM (decoded) after their first
  touch, within a memory budget.
- :class:`SubsetSource`: a fixed selection of another source's events (train/reference splits).
- :func:`open_source`: a :class:`DataConfig` -> ``Sources(train, reference)``; the reference set is for
  physics validation and never shares an event with the training set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import h5py
import numpy as np

from hepgan.data import cache as sim_cache
from hepgan.data import formats
from hepgan.data.formats import ShowerFileError
from hepgan.data.geometry import get_geometry
from hepgan.data.simulate import EnergySpec, SimulatorConfig, default_workers, iter_simulate, parse_theta
from hepgan.data.types import Showers
from hepgan.fileio import write_json

# Reference events of a simulated source are events [REFERENCE_START, REFERENCE_START + n_reference) of the
# same seed's stream: the contract "event i depends only on (seed, i)" then guarantees that they never
# coincide with training events [0, n_events), for any n_events below this offset.
REFERENCE_START = 1_000_000_000

# Hold-out selection of reference events from files uses its own fixed seed so the reference set is the
# same for every training seed (runs of a sweep are validated against identical events).
_SPLIT_SEED = 0x3D6A9


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------

KINDS = ("simulated", "files")
"""Values of ``DataConfig.kind`` (interpreted by :func:`open_source`)."""


@dataclass
class DataConfig:
    """Where the events come from and how they are turned into network inputs (Hydra schema ``data``).

    Common:
        kind: ``"simulated"`` (the embedded simulator, the default) or ``"files"`` (HDF5 files).
        seed: simulator seed for ``simulated``; not the shuffling seed (that is the pipeline's).
        shuffle: shuffle the training events every epoch.
        prefetch: batches prepared ahead by the pipeline's background thread.

    ``kind="simulated"``:
        geometry: ``"fixed25"`` (25x25x25) or ``"angle51"`` (51x51x25).
        n_events: training events, simulated once (``n_events * (X*Y*Z + 2) * 4`` bytes: 62.5 kB per fixed25
            and 260 kB per angle51 shower). Up to ``in_memory_max_gb`` they are kept in memory; larger
            sets go to the on-disk cache in ``cache_dir`` and are streamed from there.
        n_reference: held-out reference events for validation: events ``REFERENCE_START + i`` of the
            same seed's stream, so never one of the training events.
        energy: primary energy spec in GeV: ``"uniform:10:500"``, ``"loguniform:2:500"``,
            ``"fixed:100"``, ``"list:10,50,100"``.
        theta_deg: polar angle in degrees as a string: ``"90"`` (fixed) or ``"60:120"`` (uniform range).
        workers: simulator processes (also for writing the disk cache); the events do not depend on it.
        cache_dir: folder of the on-disk cache of simulated sets (``None`` = ``$HEPGAN_DATA_CACHE``, else
            ``~/.cache/hepgan/simulated``); see :mod:`hepgan.data.cache`. Shared by every run and job
            that asks for the same events: put it on a file system all of them see.
        in_memory_max_gb: a simulated set (training or reference, each on its own) up to this size is
            simulated into memory on first use; a larger one is cached on disk and streamed, so the
            process holds only the batches in flight. 0 = always use the disk cache.
        simulator: overrides of :class:`hepgan.data.simulate.SimulatorConfig` fields, e.g.
            ``{"radial_scale": 1.1}`` for 10 % wider showers.

    ``kind="files"``:
        paths: files, directories (every ``*.h5``/``*.hdf5``/``*.hdf`` inside) or glob patterns.
        reference_paths: files for the reference set; empty = hold out ``reference_fraction`` of the
            events of ``paths``, chosen by a fixed seed (the same set for every training seed).
        reference_fraction: fraction held out when ``reference_paths`` is empty (0 < f < 1).
        max_events: use at most this many training events (a fixed random subset); ``None`` = all.
        cache: keep whole files in RAM after their first read (decoded float32), while the total stays
            under ``cache_max_gb``. Needed for fast shuffled reading of compressed/chunked files;
            uncompressed 3DGAN files are read row by row from the file instead and never copied (see
            ``FileSource``). Not to be confused with ``cache_dir``, the simulated-data cache.
        cache_max_gb: RAM budget of the cache (per process).
        file_format: ``None`` (detect) or a :func:`hepgan.data.formats.detect_format` name.
        file_geometry: cell grid for CaloChallenge files that do not store one (``"fixed25"``,
            ``"angle51"``); ``None`` for the 3DGAN formats, whose grid is in the data.
        cell_threshold: cells below this energy (GeV) are read as 0; ``None`` = the format's default, the
            original readers' (1e-6 fixed25, 1e-4 angle, none for CaloChallenge:
            ``formats.DEFAULT_CELL_THRESHOLD``); 0 = the stored values.

    Preprocessing (``None`` = the model's paper preset, :meth:`Preprocess.for_model`):
        cell_scale: factor on cell energies (fixed25 preset 100, angle51 preset 1).
        cell_power: power applied after scaling (fixed25 preset 1, angle51 preset 0.85).
        energy_scale: factor on the primary energy (both presets 0.01, i.e. E/100).
    """

    kind: str = "simulated"
    seed: int = 0
    shuffle: bool = True
    prefetch: int = 2
    # simulated
    geometry: str = "fixed25"
    n_events: int = 4096
    n_reference: int = 1024
    energy: str = "uniform:10:500"
    theta_deg: str = "90"
    workers: int = 1
    cache_dir: str | None = None
    in_memory_max_gb: float = 1.0
    simulator: dict[str, Any] = field(default_factory=dict)
    # files
    paths: list[str] = field(default_factory=list)
    reference_paths: list[str] = field(default_factory=list)
    reference_fraction: float = 0.1
    max_events: int | None = None
    cache: bool = True
    cache_max_gb: float = 8.0
    file_format: str | None = None
    file_geometry: str | None = None
    cell_threshold: float | None = None
    # preprocessing overrides
    cell_scale: float | None = None
    cell_power: float | None = None
    energy_scale: float | None = None


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


_SHA_MEMO: dict[str, str] = {}  # file_sha256 results of this process, by (path, size, mtime)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, cached (see :class:`FileSource` ``describe``).

    The cache key is (absolute path, size, mtime); hits come from memory, then from
    ``$HEPGAN_CACHE_DIR/sha256.json`` (default ``~/.cache/hepgan``), so big data sets are hashed once per
    machine, not once per run. A file that cannot be written to leaves the on-disk cache unused.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    cache_file = Path(os.environ.get("HEPGAN_CACHE_DIR", Path.home() / ".cache" / "hepgan")) / "sha256.json"
    try:
        disk = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        disk = {}
    if isinstance(disk, dict) and isinstance(disk.get(key), str):
        _SHA_MEMO[key] = disk[key]
        return disk[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    _SHA_MEMO[key] = digest
    try:
        disk = disk if isinstance(disk, dict) else {}
        disk[key] = digest
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, disk, indent=None)
    except OSError:
        pass
    return digest


_ROW_READER_FORMATS = ("fixed25", "angle")


class _RowReader:
    """Random rows of a file in a 3DGAN layout (``fixed25`` / ``angle``, see :mod:`hepgan.data.formats`).

    Shuffled training reads a few scattered events per file and batch; HDF5 point selections cost far
    more than the bytes they move. So the per-event conditions (primary energy, angle: a few bytes per
    event) are read once and kept, and when ``ECAL`` is stored contiguously, unfiltered, in floats (what
    ``formats.write_file`` writes by default) its rows are read with positional reads (``preadv``, one
    per run of consecutive rows) straight into the answer (``direct``); a chunked or compressed ``ECAL``
    falls back to an h5py selection of the rows. Positional reads rather than a memory map: the bytes
    then stay in the OS page cache, outside the process, whose resident memory stays at the batches in
    flight however much of the file an epoch touches (batch schedulers count mapped pages as the job's
    memory). Every event is checked the first time it is read (finite, non-negative cells), as
    ``formats`` checks what it reads.

    The layout rules (energy in ``target[:, 1]`` or ``energy``; angle in ``theta``, else ``mtheta`` for
    the angle layout) are those of ``formats``, whose ``ShowerFile`` has validated the file beforehand.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._f = h5py.File(path, "r")
        try:
            ecal = self._f["ECAL"]
            if fmt == "fixed25":
                e_key, energy = "target", np.asarray(self._f["target"][:, 1])
            else:
                e_key, energy = "energy", np.asarray(self._f["energy"][()]).reshape(-1)
            theta_key = "theta" if "theta" in self._f else ("mtheta" if fmt == "angle" else None)
            self.energy = energy.astype(np.float32)
            self.theta = None if theta_key is None else np.asarray(self._f[theta_key][()], np.float32)
            bad = ~(np.isfinite(self.energy) & (self.energy > 0))
            if bad.any():
                raise ShowerFileError(
                    path,
                    f"event {int(np.argmax(bad))} has primary energy {float(self.energy[bad][0])!r}; "
                    "expected a finite value > 0",
                    e_key,
                )
            if self.theta is not None and not np.isfinite(self.theta).all():
                i = int(np.argmax(~np.isfinite(self.theta)))
                raise ShowerFileError(path, f"event {i} has a non-finite angle; expected radians", theta_key)
            plist = ecal.id.get_create_plist()
            offset = ecal.id.get_offset()
            direct = (
                plist.get_layout() == h5py.h5d.CONTIGUOUS
                and plist.get_nfilters() == 0
                and plist.get_external_count() == 0
                and offset is not None
                and ecal.dtype.kind == "f"
                and hasattr(os, "preadv")
            )
            self.direct = direct
            self._shape: tuple[int, ...] = tuple(ecal.shape)
            self._dtype = ecal.dtype
            self._offset = int(offset) if direct else 0
            self._row_bytes = int(np.prod(self._shape[1:])) * ecal.dtype.itemsize
            self._cells: Any = None if direct else ecal
            self._checked = np.zeros(ecal.shape[0], bool)
            if direct:
                self._fd = os.open(path, os.O_RDONLY)
        except BaseException:
            self._f.close()
            raise
        if direct:  # everything needed is in memory or one read away: no HDF5 handle to hold
            self._f.close()

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
                        self.path, f"file ends before event {int(rows[b - 1])}; truncated?", "ECAL"
                    )
                view, pos = view[got:], pos + got
        return out

    def take(self, rows: np.ndarray) -> Showers:
        """Events at ``rows`` (sorted, unique): ``ecal [k, X, Y, Z]`` f32 GeV, ``energy [k]``, ``theta``."""
        if self.direct:
            if self._fd is None:
                raise ValueError(f"{self.path}: reader is closed")
            cells = self._pread_rows(rows)
        else:
            cells = self._cells[rows]
        ecal = np.ascontiguousarray(cells, dtype=np.float32)
        new = ~self._checked[rows]
        if new.any():
            flat = ecal[new].reshape(int(new.sum()), -1)
            bad = ~np.isfinite(flat.sum(axis=1)) | (flat.min(axis=1) < 0)
            if bad.any():
                i = int(rows[new][np.argmax(bad)])
                raise ShowerFileError(
                    self.path, f"event {i} has NaN, infinite or negative cell energies; expected >= 0", "ECAL"
                )
            self._checked[rows[new]] = True
        theta = None if self.theta is None else self.theta[rows]
        return Showers(ecal=ecal, energy=self.energy[rows], theta=theta)

    def close(self) -> None:
        """Close the file descriptor and the HDF5 file (idempotent)."""
        self._cells = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._f.id.valid:
            self._f.close()

    def __del__(self) -> None:
        # A source dropped without close(): do not leak the descriptor.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class FileSource:
    """Events of HDF5 shower files, with efficient random access.

    The files (``formats.expand_paths`` order) are opened once each (``formats.ShowerFile``: format,
    event count, grid and angle checked from the metadata) and concatenated; global index ``i`` is event
    ``i - offsets[f]`` of file ``f``. ``read(indices)`` groups the indices per file, reads each file's
    share in one go and returns the events in the requested order. Handles stay open (at most
    ``max_open`` at once, least recently used closed first), so a shuffled batch costs no file opens.
    Files in the 3DGAN layouts (``fixed25``, ``angle``) are read by :class:`_RowReader` (conditions held
    in memory, cells read by positional reads of the contiguous ``ECAL`` dataset, far faster than an HDF5
    point selection); other formats by ``formats.ShowerFile.take``.

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
    :func:`file_sha256`); call it once, on one process, for the manifest.
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
        self._open: OrderedDict[int, Any] = OrderedDict()
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

    def _handle(self, f: int) -> Any:
        with self._lock:
            h = self._open.get(f)
            if h is None:
                while len(self._open) >= self.max_open:
                    self._open.popitem(last=False)[1].close()
                if self.infos[f].format in _ROW_READER_FORMATS:
                    h = _RowReader(self.paths[f], self.infos[f].format)
                else:
                    h = formats.ShowerFile(self.paths[f], fmt=self.fmt, geometry=self.geometry)
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
            if getattr(self._handle(f), "direct", False):
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
        sim_cfg = SimulatorConfig(**{"geometry": cfg.geometry, **overrides})
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
