"""Multi-process start-up: which launcher started us, and ``jax.distributed.initialize`` for it.

Launchers recognised from the environment (first match wins; an MPI launcher inside a Slurm or LSF
allocation describes the actual processes, so it is checked before the batch system):

==========  ============================================  ===========================================
launcher    rank / size / local rank                      start-up
==========  ============================================  ===========================================
openmpi     ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}``    jax's mpi4py detection
mpich       ``PMI_RANK``, ``PMI_SIZE``, ``MPI_LOCALRANKID``  jax's mpi4py detection (Hydra, Cray PMI)
jsrun       ``JSM_NAMESPACE_{RANK,SIZE,LOCAL_RANK}``      jax's mpi4py detection (LSF, Summit-style)
slurm       ``SLURM_PROCID``, ``SLURM_NTASKS``,           jax's Slurm detection (inside ``srun``)
            ``SLURM_LOCALID`` (with ``SLURM_STEP_NODELIST``)
none        0 / 1 / 0                                     nothing to do
==========  ============================================  ===========================================

The rendezvous itself is always ``jax.distributed.initialize``; this module only decides how to call it
(and not at all for the ``mpi`` backend, whose processes are independent JAX programs joined by MPI).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import jax

from hepgan.parallel.config import ParallelConfig

log = logging.getLogger(__name__)

# (launcher, rank variable, size variable, local-rank variable); order = detection priority.
_ENV_LAUNCHERS: tuple[tuple[str, str, str, str], ...] = (
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("jsrun", "JSM_NAMESPACE_RANK", "JSM_NAMESPACE_SIZE", "JSM_NAMESPACE_LOCAL_RANK"),
)
MPI_LAUNCHERS = ("openmpi", "mpich", "jsrun")


@dataclass(frozen=True)
class Launch:
    """How this process was started: ``launcher`` name, ``process_id`` of ``num_processes``, ``local_id``
    (rank among the processes of this node, or None when unknown)."""

    launcher: str
    process_id: int
    num_processes: int
    local_id: int | None

    @property
    def is_main(self) -> bool:
        """True for process 0, the one that writes logs and reports."""
        return self.process_id == 0


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"environment variable {name}={env[name]!r} is not an integer") from None


def detect_launch(env: Mapping[str, str] | None = None) -> Launch:
    """The launcher and process layout read from ``env`` (default ``os.environ``); see the module table.

    Slurm counts only inside a job step (``srun`` sets ``SLURM_STEP_NODELIST``); a batch script's own
    shell is a single process. Raises ``ValueError`` naming the variable when a rank is not an integer or
    lies outside ``[0, size)``.
    """
    env = os.environ if env is None else env
    found: Launch | None = None
    for name, rank, size, local in _ENV_LAUNCHERS:
        if rank in env and size in env:
            found = Launch(name, _int(env, rank), _int(env, size), _int(env, local) if local in env else None)
            break
    if found is None and all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID")):
        size_var = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        found = Launch(
            "slurm",
            _int(env, "SLURM_PROCID"),
            _int(env, size_var) if size_var in env else 1,
            _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else None,
        )
    if found is None:
        return Launch("none", 0, 1, 0)
    if not 0 <= found.process_id < found.num_processes:
        raise ValueError(
            f"{found.launcher} launcher: rank {found.process_id} is outside [0, {found.num_processes}) "
            "in the environment; is the job started consistently?"
        )
    return found


def _visible_gpu_ids(env: Mapping[str, str]) -> list[str] | None:
    for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        if env.get(var):
            return [v for v in env[var].split(",") if v]
    return None


def planned_launch(cfg: ParallelConfig, env: Mapping[str, str] | None = None) -> Launch:
    """This process's place in the run as ``cfg`` and the launcher's environment describe it, read
    without starting JAX or MPI: ``launcher="none"`` is one process; ``"explicit"`` is the configured
    ``process_id`` of ``num_processes``; otherwise the launcher found in ``env`` (default ``os.environ``).

    Raises ``ValueError`` for a launcher asked for but not found (``parallel.launcher=slurm`` outside a
    Slurm job step, ``parallel.launcher=mpi`` without an MPI launcher) or a malformed layout. This is the
    layout :func:`initialize` then joins; error paths that run before it use it to know their rank.
    """
    cfg.validate()
    env = os.environ if env is None else env
    if cfg.launcher == "none":
        return Launch("none", 0, 1, 0)
    if cfg.launcher == "explicit":
        assert cfg.num_processes is not None and cfg.process_id is not None  # validated
        return Launch("explicit", cfg.process_id, cfg.num_processes, None)
    launch = detect_launch(env)
    if cfg.launcher == "slurm" and launch.launcher != "slurm":
        raise ValueError(
            "parallel.launcher=slurm but no Slurm job step was found (SLURM_JOB_ID, SLURM_STEP_NODELIST, "
            "SLURM_PROCID); start the training with srun inside the allocation"
        )
    if cfg.launcher == "mpi" and launch.launcher not in MPI_LAUNCHERS:
        raise ValueError(
            "parallel.launcher=mpi but no MPI launcher was found (OMPI_COMM_WORLD_RANK, PMI_RANK or "
            "JSM_NAMESPACE_RANK); start the training with mpirun, mpiexec or jsrun"
        )
    return launch


def initialize(cfg: ParallelConfig, env: Mapping[str, str] | None = None) -> Launch:
    """Join the other processes of a multi-host run (``jax.distributed.initialize``) and describe this one.

    Must run before any JAX computation. With ``backend="mpi"`` nothing is initialised: the layout comes
    from MPI (``mpi4py``), each process drives one device, and the gradients meet in mpi4jax calls. Single
    process runs (no launcher found, ``launcher="none"``) also return without initialising. The layout
    is :func:`planned_launch`'s.

    Device selection per process: with one task per GPU the launcher usually leaves each process one
    visible GPU; jax's own detection would then ask for the GPU numbered by the local rank, which does not
    exist, so a single visible GPU is taken as this process's device.
    """
    cfg.validate()
    env = os.environ if env is None else env
    if cfg.backend in ("mpi", "downpour", "easgd"):
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        return Launch("mpi", comm.Get_rank(), comm.Get_size(), local)

    launch = planned_launch(cfg, env)
    if cfg.launcher == "none":
        return launch
    if cfg.launcher != "explicit" and launch.num_processes == 1 and cfg.coordinator_address is None:
        return launch

    local_ids = cfg.local_device_ids
    visible = _visible_gpu_ids(env)
    if local_ids is None and visible is not None and len(visible) == 1:
        local_ids = [0]
    kwargs: dict[str, object] = {
        "coordinator_address": cfg.coordinator_address,
        "num_processes": cfg.num_processes if cfg.launcher == "explicit" else None,
        "process_id": cfg.process_id if cfg.launcher == "explicit" else None,
        "local_device_ids": local_ids,
        "initialization_timeout": cfg.init_timeout_s,
    }
    if launch.launcher in MPI_LAUNCHERS:
        kwargs["cluster_detection_method"] = "mpi4py"
    log.info(
        "jax.distributed.initialize via %s: process %d of %d",
        launch.launcher,
        launch.process_id,
        launch.num_processes,
    )
    jax.distributed.initialize(**kwargs)  # type: ignore[arg-type]
    return Launch(launch.launcher, jax.process_index(), jax.process_count(), launch.local_id)
