"""On-disk cache of simulated showers: simulated once, then read on demand by every run that asks again.

A simulated training set of the paper's size does not fit in an ordinary node's memory (200k fixed25
showers are 12.5 GB, 200k angle51 showers 52 GB). :class:`~hepgan.data.source.SimulatedSource` therefore
writes large sets once into a folder of 3DGAN HDF5 files (:mod:`hepgan.data.formats`, contiguous and
uncompressed so that any row is one positional read) and streams rows from there.

Layout under the cache folder (:func:`default_cache_dir`)::

    fixed25_seed0_0+200000_<key16>/      one complete set: showers_0000.h5 ... and cache.json
    fixed25_seed0_0+200000_<key16>.lock  the lock its builders take (kept; a few bytes)
    .fixed25_seed0_0+200000_<key16>.tmp-<host>-<pid>-<random>/   a set being written (never read)

``<key16>`` is the start of the sha256 of everything that defines the events (:func:`cache_key`): the
simulator settings, energy spectrum, angle range, seed, first event and count, the file format and
:data:`CACHE_VERSION`. A set is written into its temporary folder and renamed to its final name only
when every file and ``cache.json`` are complete, so a job killed mid-write never leaves a set that looks
whole. Builders of the same set take an exclusive ``flock`` on the lock file: one simulates, the others
wait and then read its result. Where the file system does not support ``flock`` every builder writes
its own temporary set and the first rename wins (a rename onto an existing non-empty folder fails); the
others delete theirs. Either way no reader ever sees a partial set.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hepgan.data import formats
from hepgan.data.simulate import EnergySpec, SimulatorConfig, iter_simulate
from hepgan.fileio import write_json

log = logging.getLogger(__name__)

# Bump when the simulator's output for the same settings changes, so that old sets are not reused.
CACHE_VERSION = 1

CACHE_ENV = "HEPGAN_DATA_CACHE"

# 10,000 events per file, as the public 3DGAN data sets (0.6 GB fixed25, 2.6 GB angle51 per file).
EVENTS_PER_FILE = 10_000

_MANIFEST = "cache.json"


def default_cache_dir() -> Path:
    """The cache folder when ``data.cache_dir`` is not set: ``$HEPGAN_DATA_CACHE``, else
    ``$XDG_CACHE_HOME/hepgan/simulated``, else ``~/.cache/hepgan/simulated``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hepgan" / "simulated"


