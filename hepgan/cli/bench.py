"""``hepgan-bench``: run the package's benchmarks and keep their JSON results.

Each benchmark is a module under ``hepgan.bench`` exposing ``run(quick: bool) -> dict``; this entry point
only dispatches and writes ``<out>/<name>.json`` (a dash in the name written as ``_``: ``plan-startup`` ->
``plan_startup.json``). ``peers`` (hepgan against a Keras/TensorFlow peer) has options of its own and is
not part of ``all``: it needs the optional peer environment (``make peers-venv``) and runs for hours;
``hepgan-bench peers --help`` lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hepgan.bench.common import write_result

# name -> module under hepgan.bench; order is the order of `hepgan-bench all`.
BENCHMARKS: dict[str, str] = {
    "simulate": "hepgan.bench.simulate",
    "read": "hepgan.bench.read",
    "hdf5_compression": "hepgan.bench.hdf5_compression",
    "evaluate": "hepgan.bench.evaluate",
    "conv": "hepgan.bench.conv",
    "levers": "hepgan.bench.levers",
    "train": "hepgan.bench.train",
    "startup": "hepgan.bench.startup",
    "scaling": "hepgan.bench.scaling",
    "chaos": "hepgan.bench.chaos",
    "layout": "hepgan.bench.layout",
    "observe": "hepgan.bench.observe",
    "export": "hepgan.bench.export",
    "plan-startup": "hepgan.bench.plan",
}
# name -> module with a command line of its own (``main(argv) -> exit code``); not part of `all`
STANDALONE: dict[str, str] = {
    "peers": "hepgan.bench.peers",
}


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark or all of them; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in STANDALONE:
        return int(importlib.import_module(STANDALONE[argv[0]]).main(argv[1:]))
    p = argparse.ArgumentParser(prog="hepgan-bench", description=__doc__)
    p.add_argument("name", choices=[*BENCHMARKS, *STANDALONE, "all"], help="which benchmark")
    p.add_argument("--out", default="experiments/bench", help="folder for <name>.json (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = p.parse_args(argv)
    if args.name in STANDALONE:  # its options came before the name: hand on what this parser knows
        rest = ["--out", args.out, *(["--quick"] if args.quick else [])]
        return int(importlib.import_module(STANDALONE[args.name]).main(rest))
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    failed = []
    for name in names:
        try:
            mod = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            print(f"hepgan-bench: benchmark {name!r} is not available ({exc})", file=sys.stderr)
            failed.append(name)
            continue
        print(f"== {name}", flush=True)
        result = mod.run(quick=args.quick)
        path = write_result(name.replace("-", "_"), result, args.out)
        print(f"   wrote {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
