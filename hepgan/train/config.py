"""Structured-config schemas of a training run, registered in Hydra's ConfigStore.

The top-level :class:`Config` composes the rooms' own schemas: ``model`` is
:class:`hepgan.models.ModelConfig`, ``data`` is :class:`hepgan.data.source.DataConfig`; ``optim``,
``train`` and ``logging`` are defined here; ``parallel`` is :class:`hepgan.parallel.ParallelConfig` and
``scaling`` :class:`hepgan.train.scaling.ScalingConfig`. The YAML groups under ``hepgan/conf/`` fill
these schemas, so a misspelt key fails when the config is composed, not hours into a job; so does a value
that is not one of its key's choices (:data:`CHOICES`) or outside its range (:data:`RANGES`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from hepgan.data import formats, geometry, source
from hepgan.data.source import DataConfig
from hepgan.models import ModelConfig, conv
from hepgan.models import config as model_config
from hepgan.parallel import config as parallel_config
from hepgan.parallel.config import ParallelConfig
from hepgan.physics import metrics as physics_metrics
from hepgan.train import losses, scaling, schedules, step
from hepgan.train import state as train_state
from hepgan.train.rundir import register as _register_run_name
from hepgan.train.scaling import ScalingConfig


@dataclass
class OptimConfig:
    """Optimizers of both players (schema of group ``optim``).

    name: "rmsprop" (the papers) or "adam". lr_g, lr_d: base learning rates, tuned at ``ref_batch``.
    rho, eps: RMSprop decay and epsilon, Keras values (eps outside the square root; see
    :mod:`hepgan.train.schedules`). b1, b2: Adam moments (eps is shared). scaling: how the learning rates
    follow the global batch: "none", "linear" or "sqrt" relative to ``ref_batch``. warmup_steps: linear
    warm-up of every optimizer update count. decay: "constant" or "cosine". clip_norm: global gradient-norm
    clip (None: off).
    """

    name: str = "rmsprop"
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    rho: float = 0.9
    eps: float = 1e-7
    b1: float = 0.9
    b2: float = 0.999
    scaling: str = "none"
    ref_batch: int = 128
    warmup_steps: int = 0
    decay: str = "constant"
    clip_norm: float | None = None


@dataclass
class TrainConfig:
    """The training loop (schema of group ``train``).

    seed: run seed (model init, noise, label flips, dropout, data order). batch_size: global batch (all
    devices). epochs: passes over the training set; max_steps: stop earlier (None: epochs decide).
    schedule: "paper" | "n_critic" | "simultaneous" (see :mod:`hepgan.train.step`); n_critic, g_steps:
    discriminator / generator updates per step. label_flip: probability of flipping a discriminator label.
    loss_weights: None = the paper's weights for the model's arch, with the auxiliary terms (energy,
    ECAL sum, angle: all but the real/fake BCE) multiplied by ``aux_loss_scale`` (1 = the paper).
    adv_loss: the real/fake loss, "bce" (the paper), "hinge" or "lsgan"
    (:data:`hepgan.train.losses.ADV_LOSSES`). d_batch: "separate" (the paper) or "joint" real + fake
    batches through the discriminator's BatchNorm (:data:`hepgan.train.step.D_BATCH`; needs schedule
    n_critic or simultaneous). sample_bn: the generator's BatchNorm statistics when sampling
    (validation, evaluation, hepgan-generate): "running" (Keras ``predict``) or "recomputed" for the EMA
    weights from one batch of their own outputs (:func:`hepgan.train.state.recompute_bn_stats`).
    fake_energy_range: fixed25 only, energies of fakes drawn from U(lo, hi) in E/100 units as the Keras
    loop (None: reuse the real batch's).
    fake_bn: generator BatchNorm mode for the discriminator's fakes, "running" (Keras ``predict``) or
    "batch". ema_decay: generator weight EMA used for sampling and validation (0: off).
    val_every_epochs: validate every N epochs (and at step 0 and the end; 0: only those two).
    val_events: reference showers used per validation (None: all of ``data.n_reference``).
    val_metrics: metric names for validation (see :func:`hepgan.physics.metrics.evaluate`).
    report: write the full validation report at the end; report_metrics: its metrics (None: all).
    ckpt_every_steps: checkpoint every N steps (0: at the end of every ``ckpt_every_epochs`` epochs).
    keep_last: checkpoints kept; keep_best: also keep the best by validation ``physics_score``.
    on_nonfinite: "stop" (error, keep the last good checkpoint) or "rollback" (restore the last good
    checkpoint, skip ahead in the data, multiply the learning rates by ``rollback_lr_factor``; at most
    ``max_rollbacks`` times). resume: continue from the run directory's latest checkpoint if there is one.
    """

    seed: int = 0
    batch_size: int = 128
    epochs: int = 30
    max_steps: int | None = None
    schedule: str = "paper"
    n_critic: int = 5
    g_steps: int = 2
    label_flip: float = 0.05
    loss_weights: list[float] | None = None
    aux_loss_scale: float = 1.0
    adv_loss: str = "bce"
    d_batch: str = "separate"
    sample_bn: str = "running"
    fake_energy_range: list[float] | None = field(default_factory=lambda: [0.1, 5.0])
    fake_bn: str = "running"
    ema_decay: float = 0.999
    val_every_epochs: int = 1
    val_events: int | None = None
    val_metrics: list[str] = field(default_factory=lambda: ["fast"])
    report: bool = True
    report_metrics: list[str] | None = None
    ckpt_every_steps: int = 0
    ckpt_every_epochs: int = 1
    keep_last: int = 3
    keep_best: bool = True
    on_nonfinite: str = "stop"
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    resume: bool = True


@dataclass
class LoggingConfig:
    """What a run writes while it trains (schema of group ``logging``).

    every_steps: training metrics to CSV/TensorBoard and the non-finite check every N steps.
    tensorboard, csv: enable the writers. progress: rich progress bar on stderr.
    """

    every_steps: int = 10
    tensorboard: bool = True
    csv: bool = True
    progress: bool = True


@dataclass
class Config:
    """A whole training run. ``out`` is the run directory (checkpoints, logs, report, manifest)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    out: str = "runs/default"


ON_NONFINITE = ("stop", "rollback")
"""Values of ``train.on_nonfinite`` (interpreted by :func:`hepgan.train.loop.fit`)."""

CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": model_config.ARCHS,
    "model.size": model_config.SIZES,
    "model.conv_impl": conv.CONV_IMPLS,
    "model.conditioning": model_config.CONDITIONINGS,
    "data.kind": source.KINDS,
    "data.geometry": tuple(geometry.PRESETS),
    "data.file_geometry": tuple(geometry.PRESETS),
    "data.file_format": formats.FORMATS,
    "optim.name": schedules.OPTIMIZERS,
    "optim.scaling": scaling.RULES,
    "optim.decay": scaling.DECAYS,
    "train.schedule": step.SCHEDULES,
    "train.fake_bn": step.FAKE_BN,
    "train.d_batch": step.D_BATCH,
    "train.sample_bn": train_state.BN_STATS,
    "train.adv_loss": losses.ADV_LOSSES,
    "train.on_nonfinite": ON_NONFINITE,
    "train.val_metrics": (*physics_metrics.ALL, *physics_metrics.GROUPS),
    "train.report_metrics": (*physics_metrics.ALL, *physics_metrics.GROUPS),
    "parallel.backend": parallel_config.BACKENDS,
    "parallel.mpi_reduce": parallel_config.REDUCE_MODES,
    "parallel.launcher": parallel_config.LAUNCHERS,
    "scaling.rule": scaling.RULES,
    "scaling.decay": scaling.DECAYS,
    "scaling.optimizer": scaling.OPTIMIZERS,
    "scaling.g.rule": scaling.RULES,
    "scaling.d.rule": scaling.RULES,
}
"""Every key that takes one of a fixed set of strings, with its valid values. The tuples are imported
from the code that interprets the strings, so the check and the use cannot drift apart. A list-valued key
(``train.val_metrics``) takes any of them per element; ``None`` passes wherever the schema allows it."""


