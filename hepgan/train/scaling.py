"""Batch-size / learning-rate scaling rules and large-batch optimizers (schema of group ``scaling``).

When the global batch ``B`` grows by data parallelism, the learning rate tuned at a reference batch
``B_ref`` must follow:

- ``none``: keep it (``lr = lr_ref``);
- ``linear``: ``lr = lr_ref * B / B_ref`` (Goyal et al. 2017, "Accurate, Large Minibatch SGD"; the Horovod
  3DGAN used ``lr = 1e-3 x workers``), which needs a warm-up from a small value;
- ``sqrt``: ``lr = lr_ref * sqrt(B / B_ref)`` (Hoffer et al. 2017, "Train longer, generalize better": keeps
  the gradient noise of an update constant; the usual choice for adaptive optimizers such as RMSprop/Adam).

Each player (generator ``g``, discriminator ``d``) may take its own rule, reference batch, warm-up and
optimizer (GANs often scale D and G differently). Schedules: linear warm-up from 0 over ``warmup_steps``
optimizer updates, then constant or cosine decay to 0. Large-batch optimizers: LARS (You et al. 2017) and
LAMB (You et al. 2019), layer-wise trust ratios on top of momentum SGD resp. Adam (``optax.lars``,
``optax.lamb``). The peak and per-step effective learning rates are returned for logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import optax

RULES = ("none", "linear", "sqrt")
DECAYS = ("constant", "cosine")
OPTIMIZERS = ("rmsprop", "adam", "lars", "lamb")
PLAYERS = ("g", "d")


@dataclass
class PlayerScaling:
    """One player's departures from the shared scaling settings (``None``: take the shared value)."""

    rule: str | None = None
    ref_batch: int | None = None
    warmup_steps: int | None = None
    lr_multiplier: float = 1.0


