"""Optuna journal files for clusters: damage is named, never built upon; killed workers are noticed.

A journal file (``JournalStorage`` over ``JournalFileBackend``) is a log of JSON records, one a line,
appended under a lock file. Two things go wrong on a cluster:

- a writer killed in the middle of an append leaves a torn last line. Optuna's reader skips it (it could
  be a write in progress), and the next append is glued onto it, which turns the whole study into a file
  Optuna refuses to read, far from the cause. :class:`CheckedJournalFileBackend` checks the end of the
  file under the same lock before every append and when it is opened, and stops with
  :class:`JournalCorruptError` naming the file, the line and the ``truncate`` command that repairs it.
- a worker killed mid-trial leaves the trial ``RUNNING`` for ever. Optuna's heartbeat
  (``heartbeat_interval``, ``grace_period``, a stale-trial callback such as
  ``RetryHeartbeatStaleTrialCallback``) exists only for ``RDBStorage`` (Optuna 4 and 5 alike; the journal
  storage has none). :class:`HeartbeatJournalStorage` adds it: the heartbeat is a trial system attribute
  written by Optuna's own heartbeat machinery, and ``optuna.storages.fail_stale_trials`` fails and retries
  trials whose beat is older than the grace period.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage

# private module, but fail_stale_trials() and Optuna's heartbeat thread accept only subclasses of it
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

#: trial system attribute holding the time (seconds since the epoch) of the trial's last heartbeat
HEARTBEAT_ATTR = "hepgan:heartbeat"

_TAIL_CHUNK = 1 << 16


class JournalCorruptError(ValueError):
    """An Optuna journal file that cannot be read or safely appended to; the message names the file,
    the line and how to repair it."""


# ---------------------------------------------------------------------------------------------------------
# Damage detection
# ---------------------------------------------------------------------------------------------------------


def _record_problem(line: bytes) -> str | None:
    """Why ``line`` (with its newline) is not a journal record, or None when it is one."""
    try:
        rec = json.loads(line)
    except ValueError:
        return "it is not JSON"
    if not isinstance(rec, dict) or "op_code" not in rec:
        return "it is JSON but not an Optuna journal record (no 'op_code')"
    return None


def _last_line(f: Any, size: int) -> tuple[int, bytes]:
    """Byte offset and content of the last line of the open binary file ``f`` of ``size`` bytes."""
    end = size - 1  # a final newline ends the last line, it does not start an empty one
    pos = end
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            begin = start + nl + 1
            break
        pos = start
    else:
        begin = 0
    f.seek(begin)
    return begin, f.read(size - begin)


def diagnose(path: str | os.PathLike) -> JournalCorruptError | None:
    """The first damaged line of the journal ``path`` as an error to raise, or None when every line is a
    whole journal record. Reads the whole file: for error paths and repairs, not for every access."""
    total = 0
    first: tuple[int, int, bytes, str] | None = None  # line number, byte offset, line, reason
    offset = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            total = n
            if first is None:
                reason = "it has no end of line" if not line.endswith(b"\n") else _record_problem(line)
                if reason is not None:
                    first = (n, offset, line, reason)
            offset += len(line)
    if first is None:
        return None
    n, off, line, reason = first
    return JournalCorruptError(_message(str(path), n, total, off, line, reason))


def _message(path: str, n: int, total: int, offset: int, line: bytes, reason: str) -> str:
    shown = line[:60].decode("utf-8", "replace").rstrip("\n")
    more = "..." if len(line) > 60 else ""
    if n == total and not line.endswith(b"\n"):
        return (
            f"Optuna journal {path!r} ends in a torn record: line {n} (the last, {len(line)} bytes from "
            f"byte {offset}: {shown!r}{more}) is incomplete, as when a process is killed while writing it; "
            f"nothing has been appended after it. Stop every process using this study, keep a copy of the "
            f"file, then 'truncate -s {offset} {path}' removes just that unfinished record (only the one "
            f"operation it was writing is lost: a trial it was finishing stays RUNNING until a heartbeat or "
            f"'hepgan-sweep retry --stale' retries it)."
        )
    if n == 1:
        return (
            f"{path!r} is not an Optuna journal: line 1 ({shown!r}{more}) is not a journal record "
            f"({reason}). Point --storage / --study-dir at the study's journal file, or at a new file "
            "to start a study."
        )
    return (
        f"Optuna journal {path!r} is damaged at line {n} of {total} (byte {offset}: {shown!r}{more}): "
        f"{reason}. hepgan never appends after a damaged record, so this was written by something else "
        f"(an older client appending after a torn record, an edit, a copy cut short). Stop every process "
        f"using this study and keep a copy of the file; 'truncate -s {offset} {path}' keeps the {n - 1} "
        f"records before it and drops the {total - n + 1} from there on."
    )


def check_tail(path: str | os.PathLike) -> None:
    """Raise :class:`JournalCorruptError` unless the journal ``path`` is empty or ends with a whole
    record. Reads only the last line; call it with the journal's lock held (a write in progress looks
    torn too)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return
            _, last = _last_line(f, size)
    except OSError as exc:
        raise JournalCorruptError(f"Optuna journal {str(path)!r} cannot be read ({exc.strerror})") from None
    if last.endswith(b"\n") and _record_problem(last) is None:
        return
    raise diagnose(path) or JournalCorruptError(
        f"Optuna journal {str(path)!r} changed while it was being checked; run the command again"
    )


