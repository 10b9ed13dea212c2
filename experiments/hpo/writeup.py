"""The recipe campaigns written up: trials, importances, pruning savings, the best trial against the paper.

    python experiments/hpo/writeup.py --out experiments/hpo

Reads the two committed Optuna journals (``demo/study.journal``: 8 trials over learning rates and loss
weights; ``recipe/study.journal``: 11 trials over 12 parameters) through hepgan's journal storage, and
writes ``writeup.json`` (every number below), ``writeup.md`` (the tables) and ``campaigns.png`` (each
trial's validation curve, pruned trials marked where they stopped). Nothing is re-run.

Pruning savings: a pruned trial stopped at its last reported update; without pruning it would have run
the full budget (the largest update any trial of the study reported). The saving is the fraction of all
trials' updates that were not run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import optuna

from hepgan.sweep.study import open_storage

HERE = Path(__file__).parent
STUDIES = {"demo": HERE / "demo" / "study.journal", "recipe": HERE / "recipe" / "study.journal"}
# The published fixed-angle 3DGAN setup (experiment paper_fixed25; Khattak et al.) in the searched keys.
PAPER = {
    "optim.name": "rmsprop",
    "optim.lr_g": 1e-3,
    "optim.lr_d": 1e-3,
    "train.aux_loss_scale": 1.0,
    "train.label_flip": 0.05,
    "train.batch_size": 128,
    "train.schedule": "paper",
    "train.adv_loss": "bce",
    "train.ema_decay": 0.0,
    "train.fake_bn": "running",
    "scaling.decay": "constant",
    "optim.decay": "constant",
    "model.conditioning": "product",
}


def load(journal: Path) -> optuna.Study:
    """The one study stored in ``journal``."""
    storage = open_storage(str(journal))
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return optuna.load_study(study_name=name, storage=storage)


def study_record(study: optuna.Study) -> dict[str, Any]:
    """Trials, pruning savings, importances (PED-ANOVA over completed trials) and the best trial."""
    trials = study.trials
    budget = max((max(t.intermediate_values) for t in trials if t.intermediate_values), default=0)
    base_batch = min((int(t.params.get("train.batch_size", 0)) for t in trials), default=0) or 1
    rows = []
    run = full = 0
    for t in trials:
        last = max(t.intermediate_values) if t.intermediate_values else 0
        state = t.state.name
        # the budget is in showers seen: a trial at twice the batch runs half the updates
        own = budget * base_batch // int(t.params.get("train.batch_size", base_batch))
        ran = last if state != "COMPLETE" else own
        # a completed trial ran the budget; a pruned one ran to its last report; a failed one counts as run
        # to its last report and would also have failed without pruning
        would = own if state in ("COMPLETE", "PRUNED") else last
        run += ran
        full += would
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "objective": t.value,
                "last_update": last,
                "budget_updates": own,
                "curve": sorted(t.intermediate_values.items()),
                "params": t.params,
            }
        )
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    rec: dict[str, Any] = {
        "study": study.study_name,
        "trials": len(trials),
        "states": {s: sum(1 for r in rows if r["state"] == s) for s in sorted({r["state"] for r in rows})},
        "budget_updates": budget,
        "updates_run": run,
        "updates_without_pruning": full,
        "pruning_saving": 1.0 - run / full if full else math.nan,
        "rows": rows,
    }
    if len(done) >= 2:
        # Optuna's default evaluator (PED-ANOVA), named; ties sorted by name: a rebuild gives the same file
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
        rec["importances"] = dict(sorted(imp.items(), key=lambda kv: (-kv[1], kv[0])))
        best = study.best_trial
        rec["best"] = {"trial": best.number, "objective": best.value, "params": best.params}
    return rec


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None else str(v)


def markdown(recs: dict[str, dict[str, Any]]) -> str:
    """The write-up's tables."""
    out = []
    for key, rec in recs.items():
        out += [
            f"### Campaign `{key}` ({rec['study']})",
            "",
            f"{rec['trials']} trials: "
            + ", ".join(f"{n} {s.lower()}" for s, n in rec["states"].items())
            + f". Budget {rec['budget_updates']} updates per trial at the smallest batch (the same showers "
            "seen at a larger one); pruning ran {rec['updates_run']} of "
            f"{rec['updates_without_pruning']} updates: **{100 * rec['pruning_saving']:.0f} % saved**.",
            "",
            "| trial | state | physics_score | last update / budget |",
            "|---|---|---|---|",
        ]
        for r in rec["rows"]:
            obj = (
                r["objective"] if r["objective"] is not None else (r["curve"][-1][1] if r["curve"] else None)
            )
            mark = "" if r["state"] == "COMPLETE" else " (last report)" if r["curve"] else ""
            out.append(
                f"| {r['trial']} | {r['state'].lower()} | {_cell(obj)}{mark} | "
                f"{r['last_update']} / {r['budget_updates']} |"
            )
        if "importances" in rec:
            n_done = rec["states"].get("COMPLETE", 0)
            out += [
                "",
                f"PED-ANOVA importances (Optuna's default) over the {n_done} completed trials "
                "(too few to rank anything):",
                "",
            ]
            out += [f"- `{k}`: {v:.2f}" for k, v in rec["importances"].items() if v >= 0.01]
        out.append("")
    # best against the paper
    best = recs["recipe"].get("best") or recs["demo"].get("best")
    if best:
        keys = sorted(set(best["params"]) | {k for k in PAPER if k in best["params"]})
        out += [
            f"### Best trial (campaign `recipe`, trial {best['trial']}, physics_score "
            f"{best['objective']:.3f}) against the paper's setup",
            "",
            "| parameter | best trial | paper (experiment paper_fixed25) |",
            "|---|---|---|",
        ]
        out += [f"| `{k}` | {_cell(best['params'].get(k))} | {_cell(PAPER.get(k))} |" for k in keys]
        out.append("")
    return "\n".join(out)


