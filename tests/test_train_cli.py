"""End to end through the console entry points: hepgan-train (a 2-job sweep with the real tiny model)
and hepgan-generate from its checkpoint; config typos fail before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fs_helpers import unwritable

BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    if cache is not None:  # the sweep's second job reuses the first job's compiled step
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_unknown_key_lists_valid_keys(tmp_path):
    p = run(BIN / "hepgan-train", "optim.lr_gg=1e-3", cwd=tmp_path)
    assert p.returncode != 0
    assert "unknown config key 'optim.lr_gg'" in p.stderr
    assert "lr_g, lr_d" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    p = run(
        BIN / "hepgan-train", "-m", "debug=default", f"out={root / 'sweep'}", "train.max_steps=2",
        "optim.lr_g=1e-3,5e-4", "optim.name=lars", cwd=root, cache=root / "jax-cache",
    )  # fmt: skip
    # LARS (not the default RMSprop): hepgan-generate must rebuild the optimizer the run really used
    assert p.returncode == 0, p.stderr[-3000:]
    return root / "sweep", p


def test_sweep_writes_one_result_per_job(sweep):
    out, p = sweep
    for job, lr in (("0", 1e-3), ("1", 5e-4)):
        result = json.loads((out / job / "result.json").read_text())
        assert result["status"] == "ok" and result["step"] == 2
        assert np.isfinite(result["objective"]) and result["objective"] == result["metrics"]["physics_score"]
        manifest = json.loads((out / job / "manifest.json").read_text())
        assert manifest["config"]["optim"]["lr_g"] == lr
        assert manifest["config"]["model"]["size"] == "tiny"
        assert (out / job / "checkpoints" / "2").is_dir()
    assert "run directory" in p.stdout


def test_generate_from_checkpoint(sweep, tmp_path):
    from hepgan.data.formats import read_file

    out, _ = sweep
    p = run(
        BIN / "hepgan-generate", out / "0", "--n", "10", "--energy", "list:50,100", "--out", tmp_path / "gen",
        "--format", "fixed25", "--batch", "4", cwd=tmp_path, cache=out.parent / "jax-cache",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "showers/s" in p.stdout
    files = sorted((tmp_path / "gen").glob("*.h5"))
    showers = read_file(files[0])
    assert len(showers) == 10 and showers.grid == (25, 25, 25)
    np.testing.assert_allclose(showers.energy, [50, 100] * 5)
    assert np.isfinite(showers.ecal).all() and (showers.ecal >= 0).all()


def test_generate_bad_run_dir(tmp_path):
    p = run(BIN / "hepgan-generate", tmp_path / "nothing", cwd=tmp_path)
    assert p.returncode == 1 and "manifest.json" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("process_id", [0, 1])
def test_failure_is_recorded_once_per_process(tmp_path, process_id):
    # A bad setting under a two-process layout: each process prints the error and exits non-zero; process
    # 0 writes result.json, process 1 its own result.rank1.json (it must not overwrite process 0's file).
    # The setting comes from an experiment file: on the command line it would be refused before Hydra runs.
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "bad.yaml").write_text(
        "# @package _global_\ntrain:\n  on_nonfinite: retry\n"
    )
    p = run(
        BIN / "hepgan-train", "debug=default", f"out={tmp_path / 'r'}", "experiment=bad",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "parallel.launcher=explicit",
        "parallel.coordinator_address=127.0.0.1:1", "parallel.num_processes=2",
        f"parallel.process_id={process_id}", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 1, p.stderr[-3000:]
    assert "train.on_nonfinite" in p.stderr and "Traceback" not in p.stderr
    written = sorted(f.name for f in (tmp_path / "r").glob("result*.json"))
    name = "result.json" if process_id == 0 else "result.rank1.json"
    assert written == [name]
    res = json.loads((tmp_path / "r" / name).read_text())
    assert res["status"] == "error" and res["process"] == process_id
    assert ("(process 1)" in p.stderr) == (process_id == 1)


def test_misspelt_choice_fails_at_compose_time_listing_choices():
    from hepgan.train.config import check_overrides, compose

    for check in (check_overrides, compose):
        with pytest.raises(
            ValueError,
            match=r"optim\.name: 'adamw' is not a valid choice; valid choices: rmsprop, adam, lars, lamb",
        ):
            check(["optim.name=adamw"])
    # every value of a sweep is checked, not only the first
    with pytest.raises(ValueError, match=r"parallel\.backend: 'nccl'.*xla, shard_map, mpi"):
        check_overrides(["parallel.backend=xla,nccl"])
    check_overrides(["optim.name=adam,rmsprop", "scaling.rule=none,sqrt", "train.val_metrics=[fast,fpd]"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("logging.every_steps=0", r"logging\.every_steps: 0 is out of range; must be >= 1"),
        ("train.batch_size=0", r"train\.batch_size: 0 .*>= 1"),
        ("train.epochs=-1", r"train\.epochs: -1 .*>= 0"),
        ("train.keep_last=0", r"train\.keep_last: 0 .*>= 1"),
        ("train.label_flip=1.5", r"train\.label_flip: 1\.5 .*in \[0, 1\]"),
        ("train.ema_decay=1.0", r"train\.ema_decay: 1\.0 .*in \[0, 1\)"),
        ("train.val_metrics=[fast,fsat]", r"train\.val_metrics: 'fsat' is not a valid choice"),
    ],
)
def test_nonsense_values_fail_at_compose_time(override, message):
    from hepgan.train.config import check_overrides

    with pytest.raises(ValueError, match=message):
        check_overrides([override])


def test_values_from_yaml_are_validated_by_to_config():
    # what an experiment file or a Python user brings in never passes check_overrides: to_config (which
    # fit() and restore_run() call first) checks the same table
    from hepgan.train.config import to_config

    with pytest.raises(ValueError) as err:
        to_config({"logging": {"every_steps": 0}, "train": {"on_nonfinite": "retry"}})
    assert "logging.every_steps: 0 is out of range; must be >= 1" in str(err.value)  # every bad key
    assert "train.on_nonfinite: 'retry' is not a valid choice; valid choices: stop, rollback" in str(
        err.value
    )
    with pytest.raises(ValueError, match=r"unknown config key 'optim\.lr_gg'.*valid keys: name, lr_g"):
        to_config({"optim": {"lr_gg": 1e-3}})
    with pytest.raises(ValueError, match=r"'train\.batch_size'.*'abc'"):
        to_config({"train": {"batch_size": "abc"}})
    assert to_config({"optim": {"name": "adam"}}).optim.name == "adam"


def test_train_misspelt_choice_exits_before_hydra(tmp_path):
    p = run(BIN / "hepgan-train", "optim.name=adamw", cwd=tmp_path)
    assert p.returncode == 1
    assert "optim.name: 'adamw' is not a valid choice; valid choices: rmsprop, adam, lars, lamb" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists()


def test_generate_unwritable_out_fails_before_restoring(tmp_path, capsys, monkeypatch):
    import hepgan.train.checkpoint
    from hepgan.cli.generate import main

    def no_restore(*args, **kwargs):
        raise AssertionError("restored although --out cannot be written")

    monkeypatch.setattr(hepgan.train.checkpoint, "restore_run", no_restore)
    out = unwritable(tmp_path)
    assert main([str(tmp_path / "run"), "--n", "4", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_generate_restore_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import hepgan.train.checkpoint
    from hepgan.cli.generate import main

    # a manifest whose config is no longer valid: to_config's ValueError, through the real restore_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"config": {"optim": {"name": "adamw"}}}))
    assert main([str(run_dir), "--n", "4", "--out", str(tmp_path / "gen")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hepgan-generate: invalid config: optim.name: 'adamw'") and err.count("\n") == 1

    def mismatch(*args, **kwargs):
        raise ValueError("model mismatch: checkpoint fixed25/paper, config fixed25/small")

    monkeypatch.setattr(hepgan.train.checkpoint, "restore_run", mismatch)
    assert main([str(run_dir), "--n", "4", "--out", str(tmp_path / "gen")]) == 1
    assert (
        capsys.readouterr().err
        == "hepgan-generate: model mismatch: checkpoint fixed25/paper, config fixed25/small\n"
    )
    assert not (tmp_path / "gen").exists()


def test_every_checked_key_is_a_schema_key_with_a_valid_default():
    # a field renamed in a room's schema must not leave a stale entry behind (validate() reads them all)
    from hepgan.train.config import CHOICES, RANGES, Config, check_key, validate

    for key in (*CHOICES, *RANGES):
        check_key(key)
    validate(Config())


@pytest.mark.parametrize(
    ("experiment", "expect"),
    [
        (
            "paper_fixed25",
            {
                "model.size": "paper",
                "train.batch_size": 128,
                "train.aux_loss_scale": 1.0,
                "train.ema_decay": 0.0,
            },
        ),
        ("paper_angle51", {"model.arch": "angle51", "model.size": "paper"}),
        ("cpu_fixed25", {"model.conditioning": "product_and_value", "train.d_batch": "joint"}),
        (
            "calochallenge_ds2",
            {
                "model.arch": "ds2",
                "data.geometry": "ds2",
                "data.energy": "loguniform:1:1000",
                "train.epochs": 4,
            },
        ),
    ],
)
def test_every_experiment_composes_and_validates(experiment, expect):
    from omegaconf import OmegaConf

    from hepgan.train.config import compose

    cfg = compose([f"experiment={experiment}"])
    for key, value in expect.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_experiment_files_are_all_covered():
    from importlib import resources

    files = {p.name[:-5] for p in resources.files("hepgan.conf").joinpath("experiment").iterdir()}
    assert {f for f in files if not f.startswith("_")} == {
        "paper_fixed25",
        "paper_angle51",
        "cpu_fixed25",
        "calochallenge_ds2",
    }
