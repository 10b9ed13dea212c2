"""Tests of the Keras peer of ``hepgan-bench peers`` (hepgan/bench/peers_keras.py).

The module must import without TensorFlow; its constants must be hepgan's. The worker itself runs under
the separate TensorFlow environment ``.venv-peers`` (``make peers-venv``); those tests skip without it.
There the worker must build models with exactly hepgan's trainable parameter counts, make the paper's
passes per iteration, answer the line protocol, and its TensorFlow angle head and frozen BatchNorm must
compute what hepgan's do.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from hepgan.bench import peers_keras as pk
from hepgan.bench import peers_worker
from hepgan.cells import CELL_POWER
from hepgan.data.geometry import get_geometry
from hepgan.models import ModelConfig, build, measured_angle
from hepgan.models.config import ARCH_DEFAULTS, PRESETS
from hepgan.train.losses import PAPER_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
SCRIPT = ROOT / "hepgan" / "bench" / "peers_keras.py"
needs_peers_venv = pytest.mark.skipif(
    not PEER_PYTHON.exists(),
    reason="no .venv-peers with TensorFlow (create it with `make peers-venv`)",
)
START_TIMEOUT_S = 300  # model build, tracing and warm-up on a busy 2-core machine take ~10-20 s


def hepgan_params(arch: str) -> dict[str, int]:
    """hepgan's trainable parameter counts (``nnx.Param``) of the paper models of ``arch``."""
    g, d = nnx.eval_shape(lambda: build(ModelConfig(arch=arch, size="paper"), nnx.Rngs(0)))
    return {k: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param))) for k, m in (("g", g), ("d", d))}


