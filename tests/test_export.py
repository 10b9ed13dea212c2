"""hepgan-export: the tiny generators as ONNX and StableHLO, fixed and dynamic batch, against JAX.

The run directories are written directly (manifest + one Orbax checkpoint of a freshly built tiny run,
its BatchNorm statistics and EMA weights moved away from their initial values so that both matter);
no training is needed to test a conversion. Each exported model is compared with an independent JAX
path (the model's own ``latent`` with the same noise, the generator, ``Preprocess.invert_cells``) on
inputs the export never saw, at batch sizes other than the one it checked itself.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("jax2onnx")
ort = pytest.importorskip("onnxruntime")

from hepgan import export as ex  # noqa: E402
from hepgan.cli.export import main  # noqa: E402

STEP = 3


def _fake_run(out: Path, *overrides: str) -> Path:
    """A run directory holding the tiny model ``overrides`` at step :data:`STEP`: BatchNorm statistics
    drawn at random (mean ~ N(0, 0.3), var ~ U(0.5, 2)), EMA weights = 0.9 x the raw weights."""
    from hepgan.provenance import write_manifest
    from hepgan.train.checkpoint import Checkpointer, model_tag
    from hepgan.train.config import compose, to_dict
    from hepgan.train.run import build_run

    run = build_run(compose(["model=tiny", *overrides]), parallel=False, data=False)
    state = run.state
    rng = np.random.default_rng(1)

    def stat(x: jax.Array) -> jax.Array:
        if np.all(np.asarray(x) == 1.0):  # a variance (initialised to ones)
            return jnp.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype)
        return jnp.asarray(rng.normal(0.0, 0.3, x.shape), x.dtype)

    state = state.replace(
        step=jnp.asarray(STEP, jnp.int32),
        g=state.g.replace(batch_stats=jax.tree.map(stat, state.g.batch_stats)),
        ema_g_params=jax.tree.map(lambda p: p * 0.9, state.g.params),
    )
    out.mkdir(parents=True)
    write_manifest(out, {"config": to_dict(run.conf)})
    ckpt = Checkpointer(out, keep_best=False)
    ckpt.save(STEP, state, {"model": model_tag(run.conf.model)})
    ckpt.wait()
    ckpt.close()
    return out


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory) -> Path:
    return _fake_run(tmp_path_factory.mktemp("fixed") / "run")


@pytest.fixture(scope="module")
def angle_run(tmp_path_factory) -> Path:
    return _fake_run(tmp_path_factory.mktemp("angle") / "run", "model.arch=angle51", "data=simulated_angle51")


@functools.cache
def _restored(run: Path) -> tuple[Any, Any, Any]:
    from hepgan.train.checkpoint import restore_run

    players, state, preprocess, _ = restore_run(run)
    return players, state, preprocess


def _jax_showers(
    run: Path, energy: np.ndarray, theta: np.ndarray, noise: np.ndarray, ema: bool = True
) -> Any:
    """Showers [B, X, Y, Z] GeV of the run's generator for this noise, by the model's own code."""
    from hepgan.explain.dissect import latent_with_noise

    players, state, preprocess = _restored(run)
    g = players.generator(state, ema=ema)
    z = latent_with_noise(g, noise, energy, theta)
    x = nnx.jit(lambda m, a: m(a))(g, jnp.asarray(z))
    return np.asarray(preprocess.invert_cells(x), np.float32)


def _inputs(batch: int, noise_dim: int, angle: bool, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(1.05, 2.09, batch) if angle else np.full(batch, np.pi / 2)
    return {
        "energy": rng.uniform(10.0, 500.0, batch).astype(np.float32),
        "theta": theta.astype(np.float32),
        "noise": rng.standard_normal((batch, noise_dim)).astype(np.float32),
    }


def _max_rel(got: np.ndarray, want: np.ndarray) -> float:
    """Largest per-shower max |got - want| relative to the shower's largest cell (floor as the export)."""
    diff = np.abs(got.astype(np.float64) - want).reshape(len(want), -1).max(axis=1)
    return float((diff / np.maximum(want.reshape(len(want), -1).max(axis=1), ex.FLOOR_GEV)).max())


