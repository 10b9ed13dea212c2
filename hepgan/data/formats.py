"""The 3DGAN HDF5 shower formats: detect, read (streaming), validate and write.

Three formats, each one HDF5 file of ``N`` events (see ``docs/data.md`` for the full description):

``fixed25`` (fixed-angle 3DGAN, the public ``EleEscan_*.h5`` files)
    ``ECAL`` ``[N, 25, 25, 25]`` cell energies (GeV) and ``target`` ``[N, 2]`` with the particle id
    (PDG code, +-11 for electrons) in ``target[:, 0]`` and the primary energy (GeV) in ``target[:, 1]``.
``angle`` (variable-angle 3DGAN / AngleGAN)
    ``ECAL`` ``[N, 51, 51, 25]`` (GeV), ``energy`` ``[N]`` (GeV), ``theta`` and/or ``mtheta`` ``[N]`` (rad),
    optionally ``eta``, ``phi``, ``HCAL``, ``pdgID``, ... passed through ``Showers.extra``.
``calochallenge`` (Fast Calorimeter Simulation Challenge 2022)
    ``incident_energies`` ``[N, 1]`` (MeV) and ``showers`` ``[N, n_voxels]`` (MeV). The flat voxel axis
    has no geometry of its own, so our writer stores the grid (``grid`` = X, Y, Z) and the flattening
    order (``voxel_order``) as file attributes; a file without them needs the grid passed in.

Reading can apply a cell threshold, as the original 3DGAN readers do: cells below it are set to 0.
``threshold=None`` takes the format's default (``DEFAULT_CELL_THRESHOLD``: 1e-6 GeV for ``fixed25``,
1e-4 GeV for ``angle``, none for ``calochallenge``), a number sets it; the functions here default to 0
(the stored values unchanged), so that conversion and round trips stay exact. Training from files
(``data.cell_threshold``) and ``hepgan-evaluate`` read with the format's default.

Reading never loads a whole file or directory at once: ``iter_showers`` streams chunks and
``ShowerFile`` reads any range or set of events. Every chunk read is checked for non-finite and
negative values (a cheap per-event min and sum); any problem is a ``ShowerFileError`` naming the file,
the key, the event range and what was expected.

Written files are uncompressed and contiguous by default, because reading speed is what training
needs: from the page cache an uncompressed directory reads about 7x faster than an lzf one (measured
in ``docs/data.md``), and a contiguous dataset serves any event range as one hyperslab without a chunk
index. Showers are sparse, so ``compression="lzf"`` (or ``"gzip"``) shrinks files about 20x: use it for
archives or when the file system, not the CPU, is the bottleneck.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hepgan.data.types import Showers

FORMATS: tuple[str, ...] = ("fixed25", "angle", "calochallenge")

# Cell grids of the public data sets; a file may declare another grid in its ``grid`` attribute.
DEFAULT_GRID: dict[str, tuple[int, int, int]] = {"fixed25": (25, 25, 25), "angle": (51, 51, 25)}

# Names the geometry presets answer to when the geometry module is not importable.
_PRESET_GRIDS: dict[str, tuple[int, int, int]] = {"fixed25": (25, 25, 25), "angle51": (51, 51, 25)}

# CaloChallenge files flatten layers outermost (layer-major); we keep that convention for the
# Cartesian grid: voxel index = ((z * X) + x) * Y + y.
DEFAULT_VOXEL_ORDER = "ZXY"

# The particle id written into target[:, 0] when the showers carry none: electrons, as the public
# fixed-angle files (EleEscan) and the electromagnetic showers of the simulator.
DEFAULT_PDG_ID = 11.0

MEV_PER_GEV = 1000.0

# The original readers' cell thresholds (GeV): EcalEnergyTrain.GetprocData drops ECAL cells below 1e-6 for
# the fixed-angle data, AngleTrain3dGAN.GetDataAngle below 1e-4 for the variable-angle data. The
# CaloChallenge files come with their own readout threshold already applied.
DEFAULT_CELL_THRESHOLD: dict[str, float] = {"fixed25": 1e-6, "angle": 1e-4, "calochallenge": 0.0}


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


_NORMAL = np.float32(np.pi / 2)

# Keys with a fixed meaning per format (not passed through as extras).
_CORE_KEYS: dict[str, frozenset[str]] = {
    "fixed25": frozenset({"ECAL", "target", "theta"}),
    "angle": frozenset({"ECAL", "energy", "theta"}),
    "calochallenge": frozenset({"incident_energies", "showers", "theta"}),
}

_KNOWN_PER_EVENT = frozenset({"mtheta", "eta", "phi", "HCAL", "pdgID"})

_EXPECTED = {
    "fixed25": "'ECAL' [N, 25, 25, 25] and 'target' [N, 2] (fixed-angle 3DGAN)",
    "angle": "'ECAL' [N, 51, 51, 25], 'energy' [N] and 'theta' and/or 'mtheta' [N] (variable-angle 3DGAN)",
    "calochallenge": "'incident_energies' [N, 1] and 'showers' [N, n_voxels] (CaloChallenge 2022)",
}


class ShowerFileError(ValueError):
    """A shower file that cannot be read as asked; the message names file, key and expectation."""

    def __init__(self, path: str | os.PathLike[str], message: str, key: str | None = None) -> None:
        self.path = Path(path)
        self.key = key
        where = f"{self.path}" + (f", key '{key}'" if key else "")
        super().__init__(f"{where}: {message}")


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

_SUFFIXES = (".h5", ".hdf5", ".hdf")


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


def _format_from_keys(path: Path, keys: Iterable[str]) -> str:
    keys = set(keys)
    if {"incident_energies", "showers"} <= keys:
        return "calochallenge"
    if "ECAL" in keys and "target" in keys:
        return "fixed25"
    if "ECAL" in keys and "energy" in keys:
        return "angle"
    if not keys:
        raise ShowerFileError(path, "empty file: it holds no datasets; expected one of: " + _all_expected())
    raise ShowerFileError(
        path,
        f"unknown format: datasets {sorted(keys)} match none of the known layouts; expected "
        + _all_expected(),
    )


def _all_expected() -> str:
    return "; ".join(f"{k}: {v}" for k, v in _EXPECTED.items())


def detect_format(path: str | os.PathLike[str]) -> str:
    """Format of one file from its dataset names: ``"fixed25"``, ``"angle"`` or ``"calochallenge"``."""
    p = Path(path)
    with _open_h5(p) as f:
        return _format_from_keys(p, _datasets(f))


def _attr_grid(f: h5py.File) -> tuple[int, int, int] | None:
    if "grid" not in f.attrs:
        return None
    g = np.asarray(f.attrs["grid"]).ravel()
    if g.shape != (3,):
        return None
    return tuple(int(v) for v in g)  # type: ignore[return-value]


@dataclass
class _Layout:
    fmt: str
    n: int
    grid: tuple[int, int, int]
    theta_key: str | None  # dataset holding Showers.theta
    extra_keys: tuple[str, ...]
    voxel_order: str = DEFAULT_VOXEL_ORDER
    target_cols: int = 2


def _inspect(path: Path, f: h5py.File, fmt: str | None, geometry: Any) -> _Layout:
    """Check keys, ranks, grids and lengths from the metadata; no cell data are read."""
    ds = _datasets(f)
    found = _format_from_keys(path, ds)
    if fmt is None:
        fmt = found
    elif fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {list(FORMATS)}")
    elif fmt != found:
        raise ShowerFileError(
            path, f"asked to read as {fmt!r} but its datasets {sorted(ds)} are the {found!r} layout"
        )
    want_grid = grid_of(geometry) or _attr_grid(f)

    def need(key: str, what: str) -> h5py.Dataset:
        if key not in ds:
            raise ShowerFileError(path, f"missing dataset; expected {what}", key)
        return ds[key]

    theta_key: str | None = None
    target_cols = 2
    voxel_order = DEFAULT_VOXEL_ORDER
    if fmt in ("fixed25", "angle"):
        ecal = need("ECAL", "cell energies [N, X, Y, Z]")
        if ecal.ndim != 4:
            raise ShowerFileError(
                path, f"expected cell energies of rank 4 [N, X, Y, Z]; found shape {ecal.shape}", "ECAL"
            )
        n = int(ecal.shape[0])
        grid = tuple(int(s) for s in ecal.shape[1:])
        expected = want_grid or DEFAULT_GRID[fmt]
        if grid != expected:
            how = "declared by the file's 'grid' attribute or geometry" if want_grid else "for this format"
            raise ShowerFileError(
                path, f"cell grid {grid} differs from the expected {expected} ({how})", "ECAL"
            )
        if fmt == "fixed25":
            target = need("target", "[N, 2] with the primary energy (GeV) in column 1")
            if target.ndim != 2 or target.shape[1] < 2:
                raise ShowerFileError(
                    path,
                    f"expected shape [N, 2] (particle id, primary energy GeV); found {target.shape}",
                    "target",
                )
            target_cols = int(target.shape[1])
            lengths = {"ECAL": n, "target": int(target.shape[0])}
            if "theta" in ds:
                theta_key = "theta"
        else:
            energy = need("energy", "primary energies [N] (GeV)")
            if energy.ndim not in (1, 2) or (energy.ndim == 2 and energy.shape[1] != 1):
                raise ShowerFileError(path, f"expected shape [N] or [N, 1]; found {energy.shape}", "energy")
            lengths = {"ECAL": n, "energy": int(energy.shape[0])}
            if "theta" in ds:
                theta_key = "theta"
            elif "mtheta" in ds:
                theta_key = "mtheta"
            else:
                raise ShowerFileError(
                    path, "missing dataset; expected 'theta' and/or 'mtheta' [N] (rad)", "theta"
                )
    else:
        showers = need("showers", "[N, n_voxels] cell energies (MeV)")
        inc = need("incident_energies", "[N, 1] primary energies (MeV)")
        if showers.ndim != 2:
            raise ShowerFileError(
                path, f"expected rank 2 [N, n_voxels]; found shape {showers.shape}", "showers"
            )
        if inc.ndim not in (1, 2) or (inc.ndim == 2 and inc.shape[1] != 1):
            raise ShowerFileError(path, f"expected shape [N, 1]; found {inc.shape}", "incident_energies")
        if want_grid is None:
            raise ShowerFileError(
                path,
                "the file carries no voxel grid (attribute 'grid'); pass the grid explicitly "
                "(geometry=(X, Y, Z) or a preset name; CLI: --geometry) to read its flat voxels",
                "showers",
            )
        n = int(showers.shape[0])
        grid = want_grid
        if int(showers.shape[1]) != grid[0] * grid[1] * grid[2]:
            raise ShowerFileError(
                path,
                f"{showers.shape[1]} voxels per event do not fill the grid {grid} "
                f"({grid[0] * grid[1] * grid[2]} voxels)",
                "showers",
            )
        voxel_order = str(f.attrs.get("voxel_order", DEFAULT_VOXEL_ORDER))
        if sorted(voxel_order) != ["X", "Y", "Z"]:
            raise ShowerFileError(path, f"attribute voxel_order={voxel_order!r} is not a permutation of XYZ")
        lengths = {"showers": n, "incident_energies": int(inc.shape[0])}
        if "theta" in ds:
            theta_key = "theta"
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
        if k in _CORE_KEYS[fmt]:
            continue
        if d.ndim >= 1 and d.shape[0] == n:
            extras.append(k)
        elif k in _KNOWN_PER_EVENT:
            held = d.shape[0] if d.ndim else "a scalar"
            raise ShowerFileError(path, f"length mismatch: {held} entries for {n} events", k)
    return _Layout(fmt, n, grid, theta_key, tuple(sorted(extras)), voxel_order, target_cols)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _check_chunk(
    path: Path, layout: _Layout, s: Showers, start: int, index: np.ndarray | None = None
) -> None:
    """Cheap per-chunk sanity: finite non-negative cells, finite positive energies, finite angles.

    Events are numbered ``start + i`` in messages, or ``index[i]`` when read by index.
    """
    if index is None:
        index = np.arange(start, start + len(s))
    rng = f"events {int(index.min())}-{int(index.max())}"
    cell_key = "showers" if layout.fmt == "calochallenge" else "ECAL"
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
    e_key = {"fixed25": "target", "angle": "energy", "calochallenge": "incident_energies"}[layout.fmt]
    e_bad = ~(np.isfinite(s.energy) & (s.energy > 0))
    if e_bad.any():
        i = int(np.argmax(e_bad))
        raise ShowerFileError(
            path,
            f"{rng}: event {int(index[i])} has primary energy {float(s.energy[i])!r}; "
            "expected a finite value > 0",
            e_key,
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


def _as_f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


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
            self.threshold = cell_threshold(self._layout.fmt, threshold)
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
        return self._layout.fmt

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
        extra = set(lay.extra_keys)
        if lay.fmt == "fixed25":
            extra.add("pdgID")
        return FileInfo(self.path, lay.fmt, lay.n, lay.grid, self.has_theta, tuple(sorted(extra)))

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
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        # One contiguous hyperslab beats a point selection unless the span is mostly unused.
        if hi - lo <= 4 * uniq.size:
            s = self._take(slice(lo, hi))[uniq - lo]
        else:
            s = self._take(uniq)
        if check:
            _check_chunk(self.path, self._layout, s, lo, uniq)
        apply_cell_threshold(s.ecal, self.threshold)
        return s[inverse]

    def _take(self, sel: slice | np.ndarray) -> Showers:
        lay, f = self._layout, self._f
        extra: dict[str, np.ndarray] = {}
        if lay.fmt == "calochallenge":
            flat = np.asarray(f["showers"][sel], dtype=np.float64) / MEV_PER_GEV
            m = flat.shape[0]
            dims = {"X": lay.grid[0], "Y": lay.grid[1], "Z": lay.grid[2]}
            cube = flat.reshape(m, *(dims[a] for a in lay.voxel_order))
            perm = [1 + lay.voxel_order.index(a) for a in "XYZ"]
            ecal = _as_f32(cube.transpose(0, *perm))
            energy = _as_f32(
                np.asarray(f["incident_energies"][sel], dtype=np.float64).reshape(m) / MEV_PER_GEV
            )
        else:
            ecal = _as_f32(f["ECAL"][sel])
            m = ecal.shape[0]
            if lay.fmt == "fixed25":
                target = np.asarray(f["target"][sel])
                energy = _as_f32(target[:, 1])
                extra["pdgID"] = target[:, 0]
                if lay.target_cols > 2:
                    extra["target_rest"] = target[:, 2:]
            else:
                energy = _as_f32(np.asarray(f["energy"][sel]).reshape(m))
        theta = None
        if lay.theta_key is not None:
            theta = _as_f32(f[lay.theta_key][sel])
        for k in lay.extra_keys:
            extra[k] = np.asarray(f[k][sel])
        return Showers(ecal=ecal, energy=energy, theta=theta, extra=extra)


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


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _dataset_options(event_shape: tuple[int, ...], itemsize: int, n: int, compression: str | None) -> dict:
    if compression is None:
        return {}
    if compression not in ("lzf", "gzip"):
        raise ValueError(f"compression must be None, 'lzf' or 'gzip'; got {compression!r}")
    # Chunks of about 1 MiB: large enough for the codec, small enough for random access.
    per_event = max(1, int(np.prod(event_shape, dtype=np.int64)) * itemsize)
    rows = min(n, max(1, (1 << 20) // per_event))
    return {"compression": compression, "chunks": (rows, *event_shape), "shuffle": compression == "gzip"}


class _Writer:
    """Writes one file of a known event count in appended pieces, then renames it into place."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        template: Showers,
        n_total: int,
        compression: str | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; valid: {list(FORMATS)}")
        self.path, self.fmt, self.n_total = path, fmt, n_total
        self.grid = template.grid
        self.keys = _keys_of(template)
        self.compression = compression
        self.tmp = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.tmp, "w")
        self.n = 0
        # Decided on the first piece: a fixed25 file stores theta only if it is not all pi/2.
        self.normal_incidence = template.theta is None or bool(np.all(template.theta == _NORMAL))
        self._create(template)

    def _new(self, name: str, event_shape: tuple[int, ...], dtype: Any, units: str | None = None) -> None:
        dt = np.dtype(dtype)
        opts = _dataset_options(event_shape, dt.itemsize, self.n_total, self.compression)
        d = self.f.create_dataset(name, shape=(self.n_total, *event_shape), dtype=dt, **opts)
        if units:
            d.attrs["units"] = units

    def _create(self, s: Showers) -> None:
        f, g = self.f, self.grid
        clash = set(s.extra) & (_CORE_KEYS[self.fmt] | {"ECAL", "energy", "target"})
        if clash:
            raise ValueError(
                f"Showers.extra keys {sorted(clash)} clash with the {self.fmt} format's datasets"
            )
        f.attrs["hepgan_format"] = self.fmt
        f.attrs["grid"] = np.asarray(g, dtype=np.int64)
        if self.fmt == "fixed25":
            self._new("ECAL", g, np.float32, "GeV")
            self.target_cols = 2 + (s.extra["target_rest"].shape[1] if "target_rest" in s.extra else 0)
            self._new("target", (self.target_cols,), np.float32)
            f["target"].attrs["columns"] = "0: particle id (PDG code), 1: primary energy (GeV)"
        elif self.fmt == "angle":
            self._new("ECAL", g, np.float32, "GeV")
            self._new("energy", (), np.float32, "GeV")
        else:
            f.attrs["voxel_order"] = DEFAULT_VOXEL_ORDER
            f.attrs["voxel_index"] = "((z * X) + x) * Y + y for cell [x, y, z]"
            # float64 keeps GeV -> MeV -> GeV exact for float32 inputs (x * 1000 needs <= 34 bits).
            self._new("showers", (g[0] * g[1] * g[2],), np.float64, "MeV")
            self._new("incident_energies", (1,), np.float64, "MeV")
        for key in self._angle_keys(s):
            self._new(key, (), np.float32, "rad")
        for k, v in s.extra.items():
            if self.fmt == "fixed25" and k in ("pdgID", "target_rest"):
                continue
            if k in self._angle_keys(s):
                continue
            self._new(k, v.shape[1:], v.dtype)

    def _angle_keys(self, s: Showers) -> list[str]:
        """Datasets that hold the angles. An mtheta-only source (theta == mtheta) stays mtheta-only."""
        keys = []
        mth = s.extra.get("mtheta")
        theta_is_mtheta = s.theta is not None and mth is not None and np.array_equal(s.theta, mth)
        if self.fmt == "angle":
            if not theta_is_mtheta:
                keys.append("theta")
        elif self.fmt == "fixed25" and self.normal_incidence:
            pass  # a fixed-angle file means normal incidence: keep the public files' keys
        elif s.theta is not None and not theta_is_mtheta:
            keys.append("theta")
        if mth is not None:
            keys.append("mtheta")
        return keys

    def append(self, s: Showers) -> None:
        if s.grid != self.grid:
            raise ValueError(f"cannot write grid {s.grid} into {self.path} holding grid {self.grid}")
        if _keys_of(s) != self.keys:
            raise ValueError(f"showers written to {self.path} must all carry the same angle/extra keys")
        a, b = self.n, self.n + len(s)
        if b > self.n_total:
            raise ValueError(f"{self.path}: more events than the {self.n_total} announced")
        f = self.f
        if self.fmt in ("fixed25", "angle"):
            f["ECAL"][a:b] = s.ecal
        if self.fmt == "fixed25":
            target = np.empty((len(s), self.target_cols), dtype=np.float32)
            target[:, 0] = s.extra.get("pdgID", DEFAULT_PDG_ID)
            target[:, 1] = s.energy
            if self.target_cols > 2:
                target[:, 2:] = s.extra["target_rest"]
            f["target"][a:b] = target
        elif self.fmt == "angle":
            f["energy"][a:b] = s.energy
        else:
            order = [1 + "XYZ".index(ax) for ax in DEFAULT_VOXEL_ORDER]
            cube = s.ecal.astype(np.float64).transpose(0, *order)
            f["showers"][a:b] = cube.reshape(len(s), -1) * MEV_PER_GEV
            f["incident_energies"][a:b] = s.energy.astype(np.float64)[:, None] * MEV_PER_GEV
        angle_keys = self._angle_keys(s)
        if self.fmt == "fixed25" and self.normal_incidence and s.theta is not None:
            if not np.all(s.theta == _NORMAL):
                raise ValueError(
                    f"{self.path}: fixed25 file started with normal incidence (no theta stored) but a later "
                    "chunk has other angles; write angled showers in the 'angle' format"
                )
        if "theta" in angle_keys:
            f["theta"][a:b] = s.theta_or_normal()
        for k, v in s.extra.items():
            if self.fmt == "fixed25" and k in ("pdgID", "target_rest"):
                continue
            f[k][a:b] = v
        self.n = b

    def close(self) -> Path:
        """Finish the file; a short last file is rewritten at its true length."""
        self.f.close()
        if self.n < self.n_total:
            _shrink(self.tmp, self.n)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def _keys_of(s: Showers) -> tuple[bool, tuple[str, ...]]:
    return (s.theta is not None, tuple(sorted(s.extra)))