def run_worker(args: list[str], commands: list[dict]) -> tuple[int, list[dict], str]:
    """Start the worker with ``.venv-peers``' Python, send ``commands`` (one JSON line each), wait for it
    to exit; returns (exit code, the JSON replies in order, stderr)."""
    lines = "".join(json.dumps(c) + "\n" for c in commands)
    proc = subprocess.run(
        [str(PEER_PYTHON), *args],
        input=lines,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, replies, proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------
# Without TensorFlow


def test_imports_without_tensorflow() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import hepgan.bench.peers_keras as m\n"
        "assert callable(m.main) and m.PASSES == {'g_forward': 1, 'd_updates': 2, 'g_updates': 2}\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr


def test_script_depends_on_no_hepgan_module() -> None:
    source = SCRIPT.read_text()
    assert "import hepgan" not in source and "from hepgan" not in source


@pytest.mark.parametrize("arch", pk.ARCHS)
def test_constants_are_hepgans(arch: str) -> None:
    """The peer repeats hepgan's paper settings (it cannot import them); a drift on either side fails."""
    cfg = ModelConfig(arch=arch, size="paper").resolve()
    assert pk.LATENT_DIM[arch] == PRESETS[(arch, "paper")]["latent_dim"]
    assert pk.BN_EPSILON[arch] == ARCH_DEFAULTS[arch]["bn_epsilon"] == cfg.bn_epsilon
    assert pk.CELL_POWER[arch] == CELL_POWER[arch] == cfg.cell_power
    assert pk.LOSS_WEIGHTS[arch] == PAPER_WEIGHTS[arch]
    assert pk.GRID[arch] == tuple(get_geometry(arch).shape)
    assert pk.ENERGY_GEV[arch] == peers_worker.ENERGY_GEV[arch]
    assert pk.THETA_RAD == peers_worker.THETA_RAD
    assert pk.DROPOUT == cfg.dropout
    if arch == "angle51":
        assert (pk.ANGLE_CELL_MM, pk.ANGLE_LAYER_MM) == (cfg.cell_size_mm, cfg.layer_thickness_mm)


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--arch", "fixed25", "--batch", "0"], ["--arch", "fixed99", "--batch", "2"]):
        with pytest.raises(SystemExit) as exc:
            pk.main(argv)
        assert exc.value.code == 2
    assert "--batch" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The worker under .venv-peers


@needs_peers_venv
def test_fixed25_worker_protocol() -> None:
    """Run as a plain script by path (hepgan is not installed in .venv-peers)."""
    rc, replies, err = run_worker(
        [str(SCRIPT), "--arch", "fixed25", "--batch", "2", "--threads", "2"],
        [{"op": "train", "n": 1}, {"op": "generate", "n": 2}, {"op": "quit"}],
    )
    assert rc == 0, err
    assert len(replies) == 3, (replies, err)
    ready, train, generate = replies
    assert ready["ready"] is True
    assert ready["framework"].startswith("keras 3.") and " / tensorflow 2." in ready["framework"]
    assert isinstance(ready["onednn"], bool)
    if platform.machine() in ("x86_64", "AMD64"):
        assert ready["onednn"] is True  # TF's x86 builds have oneDNN; the worker turns it on
    assert ready["threads"] == 2
    assert ready["params"] == hepgan_params("fixed25") == {"g": 872808, "d": 73402}
    assert ready["passes"] == {"g_forward": 1, "d_updates": 2, "g_updates": 2}
    assert len(train["seconds"]) == 1 and all(t > 0 for t in train["seconds"])
    assert len(generate["seconds"]) == 2 and all(t > 0 for t in generate["seconds"])


@needs_peers_venv
def test_angle51_worker_protocol_and_error_exit() -> None:
    """Run as a module; a bad command is answered with an error and a non-zero exit."""
    rc, replies, err = run_worker(
        ["-m", "hepgan.bench.peers_keras", "--arch", "angle51", "--batch", "1", "--threads", "2"],
        [{"op": "train", "n": 1}, {"op": "generate", "n": 1}, {"op": "fly", "n": 1}, {"op": "quit"}],
    )
    assert rc == 1, err
    assert len(replies) == 4, (replies, err)
    ready, train, generate, error = replies
    assert ready["params"] == hepgan_params("angle51") == {"g": 1364983, "d": 87354}
    assert ready["passes"] == {"g_forward": 1, "d_updates": 2, "g_updates": 2}
    assert train["seconds"][0] > 0 and generate["seconds"][0] > 0
    assert "unknown op 'fly'" in error["error"]


CHECK_LAYERS = """
import json, sys
import numpy as np
from hepgan.bench import peers_keras as pk
tf = pk.import_tensorflow(1)
cells = np.load(sys.argv[1])
out = {"angle": np.asarray(pk.measured_angle(cells, pk.ANGLE_CELL_MM, pk.ANGLE_LAYER_MM)).tolist()}
ns = pk.keras_layers()
x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 3, 2, 5)).astype(np.float32)
bn = ns.BatchNorm(1e-3)
bn.build(x.shape)
bn.trainable = False
out["frozen_train"] = np.asarray(bn(x, training=True)).tolist()
out["frozen_moving_mean"] = np.asarray(bn.moving_mean).tolist()
out["frozen_infer"] = np.asarray(bn(x, training=False)).tolist()
bn.trainable = True
bn(x, training=True)
out["trained_moving_mean"] = np.asarray(bn.moving_mean).tolist()
always = ns.BatchNorm(1e-3, batch_stats_always=True)
out["always_infer"] = np.asarray(always(x, training=False)).tolist()
out["ecal"] = np.asarray(ns.EcalSum(0.85)(cells)).tolist()
print(json.dumps(out))
"""


@needs_peers_venv
def test_tensorflow_layers_compute_what_hepgan_does(tmp_path: Path) -> None:
    """The angle head against hepgan's JAX ``measured_angle`` (tilted, empty and one-layer events), the
    ECAL sum against NumPy, and the BatchNorm modes against the batch-statistics formula."""
    rng = np.random.default_rng(3)
    cells = rng.gamma(0.5, 1.0, (4, 51, 51, 25)).astype(np.float32)
    y = np.arange(51)[None, :, None]
    z = np.arange(25)[None, None, :]
    cells[1] = np.exp(-0.5 * ((y - 10 - 1.2 * z) / 2.0) ** 2).astype(np.float32) * np.ones((51, 1, 1))
    cells[2] = 0.0
    cells[3] = 0.0
    cells[3, :, :, 7] = 1.0
    path = tmp_path / "cells.npy"
    np.save(path, cells)
    proc = subprocess.run(
        [str(PEER_PYTHON), "-c", CHECK_LAYERS, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    geo = get_geometry("angle51")
    want = np.asarray(measured_angle(cells, geo.cell_size_mm, geo.layer_thickness_mm))
    np.testing.assert_allclose(out["angle"], want, rtol=1e-5, atol=1e-5)
    assert abs(out["angle"][1] - np.pi / 2) > 0.1  # the tilted event is measured as tilted
    np.testing.assert_allclose(out["angle"][2:], np.pi / 2, atol=1e-6)

    linear = np.maximum(cells, 0.0).astype(np.float64) ** (1 / 0.85)
    np.testing.assert_allclose(np.ravel(out["ecal"]), linear.sum(axis=(1, 2, 3)), rtol=1e-4)

    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 3, 2, 5)).astype(np.float32)
    mean, var = x.mean(axis=(0, 1, 2, 3)), x.var(axis=(0, 1, 2, 3))
    batch_normed = (x - mean) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(out["frozen_train"], batch_normed, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["always_infer"], batch_normed, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["frozen_moving_mean"], 0.0)  # frozen: statistics left alone
    np.testing.assert_allclose(out["frozen_infer"], x / np.sqrt(1.0 + 1e-3), rtol=1e-5)  # moving stats
    np.testing.assert_allclose(out["trained_moving_mean"], 0.01 * mean, rtol=1e-4)  # momentum 0.99
