"""The typed GAN training state and the static parts of the two players.

The jitted update works on pytrees only: each Flax NNX module is split once (``nnx.split``) into a static
``GraphDef`` (kept in :class:`Players`, closed over by the step) and its array state (kept in
:class:`GANState`, donated to and returned by the step). Dropout random streams are not state: the step
draws fresh keys from ``fold_in(rng, step)`` every call, so a checkpoint holds everything needed to continue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from hepgan.models.conv import kernel_spectra, use_kernel_spectra


@struct.dataclass
class PlayerState:
    """What changes during training for one player (the generator ``g`` or the discriminator ``d``).

    ``params``: its ``nnx.Param`` state; ``batch_stats``: its ``nnx.BatchStat`` running statistics;
    ``opt_state``: its optax state; ``lr``: ``[]`` float32 base learning rate (the optimizers are built for
    lr 1 and their updates scaled by this, so the compiled step does not depend on the learning rate and
    an lr sweep compiles once).
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    lr: jax.Array

    if TYPE_CHECKING:  # added by flax.struct.dataclass at runtime

        def replace(self, **changes: Any) -> PlayerState: ...


@struct.dataclass
class GANState:
    """Everything that changes during training: the two players and what they share.

    ``step``: ``[]`` int32 number of completed updates; ``rng``: ``[2]`` uint32 raw key data of the run key
    (folded with ``step`` inside the update); ``lr_scale``: ``[]`` float32 factor on both players' updates
    (lowered by ``train.on_nonfinite=rollback``); ``g``/``d``: the generator's and the discriminator's
    :class:`PlayerState`; ``ema_g_params``: exponential moving average of ``g.params`` (equal to
    ``g.params`` when the EMA is off).
    """

    step: jax.Array
    rng: jax.Array
    lr_scale: jax.Array
    g: PlayerState
    d: PlayerState
    ema_g_params: Any

    if TYPE_CHECKING:  # added by flax.struct.dataclass at runtime

        def replace(self, **changes: Any) -> GANState: ...


@dataclass(frozen=True, eq=False)
class Player:
    """The static half of one player: its module's graph, the template of its random-stream state (the
    step replaces the keys each call) and its optimizer. Closed over by the jitted step, never traced."""

    graph: Any
    rngs: Any
    tx: optax.GradientTransformation

    def module(self, params: Any, batch_stats: Any, key: jax.Array, *, train: bool = False) -> nnx.Module:
        """The module with these arrays and random streams keyed by ``key``, in eval mode unless ``train``.

        Rebuilding the state pytrees gives ``nnx.merge`` variables of the current trace, which BatchNorm
        may then update (inside ``grad`` too)."""
        m = nnx.merge(self.graph, _fresh(params), _fresh(batch_stats), fresh_rngs(self.rngs, key))
        m.train() if train else m.eval()
        return m


@dataclass(frozen=True, eq=False)
class Players:
    """The static halves of the generator ``g`` and the discriminator ``d``."""

    g: Player
    d: Player

    def generator(self, state: GANState, *, ema: bool = True, train: bool = False) -> nnx.Module:
        """Rebuild the generator from ``state`` (EMA weights when ``ema``), in eval mode unless ``train``."""
        params = state.ema_g_params if ema else state.g.params
        return self.g.module(params, state.g.batch_stats, jax.random.key(0), train=train)

    def discriminator(self, state: GANState, *, train: bool = False) -> nnx.Module:
        """Rebuild the discriminator from ``state``, in eval mode unless ``train``."""
        return self.d.module(state.d.params, state.d.batch_stats, jax.random.key(0), train=train)


def _fresh(tree: Any) -> Any:
    return jax.tree.map(lambda x: x, tree)


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


def _player(module: nnx.Module, tx: optax.GradientTransformation, lr: float) -> tuple[PlayerState, Player]:
    graph, params, batch_stats, rngs = split_module(module)
    state = PlayerState(params, batch_stats, tx.init(params), jnp.asarray(lr, jnp.float32))
    return state, Player(graph, rngs, tx)


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
    :class:`PlayerState`). ``seed`` gives the run key that drives noise, label flips and dropout (model
    initialisation has its own ``nnx.Rngs`` at build time).
    """
    g_state, g = _player(generator, g_tx, lr_g)
    d_state, d = _player(discriminator, d_tx, lr_d)
    state = GANState(
        step=jnp.zeros((), jnp.int32),
        # a stream apart from the models' nnx.Rngs(seed), which fold small counters into key(seed)
        rng=jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 0x68657067)),
        lr_scale=jnp.ones((), jnp.float32),
        g=g_state,
        d=d_state,
        ema_g_params=jax.tree.map(jnp.copy, g_state.params),
    )
    return state, Players(g, d)


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
    g(cast(Any, g).latent(k_z, e, th))
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
    ema: bool = True,
    first_chunk: int = 0,
    on_chunk: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Generator samples ``[N, X, Y, Z]`` (network units) at ``energy: [N] GeV``, ``theta: [N] rad``.

    Uses the EMA weights (the raw ones unless ``ema``) in eval mode, with the BatchNorm statistics
    ``bn_stats`` (one of :data:`BN_STATS`; "recomputed": :func:`recompute_bn_stats`); chunks of
    ``batch`` events, the last one padded, so one compilation serves every chunk. Chunk ``i`` draws its
    noise from ``fold_in(key(seed), first_chunk + i)`` (``first_chunk``: the number of the first chunk
    within a larger generation, so that chunk ``c`` of it can be drawn again on its own).
    ``on_chunk(k)``: called after each chunk with its ``k`` events (a progress display).
    """
    if bn_stats not in BN_STATS:
        raise ValueError(f"train.sample_bn: unknown {bn_stats!r}; valid: {list(BN_STATS)}")
    if bn_stats == "recomputed":  # on copies: the state's own statistics stay as they are
        copied = state.g.replace(batch_stats=jax.tree.map(jnp.copy, state.g.batch_stats))
        g = players.generator(state.replace(g=copied), ema=ema)
        recompute_bn_stats(g, energy, theta, seed)
    else:
        g = players.generator(state, ema=ema)

    @nnx.jit
    def sample(g: Any, spectra: Any, key: jax.Array, e: jax.Array, th: jax.Array) -> jax.Array:
        with use_kernel_spectra(spectra):
            return g(g.latent(key, e, th))

    # the weights are fixed: transform the FFT-path kernels once (none for other generators)
    ones = jnp.ones((batch,), jnp.float32)
    z = jax.eval_shape(lambda: cast(Any, g).latent(jax.random.key(0), ones, ones))
    spectra = nnx.jit(lambda g: kernel_spectra(g, z))(g)
    out = []
    n = len(energy)
    for i, start in enumerate(range(0, n, batch)):
        e = np.resize(energy[start : start + batch], batch).astype(np.float32)
        th = np.resize(theta[start : start + batch], batch).astype(np.float32)
        key = jax.random.fold_in(jax.random.key(seed), first_chunk + i)
        x = sample(g, spectra, key, jnp.asarray(e), jnp.asarray(th))
        out.append(np.asarray(x)[: min(batch, n - start)])
        if on_chunk is not None:
            on_chunk(len(out[-1]))
    return np.concatenate(out)
