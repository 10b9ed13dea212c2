"""The GPU check script (experiments/gpu/run.py) without a GPU: its case plan, the convergence run's
overrides (valid against the config schema, so a renamed key fails here rather than on a GPU machine)
and the precision verdict. Its stages themselves run in its ``--quick`` smoke test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from hepgan.train.config import compose, to_config

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gpu" / "run.py"


@pytest.fixture(scope="module")
def gpu_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hepgan_gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plan_order_and_fft_with_a_dot_algorithm_not_measured(gpu_run: ModuleType) -> None:
    cases = gpu_run.plan_cases(
        ["fixed25", "angle51"], ["xla", "fft"], ["default", "highest", "bf16"], None, False
    )
    assert len(cases) == 12
    assert [gpu_run.case_key(c) for c in cases[:2]] == [
        ("fixed25", "xla", "default"),
        ("angle51", "xla", "default"),
    ]
    assert {c["arch"]: c["batch"] for c in cases} == {"fixed25": 128, "angle51": 64}
    skipped = [gpu_run.case_key(c) for c in cases if "not_measured" in c]
    assert skipped == [("fixed25", "fft", "bf16"), ("angle51", "fft", "bf16")]


@pytest.mark.parametrize(
    ("quick", "wall_s", "rate"),
    [(True, 60, None), (False, 150, 3000.0), (False, 1800, 3000.0), (False, 300, None)],
)
def test_convergence_overrides_compose(
    gpu_run: ModuleType, quick: bool, wall_s: float, rate: float | None
) -> None:
    args = SimpleNamespace(quick=quick, convergence_precision="default")
    measured = {"status": "ok", "arch": "fixed25", "conv_impl": "xla", "precision": "default"}
    rows = [] if rate is None else [{**measured, "train_showers_per_s": rate}]
    plan = gpu_run.convergence_plan(args, wall_s, rows)
    conf = to_config(compose(plan["overrides"]))
    assert conf.train.max_steps == plan["max_steps"]
    assert conf.data.n_events == plan["n_events"]
    assert conf.train.batch_size == plan["batch"]
    assert conf.data.n_events % conf.train.batch_size == 0
    if rate is not None:
        assert conf.model.conv_impl == "xla"
        assert 6400 <= conf.data.n_events <= 200_000
        # the steps fit the training time: at most the measured rate over the whole wall time
        assert plan["max_steps"] * plan["batch"] <= rate * wall_s


def test_precision_verdict(gpu_run: ModuleType) -> None:
    def init(precision: str, sums: float, steps: float) -> dict:
        diffs = {f"{k}_rel_diff": steps for k in gpu_run.FIRST_STEP}
        reference = {"conv_impl": "xla", "precision": "highest"}
        case = {"kind": "init", "arch": "fixed25", "conv_impl": "xla", "precision": precision}
        return {**case, "reference": reference, "gen_sum_rel_diff_max": sums, **diffs}

    def trained(precision: str, seed: int, score: float) -> dict:
        return {
            "kind": "trained",
            "precision": precision,
            "seed": seed,
            "status": "ok",
            "physics_score": score,
        }

    rows = [
        init("default", 1e-4, 1e-4),
        init("bf16", 2e-3, 5e-3),
        trained("highest", 0, 0.30),
        trained("highest", 1, 0.32),
        trained("default", 0, 0.301),
        trained("bf16", 0, 0.40),
    ]
    verdict = gpu_run.precision_verdict(rows, ["default", "highest", "bf16"])
    assert verdict["physics_score_seed_spread_fp32"] == pytest.approx(0.02)
    assert verdict["default"]["plausibly_unchanged"] is True
    assert verdict["bf16"]["plausibly_unchanged"] is False  # physics_score moved 5x the seed spread
    assert "highest" not in verdict
    assert gpu_run.precision_verdict([], ["bf16"])["bf16"]["plausibly_unchanged"] is None
