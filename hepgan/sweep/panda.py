"""PanDA/iDDS hyperparameter optimisation (``phpo``): the evaluation payload and the steering step.

PanDA runs HPO as two containers (panda-wms.readthedocs.io, "Running hyperparameter optimization"):

- evaluation (one PanDA job evaluates one or more points): the pilot places the point in ``input.json``
  in the working directory (phpo ``--evaluationInput``, a JSON object ``{name: value}``); the payload
  trains and writes ``output.json`` (``--evaluationOutput``) as
  ``{"status": 0, "loss": <float>, "message": "..."}``, non-zero ``status`` on failure. Here:
  ``hepgan-sweep panda-eval SPACE`` with the loss = ``physics_score`` (lower is better, as iDDS minimises).
- steering (run centrally by iDDS whenever new points are needed): ``--steeringExec`` is a command line in
  which iDDS substitutes ``%IN`` (a JSON file ``{"points": [[point, loss], ...], "opt_space": ...}``, every
  point generated so far with its loss, ``null`` while not yet evaluated), ``%OUT`` (where to write a
  JSON list of new points; ``[]`` ends the search), ``%NUM_POINTS`` and ``%MAX_POINTS``. Here:
  ``hepgan-sweep panda-steer SPACE --in %IN --out %OUT --n-points %NUM_POINTS --budget %MAX_POINTS``.

iDDS relays only ``[point, loss]`` pairs, so a training's intermediate ``physics_score`` cannot reach the
steering through it. Two modes follow:

- stateless (no ``--storage``): the steering rebuilds an in-memory Optuna study from ``%IN`` (``add_trial``
  of frozen trials: evaluated points as complete, unevaluated ones as running) and asks it for the next
  points; nothing is kept between calls and nothing is pruned.
- with a shared Optuna storage (``--storage URL`` on both commands: PostgreSQL/MySQL reachable from the
  grid sites, or a journal file on a file system both see): the steering keeps the study there and writes
  each new trial's number into its point under :data:`TRIAL_KEY`; the evaluation job opens that trial,
  reports the intermediate objective to it and is pruned by the space's pruner exactly as a worker-pull
  trial, then tells the final state itself. The next steering call reads COMPLETE, PRUNED (with their
  intermediate values) and FAIL trials from the storage, so all of them condition the sampler.

In both modes the steering ends the search (``[]``) at the budget, and earlier on a stopping rule
(``target``: a trial reached this objective value; ``patience``: that many completed trials in a row did
not improve the best).

The layout of ``%IN`` is taken from iDDS's ``ATLASHPOWork.generate_input_json`` (points as
``[point, loss]`` pairs); a point with a non-numeric loss is treated as failed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hepgan.sweep.plan import job_info
from hepgan.sweep.runner import RunSettings, run_trial, write_json
from hepgan.sweep.space import SearchSpace, format_value

#: key of a point (input.json, %IN, %OUT) that carries its Optuna trial number in the shared storage
TRIAL_KEY = "_hepgan_trial"
#: trial user attribute: the canonical JSON of a point the steering found in %IN without a trial number
POINT_ATTR = "panda_point"


def point_overrides(point: Mapping[str, Any], space: SearchSpace | None) -> list[str]:
    """Overrides for one hyperparameter point: the space's fixed overrides, then ``key=value`` per entry.

    With a space, every key must be one of its parameters (a typo would otherwise train the default).
    """
    if space is None:
        return [f"{k}={format_value(v)}" for k, v in point.items()]
    unknown = sorted(set(point) - set(space.distributions))
    if unknown:
        raise ValueError(f"point keys {unknown} are not parameters of the search space {space.source}")
    return space.overrides(point)


def split_point(point: Mapping[str, Any], where: str) -> tuple[dict[str, Any], int | None]:
    """A point without :data:`TRIAL_KEY`, and the trial number it carried (None when absent).

    ``where`` names the point in the error raised for a trial number that is not a non-negative integer.
    """
    params = {k: v for k, v in point.items() if k != TRIAL_KEY}
    if TRIAL_KEY not in point:
        return params, None
    number = point[TRIAL_KEY]
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"{where}: {TRIAL_KEY} must be a trial number (an integer >= 0); got {number!r}")
    return params, number


def same_params(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two points have the same keys and values, numbers compared to a relative 1e-9 (a point may
    pass through other programs' JSON writers between the steering and the job)."""
    if set(a) != set(b):
        return False
    for k, x in a.items():
        y = b[k]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
        if not (x == y or (numbers and math.isclose(x, y, rel_tol=1e-9))):
            return False
    return True


