"""Campaign results: one table of every trial, plots of the objective, and the best model chosen on physics.

Reads every ``result.json`` below the given folders: those written by ``hepgan-sweep`` (``run``, ``worker``,
``panda-eval``) and those of ``hepgan-train`` runs (a Hydra multirun folder), whose overrides come from
``.hydra/overrides.yaml``. A run's metrics are completed by its ``fit_result.json`` timing (training
throughput ``showers_per_s``; :func:`hepgan.sweep.study.run_metrics`).

Several objectives (a multi-objective space): the table marks the Pareto front (trials no other trial
beats on every objective, each in its direction; Optuna's ``study.best_trials`` when the study is given,
else computed from the rows), ``<out>_pareto.csv`` lists it and ``<out>_pareto.png`` plots the first
objective against the second with the front highlighted.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hepgan.fileio import write_json, write_text
from hepgan.sweep.study import find_results, run_metrics

#: ``fn(run, n_events, seed) -> metrics``: re-evaluates a trial's model on a larger held-out sample; ``run``
#: is a row of the table (``run_dir``, ``checkpoint``, ``overrides``, ...). Lower ``physics_score`` = better.
EvalFn = Callable[[Mapping[str, Any], int, int], Mapping[str, float]]

BASE_COLUMNS = (
    "run",
    "status",
    "objective",
    "wall_s",
    "attempts",
    "job_id",
    "checkpoint",
    "overrides",
    "error",
)


def _overrides_of(run_dir: Path, res: Mapping[str, Any]) -> list[str]:
    if isinstance(res.get("overrides"), list):
        return [str(o) for o in res["overrides"]]
    hydra_overrides = run_dir / ".hydra" / "overrides.yaml"
    if hydra_overrides.exists():
        import yaml

        data = yaml.safe_load(hydra_overrides.read_text())
        return [str(o) for o in data] if isinstance(data, list) else []
    return []


def _param_key(override: str) -> tuple[str, str] | None:
    key, sep, value = override.partition("=")
    if not sep:
        return None
    return key.lstrip("+~"), value


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def trial_rows(dirs: Iterable[str | os.PathLike], *, metric: str = "physics_score") -> list[dict[str, Any]]:
    """One row per result.json below ``dirs``: base columns, ``p:<key>`` per override, ``m:<name>`` per
    numeric metric; ``objective`` is ``metric`` (None when missing or not finite)."""
    rows = []
    for run_dir, res in find_results(dirs):
        metrics = run_metrics(res, run_dir)
        overrides = _overrides_of(run_dir, res)
        job = res.get("job") or {}
        row: dict[str, Any] = {
            "run": str(run_dir),
            "status": res.get("status", "ok"),
            "objective": _number(metrics.get(metric)),
            "wall_s": _number(res.get("wall_s")),
            "attempts": res.get("attempts"),
            "job_id": "_".join(str(job[k]) for k in ("job_id", "task_id") if job.get(k)) or None,
            "checkpoint": res.get("checkpoint"),
            "overrides": " ".join(overrides),
            "error": res.get("error"),
        }
        for o in overrides:
            kv = _param_key(o)
            if kv is not None:
                row[f"p:{kv[0]}"] = kv[1]
        for k, v in metrics.items():
            if _number(v) is not None:
                row[f"m:{k}"] = float(v)
        meta = res.get("meta")
        # not columns: they match the row to its Optuna trial
        if isinstance(meta, dict) and meta.get("optuna_trial") is not None:
            row["_study"], row["_trial"] = meta.get("optuna_study"), int(meta["optuna_trial"])
        rows.append(row)
    return rows


def _signs(directions: Sequence[str]) -> list[float]:
    return [-1.0 if d == "maximize" else 1.0 for d in directions]


def _values(row: Mapping[str, Any], objectives: Sequence[str]) -> list[float] | None:
    vals = [_number(row.get(f"m:{name}")) for name in objectives]
    if row.get("status") != "ok" or any(v is None for v in vals):
        return None
    return [float(v) for v in vals if v is not None]


def pareto_rows(
    rows: Sequence[Mapping[str, Any]], objectives: Sequence[str], directions: Sequence[str]
) -> list[int]:
    """Indices of the rows on the Pareto front: successful rows with every objective finite that no other
    such row dominates (at least as good on every objective, better on one; ``maximize`` objectives
    count higher as better). Ties are all kept."""
    signs = _signs(directions)
    scored = []
    for i, r in enumerate(rows):
        vals = _values(r, objectives)
        if vals is not None:
            scored.append((i, [s * v for s, v in zip(signs, vals, strict=True)]))
    front = []
    for i, a in scored:
        dominated = any(
            all(y <= x for x, y in zip(a, b, strict=True)) and any(y < x for x, y in zip(a, b, strict=True))
            for j, b in scored
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def mark_pareto(
    rows: Sequence[dict[str, Any]],
    objectives: Sequence[str],
    directions: Sequence[str],
    study: Any = None,
) -> int:
    """Set ``row["pareto"]`` (True/False) on every row; returns the size of the front.

    With an Optuna ``study`` the front is its ``best_trials`` (rows matched by the study name and trial
    number in their result's ``meta``; rows of other studies are not on it); without, :func:`pareto_rows`.
    """
    if study is not None:
        best = {t.number for t in study.best_trials}
        on = {
            i
            for i, r in enumerate(rows)
            if r.get("_study") == study.study_name and r.get("_trial") in best and r.get("status") == "ok"
        }
    else:
        on = set(pareto_rows(rows, objectives, directions))
    for i, r in enumerate(rows):
        r["pareto"] = i in on
    return len(on)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r if k not in BASE_COLUMNS})
    params = [k for k in extra if k.startswith("p:")]
    metrics = [k for k in extra if k.startswith("m:")]
    return [
        "run",
        "status",
        "objective",
        *(["pareto"] if any("pareto" in r for r in rows) else []),
        *params,
        *metrics,
        "wall_s",
        "attempts",
        "job_id",
        "checkpoint",
        "overrides",
        "error",
    ]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_table(
    rows: Sequence[Mapping[str, Any]], out: str | os.PathLike, *, maximize: bool = False
) -> tuple[Path, Path]:
    """Write ``<out>.csv`` and ``<out>.md`` (rows sorted best first, failed last; Pareto rows first when
    the rows are marked); returns both paths. ``maximize``: higher objective is better."""
    base = Path(out)
    if base.suffix in (".csv", ".md"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    sign = -1.0 if maximize else 1.0
    ordered = sorted(
        rows,
        key=lambda r: (not r.get("pareto", True), r["objective"] is None, sign * (r["objective"] or 0.0)),
    )
    csv_path, md_path = base.with_suffix(".csv"), base.with_suffix(".md")
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(cols)
    for r in ordered:
        w.writerow([_fmt(r.get(c)) for c in cols])
    write_text(csv_path, buf.getvalue())
    md_cols = [c for c in cols if c not in ("overrides", "error")]
    lines = ["| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for r in ordered:
        lines.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in md_cols) + " |")
    by_status = Counter(str(r["status"]) for r in rows)
    order = sorted(by_status, key=lambda st: (st != "ok", st))
    counts = ", ".join(f"{by_status[st]} {st}" for st in order)
    lines += ["", f"{len(rows)} trials" + (f": {counts}." if counts else ".")]
    if any("pareto" in r for r in rows):
        lines.append(f"{sum(bool(r.get('pareto')) for r in rows)} on the Pareto front (pareto: yes).")
    write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def plot_objective(
    rows: Sequence[Mapping[str, Any]], out: str | os.PathLike, *, metric: str, maximize: bool = False
) -> Path | None:
    """Scatter the objective against every hyperparameter that varies (one panel each); PNG path or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["objective"] is not None]
    params = [k for k in _columns(rows) if k.startswith("p:") and len({r.get(k) for r in ok}) > 1]
    if not ok or not params:
        return None
    ncol = min(3, len(params))
    nrow = math.ceil(len(params) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, params, strict=False):
        vals = [r.get(key) for r in ok]
        ys = [r["objective"] for r in ok]
        nums = [_number(v) for v in vals]
        if all(n is not None for n in nums):
            ax.scatter(nums, ys, s=18)
            positive = all(n > 0 for n in nums)  # type: ignore[operator]
            if positive and max(nums) / min(nums) > 20:  # type: ignore[operator,type-var]
                ax.set_xscale("log")
        else:
            cats = sorted({str(v) for v in vals})
            ax.scatter([cats.index(str(v)) for v in vals], ys, s=18)
            ax.set_xticks(range(len(cats)), cats, rotation=30)
        ax.set_xlabel(key[2:])
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(params) :]:
        ax.set_visible(False)
    better = "higher" if maximize else "lower"
    fig.suptitle(f"{metric} ({better} is better) vs hyperparameters, {len(ok)} trials")
    fig.tight_layout()
    base = Path(out)
    path = (base.with_suffix("") if base.suffix in (".csv", ".md") else base).with_name(
        f"{base.stem}_objective.png"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _out_path(out: str | os.PathLike, suffix: str) -> Path:
    base = Path(out)
    return (base.with_suffix("") if base.suffix in (".csv", ".md") else base).with_name(
        f"{base.stem}{suffix}"
    )


def plot_pareto(
    rows: Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    objectives: Sequence[str],
    directions: Sequence[str],
) -> Path | None:
    """``<out>_pareto.png``: the first objective against the second for every successful trial, the rows
    marked ``pareto`` highlighted and joined in order; PNG path or None (fewer than two objectives or no
    trial with both)."""
    if len(objectives) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(v[0], v[1], bool(r.get("pareto"))) for r in rows if (v := _values(r, objectives[:2])) is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    ax.scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], s=18, c="0.6", label="trial")
    front = sorted((p[0], p[1]) for p in pts if p[2])
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "o-", c="tab:red", ms=6, label="Pareto front")
    for setter, name, d in (
        (ax.set_xlabel, objectives[0], directions[0]),
        (ax.set_ylabel, objectives[1], directions[1]),
    ):
        setter(f"{name} ({'higher' if d == 'maximize' else 'lower'} is better)")
    shown = "" if len(objectives) == 2 else f" (first 2 of {len(objectives)} objectives)"
    ax.set_title(f"{len(front)} of {len(pts)} trials on the Pareto front{shown}")
    ax.legend()
    fig.tight_layout()
    path = _out_path(out, "_pareto.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def collect(
    dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    metric: str = "physics_score",
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
    study: Any = None,
) -> dict:
    """Table (CSV + markdown) and objective plot of every trial below ``dirs``; returns paths and counts.

    ``objectives``/``directions`` (a space's; default ``metric``, minimised): with several, the table's
    ``objective`` is the first, rows on the Pareto front (:func:`mark_pareto`, from ``study``'s
    ``best_trials`` when given) are marked ``pareto`` and listed first, and ``<out>_pareto.csv`` and
    ``<out>_pareto.png`` are written.
    """
    objectives = list(objectives or [metric])
    directions = list(directions or ["minimize"] * len(objectives))
    if len(directions) != len(objectives):
        raise ValueError(f"{len(objectives)} objectives {objectives} but {len(directions)} directions")
    rows = trial_rows(dirs, metric=objectives[0])
    if not rows:
        raise ValueError(f"no result.json found below {[str(d) for d in dirs]}")
    maximize = directions[0] == "maximize"
    report: dict[str, Any] = {}
    if len(objectives) > 1:
        n_front = mark_pareto(rows, objectives, directions, study)
        front = [r for r in rows if r["pareto"]]
        front_path = _out_path(out, "_pareto.csv")
        front_path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["run", *objectives, "checkpoint", "overrides"])
        signs = _signs(directions)
        for r in sorted(front, key=lambda r: signs[0] * r[f"m:{objectives[0]}"]):
            w.writerow(
                [r["run"], *(_fmt(r[f"m:{o}"]) for o in objectives), _fmt(r["checkpoint"]), r["overrides"]]
            )
        write_text(front_path, buf.getvalue())
        png = plot_pareto(rows, out, objectives, directions)
        report = {
            "objectives": dict(zip(objectives, directions, strict=True)),
            "pareto": n_front,
            "pareto_from": "optuna study.best_trials" if study is not None else "result rows",
            "pareto_csv": str(front_path),
            "pareto_plot": None if png is None else str(png),
        }
    csv_path, md_path = write_table(rows, out, maximize=maximize)
    png = plot_objective(rows, out, metric=objectives[0], maximize=maximize)
    return {
        "trials": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "csv": str(csv_path),
        "markdown": str(md_path),
        "plot": None if png is None else str(png),
        **report,
    }


