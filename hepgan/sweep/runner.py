"""Run one sweep entry in its own directory, so that results survive crashes and requeues.

Layout of a run directory ``<sweep_dir>/<name>/``::

    meta.json          who ran it: scheduler, job and task id, host, attempts (rewritten at every start)
    .hydra/            config.yaml and overrides.yaml, as a Hydra run writes them
    result.json        written once the training returned or raised: status ok | failed | pruned | preempted
    error.txt          the traceback of a failed run
    ...                whatever the training writes (checkpoints, logs)

A run whose ``result.json`` says ``ok`` is never run again; any other run is started again in the same
directory, where the training resumes from its latest checkpoint (it does so by itself when restarted in
its run directory). A training that raises ``Preempted`` (``hepgan.train.loop.Preempted``: it caught
SIGTERM/SIGUSR1/SIGINT and saved its step) is recorded as ``preempted``, not ``failed``: the process is
about to be stopped and the next start resumes it. All files are written atomically (``hepgan.fileio``).

The training function is injected: by default ``hepgan.train.fit``; any callable
``fn(cfg, [report=...]) -> dict`` of final metrics works (``module:attr`` on the command line).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# write_json is also imported from here by the rest of the sweep room
from hepgan.fileio import write_json, write_text
from hepgan.sweep.plan import PlanIndex, job_info

#: ``report(step, metrics)``: called by the training every few epochs; may raise to prune the run.
Reporter = Callable[[int, Mapping[str, float]], None]
#: ``fn(cfg, report=None) -> metrics``; ``report`` is passed only when the function accepts it.
TrainFn = Callable[..., Mapping[str, Any]]

# where hepgan.train's fit() may live; the first importable one is the default training
DEFAULT_TRAIN_FNS = ("hepgan.train:fit", "hepgan.train.loop:fit")
RESULT_FILE = "result.json"
META_FILE = "meta.json"


@dataclass
class RunSettings:
    """How sweep entries are turned into training runs.

    ``config_module``/``config_dir``/``config_name``: the Hydra base config the overrides are composed onto.
    ``run_dir_key``: the config key that tells the training where its run directory is (set to the entry's
    directory; ``None`` to leave the config alone). ``objective``: the metric minimised and reported.
    ``train_fn``: the training callable (``None`` -> ``hepgan.train.fit``).
    """

    config_module: str | None = "hepgan.conf"
    config_dir: str | None = None
    config_name: str = "config"
    run_dir_key: str | None = "out"
    objective: str = "physics_score"
    train_fn: TrainFn | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def training(self) -> TrainFn:
        """The training callable to use."""
        if self.train_fn is not None:
            return self.train_fn
        errors = []
        for spec in DEFAULT_TRAIN_FNS:
            try:
                return load_callable(spec)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("the default training hepgan.train.fit is not available: " + "; ".join(errors))


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``module:attr`` (or ``module.attr``) and return the callable; ValueError with the reason."""
    mod_name, sep, attr = spec.partition(":")
    if not sep:
        mod_name, _, attr = spec.rpartition(".")
    if not mod_name or not attr:
        raise ValueError(f"{spec!r} is not a callable path of the form 'package.module:function'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {mod_name!r} for {spec!r} ({exc})") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ValueError(f"{mod_name!r} has no callable {attr!r} (from {spec!r})")
    return fn


# ---------------------------------------------------------------------------------------------------------
# Config composition
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _hydra_context(settings: RunSettings) -> Iterator[None]:
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    # compose() needs a global Hydra; a stale one (from a previous compose in this process) is ours to drop
    GlobalHydra.instance().clear()
    if settings.config_module == "hepgan.conf":
        from hepgan.train.config import register

        register()  # hepgan's config.yaml starts from the structured schema 'hepgan_schema'
    ctx: Any
    if settings.config_dir is not None:
        ctx = initialize_config_dir(str(Path(settings.config_dir).resolve()), version_base="1.3")
    else:
        if settings.config_module is None:
            raise ValueError("no base config: give a config module or a config dir")
        ctx = initialize_config_module(settings.config_module, version_base="1.3")
    with ctx:
        yield


