"""``hepgan-train --rerun RUN_DIR`` and ``hepgan-train --config-dir RUN_DIR/.hydra`` (hepgan/cli/rerun.py).

One tiny training (the ``debug`` config, 2 steps, on the tests' 8 simulated CPU devices) is run through the
console entry point and re-run from its run directory: the rerun's losses and final metrics are bitwise
the run's and its config is the run's. The config-only checks (``--cfg job``), the warnings and the
refusals call ``main()`` in-process and start no training.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
#: columns of train.csv / keys of result.json metrics that measure time, not the training
TIMING = ("showers_per_s", "seconds")
N_REFERENCE = 48  # not the packaged default (512) nor the debug config's (64)


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "HYDRA_FULL_ERROR": "0", "JAX_COMPILATION_CACHE_DIR": str(cwd / "jax-cache")}
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rerun")


@pytest.fixture(scope="module")
def original(root) -> Path:
    out = root / "run"
    p = run(
        BIN / "hepgan-train", "debug=default", f"out={out}", "train.max_steps=2",
        f"data.n_reference={N_REFERENCE}", cwd=root,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def rerun(root, original) -> tuple[Path, subprocess.CompletedProcess]:
    p = run(BIN / "hepgan-train", "--rerun", original, cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    return root / "run-rerun", p


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def train_rows(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of train.csv without the timing columns (the values as written: bitwise)."""
    with open(run_dir / "train.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    keep = [c for c in reader.fieldnames or [] if not any(t in c for t in TIMING)]
    return keep, [{c: r[c] for c in keep} for r in rows]


def final_metrics(run_dir: Path) -> dict[str, float]:
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok"
    return {k: v for k, v in result["metrics"].items() if not any(t in k for t in TIMING)}


def cli(monkeypatch, capsys, *args: str | Path) -> tuple[int, str, str]:
    """``hepgan-train ARGS`` in-process: (exit code, stdout, stderr)."""
    from hepgan.cli.train import main

    monkeypatch.setattr(sys, "argv", ["hepgan-train", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def copy_manifest(src: Path, dest: Path, edit=None) -> Path:
    """A run directory holding only ``src``'s manifest (changed by ``edit(manifest)``)."""
    m = copy.deepcopy(manifest(src))
    if edit is not None:
        edit(m)
    dest.mkdir(parents=True)
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./conf layer of the checkout
    for var in ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


# ---- the rerun itself ------------------------------------------------------------------------------------


def test_rerun_losses_and_final_metrics_are_bitwise_the_runs(original, rerun):
    out, p = rerun
    assert f"re-running the training recorded in {original}/manifest.json" in p.stderr
    assert f"into {out}" in p.stderr
    header, rows = train_rows(original)
    header2, rows2 = train_rows(out)
    assert header == header2 and "d_loss" in header and "g_loss" in header and "showers_per_s" not in header
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows2 == rows  # every loss, norm and rate as written, digit for digit
    metrics = final_metrics(original)
    assert math.isfinite(metrics["physics_score"]) and metrics["n_reference"] == N_REFERENCE
    assert final_metrics(out) == metrics


def test_rerun_config_is_the_runs_but_out(original, rerun):
    out, _ = rerun
    first, second = manifest(original)["config"], manifest(out)["config"]
    assert second["out"] == str(out) and first["out"] == str(original)
    assert {k: v for k, v in second.items() if k != "out"} == {k: v for k, v in first.items() if k != "out"}
    # what the original command line chose, without being told again (the packaged demo has 512, small)
    assert second["data"]["n_reference"] == N_REFERENCE
    assert second["model"]["size"] == "tiny" and second["train"]["max_steps"] == 2
    assert manifest(out)["parallel"]["workers"] == manifest(original)["parallel"]["workers"] == 8
    # the rerun names its source; the original names none
    assert manifest(out)["rerun_of"] == str(original.resolve()) and "rerun_of" not in manifest(original)


@pytest.mark.slow
def test_rerun_restores_the_device_layout(root, original):
    # the rerun's host shows 16 CPU devices where the run had 8: parallel.devices is pinned to 8, and the
    # rerun is the run again
    out = root / "layout"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=16"}
    p = run(BIN / "hepgan-train", "--rerun", original, f"out={out}", cwd=root, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "device layout kept with parallel.devices=8" in p.stderr
    assert manifest(out)["config"]["parallel"]["devices"] == 8
    assert manifest(out)["parallel"]["workers"] == 8
    assert train_rows(out) == train_rows(original)
    assert final_metrics(out) == final_metrics(original)


# ---- the config, without training ------------------------------------------------------------------------


def test_rerun_cfg_job_prints_the_recorded_config(original, in_tmp, monkeypatch, capsys):
    run_dir = copy_manifest(original, in_tmp / "r")
    code, out, err = cli(monkeypatch, capsys, "--rerun", run_dir, "train.epochs=7", "--cfg", "job")
    assert code == 0, err
    assert f"n_reference: {N_REFERENCE}" in out and "size: tiny" in out
    assert "epochs: 7" in out  # an override on top
    assert f"out: {in_tmp / 'r-rerun'}" in out
    assert sorted(p.name for p in in_tmp.iterdir()) == ["r"]  # printed, nothing created


def test_packaged_default_changes_do_not_reach_a_rerun(original, in_tmp, monkeypatch, capsys):
    # a later hepgan with other defaults in its schema (keys no group file sets)
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from hepgan.train.config import Config, register

    changed = OmegaConf.structured(Config)
    changed.train.label_flip = 0.25
    changed.train.keep_last = 17
    ConfigStore.instance().store(name="hepgan_schema", node=changed)
    try:
        code, fresh, err = cli(monkeypatch, capsys, "--cfg", "job")
        assert code == 0, err
        assert "label_flip: 0.25" in fresh and "keep_last: 17" in fresh  # they reach a fresh run
        code, out, err = cli(monkeypatch, capsys, "--rerun", original, "--cfg", "job")
        assert code == 0, err
    finally:
        register()
    assert "label_flip: 0.05" in out and "keep_last: 3" in out  # the run's
    assert f"n_reference: {N_REFERENCE}" in out and "n_events: 64" in out and "size: tiny" in out


def test_old_manifest_is_upgraded(original, in_tmp, monkeypatch, capsys):
    # a run made before model.dropout_rng existed drew its dropout masks with Threefry
    old = copy_manifest(original, in_tmp / "old", lambda m: m["config"]["model"].pop("dropout_rng"))
    code, out, err = cli(monkeypatch, capsys, "--rerun", old, "--cfg", "job")
    assert code == 0, err
    assert "dropout_rng: threefry" in out
    code, out, err = cli(monkeypatch, capsys, "--rerun", original, "--cfg", "job")
    assert "dropout_rng: hash" in out


def test_saved_hydra_dir_gives_the_runs_config(original, in_tmp, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "--config-dir", original / ".hydra", "--cfg", "job")
    assert code == 0, err
    assert f"n_reference: {N_REFERENCE}" in out and "size: tiny" in out and "max_steps: 2" in out
    assert f"composing the config saved in {original / '.hydra' / 'config.yaml'}" in err
    code, out, _ = cli(
        monkeypatch, capsys, "--config-dir", original / ".hydra", "data.n_reference=40", "--cfg", "job"
    )
    assert "n_reference: 40" in out and "size: tiny" in out
    code, out, _ = cli(monkeypatch, capsys, "--cfg", "job")  # the packaged demo for comparison
    assert "n_reference: 512" in out and "size: small" in out


def test_other_config_dirs_keep_their_meaning(in_tmp, monkeypatch, capsys):
    conf = in_tmp / "extra" / "experiment"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("# @package _global_\ndata:\n  n_reference: 77\n")
    code, out, err = cli(
        monkeypatch, capsys, "--config-dir", in_tmp / "extra", "experiment=mine", "--cfg", "job"
    )
    assert code == 0, err
    assert "n_reference: 77" in out and "size: small" in out  # the packaged config plus the option
    assert "composing the config saved" not in err


def test_differences_of_code_packages_and_devices_are_warned(original, in_tmp, monkeypatch, capsys):
    def edit(m):
        m["git"] = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True}
        m["packages"]["jax"] = "0.0.1"
        m["jax"]["backend"] = "gpu"
        m["parallel"]["device_kind"] = "NVIDIA H100 80GB HBM3"

    other = copy_manifest(original, in_tmp / "other", edit)
    code, _, err = cli(monkeypatch, capsys, "--rerun", other, "--cfg", "job")
    assert code == 0, err
    assert "git checkout 0123456789abcdef0123456789abcdef01234567" in err
    assert "the run's checkout had uncommitted changes" in err
    assert "jax 0.0.1 in the run" in err
    assert "the run trained on gpu (NVIDIA H100 80GB HBM3), this rerun will run on cpu" in err
    assert "not be bitwise equal" in err
    assert f"into {other}-rerun" in err


# ---- refusals --------------------------------------------------------------------------------------------


def test_missing_manifest_is_refused(in_tmp, monkeypatch, capsys):
    empty = in_tmp / "empty"
    empty.mkdir()
    code, _, err = cli(monkeypatch, capsys, "--rerun", empty)
    assert code == 1
    assert f"{empty}/manifest.json does not exist" in err and "Traceback" not in err
    assert not (in_tmp / "empty-rerun").exists()


def test_manifest_without_config_is_refused(in_tmp, monkeypatch, capsys):
    bare = in_tmp / "bare"
    bare.mkdir()
    (bare / "manifest.json").write_text(json.dumps({"seed": 0, "git": {"commit": None}}))
    code, _, err = cli(monkeypatch, capsys, "--rerun", bare)
    assert code == 1 and f"{bare}/manifest.json holds no training config" in err
    (bare / "manifest.json").write_text("{not json")
    code, _, err = cli(monkeypatch, capsys, "--rerun", bare)
    assert code == 1 and f"{bare}/manifest.json cannot be read" in err


def test_rerun_into_the_run_directory_is_refused(original, in_tmp, monkeypatch, capsys):
    before = sorted(p.name for p in original.iterdir())
    for given in (str(original), f"{original}/"):
        code, _, err = cli(monkeypatch, capsys, "--rerun", original, f"out={given}")
        assert code == 1
        assert f"cannot re-run {original} into itself" in err and "Traceback" not in err
    assert sorted(p.name for p in original.iterdir()) == before


def test_multi_process_run_outside_a_launch_is_refused(original, in_tmp, monkeypatch, capsys):
    def two_processes(m):
        m["parallel"].update(backend="mpi", launcher="openmpi", process_count=2, workers=2)
        m["config"]["parallel"]["backend"] = "mpi"

    mpi = copy_manifest(original, in_tmp / "mpi", two_processes)
    code, _, err = cli(monkeypatch, capsys, "--rerun", mpi, "train.epochs=2")
    assert code == 1
    assert f"{mpi}/manifest.json records a run of 2 processes (launcher openmpi" in err
    assert f"`mpirun -n 2 hepgan-train --rerun {mpi} train.epochs=2`" in err
    assert not (in_tmp / "mpi-rerun").exists()
    # printing its config needs no launch
    code, out, err = cli(monkeypatch, capsys, "--rerun", mpi, "--cfg", "job")
    assert code == 0 and "backend: mpi" in out


def test_launch_problem_accepts_a_launch_of_the_runs_size():
    from hepgan.cli.rerun import launch_problem

    m = {"parallel": {"backend": "xla", "launcher": "slurm", "process_count": 4, "workers": 16}}
    par = {"backend": "auto", "launcher": "auto"}
    problem = launch_problem("runs/r", m, par, [])
    assert problem is not None and "`srun -n 4 hepgan-train --rerun runs/r`" in problem
    two = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}
    assert "found: 2 process(es), launcher openmpi" in (launch_problem("runs/r", m, par, [], two) or "")
    four = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}
    assert launch_problem("runs/r", m, par, [], four) is None
    assert launch_problem("runs/r", {"parallel": {**m["parallel"], "process_count": 1}}, par, []) is None
    explicit = {
        **par,
        "launcher": "explicit",
        "coordinator_address": "h:1",
        "num_processes": 4,
        "process_id": 0,
    }
    assert "parallel.process_id=K" in (launch_problem("runs/r", m, explicit, []) or "")
    assert launch_problem("runs/r", m, explicit, ["parallel.process_id=3"]) is None


def test_layout_pins():
    from hepgan.cli.rerun import layout_pins

    config = {
        "parallel": {"backend": "auto", "devices": None, "cpu_layout": "per_core"},
        "train": {"batch_size": 16},
    }
    cpu8 = {"backend": "shard_map", "process_count": 1, "workers": 8, "sync_batchnorm": True}
    forced = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert layout_pins(config, cpu8, environ=forced, accelerator=False) == {}
    assert layout_pins(config, cpu8, environ={}, cores=8, accelerator=False) == {}
    assert layout_pins(config, cpu8, environ={}, cores=12, accelerator=False) == {}  # 8 of 12 divide 16
    assert layout_pins(config, cpu8, environ={}, cores=16, accelerator=False) == {"devices": 8}
    assert layout_pins(config, cpu8, environ={}, cores=2, accelerator=False) == {"devices": 8}
    # on a GPU host auto would mean xla: the run's shard_map and its global-batch BatchNorm are kept
    assert layout_pins(config, cpu8, environ={}, accelerator=True) == {
        "devices": 8,
        "backend": "shard_map",
        "sync_batchnorm": True,
    }
    # one device: auto is xla on every host; an explicit count or backend needs no pin
    one = {"backend": "xla", "process_count": 1, "workers": 1, "sync_batchnorm": False}
    assert layout_pins(config, one, environ={}, cores=1, accelerator=False) == {}
    fixed = {**config, "parallel": {"backend": "shard_map", "devices": 8, "cpu_layout": "per_core"}}
    assert layout_pins(fixed, cpu8, environ={}, cores=2, accelerator=False) == {}
    mpi = {"backend": "mpi", "process_count": 2, "workers": 2}
    assert layout_pins(config, mpi, environ={}, accelerator=False) == {}
