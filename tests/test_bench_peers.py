"""``hepgan-bench peers``: the driver against scripted workers (known times, known counts), the idle wait
with a scripted ``/proc/stat``, and hepgan's real worker on the tiny model. Speed itself is measured by
the benchmark, never asserted here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from hepgan.bench import peers
from hepgan.bench.common import write_result
from hepgan.bench.peers import (
    IdleWaiter,
    Mismatch,
    Worker,
    WorkerError,
    busy_cores,
    check_same,
    cpu_jiffies,
    hepgan_command,
    markdown,
    workers_for,
)
from hepgan.bench.peers_worker import count_passes, overrides
from hepgan.cli import bench as bench_cli

PASSES = {"g_forward": 1, "d_updates": 2, "g_updates": 2}

# A worker that speaks the protocol with scripted answers: call i of an op answers with the i-th value
# of spec["seconds"][op] (the last one repeated), as [v] * (n - 1) + [100 v] for n >= 3, so that the
# call's median is v and a mean would not be. Every command is appended to the shared log.
FAKE_WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
calls = {"train": 0, "generate": 0}
print("a library's banner on stdout", flush=True)
ready = {"ready": True, "framework": spec["framework"], "onednn": spec["name"] == "peer", "threads": 1,
         "workers": spec.get("workers", 1), "params": spec["params"], "passes": spec["passes"]}
print(json.dumps(ready), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    with open(spec["log"], "a") as log:
        log.write(f"{spec['name']} {cmd['op']} {cmd.get('n', '')}".strip() + "\n")
    if cmd["op"] == "quit":
        break
    if cmd["op"] == spec.get("fail_on"):
        print(json.dumps({"error": "scripted failure"}), flush=True)
        continue
    seq = spec["seconds"][cmd["op"]]
    v = seq[min(calls[cmd["op"]], len(seq) - 1)]
    calls[cmd["op"]] += 1
    time.sleep(spec.get("sleep", 0.0))
    n = cmd["n"]
    print(json.dumps({"seconds": [v] * (n - 1) + [100 * v] if n >= 3 else [v] * n}), flush=True)
"""


class ScriptedWaiter(IdleWaiter):
    """Returns the scripted busy levels in turn instead of reading the machine."""

    def __init__(self, levels: list[float]) -> None:
        super().__init__()
        self.levels = list(levels)
        self.calls = 0

    def wait(self) -> dict:
        level = self.levels[self.calls % len(self.levels)]
        self.calls += 1
        return {"busy_cores": level, "waited_s": 0.0, "idle": level < self.threshold}


