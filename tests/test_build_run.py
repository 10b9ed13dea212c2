"""``build_run``: the one assembly of a run, what it assembles, and the training hot path's transfers."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np
import pytest

from hepgan.train.config import compose
from hepgan.train.run import build_run

PACKAGE = Path(__file__).resolve().parents[1] / "hepgan"

TINY = [
    "model=tiny",
    "data.n_events=64",
    "data.n_reference=16",
    "train.batch_size=8",
    "train.epochs=1",
    "logging.progress=false",
]


def test_one_run_assembly_in_the_package() -> None:
    """Only hepgan/train/run.py builds models into a training state and an update."""
    calls = re.compile(r"\b(init_state|make_step|build_optimizers)\(")
    found = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(
            calls.search(line) and not line.lstrip().startswith("def ")
            for line in path.read_text().splitlines()
        )
    )
    assert found == ["train/run.py"], found


def test_build_run_without_mesh_trains_and_restores_the_shapes() -> None:
    run = build_run(compose(TINY), parallel=False)
    assert run.parallel is None and run.pipeline is not None and run.sources is not None
    assert run.total_steps == run.pipeline.steps_per_epoch  # one epoch
    assert run.model.cell_power == run.preprocess.cell_power == run.step_config.cell_power
    assert run.updates_per_step == {"g": 2, "d": 2}  # the paper schedule
    state, metrics = run.step(run.state, next(run.pipeline))
    assert int(state.step) == 1 and float(metrics["finite"]) == 1.0
    run.pipeline.close()
    # without data: nothing is read, and the state has the same structure (what restore_run relies on)
    bare = build_run(compose(TINY), parallel=False, data=False)
    assert bare.pipeline is None and bare.sources is None and bare.total_steps == 1
    assert jax.tree.structure(bare.state) == jax.tree.structure(run.state)


def test_build_run_takes_the_angle_cell_power_from_the_preprocessing() -> None:
    cfg = compose(["model=tiny", "model.arch=angle51", "data=simulated_angle51", "data.cell_power=0.7"])
    run = build_run(cfg, parallel=False, data=False)
    assert run.preprocess.cell_power == pytest.approx(0.7)
    assert run.model.cell_power == pytest.approx(0.7) and run.step_config.cell_power == pytest.approx(0.7)


def test_training_hot_path_makes_no_implicit_transfers() -> None:
    """The loop's per-step work (next batch, compiled update) under ``jax.transfer_guard("disallow")``:
    any implicit host<->device transfer (a NumPy batch handed to the step, a metric read as a float)
    raises. The batches are placed by the pipeline's explicit ``device_put``; the first step compiles
    outside the guard."""
    run = build_run(compose(TINY))  # the configured backend: shard_map over the 8 test devices
    assert run.pipeline is not None and run.parallel is not None and run.parallel.workers > 1
    state, metrics = run.step(run.state, next(run.pipeline))
    with jax.transfer_guard("disallow"):
        for _ in range(3):
            batch = next(run.pipeline)
            state, metrics = run.step(state, batch)
    run.pipeline.close()
    assert int(state.step) == 4
    assert np.isfinite(float(jax.device_get(metrics["d_loss"])))
    # and the guard is live: an implicit transfer in the same place fails
    with jax.transfer_guard("disallow"), pytest.raises(Exception, match=r"[Dd]isallowed"):
        run.step(state, {k: np.asarray(v) for k, v in jax.device_get(batch).items()})
