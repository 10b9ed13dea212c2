"""Synchronous all-reduce against MPI-learn's master-worker algorithms on the same GAN.

    python experiments/masterworker/study.py local runs/masterworker      # this machine: 3 runs
    python experiments/masterworker/study.py collect runs/masterworker experiments/masterworker
    python experiments/masterworker/study.py render experiments/masterworker   # from results.json only
    python experiments/masterworker/study.py plan --workers 4 8 16 32 > mw_jobs.sh   # a Slurm cluster

``local`` trains the demo recipe (``hepgan-train`` defaults: fixed25_small, 4096 simulated showers, 3
epochs at global batch 16, validation after every epoch) four ways with two training workers: ``sync``
(``parallel=mpi``, ``mpirun -n 2``: gradients averaged every update, as Horovod), ``shardmap`` (one
process, two CPU devices, ``lax.pmean`` with global-batch BatchNorm: the demo's own default), ``downpour``
(``mpirun -n 3``: master + 2 workers, exchange after every step) and ``easgd`` (master + 2 workers,
exchange every 4 steps, alpha 0.45). Same global batch, data, seed and number of steps.

``collect`` reads each run's ``train.csv``/``val.csv``/``manifest.json`` and writes ``results.json``,
``results.md`` and ``comparison.png``: showers/s (median over the logged windows after the first, which
holds the compilation), the per-step input, compute and communication time (the runs' own measured
columns), staleness, and the training time to each validation's ``physics_score`` (time to the
threshold ``--threshold``: the first validation at or below it).

``plan`` prints one ``sbatch`` line per algorithm, worker count and seed for ``slurm/train_srun.sbatch``
(one task per GPU; the master-worker runs get one task more for the master), each composed first so a
typo fails here and not on the cluster. Separate jobs rather than one Slurm array: an array's elements
share one task count, and the configurations here need different ones. ``collect`` reads any folder of
run folders whose names start with a variant's name.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "sync": {"processes": 2, "overrides": ["parallel=mpi"]},
    "shardmap": {"processes": 1, "overrides": ["parallel=shard_map", "parallel.sync_batchnorm=true"]},
    "downpour": {"processes": 3, "overrides": ["parallel=downpour", "parallel.exchange_every=1"]},
    "easgd": {"processes": 3, "overrides": ["parallel=easgd", "parallel.exchange_every=4"]},
}
COMMON = ["train.val_every_epochs=1", "logging.progress=false"]
# The compute/communication split of the paper model's step (where a profiler trace showed each
# shard_map device 25-40 ms per step inside its all-reduces), two workers at 8 showers each, measured at
# every second step.
SPLIT: dict[str, dict[str, Any]] = {
    "split_shardmap": {"processes": 1, "overrides": ["parallel=shard_map", "parallel.devices=2"]},
    "split_mpi": {"processes": 2, "overrides": ["parallel=mpi"]},
}
SPLIT_COMMON = [
    "experiment=paper_fixed25",
    "train.batch_size=16",
    "train.max_steps=40",
    "data.n_events=640",
    "data.n_reference=64",
    "train.val_metrics=[sf]",
    "train.report=false",
    "logging.every_steps=2",
    "logging.progress=false",
    "logging.dynamics_events=0",
    "parallel.comm_every=2",
]


def local(runs: Path, only: list[str] | None) -> None:
    """Train the variants (and the paper-model split runs, ``split_*``) one after the other under
    ``mpirun`` (the venv's, next to this Python)."""
    bindir = Path(sys.executable).parent
    todo = {
        **{k: (v, COMMON) for k, v in VARIANTS.items()},
        **{k: (v, SPLIT_COMMON) for k, v in SPLIT.items()},
    }
    for name, (v, common) in todo.items():
        if only and name not in only:
            continue
        out = runs / name
        cmd = [str(bindir / "mpirun"), "-n", str(v["processes"]), str(bindir / "hepgan-train")]
        cmd += [*v["overrides"], *common, f"out={out}"]
        print("+", shlex.join(cmd), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "stdout.log", "w") as log:
            subprocess.run(
                cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "XLA_FLAGS": ""}
            )


