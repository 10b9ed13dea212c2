"""Helpers of the master-worker tests (tests/test_masterworker*.py): ``mpirun`` of the trainer and the
saved models of a run's master and workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

MPIRUN = Path(sys.executable).parent / "mpirun"
TRAIN = Path(sys.executable).parent / "hepgan-train"
COMMON = [
    "debug=default",
    "model.conv_impl=fft",
    "train.val_metrics=[sf]",
    "train.ckpt_every_steps=2",
]


def mpirun(n: int, args: list[str], timeout: int = 400, cache: Path | None = None) -> str:
    """``mpirun -n N ARGS`` on the CPU; its output (the test fails with the output's end otherwise).

    ``cache``: a JAX persistent compilation cache folder shared by the runs of one test, so that a rerun
    loads the executables the first run compiled (the same programs: results are unchanged)."""
    if not MPIRUN.exists():
        pytest.skip("mpirun not found next to the Python interpreter (install the mpi extra)")
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    if cache is not None:
        env |= {
            "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
    proc = subprocess.run(
        [str(MPIRUN), "-n", str(n), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def leaves(run: Path, worker: int | None = None) -> list[np.ndarray]:
    """The model (parameters, BatchNorm statistics, EMA weights) of a run's master; with ``worker``, that
    worker's whole saved state (optimizer states, key and step included)."""
    from hepgan.train.checkpoint import Checkpointer, restore_run, state_to_tree
    from hepgan.train.masterworker import model_tree

    _, state, _, _ = restore_run(run)
    if worker is None:
        return [np.asarray(x) for x in jax.tree.leaves(model_tree(state))]
    ckpt = Checkpointer(run / "workers" / f"worker{worker}", keep_best=False)
    restored = ckpt.restore(state)
    ckpt.close()
    assert restored is not None
    return [np.asarray(x) for x in jax.tree.leaves(state_to_tree(restored[0]))]


def model_of_worker(run: Path, worker: int) -> list[np.ndarray]:
    """The model of worker ``worker``'s newest checkpoint (as :func:`leaves` gives the master's)."""
    from hepgan.train.checkpoint import Checkpointer, restore_run
    from hepgan.train.masterworker import model_tree

    _, state, _, _ = restore_run(run)
    ckpt = Checkpointer(run / "workers" / f"worker{worker}", keep_best=False)
    restored = ckpt.restore(state)
    ckpt.close()
    assert restored is not None
    return [np.asarray(x) for x in jax.tree.leaves(model_tree(restored[0]))]
