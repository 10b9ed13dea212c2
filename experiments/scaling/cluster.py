"""The scaling study at full scale: weak scaling of paper-model training on a GPU cluster, measured.

    python experiments/scaling/cluster.py plan --gpus-per-node 4 --max-nodes 128 > scaling_jobs.sh
    sh scaling_jobs.sh                                     # one sbatch per (backend, node count)
    python experiments/scaling/cluster.py collect scaling_runs --out scaling_report

``plan`` prints one ``sbatch --nodes=N slurm/train_srun.sbatch ...`` line per backend and node count
(1, 2, 4, ... ``--max-nodes``; plus 1, 2 GPUs on one node), each a short ``hepgan-train`` of
``experiment=paper_fixed25`` (or ``--experiment``) at ``--per-gpu-batch`` showers per GPU (weak
scaling), ``--steps`` updates, no validation but the first and last, into ``scaling_runs/<backend>_<gpus>``.
Every line's overrides are composed first, so a typo fails here and not on the cluster.

``collect`` reads each run folder's manifest (backend, workers, global batch) and ``train.csv``
(``showers_per_s``, the median over the logged windows after the first quarter, which holds the
compilation), and writes ``cluster.json`` and ``cluster.md``: showers/s per GPU and the weak-scaling
efficiency against the one-GPU run of the same backend, beside the alpha-beta model's prediction for the
same GPU count (``hepgan.bench.commmodel``, ring and two-level over HDR InfiniBand, the measured one-GPU
step time as the compute time). Nothing has been run at this scale yet (no cluster was available).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

BACKENDS = ("shard_map", "mpi")


def gpu_counts(gpus_per_node: int, max_nodes: int) -> list[tuple[int, int]]:
    """``(nodes, gpus)`` of the series: 1 and 2 GPUs on one node, then 1, 2, 4, ... full nodes."""
    counts = [(1, g) for g in (1, 2) if g < gpus_per_node]
    n = 1
    while n <= max_nodes:
        counts.append((n, n * gpus_per_node))
        n *= 2
    return counts


def plan_lines(args: argparse.Namespace) -> list[str]:
    """The sbatch command lines (the overrides of each composed first unless ``args.no_validate``)."""
    lines = []
    for backend in BACKENDS:
        for nodes, gpus in gpu_counts(args.gpus_per_node, args.max_nodes):
            per_node = min(gpus, args.gpus_per_node)
            overrides = [
                f"experiment={args.experiment}",
                f"train.batch_size={args.per_gpu_batch * gpus}",
                f"train.max_steps={args.steps}",
                "train.val_every_epochs=0",
                "train.report=false",
                f"parallel.backend={backend}",
                f"out={args.runs}/{backend}_{gpus}",
            ]
            if not args.no_validate:
                from hepgan.train.config import compose

                try:
                    compose([o for o in overrides if not o.startswith("out=")])
                except ValueError as exc:
                    sys.exit(f"plan: {' '.join(overrides)} does not compose: {exc}")
            lines.append(
                f"sbatch --nodes={nodes} --ntasks-per-node={per_node} slurm/train_srun.sbatch "
                + shlex.join(overrides)
            )
    return lines


def read_run(run: Path) -> dict[str, Any] | None:
    """Backend, workers, global batch and median showers/s of one run folder (None: no manifest)."""
    manifest = run / "manifest.json"
    log = run / "train.csv"
    if not manifest.is_file() or not log.is_file():
        return None
    m = json.loads(manifest.read_text())
    with log.open() as f:
        rate = [float(r["showers_per_s"]) for r in csv.DictReader(f) if r.get("showers_per_s")]
    rate = rate[len(rate) // 4 :]
    if not rate:
        return None
    par = m["parallel"]
    return {
        "run": run.name,
        "backend": par["backend"],
        "gpus": int(par["workers"]),
        "global_batch": int(par["global_batch"]),
        "device_kind": par.get("device_kind"),
        "showers_per_s": statistics.median(rate),
    }


def collect(runs_dir: Path, model_name: str = "fixed25", gpus_per_node: int = 4) -> dict[str, Any]:
    """Measured efficiencies per backend and GPU count, with the model's beside them."""
    from hepgan.bench import commmodel as cm

    rows = [r for p in sorted(runs_dir.iterdir()) if p.is_dir() and (r := read_run(p)) is not None]
    grads = cm.PAPER_MODELS[model_name]
    # nodes of gpus_per_node GPUs on A100-era NVLink, HDR InfiniBand across (the model's HDR pairing)
    hdr = cm.Cluster(cm.LINKS["nvlink3"], cm.IB_HDR, gpus_per_node=gpus_per_node)
    out: dict[str, Any] = {"runs": rows, "series": {}}
    for backend in sorted({r["backend"] for r in rows}):
        series = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["gpus"])
        base = next((r for r in series if r["gpus"] == 1), None)
        if base is None:
            continue
        per_gpu_1 = base["showers_per_s"]
        t_compute = base["global_batch"] / per_gpu_1  # the one-GPU step time, seconds
        points = []
        for r in series:
            p = r["gpus"]
            per_gpu = r["showers_per_s"] / p
            model = {
                alg: cm.weak_scaling([p], t_compute, grads.messages_B, alg, hdr)[0].efficiency
                for alg in ("ring", "hierarchical")
            }
            points.append({**r, "per_gpu": per_gpu, "efficiency": per_gpu / per_gpu_1, "model": model})
        out["series"][backend] = points
    return out


def markdown(result: dict[str, Any]) -> str:
    """``cluster.md``: one table per backend."""
    lines = ["# Weak scaling measured on the cluster", ""]
    for backend, points in result["series"].items():
        lines += [
            f"## {backend}",
            "",
            "| GPUs | global batch | showers/s | per GPU | efficiency | model ring / two-level (HDR) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['gpus']} | {p['global_batch']} | {p['showers_per_s']:.1f} | {p['per_gpu']:.1f} | "
            f"{100 * p['efficiency']:.1f} % | {100 * p['model']['ring']:.1f} / "
            f"{100 * p['model']['hierarchical']:.1f} % |"
            for p in points
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="print the sbatch lines of the weak-scaling series")
    p.add_argument("--experiment", default="paper_fixed25")
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--max-nodes", type=int, default=128)
    p.add_argument("--per-gpu-batch", type=int, default=128, help="showers per GPU (the paper's batch)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--runs", default="scaling_runs", help="folder of the run folders")
    p.add_argument("--no-validate", action="store_true", help="do not compose the overrides first")
    p = sub.add_parser("collect", help="cluster.json and cluster.md from the run folders")
    p.add_argument("runs_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="fixed25", choices=["fixed25", "angle51"])
    p.add_argument("--gpus-per-node", type=int, default=4)
    args = ap.parse_args(argv)
    if args.cmd == "plan":
        print(
            "#!/bin/sh\n# weak-scaling series (python experiments/scaling/cluster.py plan); "
            "run from the repository root"
        )
        print("mkdir -p logs")
        print("\n".join(plan_lines(args)))
        return
    result = collect(Path(args.runs_dir), args.model, args.gpus_per_node)
    if not result["runs"]:
        sys.exit(f"collect: no run folders with manifest.json and train.csv under {args.runs_dir}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "cluster.md").write_text(markdown(result))
    print(f"{len(result['runs'])} runs -> {out / 'cluster.json'}, {out / 'cluster.md'}")


if __name__ == "__main__":
    main()
