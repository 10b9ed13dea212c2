"""Progress of long commands: a live bar on a terminal, periodic self-contained lines in a log.

One facility for every long command (``hepgan-train``, ``-simulate``, ``-generate``, ``-evaluate``,
``hepgan-data convert``). Where the progress goes is decided by its stream (stderr by default):

* a terminal (``stream.isatty()``): a rich progress bar per task with the count, the rate in the
  command's unit (``showers/s``, ``steps/s``), the elapsed time and the time remaining;
* anything else (a Slurm or LSF log, a pipe): plain lines, each flushed at once and readable on its
  own: one every ``HEPGAN_PROGRESS_INTERVAL`` seconds (default 30) while a task runs, also during a
  long stage that reports no count, and one when it ends::

    [hepgan] train 1200/4096 steps (29%) 3.1 steps/s 49.6 showers/s elapsed 6m27s eta 15m26s d=0.41 g=1.2
    [hepgan] evaluate classifier_cells running elapsed 1m00s
    [hepgan] evaluate classifier_cells done elapsed 1m34s

  ``grep '^\\[hepgan\\] train'`` follows a run. The rate of a running line is the one since the
  task's previous line; the final line gives the average over the task. A task that fails before its
  first line prints nothing, so a command that stops at once leaves only its error message.

``HEPGAN_PROGRESS`` chooses the display for every command: ``auto`` (the default: bar on a terminal,
lines otherwise), ``bar``, ``plain`` or ``off``. A command's own switch (``--no-progress``, ``--quiet``,
``logging.progress=false``) turns it off regardless; in multi-process runs only the main process shows
progress (its caller passes ``enabled=False`` elsewhere).

    with track("simulate", total=n, unit="showers", enabled=show) as task:
        for part in parts:
            task.advance(len(part))

    with Progress("evaluate", enabled=show) as progress:
        with progress.task("observables", total=n, unit="showers") as task:
            ...
        with progress.stage("fpd"):  # no count: running lines while it lasts, then its time
            ...
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.progress import Task as RichTask
from rich.text import Text

log = logging.getLogger(__name__)

INTERVAL_ENV = "HEPGAN_PROGRESS_INTERVAL"
"""Environment variable: seconds between two plain progress lines of a task (default 30)."""
MODE_ENV = "HEPGAN_PROGRESS"
"""Environment variable: ``auto``, ``bar``, ``plain`` or ``off`` (see the module docstring)."""
DEFAULT_INTERVAL = 30.0
MODES = ("auto", "bar", "plain", "off")
PREFIX = "[hepgan]"


def interval_from_env() -> float:
    """Seconds between plain progress lines: ``$HEPGAN_PROGRESS_INTERVAL`` (a number >= 0), else 30.
    An unreadable value is reported as a warning and the default used (a typo in a job script must not
    stop a run)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        log.warning("%s=%r is not a number of seconds >= 0; using %g", INTERVAL_ENV, text, DEFAULT_INTERVAL)
        return DEFAULT_INTERVAL
    return value


def mode_from_env() -> str:
    """The display ``$HEPGAN_PROGRESS`` asks for (one of :data:`MODES`; ``auto`` when unset or unknown)."""
    text = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
    if text not in MODES:
        log.warning("%s=%r is not one of %s; using auto", MODE_ENV, text, "/".join(MODES))
        return "auto"
    return text


