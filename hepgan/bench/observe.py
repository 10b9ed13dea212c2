"""``hepgan-bench observe``: what the explain logging costs a training run.

Two costs, each against its baseline measured in the same run:

- the **training step** with per-layer norms (``logging.layer_stats_every > 0``: the compiled update also
  returns every layer's weight, gradient and update norm) against the step without them, alternating
  call by call, the fastest of ``repeats`` calls each; ``ratio = with / without`` (1.0: free);
- the **validation** probe (``logging.dynamics_events`` showers: D on as many reference and generated
  showers, their observables, the dynamics rows) against the validation it is added to (generating the
  reference showers and ``evaluate`` with the run's ``val_metrics``), each timed after one untimed call;
  ``ratio = (validation + probe) / validation``.

The step for the demo model (the default config: small fixed-angle 3DGAN, batch 16) and the paper
fixed-angle model (batch 16); the validation for the demo model (the paper model's takes minutes on a
2-core CPU; the probe's share there is its discriminator pass over 2 x ``dynamics_events`` showers). One
CPU device. ``quick=True``: the tiny model, 3 repeats.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hepgan.bench.common import machine_info


def _batch(grid: tuple[int, int, int], batch: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {
        "ecal": jnp.asarray(rng.gamma(0.3, 1.0, (batch, *grid)).astype(np.float32)),
        "energy": jnp.asarray(rng.uniform(0.1, 5.0, batch).astype(np.float32)),
        "theta": jnp.full((batch,), np.pi / 2, jnp.float32),
    }


def step_cost(overrides: list[str], repeats: int) -> dict[str, Any]:
    """Seconds of the compiled update without and with per-layer norms (fastest of ``repeats``, the two
    alternating), and their ratio. ``overrides``: config overrides of the case."""
    from hepgan.train.config import compose
    from hepgan.train.run import build_run

    steps = {}
    state = None
    for name, every in (("without", 0), ("with", 20)):
        run = build_run(
            compose([*overrides, f"logging.layer_stats_every={every}"]),
            parallel=False,
            data=False,
            total_steps=1000,
        )
        steps[name] = jax.jit(run.update)
        state = run.state
    assert state is not None
    batch = _batch((25, 25, 25), int(run.conf.train.batch_size))  # the fixed-angle models' grid
    best = {k: float("inf") for k in steps}
    for fn in steps.values():  # compile
        jax.block_until_ready(fn(state, batch))
    for _ in range(repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(state, batch))
            best[name] = min(best[name], time.perf_counter() - t0)
    return {"without_s": best["without"], "with_s": best["with"], "ratio": best["with"] / best["without"]}


def validation_cost(overrides: list[str], repeats: int) -> dict[str, Any]:
    """Seconds of one validation (generate the reference showers, ``evaluate``) and of the dynamics probe
    added to it, fastest of ``repeats`` after one untimed call each; ``ratio = (validation + probe) /
    validation``."""
    from hepgan.data.source import open_source
    from hepgan.physics.metrics import evaluate
    from hepgan.train.config import compose, to_config
    from hepgan.train.loop import _DynamicsProbe, _Logs
    from hepgan.train.run import build_run

    conf = to_config(compose([*overrides, "logging.csv=false", "logging.tensorboard=false"]))
    run = build_run(conf, parallel=False, data=False, total_steps=1000)
    sources = open_source(conf.data)
    n_ref = len(sources.reference)
    reference = sources.reference.read(np.arange(n_ref))
    theta = reference.theta_or_normal()

    def validation() -> Any:
        from hepgan.data.types import Showers

        ecal = run.generate(run.state, reference.energy, theta, seed=1)
        generated = Showers(ecal=ecal, energy=reference.energy, theta=reference.theta)
        evaluate(generated, reference, metrics=conf.train.val_metrics)
        return generated

    generated = validation()
    probe = _DynamicsProbe(run, reference, conf.logging)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        logs = _Logs(Path(tmp), conf.logging)
        probe(0, run.state, generated, logs)
        best_v, best_p = float("inf"), float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            validation()
            best_v = min(best_v, time.perf_counter() - t0)
            t0 = time.perf_counter()
            probe(0, run.state, generated, logs)
            best_p = min(best_p, time.perf_counter() - t0)
        logs.close()
    return {
        "validation_s": best_v,
        "probe_s": best_p,
        "ratio": (best_v + best_p) / best_v,
        "reference_events": n_ref,
        "dynamics_events": int(conf.logging.dynamics_events),
    }


CASES = {
    "demo": [],
    "paper_fixed25": ["experiment=paper_fixed25", "train.batch_size=16"],
}


def run(quick: bool = False) -> dict[str, Any]:
    """Both costs for each case (see the module docstring); JSON-able."""
    cases = {"tiny": ["model=tiny", "data.n_reference=256"]} if quick else CASES
    repeats = 3 if quick else 10
    out: dict[str, Any] = {"machine": machine_info(), "repeats": repeats, "cases": {}}
    for name, overrides in cases.items():
        row = {"step": step_cost(overrides, repeats)}
        if name != "paper_fixed25":  # its validation alone takes minutes on a 2-core CPU
            row["validation"] = validation_cost(overrides, max(2, repeats // 3))
        out["cases"][name] = row
        print(f"   {name}: {row}", flush=True)
    return out