def compose_config(overrides: Sequence[str], settings: RunSettings) -> Any:
    """Compose the base config with ``overrides`` (Hydra compose API); ValueError naming a bad override."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    where = settings.config_dir or settings.config_module
    try:
        with _hydra_context(settings):
            return compose(config_name=settings.config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ValueError(
            f"cannot compose config {settings.config_name!r} from {where!r} with overrides "
            f"{list(overrides)}: {exc}"
        ) from None
    except ImportError as exc:
        raise ValueError(f"config module {where!r} cannot be imported ({exc}); pass a config dir") from None


def _set_run_dir(cfg: Any, key: str | None, run_dir: Path) -> None:
    if key is None:
        return
    from omegaconf import OmegaConf

    OmegaConf.update(cfg, key, str(run_dir), force_add=True)


# ---------------------------------------------------------------------------------------------------------
# Running one trial
# ---------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when missing or unreadable (a half-written file after a kill)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def call_training(train_fn: TrainFn, cfg: Any, report: Reporter | None) -> Mapping[str, Any]:
    """Call ``train_fn(cfg)``, passing ``report=`` when the function takes it (or takes ``**kwargs``)."""
    if report is None:
        return train_fn(cfg)
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(train_fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes = "report" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return train_fn(cfg, report=report) if takes else train_fn(cfg)


def training_metrics(out: Mapping[str, Any]) -> dict[str, Any]:
    """The flat metrics of a training's return value.

    A flat mapping (``{"physics_score": ..., ...}``) is kept as is. ``hepgan.train.fit``'s result
    (``{"objective", "metrics": {...}, "step", "paths": {...}, "history", ...}``) becomes its final
    metrics plus ``step``, ``epoch``, ``best_step``, ``showers_per_s`` (training throughput) and
    ``checkpoint`` (the run's best checkpoint folder);
    the history stays in the run directory (``val.csv``), not in ``result.json``.
    """
    inner = out.get("metrics")
    if not isinstance(inner, Mapping):
        return dict(out)
    flat = dict(inner)
    for k in ("step", "epoch"):
        if k in out:
            flat[k] = out[k]
    timing = out.get("timing")
    if isinstance(timing, Mapping) and "showers_per_s" in timing:
        # the throughput objective of multi-objective searches (physics_score vs showers/s)
        flat.setdefault("showers_per_s", timing["showers_per_s"])
    best = out.get("best")
    if isinstance(best, Mapping) and "step" in best:
        flat["best_step"] = best["step"]
    paths = out.get("paths")
    if isinstance(paths, Mapping) and paths.get("best") and Path(paths["best"]).exists():
        flat["checkpoint"] = paths["best"]
    elif isinstance(paths, Mapping) and paths.get("checkpoints"):
        flat["checkpoint"] = paths["checkpoints"]
    return flat


def is_preempted(exc: BaseException) -> bool:
    """Whether ``exc`` is a training's pre-emption: ``hepgan.train.loop.Preempted`` or, for stand-in
    trainings (``--train-fn``), any exception class named ``Preempted``."""
    loop = sys.modules.get(
        "hepgan.train.loop"
    )  # imported by the training if it raised it: no jax import here
    cls = getattr(loop, "Preempted", None)
    if isinstance(cls, type) and isinstance(exc, cls):
        return True
    return any(c.__name__ == "Preempted" for c in type(exc).__mro__)


def _is_prune(exc: BaseException) -> bool:
    try:
        import optuna
    except ImportError:
        return False
    return isinstance(exc, optuna.TrialPruned)


def run_trial(
    overrides: Sequence[str],
    run_dir: str | os.PathLike,
    settings: RunSettings,
    *,
    report: Reporter | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train with ``overrides`` in ``run_dir`` and record the outcome; returns the result record.

    Never raises for a failing training: the exception is recorded as ``status: failed`` (an
    ``optuna.TrialPruned`` as ``pruned``, a ``Preempted`` as ``preempted``, see :func:`is_preempted`) so
    that a campaign goes on. A run already ``ok`` is returned as recorded, with ``skipped: True``. A bad
    override raises ValueError before anything is written. ``meta.json``'s ``history`` keeps every start
    with its outcome; ``attempts`` counts starts, pre-empted ones included.
    """
    rd = Path(run_dir)
    previous = read_json(rd / RESULT_FILE)
    if previous is not None and previous.get("status") == "ok":
        return {**previous, "skipped": True}

    cfg = compose_config(overrides, settings)
    rd.mkdir(parents=True, exist_ok=True)
    _set_run_dir(cfg, settings.run_dir_key, rd)
    _save_hydra_dir(rd, cfg, overrides)

    old_meta = read_json(rd / META_FILE) or {}
    attempt = int(old_meta.get("attempts", 0)) + 1
    run_meta = {
        **(dict(meta) if meta else {}),
        "overrides": list(overrides),
        "attempts": attempt,
        "job": job_info(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _now(),
        "state": "running",
        "history": [*old_meta.get("history", []), {"attempt": attempt, "started": _now(), **job_info()}],
    }
    write_json(rd / META_FILE, run_meta)

    t0 = time.perf_counter()
    error = None
    try:
        metrics = training_metrics(call_training(settings.training(), cfg, report) or {})
        status = "ok"
    except Exception as exc:
        metrics = {}
        status = "pruned" if _is_prune(exc) else "preempted" if is_preempted(exc) else "failed"
        error = f"{type(exc).__name__}: {exc}"
        if status == "failed":
            write_text(rd / "error.txt", traceback.format_exc())
    wall = time.perf_counter() - t0

    result = {
        "status": status,
        "overrides": list(overrides),
        "metrics": metrics,
        "objective": settings.objective,
        "objective_value": _finite_or_none(metrics.get(settings.objective)),
        "wall_s": wall,
        "checkpoint": _checkpoint_of(metrics, rd),
        "run_dir": str(rd),
        "attempts": attempt,
        "job": run_meta["job"],
        "finished": _now(),
        "error": error,
        **({"meta": dict(meta)} if meta else {}),
    }
    if status == "ok" and result["objective_value"] is None:
        # a run that finished without its objective is of no use to the search: count it as failed
        result["status"] = "failed"
        result["error"] = f"training returned no finite {settings.objective!r} (keys: {sorted(metrics)})"
    history = [*run_meta["history"][:-1], {**run_meta["history"][-1], "outcome": result["status"]}]
    write_json(rd / RESULT_FILE, result)
    write_json(
        rd / META_FILE,
        {**run_meta, "state": result["status"], "finished": result["finished"], "history": history},
    )
    return result


def _finite_or_none(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def _checkpoint_of(metrics: Mapping[str, Any], run_dir: Path) -> str | None:
    for key in ("checkpoint", "checkpoint_dir", "ckpt_dir", "best_checkpoint"):
        if metrics.get(key):
            return str(metrics[key])
    for name in ("checkpoints", "ckpt", "checkpoint"):
        if (run_dir / name).exists():
            return str(run_dir / name)
    return None


def _save_hydra_dir(run_dir: Path, cfg: Any, overrides: Sequence[str]) -> None:
    from omegaconf import OmegaConf

    hd = run_dir / ".hydra"
    hd.mkdir(exist_ok=True)
    OmegaConf.save(cfg, hd / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hd / "overrides.yaml")


# ---------------------------------------------------------------------------------------------------------
# Running a plan's entries (one array task)
# ---------------------------------------------------------------------------------------------------------


def run_plan_entries(
    plan_path: str | os.PathLike | PlanIndex,
    indices: Sequence[int],
    settings: RunSettings,
    *,
    sweep_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the plan entries ``indices`` one after the other, each in ``<sweep_dir>/<index>``.

    ``plan_path``: the plan, or its index already opened (:func:`hepgan.sweep.plan.open_plan_index`). Only
    the entries' own lines are read (through the plan's index), so start-up does not grow with the plan.
    A failing entry is recorded and the next one still runs. A pre-empted entry (status ``preempted``)
    ends the task: the entries after it are not started, as the process is about to be stopped; a rerun
    resumes it and runs them. Returns the result records in order.
    """
    from hepgan.sweep.plan import default_sweep_dir, open_plan_index

    plan = plan_path if isinstance(plan_path, PlanIndex) else open_plan_index(plan_path, log=log)
    entries = plan.entries(list(indices))
    sd = Path(sweep_dir) if sweep_dir is not None else default_sweep_dir(plan.path)
    results = []
    for i, entry in zip(indices, entries, strict=True):
        meta = {"plan": str(plan.path.resolve()), "index": i, **entry.meta}
        res = run_trial(entry.overrides, sd / str(i), settings, meta=meta)
        if log is not None:
            what = "already done" if res.get("skipped") else res["status"]
            log(f"entry {i}: {what} {settings.objective}={res.get('objective_value')} ({sd / str(i)})")
        results.append(res)
        if res["status"] == "preempted":
            break
    return results