def select_best(
    dirs: Sequence[str | os.PathLike],
    *,
    metric: str = "physics_score",
    top_k: int = 1,
    reevaluate: int | None = None,
    eval_fn: EvalFn | None = None,
    seed: int = 0,
    maximize: bool = False,
    objectives: Sequence[str] | None = None,
    directions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Pick the best trial by ``metric`` (lower is better unless ``maximize``).

    Several ``objectives`` (with ``directions``; a multi-objective space's): the candidates are the trials
    on the Pareto front (:func:`pareto_rows`) and the choice among them is made on the first objective in
    its direction (``metric`` and ``maximize`` are then taken from it); the report lists the front
    (``pareto``) and says so (``rule``).

    With ``reevaluate=N`` the ``top_k`` best are first re-evaluated on ``N`` held-out events by ``eval_fn``
    (same seed for all, so they face the same reference sample) and the choice is made on the new values;
    a candidate whose re-evaluation raises is dropped with its error recorded.
    """
    multi = objectives is not None and len(objectives) > 1
    if multi:
        assert objectives is not None
        directions = list(directions or ["minimize"] * len(objectives))
        metric, maximize = objectives[0], directions[0] == "maximize"
    rows = [r for r in trial_rows(dirs, metric=metric) if r["status"] == "ok"]
    for r in rows:
        r["objective"] = _number(r.get(f"m:{metric}"))
    rows = [r for r in rows if r["objective"] is not None]
    if multi:
        assert objectives is not None and directions is not None
        everything = len(rows)
        rows = [rows[i] for i in pareto_rows(rows, objectives, directions)]
        if not rows:
            raise ValueError(
                f"no successful trial with finite {', '.join(map(repr, objectives))} below "
                f"{[str(d) for d in dirs]}"
            )
    if not rows:
        raise ValueError(f"no successful trial with a finite {metric!r} below {[str(d) for d in dirs]}")
    sign = -1.0 if maximize else 1.0
    rows.sort(key=lambda r: sign * r["objective"])
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1; got {top_k}")
    candidates = rows[:top_k]
    report: dict[str, Any] = {"metric": metric, "n_trials": len(rows), "candidates": []}
    if multi:
        assert objectives is not None and directions is not None
        report["n_trials"] = everything
        report["objectives"] = dict(zip(objectives, directions, strict=True))
        report["rule"] = (
            f"the {'highest' if maximize else 'lowest'} {metric} among the {len(rows)} trials on the "
            f"Pareto front of {', '.join(objectives)}"
        )
        report["pareto"] = [{"run": r["run"], **{o: r[f"m:{o}"] for o in objectives}} for r in rows]
    if reevaluate is not None:
        if eval_fn is None:
            eval_fn = default_eval_fn()
        for r in candidates:
            entry = {"run": r["run"], "objective": r["objective"]}
            try:
                m = dict(eval_fn(r, reevaluate, seed))
                entry["reevaluated"] = m
                entry["reevaluated_objective"] = _number(m.get(metric))
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["reevaluated_objective"] = None
            report["candidates"].append(entry)
        scored = [c for c in report["candidates"] if c["reevaluated_objective"] is not None]
        if not scored:
            raise ValueError(
                f"re-evaluation failed for all {len(candidates)} candidates: {report['candidates']}"
            )
        best_run = min(scored, key=lambda c: sign * c["reevaluated_objective"])["run"]
        best = next(r for r in candidates if r["run"] == best_run)
        report["reevaluate_events"] = reevaluate
    else:
        best = candidates[0]
        report["candidates"] = [{"run": r["run"], "objective": r["objective"]} for r in candidates]
    report["best"] = {
        "run": best["run"],
        "objective": best["objective"],
        "checkpoint": best["checkpoint"],
        "overrides": best["overrides"],
        "metrics": {k[2:]: v for k, v in best.items() if k.startswith("m:")},
    }
    return report


def default_eval_fn() -> EvalFn:
    """The default re-evaluation: generate from the trial's checkpoint and score with
    ``hepgan.physics.metrics.evaluate``, through ``hepgan.train.evaluate_checkpoint`` when present."""
    from hepgan.sweep.runner import load_callable

    try:
        fn = load_callable("hepgan.train:evaluate_checkpoint")
    except ValueError as exc:
        raise ValueError(
            "re-evaluation needs hepgan.train.evaluate_checkpoint(run_dir, checkpoint, n_events, seed) "
            f"which is not available ({exc}); pass --eval-fn module:function"
        ) from None

    def run(row: Mapping[str, Any], n_events: int, seed: int) -> Mapping[str, float]:
        return fn(row["run"], row.get("checkpoint"), n_events, seed)

    return run


def write_best(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the selection report as JSON (atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_json(p, report)