def _shrink(path: Path, n: int) -> None:
    """Rewrite every dataset of ``path`` to its first ``n`` events (contiguous datasets cannot shrink)."""
    tmp = path.with_name(path.name + ".shrink")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        dst.attrs.update(src.attrs)
        for k, d in src.items():
            opts = {}
            if d.compression:
                chunks = (min(n, d.chunks[0]), *d.shape[1:])
                opts = {"compression": d.compression, "chunks": chunks, "shuffle": d.shuffle}
            out = dst.create_dataset(k, shape=(n, *d.shape[1:]), dtype=d.dtype, **opts)
            out.attrs.update(d.attrs)
            step = max(1, (64 << 20) // max(1, d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64))))
            for a in range(0, n, step):
                out[a : min(n, a + step)] = d[a : min(n, a + step)]
    os.replace(tmp, path)


def write_file(
    path: str | os.PathLike[str], showers: Showers, fmt: str, *, compression: str | None = None
) -> Path:
    """Write ``showers`` (``ecal: [N, X, Y, Z] GeV``, ``energy: [N] GeV``, ``theta: [N] rad``) to one
    file in format ``fmt``; returns the path. The file appears only once complete."""
    if len(showers) == 0:
        raise ValueError(f"refusing to write an empty shower file {path}")
    w = _Writer(Path(path), fmt, showers, len(showers), compression)
    try:
        w.append(showers)
    except BaseException:
        w.abort()
        raise
    return w.close()


def write_files(
    chunks: Iterable[Showers],
    out_dir: str | os.PathLike[str],
    *,
    fmt: str,
    events_per_file: int = 10000,
    prefix: str = "showers",
    compression: str | None = None,
) -> list[Path]:
    """Stream ``chunks`` into files of ``events_per_file`` events named ``{prefix}_{i:04d}.h5``.

    Holds at most one chunk in memory; returns the written paths (the last file may be shorter).
    """
    if events_per_file < 1:
        raise ValueError(f"events_per_file must be >= 1; got {events_per_file}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {list(FORMATS)}")
    out = Path(out_dir)
    paths: list[Path] = []
    w: _Writer | None = None
    try:
        for s in chunks:
            pos = 0
            while pos < len(s):
                if w is None:
                    w = _Writer(out / f"{prefix}_{len(paths):04d}.h5", fmt, s, events_per_file, compression)
                take = min(len(s) - pos, events_per_file - w.n)
                w.append(s[pos : pos + take])
                pos += take
                if w.n == events_per_file:
                    paths.append(w.close())
                    w = None
        if w is not None:
            paths.append(w.close())
            w = None
    finally:
        if w is not None:
            w.abort()
    return paths


def shower_files_in(folder: str | os.PathLike[str]) -> list[Path]:
    """The HDF5 files (``*.h5``, ``*.hdf5``, ``*.hdf``) directly in ``folder``, sorted; ``[]`` when the
    folder does not exist."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(q for q in p.iterdir() if q.suffix.lower() in _SUFFIXES and q.is_file())


class OutputExistsError(FileExistsError):
    """The output folder already holds shower files and replacing them was not asked for."""


def write_folder(
    chunks: Iterable[Showers],
    out_dir: str | os.PathLike[str],
    *,
    fmt: str,
    events_per_file: int = 10000,
    prefix: str = "showers",
    compression: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """:func:`write_files` all or nothing: the files appear in ``out_dir`` only once every one is written.

    The files are written into a hidden sibling folder ``.NAME.partial-<pid>`` and moved into ``out_dir``
    at the end (one rename of the folder when ``out_dir`` does not exist yet). When anything fails
    (a bad input file after good ones, a full disk, Ctrl-C) the partial folder is deleted and ``out_dir``
    is left as it was.

    Args:
        chunks, fmt, events_per_file, prefix, compression: as :func:`write_files`.
        out_dir: the output folder (created if needed).
        overwrite: allow an ``out_dir`` that already holds HDF5 files; they are deleted once the new set
            is complete, so the folder then holds exactly the new set.

    Raises:
        OutputExistsError: ``out_dir`` holds HDF5 files and ``overwrite`` is false (nothing is written).
    """
    out = Path(out_dir)
    existing = shower_files_in(out)
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out}: the output folder already holds {len(existing)} HDF5 file(s) "
            f"(e.g. {existing[0].name}); choose an empty folder or pass --overwrite to replace them"
        )
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder; expected an output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        written = write_files(
            chunks, staging, fmt=fmt, events_per_file=events_per_file, prefix=prefix, compression=compression
        )
        if not written:  # no events: nothing to show, and nothing replaced
            shutil.rmtree(staging, ignore_errors=True)
            return []
        if not out.exists():
            staging.rename(out)
            return [out / p.name for p in written]
        final = []
        for p in written:
            os.replace(p, out / p.name)
            final.append(out / p.name)
        for old in existing:
            if old not in final:
                old.unlink()
        staging.rmdir()
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
