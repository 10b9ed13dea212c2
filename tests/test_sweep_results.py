"""Campaign results (table, plots, best model on physics) and the shared compilation cache."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import matplotlib.image
import pytest
from sweep_helpers import write_conf

from hepgan.cli.sweep import main
from hepgan.sweep.cache import configure_compile_cache, warm_plan
from hepgan.sweep.plan import PlanEntry, write_plan
from hepgan.sweep.results import select_best, trial_rows
from hepgan.sweep.runner import RunSettings, run_trial


def fake_train(cfg):
    lr = float(cfg.optim.lr_g)
    if lr > 0.5:
        raise RuntimeError("diverged")
    # physics_score is |lr - 0.01| scaled; sf error is the reverse, so the two metrics disagree
    return {"physics_score": abs(lr - 0.01) * 100, "sf_rel_error": 1.0 / (1.0 + abs(lr - 0.01) * 100)}


@pytest.fixture
def campaign(tmp_path: Path) -> Path:
    conf = write_conf(tmp_path)
    settings = RunSettings(config_dir=str(conf), train_fn=fake_train)
    sweep = tmp_path / "sweep"
    for i, (lr, model) in enumerate([(0.01, "small"), (0.02, "paper"), (0.05, "small"), (0.9, "paper")]):
        run_trial([f"optim.lr_g={lr}", f"model={model}"], sweep / str(i), settings)
    # a run of hepgan-train itself: flat result.json and Hydra's overrides file
    h = tmp_path / "multirun" / "0"
    (h / ".hydra").mkdir(parents=True)
    (h / ".hydra" / "overrides.yaml").write_text("- optim.lr_g=0.015\n- model=small\n")
    (h / "result.json").write_text(json.dumps({"physics_score": 0.5, "sf_rel_error": 0.9, "status": "ok"}))
    return tmp_path


def test_collect_table_and_plot(campaign: Path) -> None:
    out = campaign / "report" / "trials"
    assert main(["collect", str(campaign / "sweep"), str(campaign / "multirun"), "-o", str(out)]) == 0
    with out.with_suffix(".csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    assert [r["p:optim.lr_g"] for r in rows] == ["0.01", "0.015", "0.02", "0.05", "0.9"]  # best first
    assert [r["status"] for r in rows] == ["ok"] * 4 + ["failed"]
    assert float(rows[2]["objective"]) == pytest.approx(1.0)
    assert rows[4]["objective"] == "" and "diverged" in rows[4]["error"]
    expected_columns = {"m:physics_score", "m:sf_rel_error", "wall_s", "checkpoint", "overrides", "p:model"}
    assert expected_columns <= set(rows[0])
    md = out.with_suffix(".md").read_text()
    assert md.count("\n| ") == 5 and "5 trials: 4 ok" in md  # a row per trial after header and rule
    img = matplotlib.image.imread(out.with_name("trials_objective.png"))
    assert img.ndim == 3 and img.shape[0] > 100


def test_best_by_physics_and_by_other_metric(campaign: Path) -> None:
    dirs = [campaign / "sweep", campaign / "multirun"]
    best = select_best(dirs)["best"]
    assert best["overrides"] == "optim.lr_g=0.01 model=small"
    assert best["checkpoint"] is None and best["objective"] == pytest.approx(0.0)
    assert select_best(dirs, metric="sf_rel_error")["best"]["overrides"] == "optim.lr_g=0.05 model=small"
    assert select_best(dirs, metric="sf_rel_error", maximize=True)["best"]["objective"] == pytest.approx(1.0)


def test_best_reevaluates_top_k(campaign: Path) -> None:
    seen = []

    def reeval(run, n_events, seed):
        seen.append((Path(run["run"]).name, n_events, seed))
        if run["overrides"].startswith("optim.lr_g=0.015"):
            raise FileNotFoundError("no checkpoint")
        # on the larger sample the second-best run turns out best
        return {"physics_score": 0.1 if "0.02" in run["overrides"] else 0.3}

    dirs = [campaign / "sweep", campaign / "multirun"]
    report = select_best(dirs, top_k=3, reevaluate=10000, eval_fn=reeval, seed=5)
    assert sorted(s[1:] for s in seen) == [(10000, 5)] * 3
    assert report["best"]["overrides"] == "optim.lr_g=0.02 model=paper"
    errors = [c for c in report["candidates"] if "error" in c]
    assert len(errors) == 1 and "no checkpoint" in errors[0]["error"]
    with pytest.raises(ValueError, match="re-evaluation failed"):
        select_best(dirs, top_k=1, reevaluate=10, eval_fn=lambda r, n, s: {})


def test_best_without_results_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["best", str(tmp_path)]) == 2
    assert "no successful trial" in capsys.readouterr().err
    assert main(["collect", str(tmp_path / "nope"), "-o", str(tmp_path / "t")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert trial_rows([tmp_path]) == []


def test_compile_cache_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    try:
        monkeypatch.delenv("HEPGAN_COMPILE_CACHE", raising=False)
        assert configure_compile_cache(None) is None
        monkeypatch.setenv("HEPGAN_COMPILE_CACHE", str(tmp_path / "cc"))
        path = configure_compile_cache(None)
        assert path == (tmp_path / "cc").resolve() and path.is_dir()
        assert jax.config.jax_compilation_cache_dir == str(path)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        assert jax.config.jax_persistent_cache_min_entry_size_bytes == 0
    finally:
        jax.config.update("jax_compilation_cache_dir", old[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def test_warm_compiles_each_distinct_shape_once(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    entries = [
        PlanEntry((f"optim.lr_g={lr}", f"train.batch_size={b}", f"model={m}"))
        for lr in (0.001, 0.002)
        for b in (64, 128)
        for m in ("small",)
    ]
    plan = write_plan(tmp_path / "plan.txt", entries)
    compiled = []
    summary = warm_plan(
        plan,
        RunSettings(config_dir=str(conf)),
        compile_fn=lambda cfg: compiled.append((cfg.train.batch_size, cfg.optim.lr_g)),
    )
    # the learning rate does not change shapes: one compile per batch size, from its first entry
    assert compiled == [(64, 0.001), (128, 0.001)]
    assert summary == {"entries": 4, "distinct_shapes": 2, "compiled_entries": [0, 1]}
    by_lr = warm_plan(plan, RunSettings(config_dir=str(conf)), compile_fn=lambda cfg: None, keys=["optim"])
    assert by_lr["distinct_shapes"] == 2 and by_lr["compiled_entries"] == [0, 2]
