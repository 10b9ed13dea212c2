"""Both players' optimizers (group ``optim``) and how their learning rates follow the global batch and
the update count (group ``scaling``); :func:`build_optimizers` is the one place that builds them.

Optimizers (``optim.name``), each with its own hyperparameters and defaults (:class:`OptimConfig`):

- ``rmsprop``: the 3DGAN papers' Keras RMSprop. Keras and optax differ in two defaults that matter: Keras
  uses ``rho=0.9`` and ``epsilon=1e-7`` *outside* the square root (``p -= lr * g / (sqrt(v) + eps)``),
  optax ``eps=1e-8`` inside it. This is the Keras form;
- ``adam``;
- ``lars`` (You et al. 2017) and ``lamb`` (You et al. 2019): layer-wise trust ratios on top of momentum SGD
  resp. Adam, for large batches (``optax.lars``, ``optax.lamb``).

Learning-rate scaling (:class:`ScalingConfig`). When the global batch ``B`` grows by data parallelism, the
learning rate tuned at a reference batch ``B_ref`` must follow:

- ``none``: keep it (``lr = lr_ref``);
- ``linear``: ``lr = lr_ref * B / B_ref`` (Goyal et al. 2017, "Accurate, Large Minibatch SGD"; the Horovod
  3DGAN used ``lr = 1e-3 x workers``), which needs a warm-up from a small value;
- ``sqrt``: ``lr = lr_ref * sqrt(B / B_ref)`` (Hoffer et al. 2017, "Train longer, generalize better": keeps
  the gradient noise of an update constant; the usual choice for adaptive optimizers such as RMSprop/Adam).

Each player (generator ``g``, discriminator ``d``) may take its own rule, reference batch and warm-up (GANs
often scale D and G differently). Schedules: linear warm-up from 0 over ``warmup_steps`` optimizer updates,
then constant or cosine decay to 0. The peak and per-step effective learning rates are returned for
logging.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import optax

RULES = ("none", "linear", "sqrt")
DECAYS = ("constant", "cosine")
PLAYERS = ("g", "d")


@dataclass
class RMSpropConfig:
    """Keras RMSprop (``optim.rmsprop``): ``v = rho v + (1 - rho) g^2``, ``p -= lr g / (sqrt(v) + eps)``.

    rho, eps: Keras' values; eps is added outside the square root (optax's default is 1e-8 inside).
    """

    rho: float = 0.9
    eps: float = 1e-7


@dataclass
class AdamConfig:
    """Adam (``optim.adam``).

    b1: 0.5, the GAN-usual first-moment decay (Radford et al. 2016: less momentum against the moving
    target of the other player). b2, eps: Kingma & Ba's values (eps inside the square root, as optax).
    """

    b1: float = 0.5
    b2: float = 0.999
    eps: float = 1e-8


@dataclass
class LarsConfig:
    """LARS (``optim.lars``): momentum SGD with a layer-wise trust ratio (``optax.lars``).

    momentum: 0.9; trust_coefficient: the paper's and optax's eta 0.001; weight_decay: decoupled.
    """

    momentum: float = 0.9
    trust_coefficient: float = 0.001
    weight_decay: float = 0.0


@dataclass
class LambConfig:
    """LAMB (``optim.lamb``): Adam with a layer-wise trust ratio (``optax.lamb``).

    b1, b2, eps: the LAMB paper's and optax's values; weight_decay: decoupled.
    """

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.0


HYPERPARAMETERS: dict[str, type] = {
    "rmsprop": RMSpropConfig,
    "adam": AdamConfig,
    "lars": LarsConfig,
    "lamb": LambConfig,
}
"""Optimizer name -> the dataclass of its hyperparameters (the section ``optim.<name>``)."""

OPTIMIZERS = tuple(HYPERPARAMETERS)


@dataclass
class OptimConfig:
    """Both players' optimizer (schema of group ``optim``); how its learning rates follow the global batch
    and the update count is group ``scaling`` (:class:`ScalingConfig`).

    name: "rmsprop" (the papers), "adam", "lars" or "lamb" (:data:`OPTIMIZERS`).
    lr_g, lr_d: base learning rates of generator and discriminator, at ``scaling.ref_batch``; 1e-3 is the
      papers' RMSprop rate at batch 128. Shared by all optimizers: ``optim.name=adam`` keeps them, the
      preset ``optim=adam`` also sets 2e-4.
    clip_norm: clip the global gradient norm first (None: off).
    rmsprop, adam, lars, lamb: each optimizer's own hyperparameters with its own defaults; only the
      section of ``name`` is used, so ``optim.name=adam`` alone gives Adam's values, not RMSprop's.
    """

    name: str = "rmsprop"
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    clip_norm: float | None = None
    rmsprop: RMSpropConfig = field(default_factory=RMSpropConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)
    lars: LarsConfig = field(default_factory=LarsConfig)
    lamb: LambConfig = field(default_factory=LambConfig)


@dataclass
class PlayerScaling:
    """One player's departures from the shared scaling settings (``None``: take the shared value)."""

    rule: str | None = None
    ref_batch: int | None = None
    warmup_steps: int | None = None
    lr_multiplier: float = 1.0


