"""Search spaces for Optuna written in YAML, and the bridge from sampled values to Hydra overrides.

Example (``experiments/hpo/space.yaml`` is a complete one)::

    study: hpo-3dgan              # Optuna study name
    direction: minimize
    objective: physics_score      # key of the training's final metrics (lower is better)
    fixed: [model.size=small]     # overrides added to every trial
    params:                       # the keys are Hydra override keys
      optim.lr_g: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
      optim.lr_d: {type: log, low: 1.0e-5, high: 1.0e-2}          # "log" = float with log: true
      train.batch_size: {type: int, low: 32, high: 256, step: 32}
      model.size: {type: categorical, choices: [small, paper]}
    enqueue:                      # optional: trials to run first (e.g. the current recipe as a baseline)
      - {optim.lr_g: 1.0e-3, optim.lr_d: 1.0e-3, train.batch_size: 128, model.size: small}
    sampler: {name: tpe, seed: 0, n_startup_trials: 10}          # tpe | random | qmc | gp
    pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 500}  # median | none; warm-up in updates

Values become overrides through :func:`format_value`, which writes them so that Hydra's parser reads back
the same value and type.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TYPES = ("float", "log", "int", "categorical")
# a string Hydra reads back as the same string without quotes
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")
_NOT_BARE = {"true", "false", "null", "nan", "inf", "none"}


def format_value(value: Any) -> str:
    """``value`` as Hydra override text that parses back to the same value and type.

    ``0.001 -> 0.001``, ``1e-05 -> 1.0e-05``, ``True -> true``, ``None -> null``, ``"small" -> small``,
    ``"a b" -> 'a b'``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        # Hydra's float grammar needs a dot before an exponent ("1e-05" is fine, but keep it explicit)
        if "e" in text and "." not in text.split("e")[0]:
            mant, exp = text.split("e")
            text = f"{mant}.0e{exp}"
        return text
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in _NOT_BARE:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class SearchSpace:
    """A parsed search space: Optuna distributions per override key plus study settings."""

    name: str
    distributions: dict[str, Any]
    direction: str = "minimize"
    objective: str = "physics_score"
    fixed: list[str] = field(default_factory=list)
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides of one trial: the fixed ones, then ``key=value`` per sampled parameter."""
        return [*self.fixed, *(f"{k}={format_value(v)}" for k, v in params.items())]

    def make_sampler(self, seed_offset: int = 0, *, seed: int | None = None) -> Any:
        """A new Optuna sampler; ``seed_offset`` keeps successive processes from repeating draws.

        Samplers are re-created in every process (array task, steering call), so a fixed seed alone would
        make each of them propose the same first points; the offset (number of trials so far) decorrelates
        them while keeping a campaign reproducible. ``seed``: use exactly this seed instead (a worker's own,
        see ``hepgan.sweep.study.WorkerIdentity``), whether or not the file has one.
        """
        import optuna

        opts = dict(self.sampler)
        kind = str(opts.pop("name", "tpe")).lower()
        base = opts.pop("seed", None)
        if seed is not None:
            opts["seed"] = int(seed)
        elif base is not None:
            opts["seed"] = int(base) + int(seed_offset)
        if kind == "tpe":
            # batches of trials are asked before any is told: the liar keeps them apart
            opts.setdefault("constant_liar", True)
            return optuna.samplers.TPESampler(**opts)
        if kind == "random":
            return optuna.samplers.RandomSampler(**opts)
        if kind == "qmc":
            return optuna.samplers.QMCSampler(**opts)
        if kind == "gp":
            return optuna.samplers.GPSampler(**opts)
        raise ValueError(
            f"search space {self.source}: sampler name {kind!r} is not one of tpe, random, qmc, gp"
        )

    def make_pruner(self) -> Any:
        """The Optuna pruner (``MedianPruner`` with the file's ``n_startup_trials``/``n_warmup_steps``).

        A trial reports its objective at the training step of each validation, so ``n_warmup_steps``
        counts training updates, not validations."""
        import optuna

        opts = dict(self.pruner)
        kind = str(opts.pop("name", "median")).lower()
        if kind == "median":
            opts.setdefault("n_startup_trials", 5)
            opts.setdefault("n_warmup_steps", 3)
            return optuna.pruners.MedianPruner(**opts)
        if kind in ("none", "nop"):
            return optuna.pruners.NopPruner()
        raise ValueError(f"search space {self.source}: pruner name {kind!r} is not one of median, none")


def _distribution(key: str, spec: Any, source: str) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    where = f"search space {source}: params.{key}"
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"{where} must be a mapping with 'type' (one of {', '.join(_TYPES)}); got {spec!r}")
    kind = spec["type"]
    extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if extra:
        raise ValueError(f"{where}: unknown fields {sorted(extra)}")
    try:
        if kind in ("float", "log"):
            log = bool(spec.get("log", kind == "log"))
            step = spec.get("step")
            return FloatDistribution(
                float(spec["low"]), float(spec["high"]), log=log, step=None if step is None else float(step)
            )
        if kind == "int":
            return IntDistribution(
                int(spec["low"]),
                int(spec["high"]),
                log=bool(spec.get("log", False)),
                step=int(spec.get("step", 1)),
            )
        if kind == "categorical":
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise ValueError("'choices' must be a non-empty list")
            return CategoricalDistribution(choices)
    except KeyError as exc:
        raise ValueError(f"{where} ({kind}) needs field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({kind}): {exc}") from None
    raise ValueError(f"{where}: type {kind!r} is not one of {', '.join(_TYPES)}")


def _enqueue(items: Any, distributions: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    """The ``enqueue`` list: each entry a complete mapping of the space's keys to values it can take."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"search space {source}: 'enqueue' must be a list of mappings of params")
    out = []
    for i, item in enumerate(items):
        where = f"search space {source}: enqueue[{i}]"
        if not isinstance(item, Mapping) or set(map(str, item)) != set(distributions):
            have = sorted(map(str, item)) if isinstance(item, Mapping) else item
            raise ValueError(f"{where} must give every key of 'params' ({sorted(distributions)}); got {have}")
        for k, v in item.items():
            if not distributions[str(k)]._contains(distributions[str(k)].to_internal_repr(v)):
                raise ValueError(f"{where}: {k}={v!r} is outside the space's {distributions[str(k)]}")
        out.append({str(k): v for k, v in item.items()})
    return out


def parse_space(doc: Mapping[str, Any], *, source: str = "<dict>") -> SearchSpace:
    """Build a :class:`SearchSpace` from a parsed YAML mapping (see the module docstring)."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"search space {source}: expected a mapping at the top; got {type(doc).__name__}")
    known = {"study", "direction", "objective", "fixed", "params", "sampler", "pruner", "enqueue"}
    extra = set(doc) - known
    if extra:
        raise ValueError(f"search space {source}: unknown keys {sorted(extra)} (known: {sorted(known)})")
    params = doc.get("params")
    if not isinstance(params, Mapping) or not params:
        raise ValueError(
            f"search space {source}: 'params' must be a non-empty mapping of override key -> spec"
        )
    direction = str(doc.get("direction", "minimize"))
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"search space {source}: direction must be minimize or maximize; got {direction!r}")
    fixed = doc.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(f, str) and "=" in f for f in fixed):
        raise ValueError(f"search space {source}: 'fixed' must be a list of 'key=value' overrides")
    for section in ("sampler", "pruner"):
        if not isinstance(doc.get(section) or {}, Mapping):
            raise ValueError(f"search space {source}: {section!r} must be a mapping")
    distributions = {str(k): _distribution(str(k), v, source) for k, v in params.items()}
    return SearchSpace(
        name=str(doc.get("study", "hepgan-hpo")),
        distributions=distributions,
        enqueue=_enqueue(doc.get("enqueue"), distributions, source),
        direction=direction,
        objective=str(doc.get("objective", "physics_score")),
        fixed=list(fixed),
        sampler=dict(doc.get("sampler") or {}),
        pruner=dict(doc.get("pruner") or {}),
        source=source,
    )


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read a search space YAML file."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"search space {str(p)!r}: cannot read YAML ({exc})") from None
    return parse_space(doc, source=repr(str(p)))
