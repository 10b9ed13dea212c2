"""A cluster cannot break a sweep: distinct worker seeds, killed workers' trials retried through the
heartbeat, torn or foreign journals named and never appended to, pre-emption requeued (exit 75), atomic
result files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import write_conf

from hepgan.cli.sweep import EXIT_PREEMPTED, main
from hepgan.sweep.journal import HEARTBEAT_ATTR, JournalCorruptError
from hepgan.sweep.plan import write_plan
from hepgan.sweep.runner import RunSettings, is_preempted, run_trial
from hepgan.sweep.space import load_space
from hepgan.sweep.study import (
    JOURNAL_NAME,
    WorkerIdentity,
    ask_plan,
    load_study,
    open_storage,
    retry_failed,
    run_worker,
    tell_results,
    worker_identity,
)

TESTS = Path(__file__).parent
SPACE_YAML = """\
study: resilience
direction: minimize
objective: physics_score
params:
  optim.lr_g: {type: log, low: 1.0e-5, high: 1.0e-1}
  train.batch_size: {type: int, low: 32, high: 256, step: 32}
sampler: {name: random, seed: 3}
pruner: {name: none}
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE_YAML)
    return write_conf(tmp_path), space


def _fast(conf: Path) -> RunSettings:
    from hepgan.sweep.dryrun import fit

    return RunSettings(config_dir=str(conf), train_fn=fit)


def _trials(space_path: Path, journal: Path) -> list[optuna.trial.FrozenTrial]:
    return load_study(load_space(space_path), open_storage(journal)).trials


def _hand_env() -> dict[str, str]:
    """This environment without scheduler variables: a worker started by hand."""
    drop = ("SLURM_", "LSB_", "HEPGAN_TASK_INDEX", "PANDAID")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "PYTHONPATH": os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])}


# ---------------------------------------------------------------------------------------------------------
# worker seeds
# ---------------------------------------------------------------------------------------------------------


def test_worker_identity_and_seed(setup: tuple[Path, Path]) -> None:
    space = load_space(setup[1])
    a, b = worker_identity(env={}), worker_identity(env={})
    assert not a.stable and a.key != b.key and a.sampler_seed(space) != b.sampler_seed(space)
    named = worker_identity("gpu-3", env={})
    assert named == WorkerIdentity("id:gpu-3", True)
    assert named.sampler_seed(space) == worker_identity("gpu-3", env={}).sampler_seed(space)
    slurm = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_JOB_ID": "77", "SLURM_JOB_ID": "81"}
    task = worker_identity(env=slurm)
    assert task == WorkerIdentity("slurm:77:4", True)
    # two workers launched by srun in one array task are two workers
    assert worker_identity(env={**slurm, "SLURM_PROCID": "1"}).key == "slurm:77:4:1"
    other_array = worker_identity(env={**slurm, "SLURM_ARRAY_JOB_ID": "78"})
    assert other_array.sampler_seed(space) != task.sampler_seed(space)
    # a requeued task finds more trials in the study: it does not draw its first points again
    assert task.sampler_seed(space, 5) != task.sampler_seed(space, 0)
    # an salloc shell (job id, no array task) is a hand-started worker
    assert not worker_identity(env={"SLURM_JOB_ID": "81"}).stable


