"""The on-disk cache of simulated showers: same events as in memory, made once, safe against kills and
concurrent builders, streamed by the pipeline in the same order."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hepgan.data import cache as C
from hepgan.data.config import DataConfig
from hepgan.data.pipeline import Pipeline, Preprocess
from hepgan.data.simulate import EnergySpec, SimulatorConfig, iter_simulate
from hepgan.data.source import SimulatedSource, open_source


def _pair(tmp_path: Path, n: int = 30, **kw) -> tuple[SimulatedSource, SimulatedSource]:
    """The same events in memory and through the disk cache."""
    mem = SimulatedSource(n, **kw)
    disk = SimulatedSource(n, cache_dir=tmp_path / "cache", in_memory_max_gb=0, **kw)
    assert not mem.on_disk and disk.on_disk
    return mem, disk


def _spec(n: int = 12, seed: int = 0) -> C.SimulatedSet:
    return C.SimulatedSet(
        n=n, start=0, seed=seed, energy=EnergySpec.parse("uniform:10:500"), theta_deg=(90.0, 90.0),
        config=SimulatorConfig(),
    )  # fmt: skip


@pytest.mark.parametrize("theta", ["90", "70:110"])
def test_cached_events_are_bitwise_the_in_memory_events(tmp_path: Path, theta: str) -> None:
    mem, disk = _pair(tmp_path, theta_deg=theta, seed=3, start=5)
    idx = np.array([29, 3, 3, 0, 10, 11, 12, 20])  # unsorted, a repeat, a run
    a, b = mem.read(idx), disk.read(idx)
    for x, y in ((a.ecal, b.ecal), (a.energy, b.energy), (a.theta, b.theta)):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)
    assert disk._data is None  # nothing held in memory
    assert disk._file_source()._handle(0).direct  # rows read straight from the file
    assert mem.describe() == disk.describe()  # where events live is not part of the provenance
    expect = "fixed25" if theta == "90" else "angle"  # the public layout where it can hold the events
    assert json.loads((disk.cache_path / "cache.json").read_text())["format"] == expect


def test_pipeline_order_and_resume_are_the_same_through_the_cache(tmp_path: Path) -> None:
    mem, disk = _pair(tmp_path, n=40, seed=1)
    pre = Preprocess.for_model("fixed25")

    def batches(src: SimulatedSource, k: int, position: dict | None = None) -> list[np.ndarray]:
        p = Pipeline(src, 8, pre, seed=7, process_index=0, process_count=1, prefetch=2)
        if position is not None:
            p.restore(position)
        out = [np.asarray(next(p)["ecal"]) for _ in range(k)]
        p.close()
        return out

    ref = batches(mem, 7)  # crosses the epoch boundary (5 steps per epoch)
    got = batches(disk, 7)
    for x, y in zip(ref, got, strict=True):
        np.testing.assert_array_equal(x, y)
    resumed = batches(disk, 3, {"epoch": 0, "step": 4, "seed": 7, "global_batch": 8, "n_events": 40})
    for x, y in zip(ref[4:], resumed, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_set_is_simulated_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = SimulatedSource(10, seed=2, cache_dir=tmp_path, in_memory_max_gb=0)
    folder = first.prepare()
    assert folder == first.cache_path and folder.parent == tmp_path
    assert folder.name.startswith("fixed25_seed2_0+10_")

    def no_simulation(*a, **k):
        raise AssertionError("the cached set was simulated again")

    monkeypatch.setattr(C, "iter_simulate", no_simulation)
    again = SimulatedSource(10, seed=2, cache_dir=tmp_path, in_memory_max_gb=0)
    np.testing.assert_array_equal(again.read(np.arange(10)).ecal, first.read(np.arange(10)).ecal)
    # Any setting that changes the events gives another set.
    for other in (
        {"seed": 3},
        {"start": 1},
        {"energy": "uniform:10:499.9999"},
        {"config": SimulatorConfig(radial_scale=1.1)},
    ):
        src = SimulatedSource(10, **{"seed": 2, **other}, cache_dir=tmp_path, in_memory_max_gb=0)
        assert src.cache_path != folder, other
    assert SimulatedSource(11, seed=2, cache_dir=tmp_path, in_memory_max_gb=0).cache_path != folder


def test_a_build_killed_midway_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies_after_one_chunk(*args, **kw):
        it = iter_simulate(*args, **{**kw, "chunk": 4})
        yield next(it)
        raise KeyboardInterrupt  # a kill between chunks

    spec = _spec()
    monkeypatch.setattr(C, "iter_simulate", dies_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        C.ensure(spec, tmp_path, events_per_file=4)
    assert not C.is_complete(spec, C.cache_path(spec, tmp_path))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    folder = C.ensure(spec, tmp_path, events_per_file=5)
    assert [p.name for p in C.files_of(folder)] == ["showers_0000.h5", "showers_0001.h5", "showers_0002.h5"]


def test_a_folder_left_by_a_dead_build_of_this_host_is_removed(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    spec = _spec(4)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = int(dead.stdout)
    host = socket.gethostname().replace("-", "_")
    stale = tmp_path / f".{spec.folder_name()}.tmp-{host}-{pid}-0a1b2c3d"
    stale.mkdir()
    (stale / "showers_0000.h5.part").write_bytes(b"half")
    live = tmp_path / f".{spec.folder_name()}.tmp-otherhost-{pid}-0a1b2c3d"  # may still run there
    live.mkdir()
    C.ensure(spec, tmp_path)
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("lock", [True, False])
def test_concurrent_builders_make_one_complete_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: bool
) -> None:
    """With flock one builder simulates and the other waits; without (file systems that lack it) both
    simulate, the first rename wins and the loser's copy is deleted."""
    calls = []
    inside = threading.Event()
    both = threading.Barrier(2, timeout=30)

    def slow(*args, **kw):
        calls.append(1)
        inside.set()
        if not lock:
            both.wait()  # both builders are writing at the same time
        for part in iter_simulate(*args, **kw):
            time.sleep(0.3)  # the second builder arrives while the first is still writing
            yield part

    monkeypatch.setattr(C, "iter_simulate", slow)
    if not lock:
        monkeypatch.setattr(C, "_locked", lambda path: _no_lock())
    spec = _spec(6)
    results: list[Path | BaseException] = []

    def build() -> None:
        try:
            results.append(C.ensure(spec, tmp_path))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    threads[0].start()
    assert inside.wait(30)
    threads[1].start()
    for t in threads:
        t.join()
    final = C.cache_path(spec, tmp_path)
    assert results == [final, final]
    assert len(calls) == (1 if lock else 2)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [final.name]
    assert C.is_complete(spec, final)


