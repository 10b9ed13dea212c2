"""experiments/scaling/cluster.py: the full-scale weak-scaling plan and its collection."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster():
    spec = importlib.util.spec_from_file_location(
        "scaling_cluster", ROOT / "experiments" / "scaling" / "cluster.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scaling_cluster"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("scaling_cluster", None)


def test_gpu_counts_double_whole_nodes_after_one_and_two_gpus(cluster):
    assert cluster.gpu_counts(4, 8) == [(1, 1), (1, 2), (1, 4), (2, 8), (4, 16), (8, 32)]
    assert cluster.gpu_counts(1, 2) == [(1, 1), (2, 2)]


def _args(**kw):
    base = dict(
        experiment="paper_fixed25",
        gpus_per_node=4,
        max_nodes=2,
        per_gpu_batch=128,
        steps=300,
        runs="r",
        no_validate=False,
    )
    return argparse.Namespace(**{**base, **kw})


def test_plan_lines_compose_and_scale_the_global_batch(cluster):
    lines = cluster.plan_lines(_args())
    assert len(lines) == 2 * 4  # two backends x (1, 2, 4, 8 GPUs)
    assert "--nodes=2 --ntasks-per-node=4" in lines[3] and "train.batch_size=1024" in lines[3]
    assert lines[-1].endswith("out=r/mpi_8")


def test_plan_refuses_an_experiment_that_does_not_exist(cluster):
    with pytest.raises(SystemExit, match="does not compose"):
        cluster.plan_lines(_args(experiment="no_such_experiment"))


def test_collect_measures_efficiency_against_the_one_gpu_run(cluster, tmp_path):
    for gpus, rate in ((1, 500.0), (4, 1800.0)):
        run = tmp_path / f"shard_map_{gpus}"
        run.mkdir()
        parallel = {"backend": "shard_map", "workers": gpus, "global_batch": 128 * gpus}
        (run / "manifest.json").write_text(json.dumps({"parallel": parallel}))
        # the first quarter (compilation) is left out of the median
        rows = [f"{i},{1.0 if i == 0 else rate}" for i in range(4)]
        (run / "train.csv").write_text("step,showers_per_s\n" + "\n".join(rows) + "\n")
    result = cluster.collect(tmp_path)
    points = result["series"]["shard_map"]
    assert [p["gpus"] for p in points] == [1, 4]
    assert points[1]["efficiency"] == pytest.approx(1800.0 / 4 / 500.0)
    assert 0.9 < points[1]["model"]["ring"] <= 1.0  # 4 GPUs in one node: NVLink, small cost
