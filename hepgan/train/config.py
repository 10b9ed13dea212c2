"""Structured-config schemas of a training run, registered in Hydra's ConfigStore.

The top-level :class:`Config` composes the rooms' own schemas: ``model`` is
:class:`hepgan.models.ModelConfig`, ``data`` is :class:`hepgan.data.config.DataConfig`; ``train`` and
``logging`` are defined here; ``parallel`` is :class:`hepgan.parallel.ParallelConfig`; ``optim`` (the
optimizer) and ``scaling`` (how its learning rates follow the batch and time) are
:class:`hepgan.train.scaling.OptimConfig` and :class:`hepgan.train.scaling.ScalingConfig`.

The schemas hold every default, and ``hepgan-train`` without arguments is the demo, so their defaults are
the demo's values. The YAML groups under ``hepgan/conf/`` hold only what differs from the schema, each
difference with its reason (``tests/test_train_config.py`` fails on a YAML value that restates a
default). Composition checks the keys against the schemas, so a misspelt key fails when the config is
composed, not hours into a job; so does a value that is not one of its key's choices (:data:`CHOICES`)
or outside its range (:data:`RANGES`).
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

from hepgan.data import config as data_config
from hepgan.data import formats, geometry
from hepgan.data.config import DataConfig
from hepgan.models import ModelConfig, conv
from hepgan.models import config as model_config
from hepgan.parallel import config as parallel_config
from hepgan.parallel.config import ParallelConfig
from hepgan.physics import metrics as physics_metrics
from hepgan.train import losses, scaling, step
from hepgan.train import state as train_state
from hepgan.train.rundir import register as _register_run_name
from hepgan.train.scaling import OptimConfig, ScalingConfig


@dataclass
class TrainConfig:
    """The training loop (schema of group ``train``): the paper's update (D on a real batch, D on a fake
    batch, G twice; 5 % label flips; the paper's loss weights) with the demo's batch, length and auxiliary
    loss scale. The paper experiments (``experiment=paper_fixed25``, ``paper_angle51``) set their own.

    seed: run seed (model init, noise, label flips, dropout, data order). batch_size: global batch (all
    devices); the demo's 16: 768 updates in 3 epochs of 4096 showers, about 9 min on 2 cores, and at equal
    CPU time batch 16 learned more than batch 32 (docs/training.md); the papers use 128 (fixed25) and 64
    (angle51). epochs: passes over the training set (the demo's 3); max_steps: stop earlier (None: epochs
    decide).
    schedule: "paper" | "n_critic" | "simultaneous" (see :mod:`hepgan.train.step`); n_critic, g_steps:
    discriminator / generator updates per step. label_flip: probability of flipping a discriminator label.
    loss_weights: None = the paper's weights for the model's arch, with the auxiliary terms (energy,
    ECAL sum, angle: all but the real/fake BCE) multiplied by ``aux_loss_scale`` (1 = the paper). The
    demo's 0.2 gives fixed25 the weights [2, 0.02, 0.02] (the auxiliary terms are MAPEs in percent): at
    the paper's [2, 0.1, 0.1] they outweigh the real/fake term early on, the discriminator wins and in
    192-384 updates the generator learns the energy sum but no shape (stripes, physics_score 0.97-1.06);
    at x0.2 the same model shows a shower core and the longitudinal profile after 384 updates (0.42;
    experiments/demo/README.md has the runs). The paper experiments set 1.0.
    adv_loss: the real/fake loss, "bce" (the paper), "hinge" or "lsgan"
    (:data:`hepgan.train.losses.ADV_LOSSES`). d_batch: "separate" (the paper) or "joint" real + fake
    batches through the discriminator's BatchNorm (:data:`hepgan.train.step.D_BATCH`; needs schedule
    n_critic or simultaneous). sample_bn: the generator's BatchNorm statistics when sampling
    (validation, evaluation, hepgan-generate): "running" (Keras ``predict``) or "recomputed" for the EMA
    weights from one batch of their own outputs (:func:`hepgan.train.state.recompute_bn_stats`).
    fake_energy_range: fixed25 only, energies of fakes drawn from U(lo, hi) in E/100 units as the Keras
    loop: U(0.1, 5) x 100 GeV = the data's 10-500 GeV (None: reuse the real batch's).
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
    profile_steps: ``[first, last]`` training steps (1-based, inclusive) to record with the JAX profiler
    into ``out/profile`` (TensorBoard's profile tab, Perfetto); None: no trace.
    """

    seed: int = 0
    batch_size: int = 16  # the demo's (the papers: 128, 64)
    epochs: int = 3  # the demo's (the papers: 30, 60)
    max_steps: int | None = None
    schedule: str = "paper"
    n_critic: int = 5
    g_steps: int = 2
    label_flip: float = 0.05
    loss_weights: list[float] | None = None
    aux_loss_scale: float = 0.2  # the demo's (the papers: 1.0)
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
    profile_steps: list[int] | None = None


@dataclass
class LoggingConfig:
    """What a run writes while it trains (schema of group ``logging``).

    every_steps: training metrics to CSV/TensorBoard and the non-finite check every N steps; 10 keeps
    host synchronisations rare.
    tensorboard, csv: enable the writers. progress: progress on stderr, a bar on a terminal and periodic
    plain lines in a batch log (docs/training.md, "Progress").
    layer_stats_every: per-layer weight, gradient and update norms of both players to ``layers.csv`` (and
    TensorBoard) every N steps; 0 turns them off (the step then does not compute them).
    dynamics_events: at each validation, the discriminator's output on this many reference showers and on
    as many generated ones, per energy (and angle) bin, and the generated showers' diversity against the
    data's, to ``dynamics.csv`` (read by ``hepgan-explain dynamics``); 0 turns it off.
    tb_showers: at each validation, shower projections (images) and observable histograms of the generated
    and the reference showers in TensorBoard.
    """

    every_steps: int = 10
    tensorboard: bool = True
    csv: bool = True
    progress: bool = True
    layer_stats_every: int = 20
    dynamics_events: int = 512
    tb_showers: bool = True


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
    "model.dropout_rng": model_config.DROPOUT_RNGS,
    "model.conditioning": model_config.CONDITIONINGS,
    "data.kind": data_config.KINDS,
    "data.geometry": tuple(geometry.PRESETS),
    "data.file_geometry": tuple(geometry.PRESETS),
    "data.file_format": formats.FORMATS,
    "optim.name": scaling.OPTIMIZERS,
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
    "optim.rmsprop.rho": _DECAY,
    "optim.rmsprop.eps": _POSITIVE,  # RMSprop divides by sqrt(v) + eps, which is 0 for a gradient of 0
    "optim.adam.b1": _DECAY,
    "optim.adam.b2": _DECAY,
    "optim.adam.eps": _POSITIVE,
    "optim.lars.momentum": _DECAY,
    "optim.lars.trust_coefficient": _POSITIVE,
    "optim.lars.weight_decay": _NONNEG,
    "optim.lamb.b1": _DECAY,
    "optim.lamb.b2": _DECAY,
    "optim.lamb.eps": _POSITIVE,
    "optim.lamb.weight_decay": _NONNEG,
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
    "logging.layer_stats_every": _NONNEG,
    "logging.dynamics_events": _NONNEG,
    "parallel.devices": _COUNT,
    "parallel.num_processes": _COUNT,
    "parallel.process_id": _NONNEG,
    "parallel.init_timeout_s": _POSITIVE,
    "parallel.exchange_every": _COUNT,
    "parallel.comm_every": _NONNEG,
    "parallel.gns_ema": _DECAY,
    "scaling.ref_batch": _COUNT,
    "scaling.warmup_steps": _NONNEG,
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
    steps = conf.train.profile_steps
    if steps is not None and not (len(steps) == 2 and 1 <= int(steps[0]) <= int(steps[1])):
        problems.append(
            f"train.profile_steps must be [first, last] with 1 <= first <= last; got {list(steps)}"
        )
    if conf.parallel.backend in parallel_config.MASTER_WORKER and conf.train.on_nonfinite != "stop":
        problems.append(
            f"train.on_nonfinite={conf.train.on_nonfinite!r}: parallel.backend={conf.parallel.backend} stops "
            "on a non-finite value (a rollback would need every worker and the master to go back together); "
            "use train.on_nonfinite=stop"
        )
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


def check_overrides(overrides: list[str], config_dirs: list[str] | None = None) -> None:
    """Check command-line overrides before Hydra's slower composition: a group choice against the group's
    options on hepgan's config search path (the packaged configs, the ``./conf`` and ``$HEPGAN_CONF``
    layers of docs/configuration.md, ``hydra.searchpath`` and ``config_dirs``, Hydra's ``--config-dir``),
    any other key against the schema (``hydra.*`` keys pass), and the values of keys with choices or a
    range; every value of a sweep. Building the search path also checks the layers.

    Raises ``ValueError`` naming the unknown key and listing the valid keys of its group, naming the key
    whose value is not one of its choices (listed) or outside its range, naming the group whose option
    does not exist (its options listed), or naming a layer file that would shadow another (both files).
    """
    import os

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [o for o in overrides if not o.startswith("-")]
    search = create_config_search_path("pkg://hepgan.conf")  # as hepgan-train's; raises for a bad layer
    for d in config_dirs or []:
        search.prepend("command-line", f"file://{os.path.abspath(d)}", SearchPathQuery(provider="schema"))
    loader = ConfigLoaderImpl(config_search_path=search)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)  # loader: glob()
    for o in parsed:
        key = o.key_or_group
        if o.is_delete():
            continue
        values = list(o.sweep_iterator()) if o.is_sweep_override() and o.is_discrete_sweep() else [o.value()]
        options = [] if "." in key or key == "hydra" else loader.get_group_options(key, overrides=overrides)
        if options:  # a config group: each chosen option must exist in some layer
            chosen = [v for value in values for v in (value if isinstance(value, list) else [value])]
            bad = [v for v in chosen if isinstance(v, str) and "/" not in v and v not in options]
            if bad:
                raise ValueError(
                    f"invalid config choice: {key}: {bad[0]!r} is not a valid choice; valid choices: "
                    f"{', '.join(options)}"
                )
            continue
        if key.startswith("hydra") or o.is_add():
            continue
        check_key(key)
        for value in values:
            if (problem := value_problem(key, value)) is not None:
                raise ValueError(f"invalid config value: {problem}")


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose the packaged config with ``overrides`` (as on the command line), outside ``hepgan-train``.

    The config search path is ``hepgan-train``'s: the packaged groups, then the user and site layers
    ``./conf`` and ``$HEPGAN_CONF`` (docs/configuration.md), whose options (``experiment=my_study``,
    ``+site=mycluster``) can be chosen here as on the command line. Unknown keys, invalid values (also
    those from YAML or experiment files) and unknown group options raise ``ValueError`` listing the valid
    keys resp. choices; so does a layer file that would shadow a packaged one (naming both files).
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


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict written by an earlier hepgan (a run's ``manifest.json``) in today's layout, so that
    its run restores. Runs made before ``model.dropout_rng`` existed drew their dropout masks with
    Threefry: their config gets ``dropout_rng: threefry``, so that resuming one with today's default (the
    hash) is refused with that difference named rather than continued with other masks. Earlier layouts
    kept the learning-rate scaling in ``optim`` (``optim.scaling``,
    ``ref_batch``, ``warmup_steps``, ``decay``, taken where ``scaling`` left them null), the RMSprop and
    Adam settings flat in ``optim`` (``rho``, ``eps``, ``b1``, ``b2``), and the large-batch optimizer in
    ``scaling`` (``scaling.optimizer``, ``weight_decay``, ``trust_coefficient``, ``momentum``). A config
    in today's layout is returned unchanged; ``config`` itself is never modified."""
    model = config.get("model")
    if isinstance(model, dict) and model and "dropout_rng" not in model:
        config = {**config, "model": {**model, "dropout_rng": "threefry"}}
    optim, scaling = dict(config.get("optim") or {}), dict(config.get("scaling") or {})
    from_optim = {"scaling": "rule", **{k: k for k in ("ref_batch", "warmup_steps", "decay")}}
    from_scaling = {"optimizer", "trust_coefficient", "momentum", "weight_decay"}
    if not ({*from_optim, "rho", "eps", "b1", "b2"} & set(optim) or from_scaling & set(scaling)):
        return config
    for old, new in from_optim.items():
        value = optim.pop(old, None)
        if scaling.get(new) is None and value is not None:
            scaling[new] = value
    flat = {k: optim.pop(k) for k in ("rho", "eps", "b1", "b2") if k in optim}
    if "rho" in flat or (optim.get("name", "rmsprop") == "rmsprop" and "eps" in flat):
        optim["rmsprop"] = {k: flat[k] for k in ("rho", "eps") if k in flat}
    if optim.get("name") == "adam":
        optim["adam"] = {k: flat[k] for k in ("b1", "b2", "eps") if k in flat}
    large = scaling.pop("optimizer", None)
    knobs = {k: scaling.pop(k) for k in ("weight_decay", "trust_coefficient", "momentum") if k in scaling}
    if large in ("lars", "lamb"):
        optim["name"] = large
        keep = ("weight_decay", "trust_coefficient", "momentum") if large == "lars" else ("weight_decay",)
        optim[large] = {k: knobs[k] for k in keep if k in knobs}
    return {**config, "optim": optim, "scaling": scaling}


def to_dict(cfg: Config) -> dict[str, Any]:
    """JSON-able nested dict of a :class:`Config` (for manifests and result files)."""
    return typing.cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
