"""PanDA/iDDS hyperparameter optimisation (``phpo``): the evaluation payload and a stateless steering step.

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
  ``hepgan-sweep panda-steer SPACE --in %IN --out %OUT --n-points %NUM_POINTS --budget %MAX_POINTS``,
  which rebuilds an in-memory Optuna study from ``%IN`` (``add_trial`` of frozen trials: evaluated points
  as complete, unevaluated ones as running) and asks it for the next points; nothing is kept between calls.

The layout of ``%IN`` is taken from iDDS's ``ATLASHPOWork.generate_input_json`` (points as
``[point, loss]`` pairs); a point with a non-numeric loss is treated as failed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hepgan.sweep.runner import RunSettings, run_trial, write_json
from hepgan.sweep.space import SearchSpace, format_value


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


def panda_eval(
    workdir: str | os.PathLike,
    settings: RunSettings,
    *,
    space: SearchSpace | None = None,
    input_name: str = "input.json",
    output_name: str = "output.json",
) -> dict[str, Any]:
    """Evaluate the point in ``workdir/input_name``; writes and returns the ``output_name`` record.

    Training runs in ``workdir/run`` (give ``--checkPointToSave run`` to phpo so that a restarted job
    resumes). Every failure, a bad input.json included, ends up as ``status: 1`` with a message.
    """
    wd = Path(workdir)
    try:
        point = json.loads((wd / input_name).read_text())
        if not isinstance(point, dict):
            raise ValueError(
                f"{input_name} must hold a JSON object {{name: value}}; got {type(point).__name__}"
            )
        overrides = point_overrides(point, space)
        res = run_trial(overrides, wd / "run", settings, meta={"panda_point": point})
        if res["status"] == "ok":
            out = {"status": 0, "loss": res["objective_value"], "message": f"{settings.objective} of the run"}
        else:
            out = {"status": 1, "loss": None, "message": f"training {res['status']}: {res.get('error')}"}
    except (OSError, ValueError) as exc:
        out = {"status": 1, "loss": None, "message": f"{type(exc).__name__}: {exc}"}
    write_json(wd / output_name, out)
    return out


def read_points(path: str | os.PathLike) -> list[tuple[dict[str, Any], float | None]]:
    """The ``[point, loss]`` pairs of an iDDS steering input file (``%IN``)."""
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


def panda_steer(
    space: SearchSpace,
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    budget: int,
    n_points: int = 1,
) -> list[dict[str, Any]]:
    """Write up to ``n_points`` new points to ``out_path`` (``[]`` once ``budget`` points exist).

    Returns the new points.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    if budget < 1 or n_points < 1:
        raise ValueError(f"--budget and --n-points must be >= 1; got {budget}, {n_points}")
    points = read_points(in_path)
    n_new = min(n_points, budget - len(points))
    new: list[dict[str, Any]] = []
    if n_new > 0:
        sampler = space.make_sampler(len(points))
        study = optuna.create_study(direction=space.direction, sampler=sampler)  # type: ignore[arg-type]
        dists = dict(space.distributions)
        for point, loss in points:
            if set(point) != set(dists):
                continue  # a point of another space tells us nothing about this one
            if loss is None:
                state, value = TrialState.RUNNING, None
            elif math.isfinite(loss):
                state, value = TrialState.COMPLETE, loss
            else:
                state, value = TrialState.FAIL, None
            try:
                study.add_trial(create_trial(state=state, value=value, params=point, distributions=dists))
            except ValueError:
                continue  # outside the current space (the space was edited): skip, it still counts
        for _ in range(n_new):
            new.append(dict(study.ask(dists).params))
    write_json(Path(out_path), new)
    return new
