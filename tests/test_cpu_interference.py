"""The machinery of the 2-core VM investigation (experiments/cpu_interference/): the cache-interference
script's neighbour processes, cache size and slowdown arithmetic (interference.py), and the machine
settings applied to the scaling benchmark's worker from outside the package: malloc settings, compute
threads pinned through /proc, page faults of the timed steps (vm_knobs.py). The step times themselves
are measured by running the scripts, never asserted here."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "experiments" / "cpu_interference"
CORES = sorted(os.sched_getaffinity(0))


def _load(name: str) -> ModuleType:
    # As when the script runs: its folder on sys.path, so that interference.py finds vm_knobs.py
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    spec = importlib.util.spec_from_file_location(name, FOLDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vm_knobs = _load("vm_knobs")
interference = _load("interference")


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
        # the worker starts with the malloc settings the results were recorded with
        assert os.environ.get("GLIBC_TUNABLES") == vm_knobs.KEEP_MEMORY
        assert bool(_children() - before) == (name != "alone"), name
        calls.append(name)
        step = (2.0 + rep) * factor[name]
        return {"step_s": step, "step_s_all": [step]}

    monkeypatch.setattr(interference, "_launch", fake_launch)
    monkeypatch.setattr(interference.time, "sleep", lambda s: None)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    res = interference.run(repeats=3)
    assert calls == ["alone", "spin", "dram", "llc"] * 3
    assert "GLIBC_TUNABLES" not in os.environ and res["glibc_tunables"] == vm_knobs.KEEP_MEMORY
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


# ----------------------------------------------------------------------------------------------------
# vm_knobs.py: malloc settings, thread pinning, page faults
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("before", [None, "glibc.malloc.arena_max=4"])
def test_malloc_settings_hold_inside_the_block_only(monkeypatch, before):
    if before is None:
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    else:
        monkeypatch.setenv("GLIBC_TUNABLES", before)
    with vm_knobs.malloc_settings(vm_knobs.KEEP_MEMORY):
        assert os.environ["GLIBC_TUNABLES"] == vm_knobs.KEEP_MEMORY
    assert os.environ.get("GLIBC_TUNABLES") == before
    with pytest.raises(KeyError), vm_knobs.malloc_settings(""):  # "": glibc's defaults, nothing set
        assert "GLIBC_TUNABLES" not in os.environ
        raise KeyError("measurement failed")
    assert os.environ.get("GLIBC_TUNABLES") == before


def _task(tasks: Path, tid: int, name: str, utime: int, stime: int) -> None:
    (tasks / str(tid)).mkdir(parents=True)
    (tasks / str(tid) / "comm").write_text(name + "\n")
    # /proc/<pid>/task/<tid>/stat: pid (comm) state, then 10 fields before utime and stime
    rest = " ".join(["S", *["0"] * 10, str(utime), str(stime), "0", "0"])
    (tasks / str(tid) / "stat").write_text(f"{tid} ({name}) {rest}\n")


def test_thread_cpu_ticks_reads_name_and_user_plus_system_ticks(tmp_path):
    _task(tmp_path, 11, "python", 5, 1)
    _task(tmp_path, 12, "tf_XLA) odd", 30, 4)  # a ")" in the name: the last one closes it
    assert vm_knobs.thread_cpu_ticks(tmp_path) == {11: ("python", 6), 12: ("tf_XLA) odd", 34)}
    # the real /proc lists this thread
    if Path(vm_knobs.TASKS).is_dir():
        import threading

        assert threading.get_native_id() in vm_knobs.thread_cpu_ticks()


def test_pin_compute_threads_gives_the_busiest_xla_threads_a_core_each(tmp_path, monkeypatch):
    for tid, name, ticks in ((1, "python", 900), (2, "tf_XLAEigen", 50), (3, "tf_XLAEigen", 400)):
        _task(tmp_path, tid, name, ticks, 0)
    _task(tmp_path, 4, "tf_XLACpuCompile", 200, 0)
    pinned = {}
    monkeypatch.setattr(vm_knobs.os, "sched_getaffinity", lambda pid: {5, 2, 7})
    monkeypatch.setattr(vm_knobs.os, "sched_setaffinity", lambda tid, cores: pinned.update({tid: cores}))
    out = vm_knobs.pin_compute_threads(2, tmp_path)
    assert pinned == {3: {2}, 4: {5}}  # the busiest two tf_XLA threads, never the Python thread
    assert [(p["tid"], p["core"], p["warmup_cpu_ticks"]) for p in out] == [(3, 2, 400), (4, 5, 200)]
    assert vm_knobs.pin_compute_threads(1, tmp_path) == [] and len(pinned) == 2  # one device: nothing


class _Pipe:
    def __init__(self) -> None:
        self.taken = 0
        self.closed = False

    def __next__(self) -> int:
        self.taken += 1
        return self.taken

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("profile", [False, True])
def test_timed_steps_pin_after_warmup_and_count_faults_over_the_timed_steps(monkeypatch, profile):
    counters = iter([(100, 1.0), (160, 1.5)])
    reads = []

    def fake_counters():
        reads.append(pipe.taken)  # batches handed out when the counters were read
        return next(counters)

    monkeypatch.setattr(vm_knobs, "fault_counters", fake_counters)
    pipe, pinned_at = _Pipe(), []

    def pin():
        pinned_at.append(pipe.taken)  # batches handed out before pinning
        return []

    timed = vm_knobs.TimedSteps(pipe, warmup=2, profile=profile, pin=pin)
    first_timed = 2 + (3 if profile else 0)
    assert [next(timed) for _ in range(first_timed + 3)] == list(range(1, first_timed + 4))
    timed.close()
    assert pinned_at == [2]  # once, after the two warm-up batches
    assert reads == [first_timed, first_timed + 3] and pipe.closed
    assert timed.per_step(3) == {"minor_page_faults_per_step": 20.0, "system_cpu_s_per_step": 0.5 / 3}


def test_instrumented_worker_runs_the_benchmark_worker_with_pinning_and_fault_counts(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")  # recorded, not applied in-process
    a = argparse.Namespace(
        backend="shard_map",
        devices=2,
        per_device_batch=2,
        size="tiny",
        conv_impl="fft",
        steps=2,
        warmup=1,
        mpi_reduce="flat",
        schedule="paper",
        profile=None,
        json="unused",
    )
    asked = []
    fake = [{"thread": "tf_XLAEigen", "tid": 1, "core": 0, "warmup_cpu_ticks": 1}]

    def pin(n):  # never re-pin this test process's own threads
        asked.append(n)
        return fake

    r = vm_knobs.instrumented_worker(a, pin=pin)
    assert asked == [2] and r["pinned_threads"] == fake
    assert r["glibc_tunables"] == "glibc.malloc.arena_max=1"
    assert r["minor_page_faults_per_step"] >= 0 and r["system_cpu_s_per_step"] >= 0
    assert (r["workers"], r["global_batch"]) == (2, 4) and len(r["step_s_all"]) == 2  # the worker's own
    import hepgan.train.run as train_run

    assert train_run.build_run.__module__ == "hepgan.train.run"  # the library's again afterwards


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(CORES) < 2, reason="thread pinning: Linux, 2 cores"
)
def test_launch_pins_one_compute_thread_per_core_in_a_fresh_process():
    # A fresh process as the scaling driver started it (one XLA thread per device, cores 0-1): each
    # device's compute thread, found by its CPU time in warm-up, gets a core of its own.
    r = vm_knobs.launch("shard_map", 2, 2, size="tiny", conv_impl="fft", steps=1, warmup=1)
    pinned = r["pinned_threads"]
    assert len(pinned) == 2
    assert sorted(p["core"] for p in pinned) == [0, 1]
    assert len({p["tid"] for p in pinned}) == 2 and all(p["warmup_cpu_ticks"] > 0 for p in pinned)
    # the worker ran with the malloc settings, and counted its page faults
    assert r["glibc_tunables"] == vm_knobs.KEEP_MEMORY and r["minor_page_faults_per_step"] >= 0
