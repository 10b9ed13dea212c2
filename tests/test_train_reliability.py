"""A run folder can always be finished: kills and crashes in every window, pre-emption signals, reruns.

Each interrupted run is rerun in the same folder and must end bitwise equal to an uninterrupted run of
the same config, with one log row per step. Windows (named as in the fault campaign that found them):
A a crash in the first checkpoint interval, after the step-0 checkpoint; B between the best save and
the latest save of one step; C after the final checkpoints, before the result (in the report);
D the newest checkpoint damaged after a crash. Uses the toy models of test_train_checkpoint.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from test_train_checkpoint import ToyDiscriminator, ToyGenerator, cfg, params, same

import hepgan.models
from hepgan.data.pipeline import Pipeline
from hepgan.train import loop
from hepgan.train.checkpoint import Checkpointer, restore_run
from hepgan.train.loop import Preempted, _trim_csv, fit
from hepgan.train.rundir import run_name


@pytest.fixture(autouse=True)
def toy_models(monkeypatch):
    monkeypatch.setattr(
        hepgan.models, "build", lambda cfg, rngs: (ToyGenerator(rngs), ToyDiscriminator(rngs))
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run (6 steps, checkpoints every 2, validation at the epoch end, step 4)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(hepgan.models, "build", lambda cfg, rngs: (ToyGenerator(rngs), ToyDiscriminator(rngs)))
    root = tmp_path_factory.mktemp("reference")
    result = fit(cfg(root / "run"))
    mp.undo()
    return root / "run", result


def crash_at_batch(monkeypatch, n, exc=KeyboardInterrupt):
    """Make the ``n``-th batch of the next fit raise ``exc`` (a kill, as far as the folder can tell)."""
    original, calls = Pipeline.__next__, {"n": 0}

    def nxt(self):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return original(self)

    monkeypatch.setattr(Pipeline, "__next__", nxt)
    return lambda: monkeypatch.setattr(Pipeline, "__next__", original)


def log_steps(run, kind):
    with open(run / f"{kind}.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def assert_finished_like(run, reference):
    ref_dir, ref_result = reference
    step, got = params(run)
    ref_step, want = params(ref_dir)
    assert step == ref_step == 6
    assert same(got, want)
    assert log_steps(run, "train") == log_steps(ref_dir, "train")  # no duplicate, no torn row
    assert log_steps(run, "val") == log_steps(ref_dir, "val")
    result = json.loads((run / "fit_result.json").read_text())
    assert result["status"] == "ok" and result["objective"] == ref_result["objective"]


def test_window_a_crash_in_the_first_interval(tmp_path, monkeypatch, reference):
    run = tmp_path / "a"
    undo = crash_at_batch(monkeypatch, 2)  # step 1 done; only the step-0 checkpoint exists
    with pytest.raises(KeyboardInterrupt):
        fit(cfg(run))
    undo()
    assert Checkpointer(run).latest_step() == 0
    fit(cfg(run))
    assert_finished_like(run, reference)


def test_window_b_between_best_and_latest_save(tmp_path, monkeypatch, reference):
    run = tmp_path / "b"
    original = Checkpointer.save

    def save(self, step, state, extra):
        if step == 4:  # best/4 is written (epoch end), checkpoints/4 is not
            raise KeyboardInterrupt
        original(self, step, state, extra)

    monkeypatch.setattr(Checkpointer, "save", save)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg(run))
    monkeypatch.setattr(Checkpointer, "save", original)
    assert (run / "best" / "4").is_dir() and not (run / "checkpoints" / "4").exists()
    fit(cfg(run))
    assert_finished_like(run, reference)


def test_window_c_killed_in_the_report_then_a_failing_report(tmp_path, monkeypatch, reference):
    run = tmp_path / "c"
    with_report = ("train.report=true", "train.report_metrics=[sf]")

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_write_final_report", killed)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg(run, *with_report))
    assert Checkpointer(run).latest_step() == 6 and not (run / "fit_result.json").exists()

    def broken(*a, **k):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(loop, "_write_final_report", broken)
    result = fit(cfg(run, *with_report))
    assert result["status"] == "ok" and "matplotlib fell over" in result["report_error"]
    assert_finished_like(run, reference)


def test_window_d_newest_checkpoint_damaged_after_a_crash(tmp_path, monkeypatch, reference):
    run = tmp_path / "d"
    undo = crash_at_batch(monkeypatch, 6)  # steps 1-5 done, checkpoints 0, 2, 4
    with pytest.raises(KeyboardInterrupt):
        fit(cfg(run))
    undo()
    for f in (run / "checkpoints" / "4" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"\0" * f.stat().st_size)
    fit(cfg(run))  # restores 2, must write step 4 again over the damaged one
    assert_finished_like(run, reference)


def test_signal_stops_with_a_checkpoint_and_the_rerun_is_bitwise(tmp_path, monkeypatch, reference):
    run = tmp_path / "sig"
    original, calls = Pipeline.__next__, {"n": 0}

    def nxt(self):
        calls["n"] += 1
        if calls["n"] == 3:  # arrives while step 3 is computed: step 3 finishes and is saved
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self)

    monkeypatch.setattr(Pipeline, "__next__", nxt)
    previous = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(Preempted) as err:
        fit(cfg(run))
    assert signal.getsignal(signal.SIGUSR1) == previous  # the handlers are put back
    assert err.value.step == 3 and err.value.signum == signal.SIGUSR1
    assert Checkpointer(run).latest_step() == 3
    monkeypatch.setattr(Pipeline, "__next__", original)
    fit(cfg(run))
    assert_finished_like(run, reference)


def test_rerun_of_a_finished_run_changes_nothing(tmp_path, reference):
    run = tmp_path / "done"
    shutil.copytree(reference[0], run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = fit(cfg(run))
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert result["status"] == "ok" and result["step"] == 6
    assert before == after


def test_a_folder_of_another_model_is_refused(tmp_path, reference):
    run = tmp_path / "other"
    shutil.copytree(reference[0], run)
    with pytest.raises(ValueError, match=r"model\.size: folder 'tiny', config 'small'") as err:
        fit(cfg(run, "model.size=small"))
    assert "give another out=" in str(err.value)
    # nothing else changes a run's identity: a longer run of the same model resumes
    assert loop.config_fingerprint({"model": {"a": 1}, "data": {"prefetch": 2}}) == loop.config_fingerprint(
        {"model": {"a": 1}, "data": {"prefetch": 0}, "train": {"epochs": 9}}
    )


def test_checkpoint_of_another_model_is_a_model_mismatch(tmp_path, reference):
    run = tmp_path / "mixed"
    shutil.copytree(reference[0], run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["model"]["size"] = "paper"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"model mismatch: .* holds model fixed25/tiny, the config asks"):
        restore_run(run)


def test_log_rows_after_the_restored_step_and_torn_rows_are_dropped(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("step,d_loss\n1,0.5\n2,0.4\n3,0.3\n4,0.2\n5,0.")  # a torn last row
    _trim_csv(path, 3)
    assert path.read_text().splitlines() == ["step,d_loss", "1,0.5", "2,0.4", "3,0.3"]
    _trim_csv(path, -1)  # a fresh start keeps the header only
    assert path.read_text().splitlines() == ["step,d_loss"]


def test_default_run_name_follows_the_scheduler_job():
    assert run_name({"SLURM_JOB_ID": "77"}) == "slurm-77"
    array = {"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}
    assert run_name(array) == "slurm-77_3"
    assert run_name({"LSB_JOBID": "12", "LSB_JOBINDEX": "0"}) == "lsf-12"
    assert run_name({"LSB_JOBID": "12", "LSB_JOBINDEX": "5"}) == "lsf-12_5"
    assert run_name({"PBS_JOBID": "9.server/x"}) == "pbs-9.server-x"
    assert run_name({"OMPI_COMM_WORLD_SIZE": "4", "PMIX_NAMESPACE": "prterun-host-1@1"}).startswith("mpi-")
    with pytest.raises(ValueError, match="give out="):
        run_name({"PMI_SIZE": "2"})
    assert len(run_name({})) == len("2026-01-01_00-00-00")


def _cli(*args, cwd=None, timeout=120):
    exe = os.path.join(os.path.dirname(sys.executable), "hepgan-train")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_cli_unwritable_out_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = _cli("debug=default", f"out={blocker}/run")
    assert proc.returncode == 1
    assert "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_never_replaces_a_finished_result_and_survives_a_full_disk(tmp_path, monkeypatch):
    from hepgan.cli import train as cli

    run = tmp_path / "run"
    run.mkdir()
    good = {"status": "ok", "objective": 0.1}
    (run / "result.json").write_text(json.dumps(good))
    with pytest.raises(SystemExit) as code:
        cli._fail(run, {}, "error", ValueError("boom"), cli.EXIT_USAGE)
    assert code.value.code == 1 and json.loads((run / "result.json").read_text()) == good

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hepgan.fileio.write_text", full)
    assert cli._write_result(run, {"status": "preempted"}) is None
    assert json.loads((run / "result.json").read_text()) == good
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/x/checkpoints/4")
    assert cli._disk_error(wrapped).filename == "/x/checkpoints/4"
    assert cli._disk_error(RuntimeError("other")) is None
