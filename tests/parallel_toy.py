"""A tiny BatchNorm network and its pure data-parallel step: the stand-in of the equivalence tests.

Small enough to compile in a second, rich enough to show what the backends differ in: BatchNorm batch
statistics (global under xla, per device or synchronised under shard_map, per process under mpi),
per-worker random noise, gradient averaging and the gradient-noise-scale estimators. The same functions
run in one process (xla, shard_map) and in every process of ``mpirun`` (mpi), see :func:`main`.
Test scaffolding of tests/test_parallel_backends.py and tests/test_parallel_multihost.py, which import it
and run it as a script (``python tests/parallel_toy.py mpi|dist``) in their subprocesses.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hepgan.parallel.reduce import Reducer

Step = Callable[[dict[str, Any], dict[str, jax.Array]], tuple[dict[str, Any], dict[str, jax.Array]]]


class ToyNet(nnx.Module):
    """``x: [B, D] -> [B]``: Linear -> BatchNorm -> tanh -> Linear (``bn_axis_name``: synchronised BN)."""

    def __init__(self, d_in: int, d_hidden: int, *, rngs: nnx.Rngs, bn_axis_name: str | None = None):
        # No bias before BatchNorm: its gradient is zero up to rounding, which RMSprop would blow up to
        # full-size steps of random sign (and the backends would then differ by rounding, not semantics).
        self.l1 = nnx.Linear(d_in, d_hidden, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(d_hidden, momentum=0.9, axis_name=bn_axis_name, rngs=rngs)
        self.l2 = nnx.Linear(d_hidden, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l2(jnp.tanh(self.bn(self.l1(x))))[:, 0]


def toy_data(n: int, d_in: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed regression set: ``{"x": [n, d_in] f32, "y": [n] f32}``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    y = (np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]).astype(np.float32)
    return {"x": x, "y": y}


def init_toy(
    *, d_in: int = 6, d_hidden: int = 16, seed: int = 0, lr: float = 0.05, bn_axis_name: str | None = None
) -> tuple[Any, dict[str, Any], optax.GradientTransformation]:
    """``(graphdef, state, tx)``: the static model half, the state pytree (params, batch_stats, opt_state,
    step, rng) and the optimizer (momentum SGD: unlike RMSprop its update is proportional to the gradient,
    so a sum where a mean belongs shows)."""
    model = ToyNet(d_in, d_hidden, rngs=nnx.Rngs(seed), bn_axis_name=bn_axis_name)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)  # type: ignore[misc]
    tx = optax.sgd(lr, momentum=0.9)
    state = {
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(seed + 1)),
    }
    return graphdef, state, tx


def make_toy_step(
    graphdef: Any, tx: optax.GradientTransformation, reducer: Reducer, local_batch: int, noise: float = 0.05
) -> Step:
    """The pure update ``step(state, batch) -> (state, metrics)`` for ``batch = {"x": [b, D], "y": [b]}``
    (``b``: this worker's share). Input noise ``N(0, noise^2)`` is drawn per worker."""

    def step(
        state: dict[str, Any], batch: dict[str, jax.Array]
    ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        key = reducer.fold_in(key)
        x = batch["x"] + noise * jax.random.normal(key, batch["x"].shape)

        def loss_fn(params: Any, bs: Any) -> tuple[jax.Array, Any]:
            model = nnx.merge(graphdef, jax.tree.map(lambda a: a, params), jax.tree.map(lambda a: a, bs))
            model.train()
            loss = jnp.mean(jnp.square(model(x) - batch["y"]))
            return loss, nnx.state(model, nnx.BatchStat)

        (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            reducer.local(state["params"]), state["batch_stats"]
        )
        grads, gns = reducer.grads(grads, local_batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {
            "params": optax.apply_updates(state["params"], updates),
            # Per-worker running statistics averaged so the replicas stay identical.
            "batch_stats": reducer.mean(bs),
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        return new, {"loss": reducer.mean(loss), **gns}

    return step


def run_mpi(steps: int, global_batch: int, flat: bool) -> dict[str, Any]:
    """Train the toy under the mpi backend in this MPI process; returns final params (lists) and losses."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    local = global_batch // size
    graphdef, state, tx = init_toy()
    reducer = Reducer("mpi", workers=size, flat=flat)
    step = jax.jit(make_toy_step(graphdef, tx, reducer, local))
    data = toy_data(steps * global_batch)
    losses = []
    for i in range(steps):
        rows = slice(i * global_batch + rank * local, i * global_batch + (rank + 1) * local)
        state, m = step(state, {k: jnp.asarray(v[rows]) for k, v in data.items()})
        losses.append(float(m["loss"]))
    leaves = jax.tree.leaves({"params": state["params"], "batch_stats": state["batch_stats"]})
    return {"rank": rank, "losses": losses, "leaves": [np.asarray(a).tolist() for a in leaves]}


def local_value(x: jax.Array) -> np.ndarray:
    """This process's copy of a replicated array (also when other processes hold the other copies)."""
    return np.asarray(x.addressable_data(0))


def save_toy(directory: str, state: dict[str, Any]) -> None:
    """Write ``state`` with Orbax (every process of a multi-host run must call it)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory, state, force=True)


def restore_toy(directory: str, template: dict[str, Any]) -> dict[str, Any]:
    """Read a saved state onto the shardings of ``template`` (any device count, any process count)."""
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(directory, abstract)


def train_toy(
    par: Any,
    state: dict[str, Any],
    graphdef: Any,
    tx: optax.GradientTransformation,
    start: int,
    stop: int,
    global_batch: int,
) -> tuple[dict[str, Any], list[float]]:
    """Steps ``[start, stop)`` on the fixed toy data set (batch ``k`` = rows ``[k B, (k+1) B)``) under the
    xla or shard_map backend of ``par`` (a :class:`hepgan.parallel.Parallel`); returns state and losses."""
    from hepgan.parallel.mesh import shard_batch

    step = par.compile(make_toy_step(graphdef, tx, par.reducer, global_batch // par.reducer.workers))
    data = toy_data(stop * global_batch)
    losses = []
    for i in range(start, stop):
        rows = slice(i * global_batch, (i + 1) * global_batch)
        state, m = step(state, shard_batch({k: v[rows] for k, v in data.items()}, par.mesh))
        losses.append(float(local_value(m["loss"])))
    return state, losses


def run_distributed(a: argparse.Namespace) -> None:
    """One process of a ``jax.distributed`` run of the toy: train ``[0, mid)``, checkpoint to ``--ckpt``,
    restore into a freshly initialised state, train ``[mid, stop)``; process 0 writes the result JSON."""
    from hepgan.parallel import ParallelConfig, setup

    cfg = ParallelConfig(
        backend="xla",
        launcher="explicit",
        coordinator_address=a.coordinator,
        num_processes=a.num_processes,
        process_id=a.process_id,
        init_timeout_s=60,
    )
    par = setup(cfg)
    graphdef, state, tx = init_toy()
    state, losses = train_toy(par, par.place_state(state), graphdef, tx, 0, a.mid, a.global_batch)
    save_toy(f"{a.ckpt}/{a.mid}", state)
    del state  # resume as a restarted job would: from a fresh state and the checkpoint only
    state = restore_toy(f"{a.ckpt}/{a.mid}", par.place_state(init_toy()[1]))
    state, more = train_toy(par, state, graphdef, tx, a.mid, a.stop, a.global_batch)
    if par.is_main:
        leaves = jax.tree.leaves({"params": state["params"], "batch_stats": state["batch_stats"]})
        res = {
            "losses": losses + more,
            "leaves": [local_value(x).tolist() for x in leaves],
            "workers": par.workers,
            "process_count": par.process_count,
        }
        with open(a.out, "w") as f:
            json.dump(res, f)
    jax.distributed.shutdown()


def main(argv: list[str] | None = None) -> None:
    """``mpirun -n N python tests/parallel_toy.py mpi --out f.json`` or
    ``python tests/parallel_toy.py dist --coordinator host:port --num-processes N --process-id i ...``;
    process 0 writes the result JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["mpi", "dist"])
    p.add_argument("--steps", type=int, default=4, help="mpi: steps to train")
    p.add_argument("--mid", type=int, default=2, help="dist: checkpoint and resume after this step")
    p.add_argument("--stop", type=int, default=4, help="dist: steps in all")
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--reduce", choices=["flat", "tree", "both"], default="flat")
    p.add_argument("--coordinator", default="127.0.0.1:12345")
    p.add_argument("--num-processes", type=int, default=2)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--ckpt", default="toy_ckpt")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.mode == "dist":
        run_distributed(a)
        return
    modes = ["flat", "tree"] if a.reduce == "both" else [a.reduce]
    res = {m: run_mpi(a.steps, a.global_batch, m == "flat") for m in modes}
    if res[modes[0]]["rank"] == 0:
        with open(a.out, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
