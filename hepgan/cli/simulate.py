"""``hepgan-simulate``: simulate electromagnetic showers with the GFLASH-style simulator and write HDF5 files.

Example (the default training set, 10^5 fixed-angle showers, 10-500 GeV)::

    hepgan-simulate --geometry fixed25 --n-events 100000 --energy uniform:10:500 --seed 1 \\
        --workers 2 --out data/fixed25

Event ``i`` depends only on ``(seed, i)``, so the same command gives the same showers whatever
``--workers`` (the files differ only in the attributes recording the creation time and the command).
``--summary-only`` simulates and prints the statistics without writing anything.
The files appear in ``--out`` only when all are written (an interrupted run leaves none); a folder
that already holds HDF5 files is refused (exit 1) unless ``--overwrite`` is given. The files are
compressed (``--compression``, default ``formats.DEFAULT_COMPRESSION``) and record their provenance
(seed, simulator settings, command, hepgan version: ``formats.file_provenance``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hepgan.data.formats import COMPRESSION_HELP, DEFAULT_COMPRESSION, compression_arg
from hepgan.data.geometry import PRESETS
from hepgan.data.simulate import (
    EnergySpec,
    SimulatorConfig,
    default_chunk,
    default_workers,
    iter_simulate,
    parse_theta,
)
from hepgan.data.types import Showers

# what each geometry means by default: the 3DGAN data sets it mimics
_DEFAULTS = {
    "fixed25": {"energy": "uniform:10:500", "theta": "90", "format": "fixed25"},
    "angle51": {"energy": "uniform:2:500", "theta": "60:120", "format": "angle"},
    # CaloChallenge datasets 2 and 3: electrons, log-uniform 1 GeV - 1 TeV, the challenge's file format
    "ds2": {"energy": "loguniform:1:1000", "theta": "90", "format": "calochallenge"},
    "ds3": {"energy": "loguniform:1:1000", "theta": "90", "format": "calochallenge"},
}
_FORMATS = ("fixed25", "angle", "calochallenge")


class _Stats:
    """Running totals over the streamed chunks (nothing is kept in memory)."""

    def __init__(self) -> None:
        self.n = 0
        self.sf_sum = 0.0
        self.sf_sq = 0.0
        self.e_min = np.inf
        self.e_max = -np.inf

    def add(self, s: Showers) -> None:
        sf = s.ecal.sum(axis=(1, 2, 3), dtype=np.float64) / s.energy.astype(np.float64)
        self.n += len(s)
        self.sf_sum += float(sf.sum())
        self.sf_sq += float(np.square(sf).sum())
        if len(s):
            self.e_min = min(self.e_min, float(s.energy.min()))
            self.e_max = max(self.e_max, float(s.energy.max()))

    def mean_sf(self) -> float:
        return self.sf_sum / max(self.n, 1)

    def std_sf(self) -> float:
        m = self.mean_sf()
        return float(np.sqrt(max(self.sf_sq / max(self.n, 1) - m * m, 0.0)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hepgan-simulate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--geometry", default="fixed25", help=f"cell grid preset: {', '.join(PRESETS)} (default %(default)s)"
    )
    p.add_argument("--n-events", type=int, required=True, help="number of showers")
    p.add_argument(
        "--energy",
        default=None,
        metavar="SPEC",
        help='primary energies in GeV: "fixed:100", "uniform:10:500", "loguniform:2:500" or "list:10,50,100" '
        "(default uniform:10:500 for fixed25, uniform:2:500 for angle51)",
    )
    p.add_argument(
        "--theta",
        default=None,
        metavar="DEG|DEGMIN:DEGMAX",
        help="polar angle of incidence in degrees, 90 = normal (default 90 for fixed25, 60:120 for angle51)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument(
        "--start", type=int, default=0, help="global index of the first event (default %(default)s)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes; 0 = one per usable core (default %(default)s)",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder for the HDF5 files")
    p.add_argument(
        "--format",
        default=None,
        choices=_FORMATS,
        help="file format (default: fixed25 for fixed25, angle for angle51)",
    )
    p.add_argument(
        "--events-per-file", type=int, default=10000, help="showers per file (default %(default)s)"
    )
    p.add_argument("--prefix", default="showers", help="file name prefix (default %(default)s)")
    p.add_argument("--compression", type=compression_arg, default=DEFAULT_COMPRESSION, help=COMPRESSION_HELP)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the HDF5 files --out already holds, once the new ones are complete (else refuse)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress (bar on a terminal, lines in a log)"
    )
    p.add_argument("--summary-only", action="store_true", help="simulate and print statistics, write nothing")
    # simulator knobs most often varied in studies; everything else keeps the documented defaults
    p.add_argument(
        "--sampling-fraction", type=float, default=None, help="mean visible fraction (default 0.02)"
    )
    p.add_argument(
        "--radial-scale", type=float, default=None, help="multiplies transverse widths (default 1.0)"
    )
    return p


def _run(args: argparse.Namespace) -> int:
    if args.geometry not in PRESETS:
        raise ValueError(f"unknown geometry {args.geometry!r}: expected one of {sorted(PRESETS)}")
    defaults = _DEFAULTS[args.geometry]
    spec = EnergySpec.parse(args.energy if args.energy is not None else defaults["energy"])
    theta = parse_theta(args.theta if args.theta is not None else defaults["theta"])
    fmt = args.format or defaults["format"]
    if fmt == "fixed25" and args.geometry != "fixed25":
        raise ValueError(
            f"--format fixed25 stores 25x25x25 cells but --geometry {args.geometry} is "
            f"{PRESETS[args.geometry].shape}; use --format angle or calochallenge"
        )
    if fmt == "fixed25" and theta != (90.0, 90.0):
        raise ValueError(
            f"--format fixed25 stores no incident angle but --theta is {args.theta}; "
            "use --format angle or calochallenge for tilted showers"
        )
    if args.n_events < 0:
        raise ValueError(f"--n-events must be >= 0; got {args.n_events}")
    if args.events_per_file < 1:
        raise ValueError(f"--events-per-file must be >= 1; got {args.events_per_file}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 = all cores); got {args.workers}")
    if args.out is None and not args.summary_only:
        raise ValueError(
            "give --out DIR for the files, or --summary-only to print statistics without writing"
        )
    overrides = {}
    if args.sampling_fraction is not None:
        overrides["sampling_fraction"] = args.sampling_fraction
    if args.radial_scale is not None:
        overrides["radial_scale"] = args.radial_scale
    cfg = SimulatorConfig.for_geometry(args.geometry, **overrides)
    workers = args.workers or default_workers()

    stats = _Stats()
    chunk = min(args.events_per_file, default_chunk(cfg))

    def stream() -> Iterator[Showers]:
        for part in iter_simulate(
            args.n_events,
            energy=spec,
            theta_deg=theta,
            config=cfg,
            seed=args.seed,
            start=args.start,
            workers=workers,
            progress=not args.no_progress,
            chunk=chunk,
        ):
            stats.add(part)
            yield part

    t0 = time.perf_counter()
    files: list[Path] = []
    if args.summary_only:
        for _ in stream():
            pass
    else:
        from hepgan.data.formats import provenance_attrs, write_folder

        settings = {
            "simulator": cfg.describe(),
            "energy": str(spec),
            "theta_deg": list(theta),
            "start": args.start,
            "n_events": args.n_events,
            "events_per_file": args.events_per_file,
            "compression": args.compression,
        }
        files = write_folder(
            stream(),
            args.out,
            fmt=fmt,
            events_per_file=args.events_per_file,
            prefix=args.prefix,
            overwrite=args.overwrite,
            compression=args.compression,
            attrs=provenance_attrs(
                tool="hepgan-simulate",
                command=getattr(args, "command", None),
                seed=args.seed,
                geometry=args.geometry,
                settings=settings,
            ),
        )
    wall = time.perf_counter() - t0

    lo, hi = theta
    print(f"geometry           {args.geometry} {cfg.grid_geometry().shape}, format {fmt}")
    print(
        f"energy             {spec} GeV (drawn {stats.e_min:.4g} .. {stats.e_max:.4g})"
        if stats.n
        else f"energy {spec}"
    )
    print(f"theta              {lo:g}" + ("" if lo == hi else f" .. {hi:g}") + " deg")
    print(f"events             {stats.n} (seed {args.seed}, first index {args.start}, {workers} worker(s))")
    print(f"sampling fraction  mean {stats.mean_sf():.5f}, std {stats.std_sf():.5f}")
    print(f"speed              {stats.n / max(wall, 1e-9):.1f} showers/s ({wall:.1f} s)")
    if args.summary_only:
        print("files written      none (--summary-only)")
    else:
        print(f"files written      {len(files)} in {args.out} (compression {args.compression})")
        for f in files:
            print(f"  {f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hepgan-simulate``; returns the exit code (2 for a bad request, 1 for I/O errors
    and for an output folder that already holds HDF5 files without ``--overwrite``)."""
    args = _parser().parse_args(argv)
    args.command = shlex.join(["hepgan-simulate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return _run(args)
    except FileExistsError as exc:  # formats.OutputExistsError: the folder holds files already
        print(f"hepgan-simulate: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # bad spec, geometry, format/grid mismatch, invalid file contents
        print(f"hepgan-simulate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hepgan-simulate: cannot write the output: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