def test_two_hand_started_workers_propose_distinct_trials(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    journal = tmp_path / "s.journal"
    space = load_space(space_path)
    idents = [worker_identity(env={}) for _ in range(2)]
    for ident in idents:
        run_worker(space, open_storage(journal), 1, tmp_path / "t", _fast(conf), identity=ident)
    t0, t1 = _trials(space_path, journal)
    # with one seed for both (the space's), the seeded random sampler would draw the same point twice
    assert t0.params != t1.params
    seeds = [i.sampler_seed(space, n) for n, i in enumerate(idents)]  # offset: trials so far
    assert [t0.user_attrs["sampler_seed"], t1.user_attrs["sampler_seed"]] == seeds
    res = json.loads((tmp_path / "t" / "trial-00001" / "result.json").read_text())
    assert res["meta"]["sampler_seed"] == seeds[1] and res["meta"]["worker"] == idents[1].key


# ---------------------------------------------------------------------------------------------------------
# killed workers: heartbeat + retry callback
# ---------------------------------------------------------------------------------------------------------


def test_killed_workers_trial_is_retried_by_the_next_worker(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    journal, trials_dir = tmp_path / "s.journal", tmp_path / "trials"
    cmd = [
        sys.executable,
        "-m",
        "hepgan.cli.sweep",
        "worker",
        str(space_path),
        "--storage",
        str(journal),
        "--n-trials",
        "1",
        "--sweep-dir",
        str(trials_dir),
        "--config-dir",
        str(conf),
        "--train-fn",
        "sweep_helpers:hang_train",
        "--heartbeat",
        "0.2",
        "--grace",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=_hand_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = trials_dir / "trial-00000" / "started"
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"worker did not start its trial: {proc.communicate()}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    killed = _trials(space_path, journal)
    assert [t.state for t in killed] == [TrialState.RUNNING]
    assert HEARTBEAT_ATTR in killed[0].system_attrs

    time.sleep(1.2)  # the grace period passes without a beat
    storage = open_storage(journal, heartbeat_interval=0.2, grace_period=1, max_retry=3)
    log: list[str] = []
    ident = WorkerIdentity("second", False)
    run_worker(
        load_space(space_path),
        storage,
        5,
        trials_dir,
        _fast(conf),
        max_total=3,
        identity=ident,
        log=log.append,
    )
    trials = _trials(space_path, journal)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    retry = trials[1]
    assert retry.params == trials[0].params and retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["worker"] == "second" and retry.user_attrs["trial_dir"] == "trial-00000"
    # the retry trained in the killed trial's folder (where its checkpoints would be)
    res = json.loads((trials_dir / "trial-00000" / "result.json").read_text())
    assert res["status"] == "ok" and res["meta"]["optuna_trial"] == "1" and res["meta"]["worker"] == "second"
    assert retry.value == pytest.approx(res["objective_value"])
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    # a manual retry does not queue the killed trial a second time
    assert retry_failed(load_space(space_path), open_storage(journal)) == []


def test_live_trial_keeps_beating(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    journal = tmp_path / "s.journal"
    states_seen = []

    def slow(cfg: object) -> dict[str, float]:
        # another worker looks for stale trials while this one trains for twice the grace period
        checker = open_storage(journal, heartbeat_interval=0.2, grace_period=1)
        other = optuna.load_study(study_name="resilience", storage=checker)
        for _ in range(4):
            time.sleep(0.5)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(other)
            states_seen.append(other.trials[0].state)
        return {"physics_score": 0.5}

    storage = open_storage(journal, heartbeat_interval=0.2, grace_period=1)
    settings = RunSettings(config_dir=str(conf), train_fn=slow)
    results = run_worker(load_space(space_path), storage, 1, tmp_path / "t", settings)
    assert [r["status"] for r in results] == ["ok"]
    assert states_seen == [TrialState.RUNNING] * 4
    assert [t.state for t in _trials(space_path, journal)] == [TrialState.COMPLETE]


# ---------------------------------------------------------------------------------------------------------
# damaged journals
# ---------------------------------------------------------------------------------------------------------


def _journal_with_trials(space_path: Path, journal: Path, n: int = 2) -> None:
    space = load_space(space_path)
    study = load_study(space, open_storage(journal))
    for i in range(n):
        trial = study.ask(dict(space.distributions))
        study.tell(trial, float(i))


def _truncate_from(message: str, journal: Path) -> int:
    m = re.search(r"truncate -s (\d+) (\S+)'", message)
    assert m is not None and m.group(2) == str(journal), message
    return int(m.group(1))


def test_torn_last_record_is_named_and_never_appended_after(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, space_path = setup
    journal = tmp_path / "s.journal"
    _journal_with_trials(space_path, journal)
    open_before = open_storage(journal)  # a worker that had the journal open before the kill
    whole = journal.read_bytes()
    n_lines = whole.count(b"\n")
    with journal.open("ab") as f:
        f.write(b'{"op_code":5,"worker_id":"x","trial_id":')  # killed mid-write
    torn = journal.read_bytes()

    with pytest.raises(JournalCorruptError) as err:
        open_storage(journal)
    msg = str(err.value)
    assert str(journal) in msg and f"line {n_lines + 1} (the last" in msg and "\n" not in msg
    assert _truncate_from(msg, journal) == len(whole)
    # the worker that was already running stops too, and appends nothing after the torn record
    study = optuna.load_study(study_name="resilience", storage=open_before)
    with pytest.raises(JournalCorruptError, match="torn record"):
        study.ask()
    assert journal.read_bytes() == torn

    os.truncate(journal, _truncate_from(msg, journal))  # the repair the message gives
    assert [t.value for t in _trials(space_path, journal)] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello world\n", "is not an Optuna journal: line 1"),
        (b'{"a": 1}\n', "is not an Optuna journal: line 1"),
        (None, "is damaged at line 3 of"),  # garbage between records
    ],
)
def test_garbage_journal_is_a_clear_error(
    setup: tuple[Path, Path], tmp_path: Path, content: bytes | None, expected: str
) -> None:
    _, space_path = setup
    journal = tmp_path / "s.journal"
    if content is None:
        _journal_with_trials(space_path, journal)
        lines = journal.read_bytes().splitlines(keepends=True)
        content = b"".join([*lines[:2], b"\x00\x00garbage\n", *lines[2:]])
    journal.write_bytes(content)
    with pytest.raises(JournalCorruptError, match=expected) as err:
        load_study(load_space(space_path), open_storage(journal))
    assert str(journal) in str(err.value)
    assert journal.read_bytes() == content


def test_cli_stops_on_a_torn_journal(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, space_path = setup
    study_dir = tmp_path / "study"
    ask_plan(space_path, study_dir, 1, tmp_path / "p.txt")
    journal = study_dir / JOURNAL_NAME
    with journal.open("ab") as f:
        f.write(b'{"op_code":')
    torn = journal.read_bytes()
    assert main(["tell", str(study_dir), str(tmp_path)]) == 2
    assert (
        main(["ask", str(space_path), "--study-dir", str(study_dir), "-n", "1", "-o", str(tmp_path / "q")])
        == 2
    )
    worker = [
        "worker",
        str(space_path),
        "--storage",
        str(journal),
        "--n-trials",
        "1",
        "--config-dir",
        str(conf),
    ]
    assert main(worker) == 2
    err = capsys.readouterr().err
    assert err.count(f"Optuna journal {str(journal)!r} ends in a torn record") == 3
    assert journal.read_bytes() == torn


# ---------------------------------------------------------------------------------------------------------
# pre-emption
# ---------------------------------------------------------------------------------------------------------


def test_preempted_plan_entry_exits_75_and_resumes(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    study_dir, plan = tmp_path / "study", tmp_path / "r1.txt"
    ask_plan(space_path, study_dir, 2, plan)
    run = ["run", str(plan), "0", "--per-task", "2", "--config-dir", str(conf)]
    run += ["--train-fn", "sweep_helpers:preempt_once"]
    assert main(run) == EXIT_PREEMPTED
    first = json.loads((tmp_path / "r1" / "0" / "result.json").read_text())
    assert first["status"] == "preempted" and "Preempted" in first["error"]
    assert not (tmp_path / "r1" / "0" / "error.txt").exists()
    assert not (tmp_path / "r1" / "1").exists()  # the task stops: the process is about to be killed
    counts = tell_results(study_dir, [tmp_path / "r1"])
    assert counts["preempted"] == 1 and counts["FAIL"] == 0
    assert [t.state for t in _trials(space_path, study_dir / JOURNAL_NAME)] == [TrialState.RUNNING] * 2

    # the requeued task resumes entry 0 and goes on to entry 1, which is pre-empted in turn
    assert main(run) == EXIT_PREEMPTED
    again = json.loads((tmp_path / "r1" / "0" / "result.json").read_text())
    assert again["status"] == "ok" and again["metrics"]["resumed_from"] == "step 4" and again["attempts"] == 2
    meta = json.loads((tmp_path / "r1" / "0" / "meta.json").read_text())
    assert [h["outcome"] for h in meta["history"]] == ["preempted", "ok"]
    assert json.loads((tmp_path / "r1" / "1" / "result.json").read_text())["status"] == "preempted"
    assert main(run) == 0
    assert tell_results(study_dir, [tmp_path / "r1"])["COMPLETE"] == 2


def test_real_preempted_exception_is_recognised(tmp_path: Path) -> None:
    loop = pytest.importorskip("hepgan.train.loop")
    if not hasattr(loop, "Preempted"):
        pytest.skip("hepgan.train.loop.Preempted is not there yet")
    assert is_preempted(loop.Preempted(signal.SIGTERM, 4, "ckpt"))
    assert not is_preempted(RuntimeError("Preempted"))


def test_preempted_worker_trial_is_requeued_not_failed(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    journal, trials_dir = tmp_path / "s.journal", tmp_path / "trials"
    worker = ["worker", str(space_path), "--storage", str(journal), "--n-trials", "3"]
    worker += ["--sweep-dir", str(trials_dir), "--config-dir", str(conf), "--worker-id", "w0"]
    worker += ["--train-fn", "sweep_helpers:preempt_once"]
    assert main(worker) == EXIT_PREEMPTED
    t0, t1 = _trials(space_path, journal)
    assert (t0.state, t0.user_attrs["preempted"]) == (TrialState.FAIL, True)
    assert (t1.state, t1.params, t1.user_attrs["requeue_of"]) == (TrialState.WAITING, t0.params, 0)
    assert retry_failed(load_space(space_path), open_storage(journal)) == []  # already queued

    assert main([*worker, "--max-total", "1"]) == 0  # the requeued worker runs the queued trial
    trials = _trials(space_path, journal)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    res = json.loads((trials_dir / "trial-00000" / "result.json").read_text())
    assert res["metrics"]["resumed_from"] == "step 4" and res["meta"]["optuna_trial"] == "1"


def test_preempted_run_trial_record(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from sweep_helpers import preempt_once

    conf, _ = setup
    res = run_trial(
        ["optim.lr_g=0.01"], tmp_path / "r", RunSettings(config_dir=str(conf), train_fn=preempt_once)
    )
    assert res["status"] == "preempted" and res["objective_value"] is None


# ---------------------------------------------------------------------------------------------------------
# atomic result files
# ---------------------------------------------------------------------------------------------------------


def test_result_files_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hepgan.sweep.plan import PlanEntry
    from hepgan.sweep.results import write_best, write_table

    rows = [{"run": "a", "status": "ok", "objective": 1.0}]
    write_best({"best": {"run": "a"}}, tmp_path / "best.json")
    write_table(rows, tmp_path / "trials")
    write_plan(tmp_path / "plan.txt", [PlanEntry(("a=1",), {})])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hepgan.fileio.os.fsync", full_disk)
    for write in (
        lambda: write_best({"best": {"run": "b"}}, tmp_path / "best.json"),
        lambda: write_table([{**rows[0], "run": "b"}], tmp_path / "trials"),
        lambda: write_plan(tmp_path / "plan.txt", [PlanEntry(("b=2",), {})]),
    ):
        with pytest.raises(OSError, match="No space"):
            write()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
