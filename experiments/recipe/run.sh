#!/bin/sh
# The CPU recipe end to end: train experiment=cpu_fixed25, score the final generator on 10^4 fresh
# simulated showers against 10^4 fresh simulated ones (every metric, the classifiers included), draw the
# convergence figure.
#   sh experiments/recipe/run.sh [RUN_DIR]          # default runs/cpu_fixed25
# Hardware: written for a 2-core CPU machine (about 60 min of training, 2 min of evaluation).
set -eu
out="${1:-runs/cpu_fixed25}"
bin="${HEPGAN_BIN:-.venv/bin}"
"$bin/hepgan-train" experiment=cpu_fixed25 "out=$out"
"$bin/hepgan-evaluate" --checkpoint "$out/checkpoints" --max-events 10000 --metrics all --out "$out/eval_final"
"$bin/python" experiments/recipe/figure.py "$out" "$out/convergence.png"
