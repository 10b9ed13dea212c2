"""Tables of the demo campaign: every trial, and Optuna's parameter importances.

    python experiments/hpo/demo/summarize.py experiments/hpo/demo/study.journal experiments/hpo/demo

Writes ``trials.csv`` / ``trials.md`` (number, state, objective, parameters, the last validation step
reached) and ``importances.json`` (Optuna's default importances, PED-ANOVA, over the completed
trials, when there are at least two). Reads the study through hepgan's journal storage, the same one
the workers wrote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna

from hepgan.fileio import write_json, write_text
from hepgan.sweep.study import open_storage


def main(journal: str, out: str) -> None:
    """Summarise the study in ``journal`` into the folder ``out``."""
    storage = open_storage(journal)
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    study = optuna.load_study(study_name=name, storage=storage)
    params = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.trials:
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append([t.number, t.state.name, t.value, last, *(t.params.get(k) for k in params)])
    head = ["trial", "state", "physics_score", "last_reported_step", *params]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "trials.csv", "\n".join(",".join(map(str, r)) for r in [head, *rows]) + "\n")

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    write_text(out_dir / "trials.md", "\n".join(md) + "\n")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    summary: dict[str, object] = {"study": name, "trials": len(study.trials), "complete": len(done)}
    if len(done) >= 2:
        summary["importances"] = optuna.importance.get_param_importances(study)
        summary["best"] = {
            "trial": study.best_trial.number,
            "value": study.best_value,
            "params": study.best_params,
        }
    write_json(out_dir / "importances.json", summary)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:3])
