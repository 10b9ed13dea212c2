"""Master-worker training over MPI: Downpour SGD and elastic averaging SGD (EASGD).

The synchronous backends (xla, shard_map, mpi) average every gradient over all workers. The
master-worker algorithms of MPI-learn instead keep the model on a master process (rank 0) and let each
worker (ranks 1..N) train on its own shard with its own optimizer, meeting the master every ``k`` steps:

- **Downpour** (Dean et al. 2012): the worker pushes the change of its parameters since its last pull
  (the sum of its ``k`` local updates), the master adds it to the centre parameters and the worker pulls
  the centre back: ``centre += x_w - x_pulled; x_w = x_pulled = centre``. With one worker and ``k = 1``
  this is the synchronous update (up to the rounding of ``centre + (x_w - centre)``).
- **EASGD** (Zhang, Choromanska, LeCun 2015, asynchronous form): the worker and the centre attract each
  other with the elastic force ``diff = alpha (x_w - centre)``: ``centre += diff; x_w -= diff``.

The exchange is written with mpi4py on host buffers (one ``Send``/``Recv`` of a flat float32 vector per
direction, plus a small pickled header), as MPI-learn does: the master serves one worker at a time, so
there is no collective to put inside the jitted step (mpi4jax would add nothing here).

Rounds. Every process walks the same step schedule. At an exchange step that is not a *barrier*, each
worker pushes and the master serves pushes in order of arrival (``ordered=False``: asynchronous; a fast
worker may be served twice before a slow one once, which the staleness measures) or in rank order
(``ordered=True``: the same result on every run). At a barrier step (logging, validation, checkpoints, the
last step) the master receives every worker's push, applies them in rank order, then replies to all:
there the centre and all workers are at one consistent step, which is where checkpoints are written and
stop signals are acted on.

Staleness of a push: the number of other workers' pushes the master applied since this worker's last
exchange (0 for a single worker; ``N - 1`` when the workers take turns).

The module knows nothing of GANs: a model is a flat ``float32`` vector (see
:mod:`hepgan.train.masterworker` for the training state's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALGORITHMS = ("downpour", "easgd")
MASTER = 0

# message tags: a push's header and its vector, the reply's header and its vector
TAG_PUSH, TAG_BARRIER, TAG_REPLY = 101, 102, 103
_DATA = 1000  # added to a header's tag for the vector that follows it

CONTINUE, STOP_SIGNAL, STOP_NONFINITE = 0, 1, 2
"""Reply kinds: go on; stop here after a stop signal (a barrier: everybody checkpoints this step); stop
because a worker's training produced a non-finite value (nothing of that push is applied)."""


def default_alpha(workers: int) -> float:
    """EASGD's moving rate ``alpha = beta / N`` with ``beta = 0.9`` (Zhang et al. 2015, section 5)."""
    return 0.9 / max(int(workers), 1)


@dataclass
class Push:
    """What a worker sends with its vector: ``step`` (its training step), ``signum`` (a stop signal it
    received, 0 for none), ``finite`` (its metrics since the last push were finite), ``metrics`` and
    ``timing`` (scalars for the master's logs)."""

    step: int
    signum: int = 0
    finite: bool = True
    metrics: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


@dataclass
class Reply:
    """The master's answer: ``kind`` (:data:`CONTINUE`, :data:`STOP_SIGNAL`, :data:`STOP_NONFINITE`),
    ``signum`` (the stop signal, if any), ``staleness`` of the push, ``version`` (pushes applied so far)."""

    kind: int
    signum: int = 0
    staleness: int = 0
    version: int = 0


POLL_SECONDS = 0.0005
"""Sleep between probes while waiting for a message. MPICH and Open MPI wait for a message by spinning
on a core; a master that waits most of the time (or workers waiting at a barrier while the master
validates) would take that core from the processes that compute. Polling with a sleep frees it, at up
to this latency per message."""


def _wait(comm: Any, source: int, tag: int) -> None:
    """Return once a message from ``source`` with ``tag`` can be received (see :data:`POLL_SECONDS`)."""
    while not comm.Iprobe(source=source, tag=tag):
        time.sleep(POLL_SECONDS)


