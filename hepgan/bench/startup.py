"""Start-up cost of one training process, cold vs warm persistent compilation cache.

A sweep task pays process start, imports, data set-up and compilation before its first update; with a
shared cache (``hepgan.sweep.cache.configure_compile_cache``) every task after the first loads the
compiled programs instead. Each measurement is a fresh Python process running the ``debug`` preset for one
training step, timed from launch until the process has finished that step (the child prints a marker with
its own clock once ``fit`` returns: step-0 validation, one update, final validation). ``cold``: an empty
cache folder; ``warm``: the same folder again. Goal: warm <= 25 % of cold (of the time to the first step).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hepgan.bench.common import machine_info

MARKER = "HEPGAN_FIRST_STEP_DONE"

_CHILD = """
import json, sys, tempfile, time
t_import = time.perf_counter()
from hepgan.sweep.cache import configure_compile_cache
configure_compile_cache(sys.argv[1])
from hepgan.train import compile_step, compose
cfg = compose(["debug=default", "out=" + tempfile.mkdtemp()])
info = compile_step(cfg)
print("{marker}", json.dumps(info), flush=True)
"""


def _launch(cache_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD.replace("{marker}", MARKER), str(cache_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"start-up child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return {"to_first_step_s": wall, **json.loads(line[len(MARKER) :])}


def run(quick: bool = False) -> dict[str, Any]:
    """Cold and warm start-up of a one-step debug training; ``quick`` measures each once, else best of 2.

    Returns ``{"cold": {...}, "warm": {...}, "warm_over_cold": ratio of to_first_step_s, "goal": 0.25,
    "machine": ...}``; per case ``to_first_step_s`` (launch to first step done, s), ``compile_s`` (XLA
    compile seconds inside the child), ``compiles``, ``cache_hits``, ``cache_misses``.
    """
    repeats = 1 if quick else 2
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="hepgan-jax-cache-") as d:
            cold.append(_launch(Path(d)))
            warm.append(_launch(Path(d)))
    best_cold = min(cold, key=lambda r: r["to_first_step_s"])
    best_warm = min(warm, key=lambda r: r["to_first_step_s"])
    return {
        "cold": best_cold,
        "warm": best_warm,
        "warm_over_cold": best_warm["to_first_step_s"] / best_cold["to_first_step_s"],
        "goal": 0.25,
        "repeats": repeats,
        "machine": machine_info(),
    }
