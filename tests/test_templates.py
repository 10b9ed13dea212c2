"""The scheduler templates in slurm/: syntax, exit-75 requeue logic, LSF overrides, signal forwarding.

Each template runs under bash with fake `srun`/`scontrol`/`jsrun`/`mpirun`/`hepgan-train`/`hepgan-sweep`
executables (written into tmp_path) first on PATH; the fakes record their arguments in files.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "slurm"
TEMPLATES = sorted(p for p in SLURM.iterdir() if p.suffix in (".sbatch", ".bsub", ".sh") and p.is_file())

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# A fake program: records its arguments (one per line) and exits with $FAKE_RC (default 0).
FAKE_PROGRAM = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/{name}.args"
exit "${{FAKE_RC:-0}}"
"""
# Fake launchers: record their arguments, then run the command that follows their own options.
FAKE_SRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/srun.args"
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
exec "$@"
"""
FAKE_JSRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/jsrun.args"
while [[ $# -gt 0 && $1 != hepgan-* ]]; do shift; done
exec "$@"
"""
FAKE_MPIRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/mpirun.args"
shift 2  # -n N
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
echo "$*" >> "$FAKE_LOG/scontrol.log"
exit "${FAKE_SCONTROL_RC:-0}"
"""
# A trainer that waits to be told to stop: SIGUSR1 -> exit 75 (what hepgan-train does at pre-emption),
# after a pause in which a later SIGUSR1 is recorded too. It does not trap SIGTERM, so a launcher that
# passes SIGTERM on unchanged kills it (exit 143).
FAKE_WAITING_TRAINER = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/{name}.args"
stop=
trap 'echo USR1 >> "$FAKE_LOG/{name}.signals"; stop=1' USR1
touch "$FAKE_LOG/{name}.started"
for _ in $(seq 600); do
  sleep 0.05
  [[ -n $stop ]] && break
done
[[ -n $stop ]] || exit 0
sleep 0.5
exit 75
"""


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, object]:
    """Fake scheduler/launcher/entry-point executables on PATH; returns env and the log folder."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    _write(bin_dir / "srun", FAKE_SRUN)
    _write(bin_dir / "jsrun", FAKE_JSRUN)
    _write(bin_dir / "mpirun", FAKE_MPIRUN)
    _write(bin_dir / "scontrol", FAKE_SCONTROL)
    for name in ("hepgan-train", "hepgan-sweep"):
        _write(bin_dir / name, FAKE_PROGRAM.format(name=name))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LSB_", "HEPGAN_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_LOG=str(log))
    return {"env": env, "log": log, "bin": bin_dir, "cwd": tmp_path}


def _run(script: str, args: list[str], fakes: dict, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SLURM / script), *args],
        env={**fakes["env"], **env},
        cwd=fakes["cwd"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _args(fakes: dict, name: str) -> list[str]:
    return (fakes["log"] / f"{name}.args").read_text().splitlines()


def _requeues(fakes: dict) -> list[str]:
    log = fakes["log"] / "scontrol.log"
    return log.read_text().splitlines() if log.exists() else []


def _directives(script: str, prefix: str) -> list[list[str]]:
    """The #SBATCH / #BSUB lines before the first command, each split like a shell would."""
    out = []
    for line in (SLURM / script).read_text().splitlines()[1:]:
        if line.startswith(prefix + " "):
            out.append(shlex.split(line[len(prefix) :]))
        elif line.strip() and not line.startswith("#"):
            break
    return out


def test_every_template_is_valid_bash() -> None:
    assert {p.name for p in TEMPLATES} >= {
        "train_srun.sbatch",
        "array_slurm.sbatch",
        "train_lsf.bsub",
        "array_lsf.bsub",
        "train_mpirun.sh",
    }
    for path in TEMPLATES:
        res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, f"{path.name}: {res.stderr}"


# ---------------------------------------------------------------------------------------------- Slurm

SLURM_CASES = [
    # script, program, args, env, the id that must be requeued
    (
        "train_srun.sbatch",
        "hepgan-train",
        ["out=runs/x", "train.batch_size=64"],
        {"SLURM_JOB_ID": "4242"},
        "4242",
    ),
    (
        "array_slurm.sbatch",
        "hepgan-sweep",
        ["hpo/plan.txt", "--per-task", "2"],
        # an array task has its own SLURM_JOB_ID; the requeue must name <array job>_<task>
        {"SLURM_JOB_ID": "5007", "SLURM_ARRAY_JOB_ID": "5000", "SLURM_ARRAY_TASK_ID": "7"},
        "5000_7",
    ),
]


@pytest.mark.parametrize(("script", "program", "args", "env", "job"), SLURM_CASES)
def test_slurm_preempted_step_is_requeued(fakes, script, program, args, env, job) -> None:
    res = _run(script, args, fakes, FAKE_RC="75", **env)
    assert res.returncode == 0, res.stderr
    assert _requeues(fakes) == [f"requeue {job}"]
    assert "pre-empted" in res.stderr


