"""The scaling benchmark's worker (``hepgan.bench.scaling``): it drives the trainer's step and accounts
for what the step reduces. Speed itself is measured by ``hepgan-bench scaling``, never asserted here."""

from __future__ import annotations

import argparse

import jax
from flax import nnx

from hepgan.bench.scaling import worker
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