def _check_onnx(path: Path, run: Path, batches: list[int], *, ema: bool = True) -> None:
    """Run the ONNX file at each batch size in ``batches`` and compare with :func:`_jax_showers`."""
    record = json.loads(path.with_name(path.name + ".json").read_text())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == [i["name"] for i in record["inputs"]]
    assert [o.name for o in session.get_outputs()] == ["showers"]
    noise_dim = record["model"]["noise_dim"]
    for batch in batches:
        x = _inputs(batch, noise_dim, "theta" in names, seed=batch)
        got = session.run(None, {n: x[n] for n in names})[0]
        want = _jax_showers(run, x["energy"], x["theta"], x["noise"], ema=ema)
        assert got.shape == want.shape == (batch, *record["outputs"][0]["shape"][1:])
        assert want.max() > 0.0  # a real comparison, not of two zero arrays
        assert _max_rel(got, want) <= ex.TOLERANCE


def _check_stablehlo(path: Path, run: Path, batches: list[int]) -> None:
    """Deserialize the StableHLO bytes, call them at each batch size and compare with JAX."""
    record = json.loads(path.with_name(path.name + ".json").read_text())
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    names = [i["name"] for i in record["inputs"]]
    assert len(exported.in_avals) == len(names)
    mlir = path.with_name(record["mlir"]).read_text()
    assert "func.func public @main" in mlir and "stablehlo." in mlir
    for batch in batches:
        x = _inputs(batch, record["model"]["noise_dim"], "theta" in names, seed=batch)
        got = np.asarray(exported.call(*(jnp.asarray(x[n]) for n in names)))
        want = _jax_showers(run, x["energy"], x["theta"], x["noise"])
        assert got.shape == want.shape
        assert want.max() > 0.0
        assert _max_rel(got, want) <= ex.TOLERANCE


def test_cli_onnx_dynamic_batch(fixed_run, tmp_path, capsys) -> None:
    out = tmp_path / "models" / "g.onnx"
    assert main([str(fixed_run), "--format", "onnx", "--out", str(out)]) == 0
    assert "checked on 1000 showers" in capsys.readouterr().out
    record = json.loads((tmp_path / "models" / "g.onnx.json").read_text())
    assert record["inputs"][0] == {
        "name": "energy",
        "shape": [ex.BATCH_SYMBOL],
        "dtype": "float32",
        "units": "GeV",
        "meaning": record["inputs"][0]["meaning"],
    }
    assert [i["name"] for i in record["inputs"]] == ["energy", "noise"]
    assert record["outputs"][0]["shape"] == [ex.BATCH_SYMBOL, 25, 25, 25]
    assert record["run"]["step"] == STEP and record["run"]["weights"] == "ema"
    v = record["verification"]
    assert v["passed"] and v["n_showers"] == 1000 and v["max_rel"] <= v["tolerance"] == ex.TOLERANCE
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [ex.BATCH_SYMBOL]
    _check_onnx(out, fixed_run, [3, 5])


def test_onnx_fixed_batch_raw_weights(fixed_run, tmp_path) -> None:
    out = tmp_path / "raw.onnx"
    record = ex.export_run(fixed_run, "onnx", out, batch=4, ema=False, n_verify=10)
    assert record["run"]["weights"] == "raw" and record["batch"] == 4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [[4], [4, record["model"]["noise_dim"]]]
    _check_onnx(out, fixed_run, [4], ema=False)
    x = _inputs(4, record["model"]["noise_dim"], False, seed=4)
    raw = session.run(None, {"energy": x["energy"], "noise": x["noise"]})[0]
    ema = _jax_showers(fixed_run, x["energy"], x["theta"], x["noise"], ema=True)
    assert _max_rel(raw, ema) > 100 * ex.TOLERANCE  # the raw weights, not the EMA ones


