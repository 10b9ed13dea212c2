"""Peak resident memory of the training data path for the paper experiments' data settings.

    python experiments/data_memory/measure_rss.py [--out experiments/data_memory/rss.json] [--cache DIR]

For each paper experiment (``paper_fixed25``, ``paper_angle51``) the training set is simulated into the
on-disk cache at two reduced sizes (the full 200k sets take 12.5 GB / 52 GB of disk), then a fresh
process opens the sources as ``hepgan.train.fit`` does (``open_source`` + ``Pipeline`` with the
experiment's batch size, preprocessing and prefetch) and reads one full epoch, so every event passes
through once. It records the resident set size (``VmRSS``, split into anonymous and file-backed pages)
before the data are opened and after every batch, and ``VmHWM`` at the end. The streamed path does not
depend on ``n_events``, which the two sizes check; for contrast the larger size is also read from
memory (``data.in_memory_max_gb`` raised), the behaviour before the cache, whose growth is
``n_events * bytes_per_event``.

The held-out reference set is read whole by the trainer for validation (``n_reference`` events, 5000 in
both experiments); its memory is ``n_reference * bytes_per_event`` whichever path it takes, and is
reported as that product.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = {"paper_fixed25": (4096, 16384), "paper_angle51": (1024, 4096)}


def _status() -> dict[str, int]:
    """Current and peak resident memory of this process in bytes (Linux ``/proc/self/status``)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def _overrides(experiment: str, n: int, cache: str, streamed: bool) -> list[str]:
    return [
        f"experiment={experiment}",
        f"data.n_events={n}",
        "data.n_reference=64",  # the reference set is accounted for by its size, not read here
        f"data.cache_dir={cache}",
        f"data.in_memory_max_gb={0 if streamed else 1000}",
        "data.workers=2",
    ]


def child(steps: int, overrides: list[str]) -> dict[str, Any]:
    """Open the data as the trainer does and read ``steps`` batches (at least one epoch); resident memory
    before, during, after."""
    import jax
    import numpy as np

    from hepgan.data.pipeline import Pipeline, Preprocess
    from hepgan.data.source import open_source
    from hepgan.train.config import compose, to_config

    conf = to_config(compose(overrides))
    jax.device_put(np.zeros(1)).block_until_ready()  # the runtime's own start-up is not data memory
    before = _status()
    t0 = time.perf_counter()
    sources = open_source(conf.data)
    pipe = Pipeline(
        sources.train,
        conf.train.batch_size,
        Preprocess.from_config(conf.data, conf.model.arch),
        seed=conf.train.seed,
        shuffle=conf.data.shuffle,
        prefetch=conf.data.prefetch,
        process_index=0,
        process_count=1,
    )
    peak = before["VmRSS"]
    peak_anon = before["RssAnon"]
    steps = max(steps, pipe.steps_per_epoch)
    for _ in range(steps):
        batch = next(pipe)
        batch["ecal"].block_until_ready()
        s = _status()
        peak, peak_anon = max(peak, s["VmRSS"]), max(peak_anon, s["RssAnon"])
        del batch
    pipe.close()
    wall = time.perf_counter() - t0
    end = _status()
    return {
        "overrides": overrides,
        "n_events": len(sources.train),
        "grid": list(sources.train.grid),
        "streamed": bool(getattr(sources.train, "on_disk", False)),
        "batch_size": conf.train.batch_size,
        "prefetch": conf.data.prefetch,
        "steps": steps,
        "epochs": round(steps / pipe.steps_per_epoch, 2),
        "bytes_per_event": int((int(np.prod(sources.train.grid)) + 2) * 4),
        "rss_before_data": before["VmRSS"],
        "rss_peak": peak,
        "rss_peak_anon": peak_anon,
        "vm_hwm_end": end["VmHWM"],
        "data_rss_peak": peak - before["VmRSS"],
        "data_rss_peak_anon": peak_anon - before["RssAnon"],
        "seconds_incl_in_memory_simulation": round(wall, 1),
    }


def train_batch(experiment: str) -> int:
    """The experiment's global batch size."""
    from hepgan.train.config import compose, to_config

    return int(to_config(compose([f"experiment={experiment}"])).train.batch_size)


def main() -> int:
    """Build the caches, measure each configuration in a fresh process, write the JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).with_name("rss.json")))
    p.add_argument("--cache", default=None, help="cache folder (default: a temporary folder, removed)")
    p.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(int(args.child[0]), args.child[1:])))
        return 0

    from hepgan.data.source import open_source
    from hepgan.fileio import write_json
    from hepgan.train.config import compose, to_config

    tmp = None if args.cache else tempfile.TemporaryDirectory(prefix="hepgan-rss-")
    cache = args.cache or tmp.name  # type: ignore[union-attr]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    rows = []
    train_batch("paper_fixed25")  # imports done: the baseline below is the interpreter's, not the cache's
    start = _status()
    for experiment, sizes in SIZES.items():
        for n in sizes:
            ov = _overrides(experiment, n, cache, streamed=True)
            t0 = time.perf_counter()
            train = open_source(to_config(compose(ov)).data).train
            folder = train.prepare()  # type: ignore[attr-defined]
            build = time.perf_counter() - t0
            hwm = _status()["VmHWM"] - start["VmRSS"]  # writing the cache, this process (not its workers)
            runs = [ov] + ([_overrides(experiment, n, cache, streamed=False)] if n == sizes[-1] else [])
            # the same number of batches for every size (one epoch of the largest): the allocator's
            # steady state is then compared, not how long it had to reach it
            steps = str(max(sizes) // train_batch(experiment))
            for o in runs:
                res = subprocess.run(
                    [sys.executable, __file__, "--child", steps, *o], env=env, capture_output=True, text=True
                )
                if res.returncode:
                    print(res.stderr, file=sys.stderr)
                    return 1
                row = json.loads(res.stdout.strip().splitlines()[-1])
                row["overrides"] = [x if "cache_dir=" not in x else "data.cache_dir=CACHE" for x in o]
                row.update(
                    experiment=experiment,
                    cache_build_seconds=round(build, 1),
                    cache_build_rss_peak_so_far=hwm,
                    cache=str(Path(folder).name),
                )
                rows.append(row)
                print(
                    f"{experiment:14s} n={n:6d} {'streamed ' if row['streamed'] else 'in memory'} "
                    f"{row['epochs']:4.1f} epochs "
                    f"data RSS peak {row['data_rss_peak'] / 2**20:7.1f} MiB "
                    f"(anonymous {row['data_rss_peak_anon'] / 2**20:7.1f} MiB); cache writer so far "
                    f"{hwm / 2**20:6.1f} MiB"
                )
    write_json(args.out, {"cpu_count": os.cpu_count(), "rows": rows})
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
