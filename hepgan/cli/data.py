"""``hepgan-data``: list, fetch, inspect, validate and convert 3DGAN shower files.

    hepgan-data list
    hepgan-data fetch NAME [--dest DIR] [--base-url URL] [--extract]
    hepgan-data info PATH...          per file: format, events, grid, energy/angle range, <ECAL/E>;
                                      then what wrote each file (provenance attributes)
    hepgan-data validate PATH...      full read with every check; exit 1 on the first bad file
    hepgan-data convert IN... OUT --format F [--events-per-file N] [--prefix P] [--geometry G] [--overwrite]
                                      [--compression none|lzf|gzip|gzip:LEVEL]
    hepgan-data cache [OVERRIDE...]   simulate a config's data into the on-disk cache, e.g.
                                      hepgan-data cache experiment=paper_fixed25 data.workers=8

PATH is a file, a directory of ``*.h5`` files or a glob. User errors (bad files, bad arguments, no
network) print one paragraph on stderr and exit non-zero, without a traceback. ``convert`` writes all
or nothing: its files appear in OUT only when every input was read; a failure removes what it wrote.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hepgan.data import fetch as fetch_mod
from hepgan.data import formats
from hepgan.data.types import Showers
from hepgan.progress import Progress, Task


@dataclass
class _Stats:
    """Running summary of showers: counts, energy/angle ranges and the mean sampling fraction."""

    n: int = 0
    e_min: float = np.inf
    e_max: float = -np.inf
    t_min: float = np.inf
    t_max: float = -np.inf
    sf_sum: float = 0.0
    grids: set[tuple[int, int, int]] = field(default_factory=set)
    formats: set[str] = field(default_factory=set)

    def add(self, s: Showers) -> None:
        self.n += len(s)
        self.e_min = min(self.e_min, float(s.energy.min()))
        self.e_max = max(self.e_max, float(s.energy.max()))
        if s.theta is not None:
            self.t_min = min(self.t_min, float(s.theta.min()))
            self.t_max = max(self.t_max, float(s.theta.max()))
        cell_sum = s.ecal.reshape(len(s), -1).sum(axis=1, dtype=np.float64)
        self.sf_sum += float((cell_sum / s.energy).sum())

    def merge(self, o: _Stats) -> None:
        self.n += o.n
        self.e_min, self.e_max = min(self.e_min, o.e_min), max(self.e_max, o.e_max)
        self.t_min, self.t_max = min(self.t_min, o.t_min), max(self.t_max, o.t_max)
        self.sf_sum += o.sf_sum
        self.grids |= o.grids
        self.formats |= o.formats

    def cells(self) -> list[str]:
        grid = ",".join("x".join(map(str, g)) for g in sorted(self.grids))
        angle = (
            "-" if self.t_min > self.t_max else f"{np.degrees(self.t_min):.1f}-{np.degrees(self.t_max):.1f}"
        )
        sf = self.sf_sum / self.n if self.n else float("nan")
        return [
            ",".join(sorted(self.formats)),
            str(self.n),
            grid,
            f"{self.e_min:.4g}-{self.e_max:.4g}",
            angle,
            f"{sf:.5f}",
        ]


_HEADER = ["file", "format", "events", "grid", "E [GeV]", "theta [deg]", "<ECAL/E>"]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_info(args: argparse.Namespace) -> int:
    """Summarise each file, then the total."""
    rows = [_HEADER]
    total = _Stats()
    paths = formats.expand_paths(args.paths)
    for path in paths:
        st = _Stats()
        with formats.ShowerFile(path, geometry=args.geometry) as f:
            st.grids.add(f.grid)
            st.formats.add(f.format)
            for start in range(0, len(f), args.chunk):
                st.add(f.read(start, min(len(f), start + args.chunk)))
        rows.append([str(path), *st.cells()])
        total.merge(st)
    rows.append([f"total ({len(paths)} files)", *total.cells()])
    print(_table(rows))
    provs = [(p, formats.file_provenance(p)) for p in paths]
    if any(prov for _, prov in provs):
        print("provenance")
        for path, prov in provs:
            print(f"  {path}: {_provenance_line(prov) if prov else '-'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Read every event of every file with all checks on."""
    paths = formats.expand_paths(args.paths)
    for path in paths:
        with formats.ShowerFile(path, geometry=args.geometry) as f:
            for start in range(0, len(f), args.chunk):
                f.read(start, min(len(f), start + args.chunk))
            print(f"ok  {path}  ({f.format}, {len(f)} events, grid {'x'.join(map(str, f.grid))})")
    print(f"all {len(paths)} files valid")
    return 0


