"""Campaign results: one table of every trial, plots of the objective, and the best model chosen on physics.

Reads every ``result.json`` below the given folders: those written by ``hepgan-sweep`` (``run``, ``worker``,
``panda-eval``) and those of ``hepgan-train`` runs (a Hydra multirun folder), whose overrides come from
``.hydra/overrides.yaml``.
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
from hepgan.sweep.study import find_results

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
        metrics = res.get("metrics")
        if not isinstance(metrics, dict):
            metrics = {k: v for k, v in res.items() if _number(v) is not None}
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
        rows.append(row)
    return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r if k not in BASE_COLUMNS})
    params = [k for k in extra if k.startswith("p:")]
    metrics = [k for k in extra if k.startswith("m:")]
    return [
        "run",
        "status",
        "objective",
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
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_table(rows: Sequence[Mapping[str, Any]], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<out>.csv`` and ``<out>.md`` (rows sorted best first, failed last); returns both paths."""
    base = Path(out)
    if base.suffix in (".csv", ".md"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    ordered = sorted(rows, key=lambda r: (r["objective"] is None, r["objective"] or 0.0))
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
    write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def plot_objective(rows: Sequence[Mapping[str, Any]], out: str | os.PathLike, *, metric: str) -> Path | None:
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
    fig.suptitle(f"{metric} (lower is better) vs hyperparameters, {len(ok)} trials")
    fig.tight_layout()
    base = Path(out)
    path = (base.with_suffix("") if base.suffix in (".csv", ".md") else base).with_name(
        f"{base.stem}_objective.png"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def collect(
    dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, metric: str = "physics_score"
) -> dict:
    """Table (CSV + markdown) and objective plot of every trial below ``dirs``; returns paths and counts."""
    rows = trial_rows(dirs, metric=metric)
    if not rows:
        raise ValueError(f"no result.json found below {[str(d) for d in dirs]}")
    csv_path, md_path = write_table(rows, out)
    png = plot_objective(rows, out, metric=metric)
    return {
        "trials": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "csv": str(csv_path),
        "markdown": str(md_path),
        "plot": None if png is None else str(png),
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
) -> dict[str, Any]:
    """Pick the best trial by ``metric`` (lower is better unless ``maximize``).

    With ``reevaluate=N`` the ``top_k`` best are first re-evaluated on ``N`` held-out events by ``eval_fn``
    (same seed for all, so they face the same reference sample) and the choice is made on the new values;
    a candidate whose re-evaluation raises is dropped with its error recorded.
    """
    rows = [r for r in trial_rows(dirs, metric=metric) if r["status"] == "ok"]
    for r in rows:
        r["objective"] = _number(r.get(f"m:{metric}"))
    rows = [r for r in rows if r["objective"] is not None]
    if not rows:
        raise ValueError(f"no successful trial with a finite {metric!r} below {[str(d) for d in dirs]}")
    sign = -1.0 if maximize else 1.0
    rows.sort(key=lambda r: sign * r["objective"])
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1; got {top_k}")
    candidates = rows[:top_k]
    report: dict[str, Any] = {"metric": metric, "n_trials": len(rows), "candidates": []}
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