def single_objective(space: SearchSpace) -> str:
    """The space's objective name; ValueError when the space has several (iDDS's loss is one number)."""
    for field in ("objectives", "directions"):
        several = getattr(space, field, None)
        if isinstance(several, Sequence) and not isinstance(several, str) and len(several) > 1:
            raise ValueError(
                f"search space {space.source} has {len(several)} {field}; PanDA/iDDS relays one loss per "
                "point, so phpo campaigns need a single-objective space (use worker-pull or "
                "driver-batch for multi-objective searches)"
            )
    return space.objective


# ---------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------


def panda_eval(
    workdir: str | os.PathLike,
    settings: RunSettings,
    *,
    space: SearchSpace | None = None,
    storage: str | os.PathLike | None = None,
    input_name: str = "input.json",
    output_name: str = "output.json",
) -> dict[str, Any]:
    """Evaluate the point in ``workdir/input_name``; writes and returns the ``output_name`` record.

    Training runs in ``workdir/run`` (give ``--checkPointToSave run`` to phpo so that a restarted job
    resumes). With ``storage`` (the steering's ``--storage``; needs ``space``) the point's
    :data:`TRIAL_KEY` names a running trial of the study there: the training reports its objective to it,
    the space's pruner may stop it, and the job tells the trial's final state before writing the output.
    A pruned job has ``status: 0`` (PanDA must not retry it) with its last reported value as loss. A
    retried job whose trial is already finished does not train again. Every failure, a bad input.json or
    an unreachable storage included, ends up as ``status: 1`` with a message.
    """
    wd = Path(workdir)
    try:
        point = json.loads((wd / input_name).read_text())
        if not isinstance(point, dict):
            raise ValueError(
                f"{input_name} must hold a JSON object {{name: value}}; got {type(point).__name__}"
            )
        params, number = split_point(point, input_name)
        if storage is not None and space is None:
            raise ValueError("--storage needs the search space (SPACE) of the steering, for its study")
        if storage is not None and space is not None and number is not None:
            out = _eval_trial(wd, params, number, point, settings, space, storage)
        else:
            if space is not None:
                single_objective(space)
            res = run_trial(point_overrides(params, space), wd / "run", settings, meta={"panda_point": point})
            if res["status"] == "ok":
                note = "" if storage is None else f" (no {TRIAL_KEY} in {input_name}: not pruned)"
                out = {
                    "status": 0,
                    "loss": res["objective_value"],
                    "message": f"{settings.objective} of the run{note}",
                }
            else:
                out = {"status": 1, "loss": None, "message": f"training {res['status']}: {res.get('error')}"}
    except (OSError, ValueError) as exc:
        out = {"status": 1, "loss": None, "message": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # the storage's own errors (database driver, network): still write output
        out = {"status": 1, "loss": None, "message": f"{type(exc).__name__}: {_first_line(exc)}"}
    write_json(wd / output_name, out)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def open_panda_study(space: SearchSpace, storage: str | os.PathLike, *, create: bool) -> Any:
    """The space's study in ``storage``: created when missing with ``create`` (the steering; sampler and
    pruner from the space), else loaded with the space's pruner and a plain sampler (an evaluation job
    never samples: its trial's parameters are fixed). ValueError naming the storage when it cannot be
    reached or, without ``create``, holds no such study."""
    import optuna

    from hepgan.sweep.study import load_study, open_storage

    where = f"Optuna storage {str(storage)!r}"
    st = open_storage(storage)  # a ValueError naming a journal that cannot be opened
    try:
        if create:
            n = len(load_study(space, st).get_trials(deepcopy=False))
            return load_study(space, st, seed_offset=n)
        return optuna.load_study(
            study_name=space.name,
            storage=st,
            sampler=optuna.samplers.RandomSampler(),
            pruner=space.make_pruner(),
        )
    except KeyError:
        raise ValueError(
            f"{where} holds no study {space.name!r}: the steering (panda-steer --storage with the same "
            "URL and space) creates it"
        ) from None
    except ValueError:
        raise
    except Exception as exc:  # database drivers raise their own classes
        raise ValueError(f"{where} cannot be reached ({type(exc).__name__}: {_first_line(exc)})") from None


def _trial_output(frozen: Any, objective: str, note: str) -> dict[str, Any]:
    """output.json of a finished trial (COMPLETE, PRUNED or FAIL)."""
    from optuna.trial import TrialState

    n = frozen.number
    if frozen.state == TrialState.COMPLETE:
        return {"status": 0, "loss": frozen.value, "message": f"{objective} of trial {n}{note}"}
    if frozen.state == TrialState.PRUNED and frozen.intermediate_values:
        step = max(frozen.intermediate_values)
        value = frozen.intermediate_values[step]
        return {
            "status": 0,
            "loss": value,
            "message": f"pruned at step {step}: {objective}={value:.4g} is its last reported value; trial "
            f"{n} is PRUNED in the study, which is where the steering reads it from{note}",
        }
    return {"status": 1, "loss": None, "message": f"trial {n} is {frozen.state.name} in the study{note}"}


def _eval_trial(
    wd: Path,
    params: dict[str, Any],
    number: int,
    point: dict[str, Any],
    settings: RunSettings,
    space: SearchSpace,
    storage: str | os.PathLike,
) -> dict[str, Any]:
    """Train the running trial ``number`` of the study in ``storage`` with pruning; tell its state."""
    import optuna
    from optuna.trial import TrialState

    from hepgan.sweep.study import optuna_reporter, tell_result

    objective = single_objective(space)
    point_overrides(params, space)  # unknown keys: a clear error before the storage is touched
    study = open_panda_study(space, storage, create=False)
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if frozen is None:
        raise ValueError(
            f"{TRIAL_KEY}={number} is not a trial of study {space.name!r} in {str(storage)!r}: the point "
            "was made by a steering with another --storage (or the study was recreated)"
        )
    if not same_params(frozen.params, params):
        raise ValueError(
            f"trial {number} of study {space.name!r} in {str(storage)!r} has parameters {frozen.params}, "
            f"not those of the point {params}: the steering and the evaluation use different storages"
        )
    if frozen.state.is_finished():
        return _trial_output(frozen, objective, " (already finished: a retried job; not trained again)")
    if frozen.state != TrialState.RUNNING:
        raise ValueError(
            f"trial {number} is {frozen.state.name}, not RUNNING: it was not asked by the steering"
        )

    overrides = space.overrides(frozen.params)  # the stored values are the trial's, to the last bit
    trial = optuna.trial.Trial(study, frozen._trial_id)
    trial.set_user_attr("panda_job", job_info())
    settings = RunSettings(**{**settings.__dict__, "objective": objective})
    meta = {"panda_point": point, "optuna_study": space.name, "optuna_trial": str(number)}
    try:
        res = run_trial(overrides, wd / "run", settings, report=optuna_reporter(trial, objective), meta=meta)
    except ValueError:
        study.tell(trial, state=TrialState.FAIL)  # the config does not compose: no retry will do better
        raise
    if res["status"] == "preempted":
        # the job is being stopped: leave the trial RUNNING; PanDA's retry resumes it from the checkpoint
        return {"status": 1, "loss": None, "message": f"training preempted: {res.get('error')}"}
    # tell before output.json exists: a loss in %IN then means the trial was told, or its job died
    try:
        tell_result(study, trial, res)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # told meanwhile (the steering, from an earlier attempt's loss): report what it holds
    frozen = study._storage.get_trial(frozen._trial_id)
    if frozen.state == TrialState.FAIL:
        return {
            "status": 1,
            "loss": None,
            "message": f"training {res['status']}: {res.get('error')} (trial {number} is FAIL in the study)",
        }
    return _trial_output(frozen, objective, "")


# ---------------------------------------------------------------------------------------------------------
# steering
# ---------------------------------------------------------------------------------------------------------


def read_points(path: str | os.PathLike) -> list[tuple[dict[str, Any], float | None]]:
    """The ``[point, loss]`` pairs of an iDDS steering input file (``%IN``); points keep :data:`TRIAL_KEY`."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"steering input {str(p)!r}: cannot read JSON ({exc})") from None
    points = doc.get("points") if isinstance(doc, dict) else None
    if not isinstance(points, list):
        raise ValueError(
            f"steering input {str(p)!r}: expected an object with a list 'points' of [point, loss]"
        )
    out = []
    for i, item in enumerate(points):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], dict)):
            raise ValueError(
                f"steering input {str(p)!r}: points[{i}] is not a [point-object, loss] pair: {item!r}"
            )
        loss = item[1]
        out.append((item[0], loss if loss is None else _loss(loss)))
    return out


def _loss(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def stop_reason(
    values: Sequence[tuple[int, float]],
    direction: str,
    *,
    target: float | None = None,
    patience: int | None = None,
) -> str | None:
    """Why the search should end, or None: ``values`` are (trial number, value) of the completed trials in
    the order they completed. ``target``: a value at or beyond it (below for ``minimize``) was reached;
    ``patience``: the last ``patience`` completed trials did not improve the best (strictly)."""
    if not values:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    best_n, best = min(values, key=lambda nv: sign * nv[1])
    if target is not None and sign * best <= sign * target:
        cmp = "<=" if sign > 0 else ">="
        return f"target reached: trial {best_n} has {best:.6g} {cmp} {target:.6g}"
    if patience is not None:
        since, run_best = 0, math.inf
        for _, v in values:
            if sign * v < run_best:
                run_best, since = sign * v, 0
            else:
                since += 1
        if since >= patience:
            return (
                f"no improvement in the last {since} completed trials (patience {patience}); "
                f"best {best:.6g} (trial {best_n})"
            )
    return None


def panda_steer(
    space: SearchSpace,
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    budget: int,
    n_points: int = 1,
    storage: str | os.PathLike | None = None,
    target: float | None = None,
    patience: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Write up to ``n_points`` new points to ``out_path``, or ``[]`` to end the search.

    The search ends once ``budget`` points exist in ``in_path`` or a stopping rule holds (``target``,
    ``patience``: see :func:`stop_reason`). Without ``storage`` the study is rebuilt in memory from
    ``in_path``. With ``storage`` (see :func:`reconcile`) the study lives there: points of ``in_path``
    are matched to its trials, and every new point is a trial asked from it, carrying its number under
    :data:`TRIAL_KEY`. ``log`` receives the decision and its reason; the same goes, with counts per
    trial state, to ``<out_path stem>.steering.json`` beside ``out_path``. Returns the new points.
    """
    if budget < 1 or n_points < 1:
        raise ValueError(f"--budget and --n-points must be >= 1; got {budget}, {n_points}")
    if patience is not None and patience < 1:
        raise ValueError(f"--patience must be >= 1; got {patience}")
    if target is not None and not math.isfinite(target):
        raise ValueError(f"--target must be a finite number; got {target}")
    objective = single_objective(space)
    points = read_points(in_path)
    say = log or (lambda _msg: None)
    summary: dict[str, Any] = {
        "mode": "stateless" if storage is None else "storage",
        "points_in": len(points),
        "budget": budget,
    }
    n_new = min(n_points, budget - len(points))
    study: Any = None
    if storage is None:
        if n_new > 0 or target is not None or patience is not None:
            study = _memory_study(space, points)
    else:
        study = open_panda_study(space, storage, create=True)
        if len(study.directions) > 1:
            raise ValueError(f"study {space.name!r} in {str(storage)!r} is multi-objective; phpo needs one")
        summary["reconciled"] = reconcile(study, space, points, log=say)

    reason = None
    if n_new <= 0:
        reason = f"budget reached: {len(points)} points of {budget}"
    elif study is not None:
        reason = stop_reason(_completed(study), space.direction, target=target, patience=patience)
    new: list[dict[str, Any]] = []
    if reason is None and study is not None:
        dists = dict(space.distributions)
        for _ in range(n_new):
            trial = study.ask(dists)
            point = dict(trial.params)
            if storage is not None:
                trial.set_user_attr("panda_steer", True)
                point[TRIAL_KEY] = trial.number
            new.append(point)
    if study is not None:
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            states[t.state.name] = states.get(t.state.name, 0) + 1
        summary["states"] = states
        done = _completed(study)
        if done:
            sign = 1.0 if space.direction == "minimize" else -1.0
            n, v = min(done, key=lambda nv: sign * nv[1])
            summary["best"] = {"trial": n, objective: v}
    decision = f"stop: {reason}" if reason else f"propose {len(new)} points"
    summary.update(decision=decision, new_points=new)
    say(f"panda-steer: {decision}; trials {summary.get('states', {})}, %IN {summary.get('reconciled', {})}")
    out = Path(out_path)
    write_json(out, new)
    write_json(out.with_name(out.stem + ".steering.json"), summary)
    return new


def _memory_study(space: SearchSpace, points: Sequence[tuple[dict[str, Any], float | None]]) -> Any:
    """An in-memory study holding the points of %IN as frozen trials (the stateless steering)."""
    import optuna

    study = optuna.create_study(direction=space.direction, sampler=space.make_sampler(len(points)))  # type: ignore[arg-type]
    dists = dict(space.distributions)
    for point, loss in points:
        params = {k: v for k, v in point.items() if k != TRIAL_KEY}
        if set(params) != set(dists):
            continue  # a point of another space tells us nothing about this one
        try:
            study.add_trial(_frozen(params, loss, dists))
        except ValueError:
            continue  # outside the current space (the space was edited): skip, it still counts
    return study


def _frozen(params: dict[str, Any], loss: float | None, dists: dict[str, Any], **attrs: Any) -> Any:
    from optuna.trial import TrialState, create_trial

    if loss is None:
        state, value = TrialState.RUNNING, None
    elif math.isfinite(loss):
        state, value = TrialState.COMPLETE, loss
    else:
        state, value = TrialState.FAIL, None
    return create_trial(state=state, value=value, params=params, distributions=dists, user_attrs=attrs)


def _completed(study: Any) -> list[tuple[int, float]]:
    """(number, value) of the COMPLETE trials in the order they completed."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    return [(t.number, float(t.value)) for t in done]


def reconcile(
    study: Any,
    space: SearchSpace,
    points: Sequence[tuple[dict[str, Any], float | None]],
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Bring the stored ``study`` up to date with the ``[point, loss]`` pairs of %IN; returns counts.

    A point with :data:`TRIAL_KEY` whose loss arrived while its trial is still RUNNING (the job died
    before telling, or ran without ``--storage``) is told from the loss: a number -> COMPLETE, anything
    else -> FAIL. A point without it (from a stateless steering, or a trial number this study does not
    hold) is added once as a frozen trial, found again later through its ``panda_point`` user attribute,
    and told when its loss arrives. Points of another space are skipped.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    say = log or (lambda _msg: None)
    dists = dict(space.distributions)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    by_point = {t.user_attrs[POINT_ATTR]: t for t in trials if POINT_ATTR in t.user_attrs}
    counts = {"told_complete": 0, "told_fail": 0, "added": 0, "skipped": 0}
    for i, (point, loss) in enumerate(points):
        params, number = split_point(point, f"steering input points[{i}]")
        if set(params) != set(dists):
            counts["skipped"] += 1
            continue
        key = json.dumps(params, sort_keys=True)
        trial = by_number.get(number) if number is not None else by_point.get(key)
        if trial is not None and number is not None and not same_params(trial.params, params):
            say(f"points[{i}]: trial {number} of the study has other parameters; taken as a new point")
            trial = by_point.get(key)
        if trial is None:
            try:
                study.add_trial(_frozen(params, loss, dists, **{POINT_ATTR: key}))
            except ValueError:
                counts["skipped"] += 1  # outside the current space
                continue
            counts["added"] += 1
            continue
        if trial.state != TrialState.RUNNING or loss is None:
            continue
        try:
            if math.isfinite(loss):
                study.tell(trial.number, loss)
                counts["told_complete"] += 1
            else:
                study.tell(trial.number, state=TrialState.FAIL)
                counts["told_fail"] += 1
        except UpdateFinishedTrialError:
            continue  # its job told it in the meantime
        say(f"trial {trial.number}: loss {loss} arrived while RUNNING in the storage; told from it")
    return counts
