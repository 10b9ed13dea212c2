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
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hepgan.data.formats.base import NORMAL
from hepgan.data.formats.core import get_format, shower_files_in
from hepgan.data.types import Showers

# Dataset names no extra may take, whatever the format (they mean something in one of them).
_RESERVED = frozenset({"ECAL", "energy", "target"})


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
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = get_format(fmt)
        self.attrs = dict(attrs or {})
        self.path, self.fmt, self.n_total = path, fmt, n_total
        self.grid = template.grid
        self.keys = _keys_of(template)
        self.compression = compression
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
        opts = _dataset_options(event_shape, dt.itemsize, self.n_total, self.compression)
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
        taken = sorted(k for k in self.attrs if k in f.attrs)
        if taken:
            raise ValueError(
                f"{self.path}: attributes {taken} clash with the ones the {self.fmt} format writes itself "
                f"({sorted(f.attrs)}); choose other names"
            )
        for k, v in self.attrs.items():
            f.attrs[k] = v

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
    path: str | os.PathLike[str],
    showers: Showers,
    fmt: str,
    *,
    compression: str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``showers`` (``ecal: [N, X, Y, Z] GeV``, ``energy: [N] GeV``, ``theta: [N] rad``) to one
    file in format ``fmt``; returns the path. The file appears only once complete. ``attrs``: extra
    file-level HDF5 attributes (name -> string, number or array)."""
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
    compression: str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Stream ``chunks`` into files of ``events_per_file`` events named ``{prefix}_{i:04d}.h5``.

    Holds at most one chunk in memory; returns the written paths (the last file may be shorter).
    ``Showers.extra`` arrays become per-event datasets, split across the files with their events;
    ``attrs``: extra file-level HDF5 attributes (name -> string, number or array) written into every
    file; a name the writer or the format sets itself (``hepgan_format``, ``grid``, ...) is a
    ``ValueError``.
    """
    if events_per_file < 1:
        raise ValueError(f"events_per_file must be >= 1; got {events_per_file}")
    get_format(fmt)
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
    compression: str | None = None,
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
