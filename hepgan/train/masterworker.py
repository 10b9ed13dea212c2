"""The training loop's side of the master-worker backends (``parallel.backend=downpour|easgd``).

:mod:`hepgan.parallel.masterworker` exchanges flat vectors; here the GAN training state becomes one: both
players' parameters and BatchNorm statistics and the generator's EMA weights (the *model*). Each worker
keeps its own optimizer states, step counter, random key and data position; the master keeps the centre
model, which is what it validates, checkpoints and reports.

Schedule (the same on every process, so that nobody waits for a message that never comes): a worker
exchanges after step ``s`` when ``s % parallel.exchange_every == 0`` or ``s`` is a barrier; barriers are
the logging steps (``logging.every_steps``), the validation and checkpoint steps, and the last step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from hepgan.parallel.masterworker import (
    CONTINUE,
    STOP_NONFINITE,
    STOP_SIGNAL,
    Master,
    Push,
    Reply,
    WorkerLink,
)
from hepgan.train.state import GANState


def model_tree(state: GANState) -> dict[str, Any]:
    """The arrays the master and the workers share: ``{"g", "g_bs", "d", "d_bs", "ema"}``."""
    return {
        "g": state.g.params,
        "g_bs": state.g.batch_stats,
        "d": state.d.params,
        "d_bs": state.d.batch_stats,
        "ema": state.ema_g_params,
    }


class ModelVector:
    """Flatten a state's model (:func:`model_tree`) into one ``[P]`` float32 vector and back.

    Built once from a template state (the structure and dtypes are fixed for the run); both directions
    are jitted once.
    """

    def __init__(self, template: GANState):
        flat, unravel = ravel_pytree(model_tree(template))
        self.size, self.dtype = int(flat.size), flat.dtype
        self._ravel = jax.jit(lambda s: ravel_pytree(model_tree(s))[0].astype("float32"))
        self._unravel = jax.jit(lambda v: unravel(v.astype(flat.dtype)))

    def get(self, state: GANState) -> np.ndarray:
        """The model of ``state`` as a host ``[P]`` float32 vector."""
        return np.array(self._ravel(state), np.float32, copy=True)  # writable: the master adds into it

    def put(self, state: GANState, vec: np.ndarray) -> GANState:
        """``state`` with its model replaced by ``vec`` (``[P]`` float32); the rest of the state is kept."""
        t = self._unravel(jax.device_put(vec))
        g = state.g.replace(params=t["g"], batch_stats=t["g_bs"])
        d = state.d.replace(params=t["d"], batch_stats=t["d_bs"])
        return state.replace(g=g, d=d, ema_g_params=t["ema"])


class MasterWorker:
    """A process's role in a downpour/easgd run: the master serving rounds, or a worker exchanging.

    ``par``: the run's :class:`hepgan.parallel.Parallel`; ``state``: the (restored) starting state;
    ``barrier``: ``step -> bool``, the barrier steps of the schedule (module docstring).
    """

    def __init__(self, par: Any, state: GANState, barrier: Callable[[int], bool]):
        cfg = par.cfg
        self.algorithm, self.k, self.barrier = par.backend, cfg.exchange_every, barrier
        self.is_master, self.workers = par.is_master, par.workers
        self.vector = ModelVector(state)
        x0 = self.vector.get(state)
        if self.is_master:
            self.master: Master | None = Master(
                self.algorithm, x0, self.workers, alpha=cfg.easgd_alpha, ordered=cfg.ordered
            )
            self.link: WorkerLink | None = None
        else:
            self.master, self.link = None, WorkerLink(self.algorithm, x0)
        self.window: dict[str, float] = {"input_seconds": 0.0, "compute_seconds": 0.0, "comm_seconds": 0.0}
        self.window_steps = 0

    def due(self, step: int) -> bool:
        """Whether the processes exchange after ``step``."""
        return step % self.k == 0 or self.barrier(step)

    def timed_step(self, step_fn: Callable, state: GANState, batch: Any) -> tuple[GANState, Any]:
        """A worker's training step, waited for, its time added to ``compute_seconds``."""
        t0 = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        self.window["compute_seconds"] += time.perf_counter() - t0
        self.window_steps += 1
        return state, metrics

    def exchange(
        self, state: GANState, step: int, *, signum: int = 0, metrics: dict[str, float] | None = None,
        finite: bool = True,
    ) -> tuple[GANState, Reply]:  # fmt: skip
        """The exchange after ``step``: the master serves a round (its ``state`` gets the centre when the
        step is a barrier), a worker pushes and takes the master's answer into its ``state``.
        ``metrics``/``finite``: a worker's newest training metrics and whether they were finite."""
        barrier = self.barrier(step)
        if self.master is not None:
            reply = self.master.serve(barrier=barrier, signum=signum)
            # at a barrier the centre is consistent: validation, checkpoints, logs
            if barrier and reply.kind != STOP_NONFINITE:
                state = self.vector.put(state, self.master.centre)
                state = state.replace(step=jax.numpy.asarray(step, state.step.dtype))
            return state, reply
        assert self.link is not None
        t0 = time.perf_counter()
        timing = {k: v / max(self.window_steps, 1) for k, v in self.window.items()}
        push = Push(step=step, signum=signum, finite=finite, metrics=dict(metrics or {}), timing=timing)
        x, reply = self.link.exchange(self.vector.get(state), push, barrier=barrier)
        if reply.kind in (CONTINUE, STOP_SIGNAL):
            state = self.vector.put(state, x)
        self.window = {k: 0.0 for k in self.window}
        self.window_steps = 0
        self.window["comm_seconds"] += time.perf_counter() - t0
        return state, reply

    def log_row(self) -> dict[str, float]:
        """The master's training row: the workers' newest metrics and per-step timings averaged over the
        workers, the staleness of the pushes since the last row and the master's serving time per step."""
        assert self.master is not None
        return self.master.take_stats()
