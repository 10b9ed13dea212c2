"""Optuna campaigns, driven directly (Optuna 5), in two modes that suit batch systems.

driver-batch: the study lives in a journal file on the submit host. ``ask`` writes a plan of N new trials,
an array job runs the plan (``hepgan-sweep run``: compute nodes need no database and no Optuna state), and
``tell`` feeds the result.json files back. Repeat ask/run/tell for as many rounds as wanted.

worker-pull: every array task asks for a trial, trains it and tells the result itself through a shared
storage (a journal file on a shared file system for one cluster; PostgreSQL/MySQL URL for many). The
training reports the objective every few epochs through an injected ``report`` callback, and the study's
pruner (``MedianPruner`` by default) stops hopeless trials after its warm-up. In driver-batch mode ``tell``
records the same learning curve afterwards, from the run's ``val.csv``.

A space with several ``objectives`` makes a multi-objective study (``directions=[...]``): trials are told a
list of values (a trial missing one is failed, its reason in the user attribute ``fail_reason``) and nothing
is pruned, as Optuna's ``trial.report`` is single-objective.

In both modes a trial that raises is recorded as failed and the campaign goes on; ``retry`` re-enqueues
failed trials' parameters (``study.enqueue_trial``) so the next ask runs them again.

Workers survive the cluster: each has its own sampler seed (:class:`WorkerIdentity`); with a heartbeat
(``open_storage(..., heartbeat_interval=...)``) a trial whose worker was killed is failed by the next
worker that looks (``optuna.storages.fail_stale_trials``) and its parameters are queued again by Optuna's
``RetryHeartbeatStaleTrialCallback``; a pre-empted trial (the training raised ``Preempted`` after its
checkpoint) is failed and queued again at once. Either retry trains in the first trial's directory, so it
resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import math
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hepgan.sweep.plan import PlanEntry, job_info, write_plan
from hepgan.sweep.runner import RESULT_FILE, Reporter, RunSettings, read_json, run_trial
from hepgan.sweep.space import SearchSpace, load_space

JOURNAL_NAME = "study.journal"
SPACE_NAME = "space.yaml"
#: trial user attribute: the folder (under the sweep dir) the trial trains in; retries inherit it
TRIAL_DIR_ATTR = "trial_dir"
#: trial user attribute: why a trial was told FAIL although its training finished (a missing objective)
FAIL_REASON_ATTR = "fail_reason"
#: what the training writes in its run directory: the validation log (one row per validation, a ``step``
#: column and one per metric) and its return value (``timing``: ``showers_per_s``, ``train_seconds``, ...)
VAL_CSV = "val.csv"
FIT_RESULT = "fit_result.json"  # hepgan.train.loop.FIT_RESULT (not imported: that module imports JAX)

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence what Optuna says about the heartbeat API being experimental and meant for ``optimize``:
    hepgan drives it from its own ask/tell loop on purpose."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def retry_callback(max_retry: int | None = 3) -> Callable[[Any, Any], None]:
    """Optuna's stale-trial callback that queues a failed-as-stale trial's parameters again (at most
    ``max_retry`` times; intermediate values are kept, as the retry resumes from the checkpoint)."""
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is None:  # its name before Optuna 4.9
        cls = optuna.storages.RetryFailedTrialCallback
    with _quiet_optuna():
        return cls(max_retry=max_retry, inherit_intermediate_values=True)


def open_storage(
    url: str | os.PathLike,
    *,
    heartbeat_interval: float | None = None,
    grace_period: float | None = None,
    max_retry: int | None = 3,
) -> Any:
    """An Optuna storage from a URL or a path.

    ``sqlite:///x.db``, ``postgresql://...``, ``mysql://...``: RDB storage (use PostgreSQL/MySQL when
    workers run on many nodes). Anything else (``x.journal``, ``journal:x``): a ``JournalStorage`` over a
    checked journal file (:class:`hepgan.sweep.journal.CheckedJournalFileBackend`), safe for concurrent
    processes through its lock file on one file system; a damaged file raises
    :class:`hepgan.sweep.journal.JournalCorruptError` (a ValueError) naming it.

    ``heartbeat_interval`` (s): running trials record a heartbeat this often, and a trial without one for
    ``grace_period`` s (default twice the interval) is failed by the next worker and, up to ``max_retry``
    times, queued again with the same parameters (``RetryHeartbeatStaleTrialCallback``). RDB storages
    take whole seconds.
    """
    text = str(url)
    callback = retry_callback(max_retry) if heartbeat_interval else None
    if "://" in text:
        if not heartbeat_interval:
            return text
        import optuna

        interval = max(1, math.ceil(heartbeat_interval))
        grace = None if grace_period is None else max(2, math.ceil(grace_period))
        with _quiet_optuna():
            try:
                return optuna.storages.RDBStorage(
                    text,
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=callback,
                )
            except TypeError:  # Optuna < 4.9 names the callback differently
                return optuna.storages.RDBStorage(
                    text, heartbeat_interval=interval, grace_period=grace, failed_trial_callback=callback
                )
    from optuna.storages import JournalStorage

    from hepgan.sweep.journal import (
        CheckedJournalFileBackend,
        HeartbeatJournalStorage,
        JournalCorruptError,
        diagnose,
    )

    path = Path(text.removeprefix("journal:"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = CheckedJournalFileBackend(path)
        if not heartbeat_interval:
            return JournalStorage(backend)
        return HeartbeatJournalStorage(
            backend,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=callback,
        )
    except OSError as exc:
        raise ValueError(f"Optuna journal {str(path)!r} cannot be opened ({exc.strerror or exc})") from None
    except (KeyError, TypeError) as exc:
        # whole JSON records that Optuna cannot replay: another program's JSON lines, or a newer format
        raise diagnose(path) or JournalCorruptError(
            f"{str(path)!r} holds JSON records this Optuna cannot replay ({type(exc).__name__}: {exc}); "
            "it is not an Optuna journal or was written by another Optuna version: point --storage / "
            "--study-dir at the study's journal, or use the Optuna version that wrote it"
        ) from None


def load_study(space: SearchSpace, storage: Any, *, seed_offset: int = 0, seed: int | None = None) -> Any:
    """Create or load the space's study in ``storage`` with its sampler and pruner.

    ``seed_offset`` shifts the space's sampler seed; ``seed`` replaces it (see ``SearchSpace.make_sampler``).
    A new (empty) study gets the space's ``enqueue`` trials first, in order. Two processes creating the
    same study at the same instant may both enqueue them (the trials then run twice; harmless).
    """
    import optuna

    study = optuna.create_study(
        study_name=space.name,
        storage=storage,
        directions=list(space.directions),  # type: ignore[arg-type]  # checked by parse_space
        sampler=space.make_sampler(seed_offset, seed=seed),
        pruner=space.make_pruner(),
        load_if_exists=True,
    )
    if space.enqueue and not study.get_trials(deepcopy=False):
        for params in space.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def optuna_reporter(trial: Any, objective: str) -> Reporter:
    """``report(step, metrics)`` for the training: records ``metrics[objective]`` at ``step`` and raises
    ``optuna.TrialPruned`` when the study's pruner says so."""
    import optuna

    def report(step: int, metrics: Mapping[str, float]) -> None:
        if objective not in metrics:
            return
        with warnings.catch_warnings():
            # a resumed retry reports again a step its predecessor reported; Optuna keeps the first
            warnings.filterwarnings("ignore", message=".*is already reported")
            trial.report(float(metrics[objective]), int(step))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: {objective}={float(metrics[objective]):.4g}")

    return report


