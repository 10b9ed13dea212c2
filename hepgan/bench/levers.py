"""``hepgan-bench levers``: each CPU speed lever of the FFT convolution path against its baseline, in one run.

A lever is one change to how hepgan computes the same model; every row times the baseline and the lever
alternately in the same process (``repeats`` rounds, the fastest call of each side), at the paper model
sizes and batch 16, and reports ``ratio = baseline / lever`` (above 1: the lever is faster) and whether
hepgan keeps it. The losing levers are measured and kept in the JSON as well. The layouts (one process,
one device per core, MPI ranks) and the batch are levers too; ``hepgan-bench peers`` measures them
against the Keras peer.

- ``fold_padding_upsample`` (layer, forward+backward): Keras's ZeroPadding3D and UpSampling3D folded into
  the convolution (``conv3d_fft`` with explicit padding and ``upsample``) against padding and upsampling
  the input first and convolving "valid" (hepgan before the lever).
- ``contraction`` (layer, forward+backward): the per-frequency channel contraction as a batched complex
  matmul ("dot") or a fused multiply-and-sum ("multiply"); the kept rule picks per layer by the number
  of channel pairs (``MULTIPLY_CONTRACTION_MAX``); the baseline is "dot" everywhere.
- ``kernel_spectra`` (model, sampling): the generator's kernel transforms computed once for fixed
  weights against every call.
- ``dropout_rng`` (model, discriminator forward+backward in training mode): the hash dropout mask
  against Threefry (``jax.random.bernoulli``).
- ``channels_first`` (layer, forward+backward): the FFT path on channel-first input, without the
  transposes around the transforms, against the channel-last models as they are. Not adopted.
- ``transform_length`` (one input transform and its inverse): the smallest 2-3-5-7-smooth length
  against the next power of two.
- ``split_fft`` (one input transform, one process on all cores): the batch in two halves, in the hope
  that XLA runs two single-threaded FFTs at once, against one FFT.
- ``xla_onednn_flag`` (model, discriminator forward+backward, each side in a fresh process):
  ``XLA_FLAGS=--xla_cpu_experimental_onednn_custom_call=true`` against no flag; also whether the
  compiled program contains any oneDNN call.

``quick=True``: the tiny fixed-angle model at batch 2, one round, no subprocess lever (a smoke run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hepgan.models import ModelConfig, build, conv_specs
from hepgan.models.conv import (
    MULTIPLY_CONTRACTION_MAX,
    ConvSpec,
    conv3d_fft,
    fft_lengths,
    resolve_padding,
    upsample_nearest,
)

ONEDNN_FLAG = "--xla_cpu_experimental_onednn_custom_call=true"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _block(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: jax.block_until_ready(fn(*args))


def paired(baseline: Callable[[], Any], lever: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Fastest wall seconds of each side over ``repeats`` rounds, the sides alternating call by call
    after one untimed call each (compilation); ``ratio = baseline_s / lever_s``."""
    baseline()
    lever()
    best = {"baseline_s": float("inf"), "lever_s": float("inf")}
    for _ in range(repeats):
        for side, fn in (("baseline_s", baseline), ("lever_s", lever)):
            t0 = time.perf_counter()
            fn()
            best[side] = min(best[side], time.perf_counter() - t0)
    return {**best, "ratio": best["baseline_s"] / best["lever_s"]}


def _weighted(y: jax.Array) -> jax.Array:
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape))


def _fwdbwd(conv: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., Any]:
    """Jitted gradients of a weighted sum of ``conv(x, w)`` with respect to ``x`` and ``w``."""
    return jax.jit(jax.grad(lambda x, w: _weighted(conv(x, w)), argnums=(0, 1)))