def _comm(comm: Any) -> Any:
    if comm is not None:
        return comm
    from mpi4py import MPI

    return MPI.COMM_WORLD


class Master:
    """The centre variable on rank 0 and the rules that change it.

    ``algorithm``: "downpour" or "easgd"; ``centre``: ``[P]`` float32, the model as a flat vector (updated
    in place); ``workers``: N (ranks 1..N); ``alpha``: EASGD's elastic rate; ``ordered``: serve the
    non-barrier pushes in rank order instead of order of arrival; ``comm``: an mpi4py communicator
    (default ``COMM_WORLD``) of N + 1 processes.
    """

    def __init__(
        self,
        algorithm: str,
        centre: np.ndarray,
        workers: int,
        *,
        alpha: float | None = None,
        ordered: bool = False,
        comm: Any = None,
    ):
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"parallel.backend: unknown master-worker algorithm {algorithm!r}; valid: {ALGORITHMS}"
            )
        self.algorithm, self.workers, self.ordered = algorithm, int(workers), ordered
        self.alpha = default_alpha(workers) if alpha is None else float(alpha)
        self.centre = np.array(centre, np.float32, copy=True)
        self.comm = _comm(comm)
        self.version = 0
        self.last_version = {r: 0 for r in range(1, self.workers + 1)}
        self.latest: dict[int, Push] = {}  # each worker's newest push header
        self.staleness: list[int] = []  # of the pushes served since the last take_stats()
        self.serve_seconds = 0.0
        self.signum = 0
        self._buf = np.empty_like(self.centre)

    # ---- receiving and applying ---------------------------------------------------------------------------
    def _receive(self, source: int, tag: int) -> tuple[int, int, Push, np.ndarray]:
        from mpi4py import MPI

        status = MPI.Status()
        _wait(self.comm, source, tag)
        push = self.comm.recv(source=source, tag=tag, status=status)
        src, got_tag = status.Get_source(), status.Get_tag()
        vec = np.empty_like(self.centre)
        self.comm.Recv(vec, source=src, tag=got_tag + _DATA)
        return src, got_tag, push, vec

    def _apply(self, src: int, push: Push, vec: np.ndarray) -> tuple[np.ndarray, int]:
        """Fold worker ``src``'s vector into the centre; returns (what to send back, staleness)."""
        staleness = self.version - self.last_version[src]
        if self.algorithm == "downpour":  # vec: the worker's change since its last pull
            self.centre += vec
            out = self.centre
        else:  # easgd: vec is the worker's parameters
            out = self.alpha * (vec - self.centre)
            self.centre += out
        self.version += 1
        self.last_version[src] = self.version
        self.latest[src] = push
        self.staleness.append(staleness)
        return out, staleness

    def _reply(self, dest: int, reply: Reply, vec: np.ndarray) -> None:
        self.comm.send(reply, dest=dest, tag=TAG_REPLY)
        self.comm.Send(np.ascontiguousarray(vec, np.float32), dest=dest, tag=TAG_REPLY + _DATA)

    # ---- rounds -------------------------------------------------------------------------------------------
    def serve(self, *, barrier: bool, signum: int = 0) -> Reply:
        """Serve one exchange step of every worker (N pushes) and return what it ended in: ``CONTINUE``,
        ``STOP_SIGNAL`` (a barrier where a stop signal was seen: every worker was told to checkpoint and
        stop) or ``STOP_NONFINITE`` (every worker was told to stop; the caller raises).

        ``barrier``: collect all N pushes, apply them in rank order, then reply (see the module
        docstring); ``signum``: a stop signal the master itself received.
        """
        t0 = time.perf_counter()
        self.signum = self.signum or signum
        try:
            if barrier:
                return self._barrier()
            for i in range(self.workers):
                source = 1 + i if self.ordered else _any_source()
                src, _, push, vec = self._receive(source, TAG_PUSH)
                self.signum = self.signum or push.signum
                if not push.finite:
                    self._stop_all(src)
                    return Reply(STOP_NONFINITE)
                out, staleness = self._apply(src, push, vec)
                self._reply(src, Reply(CONTINUE, 0, staleness, self.version), out)
            return Reply(CONTINUE)
        finally:
            self.serve_seconds += time.perf_counter() - t0

    def _barrier(self) -> Reply:
        got = [self._receive(r, TAG_BARRIER) for r in range(1, self.workers + 1)]
        if not all(push.finite for _, _, push, _ in got):
            for src, _, _, _ in got:
                self._reply(src, Reply(STOP_NONFINITE), self.centre)
            return Reply(STOP_NONFINITE)
        for _, _, push, _ in got:
            self.signum = self.signum or push.signum
        kind = STOP_SIGNAL if self.signum else CONTINUE
        outs = []
        for src, _, push, vec in got:  # rank order: the same centre on every run
            out, staleness = self._apply(src, push, vec)
            outs.append((src, np.array(out, copy=True), staleness))
        for src, out, staleness in outs:
            vec = self.centre if self.algorithm == "downpour" else out  # downpour: all pull the same centre
            self._reply(src, Reply(kind, self.signum, staleness, self.version), vec)
        return Reply(kind, self.signum)

    def _stop_all(self, first: int) -> None:
        """Tell every worker to stop: ``first`` now, the others at their next push (any tag)."""
        from mpi4py import MPI

        self._reply(first, Reply(STOP_NONFINITE), self.centre)
        told = {first}
        while len(told) < self.workers:
            src, _, _, _ = self._receive(_any_source(), MPI.ANY_TAG)
            self._reply(src, Reply(STOP_NONFINITE), self.centre)
            told.add(src)

    def take_stats(self) -> dict[str, float]:
        """Logging scalars since the last call: the workers' newest metrics and timings averaged over
        workers, the staleness of the pushes served (mean, max) and the master's time serving them."""
        out: dict[str, float] = {}
        pushes = list(self.latest.values())
        for part in ("metrics", "timing"):
            keys = {k for p in pushes for k in getattr(p, part)}
            for k in sorted(keys):
                vals = [getattr(p, part)[k] for p in pushes if k in getattr(p, part)]
                out[k] = float(np.mean(vals))
        if self.staleness:
            out["staleness_mean"] = float(np.mean(self.staleness))
            out["staleness_max"] = float(np.max(self.staleness))
        out["master_serve_seconds"] = self.serve_seconds
        self.staleness, self.serve_seconds = [], 0.0
        return out


