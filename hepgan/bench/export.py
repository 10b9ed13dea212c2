"""Benchmark: showers per second of an exported generator in onnxruntime (CPU) against JAX (CPU, jitted).

For each generator size below, with freshly initialised weights (speed does not depend on their values)
and the same batch: the ONNX model ``hepgan-export`` writes, run by an onnxruntime CPU session (its
default threads: one per core), against two jitted JAX functions of the same generator on the same
inputs, measured in the same run:

- ``jax_native``: hepgan's own sampling computation (FFT convolutions where the CPU cost model picks
  them), i.e. the function ``hepgan-export --format stablehlo`` writes on a CPU machine;
- ``jax_direct``: the exported ONNX graph's computation in JAX (every convolution direct, by XLA).

Each figure is the best of a few calls after a warm-up (compilation and session creation excluded); the
ratios are onnxruntime's showers/s over each JAX figure. The ONNX output is also compared with
``jax_native`` (max relative difference to the shower's largest cell, as ``hepgan-export`` checks).

``hepgan-bench export`` writes ``experiments/bench/export.json``; ``quick=True`` runs the tiny model only.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax2onnx  # noqa: F401  (the optional packages: without them the benchmark is unavailable)
import numpy as np
import onnxruntime  # noqa: F401
from flax import nnx

from hepgan.bench.common import best_of
from hepgan.data.pipeline import Preprocess
from hepgan.export import compare, generator_function, onnx_model, onnx_runner
from hepgan.models import ModelConfig, build

# (arch, size, batch): the test model, the demo (hepgan-train's default), the paper's fixed-angle model
CASES = (("fixed25", "tiny", 64), ("fixed25", "small", 64), ("fixed25", "paper", 64))
QUICK_CASES = (("fixed25", "tiny", 16),)


def _inputs(angle: bool, batch: int, noise_dim: int, seed: int) -> list[np.ndarray]:
    """``[energy [B] GeV, (theta [B] rad,) noise [B, noise_dim]]``, float32."""
    rng = np.random.default_rng(seed)
    energy = rng.uniform(10.0, 500.0, batch).astype(np.float32)
    theta = rng.uniform(np.deg2rad(60.0), np.deg2rad(120.0), batch).astype(np.float32)
    noise = rng.standard_normal((batch, noise_dim)).astype(np.float32)
    return [energy, theta, noise] if angle else [energy, noise]


def _case(arch: str, size: str, batch: int, repeats: int) -> dict[str, Any]:
    """Showers/s of onnxruntime, ``jax_native`` and ``jax_direct`` for one generator at ``batch``."""
    g, _ = build(ModelConfig(arch=arch, size=size), nnx.Rngs(0))
    g.eval()
    preprocess = Preprocess.for_model(arch)
    native = generator_function(g, preprocess, convs="native", batch=batch)
    direct = generator_function(g, preprocess, convs="flax")
    inputs = _inputs(native.angle, batch, native.noise_dim, seed=0)
    on_device = [jnp.asarray(a) for a in inputs]

    t0 = time.perf_counter()
    model = onnx_model(direct, batch)
    convert_s = time.perf_counter() - t0
    ort_call = onnx_runner(model)
    jit_native, jit_direct = jax.jit(native.fn), jax.jit(direct.fn)

    seconds = {
        "onnxruntime": best_of(lambda: ort_call(*inputs), repeats),
        "jax_native": best_of(lambda: jax.block_until_ready(jit_native(*on_device)), repeats),
        "jax_direct": best_of(lambda: jax.block_until_ready(jit_direct(*on_device)), repeats),
    }
    rate = {k: batch / s for k, s in seconds.items()}
    check = compare(ort_call(*inputs), np.asarray(jit_native(*on_device)))
    return {
        "arch": arch,
        "size": size,
        "batch": batch,
        "generator_parameters": int(sum(x.size for x in jax.tree.leaves(nnx.state(g, nnx.Param)))),
        "onnx_bytes": len(model),
        "convert_s": convert_s,
        "seconds_per_batch": seconds,
        "showers_per_s": rate,
        "ratio_onnxruntime_over_jax_native": rate["onnxruntime"] / rate["jax_native"],
        "ratio_onnxruntime_over_jax_direct": rate["onnxruntime"] / rate["jax_direct"],
        "onnx_vs_jax_native": check,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Time each case of :data:`CASES` (``quick``: :data:`QUICK_CASES`, one repeat)."""
    import onnxruntime as ort

    repeats = 1 if quick else 3
    load_before = os.getloadavg()
    cases = [_case(arch, size, batch, repeats) for arch, size, batch in (QUICK_CASES if quick else CASES)]
    return {
        "repeats": repeats,
        # the machine may be shared: its 1-minute load before and after (2 = both cores of a 2-core VM busy)
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "onnxruntime": ort.__version__,
        "onnxruntime_threads": "default (one per physical core)",
        "cases": cases,
        "note": "freshly initialised weights (speed does not depend on their values); best of `repeats` "
        "calls after one warm-up; ratio > 1: onnxruntime is faster",
    }