def test_stablehlo_fixed_and_dynamic_batch(fixed_run, tmp_path) -> None:
    fixed = tmp_path / "fixed.stablehlo"
    record = ex.export_run(fixed_run, "stablehlo", fixed, batch=8, n_verify=20)
    assert record["verification"]["passed"]
    assert [tuple(a.shape) for a in jax.export.deserialize(bytearray(fixed.read_bytes())).in_avals] == [
        (8,),
        (8, record["model"]["noise_dim"]),
    ]
    _check_stablehlo(fixed, fixed_run, [8])
    dynamic = tmp_path / "dynamic.stablehlo"
    ex.export_run(fixed_run, "stablehlo", dynamic, batch=None, n_verify=20)
    _check_stablehlo(dynamic, fixed_run, [3, 5])


def test_angle_model_both_formats(angle_run, tmp_path) -> None:
    onnx_path = tmp_path / "angle.onnx"
    record = ex.export_run(angle_run, "onnx", onnx_path, batch=None, n_verify=12)
    assert [i["name"] for i in record["inputs"]] == ["energy", "theta", "noise"]
    assert record["inputs"][1]["units"] == "rad"
    assert record["outputs"][0]["shape"] == [ex.BATCH_SYMBOL, 51, 51, 25]
    _check_onnx(onnx_path, angle_run, [3])
    shlo_path = tmp_path / "angle.stablehlo"
    ex.export_run(angle_run, "stablehlo", shlo_path, batch=None, n_verify=12)
    _check_stablehlo(shlo_path, angle_run, [2])


def test_recomputed_bn_statistics_are_baked_in(fixed_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(fixed_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["train"]["sample_bn"] = "recomputed"
    (run / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "g.onnx"
    record = ex.export_run(run, "onnx", out, batch=None, n_verify=10)
    assert record["run"]["bn_stats"] == "recomputed"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _inputs(4, record["model"]["noise_dim"], False)
    got = session.run(None, {"energy": x["energy"], "noise": x["noise"]})[0]
    running = _jax_showers(run, x["energy"], x["theta"], x["noise"])  # the checkpoint's own statistics
    assert _max_rel(got, running) > 100 * ex.TOLERANCE


def test_a_model_off_by_more_than_the_tolerance_is_rejected(fixed_run, tmp_path, monkeypatch) -> None:
    real = ex.generator_function

    def off(*args: Any, **kwargs: Any) -> ex.GeneratorFunction:
        gf = real(*args, **kwargs)
        return ex.GeneratorFunction(
            **{**gf.__dict__, "fn": lambda *a: gf.fn(*a) * jnp.float32(1.0 + 10 * ex.TOLERANCE)}
        )

    monkeypatch.setattr(ex, "generator_function", off)
    out = tmp_path / "g.onnx"
    with pytest.raises(ex.VerificationError, match=r"differs from JAX .* tolerance"):
        ex.export_run(fixed_run, "onnx", out, batch=8, n_verify=16)
    assert not out.exists() and not out.with_name("g.onnx.json").exists()


def test_bad_input(fixed_run, tmp_path, capsys) -> None:
    def fails(argv: list[str], *words: str) -> None:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("hepgan-export: ") and err.count("\n") == 1, err  # one paragraph
        assert all(w in err for w in words), err

    missing = tmp_path / "nothing"
    fails([str(missing), "--format", "onnx"], str(missing), "manifest.json")
    for bad in ("0", "-3", "many"):
        fails([str(fixed_run), "--format", "onnx", "--batch", bad], "--batch", repr(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text((fixed_run / "manifest.json").read_text())
    fails([str(empty), "--format", "stablehlo", "--out", str(tmp_path / "x")], "no intact checkpoint")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    fails([str(fixed_run), "--format", "onnx", "--out", str(blocker / "sub" / "g.onnx")], "--out", "a file")
    with pytest.raises(SystemExit) as exc:
        main([str(fixed_run)])  # --format is required
    assert exc.value.code == 2