@dataclass
class ScalingConfig:
    """How learning rates follow the global batch (schema of group ``scaling``).

    rule: "none" | "linear" | "sqrt" relative to ``ref_batch`` (the batch the base learning rates were
      tuned at; 128 for the fixed-angle 3DGAN, 64 for AngleGAN). warmup_steps: linear warm-up over this
      many optimizer updates of each player (0: none). decay: "constant" or "cosine" (to 0 at the end of
      training) after the warm-up. These four default to None: take ``optim.scaling``, ``optim.ref_batch``,
      ``optim.warmup_steps``, ``optim.decay`` (so the ``optim`` group alone keeps working).
      optimizer: None keeps ``optim.name``; "lars" or "lamb" switch both players to a layer-wise
      adaptive large-batch optimizer. weight_decay: LARS/LAMB decoupled weight decay.
      trust_coefficient: LARS trust coefficient (eta). momentum: LARS momentum.
    g, d: per-player overrides (rule, ref_batch, warmup_steps, and an extra lr_multiplier).
    """

    rule: str | None = None
    ref_batch: int | None = None
    warmup_steps: int | None = None
    decay: str | None = None
    optimizer: str | None = None
    weight_decay: float = 0.0
    trust_coefficient: float = 0.001
    momentum: float = 0.9
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


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def resolve(cfg: ScalingConfig, player: str, optim: Any = None) -> PlayerRule:
    """The scaling of ``player`` ("g" or "d"): its overrides over the shared settings, over ``optim``'s
    (``scaling``, ``ref_batch``, ``warmup_steps``, ``decay`` when given), over none/128/0/constant."""
    if player not in PLAYERS:
        raise ValueError(f"scaling: unknown player {player!r}; valid: {list(PLAYERS)}")
    own: PlayerScaling = getattr(cfg, player)

    def pick(name: str, optim_name: str, default: Any) -> Any:
        return _first(getattr(own, name, None), getattr(cfg, name), getattr(optim, optim_name, None), default)

    rule = pick("rule", "scaling", "none")
    ref = pick("ref_batch", "ref_batch", 128)
    warm = pick("warmup_steps", "warmup_steps", 0)
    decay = pick("decay", "decay", "constant")
    where = f"scaling.{player}" if own.rule is not None else "scaling"
    if rule not in RULES:
        raise ValueError(f"{where}.rule: unknown rule {rule!r}; valid: {list(RULES)}")
    if decay not in DECAYS:
        raise ValueError(f"scaling.decay: unknown {decay!r}; valid: {list(DECAYS)}")
    if warm < 0:
        raise ValueError(f"scaling.warmup_steps: must be >= 0; got {warm} for player {player}")
    if not own.lr_multiplier > 0:
        raise ValueError(f"scaling.{player}.lr_multiplier: must be > 0; got {own.lr_multiplier}")
    return PlayerRule(rule, int(ref), int(warm), decay, float(own.lr_multiplier))


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
    rho: float = 0.9,
    eps: float = 1e-7,
    b1: float = 0.9,
    b2: float = 0.999,
    weight_decay: float = 0.0,
    trust_coefficient: float = 0.001,
    momentum: float = 0.9,
    clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """One player's optimizer.

    ``rmsprop``: the Keras form of the 3DGAN papers (``eps`` outside the square root, decay ``rho``);
    ``adam``; ``lars`` (momentum SGD with a layer-wise trust ratio, ``trust_coefficient``, ``momentum``,
    decoupled ``weight_decay``); ``lamb`` (Adam with a layer-wise trust ratio, ``b1``, ``b2``,
    ``weight_decay``). ``clip_norm``: clip the global gradient norm first (None: off).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {name!r}; valid: {list(OPTIMIZERS)}")
    if name == "rmsprop":
        tx = optax.rmsprop(learning_rate, decay=rho, eps=eps, eps_in_sqrt=False)
    elif name == "adam":
        tx = _standard_promotion(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))
    elif name == "lars":
        tx = optax.lars(
            learning_rate, weight_decay=weight_decay, trust_coefficient=trust_coefficient, momentum=momentum
        )
    else:
        tx = _standard_promotion(optax.lamb(learning_rate, b1=b1, b2=b2, eps=1e-6, weight_decay=weight_decay))
    if clip_norm is not None and clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
    return tx


@dataclass(frozen=True)
class ScaledOptimizers:
    """Both players' optimizers and what was chosen for them (for logs and the manifest).

    ``peak_lr``: player -> learning rate after warm-up; ``schedules``: player -> ``optax.Schedule`` of
    the player's update count; ``rules``: player -> :class:`PlayerRule`; ``optimizer``: the name used.
    """

    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    peak_lr: dict[str, float]
    schedules: dict[str, optax.Schedule]
    rules: dict[str, PlayerRule]
    optimizer: str
    global_batch: int

    def effective_lr(self, updates: dict[str, int]) -> dict[str, float]:
        """``{"lr_g": ..., "lr_d": ...}`` after ``updates[player]`` optimizer updates of each player."""
        return {f"lr_{p}": float(self.schedules[p](updates[p])) for p in PLAYERS}

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: optimizer, global batch, and per player rule, reference batch, warm-up, peak."""
        return {
            "optimizer": self.optimizer,
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

    ``optim``: the ``optim`` group (fields ``name``, ``lr_g``, ``lr_d``, ``rho``, ``eps``, ``b1``, ``b2``,
    ``clip_norm``, and the fallbacks ``scaling``, ``ref_batch``, ``warmup_steps``, ``decay``); ``cfg``:
    the ``scaling`` group; ``total_updates``: player -> optimizer updates in the whole run (sets the
    cosine length); ``hook``: optional wrapper per player (e.g. an extra transform).
    ``unit_lr``: build the transforms with the schedules' shape at peak 1 (warm-up and decay only), for a
    trainer that multiplies the updates by ``peak_lr`` itself (all four optimizers are linear in the
    learning rate); ``peak_lr`` and ``schedules`` still hold the real values.
    """
    name = cfg.optimizer if cfg.optimizer is not None else optim.name
    rules = {p: resolve(cfg, p, optim) for p in PLAYERS}
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
        tx = make_optimizer(
            name,
            shape,
            rho=getattr(optim, "rho", 0.9),
            eps=getattr(optim, "eps", 1e-7),
            b1=getattr(optim, "b1", 0.9),
            b2=getattr(optim, "b2", 0.999),
            weight_decay=cfg.weight_decay,
            trust_coefficient=cfg.trust_coefficient,
            momentum=cfg.momentum,
            clip_norm=getattr(optim, "clip_norm", None),
        )
        txs[p] = hook(p, tx) if hook is not None else tx
    return ScaledOptimizers(txs["g"], txs["d"], peaks, scheds, rules, name, int(global_batch))
