#!/bin/bash
# Data-parallel training started with mpirun/mpiexec (Open MPI 5 or MPICH), e.g. on a workstation with
# several GPUs, inside any allocation, or on CPU cores:
#
#   slurm/train_mpirun.sh 4 out=runs/mpi4 train.batch_size=512            # mpi backend (mpi4jax)
#   BACKEND=xla slurm/train_mpirun.sh 4 out=runs/dist4                     # jax.distributed via mpi4py
#   CPU_THREADS=1 slurm/train_mpirun.sh 2 out=runs/cpu2 data.n_events=2000   # CPU: one core per rank
#
# First argument: number of processes (one per device); the rest are hepgan-train overrides.
# With the mpi backend each rank is an independent JAX program on its device (rank r takes local GPU r
# when several are visible); gradients are averaged with mpi4jax allreduce inside the jitted step.
# With BACKEND=xla or shard_map the ranks join through jax.distributed.initialize (mpi4py detection).
set -euo pipefail

N=${1:?usage: train_mpirun.sh NPROCS [hepgan-train overrides]}
shift
BACKEND=${BACKEND:-mpi}
MPIRUN=${MPIRUN:-mpirun}

if [[ -n "${CPU_THREADS:-}" ]]; then
  # One XLA compute thread per rank, so N ranks on N cores compare with one rank on one core.
  export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=${CPU_THREADS}"
  export JAX_PLATFORMS=cpu
fi

exec "$MPIRUN" -n "$N" hepgan-train parallel.backend="$BACKEND" parallel.launcher=auto "$@"
