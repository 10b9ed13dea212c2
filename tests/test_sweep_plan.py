"""Index-addressed plans: Hydra multirun order, array index mapping, crash/requeue behaviour of `run`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sweep_helpers import write_conf

from hepgan.cli.sweep import main
from hepgan.sweep.plan import (
    PlanEntry,
    expand_sweep,
    read_plan,
    read_sweep_file,
    scheduler_task,
    task_entries,
    write_plan,
)
from hepgan.sweep.runner import RunSettings, run_plan_entries, run_trial

DRYRUN = "hepgan.sweep.dryrun:fit"


def test_plan_order_equals_hydra_multirun(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import json, os
            import hydra
            from hydra.core.hydra_config import HydraConfig

            @hydra.main(config_path="conf", config_name="config", version_base="1.3")
            def main(cfg):
                hc = HydraConfig.get()
                with open(os.environ["JOBS_OUT"], "a") as f:
                    f.write(json.dumps([hc.job.num, list(hc.overrides.task)]) + "\\n")

            main()
            """
        )
    )
    sweep = ["optim.lr_g=1e-3,5e-4", "model=glob(*)", "+tag='b c'", "train.batch_size=range(64,129,64)"]
    jobs_out = tmp_path / "jobs.jsonl"
    env = {**os.environ, "JOBS_OUT": str(jobs_out), "HYDRA_FULL_ERROR": "1"}
    subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            *sweep,
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
            "hydra.output_subdir=null",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    hydra_jobs = [ov for _, ov in sorted(json.loads(line) for line in jobs_out.read_text().splitlines())]

    plan = tmp_path / "plan.txt"
    assert main(["plan", *sweep, "-o", str(plan), "--config-dir", str(conf)]) == 0
    entries = read_plan(plan)
    assert len(entries) == 2 * 2 * 2
    assert [list(e.overrides) for e in entries] == hydra_jobs


def test_yaml_sweep_file_matches_command_line(tmp_path: Path) -> None:
    f = tmp_path / "sweep.yaml"
    f.write_text(
        "params:\n  optim.lr_g: 1e-3,5e-4\n  train.batch_size: [64, 128]\n  flag: true\n"
        "overrides:\n  - model=small\n"
    )
    assert read_sweep_file(f) == [
        "optim.lr_g=1e-3,5e-4",
        "train.batch_size=64,128",
        "flag=true",
        "model=small",
    ]
    assert expand_sweep(read_sweep_file(f)) == expand_sweep(
        ["optim.lr_g=1e-3,5e-4", "train.batch_size=64,128", "flag=true", "model=small"]
    )
    assert len(expand_sweep(read_sweep_file(f))) == 4


def test_plan_lines_round_trip_quoting_and_metadata(tmp_path: Path) -> None:
    entries = [
        PlanEntry(("a=1", "name='x y'", "+b=[1,2]")),
        PlanEntry(("a=2",), {"optuna_study": "s", "optuna_trial": "7"}),
    ]
    p = write_plan(tmp_path / "p.txt", entries, comment="two lines\nof comment")
    assert read_plan(p) == entries


def test_bad_sweep_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "a=1,,2", "-o", str(tmp_path / "p.txt"), "--no-validate"]) == 2
    assert "not valid Hydra override grammar" in capsys.readouterr().err
    conf = write_conf(tmp_path)
    assert main(["plan", "optim.nope=1,2", "-o", str(tmp_path / "p.txt"), "--config-dir", str(conf)]) == 2
    assert "entry 0 does not compose" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "index", "scheduler"),
    [
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "77"}, 0, "slurm"),
        ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_JOB_ID": "77"}, 12, "slurm"),
        ({"LSB_JOBINDEX": "1", "LSB_JOBID": "5"}, 0, "lsf"),
        ({"LSB_JOBINDEX": "12", "LSB_JOBID": "5"}, 11, "lsf"),
        ({"LSB_JOBINDEX": "0", "HEPGAN_TASK_INDEX": "3"}, 3, "env"),  # LSF non-array job has index 0
    ],
)
def test_scheduler_index_mapping(env: dict[str, str], index: int, scheduler: str) -> None:
    task, job = scheduler_task(env)
    assert task == index
    assert job["scheduler"] == scheduler


def test_scheduler_index_missing_or_bad() -> None:
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID"):
        scheduler_task({})
    with pytest.raises(ValueError, match="not an integer"):
        scheduler_task({"SLURM_ARRAY_TASK_ID": "x"})


def test_task_entries_offsets_and_per_task() -> None:
    assert list(task_entries(0, 10)) == [0]
    assert list(task_entries(9, 10)) == [9]
    assert list(task_entries(10, 10)) == []  # array larger than the plan: nothing to do
    # a 2500-entry plan over arrays limited to 1000 tasks: second submission starts at 1000
    assert list(task_entries(0, 2500, offset=1000)) == [1000]
    assert list(task_entries(999, 2500, offset=2000)) == []
    assert list(task_entries(499, 2500, offset=2000)) == [2499]
    # several entries per task, the last task clipped
    assert list(task_entries(2, 10, per_task=4)) == [8, 9]
    assert list(task_entries(1, 10, offset=1, per_task=3)) == [4, 5, 6]
    # every entry covered exactly once by tasks 0..ceil(n/m)-1
    covered = [i for t in range(4) for i in task_entries(t, 10, per_task=3)]
    assert covered == list(range(10))
    # Slurm --array=1-N with --offset -1
    assert list(task_entries(1, 5, offset=-1)) == [0]
    with pytest.raises(ValueError, match="per-task"):
        task_entries(0, 5, per_task=0)