def run_metrics(result: Mapping[str, Any], run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The metrics of a result record, completed by the training's own summary in its run directory.

    ``result["metrics"]`` first (for the flat result.json of a ``hepgan-train`` run: its numeric entries);
    then the numeric entries of ``timing`` in ``<run_dir>/fit_result.json`` that ``hepgan.train.fit`` writes
    (``showers_per_s``: training throughput, ``train_seconds``, ...) where the metrics lack them.
    ``run_dir`` defaults to the record's ``run_dir``.
    """
    metrics = result.get("metrics")
    if isinstance(metrics, Mapping):
        out = dict(metrics)
    else:
        out = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    where = run_dir if run_dir is not None else result.get("run_dir")
    fit = read_json(Path(where) / FIT_RESULT) if where else None
    timing = fit.get("timing") if fit else None
    if isinstance(timing, Mapping):
        for k, v in timing.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out.setdefault(str(k), v)
    return out


def objective_values(
    result: Mapping[str, Any], objectives: Sequence[str], run_dir: str | os.PathLike | None = None
) -> tuple[list[float] | None, str | None]:
    """The finite values of ``objectives`` in a result record (see :func:`run_metrics`), or None with the
    reason (which objective is missing or not finite, and the metrics there are)."""
    metrics = run_metrics(result, run_dir)
    values = []
    for name in objectives:
        try:
            v = float(metrics[name])
        except (KeyError, TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            have = sorted(k for k in metrics if k not in objectives)
            return None, f"objective {name!r} missing or not finite ({metrics.get(name)!r}); metrics: {have}"
        values.append(v)
    return values, None


def tell_result(
    study: Any,
    trial: Any,
    result: Mapping[str, Any],
    objectives: Sequence[str] | None = None,
    run_dir: str | os.PathLike | None = None,
) -> str:
    """Tell ``study`` the outcome in a result record; returns the Optuna state name told.

    ``objectives`` (several: a multi-objective study): the metrics told, in the study's order, from the
    record's metrics (see :func:`objective_values`); a finished trial missing one is told FAIL with the
    reason logged and kept in the user attribute ``fail_reason``. Without, the record's
    ``objective_value`` is told.
    """
    from optuna.trial import TrialState

    status = result.get("status")
    if status == "ok" and objectives is not None and len(objectives) > 1:
        values, reason = objective_values(result, objectives, run_dir)
        if values is not None:
            study.tell(trial, values)
            return "COMPLETE"
        number = trial if isinstance(trial, int) else trial.number
        _log.warning("trial %s told FAIL: %s", number, reason)
        study._storage.set_trial_user_attr(_trial_id(study, trial), FAIL_REASON_ATTR, reason)
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    if status == "ok" and result.get("objective_value") is not None:
        study.tell(trial, float(result["objective_value"]))
        return "COMPLETE"
    if status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    study.tell(trial, state=TrialState.FAIL)
    return "FAIL"


def _trial_id(study: Any, trial: Any) -> int:
    if not isinstance(trial, int):
        return int(trial._trial_id)
    return int(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial))


def learning_curve(run_dir: str | os.PathLike, metric: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``metric`` at every validation of the run in ``run_dir``, from its ``val.csv``
    (what the training also passes to ``report(step, metrics)``), else from the ``history`` in its
    ``fit_result.json``; the first row of a step wins (as Optuna keeps the first report), non-finite
    values are left out. Empty when neither file has the metric."""
    rows: list[Mapping[str, Any]] = []
    path = Path(run_dir) / VAL_CSV
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        fit = read_json(Path(run_dir) / FIT_RESULT) or {}
        history = fit.get("history")
        rows = [h for h in history if isinstance(h, Mapping)] if isinstance(history, list) else []
    curve: dict[int, float] = {}
    for row in rows:
        try:
            step, value = int(float(row["step"])), float(row[metric])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value) and step not in curve:
            curve[step] = value
    return sorted(curve.items())


