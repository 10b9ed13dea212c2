"""The real GAN update (:mod:`hepgan.train.step`, tiny fixed-angle 3DGAN) under the three backends.

SGD here: its update is proportional to the gradient, so a sum where a mean belongs shows (RMSprop's
update is scale-invariant and would hide it). Run as a script under ``mpirun -n 2`` for the mpi half.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from hepgan.models import ModelConfig, build
from hepgan.parallel import ParallelConfig, setup
from hepgan.parallel.mesh import shard_batch
from hepgan.train.state import init_state
from hepgan.train.step import StepConfig, make_step

STEPS, B = 4, 16
# Four full updates (each two discriminator and two generator optimizer steps) at SGD lr 1e-4, where the
# parameters and BatchNorm statistics move by up to 0.08. The backends agree to rounding after one update
# (1e-7 relative in the loss); over four, a kink of the losses or activations (MAPE, ReLU, a label flip
# threshold) that rounding puts on one side or the other amplifies it, by how much depends on the random
# draws: measured over run seeds 3-6, at most 1.1e-4 absolute in a leaf and 5e-5 relative in a loss
# with the hash dropout masks (4.5e-5 and 1.2e-5 with Threefry's; the masks themselves are equal on 1
# and 8 devices, tests/test_models.py). Local BatchNorm against global BatchNorm differs by 4e-3, 16x
# the tolerance: the control below shows the tolerance tells them apart.
RTOL, ATOL = 1e-4, 2.5e-4
STEP_CFG = StepConfig(arch="fixed25", ema_decay=0.9)


def _batches() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "ecal": rng.gamma(0.5, 0.5, (B, 25, 25, 25)).astype(np.float32),
            "energy": rng.uniform(0.1, 5.0, B).astype(np.float32),
            "theta": np.full(B, np.pi / 2, np.float32),
        }
        for _ in range(STEPS)
    ]


def _train(par, *, sync_bn: bool = False) -> tuple[list[np.ndarray], list[float]]:
    # fft: the CPU's fast convolution (xla's direct one takes minutes for these steps on 2 cores)
    mcfg = ModelConfig(arch="fixed25", size="tiny", conv_impl="fft", bn_axis_name="data" if sync_bn else None)
    g, d = build(mcfg, nnx.Rngs(0))
    tx = optax.sgd(1e-4)
    state, players = init_state(g, d, tx, tx, seed=3)
    local = par.per_device_batch(B)
    step = par.compile(make_step(players, STEP_CFG, reducer=par.reducer))
    state = par.place_state(state)
    losses = []
    for batch in _batches():
        if par.backend == "mpi":
            r = par.process_index
            placed = {k: jax.device_put(v[r * local : (r + 1) * local]) for k, v in batch.items()}
        else:
            placed = shard_batch(batch, par.mesh)
        state, m = step(state, placed)
        losses.append(float(np.asarray(m["d_loss"].addressable_data(0))))
    leaves = jax.tree.leaves((state.g.params, state.d.params, state.g.batch_stats, state.d.batch_stats))
    return [np.asarray(x.addressable_data(0)) for x in leaves], losses


def _close(a, b, rtol, atol):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_real_step_xla_8_devices_equals_1_device_over_several_updates():
    one, l1 = _train(setup(ParallelConfig(backend="xla", devices=1, launcher="none")))
    eight, l8 = _train(setup(ParallelConfig(backend="xla", devices=8, launcher="none")))
    _close(one, eight, RTOL, ATOL)
    np.testing.assert_allclose(l1, l8, rtol=RTOL)
    # control: shard_map's per-device BatchNorm (and per-device noise) is a different training, which
    # the tolerance must not pass as equal
    local_bn, _ = _train(setup(ParallelConfig(backend="shard_map", devices=2, launcher="none")))
    with pytest.raises(AssertionError):
        _close(one, local_bn, RTOL, ATOL)


@pytest.mark.mpi
def test_real_step_mpi_two_processes_equal_shard_map(tmp_path):
    ref, ref_losses = _train(setup(ParallelConfig(backend="shard_map", devices=2, launcher="none")))
    mpirun = Path(sys.executable).parent / "mpirun"
    if not mpirun.exists():
        pytest.skip("mpirun not found next to the Python interpreter")
    out = tmp_path / "mpi.json"
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    cmd = [str(mpirun), "-n", "2", sys.executable, __file__, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    _close(ref, [np.asarray(x, np.float32) for x in res["leaves"]], RTOL, ATOL)
    np.testing.assert_allclose(ref_losses, res["losses"], rtol=1e-4)


if __name__ == "__main__":  # one rank of the mpirun above
    leaves, losses = _train(setup(ParallelConfig(backend="mpi")))
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps({"leaves": [x.tolist() for x in leaves], "losses": losses}))


@pytest.mark.slow
def test_fit_shard_map_logs_noise_scale_lrs_and_manifest(tmp_path):
    """The trainer end to end on 2 devices with shard_map, sqrt scaling and warm-up (tiny model)."""
    import csv

    from hepgan.train.config import compose
    from hepgan.train.loop import fit

    out = tmp_path / "run"
    cfg = compose(
        [
            "debug=default",
            f"out={out}",
            "parallel=shard_map",
            "parallel.devices=2",
            "scaling.rule=sqrt",
            "scaling.ref_batch=4",  # global batch 16: lr x 2
            "scaling.warmup_steps=4",
            "train.max_steps=3",
            "parallel.comm_every=2",  # step 2 runs alone, then without its collectives
        ]
    )
    res = fit(cfg)
    assert res["step"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parallel"]["backend"] == "shard_map"
    assert (manifest["parallel"]["workers"], manifest["parallel"]["global_batch"]) == (2, 16)
    assert manifest["parallel"]["per_device_batch"] == 8
    assert manifest["scaling"]["g"]["factor"] == pytest.approx(2.0)
    with open(out / "train.csv") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    for key in ("d_gns_g2", "d_gns_s", "g_gns_g2", "b_noise_d", "b_noise_g", "lr_g", "lr_d"):
        assert key in last, key
    # compute against communication: measured at step 2 and carried in the rows from there on
    assert rows[0]["compute_seconds"] == "nan"
    compute, comm = float(rows[1]["compute_seconds"]), float(rows[1]["comm_seconds"])
    assert 0.0 < compute and abs(comm) < 10 * compute
    assert rows[2]["compute_seconds"] == rows[1]["compute_seconds"]
    # warm-up: after 3 steps the generator has made 3 x 2 = 6 updates of the 4-update ramp (capped at
    # the peak); the discriminator 6 as well
    assert float(last["lr_g"]) == pytest.approx(manifest["scaling"]["g"]["peak_lr"], rel=1e-6)
    assert float(rows[0]["lr_d"]) == pytest.approx(manifest["scaling"]["d"]["peak_lr"] * 2 / 4, rel=1e-6)