class CheckedJournalFileBackend(JournalFileBackend):
    """``JournalFileBackend`` that refuses to read past or append after a damaged record.

    Uses the same lock file as Optuna's default (``<path>.lock``, symlink lock, safe on NFS), so plain
    Optuna clients and hepgan workers exclude each other as before.
    """

    def __init__(self, file_path: str | os.PathLike) -> None:
        self._path = str(file_path)
        self._guard = JournalFileSymlinkLock(self._path)
        super().__init__(self._path, lock_obj=self._guard)
        with self._locked():
            check_tail(self._path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._guard.acquire()
        try:
            yield
        finally:
            self._guard.release()

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Optuna's reader; a damaged line becomes a :class:`JournalCorruptError` naming it."""
        try:
            yield from super().read_logs(log_number_from)
        except ValueError as exc:
            raise diagnose(self._path) or JournalCorruptError(
                f"Optuna journal {self._path!r} cannot be read ({exc})"
            ) from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs`` (one JSON line each, fsynced) after checking, under the lock, that the file
        ends with a whole record."""
        text = "".join(json.dumps(rec, separators=(",", ":")) + "\n" for rec in logs)
        with self._locked():
            check_tail(self._path)
            with open(self._path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------------------
# Heartbeat
# ---------------------------------------------------------------------------------------------------------


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` with Optuna's heartbeat protocol, as ``RDBStorage`` has it.

    ``heartbeat_interval`` (s): how often a running trial's worker records that it is alive.
    ``grace_period`` (s, default twice the interval): a ``RUNNING`` trial whose last beat (or start, if
    later) is older than this is stale, and ``optuna.storages.fail_stale_trials`` fails it and calls
    ``heartbeat_stale_trial_callback`` (e.g. ``RetryHeartbeatStaleTrialCallback``, which re-enqueues its
    parameters). Trials that never had a beat (asked by ``hepgan-sweep ask`` for an array job) are never
    stale here. The beat is the worker's wall clock compared with the checker's: keep the grace period
    well above the clock skew between nodes (NTP keeps it under a second).
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        *,
        heartbeat_interval: float,
        grace_period: float | None = None,
        heartbeat_stale_trial_callback: Callable[[Any, FrozenTrial], None] | None = None,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat interval must be > 0 seconds; got {heartbeat_interval}")
        if grace_period is not None and grace_period <= heartbeat_interval:
            raise ValueError(
                f"grace period ({grace_period} s) must be longer than the heartbeat interval "
                f"({heartbeat_interval} s), or live trials would be failed"
            )
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period if grace_period is not None else 2 * heartbeat_interval
        self._stale_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        """Record now as the last beat of ``trial_id`` (called by Optuna's heartbeat thread)."""
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # another worker already failed it as stale; its retry is queued
        except Exception as exc:
            # the heartbeat thread must outlive a file-system hiccup: a dead thread means a retried trial
            log.warning("heartbeat of trial id %d not recorded (%s); trying again", trial_id, exc)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None:
                continue
            # a retried trial inherits its predecessor's old beat: its own start counts as a beat too
            started = t.datetime_start.timestamp() if t.datetime_start is not None else 0.0
            if now - max(float(beat), started) > self._grace_period:
                stale.append(self.get_trial_id_from_study_id_trial_number(study_id, t.number))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between beats (Optuna types it ``int``; fractions work and keep tests fast)."""
        return self._heartbeat_interval  # type: ignore[return-value]

    def get_heartbeat_stale_trial_callback(self) -> Callable[[Any, FrozenTrial], None] | None:
        """The callback run on each trial failed as stale."""
        return self._stale_callback

    # Optuna < 4.9 asks for it under its old name
    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # type: ignore[assignment]
