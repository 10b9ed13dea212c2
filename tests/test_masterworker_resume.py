"""Master + 2 workers of the trainer under ``mpirun -n 3``: train, checkpoint, resume (a file of its own so
that the test runner can place it beside tests/test_masterworker.py)."""

from __future__ import annotations

import numpy as np
import pytest
from masterworker_helpers import COMMON, TRAIN, leaves, model_of_worker, mpirun


@pytest.mark.mpi
def test_master_and_two_workers_train_checkpoint_and_resume_as_an_uninterrupted_run(tmp_path):
    """``mpirun -n 3`` with ``parallel.ordered=true``: 2 steps, stop, a rerun resumes to 4 (master and
    workers from their own checkpoints); an uninterrupted run of 4 steps gives the same model. EASGD
    exchanging after every step (steps 1 and 3 between barriers): the workers differ from the centre, so
    resuming must restore both."""
    args = [str(TRAIN), *COMMON, "logging.every_steps=2", "parallel=easgd", "parallel.exchange_every=1"]
    args.append("parallel.ordered=true")
    run, cache = tmp_path / "resumed", tmp_path / "xla_cache"
    mpirun(3, [*args, f"out={run}", "train.max_steps=2"], cache=cache)
    assert (run / "workers" / "worker1" / "checkpoints" / "2").is_dir()
    log = mpirun(3, [*args, f"out={run}", "train.max_steps=4"], cache=cache)
    assert log.count("at step 2") == 3  # master and both workers resumed
    whole = tmp_path / "whole"
    mpirun(3, [*args, f"out={whole}", "train.max_steps=4"], cache=cache)
    for who in (None, 0, 1):  # the centre, and each worker's own state
        for a, b in zip(leaves(run, who), leaves(whole, who), strict=True):
            np.testing.assert_array_equal(a, b)
    # EASGD keeps the workers apart from the centre (the first leaves of a worker's state are its model's)
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(run), model_of_worker(run, 1), strict=True))
    steps = [line.split(",")[0] for line in (run / "train.csv").read_text().splitlines()[1:]]
    assert steps == ["2", "4"]
    header = (run / "train.csv").read_text().splitlines()[0].split(",")
    assert {"staleness_mean", "comm_seconds", "compute_seconds"} <= set(header)
