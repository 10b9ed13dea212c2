"""A stand-in training for rehearsing a campaign's plumbing without a GPU or a minute of real training.

``hepgan-sweep run PLAN 0 --train-fn hepgan.sweep.dryrun:fit`` goes through everything a real campaign does
(compose the config, run in the entry's directory, checkpoint, report for pruning, resume after a kill,
write result.json) in well under a second per entry, so that the Slurm/LSF/PanDA set-up can be checked
before GPU hours are spent. Its objective is an analytic bowl in the usual hyperparameters:

    physics_score = (log10(optim.lr_g) + 3.3)^2 + 0.1 * |log2(train.batch_size / 128)|   (final epoch)

and it understands a few keys of its own (add with ``+dryrun.<key>=...``): ``epochs`` (default 3),
``fail`` (raise at start), ``sleep_s`` (per epoch). The environment variable
``HEPGAN_DRYRUN_KILL_AT_EPOCH=k`` ends the process abruptly after checkpointing epoch ``k`` (a node failure).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from hepgan.fileio import write_json
from hepgan.sweep.runner import Reporter

RUN_DIR_KEYS = ("out", "run_dir")


def objective(lr_g: float, batch: float) -> float:
    """The dry run's final ``physics_score`` (lower is better; minimum 0 at lr 10^-3.3, batch 128)."""
    return (math.log10(lr_g) + 3.3) ** 2 + 0.1 * abs(math.log2(batch / 128.0))


def fit(cfg: Any, report: Reporter | None = None) -> dict[str, Any]:
    """Pretend to train: ``epochs`` epochs with a checkpoint and a ``report`` after each; returns metrics.

    Resumes from ``dryrun_ckpt.json`` in its run directory (the config's ``out``, else the cwd).
    """
    from omegaconf import OmegaConf

    def sel(key: str, default: Any) -> Any:
        v = OmegaConf.select(cfg, key, default=default)
        return default if v is None else v

    run_dir = Path(next((str(sel(k, "")) for k in RUN_DIR_KEYS if sel(k, "")), "."))
    run_dir.mkdir(parents=True, exist_ok=True)
    if bool(sel("dryrun.fail", False)):
        raise RuntimeError("dry run asked to fail (dryrun.fail=true)")
    lr = float(sel("optim.lr_g", 1e-3))
    batch = float(sel("train.batch_size", 128))
    if lr <= 0 or batch <= 0:
        raise ValueError(f"dry run needs optim.lr_g > 0 and train.batch_size > 0; got {lr}, {batch}")
    epochs = int(sel("dryrun.epochs", 3))
    kill_at = int(os.environ.get("HEPGAN_DRYRUN_KILL_AT_EPOCH", "-1"))

    ckpt = run_dir / "dryrun_ckpt.json"
    start = json.loads(ckpt.read_text())["epoch"] if ckpt.exists() else 0
    final = objective(lr, batch)
    score = math.inf
    for epoch in range(start, epochs):
        time.sleep(float(sel("dryrun.sleep_s", 0.0)))
        score = final * (1.0 + 1.0 / (epoch + 1))  # improves towards `final` as training goes on
        write_json(ckpt, {"epoch": epoch + 1})
        if epoch + 1 == kill_at:
            os._exit(137)  # as abrupt as SIGKILL: no result, no clean-up
        if report is not None:
            report(epoch + 1, {"physics_score": score})
    if start >= epochs:
        score = final * (1.0 + 1.0 / epochs)
    return {
        "physics_score": score,
        "sf_rel_error": abs(math.log10(lr) + 3.3) / 10,
        "epochs": epochs,
        "resumed_from_epoch": start,
        "checkpoint": str(ckpt),
    }