@dataclass
class ScalingConfig:
    """How both players' learning rates follow the global batch and time (schema of group ``scaling``).

    rule: "none" (the base learning rates whatever the batch), "linear" or "sqrt", relative to
      ``ref_batch``.
    ref_batch: the global batch the base learning rates (``optim.lr_g``, ``optim.lr_d``) were tuned at: 128,
      the fixed-angle 3DGAN's batch, at which lr 1e-3 was tuned (AngleGAN: 64).
    warmup_steps: linear warm-up from 0 over this many optimizer updates of each player (0: none).
    decay: "constant" or "cosine" (to 0 at the last update) after the warm-up.
    g, d: per-player overrides (rule, ref_batch, warmup_steps; None takes the shared value) and an extra
      lr_multiplier.
    """

    rule: str = "none"
    ref_batch: int = 128
    warmup_steps: int = 0
    decay: str = "constant"
    g: PlayerScaling = field(default_factory=PlayerScaling)
    d: PlayerScaling = field(default_factory=PlayerScaling)


@dataclass(frozen=True)
class PlayerRule:
    """A player's resolved scaling: rule, ref_batch, warmup_steps, decay, lr_multiplier."""

    rule: str
    ref_batch: int
    warmup_steps: int
    decay: str
    lr_multiplier: float


def lr_factor(rule: str, global_batch: int, ref_batch: int) -> float:
    """The factor on the reference learning rate: 1, ``B/B_ref`` or ``sqrt(B/B_ref)``.

    Raises ``ValueError`` naming ``scaling.rule`` for an unknown rule and for non-positive batches.
    """
    if rule not in RULES:
        raise ValueError(f"scaling.rule: unknown rule {rule!r}; valid: {list(RULES)}")
    if global_batch <= 0 or ref_batch <= 0:
        raise ValueError(
            f"scaling: batch sizes must be positive; got global batch {global_batch}, ref_batch {ref_batch}"
        )
    ratio = global_batch / ref_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def resolve(cfg: ScalingConfig, player: str) -> PlayerRule:
    """The scaling of ``player`` ("g" or "d"): its own overrides (``scaling.<player>.*``) over the shared
    settings. Raises ``ValueError`` naming the key of an invalid value."""
    if player not in PLAYERS:
        raise ValueError(f"scaling: unknown player {player!r}; valid: {list(PLAYERS)}")
    own: PlayerScaling = getattr(cfg, player)
    rule = own.rule if own.rule is not None else cfg.rule
    ref = own.ref_batch if own.ref_batch is not None else cfg.ref_batch
    warm = own.warmup_steps if own.warmup_steps is not None else cfg.warmup_steps
    where = f"scaling.{player}" if own.rule is not None else "scaling"
    if rule not in RULES:
        raise ValueError(f"{where}.rule: unknown rule {rule!r}; valid: {list(RULES)}")
    if cfg.decay not in DECAYS:
        raise ValueError(f"scaling.decay: unknown {cfg.decay!r}; valid: {list(DECAYS)}")
    if warm < 0:
        raise ValueError(f"scaling.warmup_steps: must be >= 0; got {warm} for player {player}")
    if not own.lr_multiplier > 0:
        raise ValueError(f"scaling.{player}.lr_multiplier: must be > 0; got {own.lr_multiplier}")
    return PlayerRule(rule, int(ref), int(warm), cfg.decay, float(own.lr_multiplier))