def record_learning_curve(study: Any, trial: Any, curve: Iterable[tuple[int, float]]) -> int:
    """Record ``curve`` as the intermediate values of a RUNNING ``trial`` (number or trial) of ``study``,
    as the training's ``report`` would have; returns the number of values recorded. Recording again
    writes the same values (idempotent)."""
    tid = _trial_id(study, trial)
    n = 0
    for step, value in curve:
        study._storage.set_trial_intermediate_value(tid, int(step), float(value))
        n += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# driver-batch
# ---------------------------------------------------------------------------------------------------------


def _study_dir_space(study_dir: Path, space_path: str | os.PathLike | None) -> SearchSpace:
    """The space of a study dir; on first use copies ``space_path`` there, later checks it is the same."""
    stored = study_dir / SPACE_NAME
    if space_path is None:
        if not stored.exists():
            raise ValueError(
                f"study dir {str(study_dir)!r} has no {SPACE_NAME}; run 'hepgan-sweep ask' first"
            )
        return load_space(stored)
    space = load_space(space_path)
    if stored.exists():
        old = load_space(stored)
        same = (old.name, old.distributions, old.objectives, old.directions) == (
            space.name,
            space.distributions,
            space.objectives,
            space.directions,
        )
        if not same:
            raise ValueError(
                f"study dir {str(study_dir)!r} holds study {old.name!r} with another search space than "
                f"{str(space_path)!r}; use a new study dir (or the same space)"
            )
    study_dir.mkdir(parents=True, exist_ok=True)
    if not stored.exists() or Path(space_path).resolve() != stored.resolve():
        shutil.copyfile(space_path, stored)
    return space


