"""The sweep room on the real trainer: report/pruning through fit, compile_step, evaluate_checkpoint,
the Slurm launcher config and a whole grid campaign (plan -> run -> collect -> best) with the debug preset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from hepgan.cli.evaluate import main as evaluate_main
from hepgan.cli.sweep import main as sweep_main
from hepgan.sweep.runner import RunSettings, run_trial

DEBUG = ["debug=default", "train.max_steps=2"]


def test_slurm_launcher_config_composes() -> None:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from hepgan.train.config import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_module("hepgan.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.timeout_min, launcher.gpus_per_node, launcher.max_num_timeout) == (240, 1, 3)
    assert launcher.array_parallelism == 32 and launcher.mem_gb == 64 and launcher.cpus_per_task == 8
    assert str(launcher.submitit_folder).endswith("/.submitit/%j")


@pytest.mark.slow
def test_pruned_trial_keeps_its_checkpoints(tmp_path: Path) -> None:
    seen: list[int] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        assert "physics_score" in metrics
        seen.append(step)
        if step > 0:
            raise optuna.TrialPruned(f"pruned at step {step}")

    res = run_trial(["debug=default"], tmp_path / "t", RunSettings(), report=report)
    assert res["status"] == "pruned", res
    assert seen == [0, 4]  # step 0, then the end of the (only) epoch of the debug preset
    assert "pruned at step 4" in res["error"]
    steps = sorted(int(p.name) for p in (tmp_path / "t" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[0] == 0 and steps[-1] == 4  # saved before the hook raised, whole and kept
    assert any((tmp_path / "t" / "best").iterdir())
    assert json.loads((tmp_path / "t" / "result.json").read_text())["status"] == "pruned"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plan two debug trainings, run each as its own array task, collect and choose."""
    root = tmp_path_factory.mktemp("campaign")
    plan = root / "grid.txt"
    assert sweep_main(["plan", *DEBUG, "optim.lr_g=1e-3,3e-4", "-o", str(plan)]) == 0
    assert len([ln for ln in plan.read_text().splitlines() if ln and not ln.startswith("#")]) == 2
    for i in ("0", "1"):
        assert sweep_main(["run", str(plan), i]) == 0
    return root


@pytest.mark.slow
def test_grid_campaign_end_to_end(campaign: Path) -> None:
    sweep_dir = campaign / "grid"
    results = [json.loads((sweep_dir / i / "result.json").read_text()) for i in ("0", "1")]
    for r, lr in zip(results, ("0.001", "0.0003"), strict=True):
        assert r["status"] == "ok" and f"optim.lr_g={lr}" in r["overrides"]
        assert r["objective_value"] == r["metrics"]["physics_score"]
        assert r["metrics"]["step"] == 2
        assert Path(r["checkpoint"]).name == "best" and Path(r["checkpoint"]).is_dir()
        # the value recorded is the trainer's own final validation
        with open(sweep_dir / r["run_dir"].split("/")[-1] / "val.csv") as f:
            rows = list(csv.DictReader(f))
        assert float(rows[-1]["physics_score"]) == pytest.approx(r["objective_value"])

    out = campaign / "report" / "trials"
    assert sweep_main(["collect", str(sweep_dir), "-o", str(out)]) == 0
    with open(out.with_suffix(".csv")) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and {t["status"] for t in table} == {"ok"}
    scores = sorted(r["objective_value"] for r in results)
    assert [float(t["objective"]) for t in table] == pytest.approx(scores)  # best first

    best_json = campaign / "report" / "best.json"
    assert sweep_main(["best", str(sweep_dir), "--out", str(best_json)]) == 0
    best = json.loads(best_json.read_text())["best"]
    winner = min(results, key=lambda r: r["objective_value"])
    assert Path(best["run"]).resolve() == Path(winner["run_dir"]).resolve()


@pytest.mark.slow
def test_reevaluate_and_evaluate_checkpoint(campaign: Path, tmp_path: Path) -> None:
    from hepgan.train import evaluate_checkpoint

    run = campaign / "grid" / "0"
    a = evaluate_checkpoint(run, n_events=64, seed=3)
    b = evaluate_checkpoint(run, "best", n_events=64, seed=3)
    assert a == b and a["n_events"] == 64 and a["step"] == 2
    c = evaluate_checkpoint(run / "checkpoints", n_events=64, seed=4)  # another fresh sample, newest ckpt
    assert c["physics_score"] != a["physics_score"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate_checkpoint(run, "nowhere", n_events=8)

    best_json = tmp_path / "best.json"
    args = ["best", str(campaign / "grid"), "--top-k", "2", "--reevaluate", "64", "--out", str(best_json)]
    assert sweep_main(args) == 0
    rep = json.loads(best_json.read_text())
    chosen = next(c for c in rep["candidates"] if c["run"] == rep["best"]["run"])
    assert chosen["reevaluated_objective"] == min(c["reevaluated_objective"] for c in rep["candidates"])
    assert chosen["reevaluated_objective"] == pytest.approx(
        evaluate_checkpoint(chosen["run"], "best", 64, 0)["physics_score"]
    )

    out = tmp_path / "eval"
    assert (
        evaluate_main(["--checkpoint", str(run), "--max-events", "64", "--seed", "3", "--out", str(out)]) == 0
    )
    assert json.loads((out / "metrics.json").read_text())["physics_score"] == pytest.approx(
        a["physics_score"]
    )
    assert evaluate_main(["--checkpoint", str(tmp_path / "missing"), "--out", str(out)]) == 1


@pytest.mark.slow
def test_warm_compiles_each_shape_once(campaign: Path, tmp_path: Path) -> None:
    from hepgan.sweep.cache import warm_plan

    calls: list[dict] = []

    def compile_fn(cfg: object) -> None:
        from hepgan.train import compile_step

        calls.append(compile_step(cfg))

    summary = warm_plan(campaign / "grid.txt", RunSettings(), compile_fn=compile_fn)
    # the two entries differ only in the learning rate, which is not part of the compiled shapes
    assert summary == {"entries": 2, "distinct_shapes": 1, "compiled_entries": [0]}
    assert len(calls) == 1 and calls[0]["compiles"] >= 1 and calls[0]["first_step_s"] > 0
