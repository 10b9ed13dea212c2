"""The explain views on a healthy and on a deliberately collapsed run of the demo recipe (docs/explain.md).

    python experiments/explain/make_examples.py train [--root runs/explain]   # two demo trainings
    python experiments/explain/make_examples.py views [--root runs/explain]   # hepgan-explain all on both
    python experiments/explain/make_examples.py collect [--root runs/explain] # figures + results.json here

``train`` trains the demo (``hepgan-train`` defaults: the small fixed-angle 3DGAN on the built-in simulated
showers) twice: as it is (``healthy``) and under :func:`hepgan.explain.faults.collapsed_latent`, where the
generator ignores its noise (``collapsed``). ``views`` runs every explain view on both (the collapsed one
under the same fault). ``collect`` copies the figures docs/explain.md shows into ``docs/explain/`` and
writes ``experiments/explain/results.json`` (each run's findings and headline numbers). Rerunning
``train`` resumes or skips finished runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent.parent / "docs" / "explain"
RUNS = ("healthy", "collapsed")


def _fault(name: str) -> contextlib.AbstractContextManager[Any]:
    from hepgan.explain.faults import collapsed_latent

    return collapsed_latent() if name == "collapsed" else contextlib.nullcontext()


def train(root: Path) -> None:
    """Train both runs (the demo config; the collapsed one under the fault)."""
    from hepgan.train import fit
    from hepgan.train.config import compose

    for name in RUNS:
        cfg = compose([f"out={root / name}", "logging.progress=false"])
        with _fault(name):
            result = fit(cfg)
        print(f"{name}: physics_score {result['objective']:.3f} after {result['step']} steps", flush=True)


def views(root: Path) -> None:
    """``hepgan-explain all`` on both runs (the collapsed one under the fault)."""
    from hepgan.cli.explain import main

    for name in RUNS:
        with _fault(name):
            code = main(["all", str(root / name)])
        if code:
            raise SystemExit(f"hepgan-explain all {root / name} failed ({code})")


#: figures docs/explain.md shows, from each run's explain folder: (source relative to RUN/explain, stem)
FIGURES = (
    ("dynamics/d_bins.png", "d_bins"),
    ("dynamics/diversity.png", "diversity"),
    ("dynamics/layer_norms.png", "layer_norms"),
    ("dynamics/update_ratios.png", "update_ratios"),
    ("dissect/corr_conv3.png", "dissect_correlation"),
    ("dissect/ablation.png", "dissect_ablation"),
    ("traverse/energy_projections.png", "traverse_energy"),
    ("traverse/interpolation_projections.png", "traverse_interpolation"),
)


def collect(root: Path) -> None:
    """Copy the figures of both runs into docs/explain/ and write results.json here."""
    DOCS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in RUNS:
        explain = root / name / "explain"
        copied = []
        for src, stem in FIGURES:
            if (explain / src).exists():
                shutil.copyfile(explain / src, DOCS / f"{name}_{stem}.png")
                copied.append(f"{name}_{stem}.png")
            else:
                print(f"{name}: {src} missing", file=sys.stderr)
        fit_result = json.loads((root / name / "fit_result.json").read_text())
        dyn = json.loads((explain / "dynamics.json").read_text())
        results[name] = {
            "physics_score": fit_result["objective"],
            "sf_rel_error": fit_result["metrics"].get("sf_rel_error"),
            "step": fit_result["step"],
            "findings": dyn.get("findings", []),
            "figures": copied,
        }
        for view in ("dissect", "traverse"):
            path = explain / f"{view}.json"
            if path.exists():
                results[name][f"{view}_summary"] = _summary(view, json.loads(path.read_text()))
    (HERE / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {HERE / 'results.json'} and {DOCS}")


def _summary(view: str, data: dict[str, Any]) -> Any:
    """The few numbers of a view's JSON that docs/explain.md quotes."""
    keys = {"dissect": ("ablation", "latent_directions"), "traverse": ("summary",)}[view]
    return {k: data.get(k) for k in keys if k in data}


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("train", "views", "collect"))
    p.add_argument("--root", type=Path, default=Path("runs/explain"))
    args = p.parse_args(argv)
    {"train": train, "views": views, "collect": collect}[args.stage](args.root)


if __name__ == "__main__":
    main()
