"""A trained dataset-2 model through the CaloChallenge evaluation, beside the simulator against itself.

    hepgan-train experiment=calochallenge_ds2 out=runs/ds2                 # about an hour on 2 CPU cores
    python experiments/calochallenge/study.py runs/ds2 experiments/calochallenge --work runs/cc_eval

Steps (each a hepgan command, printed before it runs):

1. ``hepgan-generate RUN --n N --energy loguniform:1:1000 --format calochallenge``: the run's generator
   at its newest checkpoint, in the challenge's file format (MeV);
2. ``hepgan-simulate --geometry ds2`` twice, with seeds no training set uses: the reference, and a
   second simulated sample that plays the challenge's "GEANT4" row (the truth against itself: the floor
   every metric reaches with N events);
3. ``hepgan-evaluate --suite calochallenge`` of the generated and of the second simulated sample against
   the reference.

Writes ``OUT/gan/`` and ``OUT/simulator/`` (each ``metrics.json``, ``comparison.md``, ``figures/``), and
copies the run's ``val.csv``, its ``manifest.json`` (without host name and start time) and its
training-report figures into ``OUT/run/``. Shower
files stay under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REFERENCE_SEED, BASELINE_SEED, GENERATION_SEED = 101, 102, 1


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    """Generate, simulate, evaluate and copy the results; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run directory of a ds2 training")
    p.add_argument("out", type=Path, help="where the results go (experiments/calochallenge)")
    p.add_argument("--work", type=Path, default=Path("runs/cc_eval"), help="shower files (not committed)")
    p.add_argument("--n", type=int, default=10000, help="showers per set (default %(default)s)")
    args = p.parse_args(argv)
    bindir = Path(sys.executable).parent
    work, out = args.work, args.out
    sets = {"gan": work / "gan", "reference": work / "reference", "simulator": work / "simulator"}
    for d in sets.values():
        if d.exists():
            shutil.rmtree(d)
    _run([str(bindir / "hepgan-generate"), str(args.run), "--n", str(args.n),
          "--energy", "loguniform:1:1000", "--format", "calochallenge", "--seed", str(GENERATION_SEED),
          "--out", str(sets["gan"])])  # fmt: skip
    for name, seed in (("reference", REFERENCE_SEED), ("simulator", BASELINE_SEED)):
        _run([str(bindir / "hepgan-simulate"), "--geometry", "ds2", "--n-events", str(args.n),
              "--seed", str(seed), "--out", str(sets[name])])  # fmt: skip
    for name in ("gan", "simulator"):
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)
        _run([str(bindir / "hepgan-evaluate"), str(sets[name]), str(sets["reference"]),
              "--suite", "calochallenge", "--out", str(dest)])  # fmt: skip
    run_out = out / "run"
    run_out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(args.run / "val.csv", run_out / "val.csv")
    manifest = json.loads((args.run / "manifest.json").read_text())
    for key in ("hostname", "start_time"):  # where and when, not what: kept out of the repository
        manifest.pop(key, None)
    text = json.dumps(manifest, indent=1).replace(str(args.run.resolve()), f"runs/{args.run.name}")
    (run_out / "manifest.json").write_text(text + "\n")
    figures = args.run / "report" / "figures"
    if figures.is_dir():
        shutil.copytree(figures, run_out / "figures", dirs_exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