def peak_lr(base_lr: float, global_batch: int, rule: PlayerRule) -> float:
    """The learning rate after warm-up: ``base_lr * lr_multiplier * lr_factor(rule, B, B_ref)``."""
    return base_lr * rule.lr_multiplier * lr_factor(rule.rule, global_batch, rule.ref_batch)


def schedule(peak: float, *, warmup_steps: int, total_steps: int, decay: str) -> optax.Schedule:
    """Linear warm-up ``0 -> peak`` over ``warmup_steps`` updates, then constant or cosine to 0 at
    ``total_steps``. A schedule maps the update count (int) to the learning rate."""
    if decay not in DECAYS:
        raise ValueError(f"scaling.decay: unknown {decay!r}; valid: {list(DECAYS)}")
    if decay == "constant":
        after = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
    if warmup_steps <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), after], [warmup_steps])


def _standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    # optax's Adam-family bias corrections compute float ** int32 step counts, which strict dtype
    # promotion (a common debugging setting, and the tests') rejects; the update itself is all float32.
    def init(params: Any) -> Any:
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates: Any, state: Any, params: Any = None) -> Any:
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params)

    return optax.GradientTransformation(init, update)


def make_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    clip_norm: float | None = None,
    **hyper: float,
) -> optax.GradientTransformation:
    """One player's optimizer ``name`` (one of :data:`OPTIMIZERS`) at ``learning_rate``.

    ``hyper``: that optimizer's hyperparameters, over its defaults (:data:`HYPERPARAMETERS`; e.g. ``rho``,
    ``eps`` for rmsprop, ``trust_coefficient`` for lars). ``clip_norm``: clip the global gradient norm
    first (None or <= 0: off). Raises ``ValueError`` for an unknown optimizer or hyperparameter.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}")
    valid = [f.name for f in dataclasses.fields(HYPERPARAMETERS[name])]
    unknown = sorted(set(hyper) - set(valid))
    if unknown:
        raise ValueError(f"optim.{name}: unknown hyperparameters {unknown}; valid: {valid}")
    h = HYPERPARAMETERS[name](**hyper)
    if isinstance(h, RMSpropConfig):
        tx = optax.rmsprop(learning_rate, decay=h.rho, eps=h.eps, eps_in_sqrt=False)
    elif isinstance(h, AdamConfig):
        tx = _standard_promotion(optax.adam(learning_rate, b1=h.b1, b2=h.b2, eps=h.eps))
    elif isinstance(h, LarsConfig):
        tx = optax.lars(
            learning_rate,
            weight_decay=h.weight_decay,
            trust_coefficient=h.trust_coefficient,
            momentum=h.momentum,
        )
    else:
        tx = _standard_promotion(
            optax.lamb(learning_rate, b1=h.b1, b2=h.b2, eps=h.eps, weight_decay=h.weight_decay)
        )
    if clip_norm is not None and clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    return tx


def hyperparameters(optim: Any) -> dict[str, float]:
    """The hyperparameters of ``optim.name`` from its section ``optim.<name>`` (an :class:`OptimConfig`)."""
    if optim.name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer {optim.name!r}; valid: {list(OPTIMIZERS)}")
    section = getattr(optim, optim.name)
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(HYPERPARAMETERS[optim.name])}


def player_optimizer(optim: Any, learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """One player's optimizer as the ``optim`` group says (name, its section, ``clip_norm``), at
    ``learning_rate``; no batch scaling, warm-up or decay (those are :func:`build_optimizers`')."""
    return make_optimizer(optim.name, learning_rate, clip_norm=optim.clip_norm, **hyperparameters(optim))


@dataclass(frozen=True)
class ScaledOptimizers:
    """Both players' optimizers and what was chosen for them (for logs and the manifest).

    ``peak_lr``: player -> learning rate after warm-up; ``schedules``: player -> ``optax.Schedule`` of
    the player's update count; ``rules``: player -> :class:`PlayerRule`; ``optimizer``: the name used;
    ``hyperparameters``: its hyperparameters.
    """

    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    peak_lr: dict[str, float]
    schedules: dict[str, optax.Schedule]
    rules: dict[str, PlayerRule]
    optimizer: str
    global_batch: int
    hyperparameters: dict[str, float] = field(default_factory=dict)

    def effective_lr(self, updates: dict[str, int]) -> dict[str, float]:
        """``{"lr_g": ..., "lr_d": ...}`` after ``updates[player]`` optimizer updates of each player."""
        return {f"lr_{p}": float(self.schedules[p](updates[p])) for p in PLAYERS}

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: optimizer and its hyperparameters, global batch, and per player rule,
        reference batch, warm-up, decay, peak learning rate."""
        return {
            "optimizer": self.optimizer,
            "hyperparameters": dict(self.hyperparameters),
            "global_batch": self.global_batch,
            **{
                p: {
                    "rule": r.rule,
                    "ref_batch": r.ref_batch,
                    "factor": lr_factor(r.rule, self.global_batch, r.ref_batch) * r.lr_multiplier,
                    "warmup_steps": r.warmup_steps,
                    "decay": r.decay,
                    "peak_lr": self.peak_lr[p],
                }
                for p, r in self.rules.items()
            },
        }


def build_optimizers(
    optim: Any,
    cfg: ScalingConfig,
    global_batch: int,
    total_updates: dict[str, int],
    *,
    hook: Callable[[str, optax.GradientTransformation], optax.GradientTransformation] | None = None,
    unit_lr: bool = False,
) -> ScaledOptimizers:
    """Both players' optimizers for ``global_batch``.

    ``optim``: the ``optim`` group (:class:`OptimConfig`); ``cfg``: the ``scaling`` group;
    ``total_updates``: player -> optimizer updates in the whole run (sets the cosine length); ``hook``:
    optional wrapper per player (e.g. an extra transform).
    ``unit_lr``: build the transforms with the schedules' shape at peak 1 (warm-up and decay only), for a
    trainer that multiplies the updates by ``peak_lr`` itself (all four optimizers are linear in the
    learning rate); ``peak_lr`` and ``schedules`` still hold the real values.
    """
    hyper = hyperparameters(optim)
    rules = {p: resolve(cfg, p) for p in PLAYERS}
    base = {"g": float(optim.lr_g), "d": float(optim.lr_d)}
    peaks = {p: peak_lr(base[p], global_batch, rules[p]) for p in PLAYERS}
    scheds = {
        p: schedule(
            peaks[p], warmup_steps=rules[p].warmup_steps, total_steps=total_updates[p], decay=rules[p].decay
        )
        for p in PLAYERS
    }
    txs = {}
    for p in PLAYERS:
        shape = scheds[p]
        if unit_lr:
            r = rules[p]
            shape = schedule(1.0, warmup_steps=r.warmup_steps, total_steps=total_updates[p], decay=r.decay)
        tx = make_optimizer(optim.name, shape, clip_norm=optim.clip_norm, **hyper)
        txs[p] = hook(p, tx) if hook is not None else tx
    return ScaledOptimizers(txs["g"], txs["d"], peaks, scheds, rules, optim.name, int(global_batch), hyper)
