"""``hepgan-evaluate``: compare generated showers with reference showers and write a validation report.

    hepgan-evaluate GENERATED REFERENCE --out runs/eval [--metrics fast|all|NAME ...] [--max-events N]
    hepgan-evaluate GENERATED REFERENCE --suite calochallenge [--dataset 2|3]
                    [--classifier auto|challenge|cpu|off] [--fpd-batches N]

GENERATED and REFERENCE are shower files, directories or globs in any supported format (3DGAN
fixed-angle, 3DGAN variable-angle, CaloChallenge). Writes ``metrics.json``, ``figures/*.png`` and
``report.html`` into ``--out`` and prints the main numbers. A metric the sets are too small for (FPD
under 500 events per set, KPD under 100, the classifiers under 200) is skipped: ``metrics.json`` lists it
with the reason under ``"skipped"``, the report and the printout say so. Exit status 0 on success, 1 when
the inputs cannot be compared, a run cannot be restored or ``--out`` cannot be written (checked before
any reading; message on stderr), 2 for command-line errors.

``--suite calochallenge`` runs the CaloChallenge 2022 evaluation of datasets 2 and 3 instead
(:mod:`hepgan.physics.calochallenge`) on CaloChallenge HDF5 files: separation powers per feature and
layer, low- and high-level classifier AUCs, FPD and KPD. Writes ``metrics.json``, ``comparison.md`` (the
numbers beside the published table) and ``figures/*.png``. A file with a missing key, a voxel count that
is not the dataset's, negative energies, or fewer than 500 events is an error (status 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

from hepgan.data.types import Showers
from hepgan.physics.report import HEADLINE
from hepgan.progress import Progress


def _count(paths: list[str], max_events: int | None) -> int | None:
    """Events the files hold (from their metadata; None when they cannot be scanned: the reading
    itself then reports why), at most ``max_events``: the total of the reading's progress."""
    from hepgan.data.formats import scan

    try:
        n = sum(info.n_events for info in scan(paths if len(paths) > 1 else paths[0]))
    except (ValueError, OSError):
        return None
    return n if max_events is None else min(n, max_events)


def _read(
    paths: list[str], max_events: int | None, which: str, advance: Callable[[int], None] | None = None
) -> Showers:
    """Read up to ``max_events`` showers; ``advance(k)`` is told of every ``k`` events read."""
    from hepgan.data.formats import iter_showers

    parts: list[Showers] = []
    n = 0
    # the original 3DGAN readers' cell threshold for the format (formats.DEFAULT_CELL_THRESHOLD)
    for chunk in iter_showers(paths if len(paths) > 1 else paths[0], chunk=2000, threshold=None):
        if max_events is not None and n + len(chunk) > max_events:
            chunk = chunk[: max_events - n]
        # extras (pdgID, eta, ...) may differ between files and are not compared: keep the core fields
        parts.append(Showers(ecal=chunk.ecal, energy=chunk.energy, theta=chunk.theta))
        n += len(chunk)
        if advance is not None:
            advance(len(chunk))
        if max_events is not None and n >= max_events:
            break
    if not parts:
        raise ValueError(f"the {which} input {paths} holds no events")
    try:
        return Showers.concat(parts)
    except ValueError as exc:
        raise ValueError(f"the {which} input {paths} mixes incompatible files: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hepgan-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("generated", nargs="?", help="generated showers: file, directory or glob")
    p.add_argument("reference", nargs="?", help="reference showers: file, directory or glob")
    p.add_argument(
        "--checkpoint",
        metavar="RUN_DIR",
        help="evaluate a run's generator (best checkpoint) on --max-events fresh held-out showers instead "
        "of files; then give no GENERATED/REFERENCE",
    )
    p.add_argument("--out", default="runs/evaluate", help="output folder (default %(default)s)")
    p.add_argument(
        "--metrics", nargs="+", default=None,
        help="metric names or groups: fast, all, sf, separation, gan3d, distances, fpd, kpd, classifier, "
        "classifier_hlf, classifier_cells (default all; with --checkpoint the run's train.val_metrics)",
    )  # fmt: skip
    p.add_argument("--max-events", type=int, default=None, help="use at most N events of each set")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling and classifier (default 0)")
    p.add_argument(
        "--fpd-convention", choices=("hepgan", "jetnet"), default="hepgan",
        help="FPD/KPD settings: hepgan (default; small validation sets) or jetnet (JetNet's kernel, sizes "
        "and batches: quote these beside published numbers; needs >= 50000 events per set; docs/physics.md)",
    )  # fmt: skip
    p.add_argument("--energy-bins", type=float, nargs="+", help="energy bin edges in GeV (default automatic)")
    p.add_argument(
        "--theta-bins", type=float, nargs="+", help="angle bin edges in degrees (default automatic)"
    )
    p.add_argument(
        "--legacy-gan3d", action="store_true",
        help="report gan3d_metric with the moment term counted twice, as the original 3DGAN code",
    )  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="write metrics.json only (no figures, no HTML)")
    p.add_argument(
        "--no-progress", action="store_true",
        help="no progress (a bar on a terminal; in a log, a [hepgan] evaluate line per stage)",
    )  # fmt: skip
    cc = p.add_argument_group("CaloChallenge suite")
    cc.add_argument(
        "--suite", choices=("default", "calochallenge"), default="default",
        help="default: hepgan's validation; calochallenge: the CaloChallenge 2022 evaluation (datasets 2, 3)",
    )  # fmt: skip
    cc.add_argument(
        "--dataset", choices=("2", "3"), default=None,
        help="CaloChallenge dataset (default: recognised from the voxel count)",
    )  # fmt: skip
    cc.add_argument(
        "--classifier", choices=("auto", "challenge", "cpu", "off"), default="auto",
        help="classifier settings: challenge (3 x 2048 hidden, 50 epochs, as published), cpu (3 x 256, "
        "20 epochs), off; auto = challenge on a GPU, cpu otherwise (default %(default)s)",
    )  # fmt: skip
    cc.add_argument(
        "--fpd-batches", type=int, default=20,
        help="FPD resamplings per batch size (default %(default)s, as the challenge)",
    )  # fmt: skip
    return p