@pytest.fixture
def fakes(tmp_path):
    """``make(name, **spec) -> command line`` of a scripted worker, and the shared log's path."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    log = tmp_path / "calls.log"

    def make(name: str, **spec) -> list[str]:
        full = {
            "name": name,
            "framework": f"fake {name}",
            "params": {"g": 10, "d": 20},
            "passes": PASSES,
            "log": str(log),
            **spec,
        }
        return [sys.executable, str(script), json.dumps(full)]

    return make, log


# warm-up call first, then one value per repeat
PEER_S = {"train": [50.0, 2.0, 4.0, 3.0], "generate": [9.0, 0.2, 0.4, 0.3]}
HEPGAN_S = {"train": [60.0, 1.0, 1.5, 1.2], "generate": [9.0, 0.1, 0.1, 0.1]}


def _run(make, layouts, hepgan_specs, *, repeats=3, levels=(0.05, 0.02, 0.3)):
    waiter = ScriptedWaiter(list(levels))
    result = peers.run(
        archs=["fixed25"],
        batches=[4],
        layouts=layouts,
        repeats=repeats,
        iters=3,
        warmup=1,
        waiter=waiter,
        peer_cmd=lambda arch, batch: make("peer", seconds=PEER_S),
        hepgan_cmd=lambda arch, batch, layout: (make(f"hepgan-{layout}", **hepgan_specs[layout]), None),
        call_timeout=60,
        start_timeout=60,
        log=lambda line: None,
    )
    return result, waiter


def test_sides_alternate_and_the_figures_are_medians_of_call_medians(fakes):
    make, log = fakes
    result, waiter = _run(make, ["one_process"], {"one_process": {"seconds": HEPGAN_S}})
    (row,) = result["rows"]
    assert row["status"] == "compared", row.get("reason")

    h = "hepgan-one_process"
    warm = ["peer train 1", "peer generate 1", f"{h} train 1", f"{h} generate 1"]
    timed = ["peer train 3", f"{h} train 3", "peer generate 3", f"{h} generate 3"] * 3
    assert log.read_text().splitlines() == [*warm, *timed, f"{h} quit", "peer quit"]
    assert row["order"] == [" ".join(c.split()[:2]).replace(h, "hepgan") for c in timed]

    # per call the median (the scripted outlier 100 v ignored), over the repeats the median of those
    t, g = row["train"], row["generate"]
    assert t["peer"]["call_medians_s"] == [2.0, 4.0, 3.0] and t["peer"]["median_s"] == 3.0
    assert t["hepgan"]["median_s"] == 1.2
    assert t["peer"]["per_s"] == pytest.approx(4 / 3.0) and t["hepgan"]["per_s"] == pytest.approx(4 / 1.2)
    assert t["ratio"] == pytest.approx(3.0 / 1.2)
    assert g["ratio"] == pytest.approx(0.3 / 0.1)
    assert row["warmup_s"]["peer train"] == [50.0]  # warm-up calls are kept apart from the figures

    # a wait for an idle machine before every timed call, its level recorded with the call
    assert waiter.calls == 12
    assert [i["busy_cores"] for i in row["idle"]] == [0.05, 0.02, 0.3] * 4
    assert [(i["side"], i["op"]) for i in row["idle"][:2]] == [("peer", "train"), ("hepgan", "train")]
    assert row["busy_cores_max"] == 0.3
    assert row["peer"]["params"] == row["hepgan"]["params"] == {"g": 10, "d": 20}
    assert result["frameworks"] == {"peer": ["fake peer"], "hepgan": [f"fake {h}"]}


def test_a_model_mismatch_is_refused_and_the_next_layout_still_compared(fakes):
    make, log = fakes
    specs = {
        "one_process": {"seconds": HEPGAN_S, "params": {"g": 11, "d": 20}},
        "per_core": {"seconds": HEPGAN_S, "workers": 2},
    }
    result, _ = _run(make, ["one_process", "per_core"], specs, repeats=1)
    refused, compared = result["rows"]
    assert refused["status"] == "refused"
    assert "generator has 10 trainable parameters in the peer and 11 in hepgan" in refused["reason"]
    assert "discriminator" not in refused["reason"]
    assert compared["status"] == "compared" and compared["hepgan"]["workers"] == 2
    calls = log.read_text().splitlines()
    # nothing was timed on the refused side, and the peer was warmed up once, for the compared layout
    assert [c for c in calls if c.startswith("hepgan-one_process")] == ["hepgan-one_process quit"]
    assert calls.count("peer train 1") == 1 and calls[-1] == "peer quit"


def test_check_same_names_passes_and_params():
    peer = {"params": {"g": 5, "d": 7}, "passes": PASSES}
    check_same("fixed25", peer, dict(peer))  # equal: no error
    with pytest.raises(
        Mismatch, match=r"passes \{'g_forward': 1, 'd_updates': 2, 'g_updates': 2\} in the peer"
    ):
        check_same("angle51", peer, {**peer, "passes": {**PASSES, "g_updates": 1}})
    with pytest.raises(Mismatch, match="discriminator has 7 trainable parameters in the peer and None"):
        check_same("angle51", peer, {"params": {"g": 5}, "passes": PASSES})


def test_a_failing_worker_is_a_failed_row_with_its_error(fakes):
    make, _ = fakes
    result, _ = _run(make, ["one_process"], {"one_process": {"seconds": HEPGAN_S, "fail_on": "generate"}})
    (row,) = result["rows"]
    assert row["status"] == "failed" and "scripted failure" in row["reason"]


def test_batch_that_does_not_divide_over_the_workers_is_refused(fakes):
    make, _ = fakes
    result, _ = _run(make, ["mpi"], {"mpi": {"seconds": HEPGAN_S, "workers": 3}})
    assert result["rows"][0]["status"] == "refused"
    assert "batch 4 does not divide over hepgan's 3 workers" in result["rows"][0]["reason"]


def test_json_and_markdown(fakes, tmp_path):
    make, _ = fakes
    specs = {"one_process": {"seconds": HEPGAN_S}, "mpi": {"seconds": HEPGAN_S, "params": {"g": 10, "d": 1}}}
    result, _ = _run(make, ["one_process", "mpi"], specs, repeats=1)
    path = write_result("peers", result, tmp_path / "out")
    assert path.name == "peers.json"
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == "peers" and payload["machine"]["cores"] >= 1
    assert payload["rows"][0]["train"]["ratio"] == pytest.approx(2.0 / 1.0)  # repeat 0: peer 2 s, hepgan 1 s
    md = markdown(payload)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    row = next(line for line in lines if line.startswith("| fixed25 | 4 | one_process"))
    refused = next(line for line in lines if line.startswith("| fixed25 | 4 | mpi"))
    assert header.count("|") == row.count("|") == refused.count("|")
    # generate: peer 4/0.2 = 20.0, hepgan 4/0.1 = 40.0, ratio 2; train: peer 4/2 = 2.00, hepgan 4.00, ratio 2;
    # busy: the largest of the four scripted levels before the calls
    assert row == "| fixed25 | 4 | one_process | 1 | 20.0 | 40.0 | 2.00 | 2.00 | 4.00 | 2.00 | 0.30 |"
    assert "refused" in refused
    assert "- fixed25 batch 4 mpi: fixed25: not compared: the discriminator has 20" in md
    assert payload["machine"]["cpu"] in md and "fake peer" in md


# ---- the idle machine ---------------------------------------------------------------------------------


def _stat(busy: int, idle: int, cores: int = 2) -> str:
    per_cpu = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(cores))
    return f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n{per_cpu}intr 1 2 3\nctxt 4\n"


class ScriptedMachine:
    """``/proc/stat`` texts whose counters advance by the scripted (busy, idle) jiffies per window, and a
    clock that moves only when the waiter sleeps."""

    def __init__(self, windows: list[tuple[int, int]]) -> None:
        self.windows, self.busy, self.idle, self.now, self.sleeps = list(windows), 1000, 1000, 0.0, []

    def read(self) -> str:
        return _stat(self.busy, self.idle)

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s
        b, i = self.windows.pop(0) if len(self.windows) > 1 else self.windows[0]
        self.busy += b
        self.idle += i


def test_cpu_jiffies_counts_iowait_as_idle_and_guest_once():
    text = "cpu  100 10 20 300 50 5 5 10 7 0\ncpu0 0\ncpu1 0\ncpu2 0\nintr 0\n"
    assert cpu_jiffies(text) == (150, 500, 3)
    assert busy_cores((0, 0, 4), (30, 100, 4)) == pytest.approx(1.2)
    assert busy_cores((5, 9, 4), (5, 9, 4)) == 0.0
    with pytest.raises(ValueError, match="aggregate"):
        cpu_jiffies("intr 0\n")


def test_idle_wait_samples_until_the_machine_is_idle():
    m = ScriptedMachine([(90, 10), (60, 40), (2, 98)])  # 1.8, then 1.2, then 0.04 busy cores (2 cores)
    w = IdleWaiter(
        threshold=0.1, window_s=0.5, timeout_s=30, read_stat=m.read, sleep=m.sleep, clock=lambda: m.now
    )
    level = w.wait()
    assert level["idle"] is True and level["busy_cores"] == pytest.approx(0.04)
    assert level["waited_s"] == pytest.approx(1.5) and m.sleeps == [0.5, 0.5, 0.5]


def test_idle_wait_gives_up_at_the_timeout_and_says_so():
    m = ScriptedMachine([(90, 10)])
    w = IdleWaiter(
        threshold=0.1, window_s=0.5, timeout_s=1.2, read_stat=m.read, sleep=m.sleep, clock=lambda: m.now
    )
    level = w.wait()
    assert level["idle"] is False and level["busy_cores"] == pytest.approx(1.8)
    assert len(m.sleeps) == 3  # 1.5 s >= 1.2 s


# ---- commands and the command line --------------------------------------------------------------------


def test_hepgan_command_per_layout(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    cmd, env = hepgan_command("angle51", 16, "per_core", 2)
    assert cmd[1:3] == ["-m", "hepgan.bench.peers_worker"] and cmd[cmd.index("--layout") + 1] == "per_core"
    assert "XLA_FLAGS" not in env and env["JAX_PLATFORMS"] == "cpu"  # the layout decides XLA's devices
    cmd, _ = hepgan_command("fixed25", 6, "mpi", 4)
    assert Path(cmd[0]).name == "mpirun" and cmd[1:3] == ["-n", "3"]  # 3 ranks: the most cores dividing 6
    assert workers_for(16, 2) == 2 and workers_for(6, 4) == 3 and workers_for(7, 2) == 1


def test_without_the_peer_environment_the_cli_says_how_to_make_it(tmp_path, capsys):
    rc = bench_cli.main(
        ["peers", "--peer-python", str(tmp_path / "missing" / "python"), "--out", str(tmp_path)]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "make peers-venv" in err and "missing" in err
    assert not (tmp_path / "peers.json").exists()
    assert "peers" not in bench_cli.BENCHMARKS  # not part of `hepgan-bench all`


def test_the_worker_reports_errors_and_exit_of_a_broken_command(tmp_path):
    w = Worker(
        "broken", [sys.executable, "-c", "import sys; sys.stderr.write('no such model\\n'); sys.exit(3)"]
    )
    with pytest.raises(WorkerError, match=r"(?s)exited \(code 3\).*no such model"):
        w.start(timeout=60)
    w.close()


# ---- hepgan's side --------------------------------------------------------------------------------------


def _tiny_run(schedule: str = "paper"):
    from hepgan.train.config import compose
    from hepgan.train.run import build_run

    extra = [f"train.schedule={schedule}", "train.n_critic=3"] if schedule != "paper" else []
    cfg = compose([*overrides("fixed25", 2, "one_process", "tiny"), *extra])
    return build_run(cfg, parallel=False, data=False, total_steps=10)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("paper", PASSES), ("n_critic", {"g_forward": 3, "d_updates": 3, "g_updates": 2})],
)
def test_passes_are_counted_from_the_traced_step(schedule, expected):
    from hepgan.train.step import GANUpdate

    run = _tiny_run(schedule)
    original = GANUpdate.__dict__["fakes"]
    batch = {
        "ecal": jnp.asarray(np.random.default_rng(0).gamma(0.3, 1.0, (2, 25, 25, 25)), jnp.float32),
        "energy": jnp.full((2,), 1.0, jnp.float32),
        "theta": jnp.full((2,), 1.57, jnp.float32),
    }
    # a fresh function each time: JAX caches the trace of a function it has seen, and a cached trace calls
    # nothing that could be counted
    assert count_passes(lambda s, b: run.update(s, b), run.state, batch, run.updates_per_step) == expected
    assert GANUpdate.__dict__["fakes"] is original  # the counting wrappers are gone
    wrong = {"g": 5, "d": expected["d_updates"]}
    with pytest.raises(RuntimeError, match="the run's schedule says"):
        count_passes(lambda s, b: run.update(s, b), run.state, batch, wrong)
    count_passes(run.update, run.state, batch, run.updates_per_step)
    with pytest.raises(RuntimeError, match="traced before"):
        count_passes(run.update, run.state, batch, run.updates_per_step)


@pytest.mark.slow
def test_real_worker_speaks_the_protocol_with_build_runs_counts():
    run = _tiny_run()
    from hepgan.train.state import param_count

    cmd, env = hepgan_command("fixed25", 2, "one_process", 2)
    w = Worker("hepgan", [*cmd, "--size", "tiny"], env)
    try:
        ready = w.start(timeout=600)
        assert ready["params"] == {"g": param_count(run.state.g.params), "d": param_count(run.state.d.params)}
        assert ready["passes"] == {"g_forward": 1, "d_updates": 2, "g_updates": 2}
        assert (ready["layout"], ready["backend"], ready["workers"]) == ("one_process", "xla", 1)
        assert ready["framework"].startswith("jax ")
        assert len(w.call("train", 2, timeout=600)) == 2
        assert len(w.call("generate", 2, timeout=600)) == 2
        with pytest.raises(WorkerError, match="unknown op 'fly'"):
            w.call("fly", 1, timeout=60)
        assert len(w.call("generate", 1, timeout=600)) == 1  # an error answer leaves the worker serving
        assert w.noise == []  # nothing but protocol lines on its stdout
    finally:
        w.close()
    assert w.proc is not None and w.proc.returncode == 0
