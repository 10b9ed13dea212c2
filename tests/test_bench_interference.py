"""The interference benchmark's machinery (``hepgan.bench.interference``): the neighbour processes, the
cache size and the slowdown arithmetic. The step times themselves are measured by ``hepgan-bench
interference``, never asserted here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hepgan.bench import interference

CORES = sorted(os.sched_getaffinity(0))


def _children() -> set[int]:
    pid = os.getpid()
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(x) for x in text.split()}


def test_last_level_cache_is_the_largest_cache_in_sysfs(tmp_path):
    for index, size in (("index0", "32K"), ("index2", "1024K"), ("index3", "32768K")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert interference.last_level_cache_bytes(cache_dir=tmp_path) == 32 * 2**20
    assert interference.last_level_cache_bytes(default=123, cache_dir=tmp_path / "missing") == 123


@pytest.mark.skipif(len(CORES) < 2, reason="needs 2 cores")
def test_neighbour_runs_pinned_inside_the_block_and_is_gone_after():
    with interference.neighbour(interference.SPIN, CORES[1], settle_s=0.2) as proc:
        assert proc is not None and proc.poll() is None
        assert proc.pid in _children()
        assert os.sched_getaffinity(proc.pid) == {CORES[1]}
    assert proc.poll() is not None
    assert proc.pid not in _children()


def test_neighbour_that_fails_at_start_is_reported_with_its_error():
    with (
        pytest.raises(RuntimeError, match=r"neighbour process ended early(.|\n)*ZeroDivisionError"),
        interference.neighbour("1 / 0", CORES[-1], settle_s=1.0),
    ):
        pass


def test_neighbour_is_killed_when_the_block_raises():
    with pytest.raises(KeyError), interference.neighbour(interference.SPIN, CORES[-1], settle_s=0.2) as proc:
        raise KeyError("measurement failed")
    assert proc is not None and proc.poll() is not None


@pytest.mark.skipif(len(CORES) < 2, reason="needs 2 cores")
def test_run_times_each_neighbour_against_the_same_repeats_time_alone(monkeypatch):
    # A stand-in for the worker launch: slower by a fixed factor per neighbour and per repeat, so every
    # slowdown is known; it also checks that the neighbour is running while the worker is timed.
    factor = {"alone": 1.0, "spin": 1.02, "dram": 1.05, "llc": 1.2}
    names = iter(list(interference.neighbours()) * 3)
    calls = []
    before = _children()  # e.g. a multiprocessing helper started by an earlier test in this process

    def fake_launch(backend, n, batch, **kw):
        name = next(names)
        rep = len(calls) // len(factor)
        assert (backend, n, batch) == ("xla", 1, 8)
        assert bool(_children() - before) == (name != "alone"), name
        calls.append(name)
        step = (2.0 + rep) * factor[name]
        return {"step_s": step, "step_s_all": [step]}

    monkeypatch.setattr(interference, "_launch", fake_launch)
    monkeypatch.setattr(interference.time, "sleep", lambda s: None)
    res = interference.run(repeats=3)
    assert calls == ["alone", "spin", "dram", "llc"] * 3
    assert not _children() - before
    for name, f in factor.items():
        if name == "alone":
            assert name not in res["summary"]
            continue
        s = res["summary"][name]
        assert s["slowdown"] == pytest.approx([f] * 3)
        assert s["efficiency_cap"] == pytest.approx(1 / f)
    assert res["last_level_cache_bytes"] > 0


def test_run_needs_two_cores(monkeypatch):
    monkeypatch.setattr(interference.os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(RuntimeError, match="needs 2 cores"):
        interference.run()


@pytest.mark.skipif(len(CORES) < 2, reason="needs 2 cores")
def test_run_rejects_a_batch_below_one_before_launching_anything():
    with pytest.raises(ValueError, match="per_device_batch must be at least 1"):
        interference.run(per_device_batch=0)
