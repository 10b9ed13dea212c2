"""Checkpoints and reproducibility of fit(): resume is bitwise, seeds repeat, damage is survived.

fit() runs in-process on one CPU device with toy players (dense layers, BatchNorm, Dropout) in place of
the 3DGAN models, so each run takes seconds; the models themselves are tested in test_models.py and the
real tiny model runs end to end in test_train_cli.py.
"""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hepgan.models
from hepgan.data.pipeline import Pipeline
from hepgan.train import NonFiniteError, fit
from hepgan.train.checkpoint import Checkpointer, restore_run
from hepgan.train.config import compose

GRID = (25, 25, 25)
CELLS = int(np.prod(GRID))


class ToyGenerator(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(4, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, momentum=0.99, rngs=rngs)
        self.out = nnx.Linear(8, CELLS, rngs=rngs)

    def latent(self, key, energy, theta=None):
        return (energy / 100.0)[:, None] * jax.random.normal(key, (energy.shape[0], 4))

    def __call__(self, z):
        return jax.nn.relu(self.out(self.bn(jax.nn.leaky_relu(self.dense(z), 0.3)))).reshape(-1, *GRID)


class ToyDiscriminator(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(CELLS, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, momentum=0.99, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.heads = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        h = self.drop(self.bn(jax.nn.leaky_relu(self.dense(x.reshape(x.shape[0], -1)), 0.3)))
        y = self.heads(h)
        return {"logit": y[:, 0], "energy": y[:, 1], "ecal": jnp.sum(x, axis=(1, 2, 3))}


@pytest.fixture(autouse=True)
def toy_models(monkeypatch):
    monkeypatch.setattr(
        hepgan.models, "build", lambda cfg, rngs: (ToyGenerator(rngs), ToyDiscriminator(rngs))
    )


def cfg(out, *extra):
    # 64 events / batch 16 = 4 steps per epoch; 6 steps cross an epoch boundary (validation, best save)
    return compose(
        [
            "debug=default",
            f"out={out}",
            "parallel.devices=1",
            "train.max_steps=6",
            "train.ckpt_every_steps=2",
            *extra,
        ]
    )


def params(run_dir, best=False):
    _, state, _, _ = restore_run(run_dir, best=best)
    return int(state.step), [np.asarray(x) for x in jax.tree.leaves(state)]


def same(a, b):
    return len(a) == len(b) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and an interrupted-then-resumed one (module-scoped: fit costs seconds)."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setattr(hepgan.models, "build", lambda cfg, rngs: (ToyGenerator(rngs), ToyDiscriminator(rngs)))
    try:
        full = fit(cfg(root / "full"))
    except BaseException:
        mp.undo()
        raise

    calls = {"n": 0}
    original = Pipeline.__next__

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 6:  # batch 6: steps 1-5 done, last checkpoint at step 4
            raise KeyboardInterrupt
        return original(self)

    try:  # undone whatever happens: the toy build must not leak into other test files of this worker
        mp.setattr(Pipeline, "__next__", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fit(cfg(root / "resumed"))
        mp.setattr(Pipeline, "__next__", original)
        after_interrupt = Checkpointer(root / "resumed").latest_step()
        resumed = fit(cfg(root / "resumed"))
    finally:
        mp.undo()
    return root, full, resumed, after_interrupt


def test_resume_is_bitwise_identical(runs):
    root, full, resumed, after_interrupt = runs
    assert after_interrupt == 4
    assert full["step"] == resumed["step"] == 6
    step_a, a = params(root / "full")
    step_b, b = params(root / "resumed")
    assert step_a == step_b == 6
    assert same(a, b)
    assert resumed["objective"] == full["objective"]
    lines = (root / "resumed" / "manifest.resumes.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the resumed start is recorded next to the first manifest


def test_same_seed_same_run_other_seed_differs(runs, tmp_path):
    root, _full, _, _ = runs
    fit(cfg(tmp_path / "again"))
    fit(cfg(tmp_path / "seed1", "train.seed=1"))
    assert same(params(root / "full")[1], params(tmp_path / "again")[1])
    assert not same(params(root / "full")[1], params(tmp_path / "seed1")[1])


def test_manifest_and_outputs(runs):
    root, full, _, _ = runs
    m = json.loads((root / "full" / "manifest.json").read_text())
    for key in ("config", "seed", "packages", "jax", "git", "data", "hostname", "start_time"):
        assert key in m, key
    assert m["config"]["train"]["max_steps"] == 6 and m["seed"] == 0
    assert m["jax"]["backend"] == "cpu" and m["packages"]["jax"] == jax.__version__
    assert m["data"]["n_events"] == 64 if "n_events" in m["data"] else m["data"]
    assert set(m["git"]) == {"commit", "dirty"}
    assert full["history"][0]["step"] == 0 and full["history"][-1]["step"] == 6
    assert (root / "full" / "train.csv").exists() and (root / "full" / "val.csv").exists()
    assert full["best"]["physics_score"] == min(h["physics_score"] for h in full["history"])
    best_step, _ = params(root / "full", best=True)
    assert best_step == full["best"]["step"]


def test_damaged_and_half_written_checkpoints_are_skipped(runs, tmp_path, caplog):
    root, _, _, _ = runs
    run = tmp_path / "run"
    shutil.copytree(root / "full", run)
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 6
    # a save interrupted before its rename, and damage to every data file of the newest checkpoint
    (run / "checkpoints" / "8.orbax-checkpoint-tmp-1234").mkdir()
    for f in (run / "checkpoints" / "6" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"\0" * f.stat().st_size)
    step, _ = params(run)
    assert step == 4
    assert "damaged or incomplete" in caplog.text


def test_nonfinite_stops_with_step_range_or_rolls_back(tmp_path, monkeypatch):
    original = Pipeline.__next__
    calls = {"n": 0}

    def poisoned(self):
        calls["n"] += 1
        batch = original(self)
        if calls["n"] == 3:
            batch = {**batch, "ecal": batch["ecal"] * jnp.nan}
        return batch

    monkeypatch.setattr(Pipeline, "__next__", poisoned)
    with pytest.raises(NonFiniteError, match=r"step 3 \(steps 3\.\.3") as err:
        fit(cfg(tmp_path / "stop"))
    assert "last good checkpoint (step 2)" in str(err.value)
    assert Checkpointer(tmp_path / "stop").latest_step() == 2

    calls["n"] = 0
    result = fit(cfg(tmp_path / "rollback", "train.on_nonfinite=rollback"))
    assert result["status"] == "ok" and result["step"] == 6
    _, state, _, _ = restore_run(tmp_path / "rollback")
    assert float(state.lr_scale) == 0.5
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.g.params))


def test_restore_a_chosen_step(runs, tmp_path):
    from hepgan.train.api import _which_checkpoint

    root, _, _, _ = runs
    saved = sorted(int(p.name) for p in (root / "full" / "checkpoints").iterdir() if p.name.isdigit())
    older = saved[-2]
    _, state, _, _ = restore_run(root / "full", step=older)
    assert int(state.step) == older
    # the step folder as the run: evaluate_checkpoint/hepgan-evaluate take exactly that step
    step_dir = root / "full" / "checkpoints" / str(older)
    assert _which_checkpoint(step_dir, None) == (root / "full", False, older)
    assert _which_checkpoint(root / "full", "latest") == (root / "full", False, None)
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint of step 999 .*saved steps: \[.*{older}"):
        restore_run(root / "full", step=999)
    # a damaged step that was asked for is an error, not a silent fallback to another step
    run = tmp_path / "run"
    shutil.copytree(root / "full", run)
    for f in (run / "checkpoints" / str(saved[-1]) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"\0" * f.stat().st_size)
    with pytest.raises(ValueError, match=rf"checkpoints/{saved[-1]} is damaged"):
        restore_run(run, step=saved[-1])


def test_checkpoints_of_the_flat_state_layout_restore(runs, tmp_path, monkeypatch):
    """A checkpoint written with the players' fields flat (``g_params``, ``lr_d``, ...: the layout before
    the per-player state) restores to the same arrays, and its fingerprint is still checked."""
    import hepgan.train.checkpoint as ck

    root = runs[0]
    _, state, _, _ = restore_run(root / "full")
    nested = ck.state_to_tree
    monkeypatch.setattr(ck, "state_to_tree", lambda s: ck._to_legacy(nested(s)))
    old = Checkpointer(tmp_path, async_save=False)
    old.save(6, state, {"model": "fixed25/tiny"})
    old.close()
    flat = json.loads((tmp_path / "checkpoints" / "6" / "state" / "_METADATA").read_text())
    assert "g_params" in json.dumps(flat) and '"lr_d"' in json.dumps(flat)
    monkeypatch.setattr(ck, "state_to_tree", nested)
    back, _ = Checkpointer(tmp_path).restore(state)
    assert same(
        [np.asarray(x) for x in jax.tree.leaves(back)], [np.asarray(x) for x in jax.tree.leaves(state)]
    )
    # a damaged flat checkpoint is still recognised as damaged
    (tmp_path / "checkpoints" / "6" / "extra" / "metadata").write_text(json.dumps({"fingerprint": "0" * 64}))
    assert Checkpointer(tmp_path).restore(state) is None
