"""The scaling benchmark's worker (``hepgan.bench.scaling``): it drives the trainer's step and accounts
for what the step reduces. Speed itself is measured by ``hepgan-bench scaling``, never asserted here."""

from __future__ import annotations

import argparse
import os
import sys

import jax
import pytest
from flax import nnx

from hepgan.bench.scaling import KEEP_MEMORY, _launch, run, summarize, worker
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
        pin_threads=False,  # never re-pin this test process's own threads
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


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2, reason="thread pinning: Linux, 2 cores"
)
def test_shard_map_worker_pins_one_compute_thread_per_core():
    # A fresh process as the driver starts it (one XLA thread per device, cores 0-1): each device's
    # compute thread, found by its CPU time in warm-up, gets a core of its own.
    r = _launch("shard_map", 2, 2, size="tiny", conv_impl="fft", steps=1, warmup=1)
    pinned = r["pinned_threads"]
    assert len(pinned) == 2
    assert sorted(p["core"] for p in pinned) == [0, 1]
    assert len({p["tid"] for p in pinned}) == 2 and all(p["warmup_cpu_ticks"] > 0 for p in pinned)
    # the worker ran with the driver's malloc settings, and counted its page faults
    assert r["glibc_tunables"] == KEEP_MEMORY and r["minor_page_faults_per_step"] >= 0


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