def _inputs(spec: ConvSpec, seed: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(spec.x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(spec.kernel_shape) * 0.1, jnp.float32)
    return x, w


def _materialised(spec: ConvSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The convolution as computed before the folding: upsample, pad, then a "valid" FFT convolution."""
    pads = resolve_padding(spec.kernel_shape[:3], spec.padding)

    def conv(x: jax.Array, w: jax.Array) -> jax.Array:
        x = jnp.pad(upsample_nearest(x, spec.upsample), ((0, 0), *pads, (0, 0)))
        return conv3d_fft(x, w, "valid")

    return conv


def layer_levers(arch: str, size: str, batch: int, repeats: int) -> list[dict[str, Any]]:
    """Per convolution of ``arch``: the folding, contraction and channel-first levers (forward+backward)."""
    g, d = nnx.eval_shape(lambda: build(ModelConfig(arch=arch, size=size), nnx.Rngs(0)))
    rows = []
    for i, spec in enumerate(conv_specs(g, d, batch)):
        x, w = _inputs(spec, i)
        pad, up = spec.padding, spec.upsample
        folded = _fwdbwd(partial(conv3d_fft, padding=pad, upsample=up))
        cin, cout = spec.kernel_shape[3], spec.kernel_shape[4]
        row: dict[str, Any] = {
            "arch": arch,
            "layer": spec.name,
            "x_shape": list(spec.x_shape),
            "kernel_shape": list(spec.kernel_shape),
            "padding": pad,
            "upsample": list(up),
            "fft_lengths": list(fft_lengths(spec.x_shape[1:4], spec.kernel_shape[:3], pad, up)),
            "contraction_kept": "multiply" if cin * cout <= MULTIPLY_CONTRACTION_MAX else "dot",
        }
        if pad != "valid" or up != (1, 1, 1):
            row["fold_padding_upsample"] = paired(
                _block(_fwdbwd(_materialised(spec)), x, w), _block(folded, x, w), repeats
            )
        by = {
            c: _fwdbwd(partial(conv3d_fft, padding=pad, upsample=up, contraction=c))
            for c in ("dot", "multiply")
        }
        row["contraction"] = paired(_block(by["dot"], x, w), _block(by["multiply"], x, w), repeats)
        xc = jnp.moveaxis(x, -1, 1)
        cf = _fwdbwd(partial(conv3d_fft, padding=pad, upsample=up, channels_first=True))
        row["channels_first"] = paired(_block(folded, x, w), _block(cf, xc, w), repeats)
        rows.append(row)
        fold = row.get("fold_padding_upsample", {}).get("ratio", float("nan"))
        _say(
            f"   {arch} {spec.name}: fold {fold:.2f}x, multiply/dot {row['contraction']['ratio']:.2f}x, "
            f"channel-first {row['channels_first']['ratio']:.2f}x"
        )
    return rows


def model_levers(arch: str, size: str, batch: int, repeats: int) -> dict[str, Any]:
    """The kernel-spectra lever (sampling) and the dropout lever (discriminator forward+backward)."""
    out: dict[str, Any] = {"arch": arch}
    g, _ = build(ModelConfig(arch=arch, size=size), nnx.Rngs(0))
    g.eval()
    energy = jnp.linspace(10.0, 500.0, batch, dtype=jnp.float32)
    theta = jnp.full((batch,), jnp.pi / 2, jnp.float32)
    key = jax.random.key(0)
    sample = nnx.jit(lambda g, sp: g.sample(key, energy, theta, sp))
    spectra = g.kernel_spectra(batch)
    out["kernel_spectra"] = paired(_block(sample, g, None), _block(sample, g, spectra), repeats)
    x = jnp.abs(jax.random.normal(jax.random.key(1), (batch, *g.grid), jnp.float32))
    grads = {}
    for rng in ("threefry", "hash"):
        _, d = build(ModelConfig(arch=arch, size=size, dropout_rng=rng), nnx.Rngs(0))

        @nnx.jit
        def d_grad(d: Any, x: jax.Array) -> Any:
            return nnx.grad(lambda d: jnp.mean(d(x)["logit"]) + jnp.mean(d(x * 0.5)["energy"]))(d)

        grads[rng] = _block(d_grad, d, x)
    out["dropout_rng"] = paired(grads["threefry"], grads["hash"], repeats)
    _say(
        f"   {arch}: kernel spectra {out['kernel_spectra']['ratio']:.2f}x, "
        f"hash dropout {out['dropout_rng']['ratio']:.2f}x"
    )
    return out


def transform_levers(batch: int, channels: int, grid: int, repeats: int) -> dict[str, Any]:
    """Transform length and batch splitting on a discriminator-like input ``[batch, channels, grid^3]``."""
    from hepgan.models.conv import fft_length

    x = jnp.asarray(np.random.default_rng(0).random((batch, channels, grid, grid, grid)), jnp.float32)
    smooth = fft_length(grid + 2)  # a 5^3 "same" convolution's length
    pow2 = 1 << (grid + 1).bit_length()

    def roundtrip(n: int) -> Callable[..., Any]:
        s = (n, n, n)
        return jax.jit(lambda x: jnp.fft.irfftn(jnp.fft.rfftn(x, s=s, axes=(2, 3, 4)), s=s, axes=(2, 3, 4)))

    def halves(x: jax.Array) -> jax.Array:
        parts = jnp.split(x, 2, axis=0)
        return jnp.concatenate([jnp.fft.rfftn(p, s=(smooth,) * 3, axes=(2, 3, 4)) for p in parts])

    one = jax.jit(lambda x: jnp.fft.rfftn(x, s=(smooth,) * 3, axes=(2, 3, 4)))
    return {
        "shape": [batch, channels, grid, grid, grid],
        "transform_length": {
            "baseline_length": pow2,
            "lever_length": smooth,
            **paired(_block(roundtrip(pow2), x), _block(roundtrip(smooth), x), repeats),
        },
        "split_fft": paired(_block(one, x), _block(jax.jit(halves), x), repeats),
    }


def _onednn_child(arch: str, size: str, batch: int, repeats: int) -> dict[str, Any]:
    """In a child process (``XLA_FLAGS`` chosen by the parent): discriminator forward+backward seconds and
    whether the compiled program calls oneDNN."""
    _, d = build(ModelConfig(arch=arch, size=size), nnx.Rngs(0))
    d.eval()  # no dropout (no RNG state to advance inside the gradient); the same on both sides
    x = jnp.abs(jax.random.normal(jax.random.key(1), (batch, *d.grid), jnp.float32))
    graph, state = nnx.split(d)

    def grads(s: Any) -> Any:  # nnx.grad lifts the module's state (BatchNorm statistics) correctly
        return nnx.grad(lambda m: jnp.mean(m(x)["logit"]))(nnx.merge(graph, s))

    fn = jax.jit(grads)
    text = (fn.lower(state).compile().as_text() or "").lower()
    jax.block_until_ready(fn(state))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(state))
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best, "onednn_calls": text.count("onednn")}


def onednn_lever(arch: str, size: str, batch: int, repeats: int) -> dict[str, Any]:
    """The XLA oneDNN flag against none, each in fresh processes, alternating ``repeats`` times."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for side, flags in (("baseline", ""), ("lever", ONEDNN_FLAG)):
            env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
            code = (
                "import json, sys; from hepgan.bench.levers import _onednn_child; "
                f"print(json.dumps(_onednn_child({arch!r}, {size!r}, {batch}, 2)))"
            )
            proc = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                return {"error": f"child failed ({proc.returncode}): {proc.stderr.strip()[-400:]}"}
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if side not in best or res["seconds"] < best[side]["seconds"]:
                best[side] = res
    return {
        "flag": ONEDNN_FLAG,
        "baseline_s": best["baseline"]["seconds"],
        "lever_s": best["lever"]["seconds"],
        "ratio": best["baseline"]["seconds"] / best["lever"]["seconds"],
        "onednn_calls_in_program": best["lever"]["onednn_calls"],
    }


def summarise(layers: list[dict[str, Any]], models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (lever, arch): summed seconds over the layers it applies to, ratio, kept or not."""
    out = []
    for arch in sorted({r["arch"] for r in layers}):
        rows = [r for r in layers if r["arch"] == arch]
        fold = [r["fold_padding_upsample"] for r in rows if "fold_padding_upsample" in r]
        base, lever = sum(f["baseline_s"] for f in fold), sum(f["lever_s"] for f in fold)
        out.append(
            {
                "lever": "fold_padding_upsample",
                "arch": arch,
                "scope": f"{len(fold)} layers, fwd+bwd",
                "baseline_s": base,
                "lever_s": lever,
                "ratio": base / lever,
                "kept": True,
            }
        )
        dot = sum(r["contraction"]["baseline_s"] for r in rows)
        rule = sum(
            r["contraction"]["lever_s" if r["contraction_kept"] == "multiply" else "baseline_s"] for r in rows
        )
        mult = sum(r["contraction"]["lever_s"] for r in rows)
        out.append(
            {
                "lever": "contraction (rule vs all dot)",
                "arch": arch,
                "scope": f"{len(rows)} layers, fwd+bwd",
                "baseline_s": dot,
                "lever_s": rule,
                "ratio": dot / rule,
                "kept": True,
                "all_multiply_s": mult,
            }
        )
        cl, cf = (
            sum(r["channels_first"]["baseline_s"] for r in rows),
            sum(r["channels_first"]["lever_s"] for r in rows),
        )
        out.append(
            {
                "lever": "channels_first",
                "arch": arch,
                "scope": f"{len(rows)} layers, fwd+bwd",
                "baseline_s": cl,
                "lever_s": cf,
                "ratio": cl / cf,
                "kept": False,
            }
        )
    for m in models:
        for name in ("kernel_spectra", "dropout_rng"):
            scope = (
                "generator sampling" if name == "kernel_spectra" else "discriminator fwd+bwd, training mode"
            )
            out.append({"lever": name, "arch": m["arch"], "scope": scope, **m[name], "kept": True})
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every lever (see the module docstring); JSON-able dict with ``summary``, ``layers``,
    ``models``, ``transforms`` and ``onednn``."""
    batch, repeats, size = (2, 1, "tiny") if quick else (16, 3, "paper")
    archs = ("fixed25",) if quick else ("fixed25", "angle51")
    layers: list[dict[str, Any]] = []
    models = []
    for arch in archs:
        layers += layer_levers(arch, size, batch, repeats)
        models.append(model_levers(arch, size, batch, repeats))
    summary = summarise(layers, models)
    transforms = transform_levers(batch, 4 if quick else 32, 9 if quick else 25, repeats)
    summary.append(
        {
            "lever": "transform_length",
            "arch": "-",
            "scope": "rfftn+irfftn, D.conv2 input",
            **transforms["transform_length"],
            "kept": True,
        }
    )
    summary.append(
        {
            "lever": "split_fft",
            "arch": "-",
            "scope": "rfftn, D.conv2 input, one process",
            **transforms["split_fft"],
            "kept": False,
        }
    )
    onednn = None if quick else onednn_lever("fixed25", size, batch, repeats)
    if onednn is not None and "error" not in onednn:
        summary.append(
            {
                "lever": "xla_onednn_flag",
                "arch": "fixed25",
                "scope": "discriminator fwd+bwd, fresh processes",
                **{k: onednn[k] for k in ("baseline_s", "lever_s", "ratio")},
                "kept": False,
            }
        )
    for s in summary:
        _say(f"   {s['lever']:<32} {s['arch']:<8} {s['ratio']:.2f}x  kept={s['kept']}")
    return {
        "batch": batch,
        "repeats": repeats,
        "size": size,
        "notes": "ratio = baseline_s / lever_s (above 1: the lever is faster); fastest of `repeats` "
        "alternating calls per side in one process (xla_onednn_flag: fresh processes); layouts and batch: "
        "hepgan-bench peers",
        "summary": summary,
        "layers": layers,
        "models": models,
        "transforms": transforms,
        "onednn": onednn,
    }
