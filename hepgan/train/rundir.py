"""The default run directory's name: the scheduler's job, so that a requeued job resumes its own run.

``out: runs/${hepgan_run:}`` in the packaged config resolves through :func:`run_name`:

| where | name |
|---|---|
| Slurm array task | ``slurm-<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>`` |
| Slurm job | ``slurm-<SLURM_JOB_ID>`` |
| LSF job array element | ``lsf-<LSB_JOBID>_<LSB_JOBINDEX>`` |
| LSF job | ``lsf-<LSB_JOBID>`` |
| PBS/Torque job | ``pbs-<PBS_JOBID>`` |
| mpirun without a scheduler (Open MPI/PMIx) | ``mpi-<PMIX_NAMESPACE>`` |
| anything else | ``<date>_<time>`` (UTC) |

A requeued Slurm or LSF job keeps its job id, so every attempt resumes the same folder, and every
process of one job resolves the same name. Several processes started without a scheduler job id or a
PMIx namespace (MPICH's ``mpirun``) cannot agree on a time stamp: that is an error asking for ``out=``.
Within one interactive allocation (``salloc``) every run gets the same name; give ``out=`` to keep runs
apart there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from omegaconf import OmegaConf

RESOLVER = "hepgan_run"
# the environment variables through which MPI launchers tell a process the size of its world
_WORLD_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def _safe(text: str) -> str:
    """``text`` with anything but letters, digits, '.', '_' and '-' replaced by '-' (a folder name)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def run_name(env: Mapping[str, str] | None = None, now: datetime | None = None) -> str:
    """The default run folder name for this process (see the module docstring for the rules).

    ``env``: the environment (default ``os.environ``); ``now``: the time for a stand-alone run
    (default now, UTC). Raises ``ValueError`` for a multi-process launch that gives no job identity.
    """
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            return _safe(f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}")
        return _safe(f"slurm-{env['SLURM_JOB_ID']}")
    if env.get("LSB_JOBID"):
        index = env.get("LSB_JOBINDEX", "0")
        suffix = f"_{index}" if index not in ("", "0") else ""
        return _safe(f"lsf-{env['LSB_JOBID']}{suffix}")
    if env.get("PBS_JOBID"):
        return _safe(f"pbs-{env['PBS_JOBID']}")
    world = next((env[v] for v in _WORLD_SIZE_VARS if env.get(v)), "1")
    if world.isdigit() and int(world) > 1:
        if env.get("PMIX_NAMESPACE"):
            return _safe(f"mpi-{env['PMIX_NAMESPACE']}")
        raise ValueError(
            f"out: {world} processes were started without a scheduler job id (SLURM_JOB_ID, LSB_JOBID, "
            "PBS_JOBID) or a PMIx namespace, so they cannot agree on a default run directory; give "
            "out=<folder> on the command line"
        )
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d_%H-%M-%S")


def register() -> None:
    """Register ``${hepgan_run:}`` with OmegaConf (once; the value is cached per process, as Hydra's
    ``${now:}``, so every use in one run agrees)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda: run_name(), use_cache=True)


register()
