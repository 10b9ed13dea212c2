"""Gradient reduction across data-parallel workers, and the gradient noise scale it makes measurable.

A :class:`Reducer` is what a per-device training step calls where the workers must agree:

- ``xla``: the step is ``jit``-ed over the global batch; XLA already inserts the reductions, so every
  method is the identity (and there is one "worker" in the program's view).
- ``shard_map``: the step runs per device inside ``jax.shard_map``; :meth:`Reducer.mean` is
  ``lax.pmean`` over the ``"data"`` mesh axis.
- ``mpi``: one process per device; :meth:`Reducer.mean` is mpi4jax ``allreduce(SUM) / size`` inside the
  jitted step, either one call per array (``flat=False``) or one call on the whole pytree raveled into a
  single buffer (``flat=True``: one latency per reduction instead of one per array; the scaling benchmark
  measures both).

Gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", app. A): with
per-worker gradients on ``B_small`` examples and their mean on ``B_big = workers * B_small``, the squared
norms give unbiased estimates of the true gradient's squared norm ``|G|^2`` and of the trace of the
per-example covariance ``S``; ``B_noise = S / |G|^2`` (from moving averages of both, as the ratio of
noisy estimates is biased) is the batch size beyond which larger batches stop paying.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

AXIS = "data"
BACKENDS = ("xla", "shard_map", "mpi")


@functools.cache
def _mpi_comm() -> Any:
    # A private duplicate keeps mpi4jax traffic apart from any mpi4py calls the program makes itself.
    from mpi4py import MPI

    return MPI.COMM_WORLD.Clone()


def sq_norm(tree: Any) -> jax.Array:
    """Squared global L2 norm ``[]`` f32 of a pytree of arrays."""
    return sum((jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)), jnp.zeros(()))


def mpi_mean(tree: Any, *, flat: bool = True, comm: Any = None) -> Any:
    """Mean of ``tree`` over the processes of ``comm`` (default: a duplicate of ``MPI.COMM_WORLD``).

    ``flat``: ravel the pytree into one buffer and reduce it with one ``allreduce``; else one call per
    leaf. Usable inside ``jax.jit``; every process must call it with the same tree structure.
    """
    import mpi4jax
    from mpi4py import MPI

    comm = _mpi_comm() if comm is None else comm
    size = comm.Get_size()
    if size == 1:
        return tree

    def allreduce(x: jax.Array) -> jax.Array:
        return mpi4jax.allreduce(x, op=MPI.SUM, comm=comm) / jnp.asarray(size, x.dtype)

    return flat_map(allreduce, tree) if flat else jax.tree.map(allreduce, tree)


def flat_map(fn: Any, tree: Any) -> Any:
    """Apply ``fn`` (an elementwise-in-effect collective such as a mean over workers) to ``tree`` as one
    raveled 1-D buffer per dtype, and give back the tree: one collective call instead of one per leaf
    (Horovod's tensor fusion, written out because ``ravel_pytree`` alone would promote mixed dtypes)."""
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        return tree
    out = list(leaves)
    for dt in sorted({x.dtype for x in leaves}, key=str):
        idx = [i for i, x in enumerate(leaves) if x.dtype == dt]
        vec, unravel = ravel_pytree([leaves[i] for i in idx])
        for i, r in zip(idx, unravel(fn(vec)), strict=True):
            out[i] = r
    return jax.tree.unflatten(treedef, out)


@dataclass(frozen=True)
class Reducer:
    """How a per-device step reaches agreement with the other data-parallel workers.

    ``backend``: "xla" | "shard_map" | "mpi" (see the module docstring); ``workers``: data-parallel
    workers that hold a share of the batch (1 for xla, whose step sees the global batch);
    ``flat``: mpi only, one buffer per reduction; ``axis_name``: the mesh axis of shard_map;
    ``silent``: every collective replaced by the identity (the same computation without its
    communication, for timing the two apart; the results are each worker's own, not the run's).
    """

    backend: str = "xla"
    workers: int = 1
    flat: bool = True
    axis_name: str = AXIS
    silent: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"parallel.backend: unknown {self.backend!r}; valid: {list(BACKENDS)}")
        if self.workers < 1:
            raise ValueError(f"Reducer: workers must be >= 1; got {self.workers}")

    @property
    def per_device(self) -> bool:
        """True when the step sees only its worker's share of the batch (shard_map, mpi)."""
        return self.backend != "xla"

    def local(self, tree: Any) -> Any:
        """Mark replicated ``tree`` (the parameters) as per-device before differentiating through it.

        Inside ``shard_map`` the gradient with respect to a replicated input is already *summed* over the
        devices (the transpose of its implicit broadcast is a ``psum``); marking it varying keeps each
        device's own gradient, which :meth:`grads` then averages (and needs for the noise scale).
        Identity for the other backends.
        """
        if self.backend != "shard_map" or self.workers == 1:
            return tree
        return jax.tree.map(lambda x: jax.lax.pcast(x, self.axis_name, to="varying"), tree)

    def mean(self, tree: Any) -> Any:
        """Mean of ``tree`` over the workers (identity for xla): gradients, metrics, BatchNorm statistics."""
        if self.backend == "xla" or self.workers == 1 or self.silent:
            return tree
        if self.backend == "shard_map":
            return jax.lax.pmean(tree, self.axis_name)
        return mpi_mean(tree, flat=self.flat)

    def index(self) -> jax.Array | int:
        """This worker's index in ``[0, workers)`` (0 for xla)."""
        if self.backend == "shard_map":
            return jax.lax.axis_index(self.axis_name)
        if self.backend == "mpi":
            return _mpi_comm().Get_rank()
        return 0

    def fold_in(self, key: jax.Array) -> jax.Array:
        """``key`` made distinct per worker, so per-device noise (latents, dropout, label flips) differs.

        The same on all workers stays the same for xla (one program over the global batch)."""
        if not self.per_device or self.workers == 1:
            return key
        return jax.random.fold_in(key, self.index())

    def grads(self, grads: Any, local_batch: int) -> tuple[Any, dict[str, jax.Array]]:
        """Average per-worker ``grads`` and measure the two gradient-norm estimators on the way.

        ``grads`` must be this worker's own gradient: under shard_map differentiate with respect to
        ``reducer.local(params)``.

        Returns the mean gradients and ``{"gns_g2": |G|^2 estimate, "gns_s": S estimate}`` (empty for xla
        or a single worker, where small and big batch coincide). ``local_batch``: examples per worker.
        """
        mean, gns, _ = self.grads_and_mean(grads, local_batch, None)
        return mean, gns

    def grads_and_mean(
        self, grads: Any, local_batch: int, other: Any
    ) -> tuple[Any, dict[str, jax.Array], Any]:
        """:meth:`grads`, with ``other`` (e.g. the BatchNorm statistics of the same forward pass) averaged
        in the same collective: ``(mean grads, noise-scale estimates, mean other)``.

        The gradients, this worker's squared gradient norm (for the noise scale) and ``other`` travel in
        one all-reduce (mpi: one flat buffer per dtype), so an update costs a single synchronisation of
        the workers instead of three; the values are those of three separate means.
        """
        gns_on = self.per_device and self.workers > 1
        sq = sq_norm(grads) if gns_on else None
        mean, sq_small, other_mean = self.mean((grads, sq, other))
        if not gns_on:
            return mean, {}, other_mean
        # sq_small: averaged over workers: lower variance, still unbiased
        g2, s = gns_estimates(sq_small, sq_norm(mean), local_batch, local_batch * self.workers)
        return mean, {"gns_g2": g2, "gns_s": s}, other_mean


