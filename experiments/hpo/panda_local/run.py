"""The PanDA/iDDS hyperparameter search emulated on one machine, with the real commands and trainings.

iDDS's part is played by this loop: it keeps every point with its loss (null until evaluated) in the
steering input (``%IN``), runs the steering command, and hands each new point to an evaluation job as
``input.json`` in a fresh working directory, reading ``output.json`` back. The steering and the jobs share
one Optuna journal (``--storage``), so the jobs report their intermediate physics_score and are pruned by
the space's median pruner, and the steering asks from a study that holds every finished, pruned and failed
trial. Jobs run one at a time here (PanDA runs them in parallel).

    python experiments/hpo/panda_local/run.py --out runs/panda_local [--budget 8] [--n-points 2]

Writes under ``--out``: ``in.json``/``out.json`` (the last steering exchange), ``*.steering.json`` (the
steering's decisions), ``jobs/NNN/`` (each job's ``input.json``, ``output.json`` and ``run/``),
``study.journal``, ``summary.json`` (per trial: point, output.json, Optuna state and learning curve) and
``summary.md`` (the same as a table; ``--table-only`` rewrites it from ``summary.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sweep(*args: str) -> None:
    """Run one ``hepgan-sweep`` command (through this interpreter), failing loudly."""
    cmd = [sys.executable, "-m", "hepgan.cli.sweep", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def optuna_study(storage: object) -> object:
    """The study the steering keeps in ``storage``."""
    import optuna

    return optuna.load_study(study_name="panda-local-demo", storage=storage)


def _num(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float | int) else str(x)


def write_table(out: Path) -> Path:
    """``summary.md``: one row per job (point, Optuna state, learning curve, output.json message)."""
    summary = json.loads((out / "summary.json").read_text())
    keys = [k for k in summary["jobs"][0]["point"] if not k.startswith("_")]
    rows = [
        "| job | trial | "
        + " | ".join(keys)
        + " | state | physics_score at update 0/64/128/192/256 | output.json |",
        "|---" * (len(keys) + 5) + "|",
    ]
    for j in summary["jobs"]:
        t = j["trial"] or {}
        curve = " / ".join(f"{v:.3g}" for _, v in t.get("curve", []))
        msg = j["output"]["message"].split(":")[0]
        point = " | ".join(f"{j['point'][k]:.3g}" for k in keys)
        rows.append(
            f"| {j['job']} | {j['point']['_hepgan_trial']} | {point} | {t.get('state')} | {curve} | "
            f"status {j['output']['status']}, loss {_num(j['output']['loss'])}, {msg} |"
        )
    path = out / "summary.md"
    path.write_text("\n".join(rows) + "\n")
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--n-points", type=int, default=2)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--table-only", action="store_true", help="rewrite summary.md from summary.json")
    args = p.parse_args()
    out: Path = args.out
    if args.table_only:
        print(write_table(out))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    space = out / "space.yaml"
    shutil.copyfile(HERE / "space.yaml", space)
    storage = out / "study.journal"
    points: list[list] = []  # iDDS's record: [point, loss]
    jobs: list[dict] = []
    t0 = time.time()
    for call in range(100):
        (out / "in.json").write_text(json.dumps({"points": points, "opt_space": {}}, indent=1))
        sweep(
            "panda-steer", str(space), "--in", str(out / "in.json"), "--out", str(out / "out.json"),
            "--budget", str(args.budget), "--n-points", str(args.n_points), "--storage", str(storage),
            "--patience", str(args.patience),
        )  # fmt: skip
        shutil.copyfile(out / "out.steering.json", out / f"call{call:02d}.steering.json")
        new = json.loads((out / "out.json").read_text())
        if not new:
            break
        for point in new:
            i = len(points)
            points.append([point, None])
            wd = out / "jobs" / f"{i:03d}"
            wd.mkdir(parents=True, exist_ok=True)
            (wd / "input.json").write_text(json.dumps(point))
            t = time.time()
            sweep("panda-eval", str(space), "--workdir", str(wd), "--storage", str(storage))
            res = json.loads((wd / "output.json").read_text())
            points[i][1] = res["loss"] if res["status"] == 0 else "failed"
            jobs.append({"job": i, "point": point, "output": res, "seconds": round(time.time() - t, 1)})
    from hepgan.sweep.study import open_storage

    study = optuna_study(open_storage(storage))
    trials = {
        t.number: {
            "state": t.state.name,
            "value": t.value,
            "curve": sorted(t.intermediate_values.items()),
        }
        for t in study.get_trials(deepcopy=False)
    }
    for j in jobs:
        j["trial"] = trials.get(int(j["point"]["_hepgan_trial"]))
    summary = {
        "budget": args.budget,
        "n_points": args.n_points,
        "wall_s": round(time.time() - t0),
        "jobs": jobs,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_table(out)
    print(json.dumps({j["job"]: (j["trial"] or {}).get("state") for j in jobs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