def _plan(tmp_path: Path, *overrides: str) -> Path:
    return write_plan(tmp_path / "plan.txt", [PlanEntry(tuple(o.split())) for o in overrides])


def test_run_auto_index_from_lsf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = write_conf(tmp_path)
    plan = _plan(tmp_path, "optim.lr_g=0.001", "optim.lr_g=0.002", "optim.lr_g=0.004")
    monkeypatch.setenv("LSB_JOBINDEX", "2")
    monkeypatch.setenv("LSB_JOBID", "4242")
    args = ["run", str(plan), "auto", "--config-dir", str(conf), "--train-fn", DRYRUN]
    assert main(args) == 0
    done = sorted(p.parent.name for p in (tmp_path / "plan").glob("*/result.json"))
    assert done == ["1"]
    meta = json.loads((tmp_path / "plan" / "1" / "meta.json").read_text())
    assert meta["job"] == {"scheduler": "lsf", "job_id": "4242", "task_id": "2"}
    assert meta["overrides"] == ["optim.lr_g=0.002"]


def test_failed_entry_is_recorded_and_next_runs(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    plan = _plan(tmp_path, "+dryrun.fail=true", "optim.lr_g=0.001")
    settings = RunSettings(config_dir=str(conf), train_fn=_dryrun())
    results = run_plan_entries(plan, [0, 1], settings)
    assert [r["status"] for r in results] == ["failed", "ok"]
    assert "dryrun.fail" in results[0]["error"]
    assert "RuntimeError" in (tmp_path / "plan" / "0" / "error.txt").read_text()
    # the CLI exits non-zero for a task with a failed entry, and re-running retries only that one
    rerun = run_plan_entries(plan, [0, 1], settings)
    assert [r.get("skipped", False) for r in rerun] == [False, True]
    assert rerun[0]["attempts"] == 2


def test_ok_result_is_not_rerun(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    calls = []

    def fake(cfg):
        calls.append(cfg.optim.lr_g)
        return {"physics_score": 1.0}

    settings = RunSettings(config_dir=str(conf), train_fn=fake)
    first = run_trial(["optim.lr_g=0.5"], tmp_path / "r", settings)
    second = run_trial(["optim.lr_g=0.5"], tmp_path / "r", settings)
    assert calls == [0.5]
    assert first["status"] == "ok" and second["skipped"] is True


def test_missing_objective_counts_as_failed(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    settings = RunSettings(config_dir=str(conf), train_fn=lambda cfg: {"loss": 1.0})
    res = run_trial([], tmp_path / "r", settings)
    assert res["status"] == "failed" and "physics_score" in res["error"]


def test_killed_entry_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    plan = _plan(tmp_path, "optim.lr_g=0.001 +dryrun.epochs=4")
    cmd = [
        sys.executable,
        "-m",
        "hepgan.cli.sweep",
        "run",
        str(plan),
        "0",
        "--config-dir",
        str(conf),
        "--train-fn",
        DRYRUN,
    ]
    killed = subprocess.run(cmd, env={**os.environ, "HEPGAN_DRYRUN_KILL_AT_EPOCH": "2"}, capture_output=True)
    assert killed.returncode == 137
    rd = tmp_path / "plan" / "0"
    assert not (rd / "result.json").exists()
    assert json.loads((rd / "meta.json").read_text())["state"] == "running"

    requeued = subprocess.run(cmd, capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr
    res = json.loads((rd / "result.json").read_text())
    assert res["status"] == "ok"
    assert res["metrics"]["resumed_from_epoch"] == 2
    assert res["attempts"] == 2
    # the dry run's analytic objective at lr 1e-3, batch 64 (the base config) after 4 epochs
    expected = ((math.log10(1e-3) + 3.3) ** 2 + 0.1 * abs(math.log2(64 / 128))) * (1 + 1 / 4)
    assert res["objective_value"] == pytest.approx(expected)


def _dryrun():
    from hepgan.sweep.dryrun import fit

    return fit


@pytest.mark.parametrize("scheduler", ["slurm", "lsf"])
def test_array_templates_run_their_task(tmp_path: Path, scheduler: str) -> None:
    repo = Path(__file__).resolve().parents[1]
    conf = write_conf(tmp_path)
    plan = _plan(tmp_path, "optim.lr_g=0.001", "optim.lr_g=0.002")
    shim = tmp_path / "bin" / "hepgan-sweep"  # the console script, without needing the package reinstalled
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hepgan.cli.sweep "$@"\n')
    shim.chmod(0o755)
    srun = shim.parent / "srun"  # the Slurm template starts the task as a job step; run it in place
    srun.write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    srun.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LSB_"))}
    env["PATH"] = f"{shim.parent}:{env['PATH']}"
    opts = ["--config-dir", str(conf), "--train-fn", DRYRUN]
    if scheduler == "slurm":
        env |= {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "99"}
        cmd = ["bash", str(repo / "slurm" / "array_slurm.sbatch"), str(plan), *opts]
    else:
        env |= {"LSB_JOBINDEX": "2", "LSB_JOBID": "99", "PLAN": str(plan)}
        env["HEPGAN_SWEEP_ARGS"] = " ".join(opts)
        cmd = ["bash", str(repo / "slurm" / "array_lsf.bsub")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.parent.name for p in (tmp_path / "plan").glob("*/result.json")) == ["1"]
    assert (tmp_path / "jax-cache").is_dir()  # the campaign's shared compilation cache, next to the plan
