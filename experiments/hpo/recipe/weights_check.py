"""Score one checkpoint four ways: EMA or raw generator weights x running or recomputed BatchNorm stats.

    python experiments/hpo/recipe/weights_check.py RUN_DIR [--events 1024] [--step N]

Prints, per way, the mean sampling fraction of the generated showers relative to the simulation's,
``physics_score``, ``sep/sf`` and ``sep_rms`` on ``--events`` fresh simulated showers (the run's
simulator stream, past its validation events). This is how experiments/hpo/recipe/README.md found that
the weight EMA, not the generator, put the energy scale off.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from hepgan.data.source import REFERENCE_START, open_source
from hepgan.data.types import Showers
from hepgan.physics.metrics import evaluate
from hepgan.train.checkpoint import restore_run
from hepgan.train.state import generate

OFFSET = 7777  # fresh events: past the validation events, away from evaluate_checkpoint's seeds


def main() -> None:
    """Parse the command line and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--events", type=int, default=1024)
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    args = ap.parse_args()
    players, state, pre, conf = restore_run(args.run_dir, step=args.step)
    n = args.events
    only = dataclasses.replace(conf.data, n_events=1, n_reference=n)
    start = REFERENCE_START + conf.data.n_reference + OFFSET
    ref = open_source(only, reference_start=start).reference.read(np.arange(n))
    theta = ref.theta_or_normal()
    ref_sf = np.mean(ref.ecal.sum(axis=(1, 2, 3)) / ref.energy)
    print(f"step {int(state.step)}, {n} fresh showers")
    print("weights  BN stats     sf gen/sim  physics_score  sep/sf  sep_rms")
    for ema in (True, False):
        for stats in ("running", "recomputed"):
            x = generate(players, state, ref.energy, theta, batch=128, seed=1, bn_stats=stats, ema=ema)
            ecal = np.asarray(pre.invert_cells(x), np.float32)
            gen = Showers(ecal=ecal, energy=ref.energy, theta=ref.theta)
            m = evaluate(gen, ref, metrics=["fast"], seed=0)
            sf = np.mean(ecal.sum(axis=(1, 2, 3)) / ref.energy) / ref_sf
            name = "EMA" if ema else "raw"
            print(
                f"{name:8s} {stats:11s} {sf:10.3f}  {m['physics_score']:13.3f}  {m['sep/sf']:6.3f}  "
                f"{m['sep_rms']:7.3f}"
            )


if __name__ == "__main__":
    main()
