"""Shared pieces of the sweep tests: a small Hydra config tree shaped like ``hepgan.conf``."""

from __future__ import annotations

from pathlib import Path


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
