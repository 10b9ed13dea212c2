"""hepgan's side of ``hepgan-bench peers``: the paper update and generator behind a line protocol.

``python -m hepgan.bench.peers_worker --arch fixed25|angle51 --batch N --layout one_process|per_core|mpi
[--size paper]`` (the ``mpi`` layout under ``mpirun -n K``) speaks the protocol of the Keras peer
(``hepgan/bench/peers_keras.py``), one JSON object per line, so that the driver
(:mod:`hepgan.bench.peers`) treats both sides alike:

- on start: ``{"ready": true, "framework": str, "onednn": false, "threads": int, "workers": int,
  "layout": str, "backend": str, "params": {"g": int, "d": int}, "passes": {"g_forward": int,
  "d_updates": int, "g_updates": int}}``;
- ``{"op": "train", "n": k}`` -> ``{"seconds": [k floats]}``: wall time of each of ``k`` full training
  iterations on one global batch of ``N`` showers;
- ``{"op": "generate", "n": k}`` -> ``{"seconds": [k floats]}``: wall time of each of ``k`` generator
  calls producing ``N`` showers;
- ``{"op": "quit"}``; a failure answers ``{"error": str}``.

The run is assembled by :func:`hepgan.train.run.build_run` from ``experiment=paper_<arch>`` with
``model.conv_impl=auto`` and ``train.batch_size=N``: the paper update exactly as training runs it (its
reduction backend, BatchNorm synchronisation and gradient-noise-scale bookkeeping included). One random
batch in memory goes through the trainer's input pipeline once, which places it as the backend expects
(sharded over the mesh, or this process's share under mpi); every iteration then steps on that resident
batch, so the figures are compute, not input.

Layouts: ``one_process``: one JAX CPU device on all cores (``parallel.cpu_layout=shared``, backend
``xla``); ``per_core``: one single-threaded device per core in this process (``parallel.cpu_layout=
per_core``, backend ``auto`` = ``shard_map`` with global-batch BatchNorm); ``mpi``: one single-threaded
process per core (``parallel=mpi``). Generation splits the batch over the layout's workers (each device
or rank draws its share), as data-parallel generation on that layout would.

``params`` counts the players' trainable parameters (``state.g.params``, ``state.d.params``; BatchNorm
running statistics are state, not parameters). ``passes`` is counted while tracing the compiled step:
generator inference passes for the discriminator's fakes (``g_forward``) and each player's optimizer
updates, cross-checked against :attr:`hepgan.train.run.Run.updates_per_step`.

Under mpi, rank 0 reads the commands and hands each to the other ranks; every rank runs it, only rank 0
answers. Waiting ranks poll with sleeps, so a worker waiting for its next command leaves the machine idle
(a blocking MPI broadcast would spin a core each).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO, Any

LAYOUTS = ("one_process", "per_core", "mpi")
ARCHS = ("fixed25", "angle51")
# The experiments' ranges: fixed25 10-500 GeV at normal incidence; angle51 2-500 GeV at 60-120 degrees.
ENERGY_GEV = {"fixed25": (10.0, 500.0), "angle51": (2.0, 500.0)}
THETA_RAD = (1.0472, 2.0944)
_CMD_BYTES = 4096  # room for one command line handed from rank 0 to the other ranks


def overrides(arch: str, batch: int, layout: str, size: str = "paper") -> list[str]:
    """The config overrides of one benchmark run: the paper experiment of ``arch`` at global batch
    ``batch`` on ``layout`` (one of :data:`LAYOUTS`), model ``size`` (``paper``; ``tiny`` for tests).
    Raises ``ValueError`` for an unknown arch or layout."""
    if arch not in ARCHS:
        raise ValueError(f"peers worker: unknown arch {arch!r}; valid: {list(ARCHS)}")
    per_layout = {
        "one_process": ["parallel.backend=xla", "parallel.cpu_layout=shared", "parallel.launcher=none"],
        "per_core": ["parallel.backend=auto", "parallel.cpu_layout=per_core", "parallel.launcher=none"],
        "mpi": ["parallel=mpi", "parallel.cpu_layout=per_core"],
    }
    if layout not in per_layout:
        raise ValueError(f"peers worker: unknown layout {layout!r}; valid: {list(LAYOUTS)}")
    return [
        f"experiment=paper_{arch}",
        f"model.size={size}",
        "model.conv_impl=auto",
        f"train.batch_size={batch}",
        "data.prefetch=0",  # no reader thread beside the timed calls
        # a fixed run directory, so that mpi ranks need not agree on a default one; nothing is written
        "out=runs/peers-bench",
        *per_layout[layout],
    ]


@contextlib.contextmanager
def counting(cls: type, names: tuple[str, ...]) -> Iterator[Counter[str]]:
    """Count calls of the methods ``names`` of ``cls`` while the context is open (restored after)."""
    counts: Counter[str] = Counter()
    saved = {name: cls.__dict__[name] for name in names}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)

        return counted

    try:
        for name, fn in saved.items():
            setattr(cls, name, wrap(name, fn))
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)


def count_passes(
    step: Callable[..., Any], state: Any, batch: Any, updates_per_step: dict[str, int]
) -> dict[str, int]:
    """Passes of one training iteration, counted by tracing ``step(state, batch)`` (nothing runs):
    ``g_forward`` (generator inference calls for the discriminator's fakes), ``d_updates`` and
    ``g_updates`` (optimizer updates). Raises ``RuntimeError`` when the traced counts disagree with
    ``updates_per_step`` (the run's own account, :attr:`hepgan.train.run.Run.updates_per_step`), or when
    the step was traced before (nothing would be counted)."""
    import jax

    from hepgan.train.step import GANUpdate

    with counting(GANUpdate, ("fakes", "d_update", "g_update")) as c:
        jax.eval_shape(step, state, batch)
    passes = {"g_forward": c["fakes"], "d_updates": c["d_update"], "g_updates": c["g_update"]}
    if passes["d_updates"] == 0:
        raise RuntimeError("peers worker: the step was traced before its passes could be counted")
    if (passes["d_updates"], passes["g_updates"]) != (updates_per_step["d"], updates_per_step["g"]):
        raise RuntimeError(
            f"peers worker: the traced step makes {passes['d_updates']} discriminator and "
            f"{passes['g_updates']} generator updates, the run's schedule says {updates_per_step}"
        )
    return passes


class Bench:
    """One assembled run and its timed calls (every process of an mpi layout holds one)."""

    def __init__(self, arch: str, batch: int, layout: str, size: str = "paper") -> None:
        import jax
        import numpy as np

        from hepgan.data.geometry import get_geometry
        from hepgan.data.source import ArraySource, Sources
        from hepgan.data.types import Showers
        from hepgan.parallel.cpu import usable_cores
        from hepgan.train.config import compose
        from hepgan.train.run import build_run
        from hepgan.train.state import param_count

        self.arch, self.batch, self.layout = arch, batch, layout
        rng = np.random.default_rng(0)
        lo, hi = ENERGY_GEV[arch]
        showers = Showers(
            ecal=rng.gamma(0.3, 0.02, size=(batch, *get_geometry(arch).shape)).astype(np.float32),
            energy=rng.uniform(lo, hi, size=batch).astype(np.float32),
            theta=rng.uniform(*THETA_RAD, size=batch).astype(np.float32) if arch == "angle51" else None,
        )
        # build_run sets up the layout (XLA flags, mesh, MPI) before any other JAX computation
        run = build_run(
            compose(overrides(arch, batch, layout, size)),
            sources=Sources(ArraySource(showers), ArraySource(showers)),
            total_steps=1000,
        )
        assert run.parallel is not None and run.pipeline is not None
        self.run, self.par = run, run.parallel
        self.batch_data = next(run.pipeline)  # placed as the backend expects; reused every iteration
        run.pipeline.close()
        self.passes = count_passes(run.step, run.state, self.batch_data, run.updates_per_step)
        self.params = {"g": param_count(run.state.g.params), "d": param_count(run.state.d.params)}
        self.state = run.state
        self.workers = self.par.workers
        self.threads = usable_cores() if layout == "one_process" else self.workers
        self._generate = self._generator(np.random.default_rng(1))
        self._jax = jax

    def _generator(self, rng: Any) -> Callable[[], Any]:
        """A call that makes one global batch of showers with the layout's workers (each its share)."""
        import jax
        import jax.numpy as jnp
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        from hepgan.parallel.mesh import AXIS

        players, par = self.run.players, self.par
        local = self.batch // par.process_count
        lo, hi = ENERGY_GEV[self.arch]
        energy = rng.uniform(lo, hi, local).astype("float32")
        theta = rng.uniform(*THETA_RAD, local).astype("float32")

        def sample(
            params: Any, bs: Any, spectra: Any, key: jax.Array, e: jax.Array, th: jax.Array
        ) -> jax.Array:
            g: Any = players.g.module(params, bs, jax.random.key(0))  # eval: running statistics
            return g.sample(key, e, th, spectra)

        # Sampling with fixed weights: the kernels are transformed once, as hepgan's own sampling does
        s = self.state
        g_fixed: Any = players.g.module(s.ema_g_params, s.g.batch_stats, jax.random.key(0))
        spectra = g_fixed.kernel_spectra(local // par.workers if par.backend == "shard_map" else local)

        key = jax.random.key(par.process_index)
        if par.backend == "shard_map":

            def per_device(
                params: Any, bs: Any, sp: Any, key: jax.Array, e: jax.Array, th: jax.Array
            ) -> jax.Array:
                return sample(params, bs, sp, jax.random.fold_in(key, jax.lax.axis_index(AXIS)), e, th)

            fn = jax.jit(
                jax.shard_map(
                    per_device,
                    mesh=par.mesh,
                    in_specs=(P(), P(), P(), P(), P(AXIS), P(AXIS)),
                    out_specs=P(AXIS),
                )
            )
            shard = NamedSharding(par.mesh, P(AXIS))
            e, th = jax.device_put(energy, shard), jax.device_put(theta, shard)
        else:
            fn = jax.jit(sample)
            e, th = jnp.asarray(energy), jnp.asarray(theta)

        def call() -> Any:
            s = self.state
            return fn(s.ema_g_params, s.g.batch_stats, spectra, key, e, th)

        return call

    def ready(self) -> dict[str, Any]:
        """The protocol's start message (see the module docstring)."""
        import flax
        import jax

        return {
            "ready": True,
            "framework": f"jax {jax.__version__} / flax {flax.__version__}",
            "onednn": False,
            "threads": self.threads,
            "workers": self.workers,
            "layout": self.layout,
            "backend": self.par.backend,
            "params": self.params,
            "passes": self.passes,
        }

    def _timed(self, fn: Callable[[], Any], n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self._jax.block_until_ready(fn())
            self.par.barrier()  # mpi: the slowest rank's time
            times.append(time.perf_counter() - t0)
        return times

    def train_once(self) -> Any:
        """One full training iteration on the resident batch (the state is donated and replaced)."""
        self.state, metrics = self.run.step(self.state, self.batch_data)
        return self.state, metrics

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Answer one protocol command other than ``quit``."""
        op, n = cmd.get("op"), int(cmd.get("n", 1))
        if n < 1:
            return {"error": f"n must be at least 1; got {n}"}
        if op == "train":
            return {"seconds": self._timed(self.train_once, n)}
        if op == "generate":
            return {"seconds": self._timed(self._generate, n)}
        return {"error": f"unknown op {op!r}; valid: train, generate, quit"}


class _Channel:
    """Command lines from stdin (rank 0) handed to every rank; answers written by rank 0 only."""

    def __init__(self, out: IO[str], mpi: bool) -> None:
        self.out = out
        self.comm: Any = None
        self.rank = 0
        if mpi:
            from mpi4py import MPI

            self.comm = MPI.COMM_WORLD
            self.rank = self.comm.Get_rank()

    def send(self, msg: dict[str, Any]) -> None:
        if self.rank == 0:
            self.out.write(json.dumps(msg) + "\n")
            self.out.flush()

    def receive(self) -> str:
        line = sys.stdin.readline() if self.rank == 0 else ""
        if self.comm is None or self.comm.Get_size() == 1:
            return line
        import numpy as np

        buf = np.zeros(_CMD_BYTES, np.uint8)
        if self.rank == 0:
            raw = (line or '{"op": "quit"}').encode()[: _CMD_BYTES - 1]
            buf[: len(raw)] = np.frombuffer(raw, np.uint8)
        req = self.comm.Ibcast(buf, root=0)
        while not req.Test():
            time.sleep(0.005)
        return line if self.rank == 0 else bytes(buf).rstrip(b"\0").decode()


def serve(a: argparse.Namespace, out: IO[str]) -> int:
    """Build the run, announce it, answer commands until ``quit`` or end of input; the exit code."""
    channel = _Channel(out, a.layout == "mpi")
    try:
        bench = Bench(a.arch, a.batch, a.layout, a.size)
    except Exception as exc:
        traceback.print_exc()
        channel.send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    channel.send(bench.ready())
    while True:
        line = channel.receive()
        if not line.strip():
            if channel.rank == 0 and line == "":  # end of input
                return 0
            continue
        try:
            cmd = json.loads(line)
        except json.JSONDecodeError as exc:
            channel.send({"error": f"not a JSON command: {exc}"})
            continue
        if cmd.get("op") == "quit":
            return 0
        try:
            channel.send(bench.command(cmd))
        except Exception as exc:
            traceback.print_exc()
            channel.send({"error": f"{type(exc).__name__}: {exc}"})


def main(argv: list[str] | None = None) -> int:
    """``python -m hepgan.bench.peers_worker --arch A --batch N --layout L [--size S]``; the exit code."""
    p = argparse.ArgumentParser(prog="hepgan.bench.peers_worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--batch", type=int, required=True, help="global batch (showers per call)")
    p.add_argument("--layout", choices=LAYOUTS, required=True)
    p.add_argument("--size", default="paper", help="model size preset (paper; tiny for tests)")
    a = p.parse_args(argv)
    # The protocol owns stdout: anything else that prints (libraries, XLA) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(a, out)


if __name__ == "__main__":
    sys.exit(main())
