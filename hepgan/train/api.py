"""Two entry points around the trainer that sweeps and studies call: compile only, and score a checkpoint.

``compile_step(cfg)`` fills the (persistent) compilation cache for a config's shapes by running
:func:`hepgan.train.fit` itself for one step in a scratch directory, so the programs it compiles are the
ones a real run of that config compiles (no second copy of the trainer to keep in step).
``evaluate_checkpoint(run_dir)`` regenerates showers from a run's checkpoint at the conditions of a fresh
held-out reference sample and scores them with :func:`hepgan.physics.metrics.evaluate`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# events of a fresh simulated reference start after the run's own validation events of the same stream
_FRESH_SEED_STRIDE = 1_000_003


class _CompileCounter:
    """Sums JAX's backend compile time and persistent-cache hits/misses while active (jax.monitoring)."""

    def __init__(self) -> None:
        self.compile_seconds, self.compiles, self.cache_hits, self.cache_misses = 0.0, 0, 0, 0

    def _duration(self, event: str, duration: float, **_: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            self.compile_seconds += duration
            self.compiles += 1

    def _event(self, event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            self.cache_hits += 1
        elif event == "/jax/compilation_cache/cache_misses":
            self.cache_misses += 1

    def __enter__(self) -> _CompileCounter:
        import jax.monitoring as jm

        jm.register_event_duration_secs_listener(self._duration)  # type: ignore[arg-type]
        jm.register_event_listener(self._event)
        return self

    def __exit__(self, *exc: object) -> None:
        import jax.monitoring as jm

        jm.unregister_event_duration_listener(self._duration)  # type: ignore[arg-type]
        jm.unregister_event_listener(self._event)


def compile_step(cfg: Any) -> dict[str, Any]:
    """Compile the training step (and the validation generator) of ``cfg`` without training it.

    ``cfg``: a composed config (DictConfig, dict or :class:`hepgan.train.config.Config`). Runs ``fit`` for
    one step in a temporary directory with the config's model, batch, mesh and optimizer, on just enough
    simulated events for that step, no report or TensorBoard. With a persistent compilation cache
    configured (:func:`hepgan.sweep.cache.configure_compile_cache`) every program lands there. The number
    of training steps is part of a cosine learning-rate schedule (``scaling.decay=cosine``), so for such
    configs a warmed program is not the one of the full run; constant schedules (the default) match.

    Returns ``{"wall_s": seconds for the whole call, "first_step_s": seconds of the first training
    step (compile + run), "compile_s": XLA compile seconds, "compiles", "cache_hits", "cache_misses"}``.
    """
    from hepgan.train.config import to_config
    from hepgan.train.loop import fit

    conf = to_config(cfg)
    tc = conf.train
    train = dataclasses.replace(
        tc, max_steps=1, resume=False, report=False, val_metrics=["sf"],
        val_events=max(tc.batch_size, 64), keep_last=1, keep_best=False,
    )  # fmt: skip
    data = conf.data
    if data.kind == "simulated":  # simulating the full training set would dwarf the compilation
        data = dataclasses.replace(data, n_events=min(data.n_events, 2 * tc.batch_size))
    logging_cfg = dataclasses.replace(conf.logging, tensorboard=False, progress=False, csv=False)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hepgan-compile-") as tmp, _CompileCounter() as counter:
        run = dataclasses.replace(conf, train=train, data=data, logging=logging_cfg, out=tmp)
        result = fit(run)
    return {
        "wall_s": time.perf_counter() - t0,
        "first_step_s": float(result["timing"]["train_seconds"]),
        "compile_s": counter.compile_seconds,
        "compiles": counter.compiles,
        "cache_hits": counter.cache_hits,
        "cache_misses": counter.cache_misses,
    }


def _which_checkpoint(run_dir: Path, checkpoint: str | Path | None) -> tuple[Path, bool, int | None]:
    """``(run directory, use best, step or None)`` from a run directory and a checkpoint spec (see
    evaluate_checkpoint); ``run_dir`` itself may also point inside the run."""
    if checkpoint is not None and str(checkpoint) in ("best", "latest"):
        root = _which_checkpoint(run_dir, None)[0]
        return root, str(checkpoint) == "best" and (root / "best").is_dir(), None
    path = run_dir
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_absolute() and not path.exists():
            path = run_dir / path
        if not path.exists():
            raise FileNotFoundError(
                f"checkpoint {checkpoint!r}: neither 'best', 'latest' nor an existing folder "
                f"(looked for {path})"
            )
    parts = path.resolve().parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("best", "checkpoints") and (Path(*parts[:i]) / "manifest.json").exists():
            step = int(parts[i + 1]) if i + 1 < len(parts) and parts[i + 1].isdigit() else None
            return Path(*parts[:i]), parts[i] == "best", step
    return path, (path / "best").is_dir(), None


def evaluate_checkpoint(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    n_events: int = 5000,
    seed: int = 0,
    *,
    metrics: list[str] | str | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, float]:
    """Score a trained run's generator on ``n_events`` fresh held-out showers; returns the metrics.

    ``run_dir``: a directory written by ``hepgan-train`` (``manifest.json``, ``checkpoints/``, ``best/``).
    ``checkpoint``: ``None`` or ``"best"`` (the best checkpoint, the newest if the run kept none),
    ``"latest"``, or a path inside the run (``best/`` or ``checkpoints/``: the best resp. newest intact
    checkpoint; one of their step folders, e.g. ``checkpoints/40``: exactly that step). ``run_dir`` may
    itself be such a path. ``seed``: which fresh reference sample and generator
    noise; the same seed gives every run the same reference events.
    The reference: for simulated data, ``n_events`` events of the run's simulator stream that neither
    training nor its validation used (stream ``data.seed``, after the validation events, offset by
    ``seed``); for file data, the run's held-out reference files/fraction (the first ``n_events``).
    ``metrics``: as :func:`hepgan.physics.metrics.evaluate` (default: the run's ``train.val_metrics``, so
    ``physics_score`` means what it meant during training); ``skipped``: if given, filled with the
    metrics the sample was too small for and why (as ``evaluate``). Returns ``{"physics_score",
    "sf_rel_error", ..., "n_events", "step"}``. Raises FileNotFoundError for a missing run or checkpoint.
    """
    from hepgan.data.source import REFERENCE_START, open_source
    from hepgan.data.types import Showers
    from hepgan.physics.metrics import evaluate
    from hepgan.train.checkpoint import restore_run
    from hepgan.train.state import generate

    if n_events < 1:
        raise ValueError(f"n_events must be positive; got {n_events}")
    root, best, step = _which_checkpoint(Path(run_dir), checkpoint)
    players, state, preprocess, conf = restore_run(root, best=best, step=step)
    data = conf.data
    if data.kind == "simulated":
        # the same simulator stream, past the validation events: event i depends only on (seed, start + i)
        fresh = REFERENCE_START + data.n_reference + seed * _FRESH_SEED_STRIDE
        only_reference = dataclasses.replace(data, n_events=1, n_reference=n_events)
        source = open_source(only_reference, reference_start=fresh).reference
        reference = source.read(np.arange(n_events))
    else:
        source = open_source(data).reference
        reference = source.read(np.arange(min(n_events, len(source))))
    theta = reference.theta_or_normal()
    x = generate(
        players,
        state,
        reference.energy,
        theta,
        batch=conf.train.batch_size,
        seed=seed,
        bn_stats=conf.train.sample_bn,
    )
    ecal = np.asarray(preprocess.invert_cells(x), np.float32)
    generated = Showers(ecal=ecal, energy=reference.energy, theta=reference.theta)
    names = conf.train.val_metrics if metrics is None else metrics
    out = {
        k: float(v)
        for k, v in evaluate(generated, reference, metrics=names, seed=seed, skipped=skipped).items()
    }
    return {**out, "n_events": float(len(reference)), "step": float(int(state.step))}
