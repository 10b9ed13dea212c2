"""Sources and the training input pipeline: preprocessing, order, resume, sharding, file reading."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hepgan.data import formats
from hepgan.data.config import DataConfig
from hepgan.data.pipeline import Pipeline, Preprocess
from hepgan.data.source import (
    REFERENCE_START,
    ArraySource,
    FileSource,
    ShowerSource,
    SimulatedSource,
    SubsetSource,
    open_source,
)
from hepgan.data.types import Showers

GRID = (4, 3, 5)


def _showers(n: int, grid: tuple[int, int, int] = GRID, theta: bool = True, seed: int = 0) -> Showers:
    """Random showers whose energy is the event id + 1 (so batches can be traced back to events)."""
    rng = np.random.default_rng(seed)
    return Showers(
        ecal=rng.exponential(0.01, size=(n, *grid)).astype(np.float32),
        energy=np.arange(1, n + 1, dtype=np.float32),
        theta=rng.uniform(1.0, 2.0, n).astype(np.float32) if theta else None,
    )


def _ids(batch: dict) -> np.ndarray:
    """Event ids of a batch made with ``energy_scale=1`` from :func:`_showers`."""
    return np.asarray(batch["energy"]).astype(np.int64) - 1


IDENTITY_E = Preprocess(cell_scale=100.0, cell_power=1.0, energy_scale=1.0)


def _pipe(src: ShowerSource, batch: int = 10, **kw) -> Pipeline:
    kw.setdefault("preprocess", IDENTITY_E)
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return Pipeline(src, batch, **kw)


# ---------------------------------------------------------------------------------------------------
# Preprocess
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale,power,escale", [(100.0, 1.0, 0.01), (1.0, 0.85, 0.01), (3.0, 0.5, 2.0)])
def test_preprocess_matches_numpy_formula(scale: float, power: float, escale: float) -> None:
    s = _showers(7)
    pre = Preprocess(scale, power, escale)
    out = pre.apply(s)
    want = (s.ecal.astype(np.float64) * scale) ** power
    assert out["ecal"].dtype == np.float32 and out["ecal"].shape == s.ecal.shape
    np.testing.assert_allclose(out["ecal"], want, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(out["energy"], s.energy.astype(np.float64) * escale, rtol=1e-6)
    np.testing.assert_array_equal(out["theta"], s.theta)
    assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(("ecal", "energy", "theta"), np.float32)


def test_preprocess_theta_defaults_to_normal_incidence() -> None:
    out = Preprocess().apply(_showers(3, theta=False))
    np.testing.assert_allclose(out["theta"], np.full(3, np.pi / 2), rtol=1e-7)


@pytest.mark.parametrize("arch", ["fixed25", "angle51"])
def test_invert_cells_round_trip_numpy_and_jit(arch: str) -> None:
    pre = Preprocess.for_model(arch)
    s = _showers(5)
    x = pre.apply(s)["ecal"]
    np.testing.assert_allclose(pre.invert_cells(x), s.ecal, rtol=1e-5, atol=1e-10)
    back = jax.jit(pre.invert_cells)(jax.numpy.asarray(x))
    np.testing.assert_allclose(np.asarray(back), s.ecal, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(pre.invert_energy(pre.apply(s)["energy"]), s.energy, rtol=1e-6)


def test_paper_presets_and_overrides() -> None:
    assert Preprocess.for_model("fixed25") == Preprocess(100.0, 1.0, 0.01)
    # AngleGAN Keras defaults: xscale=1, xpower=0.85, yscale=100.
    assert Preprocess.for_model("angle51") == Preprocess(1.0, 0.85, 0.01)
    cfg = DataConfig(cell_power=0.5)
    assert Preprocess.from_config(cfg, "fixed25") == Preprocess(100.0, 0.5, 0.01)
    with pytest.raises(ValueError, match="unknown model arch 'angle25'"):
        Preprocess.for_model("angle25")
    with pytest.raises(ValueError, match="cell_power"):
        Preprocess(cell_power=0.0)


# ---------------------------------------------------------------------------------------------------
# Order, epochs, resume
# ---------------------------------------------------------------------------------------------------


def _take(p: Pipeline, k: int) -> list[np.ndarray]:
    return [_ids(next(p)) for _ in range(k)]


def test_same_seed_same_batches_other_seed_other_order() -> None:
    src = ArraySource(_showers(50))
    with _pipe(src, seed=3) as a, _pipe(src, seed=3, prefetch=0) as b, _pipe(src, seed=4) as c:
        xa, xb, xc = _take(a, 8), _take(b, 8), _take(c, 8)
    for u, v in zip(xa, xb, strict=True):
        np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u, w) for u, w in zip(xa, xc, strict=True))


def test_every_event_once_per_epoch_and_epochs_differ() -> None:
    src = ArraySource(_showers(103))
    p = _pipe(src, batch=10, seed=0, epochs=2)
    assert p.steps_per_epoch == 10 and p.total_steps == 20
    batches = list(p)
    assert len(batches) == 20
    epochs = [np.concatenate([_ids(b) for b in batches[i * 10 : (i + 1) * 10]]) for i in range(2)]
    for ids in epochs:
        assert len(np.unique(ids)) == 100  # no repeats; 3 leftovers dropped
        assert set(ids) <= set(range(103))
    assert not np.array_equal(epochs[0], epochs[1])
    assert p.position()["epoch"] == 2


def test_unshuffled_keeps_source_order_and_partial_last_batch() -> None:
    src = ArraySource(_showers(25))
    p = _pipe(src, batch=10, shuffle=False, drop_last=False, epochs=1)
    ids = [_ids(b) for b in p]
    assert [len(i) for i in ids] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate(ids), np.arange(25))


@pytest.mark.parametrize("prefetch", [0, 3])
def test_restore_mid_epoch_continues_the_same_batches(prefetch: int) -> None:
    src = ArraySource(_showers(47))
    ref = _take(_pipe(src, batch=8, seed=11, prefetch=prefetch), 14)  # 5 steps per epoch: crosses 2 ends
    for k in (0, 3, 5, 7):
        first = _pipe(src, batch=8, seed=11, prefetch=prefetch)
        _take(first, k)
        saved = json.loads(json.dumps(first.position()))
        first.close()
        resumed = _pipe(src, batch=8, seed=11, prefetch=prefetch)
        resumed.restore(saved)
        for want, got in zip(ref[k:], _take(resumed, 14 - k), strict=True):
            np.testing.assert_array_equal(want, got)
        resumed.close()


def test_skip_moves_ahead_across_epochs() -> None:
    src = ArraySource(_showers(30))
    ref = _take(_pipe(src, batch=10, seed=4), 8)
    p = _pipe(src, batch=10, seed=4)
    _take(p, 1)
    p.skip(4)  # 3 steps per epoch: lands on epoch 1, step 2
    assert (p.position()["epoch"], p.position()["step"]) == (1, 2)
    for want, got in zip(ref[5:], _take(p, 3), strict=True):
        np.testing.assert_array_equal(want, got)
    p.close()


def test_a_dropped_pipeline_stops_its_thread() -> None:
    p = _pipe(ArraySource(_showers(40)), prefetch=2)
    next(p)
    thread = p._thread
    assert thread is not None and thread.is_alive()
    del p
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_restore_with_another_batch_size_continues_the_event_order() -> None:
    src = ArraySource(_showers(48))
    small = _pipe(src, batch=4, seed=2, prefetch=0)
    order = np.concatenate(_take(small, 12))  # the whole first epoch in batches of 4
    small = _pipe(src, batch=4, seed=2, prefetch=0)
    _take(small, 4)  # 16 events taken
    big = _pipe(src, batch=8, seed=2)
    big.restore(small.position())
    np.testing.assert_array_equal(np.concatenate(_take(big, 4)), order[16:])
    assert big.position()["epoch"] == 1
    big.close()


def test_position_counts_steps_within_epoch() -> None:
    p = _pipe(ArraySource(_showers(30)), batch=10, seed=1, prefetch=0)
    assert p.position()["epoch"] == 0 and p.position()["step"] == 0
    _take(p, 2)
    assert (p.position()["epoch"], p.position()["step"]) == (0, 2)
    _take(p, 1)
    assert (p.position()["epoch"], p.position()["step"]) == (1, 0)


def test_restore_rejects_a_different_run() -> None:
    p = _pipe(ArraySource(_showers(30)), batch=10, seed=1)
    with pytest.raises(ValueError, match="seed=2"):
        p.restore({"epoch": 0, "step": 1, "seed": 2})
    with pytest.raises(ValueError, match="n_events=31"):
        p.restore({"epoch": 0, "step": 1, "seed": 1, "n_events": 31})
    with pytest.raises(ValueError, match="not a whole number of batches of 10"):
        p.restore({"epoch": 0, "step": 1, "seed": 1, "global_batch": 5})
    with pytest.raises(ValueError, match="'epoch' and 'step'"):
        p.restore({"step": 1})


# ---------------------------------------------------------------------------------------------------
# Sharding and processes
# ---------------------------------------------------------------------------------------------------


def test_batches_sharded_over_the_data_axis_of_8_devices() -> None:
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    src = ArraySource(_showers(40))
    plain = next(_pipe(src, batch=16, seed=5))
    with Pipeline(src, 16, IDENTITY_E, seed=5, mesh=mesh) as p:
        batch = next(p)
    assert batch["ecal"].shape == (16, *GRID) and batch["theta"].shape == (16,)
    for k, v in batch.items():
        assert v.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), v.ndim), k
        assert {s.data.shape[0] for s in v.addressable_shards} == {2}
        np.testing.assert_array_equal(np.asarray(v), np.asarray(plain[k]))


def test_two_processes_read_disjoint_halves_of_the_global_batch() -> None:
    src = ArraySource(_showers(60))
    whole = _take(_pipe(src, batch=12, seed=9), 7)
    halves = [_take(_pipe(src, batch=12, seed=9, process_index=i, process_count=2), 7) for i in (0, 1)]
    for w, h0, h1 in zip(whole, *halves, strict=True):
        assert len(h0) == len(h1) == 6 and not set(h0) & set(h1)
        np.testing.assert_array_equal(np.concatenate([h0, h1]), w)


# One of two real JAX processes (2 CPU devices each): prints, per batch, its shards of "energy".
_PROCESS = """
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
jax.distributed.initialize("localhost:" + sys.argv[2], num_processes=2, process_id=int(sys.argv[1]))
from jax.sharding import Mesh
from hepgan.data.pipeline import Pipeline, Preprocess
from hepgan.data.source import ArraySource
from hepgan.data.types import Showers
src = ArraySource(Showers(np.zeros((40, 2, 2, 2), np.float32), np.arange(1, 41, dtype=np.float32)))
mesh = Mesh(np.array(jax.devices()), ("data",))
with Pipeline(src, 8, Preprocess(energy_scale=1.0), seed=3, mesh=mesh) as p:
    out = []
    for _ in range(6):
        b = next(p)
        assert b["energy"].shape == (8,) and b["ecal"].shape == (8, 2, 2, 2)
        out.append([[s.index[0].start, np.asarray(s.data).tolist()] for s in b["energy"].addressable_shards])