def ask_plan(
    space_path: str | os.PathLike, study_dir: str | os.PathLike, n: int, plan_path: str | os.PathLike
) -> list[PlanEntry]:
    """Ask ``n`` new trials of the study kept in ``study_dir`` and write them as a plan."""
    if n < 1:
        raise ValueError(f"-n must be >= 1; got {n}")
    sd = Path(study_dir)
    space = _study_dir_space(sd, space_path)
    storage = open_storage(sd / JOURNAL_NAME)
    existing = len(load_study(space, storage).get_trials(deepcopy=False))
    study = load_study(space, storage, seed_offset=existing)
    entries: list[PlanEntry] = []
    for _ in range(n):
        trial = study.ask(dict(space.distributions))
        trial.set_user_attr("plan", str(Path(plan_path).resolve()))
        trial.set_user_attr("plan_index", len(entries))
        meta = {"optuna_study": space.name, "optuna_trial": str(trial.number)}
        entries.append(PlanEntry(tuple(space.overrides(trial.params)), meta))
    write_plan(
        plan_path,
        entries,
        comment=f"optuna study {space.name!r} in {sd}: trials "
        f"{entries[0].meta['optuna_trial']}..{entries[-1].meta['optuna_trial']}",
    )
    return entries


def find_results(dirs: Iterable[str | os.PathLike]) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable ``result.json`` at or below ``dirs`` (sorted by path) with its contents."""
    found = []
    for d in dirs:
        p = Path(d)
        if not p.exists():
            raise ValueError(f"results dir {str(p)!r} does not exist")
        paths = [p] if p.is_file() else sorted(p.rglob(RESULT_FILE))
        for f in paths:
            data = read_json(f)
            if data is not None:
                found.append((f.parent, data))
    return found


def tell_results(
    study_dir: str | os.PathLike,
    result_dirs: Sequence[str | os.PathLike],
    *,
    fail_missing: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Feed the result.json files under ``result_dirs`` back into the study of ``study_dir``.

    Before a trial's final state, its learning curve (the objective at each validation's training step,
    from the run's ``val.csv``, :func:`learning_curve`) is recorded as its intermediate values, as a
    worker's ``report`` does; not for a multi-objective study (Optuna keeps no intermediate values
    there). ``log`` receives a line per trial told FAIL although its training finished (a missing
    objective).

    Idempotent: trials already finished are left alone. A ``preempted`` result leaves its trial RUNNING:
    its entry is run again (the array task is requeued) and told then. ``fail_missing`` marks trials still
    running with no final result (their jobs died, or were pre-empted and never requeued) as failed so
    that ``retry`` can re-enqueue them. Returns counts per outcome.
    """
    from optuna.trial import TrialState

    sd = Path(study_dir)
    space = _study_dir_space(sd, None)
    study = load_study(space, open_storage(sd / JOURNAL_NAME))
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "preempted": 0, "already": 0, "other_study": 0}
    seen = set()
    for run_dir_found, res in find_results(result_dirs):
        meta = res.get("meta") or {}
        if meta.get("optuna_study") != space.name or "optuna_trial" not in meta:
            counts["other_study"] += 1
            continue
        number = int(meta["optuna_trial"])
        trial = by_number.get(number)
        if trial is None or trial.state != TrialState.RUNNING:
            counts["already"] += 1
            continue
        if res.get("status") == "preempted":
            counts["preempted"] += 1
            continue
        seen.add(number)
        run_dir = run_dir_found  # where result.json is now (the folder may have moved since the run)
        if not space.multi_objective:
            record_learning_curve(study, number, learning_curve(run_dir, space.objective))
        state = tell_result(study, number, res, space.objectives, run_dir)
        counts[state] += 1
        if state == "FAIL" and res.get("status") == "ok" and log is not None:
            _, reason = objective_values(res, space.objectives, run_dir)
            log(f"trial {number}: FAIL ({reason}; {run_dir})")
    if fail_missing:
        for number, trial in by_number.items():
            if trial.state == TrialState.RUNNING and number not in seen:
                study.tell(number, state=TrialState.FAIL)
                counts["FAIL"] += 1
    return counts


