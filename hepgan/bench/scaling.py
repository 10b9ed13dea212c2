"""Weak and strong scaling of data-parallel GAN training over device counts and reduction backends.

Each configuration runs in its own process tree (the device count of a CPU run is fixed when JAX starts):

- ``xla`` / ``shard_map``: one process with ``N`` simulated CPU devices, pinned to ``N`` cores;
- ``mpi``: ``mpirun -n N``, one single-device process per core;
- baseline: one process, one device, one core.

Every process runs with one compute thread (``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``) so that ``N`` workers on ``N`` cores are comparable with one worker on
one core. Per step the worker reports the wall time, the input-pipeline wait (time blocked in
``next(pipeline)``), the gradient-reduction time (the step's all-reduces on gradient-sized buffers, timed
alone) and the compute time (step minus reduction); the driver adds throughput and parallel efficiency:
weak scaling (fixed per-device batch) ``T_1 / T_N``, strong scaling (fixed global batch)
``T_1 / (N T_N)``.

The step is a one-D-update, one-G-update GAN step of the chosen 3DGAN model (simultaneous schedule: two
gradient all-reduces per step, one per player, plus BatchNorm statistics), written here on the models
directly so that the benchmark measures data parallelism, not a particular training schedule.

``python -m hepgan.bench.scaling --out experiments/scaling [--quick] [--profile DIR]`` writes
``scaling.json`` and ``scaling.png``; ``hepgan-bench scaling`` writes the JSON only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


# ----------------------------------------------------------------------------------------------------
# Worker: one configuration, in this process (or in every process of an mpirun)
# ----------------------------------------------------------------------------------------------------


def _bench_step(players: Any, tx: Any, reducer: Any, local_batch: int, latent_dim: int) -> Any:
    """``step(state, batch) -> (state, metrics)``: one discriminator and one generator RMSprop update
    with the 3DGAN loss terms (BCE + 0.1 MAPE energy), gradients and BatchNorm statistics reduced."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from hepgan.train.state import fresh_rngs

    (g_graph, g_rest), (d_graph, d_rest) = players

    def bce(logit: jax.Array, label: float) -> jax.Array:
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logit, jnp.full(logit.shape, label, jnp.float32)))

    def mape(pred: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean(jnp.abs(pred - target) / jnp.maximum(jnp.abs(target), 1e-7))

    def run_g(gp, gbs, z):
        g = nnx.merge(
            g_graph,
            jax.tree.map(lambda a: a, gp),
            jax.tree.map(lambda a: a, gbs),
            fresh_rngs(g_rest, jax.random.key(0)),
        )
        g.train()
        return g(z), nnx.state(g, nnx.BatchStat)

    def run_d(dp, dbs, x, key):
        d = nnx.merge(
            d_graph, jax.tree.map(lambda a: a, dp), jax.tree.map(lambda a: a, dbs), fresh_rngs(d_rest, key)
        )
        d.train()
        return d(x), nnx.state(d, nnx.BatchStat)

    def step(state: dict[str, Any], batch: dict[str, jax.Array]) -> tuple[dict[str, Any], dict[str, Any]]:
        key = reducer.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"]))
        kz, kd1, kd2, kz2 = jax.random.split(key, 4)
        e = batch["energy"]
        b = e.shape[0]  # the worker's share (shard_map, mpi) or the global batch (xla)
        z = jax.random.normal(kz, (b, latent_dim)) * e[:, None]
        fake, _ = run_g(state["g"], state["g_bs"], z)
        fake = jax.lax.stop_gradient(fake)

        def d_loss(dp, dbs):
            out_r, dbs = run_d(dp, dbs, batch["ecal"], kd1)
            out_f, dbs = run_d(dp, dbs, fake, kd2)
            loss = (
                2 * bce(out_r["logit"], 1.0) + 2 * bce(out_f["logit"], 0.0) + 0.1 * mape(out_r["energy"], e)
            )
            return loss, dbs

        (dl, d_bs), dg = jax.value_and_grad(d_loss, has_aux=True)(reducer.local(state["d"]), state["d_bs"])
        dg, d_gns = reducer.grads(dg, local_batch)
        du, d_opt = tx.update(dg, state["d_opt"], state["d"])
        d_new = optax.apply_updates(state["d"], du)

        z2 = jax.random.normal(kz2, (b, latent_dim)) * e[:, None]

        def g_loss(gp, gbs):
            x, gbs = run_g(gp, gbs, z2)
            out, _ = run_d(d_new, d_bs, x, kd1)
            return 2 * bce(out["logit"], 1.0) + 0.1 * mape(out["energy"], e), gbs

        (gl, g_bs), gg = jax.value_and_grad(g_loss, has_aux=True)(reducer.local(state["g"]), state["g_bs"])
        gg, g_gns = reducer.grads(gg, local_batch)
        gu, g_opt = tx.update(gg, state["g_opt"], state["g"])
        new = {
            "g": optax.apply_updates(state["g"], gu),
            "d": d_new,
            "g_bs": reducer.mean(g_bs),
            "d_bs": reducer.mean(d_bs),
            "g_opt": g_opt,
            "d_opt": d_opt,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        metrics = reducer.mean({"d_loss": dl, "g_loss": gl})
        metrics.update({f"d_{k}": v for k, v in d_gns.items()})
        metrics.update({f"g_{k}": v for k, v in g_gns.items()})
        return new, metrics

    return step


def worker(a: argparse.Namespace) -> dict[str, Any]:
    """Time one configuration in this process (all ranks of an mpirun call it); rank 0's dict is the
    result (others return theirs too, unused)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from hepgan.data.pipeline import Pipeline, Preprocess
    from hepgan.data.source import ArraySource
    from hepgan.data.types import Showers
    from hepgan.models import ModelConfig, build
    from hepgan.parallel import ParallelConfig, mpi_mean, setup
    from hepgan.parallel.mesh import AXIS

    par = setup(
        ParallelConfig(
            backend=a.backend,
            devices=None if a.backend == "mpi" else a.devices,
            mpi_reduce=a.mpi_reduce,
            launcher="none",
        )
    )
    workers = par.workers
    local = a.per_device_batch
    global_batch = local * workers
    mcfg = ModelConfig(arch="fixed25", size=a.size, conv_impl=a.conv_impl)
    g, d = build(mcfg, nnx.Rngs(0))
    g_graph, g_params, g_bs, g_rest = nnx.split(g, nnx.Param, nnx.BatchStat, ...)  # type: ignore[misc]
    d_graph, d_params, d_bs, d_rest = nnx.split(d, nnx.Param, nnx.BatchStat, ...)  # type: ignore[misc]
    tx = optax.rmsprop(1e-3, decay=0.9, eps=1e-7, eps_in_sqrt=False)
    latent_dim = int(mcfg.resolve().latent_dim)
    state = {
        "g": g_params,
        "d": d_params,
        "g_bs": g_bs,
        "d_bs": d_bs,
        "g_opt": tx.init(g_params),
        "d_opt": tx.init(d_params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(1)),
    }
    n_params = {
        "g": int(sum(x.size for x in jax.tree.leaves(g_params))),
        "d": int(sum(x.size for x in jax.tree.leaves(d_params))),
    }
    step_fn = _bench_step(((g_graph, g_rest), (d_graph, d_rest)), tx, par.reducer, local, latent_dim)
    step = par.compile(step_fn)
    state = par.place_state(state)

    # Input: random showers in memory, read through the real pipeline (preprocess, shard, prefetch).
    rng = np.random.default_rng(0)
    n_ev = global_batch * 4
    showers = Showers(
        ecal=rng.gamma(0.3, 0.02, size=(n_ev, 25, 25, 25)).astype(np.float32),
        energy=rng.uniform(10, 500, size=n_ev).astype(np.float32),
    )
    pipe = Pipeline(
        ArraySource(showers),
        global_batch,
        Preprocess.for_model("fixed25"),
        seed=0,
        prefetch=2,
        **par.pipeline_args(),
    )

    def one_step(i: int) -> tuple[float, float]:
        nonlocal state
        t0 = time.perf_counter()
        with jax.profiler.TraceAnnotation("input"):
            batch = next(pipe)
            jax.block_until_ready(batch)
        t1 = time.perf_counter()
        with jax.profiler.StepTraceAnnotation("train", step_num=i):
            state, m = step(state, batch)
            jax.block_until_ready(m)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t0

    t_compile = time.perf_counter()
    for i in range(a.warmup):
        one_step(i)
    t_compile = time.perf_counter() - t_compile
    if a.profile:
        with jax.profiler.trace(a.profile):
            for i in range(3):
                one_step(a.warmup + i)
    waits, totals = [], []
    for i in range(a.steps):
        w, t = one_step(a.warmup + 10 + i)
        waits.append(w)
        totals.append(t)
    pipe.close()

    # Reduction alone: the step's all-reduces (one per player) on buffers of the gradients' shapes.
    grads = {"g": jax.tree.map(jnp.zeros_like, g_params), "d": jax.tree.map(jnp.zeros_like, d_params)}
    red_time = 0.0
    if workers > 1 and a.backend == "mpi":
        red = jax.jit(
            lambda t: (mpi_mean(t["g"], flat=par.reducer.flat), mpi_mean(t["d"], flat=par.reducer.flat))
        )
        red_time = _median_time(lambda: jax.block_until_ready(red(grads)), a.steps * 3, par.barrier)
    elif workers > 1:
        from jax.sharding import PartitionSpec as P

        stacked = jax.device_put(
            jax.tree.map(lambda x: jnp.broadcast_to(x, (workers, *x.shape)), grads),
            jax.sharding.NamedSharding(par.mesh, P(AXIS)),
        )

        def pmean_both(t: Any) -> Any:
            return (jax.lax.pmean(t["g"], AXIS), jax.lax.pmean(t["d"], AXIS))

        red = jax.jit(jax.shard_map(pmean_both, mesh=par.mesh, in_specs=P(AXIS), out_specs=P(AXIS)))
        red_time = _median_time(lambda: jax.block_until_ready(red(stacked)), a.steps * 3, None)
    step_time = statistics.median(totals)
    wait = statistics.median(waits)
    return {
        "backend": a.backend,
        "workers": workers,
        "per_device_batch": local,
        "global_batch": global_batch,
        "size": a.size,
        "conv_impl": a.conv_impl,
        "mpi_reduce": ("flat" if par.reducer.flat else "tree") if a.backend == "mpi" else None,
        "params": n_params,
        "bytes_reduced_per_step": 4 * (n_params["g"] + n_params["d"]) if workers > 1 else 0,
        "allreduce_calls_per_step": _calls(a.backend, par.reducer.flat, g_params, d_params)
        if workers > 1
        else 0,
        "step_s": step_time,
        "step_s_all": totals,
        "input_wait_s": wait,
        "reduce_s": red_time,
        "compute_s": max(step_time - wait - red_time, 0.0),
        "throughput_per_s": global_batch / step_time,
        "compile_and_warmup_s": t_compile,
        "rank": par.process_index,
    }


def _calls(backend: str, flat: bool, g_params: Any, d_params: Any) -> int:
    import jax

    if backend == "mpi" and flat:
        return 2
    return len(jax.tree.leaves(g_params)) + len(jax.tree.leaves(d_params))


def _median_time(fn: Any, n: int, sync: Any) -> float:
    fn()
    times = []
    for _ in range(n):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------------
# Driver: launch the configurations, derive efficiencies, plot
# ----------------------------------------------------------------------------------------------------


def _launch(
    backend: str,
    n: int,
    per_device_batch: int,
    *,
    size: str,
    conv_impl: str,
    steps: int,
    warmup: int,
    mpi_reduce: str = "flat",
    profile: str | None = None,
    timeout: float = 1200,
) -> dict[str, Any]:
    """Run one configuration in fresh processes pinned to cores ``0..n-1``; returns rank 0's result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        args = [
            "-m",
            "hepgan.bench.scaling",
            "worker",
            "--backend",
            backend,
            "--devices",
            str(n),
            "--per-device-batch",
            str(per_device_batch),
            "--size",
            size,
            "--conv-impl",
            conv_impl,
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--mpi-reduce",
            mpi_reduce,
            "--json",
            str(out),
        ]
        if profile:
            args += ["--profile", profile]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        taskset = shutil.which("taskset")
        cores = min(n, os.cpu_count() or 1)
        if backend == "mpi":
            env["XLA_FLAGS"] = ONE_THREAD
            mpirun = Path(sys.executable).parent / "mpirun"
            pin = (
                f"taskset -c $(( ${{PMI_RANK:-${{OMPI_COMM_WORLD_RANK:-0}}}} % {cores} )) " if taskset else ""
            )
            inner = pin + " ".join([sys.executable, *args])
            cmd = [str(mpirun), "-n", str(n), "sh", "-c", inner]
        else:
            # The device count first: XLA stops reading at the bare "intra_op_parallelism_threads=1".
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n} {ONE_THREAD}"
            cmd = [sys.executable, *args]
            if taskset:
                cmd = [taskset, "-c", f"0-{cores - 1}", *cmd]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"scaling worker {backend} x{n} failed:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def run(quick: bool = False, profile: str | None = None) -> dict[str, Any]:
    """Weak and strong scaling on this machine's cores for the xla, shard_map and mpi backends.

    ``quick``: the tiny model, 2 workers, a few steps (a smoke run); else the paper fixed-angle model.
    Returns the JSON-able result (configurations, per-step times, efficiencies, machine load).
    """
    size = "tiny" if quick else "paper"
    per_dev = 4 if quick else 8
    steps, warmup = (3, 1) if quick else (8, 2)
    counts = [n for n in (2, 4, 8) if n <= (os.cpu_count() or 1)] or [2]
    if quick:
        counts = counts[:1]
    kw: dict[str, Any] = {"size": size, "conv_impl": "auto", "steps": steps, "warmup": warmup}
    load_before = os.getloadavg()
    base = _launch("xla", 1, per_dev, **kw)
    runs: list[dict[str, Any]] = []
    for n in counts:
        for backend, red in (("mpi", "flat"), ("mpi", "tree"), ("shard_map", "flat"), ("xla", "flat")):
            if quick and red == "tree":
                continue
            r = _launch(backend, n, per_dev, mpi_reduce=red, **kw)  # weak: per-device batch fixed
            r["mode"] = "weak"
            r["efficiency"] = base["step_s"] / r["step_s"]
            runs.append(r)
        for backend in ("mpi", "xla"):  # strong: the single worker's global batch split n ways
            if per_dev % n:
                continue
            r = _launch(backend, n, per_dev // n, **kw)
            r["mode"] = "strong"
            r["efficiency"] = base["step_s"] / (n * r["step_s"])
            runs.append(r)
    if profile:
        _launch("shard_map", counts[0], per_dev, profile=profile, **{**kw, "steps": 1})
    return {
        "model": {"arch": "fixed25", "size": size, "conv_impl": "auto"},
        "threads_per_worker": 1,
        "baseline": base,
        "runs": runs,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "notes": (
            "weak efficiency = T_1 / T_N at fixed per-device batch; strong = T_1 / (N T_N) at fixed global "
            "batch; reduce_s times the step's two all-reduces alone; compute_s = step - input wait - reduce"
        ),
    }


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Throughput and efficiency per backend and worker count, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
    base = result["baseline"]
    labels, effs, thr, comp, red, wait = [], [], [], [], [], []
    for r in result["runs"]:
        red_mode = "/" + r["mpi_reduce"] if r.get("mpi_reduce") else ""
        lab = f"{r['mode']}\n{r['backend']}{red_mode} x{r['workers']}"
        labels.append(lab)
        effs.append(100 * r["efficiency"])
        thr.append(r["throughput_per_s"])
        comp.append(r["compute_s"])
        red.append(r["reduce_s"])
        wait.append(r["input_wait_s"])
    x = range(len(labels))
    ax1.bar(x, effs, color="tab:blue")
    ax1.axhline(95, color="k", ls="--", lw=0.8)
    ax1.set_ylabel("parallel efficiency [%]")
    ax2.bar(x, thr, color="tab:green")
    ax2.axhline(base["throughput_per_s"], color="k", ls="--", lw=0.8, label="1 worker")
    ax2.set_ylabel("throughput [showers/s]")
    ax2.legend()
    ax3.bar(x, comp, label="compute")
    ax3.bar(x, red, bottom=comp, label="reduction")
    ax3.bar(x, wait, bottom=[c + r for c, r in zip(comp, red, strict=True)], label="input wait")
    ax3.set_ylabel("time per step [s]")
    ax3.legend()
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(list(x), labels, fontsize=6)
    m = result["model"]
    fig.suptitle(f"3DGAN {m['arch']} {m['size']}: data-parallel scaling, 1 thread per worker")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m hepgan.bench.scaling [--quick] [--out DIR] [--profile DIR]`` or the internal ``worker``."""
    p = argparse.ArgumentParser(prog="hepgan.bench.scaling", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    w = sub.add_parser("worker", help="(internal) time one configuration")
    w.add_argument("--backend", choices=["xla", "shard_map", "mpi"], required=True)
    w.add_argument("--devices", type=int, default=1)
    w.add_argument("--per-device-batch", type=int, default=8)
    w.add_argument("--size", default="paper")
    w.add_argument("--conv-impl", default="auto")
    w.add_argument("--steps", type=int, default=8)
    w.add_argument("--warmup", type=int, default=2)
    w.add_argument("--mpi-reduce", choices=["flat", "tree"], default="flat")
    w.add_argument("--profile", default=None)
    w.add_argument("--json", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="experiments/scaling")
    p.add_argument("--profile", default=None, help="also write a JAX trace of a few shard_map steps here")
    a = p.parse_args(argv)
    if a.cmd == "worker":
        res = worker(a)
        if res["rank"] == 0:
            Path(a.json).write_text(json.dumps(res))
        return 0
    from hepgan.bench.common import write_result

    result = run(quick=a.quick, profile=a.profile)
    path = write_result("scaling", result, a.out)
    print(f"wrote {path} and {plot(result, Path(a.out) / 'scaling.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
