"""Optuna campaigns: search-space YAML, driver-batch ask/run/tell, worker-pull, pruning, failures, retry."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from sweep_helpers import write_conf

from hepgan.cli.sweep import main
from hepgan.sweep.plan import read_plan
from hepgan.sweep.runner import RunSettings, run_plan_entries
from hepgan.sweep.space import format_value, load_space, parse_space
from hepgan.sweep.study import (
    JOURNAL_NAME,
    ask_plan,
    load_study,
    open_storage,
    retry_failed,
    run_worker,
    tell_results,
)

SPACE_YAML = """\
study: test-hpo
direction: minimize
objective: physics_score
fixed: [+dryrun.epochs=2]
params:
  optim.lr_g: {type: log, low: 1.0e-5, high: 1.0e-1}
  train.batch_size: {type: int, low: 32, high: 256, step: 32}
  model: {type: categorical, choices: [small, paper]}
sampler: {name: random, seed: 3}
pruner: {name: median, n_startup_trials: 1, n_warmup_steps: 2}
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE_YAML)
    return write_conf(tmp_path), space


def _dryrun_settings(conf: Path, train_fn=None) -> RunSettings:
    from hepgan.sweep.dryrun import fit

    return RunSettings(config_dir=str(conf), train_fn=train_fn or fit)


def test_space_yaml_to_distributions(setup: tuple[Path, Path]) -> None:
    space = load_space(setup[1])
    assert space.distributions == {
        "optim.lr_g": FloatDistribution(1e-5, 1e-1, log=True),
        "train.batch_size": IntDistribution(32, 256, step=32),
        "model": CategoricalDistribution(["small", "paper"]),
    }
    assert space.name == "test-hpo" and space.fixed == ["+dryrun.epochs=2"]
    assert space.overrides({"optim.lr_g": 0.01, "model": "paper"}) == [
        "+dryrun.epochs=2",
        "optim.lr_g=0.01",
        "model=paper",
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"params": {"a": {"type": "float", "low": 1}}}, "needs field 'high'"),
        ({"params": {"a": {"type": "normal"}}}, "type 'normal'"),
        ({"params": {"a": {"type": "float", "low": 2, "high": 1}}}, "params.a"),
        ({"params": {}}, "non-empty"),
        ({"params": {"a": {"type": "int", "low": 1, "high": 2}}, "directon": "min"}, "unknown keys"),
        ({"params": {"a": {"type": "categorical", "choices": []}}}, "non-empty list"),
        ({"params": {"a": {"type": "int", "low": 1, "high": 2}}, "enqueue": [{"b": 1}]}, r"enqueue\[0\]"),
        ({"params": {"a": {"type": "int", "low": 1, "high": 2}}, "enqueue": [{"a": 5}]}, "outside"),
        ({"params": {"a": {"type": "int", "low": 1, "high": 2}}, "enqueue": {"a": 1}}, "list of mappings"),
    ],
)
def test_bad_space_is_a_clear_error(doc: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_space(doc, source="'x.yaml'")


def test_enqueued_trials_run_first_and_only_once(setup: tuple[Path, Path]) -> None:
    doc = {
        "params": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "k": {"type": "categorical", "choices": ["a", "b"]},
        },
        "enqueue": [{"x": 0.25, "k": "b"}],
        "sampler": {"name": "random", "seed": 0},
    }
    space = parse_space(doc)
    storage = optuna.storages.InMemoryStorage()
    study = load_study(space, storage)
    first = study.ask()
    assert first.params == {"x": 0.25, "k": "b"} or (
        first.suggest_float("x", 0.0, 1.0) == 0.25 and first.suggest_categorical("k", ["a", "b"]) == "b"
    )
    study.tell(first, 1.0)
    again = load_study(space, storage)  # loading a study that has trials enqueues nothing more
    assert len(again.get_trials(deepcopy=False)) == 1


@pytest.mark.parametrize(
    "value",
    [0.001, 1e-05, 3.0e-12, 128, -2, True, False, None, "small", "a b", "it's", "1e3", "true", "x,y", 2.5e20],
)
def test_format_value_parses_back_in_hydra(value: object) -> None:
    parsed = OverridesParser.create().parse_override(f"key={format_value(value)}")
    assert not parsed.is_sweep_override()
    got = parsed.value()
    assert got == value and type(got) is type(value)


