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
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hepgan.parallel.reduce import Reducer
from hepgan.train.losses import ADV_LOSSES, PAPER_WEIGHTS, TERMS, gan_loss
from hepgan.train.state import GANState, Players, fresh_rngs

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
    ``d_batch``: :data:`D_BATCH` ("separate" = the paper; "joint" needs schedule n_critic or simultaneous).
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

    @classmethod
    def from_train(cls, train: Any, *, arch: str, cell_power: float) -> StepConfig:
        """The step settings of a run: ``train`` a ``TrainConfig`` (the ``train`` group), ``arch`` the
        model's architecture, ``cell_power`` the preprocessing's power. The one place that maps the
        config onto the step, for the trainer and for everything that must measure the same update."""
        return cls(
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
    if cell_power != 1.0:
        cells = jnp.power(jnp.maximum(cells, 0.0), 1.0 / cell_power)
    return jnp.sum(cells, axis=(1, 2, 3))


def _flip(key: jax.Array, labels: jax.Array, p: float) -> jax.Array:
    if p <= 0.0:
        return labels
    return jnp.where(jax.random.uniform(key, labels.shape) < p, 1.0 - labels, labels)


def _norm(tree: Any) -> jax.Array:
    return optax.tree.norm(tree)


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
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"train.schedule: unknown {cfg.schedule!r}; valid: {list(SCHEDULES)}")
    if cfg.adv_loss not in ADV_LOSSES:
        raise ValueError(f"train.adv_loss: unknown {cfg.adv_loss!r}; valid: {list(ADV_LOSSES)}")
    if cfg.d_batch not in D_BATCH:
        raise ValueError(f"train.d_batch: unknown {cfg.d_batch!r}; valid: {list(D_BATCH)}")
    if cfg.d_batch == "joint" and cfg.schedule == "paper":
        raise ValueError(
            "train.d_batch=joint needs train.schedule=n_critic or simultaneous: the paper schedule updates "
            "the discriminator on a real and a fake batch one after the other"
        )
    if cfg.fake_bn not in FAKE_BN:
        raise ValueError(f"train.fake_bn: unknown {cfg.fake_bn!r}; valid: {list(FAKE_BN)}")
    weights = cfg.loss_weights()
    angle = cfg.arch == "angle51"
    reducer = reducer if reducer is not None else Reducer()

    # ---- the two players as functions of their arrays --------------------------------------------------
    # nnx variables remember the trace they were made in; rebuilding the state pytrees here gives merge
    # variables of the current trace (inside grad), which BatchNorm may then update.
    def fresh(tree):
        return jax.tree.map(lambda x: x, tree)

    def gen(g_params, g_bs, latent, key, train):
        g = nnx.merge(players.g_graph, fresh(g_params), fresh(g_bs), fresh_rngs(players.g_rngs, key))
        g.train() if train else g.eval()
        x = g(latent)
        return x, nnx.state(g, nnx.BatchStat)

    def disc(d_params, d_bs, x, key):
        d = nnx.merge(players.d_graph, fresh(d_params), fresh(d_bs), fresh_rngs(players.d_rngs, key))
        d.train()
        out = d(x)
        return out, nnx.state(d, nnx.BatchStat)

    sample_energy = not angle and cfg.fake_energy_range is not None

    def sum_per_energy(batch, ecal_real):
        """The real batch's ECAL sum per unit energy, over the global batch (one collective per step).

        The Keras loop gives sampled energies an ECAL-sum target from a fit of sum/E; a straight-line
        fit through the origin on the real batch needs no constants tied to the data's units. Sums over
        the global batch, so that every worker fits the same line."""
        s_ecal, s_e = reducer.mean((jnp.sum(ecal_real), jnp.sum(batch["energy"])))
        return s_ecal / jnp.maximum(s_e, 1e-12)

    def conditions(key, batch, ecal_real, ratio):
        """(energy E/100, theta rad, ecal target) for a batch of fakes; ``ratio``: ``sum_per_energy``."""
        e, theta = batch["energy"], batch["theta"]
        if not sample_energy:
            return e, theta, ecal_real
        lo, hi = cfg.fake_energy_range
        e_f = jax.random.uniform(key, e.shape, e.dtype, lo, hi)
        return e_f, theta, e_f * ratio

    def latent(state, key, e, theta):
        g = nnx.merge(
            players.g_graph,
            fresh(state.g_params),
            fresh(state.g_batch_stats),
            fresh_rngs(players.g_rngs, key),
        )
        return g.latent(key, e * 100.0, theta)  # the models take GeV

    def sample_fakes(state, key, batch, ecal_real, ratio):
        k_e, k_z, k_drop = jax.random.split(key, 3)
        e, theta, ecal_t = conditions(k_e, batch, ecal_real, ratio)
        z = latent(state, k_z, e, theta)
        x, _ = gen(state.g_params, state.g_batch_stats, z, k_drop, cfg.fake_bn == "batch")
        return jax.lax.stop_gradient(x), e, theta, ecal_t

    # ---- discriminator step -------------------------------------------------------------------------------
    joint = cfg.d_batch == "joint"

    def joint_outputs(d_params, d_bs, xs, key):
        """One discriminator evaluation of the concatenated batches ``xs``; outputs split back per batch."""
        out, d_bs = disc(d_params, d_bs, jnp.concatenate(xs), key)
        cuts = list(itertools.accumulate(x.shape[0] for x in xs))[:-1]
        split = {k: jnp.split(v, cuts) for k, v in out.items()}
        return [{k: v[i] for k, v in split.items()} for i in range(len(xs))], d_bs

    def d_loss(d_params, d_bs, parts, key):
        total = jnp.zeros((), jnp.float32)
        aux: dict[str, jax.Array] = {}
        if joint:
            outs, d_bs = joint_outputs(d_params, d_bs, [p[1] for p in parts], key)
        for i, (name, x, label, e, theta, ecal_t) in enumerate(parts):
            if joint:
                out = outs[i]
            else:
                out, d_bs = disc(d_params, d_bs, x, jax.random.fold_in(key, i))
            loss, terms = gan_loss(
                out, label=label, energy=e, ecal=ecal_t, theta=theta, weights=weights, adv=cfg.adv_loss
            )
            total = total + loss
            aux[f"d_{name}_loss"] = loss
            aux[f"d_{name}_p"] = jnp.mean(jax.nn.sigmoid(out["logit"]))
            aux.update({f"d_{name}_{k}": v for k, v in terms.items()})
        return total, (aux, d_bs)

    def d_grads(state, parts, key):
        (_loss, (aux, d_bs)), grads = jax.value_and_grad(d_loss, has_aux=True)(
            reducer.local(state.d_params), state.d_batch_stats, parts, key
        )
        grads, gns, d_bs = reducer.grads_and_mean(grads, parts[0][1].shape[0], d_bs)  # one collective
        return grads, d_bs, aux, gns

    def d_apply(state, grads, d_bs):
        updates, opt_state = players.d_tx.update(grads, state.d_opt_state, state.d_params)
        updates = jax.tree.map(lambda u: u * (state.lr_d * state.lr_scale), updates)
        return state.replace(
            d_params=optax.apply_updates(state.d_params, updates), d_opt_state=opt_state, d_batch_stats=d_bs
        )

    # ---- generator step -----------------------------------------------------------------------------------
    def g_loss(g_params, g_bs, d_params, d_bs, latent, e, theta, ecal_t, key, real):
        k_g, k_d = jax.random.split(key)
        x, g_bs = gen(g_params, g_bs, latent, k_g, True)
        # the frozen discriminator's statistics are not kept
        if joint:  # normalised together with a real batch, as in the discriminator's updates
            out = joint_outputs(d_params, d_bs, [real, x], k_d)[0][1]
        else:
            out, _ = disc(d_params, d_bs, x, k_d)
        ones = jnp.ones(e.shape, jnp.float32)
        loss, terms = gan_loss(
            out,
            label=ones,
            energy=e,
            ecal=ecal_t,
            theta=theta,
            weights=weights,
            adv=cfg.adv_loss,
            generator=True,
        )
        return loss, ({f"g_{k}": v for k, v in terms.items()}, g_bs)

    def g_grads(state, key, batch, ecal_real, ratio):
        k_c, k_z, k_l = jax.random.split(key, 3)
        e, theta, ecal_t = conditions(k_c, batch, ecal_real, ratio)
        z = latent(state, k_z, e, theta)
        (loss, (aux, g_bs)), grads = jax.value_and_grad(g_loss, has_aux=True)(
            reducer.local(state.g_params),
            state.g_batch_stats,
            state.d_params,
            state.d_batch_stats,
            z,
            e,
            theta,
            ecal_t,
            k_l,
            batch["ecal"],
        )
        grads, gns, g_bs = reducer.grads_and_mean(grads, e.shape[0], g_bs)  # one collective
        g_gns.append(gns)
        return grads, g_bs, {"g_loss": loss, **aux}

    def g_apply(state, grads, g_bs):
        updates, opt_state = players.g_tx.update(grads, state.g_opt_state, state.g_params)
        updates = jax.tree.map(lambda u: u * (state.lr_g * state.lr_scale), updates)
        return state.replace(
            g_params=optax.apply_updates(state.g_params, updates), g_opt_state=opt_state, g_batch_stats=g_bs
        )

    # ---- the update ---------------------------------------------------------------------------------------
    # Gradient-noise-scale estimators of the updates of one trace (filled while tracing the step).
    d_gns: list[dict[str, jax.Array]] = []
    g_gns: list[dict[str, jax.Array]] = []

    def step(state: GANState, batch: Batch) -> tuple[GANState, Metrics]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        k_d, k_g = jax.random.split(reducer.fold_in(key))
        real = batch["ecal"]
        ecal_real = ecal_sum(real, cfg.cell_power)
        ratio = sum_per_energy(batch, ecal_real) if sample_energy else None
        ones = jnp.ones(batch["energy"].shape, jnp.float32)
        old_g, old_d = state.g_params, state.d_params
        metrics: dict[str, jax.Array] = {}
        d_gnorms, g_gnorms, g_aux = [], [], []
        d_gns.clear()
        g_gns.clear()

        def real_part(k):
            return ("real", real, _flip(k, ones, cfg.label_flip), batch["energy"], batch["theta"], ecal_real)

        def fake_part(st, k):
            k_f, k_l = jax.random.split(k)
            x, e, theta, ecal_t = sample_fakes(st, k_f, batch, ecal_real, ratio)
            return ("fake", x, _flip(k_l, jnp.zeros_like(ones), cfg.label_flip), e, theta, ecal_t)

        def d_round(st, parts, k):
            dg, d_bs, aux, gns = d_grads(st, parts, k)
            d_gns.append(gns)
            metrics.update(aux)
            d_gnorms.append(_norm(dg))
            return dg, d_bs

        if cfg.schedule == "simultaneous":
            k1, k2, k3 = jax.random.split(k_d, 3)
            dg, d_bs = d_round(state, [real_part(k1), fake_part(state, k2)], k3)
            gg, g_bs, gaux = g_grads(state, k_g, batch, ecal_real, ratio)
            state = g_apply(d_apply(state, dg, d_bs), gg, g_bs)
            g_gnorms.append(_norm(gg))
            g_aux.append(gaux)
        else:
            if cfg.schedule == "paper":
                k1, k2, k3, k4 = jax.random.split(k_d, 4)
                state = d_apply(state, *d_round(state, [real_part(k1)], k2))
                state = d_apply(state, *d_round(state, [fake_part(state, k3)], k4))
            else:
                for i in range(cfg.n_critic):
                    k1, k2, k3 = jax.random.split(jax.random.fold_in(k_d, i), 3)
                    state = d_apply(state, *d_round(state, [real_part(k1), fake_part(state, k2)], k3))
            for i in range(cfg.g_steps):
                gg, g_bs, gaux = g_grads(state, jax.random.fold_in(k_g, i), batch, ecal_real, ratio)
                state = g_apply(state, gg, g_bs)
                g_gnorms.append(_norm(gg))
                g_aux.append(gaux)

        for k in g_aux[0]:
            metrics[k] = jnp.mean(jnp.stack([a[k] for a in g_aux]))
        metrics = reducer.mean(metrics)  # per-worker losses -> global-batch means
        for player, est in (("d", d_gns), ("g", g_gns)):
            for k in est[0] if est else ():
                metrics[f"{player}_{k}"] = jnp.mean(jnp.stack([x[k] for x in est]))
        metrics["d_loss"] = jnp.sum(
            jnp.stack([v for k, v in metrics.items() if k.startswith("d_") and k.endswith("_loss")])
        )
        metrics["d_grad_norm"] = jnp.max(jnp.stack(d_gnorms))
        metrics["g_grad_norm"] = jnp.max(jnp.stack(g_gnorms))
        metrics["d_param_norm"] = _norm(state.d_params)
        metrics["g_param_norm"] = _norm(state.g_params)
        metrics["d_update_norm"] = _norm(jax.tree.map(jnp.subtract, state.d_params, old_d))
        metrics["g_update_norm"] = _norm(jax.tree.map(jnp.subtract, state.g_params, old_g))
        watched = jnp.stack(
            [metrics["d_loss"], metrics["g_loss"], metrics["d_grad_norm"], metrics["g_grad_norm"]]
        )
        metrics["finite"] = jnp.all(jnp.isfinite(watched)).astype(jnp.float32)
        metrics["lr_scale"] = state.lr_scale

        # EMA with the usual warm-up (decay grows as (1+t)/(10+t)) so short runs are not dominated by the
        # random initial weights.
        if cfg.ema_decay > 0.0:
            t = state.step.astype(jnp.float32)
            decay = jnp.minimum(cfg.ema_decay, (1.0 + t) / (10.0 + t))
            ema = jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, state.ema_g_params, state.g_params)
        else:
            ema = state.g_params
        state = state.replace(ema_g_params=ema, step=state.step + 1)
        return state, metrics

    return step
