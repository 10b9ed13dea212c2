"""Master-worker training (``parallel.backend=downpour|easgd``) under ``mpirun``.

The exchange rules on a toy problem (the EASGD centre and the Downpour sum against formulas written here
from the papers), the stop protocol for a non-finite worker, and the trainer itself: one Downpour worker
with ``k = 1`` repeats the synchronous single-process run; master + 2 workers train, checkpoint and
resume to the same result as an uninterrupted run (``parallel.ordered=true``). Run as a script under
``mpirun`` for the toy rank programs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from masterworker_helpers import COMMON, TRAIN, leaves, mpirun

# Two steps of the tiny GAN (RMSprop): one Downpour worker against the single process differs only by the
# rounding of centre + (x - centre) at each exchange (exact where the two are within a factor 2, one ulp
# elsewhere), which RMSprop amplifies where a gradient is rounding noise (conv biases before BatchNorm,
# tests/test_parallel_train.py); measured: 1.1e-4 absolute in the largest leaf difference after 2 steps.
RTOL, ATOL = 1e-4, 2.5e-4


# ---- the exchange rules on a toy problem ---------------------------------------------------------------

P, ROUNDS = 5, 4


def _toy_targets(rank: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, P).astype(np.float32) * rank


def _toy_rank(algorithm: str, out: Path, nonfinite_at: int, signal_at: int = -1) -> None:
    """One rank of the toy run: workers take 3 SGD steps (lr 0.3) on ``|x - t_rank|^2 / 2`` between
    exchanges; rank 0 serves rounds (the last a barrier) and records its centre after each. Worker 2
    reports a non-finite value in round ``nonfinite_at``; the master receives a stop signal (10) in round
    ``signal_at``."""
    from mpi4py import MPI

    from hepgan.parallel.masterworker import STOP_NONFINITE, Master, Push, WorkerLink

    comm = MPI.COMM_WORLD
    rank, workers = comm.Get_rank(), comm.Get_size() - 1
    x0 = np.full(P, 0.5, np.float32)
    if rank == 0:
        master = Master(algorithm, x0, workers, alpha=0.3, ordered=True)
        centres = []
        for r in range(ROUNDS):
            reply = master.serve(barrier=r == ROUNDS - 1, signum=10 if r == signal_at else 0)
            centres.append(master.centre.tolist())
            if reply.kind == STOP_NONFINITE:
                break
        result = {
            "centres": centres,
            "kinds": reply.kind,
            "signum": reply.signum,
            "stats": master.take_stats(),
        }
        out.write_text(json.dumps(result))
        return
    link = WorkerLink(algorithm, x0)
    x, sent, kinds = x0.copy(), [], []
    for r in range(ROUNDS):
        for _ in range(3):
            x = x - np.float32(0.3) * (x - _toy_targets(rank))
        sent.append(x.tolist())
        push = Push(step=r, finite=not (nonfinite_at == r and rank == 2), metrics={"loss": float(rank)})
        x, reply = link.exchange(x, push, barrier=r == ROUNDS - 1)
        kinds.append((reply.kind, reply.signum) if signal_at >= 0 else reply.kind)
        if reply.kind == STOP_NONFINITE:
            break
    out.with_suffix(f".{rank}").write_text(json.dumps({"sent": sent, "kinds": kinds, "x": x.tolist()}))


def _toy(
    tmp_path: Path, algorithm: str, nonfinite_at: int = -1, signal_at: int = -1
) -> tuple[dict, dict[int, dict]]:
    out = tmp_path / f"{algorithm}.json"
    args = [sys.executable, __file__, "toy", algorithm, str(out), str(nonfinite_at), str(signal_at)]
    mpirun(3, args, timeout=120)
    workers = {r: json.loads(out.with_suffix(f".{r}").read_text()) for r in (1, 2)}
    return json.loads(out.read_text()), workers


@pytest.mark.mpi
def test_easgd_centre_moves_by_the_elastic_force(tmp_path):
    """Zhang et al. (2015), asynchronous EASGD: at each exchange ``centre += alpha (x_i - centre)`` and the
    worker moves by the same amount the other way. Served in rank order, the centre after every round is
    computed here from what the workers sent."""
    master, workers = _toy(tmp_path, "easgd")
    centre, alpha = np.full(P, 0.5, np.float64), 0.3
    final = {}
    for r in range(ROUNDS):
        for w in (1, 2):
            sent = np.asarray(workers[w]["sent"][r])
            force = alpha * (sent - centre)
            centre = centre + force
            final[w] = sent - force  # the worker moves by the same force the other way
        np.testing.assert_allclose(master["centres"][r], centre, rtol=1e-5, atol=1e-6)
    for w in (1, 2):
        np.testing.assert_allclose(workers[w]["x"], final[w], rtol=1e-5, atol=1e-6)
    assert workers[1]["kinds"] == workers[2]["kinds"] == [0] * ROUNDS
    assert master["stats"]["staleness_max"] == 1  # two workers taking turns: one other push in between


@pytest.mark.mpi
def test_downpour_centre_is_the_sum_of_the_workers_changes(tmp_path):
    """Downpour: the centre gains each worker's change since its last pull, and the worker pulls it."""
    master, workers = _toy(tmp_path, "downpour")
    centre = np.full(P, 0.5, np.float64)
    pulled = {1: centre.copy(), 2: centre.copy()}
    for r in range(ROUNDS):
        for w in (1, 2):
            centre = centre + (np.asarray(workers[w]["sent"][r]) - pulled[w])
            pulled[w] = centre.copy()
        if r == ROUNDS - 1:  # the barrier: both pull the same centre
            pulled = {1: centre.copy(), 2: centre.copy()}
        np.testing.assert_allclose(master["centres"][r], centre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(workers[1]["x"], centre, rtol=1e-6)
    np.testing.assert_allclose(workers[2]["x"], centre, rtol=1e-6)


@pytest.mark.mpi
def test_a_non_finite_worker_stops_every_worker(tmp_path):
    """Worker 2 reports a non-finite value in round 1: the master applies nothing of it and tells every
    worker to stop (the other one at its next push), and all three processes end."""
    master, workers = _toy(tmp_path, "downpour", nonfinite_at=1)
    assert master["kinds"] == 2
    assert workers[2]["kinds"] == [0, 2]
    assert workers[1]["kinds"][-1] == 2 and len(workers[1]["kinds"]) <= 3


@pytest.mark.mpi
def test_a_stop_signal_is_acted_on_at_the_next_barrier(tmp_path):
    """The master receives a stop signal in round 1 (between barriers): rounds 1 and 2 go on, and at the
    barrier of round 3 every worker is told to stop there with the signal (they checkpoint that step);
    the round's pushes are applied first."""
    master, workers = _toy(tmp_path, "easgd", signal_at=1)
    assert (master["kinds"], master["signum"]) == (1, 10)
    for w in (1, 2):
        assert workers[w]["kinds"] == [[0, 0], [0, 0], [0, 0], [1, 10]]
    assert len(master["centres"]) == ROUNDS


# ---- the trainer -------------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_one_downpour_worker_with_k1_is_the_synchronous_update(tmp_path):
    """Master + one worker, exchanging after every step: the worker's update is the single process's
    (same key, same batches) and the master's centre follows it, so the trained model equals a
    single-process run of the same config to fp32 rounding."""
    from hepgan.train.config import compose
    from hepgan.train.loop import fit

    mw = tmp_path / "downpour"
    args = [*COMMON, "logging.every_steps=2", "train.max_steps=2"]  # step 1 exchanges between barriers
    mpirun(2, [str(TRAIN), *args, "parallel=downpour", "parallel.exchange_every=1", f"out={mw}"])
    ref = tmp_path / "sync"
    fit(
        compose([*args, f"out={ref}", "parallel.backend=xla", "parallel.devices=1", "parallel.launcher=none"])
    )
    for a, b in zip(leaves(mw), leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    rows = (mw / "train.csv").read_text().splitlines()
    header = rows[0].split(",")
    for col in ("input_seconds", "compute_seconds", "comm_seconds", "staleness_mean"):
        assert col in header
    staleness = [float(r.split(",")[header.index("staleness_max")]) for r in rows[1:]]
    assert staleness == [0.0]  # one worker: nobody else pushes in between
    manifest = json.loads((mw / "manifest.json").read_text())
    assert manifest["parallel"]["backend"] == "downpour" and manifest["parallel"]["workers"] == 1


def test_master_worker_config_errors_name_the_key():
    from hepgan.parallel import ParallelConfig
    from hepgan.train.config import compose

    with pytest.raises(ValueError, match=r"parallel\.exchange_every"):
        ParallelConfig(backend="downpour", exchange_every=0).validate()
    with pytest.raises(ValueError, match=r"parallel\.easgd_alpha"):
        ParallelConfig(backend="easgd", easgd_alpha=1.5).validate()
    with pytest.raises(ValueError, match=r"train\.on_nonfinite"):
        compose(["parallel=downpour", "train.on_nonfinite=rollback"])


def test_master_worker_needs_two_processes():
    pytest.importorskip("mpi4py")
    from hepgan.parallel import ParallelConfig, setup

    with pytest.raises(ValueError, match="a master and at least one worker"):
        setup(ParallelConfig(backend="easgd"))


if __name__ == "__main__":  # one rank of a toy mpirun above
    _toy_rank(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