class _no_lock:
    def __enter__(self) -> bool:
        return False

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_damaged_cache_is_a_clear_error(tmp_path: Path) -> None:
    src = SimulatedSource(5, cache_dir=tmp_path, in_memory_max_gb=0)
    folder = src.prepare()
    meta = json.loads((folder / "cache.json").read_text())
    (folder / meta["files"][0]).unlink()
    with pytest.raises(ValueError, match=r"missing; delete the folder"):
        SimulatedSource(5, cache_dir=tmp_path, in_memory_max_gb=0)
    (folder / "cache.json").write_text(json.dumps({**meta, "key": "0" * 64}))
    with pytest.raises(ValueError, match=rf"{re.escape(folder.name)}: it describes other settings"):
        SimulatedSource(5, cache_dir=tmp_path, in_memory_max_gb=0).read(np.arange(2))


def test_size_checks_name_the_place_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))}.*GB on disk.*data\.cache_dir"):
        SimulatedSource(10**9, cache_dir=tmp_path / "not" / "yet")  # 62 TB of fixed25 showers
    with pytest.raises(ValueError, match=r"in memory.*data\.in_memory_max_gb"):
        SimulatedSource(10**9, in_memory_max_gb=1e9)
    assert not (tmp_path / "not").exists()  # checking made nothing


def test_open_source_threshold_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEPGAN_DATA_CACHE", str(tmp_path / "env"))
    # 8 fixed25 events are 0.5 MB: below 0.0003 GB in memory, the 0.5 MB training set on disk
    cfg = DataConfig(n_events=8, n_reference=2, in_memory_max_gb=0.0003)
    train, ref = open_source(cfg)
    assert train.on_disk and not ref.on_disk  # type: ignore[attr-defined]
    assert train.cache_path.parent == tmp_path / "env"  # type: ignore[attr-defined]
    cfg.cache_dir = str(tmp_path / "conf")
    assert open_source(cfg).train.cache_path.parent == tmp_path / "conf"  # type: ignore[attr-defined]
    assert not (tmp_path / "env").exists()  # nothing is made before the first read
    assert not open_source(DataConfig(n_events=8, n_reference=2)).train.on_disk  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"data\.in_memory_max_gb"):
        open_source(DataConfig(in_memory_max_gb=-1))
    with pytest.raises(ValueError, match=r"data\.workers"):
        open_source(DataConfig(workers=-2))


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEPGAN_DATA_CACHE", str(tmp_path / "a"))
    assert C.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("HEPGAN_DATA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.default_cache_dir() == tmp_path / "xdg" / "hepgan" / "simulated"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert C.default_cache_dir() == Path.home() / ".cache" / "hepgan" / "simulated"


def test_cli_cache_builds_the_configs_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hepgan.cli.data import main

    overrides = [
        "data.n_events=8",
        "data.n_reference=2",
        "data.in_memory_max_gb=0.0003",
        f"data.cache_dir={tmp_path}",
    ]
    assert main(["cache", *overrides, "--quiet"]) == 0
    out = capsys.readouterr().out
    folder = SimulatedSource(8, cache_dir=tmp_path, in_memory_max_gb=0).cache_path
    assert f"train      8 events, 0.00 GB: {folder}" in out and "reference" in out and "not cached" in out
    assert C.is_complete(C.SimulatedSet(8, 0, 0, EnergySpec.parse("uniform:10:500"), (90.0, 90.0),
                                        SimulatorConfig()), folder)  # fmt: skip
    assert main(["cache", "data.kind=files"]) == 1
    assert "only simulated data" in capsys.readouterr().err
