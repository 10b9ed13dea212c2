"""Data-parallel and multi-host training: device mesh, reduction backends, process start-up.

Backends (``parallel.backend``): ``xla`` (jit over a ``("data",)`` mesh), ``shard_map`` (per-device step,
``lax.pmean``), ``mpi`` (one process per device, mpi4jax ``allreduce``), and the master-worker
``downpour`` and ``easgd`` (:mod:`hepgan.parallel.masterworker`). See ``docs/parallel.md``.
"""

from hepgan.parallel.config import BACKENDS, ParallelConfig
from hepgan.parallel.distributed import Launch, detect_launch, initialize
from hepgan.parallel.mesh import AXIS, batch_sharding, make_mesh, replicate, replicated, shard_batch
from hepgan.parallel.reduce import GNSTracker, Reducer, gns_estimates, mpi_mean, sq_norm
from hepgan.parallel.runtime import Parallel, setup

__all__ = [
    "AXIS",
    "BACKENDS",
    "GNSTracker",
    "Launch",
    "Parallel",
    "ParallelConfig",
    "Reducer",
    "batch_sharding",
    "detect_launch",
    "gns_estimates",
    "initialize",
    "make_mesh",
    "mpi_mean",
    "replicate",
    "replicated",
    "setup",
    "shard_batch",
    "sq_norm",
]
