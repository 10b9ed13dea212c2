#!/bin/bash
# Data-parallel training started with mpirun/mpiexec (Open MPI 5 or MPICH), e.g. on a workstation with
# several GPUs, inside any allocation, or on CPU cores:
#
#   slurm/train_mpirun.sh 4 out=runs/mpi4 train.batch_size=512            # mpi backend (mpi4jax)
#   BACKEND=xla slurm/train_mpirun.sh 4 out=runs/dist4                     # jax.distributed via mpi4py
#   CPU_THREADS=1 slurm/train_mpirun.sh 2 out=runs/cpu2 data.n_events=2000   # CPU: one core per rank
#
# First argument: number of processes (one per device); the rest are hepgan-train overrides. Outside a
# scheduler job there is no job id to name the run directory after, so give out= explicitly.
# With the mpi backend each rank is an independent JAX program on its device (rank r takes local GPU r
# when several are visible); gradients are averaged with mpi4jax allreduce inside the jitted step.
# With BACKEND=xla or shard_map the ranks join through jax.distributed.initialize (mpi4py detection).
#
# Signals: SIGTERM or SIGINT sent to this script reaches every rank as one SIGUSR1, so each finishes the
# current step, checkpoints and exits 75; the script exits with mpirun's status (75 after such a stop;
# rerun the same command to resume). SIGUSR1 because Open MPI's mpirun passes SIGUSR1/SIGUSR2 on to the
# ranks but answers SIGTERM/SIGINT by killing them a few seconds later. SIGUSR1 itself is left to
# mpirun: when a scheduler signals every process of the job (LSF's -wa), mpirun and the ranks get it
# anyway, and the script only survives it (passing it on too would only deliver it twice). Inside a
# Slurm batch
# script that is this file, signal it with `sbatch --signal=B:TERM@300` (plain `--signal` reaches only
# srun job steps); slurm/train_srun.sbatch is the template that also requeues.
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

launcher=
trap '[[ -n $launcher ]] && kill -USR1 "$launcher" 2>/dev/null || true' TERM INT
trap 'echo "hepgan: SIGUSR1: waiting for the ranks to checkpoint" >&2' USR1
"$MPIRUN" -n "$N" hepgan-train parallel.backend="$BACKEND" parallel.launcher=auto "$@" &
launcher=$!

# `wait` returns early (status > 128) when a trapped signal arrives; wait again while mpirun runs.
rc=0
wait "$launcher" || rc=$?
while kill -0 "$launcher" 2>/dev/null; do
  rc=0
  wait "$launcher" || rc=$?
done
# If mpirun ended just after an interrupted wait, its own status is still to be collected.
last=0
wait "$launcher" 2>/dev/null || last=$?
if [[ $last -ne 127 ]]; then rc=$last; fi
exit "$rc"