def format_duration(seconds: float) -> str:
    """``3.2s``, ``42s``, ``6m27s`` or ``2h03m``: short and unambiguous in a log line."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_rate(rate: float) -> str:
    """A rate with three significant digits, without an exponent for rates of 100 and more."""
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"


def _format_field(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


class Task:
    """One piece of work of a :class:`Progress`: a count towards ``total`` in ``unit`` or, with no
    ``unit``, a stage shown by its time. Use it as a context manager (the end of a ``with`` block that
    raised is a ``stopped`` task) or call :meth:`close`.

    ``per_unit``: further units per ``unit``, shown as rates too (``{"showers": 16}`` for training steps
    of 16 showers). The tasks of a disabled :class:`Progress` only count.
    """

    def __init__(
        self,
        owner: Progress,
        name: str,
        total: int | None,
        unit: str,
        completed: int,
        per_unit: dict[str, float] | None,
    ) -> None:
        self._owner = owner
        self.name = name
        self.total = total
        self.unit = unit
        self.completed = completed
        self.per_unit = dict(per_unit or {})
        self.fields: dict[str, Any] = {}
        self.closed = False
        self.lines = 0  # plain lines printed so far
        now = owner.clock()
        self._start_time, self._start_count = now, completed
        self._line_time, self._line_count = now, completed
        self._rich_id: Any = None
        owner._started(self)

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Count ``n`` more units done; ``fields`` (``d=0.41``) are shown after the rates from now on."""
        self.update(self.completed + n, **fields)

    def update(self, completed: int | None = None, *, total: int | None = None, **fields: Any) -> None:
        """Set the count (it may go back, as after a training rollback: the rates restart there), the
        total and the shown fields (given alone, they wait for the next count to be shown)."""
        with self._owner._lock:
            if completed is not None:
                if completed < self._line_count:
                    now = self._owner.clock()
                    self._line_time, self._line_count = now, completed
                    self._start_time, self._start_count = now, completed
                self.completed = completed
            if total is not None:
                self.total = total
            self.fields.update(fields)
            if completed is not None or total is not None:
                self._owner._changed(self)

    def close(self, ok: bool = True) -> None:
        """End the task with its final line: ``done``, or, when ``ok`` is false, ``stopped`` if it printed
        anything before (a task that fails at once stays silent). Closing again does nothing."""
        with self._owner._lock:
            if not self.closed:
                self.closed = True
                self._owner._finished(self, ok)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(ok=exc_type is None)

    def line(self, now: float, state: str) -> str:
        """The plain line at ``now`` (seconds of the owner's clock); ``state``: ``running``, ``done`` or
        ``stopped``. A running line gives the rate since the previous line, a final one the average."""
        label = f"{PREFIX} {self._owner.command}" + (f" {self.name}" if self.name else "")
        parts = [label, state] if (state != "running" or not self.unit) else [label]
        elapsed = now - self._start_time
        rate: float | None = None
        if self.unit:
            if self.total is not None:
                pct = int(100 * self.completed / self.total) if self.total > 0 else 100
                parts.append(f"{self.completed}/{self.total} {self.unit} ({pct}%)")
            else:
                parts.append(f"{self.completed} {self.unit}")
            if state == "running":
                span, done = now - self._line_time, self.completed - self._line_count
            else:
                span, done = elapsed, self.completed - self._start_count
            rate = done / span if span > 0 and done > 0 else None
            if rate is not None:
                parts.append(f"{format_rate(rate)} {self.unit}/s")
                parts += [f"{format_rate(rate * k)} {u}/s" for u, k in self.per_unit.items()]
        parts.append(f"elapsed {format_duration(elapsed)}")
        left = None if self.total is None else self.total - self.completed
        if self.unit and state == "running" and rate is not None and left is not None and left > 0:
            parts.append(f"eta {format_duration(left / rate)}")
        parts += [f"{k}={_format_field(v)}" for k, v in self.fields.items()]
        return " ".join(parts)


