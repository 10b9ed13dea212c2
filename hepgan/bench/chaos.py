"""Chaos benchmark: SIGKILL a training run at random moments, restart it until it finishes, compare.

``hepgan-bench chaos`` (or ``python -m hepgan.bench.chaos --kills 10 --out DIR``) trains the ``debug``
preset (tiny 3DGAN, simulated showers, checkpoints every 2 steps, validation every epoch) once without
interruption, then again in a second folder while killing it ``kills`` times with SIGKILL (no warning,
no clean-up: what a node failure or an OOM killer does), aimed in turn at a checkpoint write (an Orbax
temporary folder exists) and at a random moment of a random remaining step, and the last one at the end
of the run (after the last step: final validation, saves, report). After each kill the same command is started
again, as a Slurm requeue would, until it exits 0.

The result records the kills (and how many hit a checkpoint write), the restarts, and whether the
interrupted run ended **bitwise equal** to the uninterrupted one (SHA-256 of every array of the final
state), with the same training and validation log rows (nothing lost, nothing twice) and
``result.json`` ``ok``. Every process runs on one CPU device with a shared persistent compilation cache,
so restarts cost start-up, not compilation.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_TMP_MARK = ".orbax-checkpoint-tmp"
#: where the kills are aimed: in turn an Orbax save in flight and a random moment of a random remaining step,
#: and last the end of the run (final validation, checkpoints, report, before result.json)
AIMS = ("checkpoint write", "random step", "after the last step")
log = logging.getLogger(__name__)


def _overrides(run_dir: Path, steps: int) -> list[str]:
    return [
        "debug=default",
        f"out={run_dir}",
        "parallel.devices=1",
        f"train.max_steps={steps}",
        "train.ckpt_every_steps=2",
        "data.n_events=128",  # 8 steps per epoch: validation and best saves inside the run
    ]


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        "PYTHONUNBUFFERED": "1",
    }


def _start(run_dir: Path, steps: int, cache: Path, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("hepgan-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hepgan.cli.train"]
    with open(log, "a") as f:
        return subprocess.Popen(
            [*cmd, *_overrides(run_dir, steps)], env=_env(cache), stdout=f, stderr=subprocess.STDOUT
        )


def _writing_checkpoint(run_dir: Path) -> bool:
    """Whether an Orbax save is in flight (its temporary folder exists) under ``run_dir``."""
    for sub in ("checkpoints", "best"):
        folder = run_dir / sub
        if folder.is_dir() and any(_TMP_MARK in p.name for p in folder.iterdir()):
            return True
    return False


def _final_fingerprint(run_dir: Path) -> str:
    """SHA-256 of the newest checkpoint's restored state (:func:`hepgan.train.checkpoint.fingerprint`)."""
    from hepgan.train.checkpoint import fingerprint, restore_run

    _, state, _, _ = restore_run(run_dir)
    return fingerprint(state)