# ----------------------------------------------------------------------------------------------------
# Gradient noise scale
# ----------------------------------------------------------------------------------------------------


def gns_estimates(
    sq_small: jax.Array, sq_big: jax.Array, b_small: int, b_big: int
) -> tuple[jax.Array, jax.Array]:
    """Unbiased ``(|G|^2, S)`` from squared gradient norms at two batch sizes (McCandlish et al., A.1).

    ``sq_small``: ``E|G_{B_small}|^2`` estimate (squared norm of a gradient mean over ``b_small``
    examples, ideally averaged over workers); ``sq_big``: squared norm of the mean over ``b_big``:

        |G|^2 = (b_big sq_big - b_small sq_small) / (b_big - b_small)
        S     = (sq_small - sq_big) / (1/b_small - 1/b_big)

    Both ``[]`` f32 (either may come out negative on a single step; average before dividing).
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"gns_estimates: need 0 < b_small < b_big; got b_small={b_small}, b_big={b_big}")
    g2 = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    s = (sq_small - sq_big) / (1.0 / b_small - 1.0 / b_big)
    return g2, s


class GNSTracker:
    """Host-side exponential moving averages of ``|G|^2`` and ``S``, and ``B_noise = S / |G|^2``.

    ``decay``: EMA decay per :meth:`update`; the averages are bias-corrected (divided by
    ``1 - decay**n``) so the first values are not pulled towards zero.
    """

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"GNSTracker: decay must be in [0, 1); got {decay}")
        self.decay = decay
        self.n = 0
        self._g2 = 0.0
        self._s = 0.0

    def update(self, g2: float, s: float) -> None:
        """Fold in one step's (or one logging window's mean) estimates."""
        if not (math.isfinite(g2) and math.isfinite(s)):
            return
        self.n += 1
        self._g2 = self.decay * self._g2 + (1.0 - self.decay) * float(g2)
        self._s = self.decay * self._s + (1.0 - self.decay) * float(s)

    @property
    def g2(self) -> float:
        """Bias-corrected EMA of ``|G|^2`` (nan before the first update)."""
        return self._g2 / (1.0 - self.decay**self.n) if self.n else math.nan

    @property
    def s(self) -> float:
        """Bias-corrected EMA of ``S`` (nan before the first update)."""
        return self._s / (1.0 - self.decay**self.n) if self.n else math.nan

    @property
    def b_noise(self) -> float:
        """The critical batch estimate ``S / |G|^2`` in examples (nan while ``|G|^2 <= 0``)."""
        g2 = self.g2
        return self.s / g2 if self.n and g2 > 0 else math.nan
