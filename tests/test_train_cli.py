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
        "optim.lr_g=1e-3,5e-4", "scaling.optimizer=lars", cwd=root, cache=root / "jax-cache",
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
    p = run(
        BIN / "hepgan-train", "debug=default", f"out={tmp_path / 'r'}", "train.on_nonfinite=retry",
        "parallel.launcher=explicit", "parallel.coordinator_address=127.0.0.1:1", "parallel.num_processes=2",
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