def _log_steps(run_dir: Path, kind: str) -> list[int]:
    path = run_dir / f"{kind}.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def chaos(kills: int, steps: int, seed: int, work: Path) -> dict[str, Any]:
    """Run the experiment in ``work`` (see the module docstring); returns the figures."""
    rng = random.Random(seed)
    cache = work / "jax-cache"
    ref, run = work / "reference", work / "chaos"
    t0 = time.perf_counter()
    proc = _start(ref, steps, cache, work / "reference.log")
    if proc.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed; see {work / 'reference.log'}")
    reference_s = time.perf_counter() - t0

    killed, restarts, attempts = 0, 0, []
    by_aim = {aim: 0 for aim in AIMS}
    t_chaos = time.perf_counter()
    while True:
        # the end of the run last: once a kill lands there, no step is left to aim at
        aim = None if killed >= kills else AIMS[2] if killed == kills - 1 else AIMS[killed % 2]
        done_rows = len(_log_steps(run, "train"))
        # one of the next few steps (the rows of train.csv tell the progress), then a random moment in
        # it: near enough that every kill lands before the run ends
        target = min(done_rows + rng.randint(1, 4), steps - 1)
        delay = rng.uniform(0.0, 0.5)
        t_start = time.perf_counter()
        proc = _start(run, steps, cache, work / "chaos.log")
        outcome, reached = None, None
        while outcome is None:
            rc = proc.poll()
            if rc is not None:
                outcome = f"exit {rc}"
                break
            rows = len(_log_steps(run, "train"))
            writing = _writing_checkpoint(run)
            if aim == "random step" and rows >= target and reached is None:
                reached = time.perf_counter()
            hit = {
                "checkpoint write": writing and rows > done_rows,
                "random step": reached is not None and time.perf_counter() - reached >= delay,
                "after the last step": rows >= steps,
            }.get(aim or "", False)
            if hit:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                by_aim[aim] += 1  # type: ignore[index]
                outcome = f"killed: {aim}" + (" (a checkpoint write was in flight)" if writing else "")
                break
            time.sleep(0.002 if aim == "checkpoint write" else 0.02)
        attempts.append({"seconds": round(time.perf_counter() - t_start, 2), "outcome": outcome})
        if outcome == "exit 0":
            if killed < kills:  # finished before the aimed moment came: the run is done, count what hit
                log.warning("the run finished after %d of %d kills", killed, kills)
            break
        if outcome.startswith("exit"):  # a restart that fails on its own is the finding
            raise RuntimeError(f"a restart failed ({outcome}); see {work / 'chaos.log'}")
        restarts += 1
        if restarts > kills + 10:
            raise RuntimeError(f"no finish after {restarts} restarts; see {work / 'chaos.log'}")
    chaos_s = time.perf_counter() - t_chaos

    result_json = json.loads((run / "result.json").read_text())
    fp_ref, fp_run = _final_fingerprint(ref), _final_fingerprint(run)
    logs_equal = all(_log_steps(ref, k) == _log_steps(run, k) for k in ("train", "val"))
    return {
        "config": " ".join(_overrides(Path("RUN"), steps)),
        "steps": steps,
        "kills": killed,
        "kills_by_aim": by_aim,
        "restarts": restarts,
        "attempts": attempts,
        "bitwise_equal": fp_ref == fp_run,
        "final_fingerprint": fp_run,
        "logs_equal": logs_equal,
        "train_rows": len(_log_steps(run, "train")),
        "result_status": result_json.get("status"),
        "nothing_lost": fp_ref == fp_run and logs_equal and result_json.get("status") == "ok",
        "reference_seconds": round(reference_s, 1),
        "chaos_seconds": round(chaos_s, 1),
    }


def run(
    quick: bool = False, kills: int | None = None, seed: int = 0, keep: str | None = None
) -> dict[str, Any]:
    """``hepgan-bench chaos``: ``kills`` SIGKILLs (default 12; 3 with ``quick``) of a tiny run.

    ``keep``: a folder to keep the runs and logs in (default: a temporary folder, removed).
    Returns the figures of :func:`chaos`.
    """
    n_kills = kills if kills is not None else (3 if quick else 12)
    steps = max(12 if quick else 24, 4 * n_kills)  # room for every kill before the last step
    if keep is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return chaos(n_kills, steps, seed, Path(keep))
    with tempfile.TemporaryDirectory(prefix="hepgan-chaos-") as tmp:
        return chaos(n_kills, steps, seed, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    """``python -m hepgan.bench.chaos``: run and write ``<out>/chaos.json``."""
    from hepgan.bench.common import write_result

    p = argparse.ArgumentParser(prog="python -m hepgan.bench.chaos", description=__doc__)
    p.add_argument("--kills", type=int, default=12, help="SIGKILLs (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--quick", action="store_true", help="a 12-step run")
    p.add_argument("--keep", default=None, help="keep runs and logs in this folder")
    p.add_argument("--out", default="experiments/bench", help="folder for chaos.json")
    a = p.parse_args(argv)
    if a.kills < 0:
        p.error(f"--kills must be at least 0; got {a.kills}")
    res = run(quick=a.quick, kills=a.kills, seed=a.seed, keep=a.keep)
    print(json.dumps({k: v for k, v in res.items() if k != "attempts"}, indent=2))
    print(f"wrote {write_result('chaos', res, a.out)}")
    return 0 if res["nothing_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