def _print_skipped(skipped: dict[str, str]) -> None:
    for name, reason in sorted(skipped.items()):
        print(f"  skipped {name}: {reason}")


def _evaluate_checkpoint(args: argparse.Namespace) -> int:
    """``--checkpoint RUN_DIR``: regenerate at a fresh held-out reference's conditions, score, write."""
    from hepgan.cli.outdir import check_writable_dir
    from hepgan.physics.report import write_metrics
    from hepgan.train.api import evaluate_checkpoint

    if args.generated is not None:
        print("hepgan-evaluate: --checkpoint replaces GENERATED and REFERENCE; give neither", file=sys.stderr)
        return 2
    skipped: dict[str, str] = {}
    try:
        out = check_writable_dir(args.out)
        # restore_run's documented errors: ValueError (damaged step, model mismatch), FileNotFoundError
        with Progress("evaluate", enabled=not args.no_progress) as progress:
            with progress.stage("checkpoint"):  # restore, simulate the reference, generate, score
                metrics = evaluate_checkpoint(
                    args.checkpoint,
                    n_events=args.max_events or 5000,
                    seed=args.seed,
                    metrics=args.metrics,
                    skipped=skipped,
                )
        path = write_metrics(out, metrics, skipped=skipped)
    except (ValueError, OSError) as exc:  # FileNotFoundError is an OSError
        print(f"hepgan-evaluate: {exc}", file=sys.stderr)
        return 1
    print(f"checkpoint of {args.checkpoint} (step {int(metrics['step'])}), {int(metrics['n_events'])} events")
    for k in HEADLINE:
        if k in metrics:
            print(f"  {k:<14} {metrics[k]:.4g}")
    _print_skipped(skipped)
    print(f"wrote {path}")
    return 0