@pytest.mark.parametrize(("script", "program", "args", "env", "job"), SLURM_CASES)
@pytest.mark.parametrize("code", ["1", "2", "137"])
def test_slurm_failure_propagates_without_requeue(fakes, script, program, args, env, job, code) -> None:
    res = _run(script, args, fakes, FAKE_RC=code, **env)
    assert res.returncode == int(code)
    assert _requeues(fakes) == []


@pytest.mark.parametrize(("script", "program", "args", "env", "job"), SLURM_CASES)
def test_slurm_success_does_not_requeue(fakes, script, program, args, env, job) -> None:
    res = _run(script, args, fakes, FAKE_RC="0", **env)
    assert res.returncode == 0, res.stderr
    assert _requeues(fakes) == []


@pytest.mark.parametrize(("script", "program", "args", "env", "job"), SLURM_CASES)
def test_slurm_failed_requeue_is_not_reported_as_success(fakes, script, program, args, env, job) -> None:
    res = _run(script, args, fakes, FAKE_RC="75", FAKE_SCONTROL_RC="1", **env)
    assert res.returncode == 75
    assert _requeues(fakes) == [f"requeue {job}"]


def test_slurm_overrides_reach_the_step(fakes) -> None:
    res = _run("train_srun.sbatch", ["out=runs/x", "train.batch_size=64"], fakes, SLURM_JOB_ID="1")
    assert res.returncode == 0, res.stderr
    assert _args(fakes, "hepgan-train") == ["parallel.launcher=auto", "out=runs/x", "train.batch_size=64"]
    srun = _args(fakes, "srun")
    # kill-on-bad-exit=1 would turn a staggered exit 75 into 137 (no requeue); --wait bounds a crash
    assert "--kill-on-bad-exit=0" in srun
    assert any(a.startswith("--wait=") for a in srun)

    res = _run(
        "array_slurm.sbatch",
        ["hpo/plan.txt", "--offset", "1000"],
        fakes,
        SLURM_JOB_ID="9",
        SLURM_ARRAY_JOB_ID="9",
        SLURM_ARRAY_TASK_ID="0",
    )
    assert res.returncode == 0, res.stderr
    assert _args(fakes, "hepgan-sweep") == ["run", "hpo/plan.txt", "auto", "--offset", "1000"]


@pytest.mark.parametrize("script", ["train_srun.sbatch", "array_slurm.sbatch"])
def test_slurm_directives_signal_the_step_and_allow_requeue(script) -> None:
    flat = [tok for line in _directives(script, "#SBATCH") for tok in line]
    signals = [t.split("=", 1)[1] for t in flat if t.startswith("--signal=")]
    assert len(signals) == 1
    # no "B:" prefix: that would signal only the batch shell, never hepgan-train in the job step
    m = re.fullmatch(r"(?:SIG)?USR1@(\d+)", signals[0])
    assert m, signals[0]
    assert 60 <= int(m.group(1)) <= 900
    assert "--requeue" in flat
    assert "--open-mode=append" in flat


def test_slurm_outside_a_job_is_a_clear_error(fakes) -> None:
    res = _run("train_srun.sbatch", [], fakes)
    assert res.returncode != 0
    assert "sbatch" in res.stderr
    res = _run("array_slurm.sbatch", ["hpo/plan.txt"], fakes)
    assert res.returncode != 0
    assert "--array" in res.stderr
    assert not (fakes["log"] / "srun.args").exists()


# ------------------------------------------------------------------------------------------------ LSF


@pytest.mark.parametrize("script", ["train_lsf.bsub", "array_lsf.bsub"])
def test_lsf_directives_warn_and_requeue_on_75(script) -> None:
    opts: dict[str, list[str]] = {}
    for tokens in _directives(script, "#BSUB"):
        opts[tokens[0]] = tokens[1:]
    assert opts["-wa"] in (["USR1"], ["SIGUSR1"])
    (warn,) = opts["-wt"]
    assert re.fullmatch(r"\d+", warn) and 1 <= int(warn) <= 15, warn  # minutes
    assert "-r" in opts
    (exit_values,) = opts["-Q"]
    assert "75" in exit_values.split()


