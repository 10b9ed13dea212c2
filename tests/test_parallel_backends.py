"""The three reduction backends give the same update where their semantics agree (fp32 tolerances).

Stand-in: the tiny BatchNorm network of tests/parallel_toy.py (momentum SGD, several steps), so that
a wrong average (a sum where a mean belongs), a missing BatchNorm reduction or equal noise on all workers
shows up in the parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from parallel_toy import init_toy, make_toy_step, toy_data

from hepgan.parallel import Reducer, make_mesh
from hepgan.parallel.config import ParallelConfig
from hepgan.parallel.runtime import Parallel, setup

TOY = Path(__file__).with_name("parallel_toy.py")
STEPS, GLOBAL_BATCH = 4, 16
# fp32: the same sums in a different order (per-device partial sums, then an all-reduce) differ by a few
# ulps per step; momentum carries them over the steps, hence 1e-5 rather than 1e-7.
RTOL, ATOL = 1e-5, 1e-6
# Between separately compiled programs (per-device step vs global step, shard_map vs an mpi process):
# BatchNorm's var = E[x^2] - E[x]^2 cancels, so reordered or differently fused sums give ~1e-6 relative
# errors in the variance, which four momentum steps carry to ~1e-5.
LOOSE_RTOL, LOOSE_ATOL = 1e-4, 2e-5


def _train(
    par: Parallel, *, noise: float = 0.05, bn_axis: str | None = None
) -> tuple[list[np.ndarray], list]:
    graphdef, state, tx = init_toy(bn_axis_name=bn_axis)
    local = GLOBAL_BATCH // par.reducer.workers
    step = par.compile(make_toy_step(graphdef, tx, par.reducer, local, noise=noise))
    state = par.place_state(state)
    data = toy_data(STEPS * GLOBAL_BATCH)
    losses = []
    for i in range(STEPS):
        rows = slice(i * GLOBAL_BATCH, (i + 1) * GLOBAL_BATCH)
        batch = jax.device_put({k: v[rows] for k, v in data.items()}, par.mesh.devices.flat[0])
        if par.backend != "mpi":
            from hepgan.parallel.mesh import shard_batch

            batch = shard_batch({k: v[rows] for k, v in data.items()}, par.mesh)
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    leaves = jax.tree.leaves({"params": state["params"], "batch_stats": state["batch_stats"]})
    return [np.asarray(x) for x in leaves], losses


def _close(a: list[np.ndarray], b: list[np.ndarray], rtol: float = RTOL, atol: float = ATOL) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def test_xla_on_8_devices_equals_one_device():
    assert jax.device_count() >= 8, "conftest provides 8 simulated CPU devices"
    one, l1 = _train(setup(ParallelConfig(backend="xla", devices=1, launcher="none")))
    eight, l8 = _train(setup(ParallelConfig(backend="xla", devices=8, launcher="none")))
    _close(one, eight)
    np.testing.assert_allclose(l1, l8, rtol=RTOL)


def test_shard_map_sync_batchnorm_equals_xla_global_batch():
    # Without per-worker noise the only difference left is where BatchNorm takes its moments; pmean of
    # the moments over the 4 devices gives the global-batch statistics of the xla backend.
    xla, _ = _train(setup(ParallelConfig(backend="xla", devices=4, launcher="none")), noise=0.0)
    cfg = ParallelConfig(backend="shard_map", devices=4, sync_batchnorm=True, launcher="none")
    synced, _ = _train(setup(cfg), noise=0.0, bn_axis="data")
    _close(xla, synced, LOOSE_RTOL, LOOSE_ATOL)


def test_shard_map_local_batchnorm_differs_from_global():
    # The semantics really differ (guards against a test above passing because BN is not exercised).
    xla, _ = _train(setup(ParallelConfig(backend="xla", devices=4, launcher="none")), noise=0.0)
    local, _ = _train(setup(ParallelConfig(backend="shard_map", devices=4, launcher="none")), noise=0.0)
    assert _max_diff(xla, local) > 1e-3


def test_reducer_mean_and_gns_under_shard_map():
    mesh = make_mesh(4)
    red = Reducer("shard_map", workers=4)
    x = jnp.arange(8.0).reshape(4, 2)

    def f(xs):
        mean, gns = red.grads({"w": xs[0]}, local_batch=3)
        return mean["w"], gns["gns_g2"], gns["gns_s"], jnp.reshape(red.index(), (1,))

    rep, split = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("data")
    out = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=split, out_specs=(rep, rep, rep, split)))(x)
    mean, g2, s, idx = (np.asarray(o) for o in out)
    rows = np.arange(8.0).reshape(4, 2)
    np.testing.assert_allclose(mean, rows.mean(0))
    sq_small = np.mean(np.sum(rows**2, axis=1))
    sq_big = np.sum(rows.mean(0) ** 2)
    np.testing.assert_allclose(g2, (12 * sq_big - 3 * sq_small) / 9, rtol=1e-6)
    np.testing.assert_allclose(s, (sq_small - sq_big) / (1 / 3 - 1 / 12), rtol=1e-6)
    np.testing.assert_array_equal(idx, [0, 1, 2, 3])


def _mpirun() -> Path:
    exe = Path(sys.executable).parent / "mpirun"
    if not exe.exists():
        pytest.skip("mpirun not found next to the Python interpreter (install the mpi extra)")
    return exe


@pytest.mark.mpi
def test_mpi_two_processes_equal_shard_map_local_batchnorm(tmp_path):
    ref, ref_losses = _train(setup(ParallelConfig(backend="shard_map", devices=2, launcher="none")))
    out = tmp_path / "mpi.json"
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    # Run as a script by its path: its folder (tests/) comes first on the subprocess's sys.path.
    cmd = [str(_mpirun()), "-n", "2", sys.executable, str(TOY), "mpi"]
    cmd += ["--steps", str(STEPS), "--global-batch", str(GLOBAL_BATCH), "--reduce", "both", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for mode, res in json.loads(out.read_text()).items():  # one flat all-reduce, and one per array
        assert mode in ("flat", "tree")
        _close(ref, [np.asarray(x, np.float32) for x in res["leaves"]], LOOSE_RTOL, LOOSE_ATOL)
        np.testing.assert_allclose(ref_losses, res["losses"], rtol=LOOSE_RTOL)


def test_mpi_backend_rejects_several_devices_per_process():
    with pytest.raises(ValueError, match="one device per process"):
        from mpi4py import MPI  # noqa: F401  (the mpi backend needs it; skip otherwise)

        setup(ParallelConfig(backend="mpi", devices=2))


def test_shard_map_single_device_mesh_is_plain():
    par = setup(ParallelConfig(backend="shard_map", devices=1, launcher="none"))
    assert isinstance(par.mesh, Mesh) and par.workers == 1
    assert par.per_device_batch(16) == 16
    with pytest.raises(ValueError, match="not divisible"):
        setup(ParallelConfig(backend="xla", devices=3, launcher="none")).per_device_batch(16)


def test_shard_map_on_one_device_trains_as_xla():
    # One device (a one-GPU node running the shard_map configuration): no collective is left in the step,
    # and the per-device program must still compile and give the single-device update.
    one, l1 = _train(setup(ParallelConfig(backend="xla", devices=1, launcher="none")))
    sm, ls = _train(setup(ParallelConfig(backend="shard_map", devices=1, launcher="none")))
    _close(one, sm, LOOSE_RTOL, LOOSE_ATOL)
    np.testing.assert_allclose(l1, ls, rtol=LOOSE_RTOL)
