"""Shared pieces of the sweep tests: a small Hydra config tree shaped like ``hepgan.conf`` and stand-in
trainings (importable as ``sweep_helpers:<name>`` by ``--train-fn`` with the tests folder on the path)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any


def write_conf(root: Path) -> Path:
    """Write ``root/conf`` with a ``model`` group (``small``, ``paper``) and return its path."""
    conf = root / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "config.yaml").write_text(
        "defaults:\n  - model: small\n  - _self_\nout: null\n"
        "optim:\n  lr_g: 0.001\ntrain:\n  batch_size: 64\n"
    )
    (conf / "model" / "small.yaml").write_text("size: small\n")
    (conf / "model" / "paper.yaml").write_text("size: paper\n")
    return conf


class Preempted(RuntimeError):
    """Stand-in for ``hepgan.train.loop.Preempted`` (the sweep room recognises it by its class name)."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"signal {signum}: stopped after step {step}; run again to resume")
        self.signum, self.step = signum, step


def _run_dir(cfg: Any) -> Path:
    from omegaconf import OmegaConf

    rd = Path(str(OmegaConf.select(cfg, "out")))
    rd.mkdir(parents=True, exist_ok=True)
    return rd


def hang_train(cfg: Any, report: Any = None) -> dict[str, float]:
    """Marks ``started`` in the run dir, then trains "for ever" (2 min): a worker to kill mid-trial."""
    rd = _run_dir(cfg)
    (rd / "started").write_text("1")
    time.sleep(120)
    return {"physics_score": 1.0}


def preempt_once(cfg: Any, report: Any = None) -> dict[str, float]:
    """Raises :class:`Preempted` (after a "checkpoint") the first time it runs in a run dir; the rerun
    resumes from it and finishes with ``physics_score`` = the learning rate."""
    rd = _run_dir(cfg)
    ckpt = rd / "ckpt"
    if not ckpt.exists():
        ckpt.write_text("step 4")
        raise Preempted(signal.SIGTERM, 4)
    return {"physics_score": float(cfg.optim.lr_g), "resumed_from": ckpt.read_text()}