def figure(recs: dict[str, dict[str, Any]], path: Path) -> None:
    """Each trial's validation physics_score against updates, one panel per campaign."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(recs), figsize=(5.5 * len(recs), 4), squeeze=False)
    style = {"COMPLETE": ("tab:blue", "-"), "PRUNED": ("tab:red", "--"), "FAIL": ("grey", ":")}
    for ax, (key, rec) in zip(axes[0], recs.items(), strict=True):
        for r in rec["rows"]:
            if not r["curve"]:
                continue
            xs, ys = zip(*r["curve"], strict=True)
            color, ls = style.get(r["state"], ("k", "-"))
            ax.plot(xs, ys, ls, color=color, marker="o", ms=3, alpha=0.8)
            if r["state"] == "PRUNED":
                ax.plot(xs[-1], ys[-1], "x", color=color, ms=8)
        for s, (c, ls) in style.items():
            ax.plot([], [], ls, color=c, label=s.lower())
        ax.set_yscale("log")
        ax.set_xlabel("training update")
        ax.set_ylabel("validation physics_score (lower is better)")
        ax.set_title(
            f"campaign {key}: {rec['trials']} trials, {100 * rec['pruning_saving']:.0f} % of updates pruned",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    out = Path(args.out)
    recs = {k: study_record(load(p)) for k, p in STUDIES.items()}
    (out / "writeup.json").write_text(json.dumps(recs, indent=1, default=str) + "\n")
    (out / "writeup.md").write_text(markdown(recs))
    figure(recs, out / "campaigns.png")
    for k, r in recs.items():
        print(
            f"{k}: {r['trials']} trials {r['states']}, "
            f"pruning saved {100 * r['pruning_saving']:.0f} % of updates"
        )
    print(f"-> {out / 'writeup.json'}, {out / 'writeup.md'}, {out / 'campaigns.png'}")


if __name__ == "__main__":
    main()
