"""One object that carries a run's data-parallel set-up: processes, mesh, reducer, compiled step.

``setup(cfg)`` is the first call of a trainer (before any JAX computation); everything backend-specific
after that goes through :class:`Parallel`, so the trainer reads the same for all three backends
(:func:`hepgan.train.run.build_run` makes these calls)::

    par = setup(cfg.parallel)
    state = par.place_state(state)
    step = par.compile(update)        # update(state, batch) built with reducer=par.reducer
    pipe = Pipeline(source, global_batch, ..., **par.pipeline_args())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from hepgan.parallel.config import MASTER_WORKER, ParallelConfig
from hepgan.parallel.cpu import CpuLayout
from hepgan.parallel.cpu import configure as configure_cpu
from hepgan.parallel.distributed import Launch, initialize
from hepgan.parallel.mesh import AXIS, batch_sharding, make_mesh, replicate, replicated
from hepgan.parallel.reduce import Reducer, mpi_mean


@dataclass(frozen=True)
class Parallel:
    """A run's data-parallel set-up.

    ``mesh``: the devices this program spans (for ``mpi``: this process's one device); ``reducer``: what
    the per-device step calls to agree with the other workers; ``workers``: data-parallel workers in the
    whole run (devices of the mesh, or MPI processes).
    """

    cfg: ParallelConfig
    launch: Launch
    mesh: Mesh
    reducer: Reducer
    workers: int
    cpu: CpuLayout | None = None

    @property
    def backend(self) -> str:
        """ "xla", "shard_map", "mpi", "downpour" or "easgd" (``auto`` is resolved by :func:`setup`)."""
        return self.cfg.backend

    @property
    def master_worker(self) -> bool:
        """True for the master-worker backends (downpour, easgd): rank 0 the master, 1..N workers."""
        return self.backend in MASTER_WORKER

    @property
    def is_master(self) -> bool:
        """True on a master-worker run's master (rank 0); False elsewhere."""
        return self.master_worker and self.process_index == 0

    @property
    def worker_index(self) -> int:
        """This process's data shard: the rank for mpi, rank - 1 for a master-worker worker (the master
        reads none; 0 here)."""
        if self.master_worker:
            return max(self.process_index - 1, 0)
        return self.process_index

    @property
    def uses_mpi(self) -> bool:
        """True when the processes meet through mpi4py (mpi, downpour, easgd), not jax.distributed."""
        return self.backend == "mpi" or self.master_worker

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs, reports and (for mpi) checkpoints."""
        return self.launch.is_main

    @property
    def process_index(self) -> int:
        """This process's rank among the run's processes."""
        return self.launch.process_id

    @property
    def process_count(self) -> int:
        """Number of processes of the run."""
        return self.launch.num_processes

    def per_device_batch(self, global_batch: int) -> int:
        """Examples per worker for ``global_batch``; ``ValueError`` unless it divides evenly."""
        if global_batch % self.workers:
            raise ValueError(
                f"train.batch_size={global_batch} is not divisible by the {self.workers} data-parallel "
                f"workers ({self.backend}); use a multiple of {self.workers}"
            )
        return global_batch // self.workers

    def describe(self, global_batch: int | None = None) -> dict[str, Any]:
        """JSON-able description for logs and the run manifest."""
        out: dict[str, Any] = {
            "backend": self.backend,
            "launcher": self.launch.launcher,
            "process_count": self.process_count,
            "workers": self.workers,
            "devices": [str(d) for d in self.mesh.devices.flat][:64],
            "device_kind": jax.devices()[0].device_kind,
            "sync_batchnorm": self.cfg.sync_batchnorm,
            "cpu_layout": None if self.cpu is None else self.cpu.layout,
        }
        if self.backend == "mpi":
            out["mpi_reduce"] = self.cfg.mpi_reduce
        if self.master_worker:
            from hepgan.parallel.masterworker import default_alpha

            out["exchange_every"] = self.cfg.exchange_every
            out["ordered"] = self.cfg.ordered
            out["master"] = 0
            if self.backend == "easgd":
                alpha = self.cfg.easgd_alpha
                out["easgd_alpha"] = default_alpha(self.workers) if alpha is None else alpha
        if global_batch is not None:
            out["global_batch"] = global_batch
            out["per_device_batch"] = self.per_device_batch(global_batch)
        return out

    def pipeline_args(self) -> dict[str, Any]:
        """Keyword arguments for :class:`hepgan.data.pipeline.Pipeline`: its mesh and process share."""
        if self.backend == "mpi":
            return {"mesh": None, "process_index": self.process_index, "process_count": self.process_count}
        if self.master_worker:  # the workers share the data; the master reads none (given worker 0's share)
            return {"mesh": None, "process_index": self.worker_index, "process_count": self.workers}
        return {"mesh": self.mesh}

    def place_state(self, state: Any) -> Any:
        """Put a training state (identical on all processes) where the compiled step expects it."""
        if self.master_worker and self.workers > 1 and not self.is_master:
            # each worker draws its own noise and label flips (one worker keeps the single-process key, so
            # that it repeats the synchronous run)
            import jax.numpy as jnp

            key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), self.worker_index)
            rng = jax.random.key_data(key)
            state = state.replace(rng=jnp.asarray(rng, state.rng.dtype))
        if self.uses_mpi:
            return jax.device_put(state, self.mesh.devices.flat[0])
        return replicate(state, self.mesh)

    def compile(
        self, step: Callable[..., Any], *, donate: bool = True, check: bool = True
    ) -> Callable[..., Any]:
        """Jit ``step(state, batch) -> (state, metrics)`` for this backend (the state donated).

        xla: over the mesh, batch ``P("data")``, state and metrics replicated. shard_map: the step runs per
        device on its share of the batch and must return worker-invariant state and metrics (reduce them
        with ``reducer.mean``). mpi (and downpour, easgd): a plain single-device jit; the mpi reductions are
        mpi4jax calls inside. ``check=False``: shard_map does not verify that the outputs are the same on
        every device (for a step whose reducer is ``silent``: they are not).
        """
        donate_argnums = (0,) if donate else ()
        if self.backend == "xla":
            rep = replicated(self.mesh)
            return jax.jit(
                step,
                in_shardings=(rep, batch_sharding(self.mesh)),
                out_shardings=(rep, rep),
                donate_argnums=donate_argnums,
            )
        if self.backend == "shard_map":
            # One device: the reducer leaves no collective in the step, so JAX cannot prove the outputs
            # replicated; on a one-device mesh they trivially are, and nothing is summed over devices.
            per_device = jax.shard_map(
                step,
                mesh=self.mesh,
                in_specs=(P(), P(AXIS)),
                out_specs=(P(), P()),
                check_vma=check and self.workers > 1,
            )
            return jax.jit(per_device, donate_argnums=donate_argnums)
        return jax.jit(step, donate_argnums=donate_argnums)  # mpi, downpour, easgd: one device

    def barrier(self) -> None:
        """Wait for all processes (a no-op in a single process)."""
        if self.process_count == 1:
            return
        if self.uses_mpi:
            from mpi4py import MPI

            MPI.COMM_WORLD.Barrier()
        else:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("hepgan.parallel.barrier")

    def max_over_processes(self, value: int) -> int:
        """The largest ``value`` over all processes (``value`` itself in a single process).

        A collective: every process must call it at the same point (the trainer uses it to agree on
        a stop signal that reached only some processes).
        """
        if self.process_count == 1:
            return int(value)
        if self.uses_mpi:
            from mpi4py import MPI

            return int(MPI.COMM_WORLD.allreduce(int(value), op=MPI.MAX))
        from jax.experimental import multihost_utils

        return int(np.max(multihost_utils.process_allgather(np.int32(value))))

    def host_mean(self, tree: Any) -> Any:
        """Mean over workers of host values (e.g. the mpi backend's per-process metrics), outside jit."""
        if self.backend != "mpi" or self.process_count == 1:
            return tree
        return jax.jit(lambda t: mpi_mean(t, flat=True))(tree)


def setup(cfg: ParallelConfig, global_batch: int | None = None) -> Parallel:
    """Start the processes' rendezvous if needed and build the mesh and reducer for ``cfg``.

    Call once, before any other JAX computation (on a CPU host it first sets XLA's device layout,
    :mod:`hepgan.parallel.cpu`). ``backend=auto`` is resolved here: the returned ``Parallel.cfg`` holds
    the backend and ``sync_batchnorm`` in use. ``global_batch``: lets the CPU layout pick a device
    count that divides it. Raises ``ValueError`` for an inconsistent config.
    """
    cfg.validate()
    one_per_process = cfg.backend == "mpi" or cfg.backend in MASTER_WORKER
    cpu = configure_cpu(
        cfg.cpu_layout, cfg.devices, one_device_per_process=one_per_process, global_batch=global_batch
    )
    launch = initialize(cfg)
    if cfg.backend in MASTER_WORKER:
        if launch.num_processes < 2:
            raise ValueError(
                f"parallel.backend={cfg.backend} needs a master and at least one worker: start N + 1 "
                f"processes (mpirun -n 3 for 2 workers); this run has {launch.num_processes}"
            )
        # the workers' steps are local (no collective): the master-worker exchange happens between steps
        mesh = _process_device(cfg, launch)
        return Parallel(cfg, launch, mesh, Reducer("xla"), launch.num_processes - 1, cpu)
    if cfg.backend == "mpi":
        mesh = _process_device(cfg, launch)
        reducer = Reducer("mpi", workers=launch.num_processes, flat=cfg.mpi_reduce == "flat")
        return Parallel(cfg, launch, mesh, reducer, launch.num_processes, cpu)
    mesh = make_mesh(cfg.devices)
    n = int(mesh.size)
    if cfg.backend == "auto":
        # Several CPU devices in one process: XLA's partitioned step ran at under half the per-device
        # speed of the shard_map step there (docs/parallel.md); global-batch BatchNorm keeps xla's update
        # rule. Across processes shard_map's equality with one process is not proven yet: xla there.
        on_cpu = mesh.devices.flat[0].platform == "cpu"
        cfg = (
            replace(cfg, backend="shard_map", sync_batchnorm=True)
            if on_cpu and n > 1 and launch.num_processes == 1
            else replace(cfg, backend="xla")
        )
    reducer = Reducer(cfg.backend, workers=n if cfg.backend == "shard_map" else 1)
    return Parallel(cfg, launch, mesh, reducer, n, cpu)


def _process_device(cfg: ParallelConfig, launch: Launch) -> Mesh:
    """The one-device mesh of a process of the MPI-joined backends (mpi, downpour, easgd).

    Independent processes: each takes the visible device of its node-local rank (all ranks see device 0
    when the launcher already gives each one GPU) and makes it the default, so the data pipeline's
    uncommitted arrays land where the step runs."""
    if cfg.devices not in (None, 1):
        raise ValueError(
            f"parallel.devices={cfg.devices}: the {cfg.backend} backend drives one device per process; "
            "start one process per device instead (mpirun -n / srun --ntasks-per-node)"
        )
    local = jax.local_devices()
    device = local[(launch.local_id or 0) % len(local)]
    jax.config.update("jax_default_device", device)
    return Mesh([device], (AXIS,))
