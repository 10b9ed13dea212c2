"""Weak and strong scaling of data-parallel GAN training over device counts and reduction backends.

Each configuration runs in its own process tree (the device count of a CPU run is fixed when JAX starts):

- ``xla`` / ``shard_map``: one process with ``N`` simulated CPU devices, allowed cores ``0..N-1``;
- ``mpi``: ``mpirun -n N``, one single-device process per core;
- baseline: one process, one device, one core.

Every process runs with one compute thread (``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``) so that ``N`` workers on ``N`` cores are comparable with one worker on
one core. The workers inherit the driver's environment apart from ``XLA_FLAGS`` and ``JAX_PLATFORMS``
(e.g. a ``GLIBC_TUNABLES`` malloc setting applies to every worker, the baseline's included). Per step
the worker reports the wall time, the input-pipeline wait (time blocked in ``next(pipeline)``), the
gradient-reduction time (the step's all-reduces on gradient-sized buffers, timed alone) and the compute
time (step minus reduction); the driver adds throughput and parallel efficiency: weak scaling (fixed
per-device batch) ``T_1 / T_N``, strong scaling (fixed global batch) ``T_1 / (N T_N)``.

The step is the trainer's own update (:func:`hepgan.train.step.make_step`) of the fixed-angle 3DGAN with
the ``optim`` defaults, fed by the trainer's input pipeline. With the paper schedule a step makes two
discriminator and two generator optimizer updates: four gradient all-reduces (2 x D + 2 x G parameters),
plus the BatchNorm statistics, metrics and gradient-noise-scale norms (a few hundred bytes).

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


def worker(a: argparse.Namespace) -> dict[str, Any]:
    """Time one configuration in this process (all ranks of an mpirun call it); rank 0's dict is the
    result (others return theirs too, unused).

    The step is the trainer's own update (:func:`hepgan.train.step.make_step`, the ``optim`` defaults:
    Keras RMSprop), fed by the trainer's input pipeline, so the benchmark measures what ``hepgan-train``
    runs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hepgan.data.source import ArraySource, Sources
    from hepgan.data.types import Showers
    from hepgan.parallel import ParallelConfig, mpi_mean, setup
    from hepgan.parallel.mesh import AXIS
    from hepgan.train.config import compose
    from hepgan.train.run import build_run

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
    # Input: random showers in memory, read through the real pipeline (preprocess, shard, prefetch).
    rng = np.random.default_rng(0)
    n_ev = global_batch * 4
    showers = Showers(
        ecal=rng.gamma(0.3, 0.02, size=(n_ev, 25, 25, 25)).astype(np.float32),
        energy=rng.uniform(10, 500, size=n_ev).astype(np.float32),
    )
    # The paper's fixed-angle update at this size, batch and schedule, assembled as training assembles it
    cfg = compose(
        [
            "experiment=paper_fixed25",
            f"model.size={a.size}",
            f"model.conv_impl={a.conv_impl}",
            f"train.batch_size={global_batch}",
            f"train.schedule={a.schedule}",
            "train.seed=1",
            "data.prefetch=2",
        ]
    )
    run = build_run(cfg, parallel=par, sources=Sources(ArraySource(showers), ArraySource(showers)))
    state, step, pipe = run.state, run.step, run.pipeline
    assert pipe is not None
    per_step = run.updates_per_step
    g_params, d_params = state.g.params, state.d.params
    n_params = {
        "g": int(sum(x.size for x in jax.tree.leaves(g_params))),
        "d": int(sum(x.size for x in jax.tree.leaves(d_params))),
    }

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

    # Reduction alone: the step's gradient all-reduces (one per player and optimizer update) on buffers
    # of the gradients' shapes, in one jitted program as in the step.
    grads = {"g": jax.tree.map(jnp.zeros_like, g_params), "d": jax.tree.map(jnp.zeros_like, d_params)}

    def all_grads(t: Any, mean: Any) -> Any:
        return [mean(t[p]) for p in ("d", "g") for _ in range(per_step[p])]

    red_time = 0.0
    if workers > 1 and a.backend == "mpi":
        red = jax.jit(lambda t: all_grads(t, lambda x: mpi_mean(x, flat=par.reducer.flat)))
        red_time = _median_time(lambda: jax.block_until_ready(red(grads)), a.steps * 3, par.barrier)
    elif workers > 1:
        from jax.sharding import PartitionSpec as P

        stacked = jax.device_put(
            jax.tree.map(lambda x: jnp.broadcast_to(x, (workers, *x.shape)), grads),
            jax.sharding.NamedSharding(par.mesh, P(AXIS)),
        )
        red = jax.jit(
            jax.shard_map(
                lambda t: all_grads(t, lambda x: jax.lax.pmean(x, AXIS)),
                mesh=par.mesh,
                in_specs=P(AXIS),
                out_specs=P(AXIS),
            )
        )
        red_time = _median_time(lambda: jax.block_until_ready(red(stacked)), a.steps * 3, None)
    step_time = statistics.median(totals)
    wait = statistics.median(waits)
    reduced = per_step["g"] * n_params["g"] + per_step["d"] * n_params["d"]
    return {
        "backend": a.backend,
        "workers": workers,
        "per_device_batch": local,
        "global_batch": global_batch,
        "size": a.size,
        "conv_impl": a.conv_impl,
        "schedule": a.schedule,
        "mpi_reduce": ("flat" if par.reducer.flat else "tree") if a.backend == "mpi" else None,
        "params": n_params,
        "gradient_allreduces_per_step": per_step,
        "bytes_reduced_per_step": 4 * reduced if workers > 1 else 0,
        "allreduce_calls_per_step": _calls(a.backend, par.reducer.flat, g_params, d_params, per_step)
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


def _calls(backend: str, flat: bool, g_params: Any, d_params: Any, per_step: dict[str, int]) -> int:
    """Gradient all-reduce calls per step (shard_map: XLA may combine them; counted before that)."""
    import jax

    if backend == "mpi" and flat:
        return per_step["g"] + per_step["d"]
    return per_step["g"] * len(jax.tree.leaves(g_params)) + per_step["d"] * len(jax.tree.leaves(d_params))


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
    """Run one configuration in fresh processes pinned to cores ``0..n-1``; returns rank 0's result.
    The workers inherit this process's environment, apart from ``JAX_PLATFORMS=cpu`` and their own
    ``XLA_FLAGS`` (device count, one compute thread).

    ``backend="independent"``: ``n`` single-device workers started together, each on its own core, that
    never communicate; returns the first one's result with ``step_s`` the mean of all ``n`` medians.
    """
    independent = backend == "independent"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        args = [
            "-m",
            "hepgan.bench.scaling",
            "worker",
            "--backend",
            "xla" if independent else backend,
            "--devices",
            "1" if independent else str(n),
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
        if independent:
            args += ["--independent"]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        taskset = shutil.which("taskset")
        cores = min(n, os.cpu_count() or 1)
        if backend in ("mpi", "independent"):
            # mpirun also starts the independent workers: the same start-up and pinning as mpi ranks
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
        if not independent:
            return json.loads(out.read_text())
        each = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(n)]
        res = {**each[0], "backend": "independent", "workers": n, "global_batch": n * per_device_batch}
        res["step_s"] = statistics.fmean(r["step_s"] for r in each)
        res["step_s_each"] = [r["step_s"] for r in each]
        res["throughput_per_s"] = res["global_batch"] / res["step_s"]
        return res


def per_device_batch_or_default(per_device_batch: int | None, quick: bool) -> int:
    """The showers per worker and step of a benchmark run: ``per_device_batch``, else 8 (4 with
    ``quick``). Raises ``ValueError`` below 1, before anything is launched."""
    batch = (4 if quick else 8) if per_device_batch is None else per_device_batch
    if batch < 1:
        raise ValueError(f"scaling benchmark: per_device_batch must be at least 1; got {batch}")
    return batch


def run(
    quick: bool = False,
    profile: str | None = None,
    repeats: int = 3,
    per_device_batch: int | None = None,
) -> dict[str, Any]:
    """Weak and strong scaling on this machine's cores for the xla, shard_map and mpi backends.

    ``quick``: the tiny model, 2 workers, a few steps (a smoke run); else the paper fixed-angle model.
    ``repeats``: how often the weak-scaling configurations of the goal (non-communicating workers, mpi,
    shard_map) are measured, each time paired with a fresh baseline; the rest once. The summary gives
    each configuration's median efficiency over its repeats with the smallest and largest.
    ``per_device_batch``: showers per worker and step in weak scaling, and the one-worker batch that
    strong scaling splits (default 8; 4 with ``quick``).
    Returns the JSON-able result (configurations, per-step times, efficiencies, summary, machine load).
    """
    size = "tiny" if quick else "paper"
    per_dev = per_device_batch_or_default(per_device_batch, quick)
    steps, warmup = (3, 1) if quick else (8, 2)
    repeats = 1 if quick else max(1, repeats)
    counts = [n for n in (2, 4, 8) if n <= (os.cpu_count() or 1)] or [2]
    if quick:
        counts = counts[:1]
    kw: dict[str, Any] = {
        "size": size,
        "conv_impl": "auto",
        "steps": steps,
        "warmup": warmup,
    }
    load_before = os.getloadavg()
    baselines: list[dict[str, Any]] = []

    def paired(backend: str, n: int, per_device: int, mode: str, repeat: int, **extra: Any) -> dict[str, Any]:
        # A fresh baseline right before each configuration: on a shared machine the speed drifts over
        # minutes, and a ratio of two adjacent measurements cancels most of that drift.
        b = _launch("xla", 1, per_dev, **kw)
        baselines.append(b)
        r = _launch(backend, n, per_device, **extra, **kw)
        r["mode"], r["repeat"] = mode, repeat
        r["baseline_step_s"] = b["step_s"]
        weak = mode in ("weak", "independent")
        r["efficiency"] = b["step_s"] / r["step_s"] if weak else b["step_s"] / (n * r["step_s"])
        return r

    goal = [("mpi", "flat"), ("mpi", "tree"), ("shard_map", "flat")]
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        for n in counts:
            # n workers that never communicate: what sharing the machine alone costs (caches, memory
            # bandwidth, other users), the ceiling of any data-parallel backend on these cores
            ind = paired("independent", n, per_dev, "independent", rep)
            runs.append(ind)
            backends = goal + ([("xla", "flat")] if rep == 0 else [])
            for backend, red in backends:
                if quick and red == "tree":
                    continue
                r = paired(backend, n, per_dev, "weak", rep, mpi_reduce=red)  # per-device batch fixed
                r["efficiency_vs_independent"] = r["efficiency"] / ind["efficiency"]
                runs.append(r)
            for backend in ("mpi", "xla") if rep == 0 else ():  # strong: 1 worker's batch split n ways
                if per_dev % n:
                    continue
                runs.append(paired(backend, n, per_dev // n, "strong", rep))
    base = baselines[0]
    if profile:
        _launch("shard_map", counts[0], per_dev, profile=profile, **{**kw, "steps": 1})
    return {
        "model": {
            "arch": "fixed25",
            "size": size,
            "conv_impl": "auto",
            "schedule": "paper",
            "step": "hepgan.train.step.make_step",
        },
        "threads_per_worker": 1,
        "per_device_batch": per_dev,
        "repeats": repeats,
        "baseline": base,
        "baseline_step_s_all": [b["step_s"] for b in baselines],
        "runs": runs,
        "summary": summarize(runs),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "notes": (
            "each configuration is paired with a 1-worker baseline measured just before it "
            "(baseline_step_s = T_1); weak efficiency = T_1 / T_N at fixed per-device batch; strong = "
            "T_1 / (N T_N) at fixed global batch; independent = N non-communicating single-device workers "
            "at once (the machine's own ceiling); efficiency_vs_independent = weak efficiency / the "
            "independent one of the same repeat; reduce_s times the step's gradient all-reduces alone; "
            "compute_s = step - input wait - reduce; summary: median (min, max) over the repeats, and "
            "efficiency_pooled = median of all baselines / the configuration's median step time"
        ),
    }


def _label(r: dict[str, Any]) -> str:
    if r["mode"] == "independent":
        return f"independent x{r['workers']}"
    red = f"/{r['mpi_reduce']}" if r.get("mpi_reduce") else ""
    return f"{r['mode']} {r['backend']}{red} x{r['workers']}"


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration (mode, backend, reduction, workers): the efficiencies of its repeats, their
    median, smallest and largest, and the median step, reduction and input-wait times in seconds.

    ``efficiency_pooled`` compares medians instead of pairs: the median of every baseline of the run
    (``baseline_step_s`` of all runs) over this configuration's median step time (strong scaling: times
    the workers). One unusually slow or fast baseline moves a paired efficiency but hardly the pooled
    one; drift over the run moves the pooled one more."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_label(r), []).append(r)
    t1 = statistics.median(r["baseline_step_s"] for r in runs) if runs else float("nan")
    out = []
    for label, rs in groups.items():
        effs = [r["efficiency"] for r in rs]
        step = statistics.median(r["step_s"] for r in rs)
        workers = rs[0]["workers"] if rs[0]["mode"] == "strong" else 1
        out.append(
            {
                "configuration": label,
                "mode": rs[0]["mode"],
                "backend": rs[0]["backend"],
                "mpi_reduce": rs[0].get("mpi_reduce"),
                "workers": rs[0]["workers"],
                "global_batch": rs[0]["global_batch"],
                "efficiency": effs,
                "efficiency_median": statistics.median(effs),
                "efficiency_min": min(effs),
                "efficiency_max": max(effs),
                "efficiency_pooled": t1 / (workers * step),
                "step_s_median": step,
                "reduce_s_median": statistics.median(r["reduce_s"] for r in rs),
                "input_wait_s_median": statistics.median(r["input_wait_s"] for r in rs),
                "bytes_reduced_per_step": rs[0]["bytes_reduced_per_step"],
                "allreduce_calls_per_step": rs[0]["allreduce_calls_per_step"],
            }
        )
    return out


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Throughput and efficiency per backend and worker count, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
    base = result["baseline"]
    summary = result.get("summary") or summarize(result["runs"])
    labels = [c["configuration"].replace(" ", "\n", 1) for c in summary]  # mode above backend
    effs = [100 * c["efficiency_median"] for c in summary]
    err = [
        [100 * (c["efficiency_median"] - c["efficiency_min"]) for c in summary],
        [100 * (c["efficiency_max"] - c["efficiency_median"]) for c in summary],
    ]
    thr = [c["global_batch"] / c["step_s_median"] for c in summary]
    wait = [c["input_wait_s_median"] for c in summary]
    red = [c["reduce_s_median"] for c in summary]
    comp = [max(c["step_s_median"] - w - r, 0.0) for c, w, r in zip(summary, wait, red, strict=True)]
    x = range(len(labels))
    ax1.bar(x, effs, yerr=err, capsize=3, color="tab:blue")
    ax1.axhline(95, color="k", ls="--", lw=0.8)
    ax1.set_ylabel(f"parallel efficiency [%]\n(median and range over {result.get('repeats', 1)} repeats)")
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
    w.add_argument("--schedule", choices=["paper", "n_critic", "simultaneous"], default="paper")
    w.add_argument("--profile", default=None)
    w.add_argument("--json", required=True)
    w.add_argument(
        "--independent", action="store_true", help="(with mpirun) write JSON.RANK, no communication"
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="experiments/scaling")
    p.add_argument("--profile", default=None, help="also write a JAX trace of a few shard_map steps here")
    p.add_argument(
        "--repeats", type=int, default=3, help="paired repeats of the goal's weak-scaling configurations"
    )
    p.add_argument(
        "--per-device-batch",
        type=int,
        default=None,
        help="showers per worker and step (weak; strong scaling splits it); default 8, 4 with --quick",
    )
    a = p.parse_args(argv)
    if a.cmd == "worker":
        res = worker(a)
        if a.independent:
            rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
            Path(f"{a.json}.{rank}").write_text(json.dumps(res))
        elif res["rank"] == 0:
            Path(a.json).write_text(json.dumps(res))
        return 0
    from hepgan.bench.common import write_result

    result = run(
        quick=a.quick,
        profile=a.profile,
        repeats=a.repeats,
        per_device_batch=a.per_device_batch,
    )
    path = write_result("scaling", result, a.out)
    for c in result["summary"]:
        effs = ", ".join(f"{100 * e:.1f}" for e in c["efficiency"])
        print(f"{c['configuration']:28s} efficiency median {100 * c['efficiency_median']:5.1f} %  ({effs})")
    print(f"wrote {path} and {plot(result, Path(a.out) / 'scaling.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