class Progress:
    """The progress display of one command (``command``: the word its lines start with, ``train``).

    ``enabled``: False shows nothing (``--no-progress``; processes other than the main one).
    ``stream``: where to write (default: ``sys.stderr`` when created). ``interval``: seconds between the
    plain lines of a task (default ``$HEPGAN_PROGRESS_INTERVAL``, else 30); 0 prints one at every update.
    ``mode``: one of :data:`MODES` (default ``$HEPGAN_PROGRESS``, else auto: a bar when the stream is a
    terminal). ``clock``: monotonic seconds; ``ticker``: whether a background thread prints the due lines
    of tasks that receive no updates (a long stage), every ``interval`` seconds. Use as a context
    manager; tasks still open at its end are closed with it.
    """

    def __init__(
        self,
        command: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float | None = None,
        mode: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        ticker: bool = True,
    ) -> None:
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval_from_env() if interval is None else float(interval)
        mode = mode_from_env() if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}; got {mode!r}")
        if not enabled or mode == "off":
            self.kind = "off"
        elif mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            self.kind = "bar" if callable(isatty) and isatty() else "plain"
        else:
            self.kind = mode
        self.clock = clock
        self._tasks: list[Task] = []
        self._rich: RichProgress | None = None
        self._lock = threading.RLock()
        self._ticker = self.kind == "plain" and ticker and self.interval > 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # started with the first task

    @property
    def enabled(self) -> bool:
        """Whether anything is shown."""
        return self.kind != "off"

    def task(
        self,
        name: str = "",
        *,
        total: int | None = None,
        unit: str = "",
        completed: int = 0,
        per_unit: dict[str, float] | None = None,
    ) -> Task:
        """Start a task (see :class:`Task`): ``name`` follows the command in its lines (``""``: the
        command's main task), ``total`` units to do (None: unknown), ``completed`` already done (a resumed
        run). With no ``unit``, a stage shown by its time."""
        with self._lock:
            return Task(self, name, total, unit, completed, per_unit)

    def stage(self, name: str) -> Task:
        """A task without a count: ``with progress.stage("fpd"): ...``."""
        return self.task(name)

    def tick(self) -> None:
        """Print the running line of every open task whose last line is ``interval`` seconds old (the
        background thread calls this; a task's updates do it for that task)."""
        with self._lock:
            if self.kind == "plain":
                now = self.clock()
                for task in self._tasks:
                    if now - task._line_time >= self.interval:
                        self._emit(task, now, "running")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(ok=exc_type is None)

    def close(self, ok: bool = True) -> None:
        """Close the tasks still open (``ok``: as :meth:`Task.close`), the ticker and the live bar."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._lock:
            for t in list(self._tasks):
                t.close(ok)
            if self._rich is not None:
                self._rich.stop()
                self._rich = None

    # ---- called by the tasks, with the lock held ------------------------------------------------------
    def _started(self, task: Task) -> None:
        self._tasks.append(task)
        if self._ticker and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick_loop, name="hepgan-progress", daemon=True)
            self._thread.start()
        if self.kind == "bar":
            desc = f"{self.command} {task.name}".strip()
            task._rich_id = self._bar().add_task(
                desc,
                total=task.total if task.unit else None,
                completed=task.completed,
                unit=task.unit,
                per_unit=task.per_unit,
                extra="",
            )

    def _changed(self, task: Task) -> None:
        if self.kind == "plain":
            now = self.clock()
            if now - task._line_time >= self.interval:
                self._emit(task, now, "running")
        elif self.kind == "bar" and self._rich is not None:
            extra = " ".join(f"{k}={_format_field(v)}" for k, v in task.fields.items())
            self._rich.update(task._rich_id, completed=task.completed, total=task.total, extra=extra)

    def _finished(self, task: Task, ok: bool) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if self.kind == "plain" and (ok or task.lines):
            self._emit(task, self.clock(), "done" if ok else "stopped")
        elif self.kind == "bar" and self._rich is not None:
            done = task.completed if task.unit else 1
            self._rich.update(task._rich_id, completed=done, total=task.total if task.unit else 1)
            self._rich.stop_task(task._rich_id)

    def _emit(self, task: Task, now: float, state: str) -> None:
        print(task.line(now, state), file=self.stream, flush=True)
        task.lines += 1
        task._line_time, task._line_count = now, task.completed

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def _bar(self) -> RichProgress:
        if self._rich is None:
            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                _CountColumn(),
                _RateColumn(),
                TextColumn("{task.fields[extra]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream, force_terminal=True),
            )  # (prints to stdout/stderr meanwhile appear above the bars)
            self._rich.start()
        return self._rich


class _CountColumn(ProgressColumn):
    """``1200/4096 steps`` (``1200 showers`` without a total; nothing for a stage)."""

    def render(self, task: RichTask) -> Text:
        unit = task.fields.get("unit", "")
        if not unit:
            return Text("")
        done = int(task.completed)
        return Text(f"{done}/{int(task.total)} {unit}" if task.total is not None else f"{done} {unit}")


class _RateColumn(ProgressColumn):
    """``3.1 steps/s 49.6 showers/s`` from rich's own speed estimate."""

    def render(self, task: RichTask) -> Text:
        unit, speed = task.fields.get("unit", ""), task.speed
        if not unit or speed is None:
            return Text("")
        rates = [f"{format_rate(speed)} {unit}/s"]
        rates += [f"{format_rate(speed * k)} {u}/s" for u, k in task.fields.get("per_unit", {}).items()]
        return Text(" ".join(rates))


@contextmanager
def track(
    command: str,
    *,
    total: int | None,
    unit: str,
    enabled: bool = True,
    completed: int = 0,
    per_unit: dict[str, float] | None = None,
    stream: TextIO | None = None,
    interval: float | None = None,
    mode: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Task]:
    """The one task of a command with one count: ``with track("generate", total=n, unit="showers") as
    task: ... task.advance(k)``. Arguments as :class:`Progress` and :meth:`Progress.task`."""
    with Progress(command, enabled=enabled, stream=stream, interval=interval, mode=mode, clock=clock) as p:
        with p.task(total=total, unit=unit, completed=completed, per_unit=per_unit) as task:
            yield task
