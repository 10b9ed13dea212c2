"""PanDA phpo with a shared Optuna storage: evaluation jobs report and are pruned, the steering keeps the
study (complete, pruned and failed trials) and ends the search on a budget, a target or a patience."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from sweep_helpers import write_conf

from hepgan.cli.sweep import main
from hepgan.sweep.panda import TRIAL_KEY, panda_eval, panda_steer, stop_reason
from hepgan.sweep.runner import RunSettings
from hepgan.sweep.space import SearchSpace, load_space
from hepgan.sweep.study import load_study, open_storage

GOOD = {"optim.lr_g": 1e-3, "train.batch_size": 64, "model": "small"}
BAD = {"optim.lr_g": 1e-1, "train.batch_size": 64, "model": "small"}

# the median pruner judges from the second finished trial on, from step 2 on; the space's enqueue list
# makes the first two points a good and a hopeless one, the rest come from the seeded sampler
SPACE_YAML = f"""\
study: panda-prune
params:
  optim.lr_g: {{type: log, low: 1.0e-5, high: 1.0e-1}}
  train.batch_size: {{type: int, low: 32, high: 256, step: 32}}
  model: {{type: categorical, choices: [small, paper]}}
enqueue:
  - {json.dumps(GOOD)}
  - {json.dumps(BAD)}