def retry_failed(
    space: SearchSpace, storage: Any, *, max_attempts: int = 3, stale_running: bool = False
) -> list[int]:
    """Re-enqueue the parameters of failed trials (each at most ``max_attempts`` times in all).

    ``stale_running``: first mark trials still RUNNING as failed (only when no worker is alive: after a
    campaign whose jobs were killed). Returns the numbers of the trials re-enqueued.
    """
    from optuna.trial import TrialState

    study = load_study(space, storage)
    trials = study.get_trials(deepcopy=False)
    if stale_running:
        for t in trials:
            if t.state == TrialState.RUNNING:
                study.tell(t.number, state=TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
    # parameters already queued again: by an earlier retry, a pre-emption or the heartbeat's callback
    already: set[int] = set()
    for t in trials:
        already.update(t.user_attrs[k] for k in ("retry_of", "requeue_of") if k in t.user_attrs)
        already.update(t.system_attrs.get("retry_history", ()))
    out = []
    for t in trials:
        attempt = int(t.user_attrs.get("attempt", 1))
        if t.state == TrialState.FAIL and t.number not in already and attempt < max_attempts:
            study.enqueue_trial(
                dict(t.params),
                user_attrs={"retry_of": t.number, "attempt": attempt + 1},
                skip_if_exists=False,
            )
            out.append(t.number)
    return out


# ---------------------------------------------------------------------------------------------------------
# worker-pull
# ---------------------------------------------------------------------------------------------------------


#: environment variables that tell processes of one job (or array task) apart, first set wins
_RANK_VARS = ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JSM_NAMESPACE_RANK")


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a worker is.

    ``key`` is recorded on the trials it runs (user attribute ``worker``) and seeds its sampler, so that
    concurrent workers never propose the same points. ``stable``: the key is the same when this worker is
    started again (a requeued array task, the same ``--worker-id``), which then finishes its own
    running trials first; a worker started by hand without ``--worker-id`` gets a fresh key from host,
    process id and start time. Several workers inside one array task need ``srun`` (``SLURM_PROCID``)
    or distinct ``--worker-id`` values, or they would share a key.
    """

    key: str
    stable: bool

    def sampler_seed(self, space: SearchSpace, offset: int = 0) -> int:
        """The sampler seed of this worker: the space's ``sampler.seed`` (0 when absent) plus a hash of
        the key plus ``offset``, modulo 2**32 (NumPy's seed range). ``run_worker`` passes the number of
        trials in the study as ``offset``, so that a restarted worker with the same key does not draw its
        first points again."""
        digest = int.from_bytes(hashlib.sha256(self.key.encode()).digest()[:4], "big")
        return (int(space.sampler.get("seed") or 0) + digest + offset) % 2**32


def worker_identity(worker_id: str | None = None, env: Mapping[str, str] | None = None) -> WorkerIdentity:
    """This process's :class:`WorkerIdentity`: ``id:<worker_id>`` when given; else the scheduler's job and
    task (plus the process rank when one job step runs several workers); else host, pid and time."""
    env = os.environ if env is None else env
    if worker_id:
        return WorkerIdentity(f"id:{worker_id}", True)
    job = job_info(env)
    # not a plain batch job: in an salloc shell every process started by hand has the same job id
    if job["scheduler"] in ("slurm", "lsf", "env") and job["job_id"]:
        key = f"{job['scheduler']}:{job['job_id']}:{job['task_id']}"
        rank = next((env[v] for v in _RANK_VARS if env.get(v, "") != ""), None)
        return WorkerIdentity(key if rank is None else f"{key}:{rank}", True)
    return WorkerIdentity(f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}", False)


def _requeue_preempted(study: Any, trial: Any) -> None:
    """Fail a pre-empted trial and queue its parameters again at once, into the same trial directory.

    FAIL (not PRUNED, not left RUNNING) keeps the sampler from learning anything from it and lets no other
    worker mistake it for live; the new WAITING trial is what the next ask hands out. Unlike a heartbeat
    retry this does not count against ``max_retry``: a pre-emption says nothing about the parameters.
    """
    import optuna
    from optuna.trial import TrialState

    from hepgan.sweep.journal import HEARTBEAT_ATTR

    trial.set_user_attr("preempted", True)
    study.tell(trial, state=TrialState.FAIL)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    user = {k: v for k, v in frozen.user_attrs.items() if k != "preempted"}
    system = {k: v for k, v in frozen.system_attrs.items() if k != HEARTBEAT_ATTR}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs={**user, "requeue_of": frozen.number},
            system_attrs=system,
            intermediate_values=frozen.intermediate_values,
        )
    )


def run_worker(
    space: SearchSpace,
    storage: Any,
    n_trials: int,
    sweep_dir: str | os.PathLike,
    settings: RunSettings,
    *,
    max_total: int | None = None,
    identity: WorkerIdentity | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Ask, train and tell up to ``n_trials`` trials; each trains in ``<sweep_dir>/trial-<number>``.

    ``identity`` (default :func:`worker_identity`) seeds the sampler and is recorded on every trial
    (user attributes ``worker``, ``sampler_seed``; ``meta`` of its result.json). A worker with a stable
    identity (requeued array task) first finishes the trials it had started: the training resumes from
    its checkpoint. With a heartbeat storage (:func:`open_storage`), the trial in progress records a
    heartbeat, and before every ask the worker fails stale trials (their workers were killed) and Optuna's
    retry callback queues them again; a retried trial trains in the first attempt's directory and resumes
    there. ``max_total`` stops asking once the study holds that many trials that are finished
    successfully, pruned or running. Failed trials never stop the loop; a pre-empted one (status
    ``preempted``) is queued again and ends the loop, as the process is about to be stopped.
    """
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
    from optuna.trial import TrialState

    settings = RunSettings(**{**settings.__dict__, "objective": space.objective})
    identity = identity or worker_identity()
    existing = len(load_study(space, storage).get_trials(deepcopy=False))
    seed = identity.sampler_seed(space, existing)
    study = load_study(space, storage, seed=seed)
    heartbeat = is_heartbeat_enabled(study._storage)
    if log is not None:
        beat = f"every {study._storage.get_heartbeat_interval()} s" if heartbeat else "off"
        log(f"worker {identity.key}: sampler seed {seed}, heartbeat {beat}")
    results: list[dict[str, Any]] = []

    def reap_stale() -> None:
        if heartbeat:
            with _quiet_optuna():
                optuna.storages.fail_stale_trials(study)

    def one(trial: Any) -> dict[str, Any]:
        error: ValueError | None = None
        # beat first: a trial without a beat is never taken for stale, so it must not run a moment without
        with get_heartbeat_thread(trial._trial_id, study._storage):
            trial.set_user_attr("worker", identity.key)
            trial.set_user_attr("sampler_seed", seed)
            name = trial.user_attrs.get(TRIAL_DIR_ATTR)
            if name is None:
                name = f"trial-{trial.number:05d}"
                trial.set_user_attr(TRIAL_DIR_ATTR, name)
            rd = Path(sweep_dir) / name
            meta = {
                "optuna_study": space.name,
                "optuna_trial": str(trial.number),
                "worker": identity.key,
                "sampler_seed": seed,
            }
            try:
                res = run_trial(
                    space.overrides(trial.params),
                    rd,
                    settings,
                    # Optuna prunes (and keeps learning curves of) single-objective studies only
                    report=None if space.multi_objective else optuna_reporter(trial, space.objective),
                    meta=meta,
                )
            except ValueError as exc:
                error = exc
        if error is not None:
            study.tell(trial, state=TrialState.FAIL)  # a bad override fails every trial: stop the worker
            raise error
        try:
            if res["status"] == "preempted":
                _requeue_preempted(study, trial)
                state = "FAIL (pre-empted; its parameters are queued again)"
            else:
                state = tell_result(study, trial, res, space.objectives, rd)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            now = next(t.state for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            if now == TrialState.RUNNING:
                raise
            # another worker took it for stale (this one missed beats for the grace period) and queued it
            # again; that retry finds this run's result.json or checkpoints in the same folder
            state = f"already {now.name} (failed as stale by another worker; its retry reuses {rd})"
        if log is not None:
            values, reason = objective_values(res, space.objectives, rd)
            shown = ", ".join(
                f"{k}={v:.6g}" if values is not None else f"{k}=None"
                for k, v in zip(space.objectives, values or [math.nan] * len(space.objectives), strict=True)
            )
            why = f" ({reason})" if state == "FAIL" and res["status"] == "ok" and reason else ""
            log(f"trial {trial.number}: {state} {shown}{why} ({rd})")
        results.append(res)
        return res

    reap_stale()
    if identity.stable:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") == identity.key:
                if one(optuna.trial.Trial(study, t._trial_id))["status"] == "preempted":
                    return results

    for i in range(n_trials):
        if i:
            reap_stale()
        if max_total is not None:
            live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            if len(study.get_trials(deepcopy=False, states=live)) >= max_total:
                break
        with _quiet_optuna():
            trial = study.ask(dict(space.distributions))
        if one(trial)["status"] == "preempted":
            break
    return results