def _evaluate_calochallenge(args: argparse.Namespace) -> int:
    """``--suite calochallenge``: read both sets, run the suite, write metrics, table and figures."""
    import jax

    from hepgan.cli.outdir import check_writable_dir
    from hepgan.physics import calochallenge as cc

    if args.checkpoint is not None or args.metrics is not None:
        print("hepgan-evaluate: --suite calochallenge takes GENERATED and REFERENCE files only "
              "(no --checkpoint, no --metrics)", file=sys.stderr)  # fmt: skip
        return 2
    if args.generated is None or args.reference is None:
        print("hepgan-evaluate: GENERATED and REFERENCE are both required", file=sys.stderr)
        return 2
    if (args.max_events is not None and args.max_events < 1) or args.fpd_batches < 1:
        print("hepgan-evaluate: --max-events and --fpd-batches must be >= 1", file=sys.stderr)
        return 2
    choice = args.classifier
    if choice == "auto":
        choice = "cpu" if jax.default_backend() == "cpu" else "challenge"
    settings = None if choice == "off" else cc.PRESETS[choice]
    skipped: dict[str, str] = {}
    progress = Progress("evaluate", enabled=not args.no_progress)
    try:
        out = check_writable_dir(args.out)
        t0 = time.perf_counter()
        reading = progress.stage("read")  # both sets and their checks: closed once they pass
        ref_s, ref_e, binning = cc.read_files(args.reference, args.dataset, max_events=args.max_events,
                                              which="reference")  # fmt: skip
        gen_s, gen_e, _ = cc.read_files(
            args.generated, binning, max_events=args.max_events, which="generated"
        )
        t_read = time.perf_counter() - t0
        for which, path, n in (
            ("generated", args.generated, len(gen_s)),
            ("reference", args.reference, len(ref_s)),
        ):
            if n < cc.MIN_EVENTS:
                raise ValueError(
                    f"the {which} input {path} holds {n} events (after --max-events); the CaloChallenge "
                    f"suite needs at least {cc.MIN_EVENTS} per set, because FPD fits batches of sizes a "
                    "factor 5 apart (the published numbers used 100k events per set)"
                )
        reading.close()
        feats: dict[str, cc.Features] = {}
        hists: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        with progress.stage("suite"):  # separation powers, classifiers, FPD/KPD
            result = cc.evaluate(
                gen_s, gen_e, ref_s, ref_e, binning, classifier=settings, seed=args.seed,
                fpd_batches=args.fpd_batches, skipped=skipped, features_out=feats, hist_out=hists,
            )  # fmt: skip
        result["inputs"] = {"generated": str(args.generated), "reference": str(args.reference)}
        if skipped:
            result["skipped"] = dict(skipped)
        with progress.stage("report"):
            path = cc.write_results(out, result, None if args.no_report else feats, hists.get("voxel"))
        progress.close()
    except (ValueError, OSError) as exc:  # file and input errors are ValueErrors naming the file and key
        progress.close(ok=False)
        print(f"hepgan-evaluate: {exc}", file=sys.stderr)
        return 1

    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    summary = result["separation_summary"]
    print(
        f"CaloChallenge dataset {binning.name}: generated {len(gen_s)} events, reference {len(ref_s)} events "
        f"(read in {t_read:.1f} s)"
    )
    print(
        f"  separation power  mean {num(summary.get('mean'), '.4g')}  max {num(summary.get('max'), '.4g')}"
        f" ({summary.get('max_where', '-')})"
    )
    for key in ("auc_low", "auc_high"):
        if key in result:
            print(
                f"  {key:<9} {num(result[key], '.4f')} +- {num(result[key + '_err'], '.2g')}"
                f"  (classifier settings: {choice})"
            )
    for key in ("fpd_x1e3", "kpd_x1e3"):
        print(f"  {key}  {num(result[key], '.4g')} +- {num(result[key + '_err'], '.2g')}")
    not_comparable = [k for k, v in result["comparable"].items() if not v]
    if not_comparable:
        print(f"  not comparable with the published table: {', '.join(not_comparable)} (see metrics.json)")
    _print_skipped(skipped)
    print(f"wrote {path} and {out / 'comparison.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.suite == "calochallenge":
        return _evaluate_calochallenge(args)
    if args.checkpoint is not None:
        return _evaluate_checkpoint(args)
    if args.generated is None or args.reference is None:
        print("hepgan-evaluate: GENERATED and REFERENCE are both required", file=sys.stderr)
        return 2
    if args.max_events is not None and args.max_events < 1:
        print(f"hepgan-evaluate: --max-events must be >= 1; got {args.max_events}", file=sys.stderr)
        return 2

    from hepgan.cli.outdir import check_writable_dir
    from hepgan.physics.extract import extract
    from hepgan.physics.metrics import evaluate_observables, resolve_metrics
    from hepgan.physics.report import write_metrics, write_report

    skipped: dict[str, str] = {}
    # stage by stage: reading, observables, each metric (the classifiers take longest), the figures
    try:
        names = resolve_metrics(args.metrics or ["all"])
        out = check_writable_dir(args.out)
        with Progress("evaluate", enabled=not args.no_progress) as progress:
            t0 = time.perf_counter()
            sets = []
            for which, path_in in (("generated", args.generated), ("reference", args.reference)):
                total = _count([path_in], args.max_events)
                with progress.task(f"read_{which}", total=total, unit="showers") as task:
                    sets.append(_read([path_in], args.max_events, which, task.advance))
            gen, ref = sets
            if gen.grid != ref.grid:
                raise ValueError(
                    f"generated showers ({args.generated}) have grid {gen.grid} but the reference "
                    f"({args.reference}) has {ref.grid}: both must use the same [X, Y, Z] cell grid"
                )
            t_read = time.perf_counter() - t0
            with progress.task("observables", total=len(gen) + len(ref), unit="showers") as task:
                g = extract(gen)
                task.advance(len(gen))
                r = extract(ref)
                task.advance(len(ref))
            metrics = evaluate_observables(
                g, r, metrics=names, seed=args.seed, energy_bins=args.energy_bins,
                theta_bins=None if args.theta_bins is None else list(np.deg2rad(args.theta_bins)),
                duplicate_moment_term=args.legacy_gan3d, cells=(gen, ref), skipped=skipped,
                progress=progress.stage, fpd_convention=args.fpd_convention,
            )  # fmt: skip
            with progress.stage("metrics_json" if args.no_report else "report"):
                path = (
                    write_metrics(out, metrics, skipped=skipped)
                    if args.no_report
                    else write_report(out, gen, ref, metrics, observables=(g, r), skipped=skipped)
                )
    except (ValueError, OSError) as exc:  # ShowerFileError and the evaluation errors are ValueErrors
        print(f"hepgan-evaluate: {exc}", file=sys.stderr)
        return 1
    print(
        f"generated {len(gen)} events, reference {len(ref)} events, grid {gen.grid} (read in {t_read:.1f} s)"
    )
    for k in HEADLINE:
        if k in metrics:
            err = metrics.get(f"{k}_err")
            print(f"  {k:<14} {metrics[k]:.4g}" + (f" +- {err:.2g}" if err is not None else ""))
    _print_skipped(skipped)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
