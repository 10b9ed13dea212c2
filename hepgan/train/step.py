"""The GAN update: a pure function ``step(state, batch) -> (state, metrics)``.

Built once per run by :func:`make_step` and jitted by the trainer with the state donated. All randomness
(latent noise, sampled energies, label flips, dropout) comes from ``fold_in(state.rng, state.step)``, so
an update depends only on its inputs and a resumed run repeats an uninterrupted one bit for bit.

Schedules (``train.schedule``):

- ``paper`` (default, the Keras 3DGAN loop): the discriminator takes one optimizer step on a real batch,
  then one on a fake batch (two updates, as two ``train_on_batch`` calls), then the generator takes
  ``g_steps`` (2) steps through the frozen discriminator, each with fresh noise.
- ``n_critic``: ``n_critic`` discriminator steps, each on the summed real + fake loss with fresh fakes,
  then ``g_steps`` generator steps.
- ``simultaneous``: both players' gradients at the current parameters, one step each.

BatchNorm, as in the Keras code: the discriminator runs in train mode (batch statistics) in all its
evaluations, its running statistics updated by its own steps and left alone in the generator's steps (the
discriminator is frozen inside the Keras ``combined`` model). Fakes for the discriminator's steps come
from the generator in inference mode (Keras ``generator.predict`` uses the running statistics; set
``fake_bn="batch"`` for batch statistics); in its own steps the generator runs in train mode and updates
its running statistics.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hepgan.cells import undo_power
from hepgan.parallel.reduce import Reducer
from hepgan.train.losses import ADV_LOSSES, PAPER_WEIGHTS, TERMS, gan_loss
from hepgan.train.state import GANState, Player, Players, PlayerState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

SCHEDULES = ("paper", "n_critic", "simultaneous")
FAKE_BN = ("running", "batch")
D_BATCH = ("separate", "joint")
"""How the discriminator's BatchNorm sees real and fake showers (``train.d_batch``): "separate" batches
(the Keras loop: each ``train_on_batch`` call normalises its all-real or all-fake batch by its own
statistics, so a feature that differs between the two sets by a constant factor, such as the energy
scale, is normalised away), or "joint": one evaluation of the concatenated real and fake batch, in the
discriminator's updates and, with a real batch beside the fakes, in the generator's."""


@dataclass(frozen=True)
class StepConfig:
    """Static settings of the update (hashable; changing one means a new compiled step).

    ``arch``: "fixed25" | "angle51" (chooses the loss terms); ``weights``: loss weights in the order of
    :data:`hepgan.train.losses.TERMS` (None = the paper's); ``label_flip``: probability of flipping each
    real/fake label of the discriminator; ``fake_energy_range``: fixed25 only, (lo, hi) in E/100 units from
    which the fakes' energies are drawn uniformly, as the Keras loop (``uniform(0.1, 5)``), or None to
    reuse the real batch's energies; ``cell_power``: the preprocessing power, undone for the ECAL-sum
    target; ``ema_decay``: generator EMA decay (0 = off); ``aux_scale``: factor on every loss term but
    the real/fake BCE (energy, ECAL sum, angle) when ``weights`` is None (1 = the paper's weights);
    ``adv_loss``: the real/fake loss, one of :data:`hepgan.train.losses.ADV_LOSSES` ("bce" = the paper);
    ``d_batch``: :data:`D_BATCH` ("separate" = the paper; "joint" needs schedule n_critic or simultaneous);
    ``layer_stats``: also return per-layer norms (see :func:`layer_norms`; metrics ``layer/...``).
    """

    arch: str = "fixed25"
    schedule: str = "paper"
    n_critic: int = 5
    g_steps: int = 2
    label_flip: float = 0.05
    weights: tuple[float, ...] | None = None
    fake_energy_range: tuple[float, float] | None = (0.1, 5.0)
    cell_power: float = 1.0
    ema_decay: float = 0.999
    fake_bn: str = "running"
    aux_scale: float = 1.0
    adv_loss: str = "bce"
    d_batch: str = "separate"
    layer_stats: bool = False

    @classmethod
    def from_train(cls, train: Any, *, arch: str, cell_power: float, layer_stats: bool = False) -> StepConfig:
        """The step settings of a run: ``train`` a ``TrainConfig`` (the ``train`` group), ``arch`` the
        model's architecture, ``cell_power`` the preprocessing's power, ``layer_stats`` whether the step
        returns per-layer norms (``logging.layer_stats_every > 0``). The one place that maps the config
        onto the step, for the trainer and for everything that must measure the same update."""
        return cls(
            layer_stats=layer_stats,
            arch=arch,
            schedule=train.schedule,
            n_critic=train.n_critic,
            g_steps=train.g_steps,
            label_flip=train.label_flip,
            weights=None if train.loss_weights is None else tuple(train.loss_weights),
            aux_scale=train.aux_loss_scale,
            adv_loss=train.adv_loss,
            d_batch=train.d_batch,
            fake_energy_range=None if train.fake_energy_range is None else tuple(train.fake_energy_range),
            cell_power=cell_power,
            ema_decay=train.ema_decay,
            fake_bn=train.fake_bn,
        )

    def loss_weights(self) -> dict[str, float]:
        """Loss term name -> weight for this architecture."""
        if self.arch not in TERMS:
            raise ValueError(f"train: unknown arch {self.arch!r}; valid: {sorted(TERMS)}")
        if self.weights is not None:
            w = self.weights
        else:  # the paper's weights, the auxiliary (non-adversarial) terms scaled by aux_scale
            w = tuple(
                x if t == "bce" else x * self.aux_scale
                for t, x in zip(TERMS[self.arch], PAPER_WEIGHTS[self.arch], strict=True)
            )
        if len(w) != len(TERMS[self.arch]):
            raise ValueError(
                f"train.loss_weights: {self.arch} needs {len(TERMS[self.arch])} weights for "
                f"{list(TERMS[self.arch])}, got {list(w)}"
            )
        return dict(zip(TERMS[self.arch], (float(x) for x in w), strict=True))


def ecal_sum(cells: jax.Array, cell_power: float) -> jax.Array:
    """Cell sum after undoing the power transform: ``cells: [B, X, Y, Z]`` preprocessed -> ``[B]``."""
    return jnp.sum(undo_power(cells, cell_power), axis=(1, 2, 3))


def _flip(key: jax.Array, labels: jax.Array, p: float) -> jax.Array:
    if p <= 0.0:
        return labels
    return jnp.where(jax.random.uniform(key, labels.shape) < p, 1.0 - labels, labels)


def _norm(tree: Any) -> jax.Array:
    return optax.tree.norm(tree)


LAYER_PREFIX = "layer/"
"""Metric names of the per-layer norms: ``layer/{g|d}/{layer}/{weight|grad|update}``."""


def layer_norms(tree: Any) -> dict[str, jax.Array]:
    """L2 norm of each layer of a parameter tree: ``{layer: scalar}``, a layer being the top-level name
    of the tree (``dense``, ``conv1``, ``bn1``, ``head_logit``: one Flax submodule's arrays together)."""
    groups: dict[str, list[jax.Array]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        first = path[0]
        name = str(getattr(first, "key", getattr(first, "name", getattr(first, "idx", first))))
        groups.setdefault(name, []).append(jnp.sum(jnp.square(leaf.astype(jnp.float32))))
    return {k: jnp.sqrt(sum(v[1:], v[0])) for k, v in groups.items()}


class _Part(NamedTuple):
    """One batch the discriminator is scored on: its name ("real"/"fake"), cells ``[B,X,Y,Z]``, labels
    ``[B]`` and conditions (energy ``[B]`` E/100, theta ``[B]`` rad, ECAL-sum target ``[B]``)."""

    name: str
    x: jax.Array
    label: jax.Array
    energy: jax.Array
    theta: jax.Array
    ecal: jax.Array


class _Stepped(NamedTuple):
    """What one optimizer step of one player reports: scalar metrics (losses and loss terms), the norm
    of its reduced gradient and the gradient-noise-scale estimators (empty on one worker)."""

    metrics: Metrics
    grad_norm: jax.Array
    gns: Metrics
    layer_grad: dict[str, jax.Array] | None = None  # per-layer gradient norms (StepConfig.layer_stats)


def _validate(cfg: StepConfig) -> None:
    for value, valid, key in (
        (cfg.schedule, SCHEDULES, "schedule"),
        (cfg.adv_loss, ADV_LOSSES, "adv_loss"),
        (cfg.d_batch, D_BATCH, "d_batch"),
        (cfg.fake_bn, FAKE_BN, "fake_bn"),
    ):
        if value not in valid:
            raise ValueError(f"train.{key}: unknown {value!r}; valid: {list(valid)}")
    if cfg.d_batch == "joint" and cfg.schedule == "paper":
        raise ValueError(
            "train.d_batch=joint needs train.schedule=n_critic or simultaneous: the paper schedule updates "
            "the discriminator on a real and a fake batch one after the other"
        )


def make_step(
    players: Players, cfg: StepConfig, reducer: Reducer | None = None
) -> Callable[[GANState, Batch], tuple[GANState, Metrics]]:
    """Build the pure update for ``players`` (see the module docstring for the schedules).

    ``reducer`` (:class:`hepgan.parallel.Reducer`, default: none needed) is how a per-device step agrees
    with the other data-parallel workers: gradients, BatchNorm statistics and metrics are averaged with
    it, and the step key is folded with the worker index. Under ``shard_map``/``mpi`` the step sees the
    worker's share of the batch and also returns the gradient-noise-scale estimators
    ``{d,g}_gns_g2``/``{d,g}_gns_s`` (McCandlish et al.; see :mod:`hepgan.parallel.reduce`).

    The returned ``step(state, batch)`` takes ``batch = {"ecal": [B,X,Y,Z] preprocessed cells,
    "energy": [B] E/100, "theta": [B] rad}`` and returns the new state and scalar metrics: per-player
    losses and loss terms, mean D(real)/D(fake) probabilities, gradient/parameter/update norms and a
    ``finite`` flag (1.0 when every loss and gradient norm is finite).
    """
    _validate(cfg)
    return GANUpdate(players, cfg, reducer if reducer is not None else Reducer(), cfg.loss_weights())


@dataclass(frozen=True, eq=False)
class GANUpdate:
    """The update as a callable ``(state, batch) -> (state, metrics)`` (built by :func:`make_step`).

    Both players take their optimizer steps through the same :meth:`update`; the schedule in
    :meth:`__call__` only decides which player steps on which batches. Static: the players' graphs and
    optimizers, the settings, the reducer and the loss weights; everything traced is an argument.
    """

    players: Players
    cfg: StepConfig
    reducer: Reducer
    weights: dict[str, float]

    # ---- the players as functions of their arrays ---------------------------------------------------------
    def run(self, player: Player, params: Any, batch_stats: Any, x: jax.Array, key: jax.Array, train: bool):
        """``player``'s module applied to ``x``; returns its output and its updated BatchNorm statistics."""
        module = player.module(params, batch_stats, key, train=train)
        return module(x), nnx.state(module, nnx.BatchStat)

    def score(self, d_params: Any, d_bs: Any, xs: list[jax.Array], key: jax.Array):
        """Discriminator outputs (train mode) for each batch of ``xs`` and its new statistics: one
        evaluation of their concatenation (``d_batch=joint``), else one per batch (keys ``fold_in(key, i)``).
        """
        if self.cfg.d_batch == "joint":
            out, d_bs = self.run(self.players.d, d_params, d_bs, jnp.concatenate(xs), key, True)
            cuts = list(itertools.accumulate(x.shape[0] for x in xs))[:-1]
            split = {k: jnp.split(v, cuts) for k, v in out.items()}
            return [{k: v[i] for k, v in split.items()} for i in range(len(xs))], d_bs
        outs = []
        for i, x in enumerate(xs):
            out, d_bs = self.run(self.players.d, d_params, d_bs, x, jax.random.fold_in(key, i), True)
            outs.append(out)
        return outs, d_bs

    # ---- conditions and fakes -----------------------------------------------------------------------------
    @property
    def samples_energy(self) -> bool:
        """Fakes get energies of their own (fixed25 with ``fake_energy_range``), else the real batch's."""
        return self.cfg.arch != "angle51" and self.cfg.fake_energy_range is not None

    def sum_per_energy(self, batch: Batch, ecal_real: jax.Array) -> jax.Array:
        """The real batch's ECAL sum per unit energy, over the global batch (one collective per step).

        The Keras loop gives sampled energies an ECAL-sum target from a fit of sum/E; a straight-line
        fit through the origin on the real batch needs no constants tied to the data's units. Sums over
        the global batch, so that every worker fits the same line."""
        s_ecal, s_e = self.reducer.mean((jnp.sum(ecal_real), jnp.sum(batch["energy"])))
        return s_ecal / jnp.maximum(s_e, 1e-12)

    def conditions(self, key: jax.Array, batch: Batch, ecal_real: jax.Array, ratio: Any):
        """(energy ``[B]`` E/100, theta ``[B]`` rad, ECAL-sum target ``[B]``) for a batch of fakes;
        ``ratio``: :meth:`sum_per_energy`."""
        e, theta = batch["energy"], batch["theta"]
        if not self.samples_energy:
            return e, theta, ecal_real
        lo, hi = self.cfg.fake_energy_range  # type: ignore[misc]
        e_f = jax.random.uniform(key, e.shape, e.dtype, lo, hi)
        return e_f, theta, e_f * ratio

    def latent(self, state: GANState, key: jax.Array, e: jax.Array, theta: jax.Array) -> jax.Array:
        """The generator's input for energies ``e`` (E/100) and angles ``theta`` (rad)."""
        g = self.players.g.module(state.g.params, state.g.batch_stats, key)
        return g.latent(key, e * 100.0, theta)  # type: ignore[attr-defined]  # the models take GeV

    def fakes(self, state: GANState, key: jax.Array, batch: Batch, ecal_real: jax.Array, ratio: Any) -> _Part:
        """A fake batch for the discriminator, labelled 0 (flipped with ``label_flip``)."""
        k_e, k_z, k_drop, k_l = jax.random.split(key, 4)
        e, theta, ecal_t = self.conditions(k_e, batch, ecal_real, ratio)
        z = self.latent(state, k_z, e, theta)
        g = state.g
        x, _ = self.run(self.players.g, g.params, g.batch_stats, z, k_drop, self.cfg.fake_bn == "batch")
        label = _flip(k_l, jnp.zeros(e.shape, jnp.float32), self.cfg.label_flip)
        return _Part("fake", jax.lax.stop_gradient(x), label, e, theta, ecal_t)

    # ---- the losses ---------------------------------------------------------------------------------------
    def loss(self, out: dict[str, jax.Array], label: jax.Array, cond: tuple, *, generator: bool = False):
        """The loss of discriminator outputs ``out`` against ``label`` and ``cond`` (energy, theta,
        ECAL-sum target): :func:`hepgan.train.losses.gan_loss` with the step's weights and adversarial
        loss."""
        e, theta, ecal_t = cond
        return gan_loss(
            out,
            label=label,
            energy=e,
            ecal=ecal_t,
            theta=theta,
            weights=self.weights,
            adv=self.cfg.adv_loss,
            generator=generator,
        )

    def d_loss(self, d_params: Any, d_bs: Any, parts: list[_Part], key: jax.Array):
        """The discriminator's summed loss over ``parts``; aux: per-part losses, D probabilities, terms."""
        outs, d_bs = self.score(d_params, d_bs, [p.x for p in parts], key)
        total = jnp.zeros((), jnp.float32)
        aux: Metrics = {}
        for part, out in zip(parts, outs, strict=True):
            loss, terms = self.loss(out, part.label, (part.energy, part.theta, part.ecal))
            total = total + loss
            aux[f"d_{part.name}_loss"] = loss
            aux[f"d_{part.name}_p"] = jnp.mean(jax.nn.sigmoid(out["logit"]))
            aux.update({f"d_{part.name}_{k}": v for k, v in terms.items()})
        return total, (aux, d_bs)

    def g_loss(
        self, g_params: Any, g_bs: Any, d: Any, z: jax.Array, cond: tuple, key: jax.Array, real: jax.Array
    ):
        """The generator's loss through the frozen discriminator ``d`` (its statistics are not kept); with
        ``d_batch=joint`` its fakes are normalised together with the real batch ``real``."""
        k_g, k_d = jax.random.split(key)
        x, g_bs = self.run(self.players.g, g_params, g_bs, z, k_g, True)
        joint = self.cfg.d_batch == "joint"
        out = self.score(d.params, d.batch_stats, [real, x] if joint else [x], k_d)[0][-1]
        loss, terms = self.loss(out, jnp.ones(z.shape[:1], jnp.float32), cond, generator=True)
        return loss, ({"g_loss": loss, **{f"g_{k}": v for k, v in terms.items()}}, g_bs)

    # ---- one optimizer step of one player (the same code for both) --------------------------------------
    def update(
        self, state: GANState, who: str, loss_fn: Callable, n: int, *args: Any
    ) -> tuple[PlayerState, _Stepped]:
        """Player ``who`` ("g" or "d") after one optimizer step on ``loss_fn(params, batch_stats, *args)``
        at ``state``; its gradient and BatchNorm statistics are reduced over the workers in one
        collective (``n``: this worker's batch)."""
        ps: PlayerState = getattr(state, who)
        (_, (aux, bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            self.reducer.local(ps.params), ps.batch_stats, *args
        )
        grads, gns, bs = self.reducer.grads_and_mean(grads, n, bs)
        updates, opt_state = getattr(self.players, who).tx.update(grads, ps.opt_state, ps.params)
        updates = jax.tree.map(lambda u: u * (ps.lr * state.lr_scale), updates)
        new = ps.replace(params=optax.apply_updates(ps.params, updates), opt_state=opt_state, batch_stats=bs)
        layers = layer_norms(grads) if self.cfg.layer_stats else None
        return new, _Stepped(aux, _norm(grads), gns, layers)

    def d_update(self, state: GANState, parts: list[_Part], key: jax.Array) -> tuple[PlayerState, _Stepped]:
        """One discriminator step on the batches ``parts``."""
        return self.update(state, "d", self.d_loss, parts[0].x.shape[0], parts, key)

    def g_update(self, state: GANState, key: jax.Array, batch: Batch, ecal_real: jax.Array, ratio: Any):
        """One generator step on fresh noise at conditions drawn for ``batch``."""
        k_c, k_z, k_l = jax.random.split(key, 3)
        cond = self.conditions(k_c, batch, ecal_real, ratio)
        z = self.latent(state, k_z, cond[0], cond[1])
        return self.update(state, "g", self.g_loss, z.shape[0], state.d, z, cond, k_l, batch["ecal"])

    # ---- the update ---------------------------------------------------------------------------------------
    def __call__(self, state: GANState, batch: Batch) -> tuple[GANState, Metrics]:
        """One training step: the schedule's discriminator and generator steps, metrics, the EMA."""
        cfg = self.cfg
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        k_d, k_g = jax.random.split(self.reducer.fold_in(key))
        ecal_real = ecal_sum(batch["ecal"], cfg.cell_power)
        ratio = self.sum_per_energy(batch, ecal_real) if self.samples_energy else None
        old = state

        def real(k: jax.Array) -> _Part:
            labels = _flip(k, jnp.ones(batch["energy"].shape, jnp.float32), cfg.label_flip)
            return _Part("real", batch["ecal"], labels, batch["energy"], batch["theta"], ecal_real)

        def fake(k: jax.Array) -> _Part:
            return self.fakes(state, k, batch, ecal_real, ratio)

        d_steps: list[_Stepped] = []
        g_steps: list[_Stepped] = []
        if cfg.schedule == "simultaneous":  # both gradients at the current parameters
            k1, k2, k3 = jax.random.split(k_d, 3)
            d_new, d_info = self.d_update(state, [real(k1), fake(k2)], k3)
            g_new, g_info = self.g_update(state, k_g, batch, ecal_real, ratio)
            state = state.replace(d=d_new, g=g_new)
            d_steps, g_steps = [d_info], [g_info]
        else:
            # the generator does not change during the discriminator's steps: its fakes are drawn up front
            if cfg.schedule == "paper":  # a real batch, then a fake one (two train_on_batch calls)
                k1, k2, k3, k4 = jax.random.split(k_d, 4)
                rounds = [([real(k1)], k2), ([fake(k3)], k4)]
            else:  # n_critic steps, each on a real and a fresh fake batch
                keys = [jax.random.split(jax.random.fold_in(k_d, i), 3) for i in range(cfg.n_critic)]
                rounds = [([real(k1), fake(k2)], k3) for k1, k2, k3 in keys]
            for parts, k in rounds:
                d_new, info = self.d_update(state, parts, k)
                state = state.replace(d=d_new)
                d_steps.append(info)
            for i in range(cfg.g_steps):
                g_new, info = self.g_update(state, jax.random.fold_in(k_g, i), batch, ecal_real, ratio)
                state = state.replace(g=g_new)
                g_steps.append(info)
        metrics = self.metrics(old, state, d_steps, g_steps)

        # EMA with the usual warm-up (decay grows as (1+t)/(10+t)) so short runs are not dominated by the
        # random initial weights.
        if cfg.ema_decay > 0.0:
            t = state.step.astype(jnp.float32)
            decay = jnp.minimum(cfg.ema_decay, (1.0 + t) / (10.0 + t))
            ema = jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, state.ema_g_params, state.g.params)
        else:
            ema = state.g.params
        return state.replace(ema_g_params=ema, step=state.step + 1), metrics

    def metrics(
        self, old: GANState, new: GANState, d_steps: list[_Stepped], g_steps: list[_Stepped]
    ) -> Metrics:
        """The step's scalar metrics: the discriminator's losses as of its last step on each batch kind
        and the generator's averaged over its steps (both averaged over the workers), per-player
        gradient-noise estimators, gradient, parameter and update norms, ``finite``, ``lr_scale``; with
        ``layer_stats`` also each layer's weight, largest gradient and update norm (``layer/...``)."""
        metrics: Metrics = {}
        for info in d_steps:
            metrics.update(info.metrics)
        metrics.update(_mean_of([info.metrics for info in g_steps]))
        metrics = self.reducer.mean(metrics)  # per-worker losses -> global-batch means
        for who, infos in (("d", d_steps), ("g", g_steps)):
            metrics.update({f"{who}_{k}": v for k, v in _mean_of([i.gns for i in infos]).items()})
            metrics[f"{who}_grad_norm"] = jnp.max(jnp.stack([i.grad_norm for i in infos]))
            after, before = getattr(new, who).params, getattr(old, who).params
            metrics[f"{who}_param_norm"] = _norm(after)
            metrics[f"{who}_update_norm"] = _norm(jax.tree.map(jnp.subtract, after, before))
            if self.cfg.layer_stats:  # the largest gradient of the step's updates, as {who}_grad_norm
                weight, update = layer_norms(after), layer_norms(jax.tree.map(jnp.subtract, after, before))
                for layer in weight:
                    grad = jnp.max(jnp.stack([i.layer_grad[layer] for i in infos if i.layer_grad]))
                    base = f"{LAYER_PREFIX}{who}/{layer}/"
                    metrics.update({base + "weight": weight[layer], base + "grad": grad})
                    metrics[base + "update"] = update[layer]
        metrics["d_loss"] = jnp.sum(
            jnp.stack([v for k, v in metrics.items() if k.startswith("d_") and k.endswith("_loss")])
        )
        watched = jnp.stack(
            [metrics["d_loss"], metrics["g_loss"], metrics["d_grad_norm"], metrics["g_grad_norm"]]
        )
        metrics["finite"] = jnp.all(jnp.isfinite(watched)).astype(jnp.float32)
        metrics["lr_scale"] = new.lr_scale
        return metrics


def _mean_of(rows: list[Metrics]) -> Metrics:
    """Key-wise mean of metric dicts with the same keys (``{}`` for none)."""
    return {k: jnp.mean(jnp.stack([r[k] for r in rows])) for k in (rows[0] if rows else {})}
