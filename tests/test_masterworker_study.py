"""experiments/masterworker/study.py: reading run folders, the threshold, the table and the cluster plan.

The run folders are written here (manifest, train.csv, val.csv as the trainer writes them), so the
expected figures are known without training.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

STUDY = Path(__file__).resolve().parent.parent / "experiments" / "masterworker" / "study.py"


def _study():
    spec = importlib.util.spec_from_file_location("mw_study", STUDY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(folder: Path, backend: str, scores: list[float], rates: list[float], k: int | None) -> None:
    folder.mkdir(parents=True)
    par = {"backend": backend, "workers": 2, "process_count": 3 if k else 2, "global_batch": 16}
    if k:
        par["exchange_every"] = k
    (folder / "manifest.json").write_text(json.dumps({"parallel": par}))
    cols = "step,showers_per_s,step_seconds,input_seconds,compute_seconds,comm_seconds"
    rows = [f"{10 * (i + 1)},{r},{16 / r},0.001,{8 / r},{0.01 * (i + 1)}" for i, r in enumerate(rates)]
    (folder / "train.csv").write_text("\n".join([cols, *rows]) + "\n")
    val = ["step,physics_score,sf_rel_error,train_seconds"]
    val += [f"{100 * i},{s},0.1,{60.0 * i}" for i, s in enumerate(scores)]
    (folder / "val.csv").write_text("\n".join(val) + "\n")


def test_collect_reads_the_runs_and_finds_the_first_validation_under_the_threshold(tmp_path):
    study = _study()
    runs = tmp_path / "runs"
    _run(runs / "sync", "mpi", [6.0, 0.9, 0.5, 0.4], [1.0, 30.0, 40.0, 50.0], None)
    _run(runs / "easgd", "easgd", [6.0, 0.8, 0.7, 0.65], [1.0, 20.0, 20.0, 20.0], 4)
    out = tmp_path / "out"
    res = study.collect(runs, out, threshold=0.6)
    assert list(res) == ["sync", "easgd"]  # the variants' order, not the folder listing's
    sync, easgd = res["sync"], res["easgd"]
    assert sync["showers_per_s"] == 40.0  # median after the first (compiling) window
    assert sync["comm_seconds"] == pytest.approx(0.03)
    assert (sync["step_to_threshold"], sync["seconds_to_threshold"]) == (200, 120.0)
    assert easgd["seconds_to_threshold"] is None and easgd["best_physics_score"] == 0.65
    assert easgd["exchange_every"] == 4
    table = (out / "results.md").read_text()
    assert "| sync | mpi (k=-) | 2 | 40.0 |" in table and "| 120 |" in table
    assert (out / "comparison.png").stat().st_size > 10_000
    # render alone rebuilds the same table from the committed results.json (the paper's build)
    (out / "results.md").unlink()
    study.render(out)
    assert (out / "results.md").read_text() == table


def test_plan_composes_every_line_and_gives_the_master_a_task():
    study = _study()
    import argparse

    args = argparse.Namespace(
        workers=[4], seeds=[1, 2], gpus_per_node=4, per_gpu_batch=32, experiment="paper_fixed25", runs="r"
    )
    lines = study.plan_lines(args)
    assert len(lines) == 3 * 2
    sync = [x for x in lines if "parallel=mpi" in x]
    down = [x for x in lines if "parallel=downpour" in x]
    assert all("--nodes=1 --ntasks=4 " in x and "train.batch_size=128" in x for x in sync)
    assert all("--nodes=2 --ntasks=5 " in x for x in down)  # 4 workers + the master
    assert any("out=r/downpour_4_seed2" in x for x in down)