def test_driver_batch_ask_run_tell(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    study_dir = tmp_path / "study"
    plan = tmp_path / "round1.txt"
    entries = ask_plan(space_path, study_dir, 4, plan)
    assert read_plan(plan) == entries
    assert [e.meta["optuna_trial"] for e in entries] == ["0", "1", "2", "3"]

    def train(cfg):
        from hepgan.sweep.dryrun import fit

        if cfg.out.endswith("/2"):
            raise RuntimeError("node lost its GPU")
        return fit(cfg)

    results = run_plan_entries(plan, range(4), _dryrun_settings(conf, train))
    assert [r["status"] for r in results] == ["ok", "ok", "failed", "ok"]
    assert tell_results(study_dir, [tmp_path / "round1"])["COMPLETE"] == 3
    study = optuna.load_study(study_name="test-hpo", storage=open_storage(study_dir / JOURNAL_NAME))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    for t, r in zip(study.trials, results, strict=True):
        if r["status"] == "ok":
            assert t.value == pytest.approx(r["objective_value"])
            assert t.params["optim.lr_g"] == pytest.approx(float(r["overrides"][1].split("=")[1]))
    # telling again changes nothing
    assert tell_results(study_dir, [tmp_path / "round1"])["already"] == 4

    # a failed trial is re-enqueued once; the next ask hands out its parameters first
    space = load_space(study_dir / "space.yaml")
    assert retry_failed(space, open_storage(study_dir / JOURNAL_NAME)) == [2]
    assert retry_failed(space, open_storage(study_dir / JOURNAL_NAME)) == []
    round2 = ask_plan(space_path, study_dir, 2, tmp_path / "round2.txt")
    assert round2[0].overrides == entries[2].overrides
    assert round2[1].overrides != entries[2].overrides
    assert [e.meta["optuna_trial"] for e in round2] == ["4", "5"]


def test_tell_fail_missing_marks_lost_trials(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    ask_plan(space_path, tmp_path / "study", 2, tmp_path / "p.txt")
    run_plan_entries(tmp_path / "p.txt", [0], _dryrun_settings(conf))
    counts = tell_results(tmp_path / "study", [tmp_path / "p"], fail_missing=True)
    assert counts["COMPLETE"] == 1 and counts["FAIL"] == 1


def test_study_dir_refuses_another_space(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, space_path = setup
    ask_plan(space_path, tmp_path / "study", 1, tmp_path / "p.txt")
    other = tmp_path / "other.yaml"
    other.write_text(SPACE_YAML.replace("high: 256", "high: 512"))
    with pytest.raises(ValueError, match="another search space"):
        ask_plan(other, tmp_path / "study", 1, tmp_path / "p.txt")


def test_two_concurrent_workers_lose_no_trial(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    journal = tmp_path / "hpo.journal"
    cmd = [
        sys.executable,
        "-m",
        "hepgan.cli.sweep",
        "worker",
        str(space_path),
        "--storage",
        str(journal),
        "--n-trials",
        "5",
        "--sweep-dir",
        str(tmp_path / "trials"),
        "--config-dir",
        str(conf),
        "--train-fn",
        "hepgan.sweep.dryrun:fit",
    ]
    # started by hand: no scheduler variable tells the two workers apart
    drop = ("SLURM_", "LSB_", "HEPGAN_TASK_INDEX", "PANDAID")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    procs = [
        subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="test-hpo", storage=open_storage(journal))
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(10))
    # every trial finished (the median pruner may stop some) and has its run dir with the same outcome
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert any(t.state == TrialState.COMPLETE for t in trials)
    outcome = {"ok": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    for t in trials:
        res = json.loads((tmp_path / "trials" / f"trial-{t.number:05d}" / "result.json").read_text())
        assert outcome[res["status"]] == t.state
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(res["objective_value"])
    # the two workers' samplers are decorrelated: no repeated draws
    assert len({(t.params["optim.lr_g"], t.params["train.batch_size"]) for t in trials}) == 10


def test_worker_failed_trial_recorded_and_campaign_goes_on(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    calls = []

    def flaky(cfg):
        calls.append(1)
        if len(calls) == 1:
            raise FloatingPointError("loss became NaN")
        return {"physics_score": 0.5}

    space = load_space(space_path)
    storage = open_storage(tmp_path / "s.journal")
    results = run_worker(space, storage, 3, tmp_path / "trials", _dryrun_settings(conf, flaky))
    assert [r["status"] for r in results] == ["failed", "ok", "ok"]
    study = load_study(space, storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    # retry puts the failed parameters back; the next worker trial runs them
    assert retry_failed(space, storage) == [0]
    again = run_worker(space, storage, 1, tmp_path / "trials", _dryrun_settings(conf, flaky))
    assert again[0]["status"] == "ok"
    trials = load_study(space, storage).trials
    assert trials[3].params == trials[0].params and trials[3].user_attrs["retry_of"] == 0


def test_worker_prunes_through_report_callback(setup: tuple[Path, Path], tmp_path: Path) -> None:
    conf, space_path = setup
    space = load_space(space_path)
    storage = open_storage(tmp_path / "s.journal")
    steps_run: dict[float, list[int]] = {}

    def train(cfg, report=None):
        lr = float(cfg.optim.lr_g)
        target = abs(math.log10(lr) + 3.0)  # good near 1e-3
        for step in range(1, 6):
            steps_run.setdefault(lr, []).append(step)
            report(step, {"physics_score": target + 1.0 / step})
        return {"physics_score": target}

    study = load_study(space, storage)
    study.enqueue_trial({"optim.lr_g": 1e-3, "train.batch_size": 64, "model": "small"})
    study.enqueue_trial({"optim.lr_g": 1e-1, "train.batch_size": 64, "model": "small"})
    results = run_worker(space, storage, 2, tmp_path / "trials", _dryrun_settings(conf, train))
    assert [r["status"] for r in results] == ["ok", "pruned"]
    trials = load_study(space, storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    # warm-up: steps before n_warmup_steps=2 are not judged; the bad trial is pruned at step 2
    assert steps_run[1e-1] == [1, 2]
    assert steps_run[1e-3] == [1, 2, 3, 4, 5]


def test_cli_ask_run_tell_round(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, space_path = setup
    plan = tmp_path / "r1.txt"
    assert (
        main(["ask", str(space_path), "--study-dir", str(tmp_path / "st"), "-n", "2", "-o", str(plan)]) == 0
    )
    for i in ("0", "1"):
        assert (
            main(["run", str(plan), i, "--config-dir", str(conf), "--train-fn", "hepgan.sweep.dryrun:fit"])
            == 0
        )
    assert main(["tell", str(tmp_path / "st"), str(tmp_path / "r1")]) == 0
    assert '"COMPLETE": 2' in capsys.readouterr().out
    assert main(["retry"]) == 2
    assert "retry needs" in capsys.readouterr().err