print(json.dumps(out))
"""


def test_two_real_jax_processes_assemble_the_global_batch() -> None:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = str(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, str(i), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in (0, 1)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    shards = [json.loads(out) for out, _ in outs]
    whole = _take(_pipe(ArraySource(_showers(40, grid=(2, 2, 2))), batch=8, seed=3), 6)
    for step, want in enumerate(whole):
        got = np.zeros(8)
        rows = []
        for proc in shards:
            for start, data in proc[step]:
                got[start : start + len(data)] = data
                rows.append(start)
        assert sorted(rows) == [0, 2, 4, 6]  # each process holds two devices' rows, none twice
        np.testing.assert_array_equal(got.astype(np.int64) - 1, want)


class _CountingSource(ArraySource):
    def __init__(self, showers: Showers) -> None:
        super().__init__(showers)
        self.read_counts: list[int] = []

    def read(self, indices: np.ndarray) -> Showers:
        self.read_counts.append(len(indices))
        return super().read(indices)


def test_each_process_reads_only_its_share() -> None:
    src = _CountingSource(_showers(40))
    next(_pipe(src, batch=16, process_index=1, process_count=4, prefetch=0))
    assert src.read_counts == [4]


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def test_batch_size_errors_name_the_numbers() -> None:
    src = ArraySource(_showers(40))
    with pytest.raises(ValueError, match="global_batch 10 is not divisible by the process count 4"):
        _pipe(src, batch=10, process_count=4)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    with pytest.raises(ValueError, match=r"global_batch 12 is not divisible by the 8 devices"):
        Pipeline(src, 12, mesh=mesh)
    with pytest.raises(ValueError, match="holds 40 events, fewer than one global batch of 64"):
        _pipe(src, batch=64)
    with pytest.raises(ValueError, match="'data' axis"):
        Pipeline(src, 8, mesh=Mesh(np.array(jax.devices()), ("model",)))
    with pytest.raises(ValueError, match="process_count=2 but JAX runs 1"):
        Pipeline(src, 8, mesh=mesh, process_index=0, process_count=2)


class _FailingSource(ArraySource):
    def read(self, indices: np.ndarray) -> Showers:
        raise OSError("disk gone")


@pytest.mark.parametrize("prefetch", [0, 2])
def test_read_errors_reach_the_caller(prefetch: int) -> None:
    p = _pipe(_FailingSource(_showers(20)), prefetch=prefetch)
    with pytest.raises(OSError, match="disk gone"):
        next(p)
    p.close()


def test_source_read_rejects_bad_indices() -> None:
    src = ArraySource(_showers(5))
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        src.read(np.array([0, 5]))
    with pytest.raises(ValueError, match="integer"):
        src.read(np.array([0.5]))


# ---------------------------------------------------------------------------------------------------
# Sources: files, simulated, open_source
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def fixed25_dir(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "data"
    d.mkdir()
    for i, n in enumerate((30, 17)):
        s = Showers(
            ecal=rng.exponential(0.01, size=(n, 25, 25, 25)).astype(np.float32),
            energy=rng.uniform(10, 500, n).astype(np.float32),
        )
        formats.write_file(d / f"part_{i}.h5", s, "fixed25")
    return d


@pytest.mark.parametrize("cache", [False, True])
def test_file_source_reads_the_same_events_as_read_file(fixed25_dir, cache: bool) -> None:
    files = sorted(fixed25_dir.glob("*.h5"))
    every = Showers.concat([formats.read_file(f) for f in files])
    src = FileSource(fixed25_dir, cache=cache)
    assert isinstance(src, ShowerSource)
    assert len(src) == 47 and src.grid == (25, 25, 25) and not src.has_theta
    idx = np.array([46, 3, 29, 30, 3, 0, 31, 32, 33, 10])  # both files, unsorted, a repeat, a run
    got = src.read(idx)
    np.testing.assert_array_equal(got.ecal, every.ecal[idx])
    np.testing.assert_array_equal(got.energy, every.energy[idx])
    assert got.theta is None
    idx = np.array([40, 2, 35, 1, 17])  # no repeat: the direct scatter path
    np.testing.assert_array_equal(src.read(idx).ecal, every.ecal[idx])
    assert len(src.read(np.array([], np.int64))) == 0


def _small_angle(n: int, seed: int) -> Showers:
    rng = np.random.default_rng(seed)
    return Showers(
        ecal=rng.exponential(0.01, size=(n, 51, 51, 25)).astype(np.float32),
        energy=rng.uniform(2, 500, n).astype(np.float32),
        theta=rng.uniform(1.0, 2.1, n).astype(np.float32),
    )


def test_file_source_every_layout_and_storage_matches_read_file(tmp_path) -> None:
    """Direct (positional reads), compressed (h5py rows), mtheta-only and CaloChallenge (formats.take)
    files."""
    import h5py

    a, b = _small_angle(6, 1), _small_angle(5, 2)
    formats.write_file(tmp_path / "plain.h5", a, "angle", compression=None)
    formats.write_file(tmp_path / "packed.h5", b, "angle", compression="lzf")
    with h5py.File(tmp_path / "mtheta.h5", "w") as f:  # the public AngleGAN files may carry mtheta only
        f["ECAL"], f["energy"], f["mtheta"] = a.ecal[:4], a.energy[:4], a.theta[:4]
    names = ["plain.h5", "packed.h5", "mtheta.h5"]
    parts = [formats.read_file(tmp_path / n) for n in names]
    every = Showers.concat([Showers(p.ecal, p.energy, p.theta) for p in parts])
    for cache in (False, True):
        src = FileSource([str(tmp_path / n) for n in names], cache=cache)
        idx = np.array([14, 0, 7, 5, 6, 11, 2, 10])
        got = src.read(idx)
        np.testing.assert_array_equal(got.ecal, every.ecal[idx])
        np.testing.assert_array_equal(got.energy, every.energy[idx])
        np.testing.assert_array_equal(got.theta, every.theta[idx])
        assert [src._handle(i).direct for i in range(3)] == [True, False, True]
        # The RAM cache holds only the file that cannot be read row by row directly.
        assert sorted(src._cache) == ([1] if cache else [])
    formats.write_file(tmp_path / "cc.h5", b, "calochallenge")
    cc = FileSource(tmp_path / "cc.h5")
    np.testing.assert_allclose(cc.read(np.array([4, 1])).ecal, b.ecal[[4, 1]], rtol=1e-6)


def test_file_source_rejects_bad_cells_naming_the_file(tmp_path) -> None:
    import h5py

    ecal = np.full((4, 25, 25, 25), 0.01, np.float32)
    ecal[2, 3, 3, 3] = np.nan
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["ECAL"], f["target"] = ecal, np.array([[11.0, 50.0]] * 4, np.float32)
    src = FileSource(tmp_path / "bad.h5")
    src.read(np.array([0, 1]))
    with pytest.raises(formats.ShowerFileError, match=r"bad\.h5, key .ECAL.: event 2 has NaN"):
        src.read(np.array([3, 2]))


def test_file_source_describe_has_sizes_and_sha256(fixed25_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HEPGAN_CACHE_DIR", str(tmp_path / "cache"))
    d = FileSource(fixed25_dir).describe()
    json.dumps(d)
    assert [f["n_events"] for f in d["files"]] == [30, 17]
    for f in d["files"]:
        data = Path(f["path"]).read_bytes()
        assert f["size_bytes"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "cache" / "sha256.json").exists()


def test_pipeline_over_files_preprocesses(fixed25_dir) -> None:
    src = FileSource(fixed25_dir)
    p = Pipeline(src, 8, Preprocess.for_model("fixed25"), seed=0, process_index=0, process_count=1)
    batch = next(p)
    idx = p.batch_indices(0, 0)
    raw = src.read(idx)
    np.testing.assert_allclose(np.asarray(batch["ecal"]), raw.ecal * 100, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(batch["energy"]), raw.energy / 100, rtol=1e-6)
    p.close()


def test_open_source_files_split_is_disjoint_fixed_and_complete(fixed25_dir) -> None:
    cfg = DataConfig(kind="files", paths=[str(fixed25_dir)], reference_fraction=0.2)
    train, ref = open_source(cfg)
    assert isinstance(train, SubsetSource) and isinstance(ref, SubsetSource)
    assert len(ref) == round(0.2 * 47) and len(train) + len(ref) == 47
    assert not set(train.indices) & set(ref.indices)
    again = open_source(DataConfig(kind="files", paths=[str(fixed25_dir)], reference_fraction=0.2, seed=7))
    np.testing.assert_array_equal(again.reference.indices, ref.indices)  # type: ignore[attr-defined]
    json.dumps(train.describe())
    capped = open_source(DataConfig(kind="files", paths=[str(fixed25_dir / "*.h5")], max_events=10)).train
    assert len(capped) == 10
    with pytest.raises(ValueError, match="reference_fraction"):
        open_source(DataConfig(kind="files", paths=[str(fixed25_dir)], reference_fraction=1.5))
    with pytest.raises(ValueError, match=r"data\.paths"):
        open_source(DataConfig(kind="files"))
    with pytest.raises(formats.ShowerFileError, match="nothing_here"):
        open_source(DataConfig(kind="files", paths=[str(fixed25_dir / "nothing_here.h5")]))


def test_open_source_files_with_reference_paths(fixed25_dir) -> None:
    files = sorted(str(f) for f in fixed25_dir.glob("*.h5"))
    train, ref = open_source(DataConfig(kind="files", paths=files[:1], reference_paths=files[1:]))
    assert (len(train), len(ref)) == (30, 17)
    with pytest.raises(ValueError, match=r"also in data\.paths"):
        open_source(DataConfig(kind="files", paths=files, reference_paths=files[1:]))


def test_simulated_source_matches_simulate_and_reference_is_disjoint() -> None:
    from hepgan.data.simulate import simulate

    cfg = DataConfig(n_events=6, n_reference=4, energy="uniform:10:500", theta_deg="80:100", seed=2)
    train, ref = open_source(cfg)
    assert isinstance(train, SimulatedSource) and train.grid == (25, 25, 25) and train.has_theta
    direct = simulate(6, energy="uniform:10:500", theta_deg=(80.0, 100.0), seed=2)
    got = train.read(np.array([5, 0, 2]))
    np.testing.assert_array_equal(got.ecal, direct.ecal[[5, 0, 2]])
    np.testing.assert_array_equal(got.theta, direct.theta[[5, 0, 2]])
    r = ref.read(np.arange(4))
    assert not np.isin(r.energy, direct.energy).any()
    desc = ref.describe()
    json.dumps(desc)
    assert desc["start"] == REFERENCE_START and desc["seed"] == 2 and desc["n_events"] == 4
    # a later reference start: a fresh sample of the same stream, its events shifted by the offset
    later = open_source(cfg, reference_start=REFERENCE_START + 2).reference
    assert later.describe()["start"] == REFERENCE_START + 2
    np.testing.assert_array_equal(later.read(np.arange(2)).energy, r.energy[2:])
    with pytest.raises(ValueError, match="reference_start"):
        open_source(cfg, reference_start=REFERENCE_START - 1)  # would overlap the training events
    with pytest.raises(ValueError, match="simulated data only"):
        open_source(DataConfig(kind="files", paths=["x.h5"]), reference_start=REFERENCE_START)


def test_package_exports() -> None:
    import hepgan.data

    assert hepgan.data.DataConfig is DataConfig and hepgan.data.Pipeline is Pipeline
    assert hepgan.data.open_source is open_source and hepgan.data.Preprocess is Preprocess
    with pytest.raises(AttributeError):
        hepgan.data.no_such_name  # noqa: B018


def test_open_source_config_errors() -> None:
    with pytest.raises(ValueError, match=r"data\.kind"):
        open_source(DataConfig(kind="hdf5"))
    with pytest.raises(ValueError, match=r"data\.theta_deg"):
        open_source(DataConfig(theta_deg="200"))
    with pytest.raises(ValueError, match=r"data\.n_events"):
        open_source(DataConfig(n_events=0))
    with pytest.raises(ValueError, match=r"data\.simulator"):
        open_source(DataConfig(simulator={"no_such_knob": 1.0}))
    with pytest.raises(ValueError, match="unknown geometry"):
        open_source(DataConfig(geometry="cube9"))
    with pytest.raises(ValueError, match="in_memory_max_gb"):
        SimulatedSource(10**9, in_memory_max_gb=1e9)  # 62 TB of fixed25 showers in memory
