"""Writing shower files of any registered format: one file, a stream split into files, or a whole
folder all or nothing.

The writer owns what every format shares (the ``hepgan_format`` and ``grid`` attributes, the angle
datasets, the ``Showers.extra`` pass-through, storage options, the ``.part`` rename, shrinking a short
last file); the format object creates and fills its own datasets
(:meth:`~hepgan.data.formats.base.Format.create`, :meth:`~hepgan.data.formats.base.Format.write`).

Callers attach their own metadata in two ways: per-event arrays as ``Showers.extra`` (each becomes a
dataset ``[N, ...]`` that follows its events into whichever file they land in, and that the readers
pass back through ``Showers.extra``), and file-level HDF5 attributes as ``attrs`` (written into every
file; names the writer or the format sets themselves are refused).

Storage (:class:`Storage`, ``compression=``): :data:`DEFAULT_COMPRESSION` (gzip level 1 in chunks of
whole events) unless asked otherwise; ``compression=None`` writes contiguous, uncompressed datasets (the
layout the simulated-data cache needs for its positional reads). Every file also gets ``hepgan_version``,
``hepgan_created_utc``, ``hepgan_n_events`` and ``hepgan_compression`` (see
:mod:`hepgan.data.formats.provenance`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hepgan.data.formats.base import NORMAL
from hepgan.data.formats.core import get_format, shower_files_in
from hepgan.data.types import Showers

# Dataset names no extra may take, whatever the format (they mean something in one of them).
_RESERVED = frozenset({"ECAL", "energy", "target"})

VERSION_ATTR = "hepgan_version"
"""File attribute: the hepgan version that wrote the file (set unless the caller's ``attrs`` has it)."""
CREATED_ATTR = "hepgan_created_utc"
"""File attribute: when the file was written, UTC ISO 8601 (set unless the caller's ``attrs`` has it)."""
N_EVENTS_ATTR = "hepgan_n_events"
"""File attribute: the number of events in this file (always set by the writer)."""
COMPRESSION_ATTR = "hepgan_compression"
"""File attribute: the storage of the per-event datasets (``str(Storage)``: ``"none"``, ``"gzip:1"``, ...)."""


COMPRESSIONS: tuple[str, ...] = ("none", "lzf", "gzip")
"""The codecs a writer may use (``--compression``); ``gzip`` also as ``gzip:LEVEL`` (1-9)."""

DEFAULT_COMPRESSION = "gzip:1"
"""What the command-line writers (``hepgan-simulate``, ``hepgan-generate``, ``hepgan-data convert``) use
unless told otherwise: gzip level 1, no shuffle, chunks of about 1 MiB of whole events. Chosen from
``hepgan-bench hdf5_compression`` (``docs/data.md``, "Storage"): on sparse showers it gave the smallest
files of the settings measured (fixed25 23x, angle51 68x, ds2 7.6x below uncompressed) and read at least
as fast as lzf in every reading path measured, and every HDF5 tool (h5py, ROOT, HDFView, h5dump, the
CaloChallenge scripts) reads gzip without a plugin, while lzf needs h5py's own filter."""

GZIP_LEVEL = 1
"""gzip level of a bare ``"gzip"``: level 4 (measured with shuffle) made no smaller files and read and
wrote slower."""

CHUNK_BYTES = 1 << 20
"""Default chunk size of a compressed per-event dataset: whole events, about this many bytes."""


@dataclass(frozen=True)
class Storage:
    """How a writer stores every per-event dataset.

    ``codec``: ``None`` (contiguous, uncompressed: the training cache's positional-read layout),
    ``"lzf"`` or ``"gzip"``; ``level``: the gzip level (1-9); ``shuffle``: the HDF5 byte-shuffle filter
    before the codec (default off: on sparse showers it made files 30-50 % larger and no faster to
    read); ``chunk_events``: events per chunk (default: whole events filling about
    :data:`CHUNK_BYTES`; one event per chunk made whole-file reads slower and scattered rows hardly
    faster).
    """

    codec: str | None = None
    level: int | None = None
    shuffle: bool = False
    chunk_events: int | None = None

    @classmethod
    def parse(cls, value: str | Storage | None) -> Storage:
        """``None`` or ``"none"`` (uncompressed), ``"lzf"``, ``"gzip"`` (level :data:`GZIP_LEVEL`) or
        ``"gzip:LEVEL"``; a ``Storage`` is returned as it is. Anything else is a ``ValueError`` listing
        the valid values."""
        if isinstance(value, Storage):
            return value
        if value is None:
            return cls()
        text = str(value).strip().lower()
        codec, _, level = text.partition(":")
        if codec == "none" and not level:
            return cls()
        if codec == "lzf" and not level:
            return cls("lzf")
        if codec == "gzip" and not level:
            return cls("gzip", GZIP_LEVEL)
        if codec == "gzip" and level.isdigit() and 1 <= int(level) <= 9:
            return cls("gzip", int(level))
        raise ValueError(
            f"compression must be one of 'none', 'lzf', 'gzip' or 'gzip:LEVEL' with LEVEL 1-9 "
            f"(default {DEFAULT_COMPRESSION!r}); got {value!r}"
        )

    def __str__(self) -> str:
        if self.codec is None:
            return "none"
        return self.codec if self.level is None else f"{self.codec}:{self.level}"


def _dataset_options(event_shape: tuple[int, ...], itemsize: int, n: int, storage: Storage) -> dict:
    if storage.codec is None:
        return {}
    if storage.codec not in ("lzf", "gzip"):
        raise ValueError(f"compression must be None, 'lzf' or 'gzip'; got {storage.codec!r}")
    # Whole events per chunk, about CHUNK_BYTES each: large enough for the codec, small enough that a
    # scattered row decodes little besides itself.
    per_event = max(1, int(np.prod(event_shape, dtype=np.int64)) * itemsize)
    rows = storage.chunk_events or max(1, CHUNK_BYTES // per_event)
    opts: dict[str, Any] = {
        "compression": storage.codec,
        "chunks": (max(1, min(n, rows)), *event_shape),
        "shuffle": storage.shuffle,
    }
    if storage.codec == "gzip" and storage.level is not None:
        opts["compression_opts"] = storage.level
    return opts


class _Writer:
    """Writes one file of a known event count in appended pieces, then renames it into place."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        template: Showers,
        n_total: int,
        compression: str | Storage | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = get_format(fmt)
        self.attrs = dict(attrs or {})
        self.path, self.fmt, self.n_total = path, fmt, n_total
        self.grid = template.grid
        self.keys = _keys_of(template)
        self.storage = Storage.parse(compression)
        self.tmp = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.tmp, "w")
        self.n = 0
        # Decided on the first piece: a fixed25 file stores theta only if it is not all pi/2.
        self.normal_incidence = template.theta is None or bool(np.all(template.theta == NORMAL))
        try:
            self._create(template)
        except BaseException:
            self.abort()
            raise

    def new(self, name: str, event_shape: tuple[int, ...], dtype: Any, units: str | None = None) -> None:
        """Create dataset ``name`` of shape ``[n_total, *event_shape]`` with this file's storage options."""
        dt = np.dtype(dtype)
        opts = _dataset_options(event_shape, dt.itemsize, self.n_total, self.storage)
        d = self.f.create_dataset(name, shape=(self.n_total, *event_shape), dtype=dt, **opts)
        if units:
            d.attrs["units"] = units

    def _create(self, s: Showers) -> None:
        f, g = self.f, self.grid
        clash = set(s.extra) & (self.spec.core_keys | _RESERVED)
        if clash:
            raise ValueError(
                f"Showers.extra keys {sorted(clash)} clash with the {self.fmt} format's datasets"
            )
        f.attrs["hepgan_format"] = self.fmt
        f.attrs["grid"] = np.asarray(g, dtype=np.int64)
        self.spec.create(self, s)
        angle_keys = self._angle_keys(s)
        for key in angle_keys:
            self.new(key, (), np.float32, "rad")
        for k, v in s.extra.items():
            if k in self.spec.packed_extras or k in angle_keys:
                continue
            self.new(k, v.shape[1:], v.dtype)
        f.attrs[COMPRESSION_ATTR] = str(self.storage)
        taken = sorted(k for k in self.attrs if k in f.attrs or k == N_EVENTS_ATTR)
        if taken:
            raise ValueError(
                f"{self.path}: attributes {taken} clash with the ones the {self.fmt} format writes itself "
                f"({sorted(f.attrs)}); choose other names"
            )
        for k, v in self.attrs.items():
            f.attrs[k] = v
        # Every file says which hepgan wrote it and when, unless the caller recorded that itself.
        if VERSION_ATTR not in f.attrs:
            import hepgan

            f.attrs[VERSION_ATTR] = str(hepgan.__version__)
        if CREATED_ATTR not in f.attrs:
            f.attrs[CREATED_ATTR] = datetime.now(UTC).isoformat(timespec="seconds")

    def _angle_keys(self, s: Showers) -> list[str]:
        """Datasets that hold the angles. An mtheta-only source (theta == mtheta) stays mtheta-only."""
        mth = s.extra.get("mtheta")
        theta_is_mtheta = s.theta is not None and mth is not None and np.array_equal(s.theta, mth)
        keys = ["theta"] if self.spec.stores_theta(self, s, theta_is_mtheta) else []
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
        self.spec.write(self, a, b, s)
        if "theta" in self._angle_keys(s):
            self.f["theta"][a:b] = s.theta_or_normal()
        for k, v in s.extra.items():
            if k in self.spec.packed_extras:
                continue
            self.f[k][a:b] = v
        self.n = b

    def close(self) -> Path:
        """Finish the file; a short last file is rewritten at its true length."""
        self.f.attrs[N_EVENTS_ATTR] = np.int64(self.n)
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
                if d.compression == "gzip":
                    opts["compression_opts"] = d.compression_opts
            out = dst.create_dataset(k, shape=(n, *d.shape[1:]), dtype=d.dtype, **opts)
            out.attrs.update(d.attrs)
            step = max(1, (64 << 20) // max(1, d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64))))
            for a in range(0, n, step):
                out[a : min(n, a + step)] = d[a : min(n, a + step)]
    os.replace(tmp, path)


def write_file(
    path: str | os.PathLike[str],
    showers: Showers,
    fmt: str,
    *,
    compression: str | Storage | None = DEFAULT_COMPRESSION,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``showers`` (``ecal: [N, X, Y, Z] GeV``, ``energy: [N] GeV``, ``theta: [N] rad``) to one
    file in format ``fmt``; returns the path. The file appears only once complete. ``attrs``: extra
    file-level HDF5 attributes (name -> string, number or array). ``compression``:
    :data:`DEFAULT_COMPRESSION` (the default), ``"lzf"``, ``"gzip"``, ``"gzip:LEVEL"``, a :class:`Storage`,
    or ``None``/``"none"``: contiguous and uncompressed, the layout the training cache reads by positional
    reads. The writer adds ``hepgan_version``, ``hepgan_created_utc`` (unless
    ``attrs`` has them), ``hepgan_n_events`` and ``hepgan_compression``."""
    if len(showers) == 0:
        raise ValueError(f"refusing to write an empty shower file {path}")
    w = _Writer(Path(path), fmt, showers, len(showers), compression, attrs)
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
    compression: str | Storage | None = DEFAULT_COMPRESSION,
    attrs: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Stream ``chunks`` into files of ``events_per_file`` events named ``{prefix}_{i:04d}.h5``.

    Holds at most one chunk in memory; returns the written paths (the last file may be shorter).
    ``Showers.extra`` arrays become per-event datasets, split across the files with their events;
    ``attrs``: extra file-level HDF5 attributes (name -> string, number or array) written into every
    file; a name the writer or the format sets itself (``hepgan_format``, ``grid``,
    ``hepgan_n_events``, ``hepgan_compression``, ...) is a ``ValueError``. ``compression`` as
    :func:`write_file`.
    """
    if events_per_file < 1:
        raise ValueError(f"events_per_file must be >= 1; got {events_per_file}")
    get_format(fmt)
    compression = Storage.parse(compression)  # a bad value fails before any file is created
    out = Path(out_dir)
    paths: list[Path] = []
    w: _Writer | None = None
    try:
        for s in chunks:
            pos = 0
            while pos < len(s):
                if w is None:
                    w = _Writer(
                        out / f"{prefix}_{len(paths):04d}.h5", fmt, s, events_per_file, compression, attrs
                    )
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


class OutputExistsError(FileExistsError):
    """The output folder already holds shower files and replacing them was not asked for."""


def write_folder(
    chunks: Iterable[Showers],
    out_dir: str | os.PathLike[str],
    *,
    fmt: str,
    events_per_file: int = 10000,
    prefix: str = "showers",
    compression: str | Storage | None = DEFAULT_COMPRESSION,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> list[Path]:
    """:func:`write_files` all or nothing: the files appear in ``out_dir`` only once every one is written.

    The files are written into a hidden sibling folder ``.NAME.partial-<pid>`` and moved into ``out_dir``
    at the end (one rename of the folder when ``out_dir`` does not exist yet). When anything fails
    (a bad input file after good ones, a full disk, Ctrl-C) the partial folder is deleted and ``out_dir``
    is left as it was.

    Args:
        chunks, fmt, events_per_file, prefix, compression, attrs: as :func:`write_files`.
        out_dir: the output folder (created if needed).
        overwrite: allow an ``out_dir`` that already holds HDF5 files; they are deleted once the new set
            is complete, so the folder then holds exactly the new set.

    Raises:
        OutputExistsError: ``out_dir`` holds HDF5 files and ``overwrite`` is false (nothing is written).
    """
    out = Path(out_dir)
    Storage.parse(compression)
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
            chunks,
            staging,
            fmt=fmt,
            events_per_file=events_per_file,
            prefix=prefix,
            compression=compression,
            attrs=attrs,
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


def compression_arg(text: str) -> str:
    """``argparse`` ``type=`` of the ``--compression`` options: ``text`` normalised (``"none"``, ``"lzf"``,
    ``"gzip:1"``, ...), or an ``ArgumentTypeError`` listing the valid values."""
    import argparse

    try:
        return str(Storage.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


COMPRESSION_HELP = (
    f"HDF5 compression of the written files: none, lzf, gzip (level {GZIP_LEVEL}) or gzip:LEVEL (1-9) "
    f"(default {DEFAULT_COMPRESSION}: gzip is read by every HDF5 tool, lzf only by h5py; docs/data.md)"
)
"""The ``--compression`` help text the command-line writers share."""