@dataclass(frozen=True)
class Range:
    """A closed, half-open or open interval of valid numbers; ``str()`` gives it as the error shows it."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: object) -> bool:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return True  # not a number: the schema's type check reports it
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def __str__(self) -> str:
        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


_COUNT, _NONNEG, _POSITIVE = Range(1), Range(0), Range(0, lo_open=True)
_FRACTION, _DECAY = Range(0, 1), Range(0, 1, hi_open=True)  # a probability; an EMA/momentum decay

RANGES: dict[str, Range] = {
    "model.dropout": _DECAY,
    "data.prefetch": _NONNEG,
    "data.n_events": _COUNT,
    "data.n_reference": _COUNT,
    "data.workers": _COUNT,
    "data.in_memory_max_gb": _NONNEG,  # 0: always the on-disk cache
    "data.reference_fraction": Range(0, 1, lo_open=True, hi_open=True),  # both sets need events
    "data.max_events": _COUNT,
    "data.cache_max_gb": _NONNEG,
    "data.cell_threshold": _NONNEG,  # GeV; null = the file format's default
    "optim.lr_g": _POSITIVE,
    "optim.lr_d": _POSITIVE,
    "optim.rho": _DECAY,
    "optim.eps": _POSITIVE,  # RMSprop divides by sqrt(v) + eps, which is 0 for a gradient of 0
    "optim.b1": _DECAY,
    "optim.b2": _DECAY,
    "optim.ref_batch": _COUNT,
    "optim.warmup_steps": _NONNEG,
    "train.batch_size": _COUNT,
    "train.epochs": _NONNEG,
    "train.max_steps": _NONNEG,
    "train.n_critic": _COUNT,
    "train.g_steps": _COUNT,
    "train.label_flip": _FRACTION,
    "train.ema_decay": _DECAY,  # 1 would freeze the EMA generator at its initial weights
    "train.aux_loss_scale": _NONNEG,  # 0: the adversarial term alone
    "train.val_every_epochs": _NONNEG,
    "train.val_events": _COUNT,
    "train.ckpt_every_steps": _NONNEG,
    "train.ckpt_every_epochs": _NONNEG,
    "train.keep_last": _COUNT,
    "train.max_rollbacks": _NONNEG,
    "train.rollback_lr_factor": Range(0, 1, lo_open=True),  # a rollback never raises the learning rate
    "logging.every_steps": _COUNT,  # the loop logs and checks for non-finite values at step % N == 0
    "parallel.devices": _COUNT,
    "parallel.num_processes": _COUNT,
    "parallel.process_id": _NONNEG,
    "parallel.init_timeout_s": _POSITIVE,
    "parallel.gns_ema": _DECAY,
    "scaling.ref_batch": _COUNT,
    "scaling.warmup_steps": _NONNEG,
    "scaling.weight_decay": _NONNEG,
    "scaling.trust_coefficient": _POSITIVE,
    "scaling.momentum": _DECAY,
    "scaling.g.ref_batch": _COUNT,
    "scaling.g.warmup_steps": _NONNEG,
    "scaling.g.lr_multiplier": _POSITIVE,
    "scaling.d.ref_batch": _COUNT,
    "scaling.d.warmup_steps": _NONNEG,
    "scaling.d.lr_multiplier": _POSITIVE,
}
"""Numeric keys with the values that make sense; ``None`` passes wherever the schema allows it."""


def value_problem(key: str, value: Any) -> str | None:
    """Why ``value`` is not valid for dotted ``key`` (per :data:`CHOICES` and :data:`RANGES`), or None.

    Interpolations (``${...}``) and ``None`` pass: they are resolved resp. type-checked later.
    """
    if value is None or (isinstance(value, str) and "${" in value):
        return None
    if key in CHOICES:
        valid = CHOICES[key]
        items = list(value) if isinstance(value, list | tuple | ListConfig) else [value]
        bad = [v for v in items if v not in valid]
        if bad:
            what = f"{bad[0]!r} is not" if len(bad) == 1 else f"{', '.join(map(repr, bad))} are not"
            return f"{key}: {what} a valid choice; valid choices: {', '.join(valid)}"
    if key in RANGES and value not in RANGES[key]:
        return f"{key}: {value!r} is out of range; must be {RANGES[key]}"
    return None


def _get(conf: Any, key: str) -> Any:
    for part in key.split("."):
        conf = getattr(conf, part)
    return conf


def validate(conf: Config) -> Config:
    """Check every key of :data:`CHOICES` and :data:`RANGES` in ``conf``; returns ``conf``.

    Raises one ``ValueError`` naming each bad key with its valid choices or range.
    """
    problems = [p for k in (*CHOICES, *RANGES) if (p := value_problem(k, _get(conf, k))) is not None]
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))
    return conf


GROUPS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "parallel": ParallelConfig,
    "scaling": ScalingConfig,
    "logging": LoggingConfig,
}


def register() -> None:
    """Register the schema as ``hepgan_schema`` (the first entry of ``hepgan/conf/config.yaml``)."""
    ConfigStore.instance().store(name="hepgan_schema", node=Config)


register()
_register_run_name()  # ${hepgan_run:}, the default run directory (hepgan/conf/config.yaml)


def valid_keys(path: str) -> list[str] | None:
    """Valid keys under a dotted config path (e.g. "optim"), or None if ``path`` takes any key."""
    tp: Any = Config
    for part in [p for p in path.split(".") if p]:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return []
        tp = hints[part]
    if not dataclasses.is_dataclass(tp):
        return None
    return [f.name for f in dataclasses.fields(tp)]


def check_key(key: str) -> None:
    """Raise ``ValueError`` listing the valid keys when dotted ``key`` is not in the schema."""
    parts = key.split(".")
    for i in range(len(parts)):
        keys = valid_keys(".".join(parts[:i]))
        if keys is None:  # free-form mapping (e.g. data.simulator): anything goes below
            return
        if parts[i] not in keys:
            where = "the top level" if i == 0 else f"group {'.'.join(parts[:i])!r}"
            raise ValueError(
                f"unknown config key {key!r}: {parts[i]!r} is not a key of {where}; valid keys: "
                f"{', '.join(keys)}"
            )


def check_overrides(overrides: list[str]) -> None:
    """Check command-line overrides against the schema (groups and ``hydra.*`` pass): the keys, and the
    values of keys with choices or a range (every value of a sweep), before Hydra's slower composition.

    Raises ``ValueError`` naming the unknown key and listing the valid keys of its group, or naming the
    key whose value is not one of its choices (listed) or outside its range.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_add() or o.is_delete():
            continue
        if key in ("experiment", "debug") or (key in GROUPS and "." not in key):
            continue  # a group choice; Hydra lists the available options itself
        check_key(key)
        values = list(o.sweep_iterator()) if o.is_sweep_override() and o.is_discrete_sweep() else [o.value()]
        for value in values:
            if (problem := value_problem(key, value)) is not None:
                raise ValueError(f"invalid config value: {problem}")


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose the packaged config with ``overrides`` (as on the command line), outside ``hepgan-train``.

    Unknown keys and invalid values (also those from YAML or experiment files) raise ``ValueError``
    listing the valid keys resp. choices.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    overrides = list(overrides or [])
    check_overrides(overrides)
    with initialize_config_module(config_module="hepgan.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    to_config(cfg)  # the values the YAML files brought in, checked as fit() will
    return cfg


def to_config(cfg: Config | DictConfig | dict[str, Any]) -> Config:
    """A typed, validated :class:`Config` from a Hydra ``DictConfig``, a plain dict or a ``Config``.

    Raises ``ValueError`` naming the key for an unknown key, a value of the wrong type, a value that is
    not one of the key's choices or outside its range (:func:`validate`).
    """
    if isinstance(cfg, Config):
        return validate(cfg)
    base = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(base, cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))
        conf = typing.cast(Config, OmegaConf.to_object(merged))
    except OmegaConfBaseException as exc:  # an unknown key, a value of the wrong type, a missing value
        key = getattr(exc, "full_key", None) or "?"
        if isinstance(exc, ConfigKeyError):
            check_key(key)  # raises the message that lists the valid keys
        raise ValueError(f"config key {key!r}: {str(exc).splitlines()[0]}") from None
    return validate(conf)


def to_dict(cfg: Config) -> dict[str, Any]:
    """JSON-able nested dict of a :class:`Config` (for manifests and result files)."""
    return typing.cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
