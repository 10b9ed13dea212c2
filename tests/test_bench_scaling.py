"""The scaling benchmark's worker (``hepgan.bench.scaling``): it drives the trainer's step and accounts
for what the step reduces. Speed itself is measured by ``hepgan-bench scaling``, never asserted here."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import jax
import pytest
from flax import nnx

from hepgan.bench import scaling
from hepgan.bench.scaling import _launch, run, summarize, worker
from hepgan.models import ModelConfig, build


def _args(backend: str, devices: int, schedule: str) -> argparse.Namespace:
    return argparse.Namespace(
        backend=backend,
        devices=devices,
        per_device_batch=2,
        size="tiny",
        conv_impl="fft",
        steps=1,
        warmup=1,
        mpi_reduce="flat",
        schedule=schedule,
        profile=None,
        json="unused",
    )


def _count(module: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_worker_runs_the_real_step_and_counts_the_reduced_bytes():
    g, d = build(ModelConfig(arch="fixed25", size="tiny"), nnx.Rngs(0))
    n_g, n_d = _count(g), _count(d)
    r = worker(_args("shard_map", 2, "paper"))
    assert (r["workers"], r["global_batch"]) == (2, 4)
    assert r["params"] == {"g": n_g, "d": n_d}
    # paper schedule: two discriminator and two generator updates, each one fp32 all-reduce of the grads
    assert r["gradient_allreduces_per_step"] == {"d": 2, "g": 2}
    assert r["bytes_reduced_per_step"] == 4 * (2 * n_g + 2 * n_d)
    assert r["step_s"] > 0 and r["reduce_s"] > 0 and r["compute_s"] >= 0
    assert r["throughput_per_s"] == r["global_batch"] / r["step_s"]

    one = worker(_args("xla", 1, "simultaneous"))
    assert one["gradient_allreduces_per_step"] == {"d": 1, "g": 1}
    assert one["bytes_reduced_per_step"] == 0 and one["reduce_s"] == 0.0  # nothing to reduce on 1 worker


def test_launch_gives_the_workers_this_environment_with_their_own_xla_flags(monkeypatch):
    # What runs a worker is recorded instead of run: the environment a user sets for the benchmark
    # (e.g. a malloc setting) reaches every worker; XLA_FLAGS is the driver's own.
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=unused")
    monkeypatch.setattr(scaling.shutil, "which", lambda name: "/usr/bin/taskset")
    monkeypatch.setattr(scaling.os, "cpu_count", lambda: 8)
    seen = []

    def fake_run(cmd, env, **kw):
        seen.append((cmd, env))
        Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps({"step_s": 1.0}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(scaling.subprocess, "run", fake_run)
    assert _launch("shard_map", 2, 4, size="tiny", conv_impl="fft", steps=1, warmup=1) == {"step_s": 1.0}
    ((cmd, env),) = seen
    assert cmd[:3] == ["/usr/bin/taskset", "-c", "0-1"]
    assert cmd[cmd.index("--backend") + 1] == "shard_map" and cmd[cmd.index("--devices") + 1] == "2"
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=1"
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {scaling.ONE_THREAD}"
    assert env["JAX_PLATFORMS"] == "cpu"


def test_summary_median_and_range_over_repeats():
    base = {"backend": "mpi", "mpi_reduce": "flat", "workers": 2, "global_batch": 16, "mode": "weak"}
    base |= {"reduce_s": 0.004, "input_wait_s": 0.001, "bytes_reduced_per_step": 8}
    base["allreduce_calls_per_step"] = 4
    runs = [
        {**base, "efficiency": e, "step_s": t, "baseline_step_s": b}
        for e, t, b in ((0.9, 2.3, 2.0), (0.99, 2.1, 2.2), (0.96, 2.2, 2.1))
    ]
    runs.append({**base, "mpi_reduce": "tree", "efficiency": 0.5, "step_s": 4.0, "baseline_step_s": 1.9})
    runs.append({**base, "mode": "strong", "efficiency": 0.8, "step_s": 1.25, "baseline_step_s": 2.05})
    flat, tree, strong = summarize(runs)
    assert flat["configuration"] == "weak mpi/flat x2" and flat["efficiency"] == [0.9, 0.99, 0.96]
    assert (flat["efficiency_median"], flat["efficiency_min"], flat["efficiency_max"]) == (0.96, 0.9, 0.99)
    assert flat["step_s_median"] == 2.2 and tree["efficiency"] == [0.5]
    # pooled: the median of all five baselines (2.05 s) over the configuration's median step time
    assert flat["efficiency_pooled"] == pytest.approx(2.05 / 2.2)
    assert tree["efficiency_pooled"] == pytest.approx(2.05 / 4.0)
    assert strong["configuration"] == "strong mpi/flat x2"
    assert strong["efficiency_pooled"] == pytest.approx(2.05 / (2 * 1.25))


@pytest.mark.parametrize("batch", [0, -4])
def test_driver_rejects_a_batch_below_one_before_launching_anything(batch):
    with pytest.raises(ValueError, match="per_device_batch must be at least 1"):
        run(per_device_batch=batch)
