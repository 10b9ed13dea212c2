"""Multi-process training under ``jax.distributed`` and checkpoints across device counts (CPU).

Two processes on 127.0.0.1 with one CPU device each form one 2-device mesh; they train, checkpoint with
Orbax (both take part), drop their state and resume from the checkpoint into a fresh one. The result must
equal one process training the same steps on two devices. Stand-in model: tests/parallel_toy.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from parallel_toy import init_toy, local_value, restore_toy, save_toy, train_toy

from hepgan.parallel import ParallelConfig, setup

TOY = Path(__file__).with_name("parallel_toy.py")
STEPS, GLOBAL_BATCH = 4, 16
# Same program, same device count, only split over processes: gloo's all-reduce of two partial sums is
# the one reordering, so results agree to a few ulps.
RTOL, ATOL = 1e-5, 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _leaves(state) -> list[np.ndarray]:
    return [
        local_value(x)
        for x in jax.tree.leaves({"params": state["params"], "batch_stats": state["batch_stats"]})
    ]


def _launch_pair(tmp_path) -> dict:
    port = _free_port()
    out = tmp_path / "dist.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    procs = []
    for i in range(2):
        # Run as a script by its path: its folder (tests/) comes first on the subprocess's sys.path.
        cmd = [sys.executable, str(TOY), "dist", "--coordinator", f"127.0.0.1:{port}"]
        cmd += [
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            "--mid",
            str(STEPS // 2),
            "--stop",
            str(STEPS),
        ]
        cmd += ["--global-batch", str(GLOBAL_BATCH), "--ckpt", str(tmp_path / "ckpt"), "--out", str(out)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n----\n".join(log[-3000:] for log in logs)
    return json.loads(out.read_text())


def test_two_processes_train_checkpoint_resume_equal_one_process_two_devices(tmp_path):
    par = setup(ParallelConfig(backend="xla", devices=2, launcher="none"))
    graphdef, state, tx = init_toy()
    ref, ref_losses = train_toy(par, par.place_state(state), graphdef, tx, 0, STEPS, GLOBAL_BATCH)

    res = _launch_pair(tmp_path)
    assert res["workers"] == res["process_count"] == 2
    assert (tmp_path / "ckpt" / str(STEPS // 2)).is_dir()
    np.testing.assert_allclose(res["losses"], ref_losses, rtol=RTOL)
    for got, want in zip(res["leaves"], _leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=RTOL, atol=ATOL)


def test_checkpoint_written_on_8_devices_restores_on_2_and_1(tmp_path):
    graphdef, state, tx = init_toy()
    par8 = setup(ParallelConfig(backend="xla", devices=8, launcher="none"))
    s8, _ = train_toy(par8, par8.place_state(state), graphdef, tx, 0, 2, GLOBAL_BATCH)
    save_toy(str(tmp_path / "ck"), s8)
    for n in (2, 1):
        par = setup(ParallelConfig(backend="xla", devices=n, launcher="none"))
        restored = restore_toy(str(tmp_path / "ck"), par.place_state(init_toy()[1]))
        leaf = jax.tree.leaves(restored)[0]
        assert leaf.sharding.mesh.size == n
        for a, b in zip(_leaves(restored), _leaves(s8), strict=True):
            np.testing.assert_array_equal(a, b)
        # and training continues from it exactly as on 8 devices
        cont, _ = train_toy(par, restored, graphdef, tx, 2, 3, GLOBAL_BATCH)
        cont8, _ = train_toy(par8, par8.place_state(jax.device_get(s8)), graphdef, tx, 2, 3, GLOBAL_BATCH)
        for a, b in zip(_leaves(cont), _leaves(cont8), strict=True):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def _start_cli(args: list[str], n: int, port: int, log_dir) -> list[tuple[subprocess.Popen, object]]:
    """Start ``hepgan-train ARGS`` as ``n`` processes of one jax.distributed run (one CPU device each);
    process ``i`` logs to ``log_dir/rank<i>-<port>.log``. Returns ``(process, open log file)`` pairs.
    The runs of one test share a JAX persistent compilation cache in ``log_dir``: a rerun loads the
    executables the first run compiled (the same programs, so the same results)."""
    exe = os.path.join(os.path.dirname(sys.executable), "hepgan-train")
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(log_dir / "xla_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    procs = []
    for i in range(n):
        dist = [
            "parallel.launcher=explicit",
            f"parallel.coordinator_address=127.0.0.1:{port}",
            f"parallel.num_processes={n}",
            f"parallel.process_id={i}",
        ]
        log = open(log_dir / f"rank{i}-{port}.log", "w")
        procs.append((subprocess.Popen([exe, *args, *dist], env=env, stdout=log, stderr=log), log))
    return procs


def _train_cli(args: list[str], n: int, port: int, log_dir) -> list[str]:
    """``hepgan-train ARGS`` as ``n`` processes of one jax.distributed run, to the end; their logs."""
    procs = _start_cli(args, n, port, log_dir)
    try:
        for p, _ in procs:
            p.wait(timeout=300)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            log.close()
    logs = [(log_dir / f"rank{i}-{port}.log").read_text() for i in range(n)]
    assert all(p.returncode == 0 for p, _ in procs), "\n----\n".join(log[-3000:] for log in logs)
    return logs


def test_fit_two_processes_train_checkpoint_resume_equal_one_process_two_devices(tmp_path):
    """The trainer itself (``hepgan-train``, tiny 3DGAN, paper schedule, validation and checkpoints on):
    two processes train 2 steps and stop, two fresh processes resume to step 4; one process with two
    devices trains the 4 steps at once. Measured: bitwise equal; asserted to fp32 rounding."""
    from hepgan.train.checkpoint import restore_run, state_to_tree
    from hepgan.train.config import compose
    from hepgan.train.loop import fit

    common = [
        "debug=default",
        "model.conv_impl=fft",
        "parallel.backend=xla",
    ]  # the xla program, split over processes
    run = tmp_path / "dist"
    _train_cli([*common, f"out={run}", "train.max_steps=2"], 2, _free_port(), tmp_path)
    assert (run / "checkpoints" / "2").is_dir()
    logs = _train_cli([*common, f"out={run}", "train.max_steps=4"], 2, _free_port(), tmp_path)
    assert all("resumed from" in log and "at step 2" in log for log in logs)
    assert sum("hepgan-train: done after 4 steps" in log for log in logs) == 1  # process 0 reports

    ref = tmp_path / "ref"
    fit(compose([*common, f"out={ref}", "train.max_steps=4", "parallel.devices=2", "parallel.launcher=none"]))

    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["parallel"]["process_count"], manifest["parallel"]["workers"]) == (2, 2)
    steps_logged = [line.split(",")[0] for line in (run / "train.csv").read_text().splitlines()[1:]]
    assert steps_logged == ["1", "2", "3", "4"]  # one writer: no row twice
    _, got, _, _ = restore_run(run)
    _, want, _, _ = restore_run(ref)
    assert int(got.step) == int(want.step) == 4
    for a, b in zip(jax.tree.leaves(state_to_tree(got)), jax.tree.leaves(state_to_tree(want)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


def test_a_signal_to_one_process_stops_all_at_the_same_step_and_the_rerun_finishes(tmp_path):
    """SIGUSR1 reaches process 1 only (a scheduler's warning can arrive unevenly): both processes stop
    after the same step with one checkpoint and exit 75, process 0 records ``preempted``; the rerun
    resumes there and finishes with one log row per step."""
    import signal
    import time

    run, port, steps = tmp_path / "run", _free_port(), 40
    args = ["debug=default", "model.conv_impl=fft", f"out={run}", f"train.max_steps={steps}"]
    procs = _start_cli(args, 2, port, tmp_path)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and procs[1][0].poll() is None:
            csv_path = run / "train.csv"
            if csv_path.exists() and len(csv_path.read_text().splitlines()) >= 3:
                procs[1][0].send_signal(signal.SIGUSR1)
                break
            time.sleep(0.2)
        for p, _ in procs:
            p.wait(timeout=240)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
            log.close()
    logs = [(tmp_path / f"rank{i}-{port}.log").read_text() for i in range(2)]
    assert [p.returncode for p, _ in procs] == [75, 75], "\n----\n".join(log[-3000:] for log in logs)
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "preempted" and result["signal"] == signal.SIGUSR1
    stopped = result["step"]
    assert 2 <= stopped < steps and (run / "checkpoints" / str(stopped)).is_dir()
    assert not (run / "result.rank1.json").exists()
    assert all(f"stopped after step {stopped}" in log for log in logs)

    _train_cli(args, 2, _free_port(), tmp_path)
    assert json.loads((run / "result.json").read_text())["status"] == "ok"
    steps_logged = [line.split(",")[0] for line in (run / "train.csv").read_text().splitlines()[1:]]
    assert steps_logged == [str(s) for s in range(1, steps + 1)]