def _any_source() -> int:
    from mpi4py import MPI

    return int(MPI.ANY_SOURCE)


class WorkerLink:
    """A worker's side of the exchange (ranks 1..N).

    ``algorithm``: "downpour" or "easgd"; ``x0``: ``[P]`` float32, the model it starts from (for
    Downpour: the centre it last pulled); ``comm``: as :class:`Master`'s.
    """

    def __init__(self, algorithm: str, x0: np.ndarray, *, comm: Any = None):
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"parallel.backend: unknown master-worker algorithm {algorithm!r}; valid: {ALGORITHMS}"
            )
        self.algorithm = algorithm
        self.pulled = np.array(x0, np.float32, copy=True)
        self.comm = _comm(comm)

    def exchange(self, x: np.ndarray, push: Push, *, barrier: bool) -> tuple[np.ndarray, Reply]:
        """Send this worker's contribution for model ``x`` (``[P]`` float32) and return its new model and
        the master's :class:`Reply`. On ``STOP_NONFINITE`` the returned model is ``x`` unchanged."""
        x = np.ascontiguousarray(x, np.float32)
        vec = x - self.pulled if self.algorithm == "downpour" else x
        tag = TAG_BARRIER if barrier else TAG_PUSH
        self.comm.send(push, dest=MASTER, tag=tag)
        self.comm.Send(np.ascontiguousarray(vec), dest=MASTER, tag=tag + _DATA)
        _wait(self.comm, MASTER, TAG_REPLY)
        reply = self.comm.recv(source=MASTER, tag=TAG_REPLY)
        back = np.empty_like(x)
        self.comm.Recv(back, source=MASTER, tag=TAG_REPLY + _DATA)
        if reply.kind == STOP_NONFINITE:
            return x, reply
        if self.algorithm == "downpour":  # pull the centre
            self.pulled = back
            return back.copy(), reply
        return x - back, reply  # easgd: the elastic force
