"""Schema of the ``parallel`` config group: which devices, which gradient reduction, how processes meet."""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("auto", "xla", "shard_map", "mpi", "downpour", "easgd")
MASTER_WORKER = ("downpour", "easgd")
CPU_LAYOUTS = ("per_core", "shared")
REDUCE_MODES = ("tree", "flat")
LAUNCHERS = ("auto", "none", "slurm", "mpi", "explicit")


@dataclass
class ParallelConfig:
    """Devices of the run and the data-parallel gradient reduction (schema of group ``parallel``).

    backend: "auto" (the default: ``shard_map`` with ``sync_batchnorm`` on several CPU devices of one process,
      where it is the fast one and follows ``xla``'s update rule (global-batch statistics; per-device
      noise); ``xla`` everywhere else),
      "xla" (``jit`` over a ``("data",)`` mesh; XLA inserts the all-reduce; BatchNorm statistics
      over the global batch), "shard_map" (the step written per device, gradients averaged with
      ``lax.pmean``; BatchNorm per device unless ``sync_batchnorm``) or "mpi" (one process per device,
      gradients averaged with mpi4jax ``allreduce`` inside the jitted step; launch with mpirun/srun/jsrun),
      "downpour" or "easgd" (master-worker over MPI: rank 0 holds the model, ranks 1..N train on their
      shards and exchange with it every ``exchange_every`` steps; launch N + 1 processes; see
      :mod:`hepgan.parallel.masterworker`).
    sync_batchnorm: shard_map only: BatchNorm batch moments averaged over devices (``pmean``), i.e. the
      global-batch statistics of ``xla``; False keeps them per device (as Horovod).
    devices: how many of the local ``jax.devices()`` form the mesh (None: all; mpi: always 1 per process).
    cpu_layout: on a CPU host, "per_core" (default: one JAX device per usable core, one compute thread
      each; see :mod:`hepgan.parallel.cpu`) or "shared" (XLA's one device on all cores). Ignored on GPU
      and TPU hosts and when ``XLA_FLAGS`` already sets the CPU device count.
    mpi_reduce: "tree" (one ``allreduce`` per gradient array) or "flat" (the whole gradient pytree
      concatenated into one buffer: one ``allreduce`` per player and update, fewer latency-bound calls).
    launcher: how the processes of a multi-host run find each other: "auto" (detect Slurm, Open MPI,
      MPICH/PMI, LSF/jsrun from the environment; single process when none is found), "none" (single
      process), "slurm", "mpi" (jax's mpi4py detection: Open MPI 5, MPICH, jsrun), or "explicit" (use
      ``coordinator_address``, ``num_processes``, ``process_id``).
    coordinator_address: ``host:port`` of process 0's coordination service (explicit launcher, or an
      override of the detected one). num_processes, process_id: explicit process layout.
    local_device_ids: devices this process drives (None: all visible; with one task per GPU the launcher
      usually restricts visibility already).
    init_timeout_s: seconds to wait for all processes to join.
    gns: estimate the gradient noise scale (needs per-device gradients: shard_map or mpi with > 1 worker).
    gns_ema: decay of the exponential moving averages of the two gradient-norm estimators.
    exchange_every: downpour/easgd: local steps of a worker between two exchanges with the master (``k``).
    easgd_alpha: easgd's elastic rate (None: ``0.9 / N`` for N workers, Zhang et al. 2015).
    ordered: downpour/easgd: the master serves the workers in rank order instead of order of arrival
      (the same result on every run, at the pace of the slowest worker).
    comm_every: time the step's own computation alone (the same update without its collectives, on the
      same batch) every N steps, for the ``compute_seconds``/``comm_seconds`` columns of shard_map and mpi
      runs (0: off). Costs one extra step per N.
    """

    backend: str = "auto"
    sync_batchnorm: bool = False
    devices: int | None = None
    cpu_layout: str = "per_core"
    mpi_reduce: str = "flat"
    launcher: str = "auto"
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: list[int] | None = None
    init_timeout_s: int = 300
    gns: bool = True
    gns_ema: float = 0.95
    exchange_every: int = 1
    easgd_alpha: float | None = None
    ordered: bool = False
    comm_every: int = 50

    def validate(self) -> ParallelConfig:
        """Check the fields; returns ``self``. Raises ``ValueError`` naming the bad ``parallel.*`` key."""
        if self.backend not in BACKENDS:
            raise ValueError(f"parallel.backend: unknown {self.backend!r}; valid: {list(BACKENDS)}")
        if self.mpi_reduce not in REDUCE_MODES:
            raise ValueError(f"parallel.mpi_reduce: unknown {self.mpi_reduce!r}; valid: {list(REDUCE_MODES)}")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"parallel.launcher: unknown {self.launcher!r}; valid: {list(LAUNCHERS)}")
        if self.devices is not None and self.devices < 1:
            raise ValueError(
                f"parallel.devices: need at least 1 device (or null for all); got {self.devices}"
            )
        if self.cpu_layout not in CPU_LAYOUTS:
            raise ValueError(f"parallel.cpu_layout: unknown {self.cpu_layout!r}; valid: {list(CPU_LAYOUTS)}")
        if self.sync_batchnorm and self.backend not in ("shard_map", "auto"):
            raise ValueError(
                "parallel.sync_batchnorm: only the shard_map backend has per-device BatchNorm to synchronise "
                "(xla always uses global-batch statistics, mpi always local ones); "
                f"got backend={self.backend!r}"
            )
        if self.exchange_every < 1:
            raise ValueError(f"parallel.exchange_every: need at least 1 step; got {self.exchange_every}")
        if self.easgd_alpha is not None and not 0.0 < self.easgd_alpha <= 1.0:
            raise ValueError(
                f"parallel.easgd_alpha: must be in (0, 1] (or null for 0.9/N); got {self.easgd_alpha}"
            )
        if self.comm_every < 0:
            raise ValueError(f"parallel.comm_every: must be >= 0 (0: off); got {self.comm_every}")
        if not 0.0 <= self.gns_ema < 1.0:
            raise ValueError(f"parallel.gns_ema: must be in [0, 1); got {self.gns_ema}")
        if self.launcher == "explicit" and None in (
            self.coordinator_address,
            self.num_processes,
            self.process_id,
        ):
            raise ValueError(
                "parallel.launcher=explicit needs parallel.coordinator_address (host:port), "
                "parallel.num_processes and parallel.process_id"
            )
        return self
