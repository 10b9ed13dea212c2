"""``hepgan-generate``: showers from a trained run, written as HDF5 in any supported format.

    hepgan-generate runs/demo --n 10000 --energy uniform:10:500 --out generated/ --format fixed25
    hepgan-generate runs/angle --n 5000 --energy list:50,100 --theta-deg 60:120 --format angle --best

The generator is the run's EMA generator at its newest intact checkpoint (``--best``: the checkpoint with
the lowest validation ``physics_score``); showers are in file units (GeV), as the training data.
Every file records where its showers came from: the attribute ``hepgan_provenance`` (JSON: run directory,
checkpoint kind and step, config fingerprint, seed, batch, BatchNorm statistics mode, energy and angle
specs, versions, time) with plain copies ``hepgan_*``, and the per-event dataset ``hepgan_latent_index``
(the shower's index in the generation: generator chunk ``index // batch``, row ``index % batch``), from
which :func:`hepgan.explain.regenerate.regenerate` draws any one shower again, bit for bit.
Exit status 0 on success, 1 with a one-paragraph message when the run cannot be restored (missing or
damaged checkpoint, a model that does not match the checkpoint) or ``--out`` cannot be written (checked
before the model is restored), 2 for command-line errors.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hepgan.data.formats import COMPRESSION_HELP, DEFAULT_COMPRESSION, FORMATS, compression_arg
from hepgan.progress import Progress, Task


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate, write; returns the exit code (1 with a message for bad input)."""
    p = argparse.ArgumentParser(
        prog="hepgan-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "run_dir", help="run directory written by hepgan-train (holds manifest.json, checkpoints/)"
    )
    p.add_argument("--n", type=int, default=1000, help="number of showers (default %(default)s)")
    p.add_argument(
        "--energy",
        default="uniform:10:500",
        help="GeV: fixed:E, uniform:A:B, loguniform:A:B, list:E1,E2 (default %(default)s)",
    )
    p.add_argument(
        "--theta-deg", default="90", help="incidence angle in degrees, '90' or '60:120' (default %(default)s)"
    )
    p.add_argument("--out", default="generated", help="output directory (default %(default)s)")
    p.add_argument(
        "--format",
        default=None,
        choices=FORMATS,
        help="fixed25, angle or calochallenge (default: the model's own)",
    )
    p.add_argument("--events-per-file", type=int, default=10000)
    p.add_argument("--compression", type=compression_arg, default=DEFAULT_COMPRESSION, help=COMPRESSION_HELP)
    p.add_argument("--batch", type=int, default=256, help="showers per generator call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--best", action="store_true", help="use the best checkpoint instead of the newest")
    p.add_argument(
        "--step", type=int, default=None, help="use exactly this saved step (of best/ with --best)"
    )
    p.add_argument(
        "--no-progress", action="store_true",
        help="no progress (a bar on a terminal; in a log, a [hepgan] generate line every 30 s)",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.command = shlex.join(["hepgan-generate", *(sys.argv[1:] if argv is None else argv)])
    try:
        with Progress("generate", enabled=not args.no_progress) as progress:
            return _run(args, progress)
    except (ValueError, OSError) as exc:  # restore_run's documented errors; FileNotFoundError is an OSError
        print(f"hepgan-generate: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, progress: Progress) -> int:
    from hepgan.cli.outdir import check_writable_dir
    from hepgan.data.formats import provenance_attrs as file_attrs
    from hepgan.data.formats import write_files
    from hepgan.data.simulate import EnergySpec, parse_theta
    from hepgan.data.types import Showers
    from hepgan.explain.regenerate import LATENT_INDEX, bn_stats_arrays, provenance_attrs, run_record
    from hepgan.train.checkpoint import restore_run
    from hepgan.train.state import generate

    if args.n < 1 or args.batch < 1 or args.events_per_file < 1:
        raise ValueError(
            f"--n, --batch and --events-per-file must be positive; got {args.n}, {args.batch} and "
            f"{args.events_per_file}"
        )
    check_writable_dir(args.out)  # before minutes of restoring and generating, not after
    spec = EnergySpec.parse(args.energy)
    lo, hi = parse_theta(args.theta_deg)
    rng = np.random.default_rng(args.seed)
    energy = spec.sample(rng.random(args.n), np.arange(args.n)).astype(np.float32)
    theta = np.deg2rad(rng.uniform(lo, hi, args.n) if hi > lo else np.full(args.n, lo)).astype(np.float32)
    with progress.stage("restore"):
        players, state, preprocess, conf = restore_run(args.run_dir, best=args.best, step=args.step)
    run = run_record(args.run_dir)
    fmt = args.format or {"fixed25": "fixed25", "angle51": "angle"}.get(conf.model.arch, "calochallenge")
    batch = min(args.batch, args.n)
    stats = conf.train.sample_bn  # BatchNorm statistics as the run's validation used them
    recorded_bn = None
    if stats == "recomputed":  # measured once here, recorded in the files, then sampled with as they are
        state = _recomputed(players, state, energy, theta, args.seed)
        recorded_bn = bn_stats_arrays(state.g.batch_stats)
    with progress.stage("compile"):
        generate(players, state, energy[:batch], theta[:batch], batch=batch, seed=args.seed)
    t0 = time.perf_counter()
    with progress.task(total=args.n, unit="showers") as task:
        x = generate(players, state, energy, theta, batch=batch, seed=args.seed, on_chunk=task.advance)
    seconds = time.perf_counter() - t0
    ecal = np.asarray(preprocess.invert_cells(x), np.float32)
    showers = Showers(
        ecal=ecal,
        energy=energy,
        theta=theta if conf.model.arch == "angle51" else None,
        extra={LATENT_INDEX: np.arange(args.n, dtype=np.int64)},
    )
    record = {
        **run,
        "checkpoint": "best" if args.best else "latest",
        "step": int(state.step),
        "seed": args.seed,
        "batch": batch,
        "n": args.n,
        "bn_stats": stats,
        "ema": True,
        "energy": args.energy,
        "theta_deg": args.theta_deg,
        "arch": conf.model.arch,
        "format": fmt,
        "events_per_file": args.events_per_file,
        "compression": args.compression,
    }
    written = progress.task("write", total=args.n, unit="showers")
    paths = write_files(
        _chunks(showers, batch, written),
        Path(args.out),
        fmt=fmt,
        events_per_file=args.events_per_file,
        prefix="generated",
        compression=args.compression,
        attrs={
            **provenance_attrs(record, recorded_bn),
            **file_attrs(tool="hepgan-generate", command=args.command, geometry=conf.model.arch),
        },
    )
    written.close()
    print(
        f"hepgan-generate: {args.n} showers in {seconds:.2f} s ({args.n / seconds:.1f} showers/s, step "
        f"{int(state.step)}) -> {len(paths)} file(s) in {args.out} ({fmt})"
    )
    return 0


def _recomputed(players: Any, state: Any, energy: np.ndarray, theta: np.ndarray, seed: int) -> Any:
    """``state`` with the generator's BatchNorm running statistics replaced by those
    :func:`~hepgan.train.state.recompute_bn_stats` measures for the EMA weights at these conditions
    (``energy: [N] GeV``, ``theta: [N] rad``): what ``generate(..., bn_stats="recomputed")`` samples with."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hepgan.train.state import recompute_bn_stats

    copied = state.g.replace(batch_stats=jax.tree.map(jnp.copy, state.g.batch_stats))
    g = players.generator(state.replace(g=copied))
    recompute_bn_stats(g, energy, theta, seed)
    measured = jax.tree.leaves(nnx.state(g, nnx.BatchStat))
    stats = jax.tree.unflatten(jax.tree.structure(state.g.batch_stats), measured)
    return state.replace(g=state.g.replace(batch_stats=stats))


def _chunks(showers: Any, batch: int, task: Task | None = None) -> Iterator[Any]:
    """``showers`` in generator chunks of ``batch`` events, each with its ``hepgan_latent_index`` rows
    (``task``: counts a chunk once the writer asks for the next one, and the last at the end)."""
    done = 0
    for start in range(0, len(showers), batch):
        if task is not None and start:
            task.advance(start - done)
            done = start
        yield showers[start : start + batch]
    if task is not None:
        task.advance(len(showers) - done)


if __name__ == "__main__":
    sys.exit(main())
