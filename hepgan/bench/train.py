"""Training and generation throughput of the paper models, and what checkpointing costs.

For the fixed-angle 3DGAN (batch 16 and 64) and AngleGAN (batch 16: batch 64 alone would take most of a
~10 minute budget on 2 cores), paper sizes, per convolution implementation (``xla`` direct convolution,
``fft``, ``auto``): the full GAN update's showers/s (the paper schedule: two discriminator and two
generator updates), generation showers/s, and the achieved FLOP/s as a fraction of this machine's measured
fp32 matmul FLOP/s. FLOPs are the *model* FLOPs of the update, counted by XLA's cost analysis of the
direct-convolution program (an FFT program does different arithmetic for the same result, so it is
credited with the same model FLOPs). The direct convolution is timed at batch ``XLA_BATCH`` (2), where
one of its updates still takes tens of seconds on 2 cores, and the speed-up of the other implementations
is taken at the same batch in the same run. An update slower than ``MAX_STEP_S`` is timed once.

Checkpointing: the wall time of one Orbax save of the paper fixed25 state, as a fraction of the training
time between two saves at the default cadence (once per epoch; 64 steps of batch 16 for 1024 events).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hepgan.bench.common import best_of

MAX_STEP_S = 10.0
# batch 64 for angle51 (4x the cells of fixed25) would take most of the ~10 min budget on 2 cores
BATCHES = {"fixed25": [16, 64], "angle51": [16]}
XLA_BATCH = 2


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of the default device (``2 n^3`` per ``[n, n] @ [n, n]``)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    t = best_of(lambda: f(a, a).block_until_ready(), repeats=repeats)
    return 2.0 * n**3 / t


def _flops(lowered: Any) -> float:
    cost = lowered.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _setup(arch: str, impl: str, batch: int) -> tuple[Any, Any, Any, dict[str, jax.Array]]:
    """The paper experiment of ``arch`` (``experiment=paper_fixed25`` or ``paper_angle51``) at ``batch``,
    assembled as training assembles it (:func:`hepgan.train.run.build_run`, one device, no data), and one
    random batch in network units: ``(state, players, pure update, batch)``."""
    from hepgan.train.config import compose
    from hepgan.train.run import build_run

    cfg = compose([f"experiment=paper_{arch}", f"model.conv_impl={impl}", f"train.batch_size={batch}"])
    run = build_run(cfg, parallel=False, data=False, total_steps=1000)
    grid = (25, 25, 25) if arch == "fixed25" else (51, 51, 25)
    rng = np.random.default_rng(0)
    batch_d = {
        "ecal": jnp.asarray(rng.gamma(0.3, 1.0, (batch, *grid)).astype(np.float32)),
        "energy": jnp.asarray(rng.uniform(0.1, 5.0, batch).astype(np.float32)),
        "theta": jnp.asarray(rng.uniform(1.05, 2.09, batch).astype(np.float32)),
    }
    return run.state, run.players, run.update, batch_d


def train_case(arch: str, impl: str, batch: int, model_flops: float | None) -> dict[str, Any]:
    """One (arch, conv_impl, batch) case: compile, then time the update and generation."""
    state, players, step, batch_d = _setup(arch, impl, batch)
    jitted = jax.jit(step, donate_argnums=0)
    t0 = time.perf_counter()
    lowered = jitted.lower(state, batch_d)
    flops = _flops(lowered) if model_flops is None else model_flops
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0

    holder = {"state": state}

    def one() -> None:
        holder["state"], m = compiled(holder["state"], batch_d)
        jax.block_until_ready(m)

    t0 = time.perf_counter()
    one()
    first = time.perf_counter() - t0
    step_s = first if first > MAX_STEP_S else min(first, best_of(one, repeats=2, warmup=0))

    g = players.generator(holder["state"], ema=True)

    @nnx.jit
    def sample(g: Any, spectra: Any, key: jax.Array, e: jax.Array, th: jax.Array) -> jax.Array:
        return g.sample(key, e, th, spectra)

    key, spectra = jax.random.key(0), g.kernel_spectra(batch)
    gen_s = best_of(
        lambda: sample(g, spectra, key, batch_d["energy"] * 100, batch_d["theta"]).block_until_ready(),
        repeats=3,
    )
    return {
        "arch": arch,
        "conv_impl": impl,
        "batch": batch,
        "compile_s": compile_s,
        "step_s": step_s,
        "train_showers_per_s": batch / step_s,
        "generate_showers_per_s": batch / gen_s,
        "model_flops_per_step": flops,
        "achieved_flops_per_s": flops / step_s,
    }


def checkpoint_cost(step_s: float, steps_between_saves: int) -> dict[str, Any]:
    """One save of the paper fixed25 state (blocking part and total until on disk)."""
    from hepgan.train.checkpoint import Checkpointer

    state, _, _, _ = _setup("fixed25", "auto", 2)
    with tempfile.TemporaryDirectory() as d:
        ck = Checkpointer(d, keep_last=2, keep_best=False)
        ck.save(0, state, {"bench": True})  # first save creates the directories
        ck.wait()
        t0 = time.perf_counter()
        ck.save(1, state, {"bench": True})
        blocking = time.perf_counter() - t0
        ck.wait()
        total = time.perf_counter() - t0
        ck.close()
    train_between = step_s * steps_between_saves
    return {
        "save_blocking_s": blocking,
        "save_total_s": total,
        "steps_between_saves": steps_between_saves,
        "train_s_between_saves": train_between,
        "overhead_fraction": total / (train_between + total),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure (see the module docstring); ``quick``: the fixed25 model only, batch 16."""
    peak = matmul_flops()
    print(f"   fp32 matmul: {peak / 1e9:.1f} GFLOP/s", flush=True)
    archs = ["fixed25"] if quick else ["fixed25", "angle51"]
    rows: list[dict[str, Any]] = []
    speedups: list[dict[str, Any]] = []

    def record(r: dict[str, Any]) -> dict[str, Any]:
        r["fraction_of_matmul_peak"] = r["achieved_flops_per_s"] / peak
        rows.append(r)
        print(
            f"   {r['arch']} b{r['batch']} {r['conv_impl']}: {r['train_showers_per_s']:.2f} showers/s train, "
            f"{r['generate_showers_per_s']:.1f} generate, "
            f"{100 * r['fraction_of_matmul_peak']:.2f} % of matmul peak (compile {r['compile_s']:.0f} s)",
            flush=True,
        )
        return r

    for arch in archs:
        # The direct convolution is timed at a small batch (a batch-16 update takes minutes on 2 cores);
        # the other implementations at the same batch give the like-for-like speed-up.
        base = record(train_case(arch, "xla", XLA_BATCH, None))
        per_event_flops = base["model_flops_per_step"] / XLA_BATCH
        for impl in ("fft", "auto"):
            r = record(train_case(arch, impl, XLA_BATCH, base["model_flops_per_step"]))
            speedups.append(
                {
                    "arch": arch,
                    "batch": XLA_BATCH,
                    "conv_impl": impl,
                    "train_speedup_over_xla": r["train_showers_per_s"] / base["train_showers_per_s"],
                    "generate_speedup_over_xla": r["generate_showers_per_s"] / base["generate_showers_per_s"],
                }
            )
            for batch in [16] if quick else BATCHES[arch]:
                record(train_case(arch, impl, batch, per_event_flops * batch))
    fixed = next(r for r in rows if r["arch"] == "fixed25" and r["conv_impl"] == "auto" and r["batch"] == 16)
    # the default cadence: one save per epoch; a paper-size epoch of 1024 events at batch 16 is 64 steps
    ck = checkpoint_cost(fixed["step_s"], 1024 // 16)
    print(
        f"   checkpoint: {ck['save_total_s']:.2f} s per save, "
        f"{100 * ck['overhead_fraction']:.2f} % of training",
        flush=True,
    )
    return {
        "matmul_flops_per_s": peak,
        "xla_batch": XLA_BATCH,
        "cases": rows,
        "speedups": speedups,
        "checkpoint": ck,
        "quick": quick,
    }
