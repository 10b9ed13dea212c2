"""Launcher detection, config validation, the mpi reduction helpers and the gradient-noise-scale estimator."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hepgan.parallel import GNSTracker, ParallelConfig, Reducer, detect_launch, gns_estimates, sq_norm
from hepgan.parallel.distributed import initialize, planned_launch


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, ("none", 0, 1, 0)),
        (
            {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
            ("openmpi", 3, 8, 1),
        ),
        ({"PMI_RANK": "1", "PMI_SIZE": "2"}, ("mpich", 1, 2, None)),
        (
            {
                "JSM_NAMESPACE_RANK": "5",
                "JSM_NAMESPACE_SIZE": "12",
                "JSM_NAMESPACE_LOCAL_RANK": "5",
                "LSB_JOBID": "77",
            },
            ("jsrun", 5, 12, 5),
        ),
        (
            {
                "SLURM_JOB_ID": "9",
                "SLURM_STEP_NODELIST": "n[1-2]",
                "SLURM_PROCID": "6",
                "SLURM_NTASKS": "8",
                "SLURM_LOCALID": "2",
            },
            ("slurm", 6, 8, 2),
        ),
        # mpirun inside a Slurm allocation: the MPI layout is the real one
        (
            {
                "SLURM_JOB_ID": "9",
                "SLURM_STEP_NODELIST": "n1",
                "SLURM_PROCID": "0",
                "SLURM_NTASKS": "1",
                "SLURM_LOCALID": "0",
                "PMI_RANK": "1",
                "PMI_SIZE": "4",
            },
            ("mpich", 1, 4, None),
        ),
        # the batch script's own shell (no srun step): a single process
        ({"SLURM_JOB_ID": "9", "SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, ("none", 0, 1, 0)),
    ],
)
def test_detect_launch(env, want):
    got = detect_launch(env)
    assert (got.launcher, got.process_id, got.num_processes, got.local_id) == want
    assert got.is_main == (want[1] == 0)


def test_detect_launch_rejects_bad_rank():
    with pytest.raises(ValueError, match="PMI_RANK"):
        detect_launch({"PMI_RANK": "x", "PMI_SIZE": "2"})
    with pytest.raises(ValueError, match="outside"):
        detect_launch({"PMI_RANK": "2", "PMI_SIZE": "2"})


def test_initialize_single_process_does_nothing():
    launch = initialize(ParallelConfig(), env={})
    assert (launch.process_id, launch.num_processes) == (0, 1)
    with pytest.raises(ValueError, match="srun"):
        initialize(ParallelConfig(launcher="slurm"), env={})
    with pytest.raises(ValueError, match="mpirun"):
        initialize(ParallelConfig(launcher="mpi"), env={})


def test_planned_launch_is_the_layout_initialize_joins():
    mpich = {"PMI_RANK": "1", "PMI_SIZE": "2"}
    assert planned_launch(ParallelConfig(launcher="none"), env=mpich).process_id == 0
    assert planned_launch(ParallelConfig(), env=mpich).process_id == 1  # auto: the launcher's rank
    assert planned_launch(ParallelConfig(launcher="mpi"), env=mpich).process_id == 1
    explicit = ParallelConfig(launcher="explicit", num_processes=3, process_id=2, coordinator_address="h:1")
    assert (planned_launch(explicit, env=mpich).process_id, planned_launch(explicit).num_processes) == (2, 3)
    with pytest.raises(ValueError, match="srun"):
        planned_launch(ParallelConfig(launcher="slurm"), env=mpich)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("backend", "horovod", "parallel.backend"),
        ("mpi_reduce", "ring", "parallel.mpi_reduce"),
        ("launcher", "pbs", "parallel.launcher"),
        ("devices", 0, "parallel.devices"),
        ("gns_ema", 1.0, "parallel.gns_ema"),
    ],
)
def test_config_validation_names_the_key(field, value, match):
    cfg = ParallelConfig(**{field: value})
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_config_validation_of_combinations():
    ParallelConfig(backend="shard_map", sync_batchnorm=True).validate()
    with pytest.raises(ValueError, match="sync_batchnorm"):
        ParallelConfig(backend="xla", sync_batchnorm=True).validate()
    with pytest.raises(ValueError, match="coordinator_address"):
        ParallelConfig(launcher="explicit").validate()


def test_single_mpi_process_reduction_is_identity():
    # One MPI process (no mpirun): mean over one worker, flat and per-leaf, inside jit.
    pytest.importorskip("mpi4jax")
    from hepgan.parallel.reduce import mpi_mean

    tree = {"a": jnp.arange(3.0), "b": jnp.ones((2, 2), jnp.float32), "n": jnp.arange(2)}
    for flat in (True, False):
        out = jax.jit(lambda t, f=flat: mpi_mean(t, flat=f))(tree)
        for k in tree:
            np.testing.assert_array_equal(out[k], tree[k])
    red = Reducer("mpi", workers=1)
    assert red.grads(tree, 4)[1] == {}


def test_sq_norm_matches_numpy():
    tree = {"a": jnp.arange(3.0), "b": [jnp.full((2, 2), 2.0, jnp.float32)]}
    assert float(sq_norm(tree)) == pytest.approx(0 + 1 + 4 + 4 * 4)


def test_gns_estimators_unbiased_on_synthetic_gradients():
    """Per-example gradients g ~ N(G, Sigma) with known G and diagonal Sigma: the estimators average to
    |G|^2 and tr(Sigma), and the tracker's B_noise to tr(Sigma) / |G|^2 (McCandlish et al. app. A)."""
    rng = np.random.default_rng(0)
    d, workers, b_small, trials = 20, 4, 8, 4000
    G = rng.normal(size=d) * 0.5
    sigma2 = rng.uniform(0.5, 2.0, size=d)
    true_g2, true_s = float(G @ G), float(sigma2.sum())
    # per-worker batch means: N(G, Sigma / b_small)
    means = G + rng.normal(size=(trials, workers, d)) * np.sqrt(sigma2 / b_small)
    sq_small = np.mean(np.sum(means**2, axis=-1), axis=-1)
    sq_big = np.sum(means.mean(axis=1) ** 2, axis=-1)
    g2, s = jax.jit(gns_estimates, static_argnums=(2, 3))(
        jnp.asarray(sq_small, jnp.float32), jnp.asarray(sq_big, jnp.float32), b_small, b_small * workers
    )
    g2, s = np.asarray(g2, np.float64), np.asarray(s, np.float64)
    # within 4 standard errors of the mean over trials
    assert abs(g2.mean() - true_g2) < 4 * g2.std() / math.sqrt(trials)
    assert abs(s.mean() - true_s) < 4 * s.std() / math.sqrt(trials)
    # the naive |G_big|^2 is biased upwards by tr(Sigma)/B_big: the test can tell the difference
    assert sq_big.mean() - true_g2 > 4 * sq_big.std() / math.sqrt(trials)

    tracker = GNSTracker(decay=0.999)
    for a, b in zip(g2, s, strict=True):
        tracker.update(float(a), float(b))
    assert tracker.b_noise == pytest.approx(true_s / true_g2, rel=0.15)
    with pytest.raises(ValueError, match="b_small"):
        gns_estimates(jnp.ones(()), jnp.ones(()), 8, 8)


def test_gns_tracker_bias_correction_and_empty():
    t = GNSTracker(decay=0.9)
    assert math.isnan(t.b_noise)
    t.update(2.0, 10.0)
    assert (t.g2, t.s, t.b_noise) == pytest.approx((2.0, 10.0, 5.0))
    t.update(float("nan"), 1.0)  # a non-finite step is skipped, not averaged in
    assert t.n == 1


def test_flat_map_one_buffer_per_dtype_round_trips():
    from hepgan.parallel.reduce import flat_map

    tree = {"w": jnp.arange(6.0).reshape(2, 3), "n": jnp.arange(4, dtype=jnp.int32), "b": jnp.ones(2)}
    seen = []

    def double(v):
        seen.append((v.shape, v.dtype))
        return v * 2

    out = flat_map(double, tree)
    assert sorted(seen, key=str) == [((4,), jnp.int32), ((8,), jnp.float32)]  # one call per dtype
    for k in tree:
        assert out[k].dtype == tree[k].dtype
        np.testing.assert_array_equal(out[k], tree[k] * 2)
    assert flat_map(double, {}) == {}