def _lsf_env(tmp_path: Path) -> dict[str, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("batch1\n" + "h1\n" * 6 + "h2\n" * 6)
    return {"LSB_DJOB_HOSTFILE": str(hosts), "LSB_JOBID": "77"}


def test_lsf_train_overrides_come_from_hepgan_args(fakes, tmp_path) -> None:
    res = _run(
        "train_lsf.bsub",
        [],
        fakes,
        HEPGAN_ARGS="out=runs/lsf24  train.batch_size=3072 scaling.rule=linear",
        **_lsf_env(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    assert _args(fakes, "hepgan-train") == [
        "parallel.backend=xla",
        "parallel.launcher=auto",
        "out=runs/lsf24",
        "train.batch_size=3072",
        "scaling.rule=linear",
    ]
    jsrun = _args(fakes, "jsrun")
    assert jsrun[jsrun.index("--nrs") + 1] == "12"  # 2 compute nodes x 6 GPUs, the batch node left out


@pytest.mark.parametrize("code", [75, 1])
def test_lsf_train_passes_the_exit_code_on(fakes, tmp_path, code) -> None:
    res = _run("train_lsf.bsub", [], fakes, FAKE_RC=str(code), **_lsf_env(tmp_path))
    assert res.returncode == code  # 75 -> LSF requeues (-Q "75")


def test_lsf_array_takes_plan_and_options_from_the_environment(fakes) -> None:
    res = _run(
        "array_lsf.bsub",
        [],
        fakes,
        PLAN="hpo/plan.txt",
        HEPGAN_SWEEP_ARGS="--offset 1000 --per-task 4",
        LSB_JOBINDEX="3",
    )
    assert res.returncode == 0, res.stderr
    assert _args(fakes, "hepgan-sweep") == [
        "run",
        "hpo/plan.txt",
        "auto",
        "--offset",
        "1000",
        "--per-task",
        "4",
    ]
    res = _run("array_lsf.bsub", [], fakes, PLAN="hpo/plan.txt", FAKE_RC="75")
    assert res.returncode == 75


def test_lsf_outside_a_job_or_without_plan_is_a_clear_error(fakes) -> None:
    res = _run("train_lsf.bsub", [], fakes)
    assert res.returncode != 0
    assert "bsub" in res.stderr
    res = _run("array_lsf.bsub", [], fakes)
    assert res.returncode != 0
    assert "PLAN" in res.stderr


# Starts argv[1:] with default dispositions for the signals the scripts trap. A signal ignored when bash
# starts cannot be trapped, and the test process may have inherited SIGINT ignored (a pytest-xdist
# worker, or a test that left it so); a scheduler starts job scripts with the defaults. (A preexec_fn
# would do the same but makes subprocess fork the multithreaded test process.)
_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1): signal.signal(s, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def _start(script: str, args: list[str], fakes: dict, program: str, **env: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WITH_DEFAULT_SIGNALS, "bash", str(SLURM / script), *args],
        env={**fakes["env"], **env},
        cwd=fakes["cwd"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started = fakes["log"] / f"{program}.started"
    deadline = time.monotonic() + 30
    while not started.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{program} never started: {proc.communicate()}")
        time.sleep(0.05)
    return proc


def test_lsf_warning_signal_does_not_kill_the_script(fakes, tmp_path) -> None:
    # LSF signals every process of the job: the script must survive and report hepgan-train's 75.
    _write(fakes["bin"] / "hepgan-train", FAKE_WAITING_TRAINER.format(name="hepgan-train"))
    proc = _start("train_lsf.bsub", [], fakes, "hepgan-train", **_lsf_env(tmp_path))
    os.killpg(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert (fakes["log"] / "hepgan-train.signals").read_text().split() == ["USR1"]


# --------------------------------------------------------------------------------------------- mpirun


def test_mpirun_overrides_and_exit_code(fakes) -> None:
    res = _run("train_mpirun.sh", ["2", "out=runs/ws2", "train.batch_size=64"], fakes, FAKE_RC="75")
    assert res.returncode == 75
    assert _args(fakes, "mpirun")[:2] == ["-n", "2"]
    assert _args(fakes, "hepgan-train") == [
        "parallel.backend=mpi",
        "parallel.launcher=auto",
        "out=runs/ws2",
        "train.batch_size=64",
    ]
    res = _run("train_mpirun.sh", ["2", "out=runs/ws2"], fakes, FAKE_RC="3")
    assert res.returncode == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_mpirun_script_turns_term_and_int_into_one_usr1(fakes, sig) -> None:
    # Only the script is signalled (as by `kill PID` or sbatch --signal=B:TERM): the ranks must get one
    # SIGUSR1 (Open MPI's mpirun kills ranks on SIGTERM/SIGINT) and the script must exit with their 75.
    _write(fakes["bin"] / "hepgan-train", FAKE_WAITING_TRAINER.format(name="hepgan-train"))
    proc = _start("train_mpirun.sh", ["2", "out=runs/ws2"], fakes, "hepgan-train")
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert (fakes["log"] / "hepgan-train.signals").read_text().split() == ["USR1"]


def test_mpirun_script_leaves_a_job_wide_usr1_to_mpirun(fakes) -> None:
    # A scheduler signalling every process (LSF -wa): the ranks get it directly, and the script must
    # survive it (bash would die of an untrapped SIGUSR1) and report the ranks' 75.
    _write(fakes["bin"] / "hepgan-train", FAKE_WAITING_TRAINER.format(name="hepgan-train"))
    proc = _start("train_mpirun.sh", ["2", "out=runs/ws2"], fakes, "hepgan-train")
    os.killpg(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err
    assert (fakes["log"] / "hepgan-train.signals").read_text().split() == ["USR1"]


# ----------------------------------------------------------------------------------------------- docs


def test_training_doc_uses_existing_debug_config() -> None:
    text = (SLURM / "TRAINING.md").read_text()
    assert "experiment=debug" not in text
    assert "debug=default" in text
    assert (ROOT / "hepgan" / "conf" / "debug" / "default.yaml").exists()