sampler: {{name: tpe, seed: 4, n_startup_trials: 2}}
pruner: {{name: median, n_startup_trials: 1, n_warmup_steps: 2}}
"""


def curve_train(cfg: Any, report: Any = None) -> dict[str, float]:
    """Five "epochs" whose score falls to |log10(lr) + 3| (bad far from lr 1e-3); records each step run."""
    from omegaconf import OmegaConf

    rd = Path(str(OmegaConf.select(cfg, "out")))
    rd.mkdir(parents=True, exist_ok=True)
    final = abs(math.log10(float(cfg.optim.lr_g)) + 3.0)
    for step in range(1, 6):
        with (rd / "steps.txt").open("a") as f:
            f.write(f"{step}\n")
        if report is not None:
            report(step, {"physics_score": final + 1.0 / step})
    return {"physics_score": final}


def failing_train(cfg: Any, report: Any = None) -> dict[str, float]:
    """A training that crashes at once."""
    raise RuntimeError("out of memory (stand-in)")


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return write_conf(tmp_path)


@pytest.fixture
def space(tmp_path: Path) -> SearchSpace:
    p = tmp_path / "space.yaml"
    p.write_text(SPACE_YAML)
    return load_space(p)


def _settings(conf: Path, fn: Any = curve_train) -> RunSettings:
    return RunSettings(config_dir=str(conf), train_fn=fn)


def _in_file(path: Path, points: list) -> Path:
    path.write_text(json.dumps({"points": points, "opt_space": None}))
    return path


def _job(tmp_path: Path, name: str, point: dict) -> Path:
    wd = tmp_path / name
    wd.mkdir(exist_ok=True)
    (wd / "input.json").write_text(json.dumps(point))
    return wd


def _steps(wd: Path) -> list[int]:
    return [int(x) for x in (wd / "run" / "steps.txt").read_text().split()]


def _study(space: SearchSpace, journal: Path) -> Any:
    return load_study(space, open_storage(journal))


def test_eval_reports_prunes_and_steering_learns_from_storage(
    conf: Path, space: SearchSpace, tmp_path: Path
) -> None:
    journal = tmp_path / "hpo.journal"
    first = panda_steer(
        space,
        _in_file(tmp_path / "in0.json", []),
        tmp_path / "out0.json",
        budget=20,
        n_points=3,
        storage=journal,
    )
    assert [p[TRIAL_KEY] for p in first] == [0, 1, 2]
    assert {k: v for k, v in first[0].items() if k != TRIAL_KEY} == GOOD
    assert {k: v for k, v in first[1].items() if k != TRIAL_KEY} == BAD
    assert [t.state for t in _study(space, journal).trials] == [TrialState.RUNNING] * 3

    # (a) the good job reports every step into its trial and completes
    good = _job(tmp_path, "job0", first[0])
    out = panda_eval(good, _settings(conf), space=space, storage=journal)
    assert out["status"] == 0 and out["loss"] == pytest.approx(0.0, abs=1e-12)
    t0 = _study(space, journal).trials[0]
    assert t0.state == TrialState.COMPLETE
    assert t0.intermediate_values == pytest.approx({s: 1.0 / s for s in range(1, 6)})

    # (b) the hopeless job is pruned at the end of the warm-up: output status 0, last value as loss
    bad = _job(tmp_path, "job1", first[1])
    out = panda_eval(bad, _settings(conf), space=space, storage=journal)
    assert _steps(bad) == [1, 2]
    assert out["status"] == 0 and out["loss"] == pytest.approx(2.5)
    assert out["message"].startswith("pruned at step 2")
    assert json.loads((bad / "output.json").read_text()) == out
    t1 = _study(space, journal).trials[1]
    assert t1.state == TrialState.PRUNED and t1.intermediate_values == pytest.approx({1: 3.0, 2: 2.5})

    # a PanDA retry of the pruned job does not train again and gives the same answer
    again = panda_eval(bad, _settings(conf), space=space, storage=journal)
    assert _steps(bad) == [1, 2]
    assert again["status"] == 0 and again["loss"] == out["loss"] and "not trained again" in again["message"]

    # a crashing job: status 1, its trial FAIL
    crash = _job(tmp_path, "job2", first[2])
    out = panda_eval(crash, _settings(conf, failing_train), space=space, storage=journal)
    assert out["status"] == 1 and out["loss"] is None and "out of memory" in out["message"]
    assert _study(space, journal).trials[2].state == TrialState.FAIL

    # (c) the next steering call works on the stored study: complete, pruned and failed trials condition
    # its sampler; the losses iDDS relays for them change nothing
    points = [[first[0], 0.0], [first[1], 2.5], [first[2], None]]
    new = panda_steer(
        space,
        _in_file(tmp_path / "in1.json", points),
        tmp_path / "out1.json",
        budget=20,
        n_points=2,
        storage=journal,
    )
    assert [p[TRIAL_KEY] for p in new] == [3, 4]
    trials = _study(space, journal).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.RUNNING,
        TrialState.RUNNING,
    ]
    assert [t.params for t in trials[3:]] == [{k: v for k, v in p.items() if k != TRIAL_KEY} for p in new]
    assert trials[1].intermediate_values  # the pruned trial keeps its curve for TPE and the pruner
    summary = json.loads((tmp_path / "out1.steering.json").read_text())
    assert summary["states"] == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 1, "RUNNING": 2}
    assert summary["best"] == {"trial": 0, "physics_score": 0.0}
    assert summary["decision"] == "propose 2 points"

    # (d) a target already reached ends the search
    stop = panda_steer(
        space,
        tmp_path / "in1.json",
        tmp_path / "out2.json",
        budget=20,
        n_points=2,
        storage=journal,
        target=0.01,
    )
    assert stop == [] and json.loads((tmp_path / "out2.json").read_text()) == []
    assert "target reached: trial 0" in json.loads((tmp_path / "out2.steering.json").read_text())["decision"]
    assert len(_study(space, journal).trials) == 5  # nothing asked


def test_steering_tells_lost_jobs_and_adopts_stateless_points(space: SearchSpace, tmp_path: Path) -> None:
    journal = tmp_path / "hpo.journal"
    first = panda_steer(
        space,
        _in_file(tmp_path / "in0.json", []),
        tmp_path / "out.json",
        budget=20,
        n_points=2,
        storage=journal,
    )
    old = {"optim.lr_g": 2e-3, "train.batch_size": 96, "model": "paper"}  # from an earlier stateless run
    waiting = {"optim.lr_g": 3e-4, "train.batch_size": 32, "model": "paper"}
    # jobs that died (or ran without --storage) after iDDS got their loss: told from the loss
    points = [[first[0], 0.7], [first[1], "failed"], [old, 0.3], [waiting, None]]
    in_path = _in_file(tmp_path / "in1.json", points)
    for _ in range(2):  # a second call with the same %IN adds nothing twice
        panda_steer(space, in_path, tmp_path / "out.json", budget=4, storage=journal)
    trials = _study(space, journal).trials
    assert [t.state for t in trials[:4]] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]
    assert trials[0].value == 0.7 and trials[2].value == 0.3 and trials[2].params == old
    assert len(trials) == 4  # at the budget: nothing new asked
    # the stateless point's loss arrives later: its trial is told
    points[3][1] = 0.9
    panda_steer(
        space, _in_file(tmp_path / "in2.json", points), tmp_path / "out.json", budget=4, storage=journal
    )
    trials = _study(space, journal).trials
    assert trials[3].state == TrialState.COMPLETE and trials[3].value == 0.9
    assert json.loads((tmp_path / "out.json").read_text()) == []


def test_stopping_rules(space: SearchSpace, tmp_path: Path) -> None:
    # stateless: the rules read the losses of %IN in their order
    pts = [
        [{**GOOD, "optim.lr_g": lr}, loss]
        for lr, loss in [(1e-3, 0.5), (2e-3, 0.4), (3e-3, 0.6), (4e-3, 0.7), (5e-3, None)]
    ]
    in_path = _in_file(tmp_path / "in.json", pts)
    out = tmp_path / "out.json"
    assert panda_steer(space, in_path, out, budget=20, patience=2) == []
    assert (
        "no improvement in the last 2" in json.loads((tmp_path / "out.steering.json").read_text())["decision"]
    )
    assert len(panda_steer(space, in_path, out, budget=20, patience=3)) == 1
    assert panda_steer(space, in_path, out, budget=20, target=0.45) == []
    assert len(panda_steer(space, in_path, out, budget=20, n_points=2, target=0.3)) == 2

    assert stop_reason([], "minimize", target=1.0, patience=1) is None
    assert stop_reason([(0, 2.0), (1, 3.0)], "maximize", target=2.5) is not None
    assert stop_reason([(0, 2.0), (1, 3.0)], "minimize", target=1.5) is None
    assert stop_reason([(0, 2.0), (1, 3.0), (2, 1.0)], "maximize", patience=1) is not None
    assert stop_reason([(0, 2.0), (1, 3.0), (2, 4.0)], "maximize", patience=1) is None

    # with a storage and through the CLI: completed trials in the order they completed
    journal = tmp_path / "hpo.journal"
    study = _study(space, journal)
    for value in (0.5, 0.4, 0.6, 0.7):
        t = study.ask()
        study.tell(t, value)
    args = [
        "panda-steer",
        str(tmp_path / "space.yaml"),
        "--in",
        str(_in_file(tmp_path / "e.json", [])),
        "--out",
        str(out),
        "--budget",
        "20",
        "--storage",
        str(journal),
    ]
    assert main([*args, "--patience", "2"]) == 0 and json.loads(out.read_text()) == []
    assert main([*args, "--patience", "3"]) == 0 and len(json.loads(out.read_text())) == 1
    assert main([*args, "--patience", "0"]) == 2


def test_cli_eval_with_storage(conf: Path, space: SearchSpace, tmp_path: Path) -> None:
    journal = tmp_path / "hpo.journal"
    (point,) = panda_steer(
        space, _in_file(tmp_path / "in.json", []), tmp_path / "out.json", budget=3, storage=journal
    )
    wd = _job(tmp_path, "job", point)
    args = [
        "panda-eval",
        str(tmp_path / "space.yaml"),
        "--workdir",
        str(wd),
        "--storage",
        str(journal),
        "--config-dir",
        str(conf),
        "--train-fn",
        "test_panda_pruning:curve_train",
    ]
    assert main(args) == 0
    assert json.loads((wd / "output.json").read_text())["status"] == 0
    assert _study(space, journal).trials[0].intermediate_values


@pytest.mark.parametrize(
    ("point", "storage", "message"),
    [
        ({**GOOD, TRIAL_KEY: 99}, "journal", f"{TRIAL_KEY}=99 is not a trial"),
        ({**GOOD, TRIAL_KEY: "one"}, "journal", f"{TRIAL_KEY} must be a trial number"),
        ({**BAD, TRIAL_KEY: 0}, "journal", "not those of the point"),
        ({**GOOD, TRIAL_KEY: 0}, "under-a-file", "cannot be opened"),
        ({**GOOD, TRIAL_KEY: 0}, "sqlite:///{tmp}/no/such/dir/x.db", "cannot be reached"),
        ({**GOOD, TRIAL_KEY: 0}, "empty", "holds no study 'panda-prune'"),
    ],
)
def test_eval_storage_errors_write_status_1(
    conf: Path, space: SearchSpace, tmp_path: Path, point: dict, storage: str, message: str
) -> None:
    journal = tmp_path / "hpo.journal"
    panda_steer(space, _in_file(tmp_path / "in.json", []), tmp_path / "o.json", budget=3, storage=journal)
    (tmp_path / "a-file").write_text("x")
    url = {
        "journal": str(journal),
        "under-a-file": str(tmp_path / "a-file" / "hpo.journal"),
        "empty": str(tmp_path / "other.journal"),
    }.get(storage, storage.format(tmp=tmp_path))
    wd = _job(tmp_path, "job", point)
    out = panda_eval(wd, _settings(conf), space=space, storage=url)
    assert out["status"] == 1 and out["loss"] is None
    assert message in out["message"]
    assert json.loads((wd / "output.json").read_text()) == out
    assert not (wd / "run" / "steps.txt").exists()  # nothing trained


def test_cli_eval_bad_space_and_missing_space_still_write_output(conf: Path, tmp_path: Path) -> None:
    wd = _job(tmp_path, "job", {**GOOD, TRIAL_KEY: 0})
    assert main(["panda-eval", str(tmp_path / "nope.yaml"), "--workdir", str(wd)]) == 0
    assert "nope.yaml" in json.loads((wd / "output.json").read_text())["message"]
    out = panda_eval(wd, _settings(conf), storage=tmp_path / "hpo.journal")
    assert out["status"] == 1 and "--storage needs the search space" in out["message"]


def test_multi_objective_space_is_refused(conf: Path, space: SearchSpace, tmp_path: Path) -> None:
    space.objectives = ["physics_score", "wall_s"]  # type: ignore[attr-defined]  # a multi-objective space
    with pytest.raises(ValueError, match="single-objective"):
        panda_steer(space, _in_file(tmp_path / "in.json", []), tmp_path / "o.json", budget=3)
    wd = _job(tmp_path, "job", GOOD)
    out = panda_eval(wd, _settings(conf), space=space)
    assert out["status"] == 1 and "single-objective" in out["message"]


def test_stateless_eval_ignores_trial_key(conf: Path, space: SearchSpace, tmp_path: Path) -> None:
    # a point of the stateful steering evaluated without --storage: trained, not pruned; the steering
    # tells its trial from the loss later
    wd = _job(tmp_path, "job", {**BAD, TRIAL_KEY: 7})
    out = panda_eval(wd, _settings(conf), space=space)
    assert out["status"] == 0 and out["loss"] == pytest.approx(2.0)
    assert _steps(wd) == [1, 2, 3, 4, 5]


def test_config_that_does_not_compose_fails_the_trial(conf: Path, tmp_path: Path) -> None:
    p = tmp_path / "space.yaml"
    p.write_text(SPACE_YAML.replace("params:", "fixed: [+train.nope.=1]\nparams:"))
    space = load_space(p)
    journal = tmp_path / "hpo.journal"
    (point,) = panda_steer(
        space, _in_file(tmp_path / "in.json", []), tmp_path / "o.json", budget=3, storage=journal
    )
    out = panda_eval(_job(tmp_path, "job", point), _settings(conf), space=space, storage=journal)
    assert out["status"] == 1 and "cannot compose" in out["message"]
    assert _study(space, journal).trials[0].state == TrialState.FAIL


def test_cli_steer_says_why_it_stops(
    space: SearchSpace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pts = [[{**GOOD, "optim.lr_g": lr}, 0.5] for lr in (1e-3, 2e-3)]
    args = [
        "panda-steer",
        str(tmp_path / "space.yaml"),
        "--in",
        str(_in_file(tmp_path / "in.json", pts)),
        "--out",
        str(tmp_path / "out.json"),
        "--budget",
        "9",
        "--target",
        "0.5",
    ]
    assert main(args) == 0
    assert "stop: target reached: trial 0" in capsys.readouterr().err