@dataclass(frozen=True)
class SimulatedSet:
    """Everything that defines a range of simulated events: ``n`` events of stream ``seed`` starting at
    global index ``start``, energies ``energy`` (GeV), angles uniform in ``theta_deg`` (degrees)."""

    n: int
    start: int
    seed: int
    energy: EnergySpec
    theta_deg: tuple[float, float]
    config: SimulatorConfig

    @property
    def grid(self) -> tuple[int, int, int]:
        """Cell grid ``(X, Y, Z)``."""
        return tuple(int(g) for g in self.config.grid_geometry().shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of the events as float32 cells plus energy and angle: ``n * (X*Y*Z + 2) * 4``."""
        return self.n * (int(np.prod(self.grid)) + 2) * 4

    @property
    def file_format(self) -> str:
        """``fixed25`` for 25x25x25 showers at normal incidence (the public fixed-angle layout), else
        ``angle`` (which stores the angle of every event)."""
        normal = self.theta_deg == (90.0, 90.0)
        return "fixed25" if self.grid == (25, 25, 25) and normal else "angle"

    def key(self) -> str:
        """Hex sha256 of the canonical JSON of the settings (see the module docstring)."""
        spec = {
            "cache_version": CACHE_VERSION,
            "n": self.n,
            "start": self.start,
            "seed": self.seed,
            # repr keeps every digit: str(EnergySpec) rounds to 6 significant figures
            "energy": [self.energy.kind, [repr(float(v)) for v in self.energy.values]],
            "theta_deg": [repr(float(v)) for v in self.theta_deg],
            "simulator": self.config.describe(),
            "format": self.file_format,
        }
        text = json.dumps(spec, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def folder_name(self) -> str:
        """``<geometry>_seed<seed>_<start>+<n>_<key16>``: readable, and unique per settings."""
        geo = self.config.geometry
        name = geo if isinstance(geo, str) else "x".join(map(str, self.grid))
        return f"{name}_seed{self.seed}_{self.start}+{self.n}_{self.key()[:16]}"


def cache_path(spec: SimulatedSet, cache_dir: str | os.PathLike[str]) -> Path:
    """The folder that holds (or will hold) the complete set ``spec`` under ``cache_dir``."""
    return Path(cache_dir).expanduser() / spec.folder_name()


def is_complete(spec: SimulatedSet, folder: Path) -> bool:
    """Whether ``folder`` holds the complete set ``spec`` (its ``cache.json`` names the same key).

    Raises:
        ValueError: ``folder`` has a ``cache.json`` for other settings or with another event count
            (a damaged or hand-edited cache); the message says to delete the folder.
    """
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
        ok = meta["key"] == spec.key() and int(meta["n_events"]) == spec.n
        missing = [f for f in meta["files"] if not (folder / f).is_file()]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"simulated-data cache {folder}: unreadable {_MANIFEST} ({exc}); delete the folder to rebuild it"
        ) from None
    if not ok or missing:
        what = "it describes other settings" if not ok else f"files {missing} are missing"
        raise ValueError(
            f"simulated-data cache {folder}: {what}; delete the folder to rebuild it (nothing else uses it)"
        )
    return True


def files_of(folder: Path) -> list[Path]:
    """The shower files of a complete set, in event order."""
    meta = json.loads((folder / _MANIFEST).read_text())
    return [folder / f for f in meta["files"]]


def check_space(spec: SimulatedSet, cache_dir: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` when the file system of ``cache_dir`` has less free space than the set needs.

    ``cache_dir`` need not exist yet: its nearest existing parent is asked.
    """
    where = Path(cache_dir).expanduser().absolute()
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = int(spec.nbytes * 1.01) + (1 << 20)  # HDF5 metadata, cache.json
    if need > free:
        raise ValueError(
            f"simulated-data cache {where}: {spec.n} events of grid {spec.grid} need {need / 1e9:.1f} GB "
            f"on disk but its file system has {free / 1e9:.1f} GB free; point data.cache_dir (or "
            f"${CACHE_ENV}) at a larger file system, or use fewer events (data.n_events)"
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); yields whether the lock is real.

    File systems without ``flock`` (some NFS or Lustre mounts) yield ``False`` at once: correctness
    then rests on the first-rename-wins rule of :func:`ensure`.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is writing the simulated-data cache (%s)", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_dead_builds(cache_dir: Path, name: str, host: str) -> None:
    """Delete temporary folders of ``name`` left by processes of this host that no longer run."""
    for tmp in cache_dir.glob(f".{name}.tmp-{host}-*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("removing %s, left by a build that was interrupted", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):  # not our naming, or another user's live process
            pass


def ensure(
    spec: SimulatedSet,
    cache_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    progress: bool = False,
    events_per_file: int = EVENTS_PER_FILE,
) -> Path:
    """The folder of the complete set ``spec`` under ``cache_dir``, simulating and writing it first if
    no process has yet (see the module docstring for how concurrent builders are kept apart).

    Args:
        spec: the events.
        cache_dir: the cache folder (created if needed).
        workers: simulator processes (``iter_simulate``); the events do not depend on it.
        progress: show the simulator's progress bar.
        events_per_file: showers per HDF5 file.

    Returns:
        The set's folder; :func:`files_of` lists its files.

    Raises:
        ValueError: not enough free disk space, or a damaged set under the final name.
        OSError: the cache folder cannot be written.
    """
    cache_dir = Path(cache_dir).expanduser()
    final = cache_path(spec, cache_dir)
    if is_complete(spec, final):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f"{final.name}.lock"):
        if is_complete(spec, final):  # another process finished it while we waited
            return final
        check_space(spec, cache_dir)
        host = socket.gethostname().replace("-", "_")
        _remove_dead_builds(cache_dir, final.name, host)
        # pid for the clean-up of dead builds; the random part keeps threads of one process apart
        tmp = cache_dir / f".{final.name}.tmp-{host}-{os.getpid()}-{secrets.token_hex(4)}"
        log.info("simulating %d showers into the cache %s", spec.n, final)
        t0 = time.perf_counter()
        try:
            chunks = iter_simulate(
                spec.n,
                energy=spec.energy,
                theta_deg=spec.theta_deg,
                config=spec.config,
                seed=spec.seed,
                start=spec.start,
                workers=workers,
                progress=progress,
            )
            # uncompressed: the pipeline reads cache files by positional reads (docs/data.md, "Storage")
            paths = formats.write_files(
                chunks,
                tmp,
                fmt=spec.file_format,
                events_per_file=events_per_file,
                prefix="showers",
                compression=None,
            )
            meta = {
                "key": spec.key(),
                "n_events": spec.n,
                "grid": list(spec.grid),
                "format": spec.file_format,
                "files": [p.name for p in paths],
                "settings": {
                    "n": spec.n,
                    "start": spec.start,
                    "seed": spec.seed,
                    "energy": str(spec.energy),
                    "theta_deg": list(spec.theta_deg),
                    "simulator": spec.config.describe(),
                    "cache_version": CACHE_VERSION,
                },
                "seconds": round(time.perf_counter() - t0, 1),
            }
            write_json(tmp / _MANIFEST, meta)  # last: a folder without it is never complete
            try:
                os.rename(tmp, final)
            except OSError:
                if not is_complete(spec, final):  # not a lost race: a real error
                    raise
                log.info("another process completed %s first; discarding this copy", final)
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("cache %s ready (%d showers, %.0f s)", final, spec.n, time.perf_counter() - t0)
    return final
