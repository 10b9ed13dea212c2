"""The CPU layout: one device per usable core with one compute thread each, and backend ``auto``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hepgan.parallel import cpu
from hepgan.parallel.config import ParallelConfig


@pytest.fixture
def cpu_host(monkeypatch):
    """A fresh 4-core CPU host as configure() sees it (no XLA_FLAGS, backend not started)."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setattr(cpu, "usable_cores", lambda: 4)
    monkeypatch.setattr(cpu, "_backends_started", lambda: False)


def test_per_core_asks_for_one_single_threaded_device_per_core(cpu_host):
    got = cpu.configure("per_core", None)
    assert (got.layout, got.devices) == ("per_core", 4)
    flags = os.environ["XLA_FLAGS"]
    assert flags.startswith("--xla_force_host_platform_device_count=4 ")  # the count before the rest
    assert flags.endswith(cpu.ONE_THREAD)
    assert "one compute thread each" in got.reason


def test_per_core_device_count_divides_the_batch_and_follows_the_config(cpu_host):
    assert cpu.configure("per_core", None, global_batch=6).devices == 3
    os.environ.pop("XLA_FLAGS")
    assert cpu.configure("per_core", 2).devices == 2
    os.environ.pop("XLA_FLAGS")
    assert cpu.configure("per_core", None, one_device_per_process=True).devices == 1  # mpi


def test_existing_flags_accelerators_and_shared_are_left_alone(cpu_host, monkeypatch):
    assert cpu.configure("shared", None).layout == "shared" and "XLA_FLAGS" not in os.environ
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert cpu.configure("per_core", None).layout == "kept"
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert cpu.accelerator_host() and cpu.configure("per_core", None).layout == "kept"
    with pytest.raises(ValueError, match=r"parallel\.cpu_layout: unknown 'per_socket'"):
        cpu.configure("per_socket", None)


def test_the_flags_give_jax_that_many_devices_in_a_fresh_process():
    # two cores wanted: on a one-core host the layout still asks for 2 when parallel.devices=2
    code = (
        "import json; from hepgan.parallel.cpu import configure; r = configure('per_core', 2); "
        "import jax; print(json.dumps([r.layout, len(jax.devices())]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["per_core", 2]


def test_auto_backend_is_shard_map_with_global_batchnorm_on_several_cpu_devices():
    from hepgan.parallel import setup

    par = setup(ParallelConfig(devices=2, launcher="none"))
    assert (par.backend, par.cfg.sync_batchnorm, par.workers) == ("shard_map", True, 2)
    one = setup(ParallelConfig(devices=1, launcher="none"))
    assert (one.backend, one.cfg.sync_batchnorm) == ("xla", False)
    with pytest.raises(ValueError, match=r"parallel\.cpu_layout"):
        ParallelConfig(cpu_layout="nope").validate()
