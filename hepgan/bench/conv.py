"""Convolution benchmark: XLA's direct 3D convolution against the FFT convolution, per layer and per model.

For every convolution of the two paper models (fixed-angle 3DGAN and AngleGAN) at the batch size
below: forward and forward+backward (gradients for input and kernel) wall time of ``conv_impl`` "xla"
and "fft", their ratio, the FLOP counts of the cost model and the choice ``auto`` makes. Then each whole
generator and discriminator, forward+backward with respect to all parameters (training mode), per
``conv_impl`` in {"xla", "fft", "auto"}. Ratios are ``time_xla / time_other`` measured in the same run.

``hepgan-bench conv`` writes ``experiments/bench/conv.json``; ``quick=True`` (batch 2, the fixed-angle
model only, one repeat) is a smoke run of a minute or so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hepgan.bench.common import best_of
from hepgan.models import ModelConfig, build, conv_specs
from hepgan.models.conv import choose_impl, conv3d, conv_flops


def _blocking(fn: Callable[..., Any], *args: Any) -> Any:
    return jax.block_until_ready(fn(*args))


def _weighted_sum(x: jax.Array, w: jax.Array, padding: Any, impl: str, upsample: Any) -> jax.Array:
    y = conv3d(x, w, padding, impl, upsample)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape))


def _layer_times(spec: Any, repeats: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(spec.x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(spec.kernel_shape) * 0.1, jnp.float32)
    row: dict[str, Any] = {
        "layer": spec.name,
        "x_shape": list(spec.x_shape),
        "kernel_shape": list(spec.kernel_shape),
        "padding": spec.padding,
        "upsample": list(spec.upsample),
        "auto": choose_impl(spec.x_shape, spec.kernel_shape, spec.padding, upsample=spec.upsample),
    }
    b, k = spec.x_shape, spec.kernel_shape
    flops = conv_flops(b[0], b[1:4], k[:3], k[3], k[4], spec.padding, spec.upsample)
    row.update({f"gflop_{name}": v / 1e9 for name, v in flops.items()})
    for impl in ("xla", "fft"):
        fwd = jax.jit(partial(conv3d, padding=spec.padding, impl=impl, upsample=spec.upsample))
        both = jax.jit(
            jax.grad(
                partial(_weighted_sum, padding=spec.padding, impl=impl, upsample=spec.upsample),
                argnums=(0, 1),
            )
        )
        row[f"fwd_s_{impl}"] = best_of(partial(_blocking, fwd, x, w), repeats)
        row[f"fwdbwd_s_{impl}"] = best_of(partial(_blocking, both, x, w), repeats)
    row["fwd_ratio_xla_over_fft"] = row["fwd_s_xla"] / row["fwd_s_fft"]
    row["fwdbwd_ratio_xla_over_fft"] = row["fwdbwd_s_xla"] / row["fwdbwd_s_fft"]
    return row


def _model_times(arch: str, batch: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"arch": arch, "batch": batch}
    for impl in ("xla", "fft", "auto"):
        g, d = build(ModelConfig(arch=arch, size="paper", conv_impl=impl), nnx.Rngs(0))
        energy = jnp.linspace(10.0, 500.0, batch, dtype=jnp.float32)
        theta = jnp.full((batch,), jnp.pi / 2, jnp.float32)
        z = g.latent(jax.random.key(0), energy, theta)
        x = jnp.abs(jax.random.normal(jax.random.key(1), (batch, *d.grid), jnp.float32))

        @nnx.jit
        def g_grad(g: Any, z: jax.Array) -> Any:
            return nnx.grad(lambda g: jnp.mean(g(z)))(g)

        @nnx.jit
        def d_grad(d: Any, x: jax.Array) -> Any:
            def loss(d: Any) -> jax.Array:
                o = d(x)
                return jnp.mean(o["logit"]) + jnp.mean(o["energy"])

            return nnx.grad(loss)(d)

        out[f"G_fwdbwd_s_{impl}"] = best_of(partial(_blocking, g_grad, g, z), repeats)
        out[f"D_fwdbwd_s_{impl}"] = best_of(partial(_blocking, d_grad, d, x), repeats)
    for net in ("G", "D"):
        for impl in ("fft", "auto"):
            out[f"{net}_ratio_xla_over_{impl}"] = out[f"{net}_fwdbwd_s_xla"] / out[f"{net}_fwdbwd_s_{impl}"]
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Time every paper conv layer and both paper models with ``conv_impl`` xla / fft (/ auto).

    Returns a JSON-able dict: ``layers`` (one row per conv: shapes, seconds ``fwd_s_*``, ``fwdbwd_s_*``,
    ratios xla/fft, cost-model GFLOP, the ``auto`` choice) and ``models`` (whole G and D
    forward+backward seconds per impl and ratios).
    """
    batch, repeats = (2, 1) if quick else (16, 3)
    archs = ("fixed25",) if quick else ("fixed25", "angle51")
    layers, models = [], []
    for arch in archs:
        g, d = nnx.eval_shape(lambda arch=arch: build(ModelConfig(arch=arch), nnx.Rngs(0)))
        for i, spec in enumerate(conv_specs(g, d, batch)):
            row = _layer_times(spec, repeats, seed=i)
            layers.append({"arch": arch, **row})
            print(
                f"   {arch} {spec.name}: xla/fft fwd {row['fwd_ratio_xla_over_fft']:.1f}x, "
                f"fwd+bwd {row['fwdbwd_ratio_xla_over_fft']:.1f}x",
                file=sys.stderr,
                flush=True,
            )
        models.append(_model_times(arch, batch, repeats))
        print(f"   {arch} whole models done", file=sys.stderr, flush=True)
    return {
        "batch": batch,
        "repeats": repeats,
        "backend": jax.default_backend(),
        "layers": layers,
        "models": models,
    }
