"""Optuna campaigns, driven directly (Optuna 5), in two modes that suit batch systems.

driver-batch: the study lives in a journal file on the submit host. ``ask`` writes a plan of N new trials,
an array job runs the plan (``hepgan-sweep run``: compute nodes need no database and no Optuna state), and
``tell`` feeds the result.json files back. Repeat ask/run/tell for as many rounds as wanted.

worker-pull: every array task asks for a trial, trains it and tells the result itself through a shared
storage (a journal file on a shared file system for one cluster; PostgreSQL/MySQL URL for many). The
training reports the objective every few epochs through an injected ``report`` callback, and the study's
``MedianPruner`` stops hopeless trials after its warm-up.

In both modes a trial that raises is recorded as failed and the campaign goes on; ``retry`` re-enqueues
failed trials' parameters (``study.enqueue_trial``) so the next ask runs them again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hepgan.sweep.plan import PlanEntry, job_info, write_plan
from hepgan.sweep.runner import RESULT_FILE, Reporter, RunSettings, read_json, run_trial
from hepgan.sweep.space import SearchSpace, load_space

JOURNAL_NAME = "study.journal"
SPACE_NAME = "space.yaml"


def open_storage(url: str | os.PathLike) -> Any:
    """An Optuna storage from a URL or a path.

    ``sqlite:///x.db``, ``postgresql://...``, ``mysql://...``: RDB storage (use PostgreSQL/MySQL when
    workers run on many nodes). Anything else (``x.journal``, ``journal:x``): a ``JournalStorage`` over a
    ``JournalFileBackend``, safe for concurrent processes through its lock file on one file system.
    """
    text = str(url)
    if "://" in text:
        return text
    path = Path(text.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def load_study(space: SearchSpace, storage: Any, *, seed_offset: int = 0) -> Any:
    """Create or load the space's study in ``storage`` with its sampler and pruner."""
    import optuna

    return optuna.create_study(
        study_name=space.name,
        storage=storage,
        direction=space.direction,  # type: ignore[arg-type]  # checked by parse_space
        sampler=space.make_sampler(seed_offset),
        pruner=space.make_pruner(),
        load_if_exists=True,
    )


def optuna_reporter(trial: Any, objective: str) -> Reporter:
    """``report(step, metrics)`` for the training: records ``metrics[objective]`` at ``step`` and raises
    ``optuna.TrialPruned`` when the study's pruner says so."""
    import optuna

    def report(step: int, metrics: Mapping[str, float]) -> None:
        if objective not in metrics:
            return
        trial.report(float(metrics[objective]), int(step))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: {objective}={float(metrics[objective]):.4g}")

    return report


def tell_result(study: Any, trial: Any, result: Mapping[str, Any]) -> str:
    """Tell ``study`` the outcome in a result record; returns the Optuna state name told."""
    from optuna.trial import TrialState

    status = result.get("status")
    if status == "ok" and result.get("objective_value") is not None:
        study.tell(trial, float(result["objective_value"]))
        return "COMPLETE"
    if status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    study.tell(trial, state=TrialState.FAIL)
    return "FAIL"


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
        if old.name != space.name or old.distributions != space.distributions:
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
    study_dir: str | os.PathLike, result_dirs: Sequence[str | os.PathLike], *, fail_missing: bool = False
) -> dict[str, int]:
    """Feed the result.json files under ``result_dirs`` back into the study of ``study_dir``.

    Idempotent: trials already finished are left alone. ``fail_missing`` marks trials still running with
    no result (their jobs died without one) as failed so that ``retry`` can re-enqueue them.
    Returns counts per outcome.
    """
    from optuna.trial import TrialState

    sd = Path(study_dir)
    space = _study_dir_space(sd, None)
    study = load_study(space, open_storage(sd / JOURNAL_NAME))
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "already": 0, "other_study": 0}
    seen = set()
    for _, res in find_results(result_dirs):
        meta = res.get("meta") or {}
        if meta.get("optuna_study") != space.name or "optuna_trial" not in meta:
            counts["other_study"] += 1
            continue
        number = int(meta["optuna_trial"])
        seen.add(number)
        trial = by_number.get(number)
        if trial is None or trial.state != TrialState.RUNNING:
            counts["already"] += 1
            continue
        counts[tell_result(study, number, res)] += 1
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
    already = {t.user_attrs.get("retry_of") for t in trials}
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


def _worker_key() -> str | None:
    job = job_info()
    if job["scheduler"] in ("slurm", "lsf", "env") and job["job_id"]:
        return f"{job['scheduler']}:{job['job_id']}:{job['task_id']}"
    return None


def run_worker(
    space: SearchSpace,
    storage: Any,
    n_trials: int,
    sweep_dir: str | os.PathLike,
    settings: RunSettings,
    *,
    max_total: int | None = None,
    seed_offset: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Ask, train and tell up to ``n_trials`` trials; each trains in ``<sweep_dir>/trial-<number>``.

    A requeued array task first finishes the trials it had started (same scheduler job and task id: the
    training resumes from its checkpoint). ``max_total`` stops asking once the study holds that many
    trials that are finished successfully, pruned or running. Failed trials never stop the loop.
    """
    import optuna
    from optuna.trial import TrialState

    settings = RunSettings(**{**settings.__dict__, "objective": space.objective})
    study = load_study(space, storage, seed_offset=seed_offset)
    key = _worker_key()
    results = []

    def one(trial: Any) -> None:
        rd = Path(sweep_dir) / f"trial-{trial.number:05d}"
        meta = {"optuna_study": space.name, "optuna_trial": str(trial.number)}
        overrides = space.overrides(trial.params)
        try:
            res = run_trial(
                overrides, rd, settings, report=optuna_reporter(trial, space.objective), meta=meta
            )
        except ValueError:
            study.tell(trial, state=TrialState.FAIL)  # a bad override fails every trial: stop the worker
            raise
        state = tell_result(study, trial, res)
        if log is not None:
            log(f"trial {trial.number}: {state} {space.objective}={res.get('objective_value')} ({rd})")
        results.append(res)

    if key is not None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") == key:
                one(optuna.trial.Trial(study, t._trial_id))

    for _ in range(n_trials):
        if max_total is not None:
            live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            if len(study.get_trials(deepcopy=False, states=live)) >= max_total:
                break
        trial = study.ask(dict(space.distributions))
        if key is not None:
            trial.set_user_attr("worker", key)
        one(trial)
    return results