def _rows(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


def _median(rows: list[dict[str, float]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r and r[key] == r[key]]
    return statistics.median(vals) if vals else None


def read_run(run: Path, threshold: float) -> dict[str, Any]:
    """One run's figures (see the module docstring)."""
    manifest = json.loads((run / "manifest.json").read_text())
    train = _rows(run / "train.csv")
    val = _rows(run / "val.csv")
    steady = train[1:] or train  # the first window holds the compilation
    reached = next((v for v in val if v["physics_score"] <= threshold and v["step"] > 0), None)
    par = manifest["parallel"]
    return {
        "run": str(run),
        "backend": par["backend"],
        "workers": par["workers"],
        "processes": par["process_count"],
        "exchange_every": par.get("exchange_every"),
        "easgd_alpha": par.get("easgd_alpha"),
        "global_batch": par.get("global_batch"),
        "steps": int(train[-1]["step"]),
        "showers_per_s": _median(steady, "showers_per_s"),
        "step_seconds": _median(steady, "step_seconds"),
        "input_seconds": _median(steady, "input_seconds"),
        "compute_seconds": _median(steady, "compute_seconds"),
        "comm_seconds": _median(steady, "comm_seconds"),
        "staleness_mean": _median(steady, "staleness_mean"),
        "validations": [
            {k: v[k] for k in ("step", "physics_score", "sf_rel_error", "train_seconds") if k in v}
            for v in val
        ],
        "final_physics_score": val[-1]["physics_score"],
        "best_physics_score": min(v["physics_score"] for v in val),
        "threshold": threshold,
        "seconds_to_threshold": None if reached is None else reached["train_seconds"],
        "step_to_threshold": None if reached is None else int(reached["step"]),
    }


def collect(runs: Path, out: Path, threshold: float) -> dict[str, Any]:
    """``results.json``, ``results.md`` and ``comparison.png`` in ``out`` from the runs under ``runs``."""
    folders = sorted(
        (d for d in runs.iterdir() if d.name.startswith(tuple(VARIANTS)) and (d / "val.csv").exists()),
        key=lambda d: (list(VARIANTS).index(d.name.split("_")[0]), d.name),
    )
    results = {d.name: read_run(d, threshold) for d in folders}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    split = {name: read_split(runs / name) for name in SPLIT if (runs / name / "train.csv").exists()}
    if split:
        (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    render(out)
    return results


def read_split(run: Path) -> dict[str, Any]:
    """A split run's measurements: the median, range and count of ``compute_seconds``/``comm_seconds``
    over its rows after the first (compilation) and the median step time."""
    manifest = json.loads((run / "manifest.json").read_text())
    rows = _rows(run / "train.csv")[1:]
    out: dict[str, Any] = {
        "backend": manifest["parallel"]["backend"],
        "workers": manifest["parallel"]["workers"],
    }
    out["step_seconds"] = _median(rows, "step_seconds")
    for key in ("compute_seconds", "comm_seconds"):
        vals = [r[key] for r in rows if r.get(key, float("nan")) == r.get(key, float("nan"))]
        out[key] = statistics.median(vals) if vals else None
        out[key + "_range"] = [min(vals), max(vals)] if vals else None
        out[key + "_mean"] = statistics.fmean(vals) if vals else None
        # The standard error of the mean: each value is the difference of two timed steps, whose
        # noise on a shared 2-core machine is much larger than the communication itself.
        out[key + "_sem"] = statistics.stdev(vals) / len(vals) ** 0.5 if len(vals) > 1 else None
        out["n"] = len(vals)
    return out


def render(out: Path) -> None:
    """``results.md`` and ``comparison.png`` from the committed ``out/results.json`` (the paper's build)."""
    results = json.loads((out / "results.json").read_text())
    threshold = next(iter(results.values()))["threshold"] if results else float("nan")

    def f(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    lines = [
        f"| run | backend | processes | showers/s | step s | input s | compute s | comm s | staleness | "
        f"physics_score per validation | training s to <= {threshold} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        scores = ", ".join(f"{v['physics_score']:.2f}" for v in r["validations"])
        cells = [
            name,
            f"{r['backend']} (k={r['exchange_every'] or '-'})",
            str(r["processes"]),
            f(r["showers_per_s"], ".1f"),
            f(r["step_seconds"], ".3f"),
            f(r["input_seconds"], ".4f"),
            f(r["compute_seconds"], ".3f"),
            f(r["comm_seconds"], ".4f"),
            f(r["staleness_mean"], ".2f"),
            scores,
            f(r["seconds_to_threshold"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(results, out / "comparison.png")
    if (out / "split.json").exists():
        split = json.loads((out / "split.json").read_text())
        rows = [
            "| run | backend | step s (median) | compute s (median) | comm ms: median (range) | "
            "comm ms: mean +- s.e. | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in split.items():
            lo, hi = (1e3 * x for x in r["comm_seconds_range"])
            mean = f"{1e3 * r['comm_seconds_mean']:.1f} +- {1e3 * r['comm_seconds_sem']:.1f}"
            rows.append(
                f"| {name} | {r['backend']} | {r['step_seconds']:.3f} | {r['compute_seconds']:.3f} | "
                f"{1e3 * r['comm_seconds']:.1f} ({lo:.1f} to {hi:.1f}) | {mean} | {r['n']} |"
            )
        (out / "split.md").write_text("\n".join(rows) + "\n")


def plot(results: dict[str, Any], path: Path) -> Path:
    """Left: physics_score against training time per run; right: the per-step time split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        t = [v.get("train_seconds", float("nan")) / 60 for v in r["validations"]]
        a.plot(t, [v["physics_score"] for v in r["validations"]], "o-", label=name)
    if results:
        a.axhline(next(iter(results.values()))["threshold"], color="grey", ls=":", label="threshold")
    a.set(xlabel="training minutes", ylabel="physics_score (lower is better)", yscale="log")
    a.legend()
    names = list(results)
    bottom = [0.0] * len(names)
    for key, colour in (("input_seconds", "C2"), ("compute_seconds", "C0"), ("comm_seconds", "C3")):
        vals = [results[n][key] or 0.0 for n in names]
        b.bar(names, vals, bottom=bottom, color=colour, label=key.replace("_seconds", ""))
        bottom = [x + y for x, y in zip(bottom, vals, strict=True)]
    b.scatter(
        names, [results[n]["step_seconds"] or 0.0 for n in names], color="k", zorder=3, label="step (wall)"
    )
    b.set(ylabel="seconds per step (median)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plan_lines(args: argparse.Namespace) -> list[str]:
    """One sbatch line per algorithm and worker count (the overrides composed first)."""
    from hepgan.train.config import compose

    lines = []
    for name, v in VARIANTS.items():
        if name == "shardmap":  # the one-process CPU layout; on GPUs the synchronous comparator is mpi
            continue
        for workers, seed in ((w, sd) for w in args.workers for sd in args.seeds):
            tasks = workers + (1 if name != "sync" else 0)
            nodes = -(-tasks // args.gpus_per_node)
            overrides = [
                f"experiment={args.experiment}",
                f"train.batch_size={args.per_gpu_batch * workers}",
                *v["overrides"],
                f"train.seed={seed}",
                f"out={args.runs}/{name}_{workers}_seed{seed}",
            ]
            try:
                compose([o for o in overrides if not o.startswith("out=")])
            except ValueError as exc:
                sys.exit(f"plan: {' '.join(overrides)} does not compose: {exc}")
            lines.append(
                f"sbatch --nodes={nodes} --ntasks={tasks} slurm/train_srun.sbatch " + shlex.join(overrides)
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("local", help="train the three variants here")
    lo.add_argument("runs", type=Path)
    lo.add_argument("--only", nargs="*", choices=[*VARIANTS, *SPLIT])
    co = sub.add_parser("collect", help="tables and figure from the runs")
    co.add_argument("runs", type=Path)
    co.add_argument("out", type=Path)
    co.add_argument("--threshold", type=float, default=0.6)
    re_ = sub.add_parser("render", help="table and figure from the committed results.json")
    re_.add_argument("out", type=Path)
    pl = sub.add_parser("plan", help="sbatch lines for a cluster")
    pl.add_argument("--workers", type=int, nargs="+", default=[4, 8, 16, 32])
    pl.add_argument("--seeds", type=int, nargs="+", default=[1])
    pl.add_argument("--gpus-per-node", type=int, default=4)
    pl.add_argument("--per-gpu-batch", type=int, default=64)
    pl.add_argument("--experiment", default="paper_fixed25")
    pl.add_argument("--runs", default="runs/masterworker")
    a = p.parse_args(argv)
    if a.cmd == "local":
        local(a.runs, a.only)
    elif a.cmd == "collect":
        print(json.dumps(collect(a.runs, a.out, a.threshold), indent=1))
    elif a.cmd == "render":
        render(a.out)
    else:
        print("\n".join(plan_lines(a)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
