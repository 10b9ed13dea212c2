"""Large-batch study: physics quality against the global batch under four learning-rate rules.

    python experiments/large_batch/study.py plan --scale cpu -o runs/large_batch/plan.txt
    sh experiments/large_batch/run.sh                     # runs the CPU plan here, then summarises
    python experiments/large_batch/study.py summarize runs/large_batch --out experiments/large_batch

``plan`` writes a ``hepgan-sweep`` plan (one training run per line, Hydra overrides, ``# key=value``
metadata). Every run sees the same number of showers (the experiment fixes the epochs), so a batch ``k``
times larger makes ``k`` times fewer updates. The rules:

- ``none``: the reference learning rates (``optim.lr_g``, ``optim.lr_d``) whatever the batch, no warm-up;
- ``linear``: ``lr x B / B_ref`` (Goyal et al. 2017), linear warm-up over an eighth of the updates;
- ``sqrt``: ``lr x sqrt(B / B_ref)`` (Hoffer et al. 2017), the same warm-up;
- ``lamb``: LAMB (You et al. 2019) with the LAMB paper's ``sqrt`` rule and the same warm-up.

At ``B = B_ref`` the first three rules are one configuration (factor 1; no warm-up), run once per seed
and reported under ``none``. ``summarize`` reads each run's manifest (what ran), final report (what it
scored) and logs (gradient noise scale), and writes ``results.json``, ``table.md`` and the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

RULES = ("none", "linear", "sqrt", "lamb")
# LAMB's reference learning rate: None takes the recipe's (optim.lr_g, optim.lr_d = 1e-3), so that every
# rule starts from the same tuned point. LAMB's step is relative to each layer's weight norm (the trust
# ratio); probes at batch 16 with 1e-2 (b1 0.9, and b1 0 / b2 0.9) did not train either (README.md).
LAMB_LR: float | None = None
# scale -> experiment, batches (every seed), extra batches (run after all seeds of the others, so that a
# campaign cut short still has every seed of the main points), B_ref, showers seen per run, seeds, and
# LAMB's reference learning rate (see LAMB_LR)
SCALES: dict[str, dict[str, Any]] = {
    "cpu": {
        "experiment": "large_batch_cpu",
        "batches": [16, 64, 512],
        "extra_batches": [256],
        "ref": 16,
        "seen": 8192,
        "seeds": [0, 1],
        "lamb_lr": LAMB_LR,
    },
    "full": {
        "experiment": "large_batch_paper",
        "batches": [16, 32, 64, 128, 256, 512, 1024],
        "extra_batches": [],
        "ref": 128,
        "seen": 30 * 200_000,
        "seeds": [0, 1, 2],
        "lamb_lr": LAMB_LR,
    },
}
WARMUP_FRACTION = 8  # warm-up over 1/8 of the updates (Goyal et al.: 5 of 90 epochs; short runs need more)


def plan_entries(scale: str) -> list[tuple[list[str], dict[str, str]]]:
    """The study's runs at ``scale`` ("cpu" or "full"): ``(overrides, metadata)`` per run, seed-major
    (every configuration of seed 0 first, then seed 1, ...; the extra batches last)."""
    s = SCALES[scale]
    entries = []
    order = [(seed, b) for seed in s["seeds"] for b in s["batches"]]
    order += [(seed, b) for b in s["extra_batches"] for seed in s["seeds"]]
    for seed, batch in order:
        updates = s["seen"] // batch
        warmup = max(1, round(updates / WARMUP_FRACTION))
        for rule in RULES:
            if batch == s["ref"] and rule in ("linear", "sqrt"):
                continue  # factor 1: the same run as "none"
            ov = [f"experiment={s['experiment']}", f"train.batch_size={batch}", f"train.seed={seed}"]
            if rule == "none":
                ov += ["scaling=none"]
            elif rule == "lamb":
                lr = s["lamb_lr"]
                ov += ["optim=lamb"] + ([f"optim.lr_g={lr:g}", f"optim.lr_d={lr:g}"] if lr else [])
                ov += ["scaling=sqrt", f"scaling.warmup_steps={warmup}"]
            else:
                ov += [f"scaling={rule}", f"scaling.warmup_steps={warmup}"]
            ov += [f"scaling.ref_batch={s['ref']}"]
            entries.append(
                (ov, {"batch": str(batch), "rule": rule, "seed": str(seed), "updates": str(updates)})
            )
    return entries


def cmd_plan(args: argparse.Namespace) -> None:
    from hepgan.sweep.plan import PlanEntry, write_plan

    entries = [PlanEntry(tuple(ov), meta) for ov, meta in plan_entries(args.scale)]
    if args.validate:  # every entry composes and passes the schema, as hepgan-sweep plan checks
        from hepgan.train.config import compose

        for i, e in enumerate(entries):
            try:
                compose(list(e.overrides))
            except ValueError as exc:
                sys.exit(f"plan: entry {i} ({' '.join(e.overrides)}) does not compose: {exc}")
    s = SCALES[args.scale]
    path = write_plan(
        args.output,
        entries,
        comment=(
            f"large-batch study, scale {args.scale}: batches {s['batches'] + s['extra_batches']}, rules "
            f"{list(RULES)}, seeds "
            f"{s['seeds']}, {s['seen']} showers seen per run, B_ref {s['ref']} "
            "(python experiments/large_batch/study.py plan)"
        ),
    )
    print(f"{path}: {len(entries)} runs")


# ---------------------------------------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as f:
        rows = []
        for row in csv.DictReader(f):
            rows.append({k: float(v) if v not in ("", None) else math.nan for k, v in row.items()})
        return rows


def _rule_of(config: dict[str, Any]) -> str:
    if config["optim"]["name"] == "lamb":
        return "lamb"
    return str(config["scaling"]["rule"])


def read_run(run: Path) -> dict[str, Any] | None:
    """One run's record from its folder (None if it has no manifest: never started)."""
    manifest = run / "manifest.json"
    if not manifest.is_file():
        return None
    m = json.loads(manifest.read_text())
    cfg = m["config"]
    rec: dict[str, Any] = {
        "run": run.name,
        "batch": int(cfg["train"]["batch_size"]),
        "rule": _rule_of(cfg),
        "seed": int(m["seed"]),
        "ref_batch": int(cfg["scaling"]["ref_batch"]),
        "warmup_steps": int(cfg["scaling"]["warmup_steps"]),
        "devices": len(m["jax"]["devices"]),
        "commit": m["git"]["commit"],
    }
    result = run / "result.json"
    res = json.loads(result.read_text()) if result.is_file() else {"status": "running"}
    rec["status"] = res.get("status", "unknown")
    if rec["status"] != "ok":
        rec["error"] = res.get("error")
    metrics_path = run / "report" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else res.get("metrics", {})
    for k in (
        "physics_score",
        "sf_rel_error",
        "auc_hlf",
        "auc_hlf_err",
        "fpd",
        "showers_seen",
        "train_seconds",
    ):
        v = metrics.get(k, res.get("metrics", {}).get(k))
        rec[k] = float(v) if v is not None else math.nan
    train = _read_csv(run / "train.csv")
    rec["updates"] = int(train[-1]["step"]) if train else 0
    for p in ("g", "d"):
        col = f"b_noise_{p}"
        vals = [r[col] for r in train if col in r and math.isfinite(r[col])]
        half = vals[len(vals) // 2 :]
        rec[f"b_noise_{p}"] = statistics.median(half) if half else math.nan
        rec[f"b_noise_{p}_curve"] = [(r["step"], r[col]) for r in train if col in r and math.isfinite(r[col])]
        lr = [r[f"lr_{p}"] for r in train if f"lr_{p}" in r]
        rec[f"peak_lr_{p}"] = max(lr) if lr else math.nan
    val = _read_csv(run / "val.csv")
    rec["val_curve"] = [(r.get("showers_seen", math.nan), r.get("physics_score", math.nan)) for r in val]
    return rec


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.fmean(xs) if xs else math.nan


def _fmt(x: float, nd: int = 2) -> str:
    return "-" if not math.isfinite(x) else f"{x:.{nd}f}"


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (batch, rule): seed means and spreads; the reference; where quality starts to fall; B_noise."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["batch"], r["rule"]), []).append(r)
    ref_batch = min(r["ref_batch"] for r in records)
    cells = []
    for (batch, rule), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], RULES.index(kv[0][1]))):
        ok = [r for r in rs if r["status"] == "ok"]
        scores = [r["physics_score"] for r in ok]
        cells.append(
            {
                "batch": batch,
                "rule": rule,
                "seeds": sorted(r["seed"] for r in rs),
                "ok": len(ok),
                "failed": [r["seed"] for r in rs if r["status"] not in ("ok", "running")],
                "physics_score": _mean(scores),
                "physics_score_spread": (max(scores) - min(scores)) if len(scores) > 1 else math.nan,
                "sf_rel_error": _mean([r["sf_rel_error"] for r in ok]),
                "auc_hlf": _mean([r["auc_hlf"] for r in ok]),
                "updates": max((r["updates"] for r in rs), default=0),
                "peak_lr_g": _mean([r["peak_lr_g"] for r in rs]),
                "b_noise_g": _mean([r["b_noise_g"] for r in ok]),
                "b_noise_d": _mean([r["b_noise_d"] for r in ok]),
                "train_minutes": _mean([r["train_seconds"] / 60 for r in ok]),
            }
        )
    ref_cells = [c for c in cells if c["batch"] == ref_batch]
    ref_score = min(
        (c["physics_score"] for c in ref_cells if math.isfinite(c["physics_score"])), default=math.nan
    )
    # the tolerance: the largest seed-to-seed difference at the reference batch (what one more seed moves)
    spreads = [c["physics_score_spread"] for c in ref_cells if math.isfinite(c["physics_score_spread"])]
    tol = max(spreads) if spreads else math.nan
    falls_at = None
    for batch in sorted({c["batch"] for c in cells}):
        best = min(
            (c["physics_score"] for c in cells if c["batch"] == batch and math.isfinite(c["physics_score"])),
            default=math.inf,
        )
        if math.isfinite(ref_score) and math.isfinite(tol) and best > ref_score + tol:
            falls_at = batch
            break
    b_noise = {
        p: _mean(
            [
                r[f"b_noise_{p}"]
                for r in records
                if r["batch"] == ref_batch and r["rule"] == "none" and r["status"] == "ok"
            ]
        )
        for p in ("g", "d")
    }
    return {
        "ref_batch": ref_batch,
        "reference_physics_score": ref_score,
        "tolerance": tol,
        "quality_falls_at_batch": falls_at,
        "b_noise_at_ref": b_noise,
        "cells": cells,
    }


