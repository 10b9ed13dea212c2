"""PanDA phpo contract: input.json -> output.json evaluation, and the stateless steering step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sweep_helpers import write_conf

from hepgan.cli.sweep import main
from hepgan.sweep.panda import panda_eval, panda_steer
from hepgan.sweep.runner import RunSettings
from hepgan.sweep.space import load_space

SPACE_YAML = """\
study: panda-hpo
params:
  optim.lr_g: {type: log, low: 1.0e-5, high: 1.0e-1}
  train.batch_size: {type: int, low: 32, high: 256, step: 32}
  model: {type: categorical, choices: [small, paper]}
sampler: {name: tpe, seed: 1, n_startup_trials: 2}
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return write_conf(tmp_path)


@pytest.fixture
def space(tmp_path: Path) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(SPACE_YAML)
    return p


def test_eval_round_trip(conf: Path, space: Path, tmp_path: Path) -> None:
    wd = tmp_path / "job"
    wd.mkdir()
    (wd / "input.json").write_text(
        json.dumps({"optim.lr_g": 1e-3, "train.batch_size": 128, "model": "paper"})
    )
    args = [
        "panda-eval",
        str(space),
        "--workdir",
        str(wd),
        "--config-dir",
        str(conf),
        "--train-fn",
        "hepgan.sweep.dryrun:fit",
    ]
    assert main(args) == 0
    out = json.loads((wd / "output.json").read_text())
    assert set(out) == {"status", "loss", "message"}
    assert out["status"] == 0
    # dry-run objective at lr 1e-3, batch 128 after its default 3 epochs: (log10(lr)+3.3)^2 * (1 + 1/3)
    assert out["loss"] == pytest.approx((math.log10(1e-3) + 3.3) ** 2 * (4 / 3))
    result = json.loads((wd / "run" / "result.json").read_text())
    assert result["overrides"] == ["optim.lr_g=0.001", "train.batch_size=128", "model=paper"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"optim.lr_gg": 0.1}', "optim.lr_gg"),
        ("[1, 2]", "JSON object"),
        ("{not json", "JSONDecodeError"),
        (None, "input.json"),
        ('{"optim.lr_g": 0.001, "+dryrun.fail": true}', "+dryrun.fail"),
    ],
)
def test_eval_failures_give_nonzero_status(
    conf: Path, space: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    wd = tmp_path / "job"
    wd.mkdir()
    if content is not None:
        (wd / "input.json").write_text(content)
    from hepgan.sweep.dryrun import fit

    out = panda_eval(wd, RunSettings(config_dir=str(conf), train_fn=fit), space=load_space(space))
    assert out["status"] != 0 and out["loss"] is None
    assert message in out["message"]
    assert json.loads((wd / "output.json").read_text()) == out


def test_eval_without_space_and_failing_training(conf: Path, tmp_path: Path) -> None:
    wd = tmp_path / "job"
    wd.mkdir()
    (wd / "input.json").write_text('{"+dryrun.fail": true}')
    from hepgan.sweep.dryrun import fit

    out = panda_eval(wd, RunSettings(config_dir=str(conf), train_fn=fit))
    assert out["status"] == 1 and "training failed" in out["message"] and "dryrun.fail" in out["message"]


def _in_file(path: Path, points: list) -> Path:
    path.write_text(json.dumps({"points": points, "opt_space": {"unused": True}}))
    return path


def test_steer_emits_valid_points_then_stops_at_budget(space: Path, tmp_path: Path) -> None:
    sp = load_space(space)
    points = [
        [{"optim.lr_g": 1e-3, "train.batch_size": 64, "model": "small"}, 0.2],
        [{"optim.lr_g": 1e-2, "train.batch_size": 256, "model": "paper"}, 0.9],
        [{"optim.lr_g": 1e-4, "train.batch_size": 128, "model": "small"}, None],  # still being evaluated
        [{"optim.lr_g": 5e-4, "train.batch_size": 96, "model": "paper"}, "failed"],  # not a number: failed
    ]
    out = tmp_path / "out.json"
    args = [
        "panda-steer",
        str(space),
        "--in",
        str(_in_file(tmp_path / "in.json", points)),
        "--out",
        str(out),
        "--budget",
        "10",
        "--n-points",
        "3",
    ]
    assert main(args) == 0
    new = json.loads(out.read_text())
    assert len(new) == 3
    for p in new:
        assert set(p) == set(sp.distributions)
        assert 1e-5 <= p["optim.lr_g"] <= 1e-1
        assert p["train.batch_size"] in range(32, 257, 32) and isinstance(p["train.batch_size"], int)
        assert p["model"] in ("small", "paper")
    # new points are new: none repeats a point already in %IN
    assert all(p not in [q for q, _ in points] for p in new)

    # budget: 4 points so far + at most 10 in all -> 6 more at most; at the budget the answer is []
    assert len(panda_steer(sp, tmp_path / "in.json", out, budget=6, n_points=5)) == 2
    assert panda_steer(sp, tmp_path / "in.json", out, budget=4, n_points=5) == []
    assert json.loads(out.read_text()) == []


def test_steer_first_call_and_bad_input(
    space: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sp = load_space(space)
    new = panda_steer(sp, _in_file(tmp_path / "in.json", []), tmp_path / "out.json", budget=5, n_points=2)
    assert len(new) == 2
    (tmp_path / "bad.json").write_text('{"points": [[1, 2]]}')
    args = [
        "panda-steer",
        str(space),
        "--in",
        str(tmp_path / "bad.json"),
        "--out",
        str(tmp_path / "o.json"),
        "--budget",
        "3",
    ]
    assert main(args) == 2
    assert "points[0]" in capsys.readouterr().err
