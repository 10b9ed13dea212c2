"""Structured-config schemas of a training run, registered in Hydra's ConfigStore.

The top-level :class:`Config` composes the rooms' own schemas: ``model`` is
:class:`hepgan.models.ModelConfig`, ``data`` is :class:`hepgan.data.source.DataConfig`; ``optim``,
``train`` and ``logging`` are defined here; ``parallel`` is :class:`hepgan.parallel.ParallelConfig` and
``scaling`` :class:`hepgan.train.scaling.ScalingConfig`. The YAML groups under ``hepgan/conf/`` fill
these schemas, so a misspelt key fails when the config is composed, not hours into a job.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from hepgan.data.source import DataConfig
from hepgan.models import ModelConfig
from hepgan.parallel.config import ParallelConfig
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
    loss_weights: None = the paper's weights for the model's arch. fake_energy_range: fixed25 only,
    energies of fakes drawn from U(lo, hi) in E/100 units as the Keras loop (None: reuse the real batch's).
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
    """Check the keys of command-line overrides against the schema (groups and ``hydra.*`` pass).

    Raises ``ValueError`` naming the unknown key and listing the valid keys of its group.
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


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose the packaged config with ``overrides`` (as on the command line), outside ``hepgan-train``.

    Unknown keys raise ``ValueError`` listing the valid ones.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    overrides = list(overrides or [])
    check_overrides(overrides)
    with initialize_config_module(config_module="hepgan.conf", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def to_config(cfg: Config | DictConfig | dict[str, Any]) -> Config:
    """A typed :class:`Config` from a Hydra ``DictConfig``, a plain dict or a ``Config``."""
    if isinstance(cfg, Config):
        return cfg
    base = OmegaConf.structured(Config)
    merged = OmegaConf.merge(base, cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))
    return typing.cast(Config, OmegaConf.to_object(merged))


def to_dict(cfg: Config) -> dict[str, Any]:
    """JSON-able nested dict of a :class:`Config` (for manifests and result files)."""
    return typing.cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
