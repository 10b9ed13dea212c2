"""``hepgan-explain``: what a trained 3DGAN does, and how its training went.

    hepgan-explain all runs/demo                 # every view below into runs/demo/explain/
    hepgan-explain dynamics runs/demo            # training dynamics and warnings (logs only, seconds)
    hepgan-explain dissect runs/demo --layers conv1,conv2 --n 512
    hepgan-explain traverse runs/demo            # energy/angle sweeps, latent interpolations and directions
    hepgan-explain explore runs/demo             # one offline HTML page with sliders
    hepgan-explain regenerate generated/generated_0000.h5 17 --out shower17.npy

Each view writes PNG figures, a JSON summary and one self-contained HTML page into ``--out`` (default
``RUN/explain``); ``all`` also writes ``index.html`` linking them, which the run's validation report links.
``docs/explain.md`` explains how to read each view on a healthy and on a collapsed run.
Exit status 0 on success, 1 with a one-paragraph message for a missing or damaged run, checkpoint or file
and for invalid arguments, 2 for command-line errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

VIEWS = ("dynamics", "dissect", "traverse", "explore")
"""The views ``all`` runs, in this order (dissect before traverse and explore: they reuse its latent
directions)."""


def _checkpoint(value: str | None) -> str | int | None:
    """``--checkpoint``: None (the newest), "best", "latest", a step number or a path."""
    if value is None or value in ("best", "latest"):
        return value
    return int(value) if value.isdigit() else value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hepgan-explain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="view", required=True, metavar="VIEW")

    def run_parser(name: str, help_: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_, description=help_)
        q.add_argument("run_dir", help="run directory written by hepgan-train (holds manifest.json)")
        q.add_argument("--out", default=None, help="output folder (default RUN/explain)")
        if name != "dynamics":
            q.add_argument(
                "--checkpoint",
                default=None,
                help="'best', 'latest' (default: the newest) or a step number of checkpoints/",
            )
            q.add_argument("--seed", type=int, default=0, help="noise and sample seed (default %(default)s)")
        return q

    run_parser("all", "every view, and index.html linking them")
    run_parser("dynamics", "training dynamics from the run's logs, with warnings")
    q = run_parser("dissect", "generator channels against shower observables: correlation and ablation")
    q.add_argument("--layers", default=None, help="comma-separated generator layers (default: every conv)")
    q.add_argument("--n", type=int, default=512, help="showers (default %(default)s)")
    q.add_argument(
        "--top-k", type=int, default=3, help="channels ablated per observable (default %(default)s)"
    )
    run_parser("traverse", "energy and angle sweeps, latent interpolations and directions")
    run_parser("explore", "one offline HTML page with sliders over precomputed showers")
    q = sub.add_parser("regenerate", help="regenerate one shower of a generated file exactly")
    q.add_argument("file", help="an HDF5 file written by hepgan-generate")
    q.add_argument("index", type=int, help="the event's row in that file")
    q.add_argument("--run-dir", default=None, help="the run, if it moved since the file was written")
    q.add_argument("--out", default=None, help="write the shower [X, Y, Z] GeV to this .npy file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the view; returns the exit code (1 with a message for bad input)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError, KeyError) as exc:  # FileNotFoundError is an OSError
        print(f"hepgan-explain {args.view}: {exc}", file=sys.stderr)
        return 1


def _out(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path(args.run_dir) / "explain"


def _run(args: argparse.Namespace) -> int:
    if args.view == "regenerate":
        return _regenerate(args)
    run_dir = Path(args.run_dir)
    if not (run_dir / "manifest.json").exists():
        raise FileNotFoundError(
            f"{run_dir / 'manifest.json'} not found: give the run directory that hepgan-train wrote"
        )
    out = _out(args)
    out.mkdir(parents=True, exist_ok=True)
    views = VIEWS if args.view == "all" else (args.view,)
    written: dict[str, Any] = {}
    for view in views:
        t0 = time.perf_counter()
        print(f"hepgan-explain: {view} ...", file=sys.stderr, flush=True)
        written[view] = run_view(view, run_dir, out, args)
        print(f"hepgan-explain: {view} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if args.view == "all":
        from hepgan.explain.page import write_index

        index = write_index(out, run_dir)
        print(f"hepgan-explain: {index}")
    else:
        print(f"hepgan-explain: {written[args.view]}")
    return 0


def run_view(view: str, run_dir: Path, out: Path, args: argparse.Namespace) -> Path:
    """Run one view of ``run_dir`` into ``out``; returns its HTML page."""
    if view == "dynamics":
        from hepgan.explain.dynamics import Finding, explain_dynamics, format_findings

        result = explain_dynamics(run_dir, out)
        findings = [
            Finding(severity=f["severity"], code=f["code"], step=f["step"], message=f["message"])
            for f in result["findings"]
        ]
        print(format_findings(findings), file=sys.stderr)
        return Path(result["page"])
    checkpoint = _checkpoint(getattr(args, "checkpoint", None))
    seed = getattr(args, "seed", 0)
    if view == "dissect":
        from hepgan.explain.dissect import dissect

        layers = None if not getattr(args, "layers", None) else [s.strip() for s in args.layers.split(",")]
        dissect(
            run_dir,
            out,
            layers=layers,
            n_showers=getattr(args, "n", 512),
            top_k=getattr(args, "top_k", 3),
            checkpoint=checkpoint,
            seed=seed,
        )
        return out / "dissect.html"
    if view == "traverse":
        from hepgan.explain.traverse import traverse

        traverse(run_dir, out, checkpoint=checkpoint, seed=seed)
        return out / "traverse.html"
    if view == "explore":
        from hepgan.explain.explorer import explore

        # beside each generated shower, the mean of the run's held-out showers at the nearest grid point
        return Path(explore(run_dir, out, checkpoint=checkpoint, seed=seed, reference=512))
    raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")


def _regenerate(args: argparse.Namespace) -> int:
    import numpy as np

    from hepgan.explain.regenerate import regenerate

    shower = regenerate(args.file, args.index, run_dir=args.run_dir)
    total = float(np.asarray(shower, np.float64).sum())
    print(f"hepgan-explain regenerate: event {args.index} of {args.file}: {shower.shape}, {total:.4g} GeV")
    if args.out:
        np.save(args.out, shower)
        print(f"hepgan-explain regenerate: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
