"""``hepgan-export``: a trained run's generator as an ONNX model or as serialized StableHLO.

    hepgan-export runs/demo --format onnx                      # -> runs/demo/export/generator.onnx
    hepgan-export runs/angle --format stablehlo --batch 64 --best --out models/angle.stablehlo

The exported function takes ``energy [B]`` GeV (and ``theta [B]`` rad for angle models) and ``noise
[B, n]`` drawn from N(0, 1), and returns ``showers [B, X, Y, Z]`` in GeV, as hepgan-generate writes them:
the model's conditioning and the inverse cell preprocessing are inside. It is the run's EMA generator
(``--raw-weights``: the raw one) at its newest intact checkpoint (``--best``: the best one), with the
BatchNorm statistics of the run's ``train.sample_bn``. ``--batch`` fixes the batch, ``dynamic`` (the
default) leaves it symbolic. StableHLO is written as ``jax.export`` bytes with the MLIR text beside it
(``<out>.mlir``); every export writes ``<out>.json`` (inputs and outputs with shapes, dtypes and units,
the run, checkpoint and step, versions, the check below). See docs/export.md.

Before anything is written the exported model is run (onnxruntime CPU, or ``jax.export.deserialize``)
on 1000 showers and compared with hepgan's own sampling at the same energies, angles and noise.
Exit status 0 on success; 1 with a one-paragraph message when the run cannot be restored (missing or
damaged checkpoint), ``--batch`` or ``--out`` is unusable (checked before the model is restored), or the
exported model differs from JAX by more than the tolerance (1e-4 of a shower's largest cell; nothing is
written then); 2 for command-line errors.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, export, check, write; returns the exit code (1 with a message for bad input)."""
    from hepgan.export import FORMATS

    p = argparse.ArgumentParser(
        prog="hepgan-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "run_dir", help="run directory written by hepgan-train (holds manifest.json, checkpoints/)"
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or stablehlo")
    p.add_argument(
        "--batch", default="dynamic", help="showers per call: a positive integer or 'dynamic' (default)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="model file, or a folder for generator.onnx / generator.stablehlo (default: RUN_DIR/export/)",
    )
    p.add_argument("--best", action="store_true", help="use the best checkpoint instead of the newest")
    p.add_argument(
        "--step", type=int, default=None, help="use exactly this saved step (of best/ with --best)"
    )
    p.add_argument(
        "--raw-weights", action="store_true", help="export the raw generator weights instead of their EMA"
    )
    p.add_argument("--seed", type=int, default=0, help="conditions and noise of the check (default 0)")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError) as exc:  # restore_run's documented errors; FileNotFoundError is an OSError
        print(f"hepgan-export: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(
            f"hepgan-export: {exc}. The export needs the optional packages of hepgan[export] and jax2onnx: "
            'pip install -c constraints.txt -e ".[export]" && pip install --no-deps jax2onnx==0.17.1 '
            "(see docs/export.md for why jax2onnx is installed without its dependencies)",
            file=sys.stderr,
        )
        return 1


def _run(args: argparse.Namespace) -> int:
    from hepgan.cli.outdir import check_writable_dir
    from hepgan.export import export_run, parse_batch, resolve_out
    from hepgan.train.checkpoint import read_manifest

    batch = parse_batch(args.batch)
    read_manifest(args.run_dir)  # a missing run is named before --out is looked at
    out = resolve_out(args.out, args.run_dir, args.format)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file path or a folder without generator files")
    check_writable_dir(out.parent, option=f"--out {out}: its folder")  # before restoring, not after
    t0 = time.perf_counter()
    record = export_run(
        args.run_dir,
        args.format,
        out,
        batch=batch,
        best=args.best,
        step=args.step,
        ema=not args.raw_weights,
        seed=args.seed,
    )
    v = record["verification"]
    print(
        f"hepgan-export: {record['model']['arch']}/{record['model']['size']} generator, step "
        f"{record['run']['step']} ({record['run']['weights']} weights), batch {record['batch']} -> {out} "
        f"({args.format}); checked on {v['n_showers']} showers: max abs diff {v['max_abs_gev']:.3g} GeV, "
        f"max rel diff {v['max_rel']:.3g} of a shower's largest cell (tolerance {v['tolerance']:g}); "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
