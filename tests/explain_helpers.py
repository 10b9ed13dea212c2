"""Tiny trained runs for the explain tests: a healthy one and a deliberately collapsed one.

``collapsed_latent()`` (:mod:`hepgan.explain.faults`) is the fault injection: the generator ignores its
noise. Used around training *and* around the views that sample the generator, so the run is collapsed
wherever it is looked at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from hepgan.explain.faults import collapsed_latent

__all__ = ["collapsed_latent", "train_tiny"]


def train_tiny(out: Path, *, collapsed: bool = False, steps: int = 8, extra: Sequence[str] = ()) -> Path:
    """Train the tiny fixed-angle 3DGAN (``debug=default``: 64 simulated events, batch 16, 4 steps per
    epoch, validation each epoch on 256 reference showers) for ``steps`` steps into ``out``; with
    ``collapsed`` under :func:`collapsed_latent`. Logs every step, every checkpoint kept. Returns ``out``."""
    from hepgan.train import fit
    from hepgan.train.config import compose

    cfg = compose(
        [
            "debug=default",
            "data.n_reference=256",  # enough showers per energy bin for the diversity indicator
            f"train.max_steps={steps}",
            f"train.keep_last={steps + 1}",
            "parallel.devices=1",
            f"out={out}",
            *extra,
        ]
    )
    with collapsed_latent() if collapsed else contextlib.nullcontext():
        fit(cfg, handle_signals=False)
    return out


#: the one configuration of the shared tiny runs (what every explain test needs: per-layer norms every 2
#: steps, TensorBoard, the report; 8 steps = validations at 0, 4 and 8)
SHARED_STEPS = 8
SHARED_EXTRA = ("logging.layer_stats_every=2", "logging.tensorboard=true", "train.report=true")


def shared_run(tmp_path_factory, name: str) -> Path:
    """A private copy of the shared tiny run ``name`` ("healthy" or "collapsed"), trained once per test
    session: under pytest-xdist the workers share one cache folder beside their own temporary folders and
    take turns through a file lock, so each run is trained once, not once per test file."""
    import fcntl
    import shutil

    if name not in ("healthy", "collapsed"):
        raise ValueError(f"shared runs are 'healthy' and 'collapsed'; got {name!r}")
    base = Path(tmp_path_factory.getbasetemp())
    cache = (base.parent if base.name.startswith("popen-gw") else base) / "explain_shared_runs"
    cache.mkdir(parents=True, exist_ok=True)
    trained = cache / name
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (trained / "fit_result.json").exists():
                shutil.rmtree(trained, ignore_errors=True)
                train_tiny(trained, collapsed=name == "collapsed", steps=SHARED_STEPS, extra=SHARED_EXTRA)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    copy = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(trained, copy)
    return copy