def write_table(summary: dict[str, Any], path: Path) -> None:
    """``table.md``: one row per (batch, rule)."""
    lines = [
        "| batch | rule | updates | peak lr_g | physics_score (seed mean) | seed spread | sf_rel_error "
        "| auc_hlf "
        "| B_noise g / d | runs ok | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        failed = f" ({len(c['failed'])} failed)" if c["failed"] else ""
        lines.append(
            f"| {c['batch']} | {c['rule']} | {c['updates']} | {c['peak_lr_g']:.2g} | "
            f"{_fmt(c['physics_score'])} | "
            f"{_fmt(c['physics_score_spread'])} | {_fmt(c['sf_rel_error'], 3)} | {_fmt(c['auc_hlf'], 3)} | "
            f"{_fmt(c['b_noise_g'], 1)} / {_fmt(c['b_noise_d'], 1)} | {c['ok']}/{len(c['seeds'])}{failed} | "
            f"{_fmt(c['train_minutes'], 1)} |"
        )
    falls = summary["quality_falls_at_batch"]
    lines += [
        "",
        f"Reference (batch {summary['ref_batch']}): physics_score "
        f"{_fmt(summary['reference_physics_score'])}; "
        f"tolerance (largest seed-to-seed difference there) {_fmt(summary['tolerance'])}. "
        + (
            "Quality falls (best rule worse than the reference by more than the tolerance) from batch "
            f"{falls}."
            if falls
            else "No batch falls below the reference by more than the tolerance under its best rule."
            if math.isfinite(summary["tolerance"])
            else "(The tolerance needs two seeds at the reference batch.)"
        ),
        f"B_noise at the reference batch (median over the second half of training, seed mean): generator "
        f"{_fmt(summary['b_noise_at_ref']['g'], 1)}, discriminator "
        f"{_fmt(summary['b_noise_at_ref']['d'], 1)} showers.",
    ]
    path.write_text("\n".join(lines) + "\n")


def plot(records: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> list[Path]:
    """``quality_vs_batch.png`` (three panels) and ``b_noise.png``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"none": "k", "linear": "tab:red", "sqrt": "tab:blue", "lamb": "tab:green"}
    ref = summary["ref_batch"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, label in zip(
        axes,
        ("physics_score", "sf_rel_error", "auc_hlf"),
        ("physics_score (lower is better)", "sampling-fraction error", "classifier AUC, high-level features"),
        strict=True,
    ):
        for rule in RULES:
            # linear and sqrt start from the reference configuration (factor 1 at B_ref: listed as none)
            shared = rule in ("linear", "sqrt")
            cs = [
                c
                for c in summary["cells"]
                if c["rule"] == rule or (shared and c["batch"] == ref and c["rule"] == "none")
            ]
            cs = sorted(cs, key=lambda c: c["batch"])
            xs = [c["batch"] for c in cs if math.isfinite(c[key])]
            ys = [c[key] for c in cs if math.isfinite(c[key])]
            ax.plot(xs, ys, "-", color=colors[rule], label=rule)
            pts = [
                r for r in records if r["status"] == "ok" and (r["rule"] == rule) and math.isfinite(r[key])
            ]
            ax.plot(
                [r["batch"] for r in pts], [r[key] for r in pts], "o", color=colors[rule], ms=3, alpha=0.6
            )
            bad = [r for r in records if r["rule"] == rule and r["status"] not in ("ok", "running")]
            if bad:
                ax.plot(
                    [r["batch"] for r in bad], [ax.get_ylim()[1]] * len(bad), "x", color=colors[rule], ms=7
                )
        ax.set_xscale("log", base=2)
        if key != "auc_hlf":
            ax.set_yscale("log")
        ax.set_xlabel("global batch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(title="rule (line: seed mean)", fontsize=8)
    fig.suptitle(
        f"Equal showers seen per run; lines: seed means, dots: single runs, x: runs that failed. "
        f"B_ref = {ref}",
        fontsize=9,
    )
    fig.tight_layout()
    p1 = out / "quality_vs_batch.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    batches = sorted({r["batch"] for r in records})
    cmap = plt.get_cmap("viridis")
    for ax, p, name in zip(axes, ("g", "d"), ("generator", "discriminator"), strict=True):
        for i, b in enumerate(batches):
            rs = [r for r in records if r["batch"] == b and r["rule"] == "none" and r[f"b_noise_{p}_curve"]]
            for j, r in enumerate(rs):
                steps, vals = zip(*r[f"b_noise_{p}_curve"], strict=True)
                seen = [s * b for s in steps]
                ax.plot(
                    seen,
                    vals,
                    color=cmap(i / max(1, len(batches) - 1)),
                    alpha=0.8,
                    label=f"batch {b}" if j == 0 else None,
                )
        for b in batches:
            ax.axhline(b, color="grey", lw=0.5, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("showers seen")
        ax.set_ylabel("B_noise (showers), EMA of the estimators")
        ax.set_title(f"{name}, rule none; dotted: the batches studied", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    p2 = out / "b_noise.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def showers_figure(runs: dict[tuple[int, str], Path], out: Path) -> Path | None:
    """``showers_seed0.png``: per batch (rows) and rule (columns) the generated half (mean x-y and y-z
    energy) of each seed-0 run's report figure ``projections.png``, the simulated half once on top.
    ``runs``: ``(batch, rule) -> run folder``. None when no run has its report yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    found = {k: p / "report" / "figures" / "projections.png" for k, p in runs.items()}
    found = {k: f for k, f in found.items() if f.is_file()}
    if not found:
        return None
    batches = sorted({b for b, _ in found})
    rules = [r for r in RULES if any(rr == r for _, rr in found)]
    fig, axes = plt.subplots(
        len(batches) + 1, len(rules), figsize=(3.2 * len(rules), 1.7 * (len(batches) + 1)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    first = mpimg.imread(next(iter(found.values())))
    h = first.shape[0] // 2
    axes[0][0].imshow(first[:h])  # the report's top half: the simulated showers, the same in every run
    axes[0][0].set_title("simulated (every run's reference)", fontsize=8)
    for i, b in enumerate(batches, start=1):
        for j, r in enumerate(rules):
            f = found.get((b, r))
            if f is None:
                continue
            img = mpimg.imread(f)
            axes[i][j].imshow(img[img.shape[0] // 2 :])
            axes[i][j].set_title(f"batch {b}, {r}", fontsize=8)
    fig.suptitle(
        "Generated showers, seed 0: mean x-y and y-z energy (each panel's own log colour scale)", fontsize=9
    )
    fig.tight_layout()
    path = out / "showers_seed0.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def cmd_summarize(args: argparse.Namespace) -> None:
    records = []
    seed0: dict[tuple[int, str], Path] = {}
    for d in args.sweep_dirs:
        for run in sorted(Path(d).iterdir(), key=lambda p: (len(p.name), p.name)):
            if run.is_dir():
                rec = read_run(run)
                if rec is not None:
                    records.append(rec)
                    if rec["seed"] == 0 and rec["status"] == "ok":
                        seed0[(rec["batch"], rec["rule"])] = run
    if not records:
        sys.exit(
            f"summarize: no run folders with a manifest.json under {', '.join(map(str, args.sweep_dirs))}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    slim = [{k: v for k, v in r.items() if not k.endswith("_curve")} for r in records]
    curves = {r["run"]: {k: v for k, v in r.items() if k.endswith("_curve")} for r in records}
    (out / "results.json").write_text(
        json.dumps({"summary": summary, "runs": slim, "curves": curves}, indent=1) + "\n"
    )
    write_table(summary, out / "table.md")
    paths = plot(records, summary, out)
    showers = showers_figure(seed0, out)
    paths += [showers] if showers else []
    print(f"{len(records)} runs -> {out / 'results.json'}, {out / 'table.md'}, " + ", ".join(map(str, paths)))


def cmd_figures(args: argparse.Namespace) -> None:
    """Regenerate table and figures from the committed results.json (no run folders needed)."""
    out = Path(args.out)
    doc = json.loads((out / "results.json").read_text())
    records = [dict(r, **doc["curves"].get(r["run"], {})) for r in doc["runs"]]
    summary = summarize(records)
    write_table(summary, out / "table.md")
    paths = plot(records, summary, out)
    print(f"{len(records)} runs -> {out / 'table.md'}, " + ", ".join(map(str, paths)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="write the study's hepgan-sweep plan")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--no-validate", dest="validate", action="store_false", help="skip composing each entry")
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("summarize", help="results.json, table.md and figures from run folders")
    p.add_argument("sweep_dirs", nargs="+")
    p.add_argument("--out", default=str(Path(__file__).parent))
    p.set_defaults(fn=cmd_summarize)
    p = sub.add_parser("figures", help="table.md and figures from the committed results.json")
    p.add_argument("--out", default=str(Path(__file__).parent))
    p.set_defaults(fn=cmd_figures)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