class _ConvertFailed(ValueError):
    """A conversion that stopped part-way; its partial output has been removed."""


def cmd_convert(args: argparse.Namespace) -> int:
    """Rewrite showers in another format (or re-split them), streaming; all or nothing. Progress: the
    showers and files written (a bar on a terminal, a ``[hepgan] convert`` line every 30 s in a log)."""
    with Progress("convert", enabled=not getattr(args, "quiet", False)) as progress:
        return _convert(args, progress)


def _events_in(args: argparse.Namespace) -> int | None:
    """The inputs' events from their metadata (None when a file cannot be scanned: reading it says why)."""
    try:
        return sum(info.n_events for info in formats.scan(args.inputs, geometry=args.geometry))
    except (formats.ShowerFileError, ValueError, OSError):
        return None


def _counted(chunks: Iterator[Showers], task: Task, events_per_file: int) -> Iterator[Showers]:
    """``chunks``, counting each one on ``task`` once the writer asks for the next (and the last at the
    end), with the files begun so far."""
    done = 0
    for part in chunks:
        yield part
        done += len(part)
        task.update(done, files=-(-done // events_per_file))


def _convert(args: argparse.Namespace, progress: Progress) -> int:
    if args.events_per_file < 1:
        raise ValueError(f"--events-per-file must be >= 1; got {args.events_per_file}")
    chunks = formats.iter_showers(args.inputs, chunk=args.chunk, geometry=args.geometry)
    task = progress.task(total=_events_in(args), unit="showers")
    chunks = _counted(chunks, task, args.events_per_file)
    try:
        attrs = _convert_provenance(args)
        paths = formats.write_folder(
            chunks,
            args.out,
            fmt=args.format,
            events_per_file=args.events_per_file,
            prefix=args.prefix,
            compression=args.compression,
            overwrite=args.overwrite,
            attrs=attrs,
        )
    except formats.OutputExistsError:
        raise
    except (formats.ShowerFileError, ValueError, OSError) as exc:
        raise _ConvertFailed(
            f"{exc}. Nothing was written to {args.out}: the files converted before the error were removed"
        ) from exc
    task.close()
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} files in format {args.format}")
    return 0


def _convert_provenance(args: argparse.Namespace) -> dict[str, Any]:
    """The provenance attributes of converted files: the command, the inputs and what the first input
    with provenance records; the seed and geometry when every input agrees on them."""
    inputs = formats.expand_paths(args.inputs)
    provs = [formats.file_provenance(p) for p in inputs]
    seeds = {p.get("seed") for p in provs}
    geometries = {p.get("geometry") for p in provs}
    settings = {
        "inputs": [str(p) for p in inputs[:100]],  # enough to trace a set, small enough for an attribute
        "n_inputs": len(inputs),
        "input_provenance": next((p for p in provs if p), {}),
        "format": args.format,
        "compression": args.compression,
    }
    return formats.provenance_attrs(
        tool="hepgan-data convert",
        command=getattr(args, "command", None),
        seed=seeds.pop() if len(seeds) == 1 else None,
        geometry=geometries.pop() if len(geometries) == 1 else None,
        settings=settings,
    )


def _provenance_line(prov: dict[str, Any]) -> str:
    """One line summarising ``formats.file_provenance`` of a file."""
    keys = ("tool", "version", "created_utc", "seed", "geometry", "compression", "step")
    parts = [f"{k} {prov[k]}" for k in keys if prov.get(k) is not None]
    if "run_dir" in prov:
        parts.append(f"run {Path(str(prov['run_dir'])).name}")
    return ", ".join(parts)


def cmd_cache(args: argparse.Namespace) -> int:
    """Simulate the training and reference sets of a training config into the on-disk cache."""
    # Lazy: composing the training config loads the model room (JAX); the other commands stay light.
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from hepgan.data.source import SimulatedSource, open_source
    from hepgan.train.config import compose, to_config

    try:
        data = to_config(compose(args.overrides)).data
    except (HydraException, OmegaConfBaseException) as exc:
        raise ValueError(f"cannot compose the config from {args.overrides}: {exc}") from None
    if data.kind != "simulated":
        raise ValueError(
            f"data.kind is {data.kind!r}: only simulated data (data.kind=simulated) are cached; "
            "file data are read where they are"
        )
    sources = open_source(data)
    for name, src in (("train", sources.train), ("reference", sources.reference)):
        assert isinstance(src, SimulatedSource)
        size = f"{len(src)} events, {len(src) * (int(np.prod(src.grid)) + 2) * 4 / 1e9:.2f} GB"
        if not src.on_disk:
            print(
                f"{name:<9}  {size}: kept in memory (data.in_memory_max_gb={data.in_memory_max_gb}), "
                "not cached"
            )
            continue
        src.progress = not args.quiet
        print(f"{name:<9}  {size}: {src.prepare()}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the data sets of the manifest."""
    for name, ds in fetch_mod.load_manifest(args.manifest).items():
        if ds.files:
            size = sum(f.size or 0 for f in ds.files)
            files = f"{len(ds.files)} files, {size / 1e9:.2f} GB"
        elif ds.listing_url:
            files = "file list read at fetch time"
        else:
            files = "mirror only (--base-url)"
        print(f"{name}\n    {ds.description}\n    [{files}] {ds.source[0] if ds.source else ''}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download and verify one data set."""
    paths = fetch_mod.fetch(
        args.name,
        args.dest,
        base_url=args.base_url,
        manifest=args.manifest,
        timeout=args.timeout,
        extract=args.extract,
        progress=not args.quiet,
    )
    for p in paths:
        print(p)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hepgan-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def reading(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--geometry",
            type=_geometry,
            default=None,
            help="cell grid of CaloChallenge files without a 'grid' attribute: fixed25, angle51 or X,Y,Z",
        )
        sp.add_argument("--chunk", type=int, default=1000, help="events read at a time (default %(default)s)")

    sp = sub.add_parser("list", help="known public data sets")
    sp.add_argument("--manifest", default=None, help="another manifest JSON")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("fetch", help="download and verify a public data set")
    sp.add_argument("name")
    sp.add_argument("--dest", default="data", help="folder; files go to DEST/NAME (default %(default)s)")
    sp.add_argument("--base-url", default=None, help=f"mirror root (else ${fetch_mod.BASE_URL_ENV})")
    sp.add_argument("--manifest", default=None, help="another manifest JSON")
    sp.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation")
    sp.add_argument("--extract", action="store_true", help="unpack .tar/.tgz/.zip files after download")
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.set_defaults(func=cmd_fetch)

    sp = sub.add_parser("info", help="summary per file and in total")
    sp.add_argument("paths", nargs="+")
    reading(sp)
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("validate", help="read everything with all checks; exit 1 on a bad file")
    sp.add_argument("paths", nargs="+")
    reading(sp)
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("convert", help="rewrite files in another format")
    sp.add_argument("inputs", nargs="+", help="input files, directories or globs")
    sp.add_argument("out", help="output directory")
    sp.add_argument("--format", required=True, choices=formats.FORMATS)
    sp.add_argument("--events-per-file", type=int, default=10000)
    sp.add_argument("--prefix", default="showers")
    sp.add_argument(
        "--compression",
        type=formats.compression_arg,
        default=formats.DEFAULT_COMPRESSION,
        help=formats.COMPRESSION_HELP,
    )
    sp.add_argument(
        "--overwrite", action="store_true", help="replace the HDF5 files OUT already holds (else refuse)"
    )
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    reading(sp)
    sp.set_defaults(func=cmd_convert)

    sp = sub.add_parser(
        "cache",
        help="simulate a training config's data into the on-disk cache (once, before a campaign)",
        description="Compose the training config with OVERRIDEs (as for hepgan-train) and write its "
        "simulated training and reference sets into the cache folder (data.cache_dir, else "
        "$HEPGAN_DATA_CACHE, else ~/.cache/hepgan/simulated). Sets already there are not simulated again.",
    )
    sp.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. experiment=paper_angle51 data.workers=8"
    )
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.set_defaults(func=cmd_cache)
    return p


def _geometry(text: str) -> str | tuple[int, int, int]:
    if "," in text:
        parts = text.split(",")
        if len(parts) != 3 or not all(x.strip().isdigit() for x in parts):
            raise argparse.ArgumentTypeError(f"expected X,Y,Z (three integers); got {text!r}")
        return tuple(int(x) for x in parts)  # type: ignore[return-value]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hepgan-data``; returns the exit code."""
    args = _parser().parse_args(argv)
    args.command = shlex.join(["hepgan-data", *(sys.argv[1:] if argv is None else argv)])
    try:
        if getattr(args, "geometry", None) is not None:
            formats.grid_of(args.geometry)  # reject an unknown preset before reading anything
        return int(args.func(args))
    except (formats.ShowerFileError, fetch_mod.FetchError, ValueError, OSError) as exc:
        print(f"hepgan-data {args.cmd}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hepgan-data {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
