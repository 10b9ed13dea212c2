"""``hepgan-bench peers``: hepgan against the published 3DGAN and AngleGAN in Keras 3 on TensorFlow (oneDNN).

The peer (``hepgan/bench/peers_keras.py``, run by the interpreter of a separate environment, ``make
peers-venv``) and hepgan's side (:mod:`hepgan.bench.peers_worker`) are long-lived worker processes that
speak one line protocol (JSON objects: a ``ready`` message with parameter and pass counts, then ``train``
and ``generate`` commands answered with per-call wall times). For each model (``fixed25``, ``angle51``)
and global batch (16, 64) the driver starts the peer and then, one at a time, hepgan on each CPU layout:

- ``one_process``: one JAX device on all cores (``parallel.cpu_layout=shared``, backend ``xla``);
- ``per_core``: one single-threaded device per core in one process (``shard_map``, global-batch BatchNorm);
- ``mpi``: ``mpirun -n <cores>`` single-threaded processes (``parallel=mpi``), each pinned to a core.

(``per_core`` and ``mpi`` take the most cores that divide the global batch.)

At most two workers live at once: the peer and one hepgan layout. Before anything is timed, the two must
report the same trainable parameter counts per player and the same passes per training iteration
(generator inference for the fakes, discriminator and generator optimizer updates); otherwise the
comparison is refused and the row says why. Each side then makes ``warmup`` untimed calls (compilation),
and for each of ``repeats`` rounds the driver alternates the sides call by call (peer train, hepgan
train, peer generate, hepgan generate), each call ``iters`` iterations of one global batch, each preceded
by a wait for an idle machine (``/proc/stat`` sampled over 0.5 s windows until fewer than
``idle_threshold`` cores are busy, at most ``idle_timeout`` s; the busy level just before the call is
recorded).

Per (model, batch, layout): the median over the repeats of each call's median time, as generation
showers/s and training samples/s for both sides, and the ratio hepgan / peer (above 1: hepgan faster).
``peers.json`` (with the machine, :func:`hepgan.bench.common.write_result`) and ``peers.md`` (a table for
the README) are written to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hepgan.bench.peers_worker import ARCHS, LAYOUTS

BATCHES = (16, 64)
OPS = ("train", "generate")
SIDES = ("peer", "hepgan")
DEFAULT_PEER_PYTHON = ".venv-peers/bin/python"
PEER_SCRIPT = Path(__file__).with_name("peers_keras.py")
# the worker needs its ready line within this (imports, model build, the peer's own warm-up)
START_TIMEOUT_S = 1800.0
# one call of `iters` paper iterations; angle51 at batch 64 takes minutes per iteration on 2 cores
CALL_TIMEOUT_S = 7200.0


class MissingPeer(FileNotFoundError):
    """The peer environment (its interpreter or the peer worker script) is not there."""


# ----------------------------------------------------------------------------------------------------
# An idle machine
# ----------------------------------------------------------------------------------------------------


def read_proc_stat() -> str:
    """The text of ``/proc/stat`` (the kernel's CPU time counters)."""
    with open("/proc/stat") as f:
        return f.read()


def cpu_jiffies(text: str) -> tuple[int, int, int]:
    """``(busy, total, cores)`` from the text of ``/proc/stat``: jiffies spent busy and in all, summed
    over all CPUs (idle and iowait count as idle; guest time is already inside user time), and the number
    of CPUs (``cpuN`` lines). Raises ``ValueError`` without an aggregate ``cpu`` line."""
    busy = total = None
    cores = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            v = [int(x) for x in rest.split()][:8]  # user nice system idle iowait irq softirq steal
            v += [0] * (8 - len(v))
            total = sum(v)
            busy = total - v[3] - v[4]
        elif name.startswith("cpu") and name[3:].isdigit():
            cores += 1
    if busy is None or total is None:
        raise ValueError("/proc/stat: no aggregate 'cpu' line")
    return busy, total, cores or (os.cpu_count() or 1)


def busy_cores(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """Cores busy on average between two :func:`cpu_jiffies` readings (0 when no time passed)."""
    d_busy, d_total = after[0] - before[0], after[1] - before[1]
    if d_total <= 0:
        return 0.0
    return max(d_busy, 0) / d_total * after[2]


@dataclass
class IdleWaiter:
    """Waits until the machine is idle: ``/proc/stat`` sampled over windows of ``window_s`` until fewer
    than ``threshold`` cores are busy, for at most ``timeout_s`` seconds. ``read_stat``, ``sleep`` and
    ``clock`` are the system's unless replaced (tests)."""

    threshold: float = 0.1
    window_s: float = 0.5
    timeout_s: float = 60.0
    read_stat: Callable[[], str] = read_proc_stat
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def wait(self) -> dict[str, Any]:
        """Wait (see the class); returns ``{"busy_cores": the last window's level, "waited_s",
        "idle": whether it fell below the threshold before the timeout}``."""
        t0 = self.clock()
        prev = cpu_jiffies(self.read_stat())
        while True:
            self.sleep(self.window_s)
            cur = cpu_jiffies(self.read_stat())
            busy = busy_cores(prev, cur)
            prev = cur
            waited = self.clock() - t0
            if busy < self.threshold or waited >= self.timeout_s:
                return {"busy_cores": busy, "waited_s": waited, "idle": busy < self.threshold}


# ----------------------------------------------------------------------------------------------------
# Workers: processes that speak the protocol
# ----------------------------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker failed: it answered ``{"error": ...}``, exited, broke the protocol or timed out."""


class Mismatch(ValueError):
    """The two sides do not run the same model or the same passes: their speeds are not comparable."""


@dataclass
class Worker:
    """One worker process: ``cmd`` started with ``env`` (None: this process's environment) in a session
    of its own; answers are read by a thread, so every wait has a timeout. A worker that does not exit
    after ``quit`` is killed with its descendants. Lines on stdout that are not
    JSON objects are kept in ``noise``; stderr goes to a temporary file whose tail error messages quote."""

    name: str
    cmd: list[str]
    env: dict[str, str] | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    noise: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def start(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Start the process and return its ``ready`` message. Raises :class:`WorkerError`."""
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=self.env,
                text=True,
                bufsize=1,
                start_new_session=True,  # a Ctrl-C at the driver's terminal reaches the driver only
            )
        except OSError as exc:
            raise WorkerError(f"{self.name}: cannot start {self.cmd[0]!r}: {exc}") from None
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        msg = self._receive(timeout)
        if msg.get("ready") is not True:
            raise WorkerError(f"{self.name}: expected a ready message first, got {msg}")
        self.ready = msg
        return msg

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters the worker wrote to stderr."""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-chars:]

    def _fail(self, what: str) -> WorkerError:
        tail = self.stderr_tail().strip()
        return WorkerError(f"{self.name}: {what}" + (f"\n--- its stderr (tail) ---\n{tail}" if tail else ""))

    def _receive(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise self._fail(f"no answer within {timeout:.0f} s") from None
            if line is None:
                code = self.proc.wait() if self.proc is not None else None
                raise self._fail(f"exited (code {code}) without answering")
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                msg = None
            if not isinstance(msg, dict):
                self.noise.append(line.rstrip("\n"))
                continue
            if "error" in msg:
                raise self._fail(f"answered an error: {msg['error']}")
            return msg

    def send(self, msg: dict[str, Any]) -> None:
        """Write one command line. Raises :class:`WorkerError` when the worker is gone."""
        if self.proc is None or self.proc.stdin is None:
            raise WorkerError(f"{self.name}: not started")
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._fail("exited before the command") from None

    def call(self, op: str, n: int, timeout: float = CALL_TIMEOUT_S) -> list[float]:
        """``n`` timed calls of ``op`` (``train``/``generate``); their wall times in seconds."""
        self.send({"op": op, "n": n})
        msg = self._receive(timeout)
        secs = msg.get("seconds")
        if (
            not isinstance(secs, list)
            or len(secs) != n
            or not all(isinstance(s, int | float) and s > 0 for s in secs)
        ):
            raise self._fail(f"answered {op} n={n} with {msg}, not {n} positive times")
        return [float(s) for s in secs]

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory (VmHWM) summed over the worker's processes, in MiB; None if unknown."""
        if self.proc is None:
            return None
        total, found = 0, False
        for pid in _tree(self.proc.pid):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1])
                            found = True
        return total / 1024 if found else None

    def close(self, timeout: float = 60.0) -> None:
        """Send ``quit``, wait for the exit, kill the worker and its descendants if it does not."""
        if self.proc is None:
            self._stderr.close()
            return
        with contextlib.suppress(WorkerError, OSError):
            self.send({"op": "quit"})
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in reversed(_tree(self.proc.pid)):  # the ranks before their launcher
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)  # its end of input: every process holding the pipe has exited
        if self._reader is None or not self._reader.is_alive():
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        self._stderr.close()


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (mpirun's proxies and ranks may leave its session, not its tree)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


# ----------------------------------------------------------------------------------------------------
# One comparison
# ----------------------------------------------------------------------------------------------------


def check_same(arch: str, peer: dict[str, Any], hepgan: dict[str, Any]) -> None:
    """Refuse (raise :class:`Mismatch`, naming the numbers) unless the two ``ready`` messages report the
    same trainable parameters per player and the same passes per training iteration."""
    problems = []
    for who, player in (("g", "generator"), ("d", "discriminator")):
        p, h = peer.get("params", {}).get(who), hepgan.get("params", {}).get(who)
        if p != h:
            problems.append(f"the {player} has {p} trainable parameters in the peer and {h} in hepgan")
    if peer.get("passes") != hepgan.get("passes"):
        problems.append(
            f"one training iteration makes the passes {peer.get('passes')} in the peer and "
            f"{hepgan.get('passes')} in hepgan"
        )
    if problems:
        raise Mismatch(
            f"{arch}: not compared: " + "; ".join(problems) + ". The two sides would not be timing the same "
            "model or the same update, so a speed ratio would mean nothing."
        )


def _side_stats(calls: list[list[float]], batch: int) -> dict[str, Any]:
    medians = [statistics.median(c) for c in calls]
    median = statistics.median(medians)
    return {"seconds": calls, "call_medians_s": medians, "median_s": median, "per_s": batch / median}


def compare(
    batch: int,
    peer: Worker,
    hepgan: Worker,
    *,
    repeats: int,
    iters: int,
    waiter: IdleWaiter,
    timeout: float = CALL_TIMEOUT_S,
) -> dict[str, Any]:
    """Time both (started, warmed-up) workers at global batch ``batch``: ``repeats`` rounds, each of them
    a train call then a generate call of ``iters`` iterations per side, the sides alternating call by call
    (peer first), each call after ``waiter.wait()``. Returns per op both sides' times (``seconds`` per
    call, ``call_medians_s``, ``median_s`` = median of the call medians, ``per_s`` = showers resp.
    samples per second) and ``ratio`` = hepgan / peer throughput; ``idle``: the wait before each call;
    ``order``: the calls in the order made."""
    calls: dict[str, dict[str, list[list[float]]]] = {op: {s: [] for s in SIDES} for op in OPS}
    idle: list[dict[str, Any]] = []
    order: list[str] = []
    workers = {"peer": peer, "hepgan": hepgan}
    for r in range(repeats):
        for op in OPS:
            for side in SIDES:
                level = waiter.wait()
                calls[op][side].append(workers[side].call(op, iters, timeout))
                idle.append({"repeat": r, "op": op, "side": side, **level})
                order.append(f"{side} {op}")
    out: dict[str, Any] = {}
    for op in OPS:
        stats = {side: _side_stats(calls[op][side], batch) for side in SIDES}
        out[op] = {**stats, "ratio": stats["hepgan"]["per_s"] / stats["peer"]["per_s"]}
    out["idle"] = idle
    out["busy_cores_max"] = max(i["busy_cores"] for i in idle)
    out["order"] = order
    return out


# ----------------------------------------------------------------------------------------------------
# Commands of the two sides
# ----------------------------------------------------------------------------------------------------


def workers_for(batch: int, cores: int) -> int:
    """Data-parallel workers of a per-core layout: the most cores that divide the global batch (as
    :func:`hepgan.parallel.cpu.configure` picks its device count)."""
    return max(k for k in range(1, max(cores, 1) + 1) if batch % k == 0)


def peer_command(peer_python: str, arch: str, batch: int, threads: int) -> list[str]:
    """The peer worker's command line (its interpreter runs the script file: hepgan is not installed
    there)."""
    return [peer_python, str(PEER_SCRIPT), "--arch", arch, "--batch", str(batch), "--threads", str(threads)]


def hepgan_command(arch: str, batch: int, layout: str, cores: int) -> tuple[list[str], dict[str, str]]:
    """hepgan's worker command line and environment for ``layout`` on ``cores`` cores. The environment
    is this process's without ``XLA_FLAGS`` (the layout sets XLA's device count and threads) and with
    ``JAX_PLATFORMS=cpu``; ``mpi`` runs ``mpirun -n <workers>``, rank ``i`` pinned to core ``i``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    args = [sys.executable, "-m", "hepgan.bench.peers_worker", "--arch", arch, "--batch", str(batch)]
    args += ["--layout", layout]
    if layout != "mpi":
        return args, env
    n = workers_for(batch, cores)
    mpirun = str(Path(sys.executable).parent / "mpirun")
    if shutil.which("taskset") is None:
        return [mpirun, "-n", str(n), *args], env
    pin = f"exec taskset -c $(( ${{PMI_RANK:-${{OMPI_COMM_WORLD_RANK:-0}}}} % {cores} )) "
    return [mpirun, "-n", str(n), "sh", "-c", pin + shlex.join(args)], env


# ----------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------


def check_peer(peer_python: str, script: Path = PEER_SCRIPT) -> str:
    """The peer interpreter as an executable path; raises :class:`MissingPeer` (``FileNotFoundError``)
    with a paragraph saying how to make the peer environment."""
    exe = shutil.which(peer_python) if os.sep not in peer_python else peer_python
    if exe is None or not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise MissingPeer(
            f"hepgan-bench peers: no peer interpreter at {peer_python!r}. The benchmark compares hepgan "
            "with the published 3DGAN and AngleGAN written in Keras 3 on TensorFlow (oneDNN on CPU), "
            "which runs in an environment of its own because TensorFlow's pins conflict with hepgan's. "
            "Create it with `make peers-venv` (TensorFlow and NumPy in .venv-peers), or pass "
            "--peer-python with an interpreter that has TensorFlow."
        )
    if not script.is_file():
        raise MissingPeer(f"hepgan-bench peers: the peer worker {script} is missing from this installation.")
    return exe


def run(
    quick: bool = False,
    *,
    archs: Sequence[str] | None = None,
    batches: Sequence[int] | None = None,
    layouts: Sequence[str] | None = None,
    repeats: int | None = None,
    iters: int | None = None,
    warmup: int = 1,
    peer_python: str = DEFAULT_PEER_PYTHON,
    waiter: IdleWaiter | None = None,
    peer_cmd: Callable[[str, int], list[str]] | None = None,
    hepgan_cmd: Callable[[str, int, str], tuple[list[str], dict[str, str] | None]] | None = None,
    call_timeout: float = CALL_TIMEOUT_S,
    start_timeout: float = START_TIMEOUT_S,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compare hepgan with the peer (see the module docstring); returns the JSON-able result.

    ``quick``: fixed25, batch 16, ``one_process``, 1 repeat of 2 iterations, for whatever is not given.
    Defaults otherwise: both models, batches 16 and 64, all layouts, 3 repeats of 5 iterations.
    ``peer_cmd(arch, batch)`` and ``hepgan_cmd(arch, batch, layout) -> (cmd, env)`` make the workers'
    command lines (default: :func:`peer_command` with ``peer_python``, :func:`hepgan_command`).
    Raises :class:`MissingPeer` without the peer interpreter (when ``peer_cmd`` is not given).
    A refused or failed comparison is a row with ``status`` ``refused`` resp. ``failed`` and its
    ``reason``; the other rows still run.
    """
    from hepgan.parallel.cpu import usable_cores

    archs = list(archs or (["fixed25"] if quick else ARCHS))
    batches = list(batches or ([16] if quick else BATCHES))
    layouts = list(layouts or (["one_process"] if quick else LAYOUTS))
    repeats = repeats or (1 if quick else 3)
    iters = iters or (2 if quick else 5)
    waiter = waiter or IdleWaiter()
    cores = usable_cores()
    if peer_cmd is None:
        exe = check_peer(peer_python)

        def peer_cmd(arch: str, batch: int) -> list[str]:
            return peer_command(exe, arch, batch, cores)

    if hepgan_cmd is None:

        def hepgan_cmd(arch: str, batch: int, layout: str) -> tuple[list[str], dict[str, str] | None]:
            return hepgan_command(arch, batch, layout, cores)

    make_peer, make_side = peer_cmd, hepgan_cmd

    def hepgan_worker(arch: str, batch: int, layout: str) -> Worker:
        cmd, env = make_side(arch, batch, layout)
        return Worker(f"hepgan {layout}", cmd, env)

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for arch in archs:
        for batch in batches:
            rows += _case(
                arch,
                batch,
                layouts,
                Worker("peer", make_peer(arch, batch)),
                functools.partial(hepgan_worker, arch, batch),
                repeats=repeats,
                iters=iters,
                warmup=warmup,
                waiter=waiter,
                call_timeout=call_timeout,
                start_timeout=start_timeout,
                log=log,
            )
    frameworks = {}
    for side in SIDES:
        seen = {r[side]["framework"] for r in rows if r.get(side, {}).get("framework")}
        frameworks[side] = sorted(seen)
    return {
        "archs": archs,
        "batches": batches,
        "layouts": layouts,
        "repeats": repeats,
        "iters": iters,
        "warmup": warmup,
        "cores": cores,
        "idle": {
            "threshold_cores": waiter.threshold,
            "window_s": waiter.window_s,
            "timeout_s": waiter.timeout_s,
        },
        "frameworks": frameworks,
        "rows": rows,
        "wall_s": time.perf_counter() - t_start,
        "quick": quick,
        "notes": (
            "per row: median over the repeats of each call's median wall time per iteration of one global "
            "batch; generate per_s = showers/s, train per_s = samples/s; ratio = hepgan / peer throughput "
            "(above 1: hepgan faster); idle = the machine's busy cores measured just before each timed "
            "call; calls alternate peer, hepgan"
        ),
    }


def _case(
    arch: str,
    batch: int,
    layouts: list[str],
    peer: Worker,
    make_hepgan: Callable[[str], Worker],
    *,
    repeats: int,
    iters: int,
    warmup: int,
    waiter: IdleWaiter,
    call_timeout: float,
    start_timeout: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One (arch, batch): the peer, then each hepgan layout against it (two workers alive at most)."""
    rows: list[dict[str, Any]] = [{"arch": arch, "batch": batch, "layout": layout} for layout in layouts]
    try:
        peer.start(start_timeout)
    except WorkerError as exc:
        for row in rows:
            row.update(status="failed", reason=str(exc))
        log(f"   {arch} b{batch}: the peer failed to start: {exc}")
        peer.close()
        return rows
    peer_warm = False
    try:
        for row in rows:
            layout = row["layout"]
            row["peer"] = peer.ready
            hepgan = make_hepgan(layout)
            try:
                hepgan.start(start_timeout)
                row["hepgan"] = hepgan.ready
                check_same(arch, peer.ready, hepgan.ready)
                workers = int(hepgan.ready.get("workers", 1))
                if batch % workers:
                    raise Mismatch(f"{arch}: batch {batch} does not divide over hepgan's {workers} workers")
                warm: dict[str, list[float]] = {}
                for side, w in (("peer", peer), ("hepgan", hepgan)):
                    if side == "peer" and peer_warm:
                        continue
                    for op in OPS:
                        warm[f"{side} {op}"] = w.call(op, warmup, call_timeout) if warmup else []
                peer_warm = True
                row["warmup_s"] = warm
                row.update(
                    compare(
                        batch, peer, hepgan, repeats=repeats, iters=iters, waiter=waiter, timeout=call_timeout
                    )
                )
                row["status"] = "compared"
                log(_line(row))
            except Mismatch as exc:
                row.update(status="refused", reason=str(exc))
                log(f"   {arch} b{batch} {layout}: {exc}")
            except WorkerError as exc:
                row.update(status="failed", reason=str(exc))
                log(f"   {arch} b{batch} {layout}: failed: {exc}")
                if peer.proc is not None and peer.proc.poll() is not None:
                    break  # the peer is gone: the remaining layouts cannot be compared
            finally:
                row["peak_rss_mb"] = {"peer": peer.peak_rss_mb(), "hepgan": hepgan.peak_rss_mb()}
                hepgan.close()
    finally:
        peer.close()
    for row in rows:
        row.setdefault("status", "failed")
        row.setdefault("reason", "not run: the peer exited during an earlier layout")
    return rows


def _line(row: dict[str, Any]) -> str:
    g, t = row["generate"], row["train"]
    return (
        f"   {row['arch']} b{row['batch']} {row['layout']}: generate {g['peer']['per_s']:.1f} vs "
        f"{g['hepgan']['per_s']:.1f} showers/s (x{g['ratio']:.2f}), train {t['peer']['per_s']:.2f} vs "
        f"{t['hepgan']['per_s']:.2f} samples/s (x{t['ratio']:.2f}); peer vs hepgan, busy cores <= "
        f"{row['busy_cores_max']:.2f}"
    )


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown section for the README: machine, software, one table row per (model,
    batch, layout), refused and failed rows with their reason."""
    m = result.get("machine", {})
    fw = result.get("frameworks", {})
    onednn = sorted({str(r["peer"].get("onednn")) for r in result["rows"] if "peer" in r})
    lines = [
        "### hepgan and a Keras 3 / TensorFlow peer on CPU (`hepgan-bench peers`)",
        "",
        f"Machine: {m.get('cpu', '?')}, {result.get('cores', m.get('cores', '?'))} usable cores"
        + (f"; {result['date']}" if result.get("date") else "")
        + f". Peer: {', '.join(fw.get('peer', [])) or '?'} (oneDNN: {', '.join(onednn) or '?'}); "
        f"hepgan: {', '.join(fw.get('hepgan', [])) or '?'}. Paper model sizes and update (two "
        "discriminator and two generator updates per iteration); median over "
        f"{_plural(result['repeats'], 'repeat')} of the median of {_plural(result['iters'], 'call')}, the "
        "sides alternating call by call. Ratio = hepgan / peer (above 1: "
        "hepgan faster). Busy: cores in use just before the timed calls (at most).",
        "",
        "| model | batch | hepgan layout | workers | generate, peer [showers/s] | generate, hepgan | ratio "
        "| train, peer [samples/s] | train, hepgan | ratio | busy cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in result["rows"]:
        head = f"| {r['arch']} | {r['batch']} | {r['layout']} |"
        if r.get("status") != "compared":
            lines.append(head + f" - | {r.get('status', '?')} (below) |" + " |" * 6)
            notes.append(
                f"- {r['arch']} batch {r['batch']} {r['layout']}: {r.get('reason', '').splitlines()[0]}"
            )
            continue
        g, t = r["generate"], r["train"]
        lines.append(
            head
            + f" {r['hepgan'].get('workers', 1)} | {_num(g['peer']['per_s'])} | {_num(g['hepgan']['per_s'])} "
            f"| {g['ratio']:.2f} | {_num(t['peer']['per_s'])} | {_num(t['hepgan']['per_s'])} | "
            f"{t['ratio']:.2f} | {r['busy_cores_max']:.2f} |"
        )
    if notes:
        lines += ["", "Not compared:", "", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``hepgan-bench peers [options]``; exit code 0, 1 when a comparison was refused or failed, 2 without
    the peer environment."""
    p = argparse.ArgumentParser(prog="hepgan-bench peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", choices=ARCHS, default=None, help="models (default: both)")
    p.add_argument("--batches", nargs="+", type=int, default=None, help="global batches (default: 16 64)")
    p.add_argument(
        "--layouts", nargs="+", choices=LAYOUTS, default=None, help="hepgan's layouts (default: all)"
    )
    p.add_argument("--repeats", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--iters", type=int, default=None, help="iterations per timed call (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per side and op (default 1)")
    p.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON, help="the peer environment's interpreter")
    p.add_argument("--out", default="experiments/bench", help="folder for peers.json and peers.md")
    p.add_argument("--quick", action="store_true", help="fixed25, batch 16, one_process, 1 repeat of 2")
    p.add_argument(
        "--idle-threshold", type=float, default=0.1, help="busy cores below which the machine is idle"
    )
    p.add_argument("--idle-timeout", type=float, default=60.0, help="longest wait for an idle machine, s")
    a = p.parse_args(argv)
    for name in ("repeats", "iters"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    if a.batches is not None and min(a.batches) < 1:
        p.error("--batches must be at least 1")
    try:
        check_peer(a.peer_python)
    except MissingPeer as exc:
        print(exc, file=sys.stderr)
        return 2
    from hepgan.bench.common import write_result
    from hepgan.fileio import write_text

    result = run(
        a.quick,
        archs=a.arch,
        batches=a.batches,
        layouts=a.layouts,
        repeats=a.repeats,
        iters=a.iters,
        warmup=a.warmup,
        peer_python=a.peer_python,
        waiter=IdleWaiter(threshold=a.idle_threshold, timeout_s=a.idle_timeout),
    )
    path = write_result("peers", result, a.out)
    md = write_text(Path(a.out) / "peers.md", markdown(json.loads(path.read_text())))
    print(f"   wrote {path} and {md}", flush=True)
    return 0 if all(r["status"] == "compared" for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
