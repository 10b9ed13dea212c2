"""The typed GAN training state and the static parts of the two players.

The jitted update works on pytrees only: each Flax NNX module is split once (``nnx.split``) into a static
``GraphDef`` (kept in :class:`Players`, closed over by the step) and its array state (kept in
:class:`GANState`, donated to and returned by the step). Dropout random streams are not state: the step
draws fresh keys from ``fold_in(rng, step)`` every call, so a checkpoint holds everything needed to continue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct


@struct.dataclass
class GANState:
    """Everything that changes during training, one slot per player.

    ``step``: ``[]`` int32 number of completed updates; ``rng``: ``[2]`` uint32 raw key data of the run key
    (folded with ``step`` inside the update); ``lr_scale``: ``[]`` float32 factor on both players' updates
    (lowered by ``train.on_nonfinite=rollback``); ``lr_g``/``lr_d``: ``[]`` float32 base learning rates
    (the optimizers are built for lr 1 and their updates scaled by these, so the compiled step does not
    depend on the learning rate and an lr sweep compiles once); ``g_params``/``d_params``: ``nnx.Param``
    state; ``g_batch_stats``/``d_batch_stats``: ``nnx.BatchStat`` running statistics;
    ``g_opt_state``/``d_opt_state``: optax states; ``ema_g_params``: exponential moving average of
    ``g_params`` (equal to ``g_params`` when
    the EMA is off).
    """

    step: jax.Array
    rng: jax.Array
    lr_scale: jax.Array
    lr_g: jax.Array
    lr_d: jax.Array
    g_params: Any
    g_batch_stats: Any
    d_params: Any
    d_batch_stats: Any
    g_opt_state: Any
    d_opt_state: Any
    ema_g_params: Any

    if TYPE_CHECKING:  # added by flax.struct.dataclass at runtime

        def replace(self, **changes: Any) -> GANState: ...


@dataclass(frozen=True, eq=False)
class Players:
    """Static halves of the two models and their optimizers (closed over by the jitted step, never traced).

    ``*_rngs`` are templates of the modules' random-stream state; the step replaces their keys each call.
    """

    g_graph: Any
    d_graph: Any
    g_rngs: Any
    d_rngs: Any
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation

    def generator(self, state: GANState, *, ema: bool = True, train: bool = False) -> nnx.Module:
        """Rebuild the generator from ``state`` (EMA weights when ``ema``), in eval mode unless ``train``."""
        params = state.ema_g_params if ema else state.g_params
        g = nnx.merge(self.g_graph, params, state.g_batch_stats, fresh_rngs(self.g_rngs, jax.random.key(0)))
        g.train() if train else g.eval()
        return g

    def discriminator(self, state: GANState, *, train: bool = False) -> nnx.Module:
        """Rebuild the discriminator from ``state``, in eval mode unless ``train``."""
        d = nnx.merge(
            self.d_graph, state.d_params, state.d_batch_stats, fresh_rngs(self.d_rngs, jax.random.key(0))
        )
        d.train() if train else d.eval()
        return d


def split_module(module: nnx.Module) -> tuple[Any, Any, Any, Any]:
    """``module`` -> (graphdef, params, batch_stats, rest); ``rest`` holds the random streams."""
    parts: tuple[Any, ...] = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
    return parts[0], parts[1], parts[2], parts[3]


def fresh_rngs(rngs_state: Any, key: jax.Array) -> Any:
    """A copy of a random-stream state with every key replaced by ``fold_in(key, i)`` and counts kept.

    Rebuilding the leaves inside the trace also gives ``nnx.merge`` new variables it may mutate.
    """
    leaves, treedef = jax.tree.flatten(rngs_state)
    new = [
        jax.random.fold_in(key, i) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else jnp.asarray(leaf)
        for i, leaf in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, new)


def init_state(
    generator: nnx.Module,
    discriminator: nnx.Module,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    seed: int,
    *,
    lr_g: float = 1.0,
    lr_d: float = 1.0,
) -> tuple[GANState, Players]:
    """Split freshly built models into the training state and the static players.

    ``g_tx``/``d_tx`` are built for learning rate 1 and scaled by ``lr_g``/``lr_d`` (see
    :class:`GANState`). ``seed`` gives the run key that drives noise, label flips and dropout (model
    initialisation has its own ``nnx.Rngs`` at build time).
    """
    g_graph, g_params, g_bs, g_rngs = split_module(generator)
    d_graph, d_params, d_bs, d_rngs = split_module(discriminator)
    state = GANState(
        step=jnp.zeros((), jnp.int32),
        # a stream apart from the models' nnx.Rngs(seed), which fold small counters into key(seed)
        rng=jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 0x68657067)),
        lr_scale=jnp.ones((), jnp.float32),
        lr_g=jnp.asarray(lr_g, jnp.float32),
        lr_d=jnp.asarray(lr_d, jnp.float32),
        g_params=g_params,
        g_batch_stats=g_bs,
        d_params=d_params,
        d_batch_stats=d_bs,
        g_opt_state=g_tx.init(g_params),
        d_opt_state=d_tx.init(d_params),
        ema_g_params=jax.tree.map(jnp.copy, g_params),
    )
    return state, Players(g_graph, d_graph, g_rngs, d_rngs, g_tx, d_tx)


def param_count(params: Any) -> int:
    """Number of scalar parameters in a params pytree."""
    return int(sum(x.size for x in jax.tree.leaves(params)))


BN_STATS = ("running", "recomputed")
"""BatchNorm statistics of the generator when sampling (``train.sample_bn``): the "running" averages
kept during training (Keras ``predict``), or statistics "recomputed" for the sampling weights from one
batch of their own outputs (the "standing statistics" of BigGAN, Brock et al. 2019)."""

STATS_EVENTS = 256
"""Latent vectors of the batch that :func:`recompute_bn_stats` measures the statistics on."""


def batch_norms(module: nnx.Module) -> list[nnx.BatchNorm]:
    """Every ``nnx.BatchNorm`` inside ``module`` (``nnx.iter_modules`` where flax has it)."""
    walk = getattr(nnx, "iter_modules", None)
    modules = walk(module) if walk is not None else module.iter_modules()
    return [m for _, m in modules if isinstance(m, nnx.BatchNorm)]


def recompute_bn_stats(
    g: nnx.Module, energy: np.ndarray, theta: np.ndarray, seed: int, n: int = STATS_EVENTS
) -> None:
    """Replace the running statistics of every BatchNorm of the generator ``g`` (in place) by the batch
    statistics of one train-mode pass over ``n`` latent vectors at conditions drawn from ``energy: [N]
    GeV`` and ``theta: [N] rad`` (with replacement; key ``fold_in(key(seed), 0x53544154)``), then set ``g`` to
    eval mode.

    The running averages lag behind weights that move (and belong to the raw weights, not to their EMA),
    which in short CPU runs put the sampled showers' energy scale off by up to tens of percent.
    """
    bns = batch_norms(g)
    if not bns:
        g.eval()
        return
    key = jax.random.fold_in(jax.random.key(seed), 0x53544154)
    k_pick, k_z = jax.random.split(key)
    pick = np.asarray(jax.random.randint(k_pick, (n,), 0, len(energy)))
    e = jnp.asarray(np.asarray(energy, np.float32)[pick])
    th = jnp.asarray(np.asarray(theta, np.float32)[pick])
    saved = [(bn.momentum, bn.axis_name) for bn in bns]
    for bn in bns:
        bn.momentum = 0.0  # running <- this batch's statistics
        bn.axis_name = None  # one device holds the whole batch here (no shard_map axis to sync over)
    g.train()
    g(g.latent(k_z, e, th))
    for bn, (momentum, axis_name) in zip(bns, saved, strict=True):
        bn.momentum, bn.axis_name = momentum, axis_name
    g.eval()


def generate(
    players: Players,
    state: GANState,
    energy: np.ndarray,
    theta: np.ndarray,
    *,
    batch: int,
    seed: int,
    bn_stats: str = "running",
) -> np.ndarray:
    """Generator samples ``[N, X, Y, Z]`` (network units) at ``energy: [N] GeV``, ``theta: [N] rad``.

    Uses the EMA weights in eval mode, with the BatchNorm statistics ``bn_stats`` (one of
    :data:`BN_STATS`; "recomputed": :func:`recompute_bn_stats`); chunks of ``batch`` events, the last one
    padded, so one compilation serves every chunk. Chunk ``i`` draws its noise from
    ``fold_in(key(seed), i)``.
    """
    if bn_stats not in BN_STATS:
        raise ValueError(f"train.sample_bn: unknown {bn_stats!r}; valid: {list(BN_STATS)}")
    if bn_stats == "recomputed":  # on copies: the state's own statistics stay as they are
        g = players.generator(state.replace(g_batch_stats=jax.tree.map(jnp.copy, state.g_batch_stats)))
        recompute_bn_stats(g, energy, theta, seed)
    else:
        g = players.generator(state, ema=True)

    @nnx.jit
    def sample(g: Any, key: jax.Array, e: jax.Array, th: jax.Array) -> jax.Array:
        return g(g.latent(key, e, th))

    out = []
    n = len(energy)
    for i, start in enumerate(range(0, n, batch)):
        e = np.resize(energy[start : start + batch], batch).astype(np.float32)
        th = np.resize(theta[start : start + batch], batch).astype(np.float32)
        x = sample(g, jax.random.fold_in(jax.random.key(seed), i), jnp.asarray(e), jnp.asarray(th))
        out.append(np.asarray(x)[: min(batch, n - start)])
    return np.concatenate(out)
