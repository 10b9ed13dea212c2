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
      optim: {type: categorical, choices: [rmsprop, adam]}        # a config group: its preset applies
    enqueue:                      # optional: trials to run first (e.g. the current recipe as a baseline)
      - {optim.lr_g: 1.0e-3, optim.lr_d: 1.0e-3, train.batch_size: 128, model.size: small, optim: rmsprop}
    sampler: {name: tpe, seed: 0, n_startup_trials: 10}          # see SAMPLERS; arguments go to Optuna
    pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 500}  # see PRUNERS; warm-up in updates

Several objectives (a Pareto search; no pruning then, Optuna does not prune multi-objective studies)::

    objectives: {physics_score: minimize, showers_per_s: maximize}

Values become overrides through :func:`format_value`, which writes them so that Hydra's parser reads back
the same value and type. A sampled ``<group>.name`` whose value names a file of a packaged config group
(``optim.name: adam`` and ``hepgan/conf/optim/adam.yaml``) becomes the group override ``optim=adam``, so
that the preset applies (its learning rates, ...); keys sampled beside it (``optim.lr_g``) still win, as
Hydra applies group files before value overrides.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: sampler name in a space file -> Optuna class (``optuna.samplers.<class>``)
SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "bruteforce": "BruteForceSampler",
}
#: pruner name in a space file -> Optuna class (``optuna.pruners.<class>``)
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "patient": "PatientPruner",
    "none": "NopPruner",
}
#: other spellings accepted for the names above
_ALIASES = {
    "cma-es": "cmaes",
    "cma": "cmaes",
    "nsgaii": "nsga2",
    "nsga-ii": "nsga2",
    "nsgaiii": "nsga3",
    "nsga-iii": "nsga3",
    "brute_force": "bruteforce",
    "brute-force": "bruteforce",
    "sha": "successive_halving",
    "asha": "successive_halving",
    "nop": "none",
}
#: modules a sampler needs beyond Optuna, with how to get them
_NEEDS = {
    "cmaes": ("cmaes", "pip install cmaes (or pip install 'hepgan[hpo]')"),
    "gp": ("torch", "pip install torch (the CPU build is enough; hepgan does not depend on it)"),
    "qmc": ("scipy", "pip install scipy"),
}
#: samplers that cannot search several objectives at once
_SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
#: constructor arguments that take Python objects (callables, other samplers): not settable from YAML
_OBJECT_ANNOTATIONS = ("Callable", "Base", "FrozenTrial", "ndarray")
_DIRECTIONS = ("minimize", "maximize")

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


def _canonical(name: Any) -> str:
    text = str(name).strip().lower()
    return _ALIASES.get(text, text)


def _yaml_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor arguments of ``cls`` a YAML file can set (not those taking Python objects)."""
    out = {}
    for name, par in inspect.signature(cls).parameters.items():
        if par.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if any(word in str(par.annotation) for word in _OBJECT_ANNOTATIONS):
            continue
        out[name] = par
    return out


def _qualname(section: str, cls: type) -> str:
    return f"optuna.{'samplers' if section.startswith('sampler') else 'pruners'}.{cls.__name__}"


def _check_arguments(source: str, section: str, kind: str, cls: type, opts: Mapping[str, Any]) -> None:
    """ValueError naming the space file and ``section`` when ``opts`` has an argument ``cls`` does not take
    from YAML (a typo, or one that takes a Python object), or lacks a required one."""
    accepted = _yaml_arguments(cls)
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ValueError(
            f"search space {source}: {section} {kind!r} ({_qualname(section, cls)}) "
            f"takes no argument {', '.join(map(repr, unknown))}; the arguments it accepts from a space file "
            f"are {', '.join(sorted(accepted)) or 'none'} (see the Optuna documentation of {cls.__name__})"
        )
    missing = sorted(
        n for n, par in accepted.items() if par.default is inspect.Parameter.empty and n not in opts
    )
    if missing:
        raise ValueError(
            f"search space {source}: {section} {kind!r} ({cls.__name__}) needs the argument(s) "
            f"{', '.join(missing)}; give them in the {section} mapping, e.g. "
            f"{section}: {{name: {kind}, {missing[0]}: ...}}"
        )


def _optuna_class(section: str, kind: str, source: str) -> type:
    """The Optuna class behind ``kind`` in ``section`` (``sampler`` or ``pruner``) of a space file."""
    import optuna

    table, module = (SAMPLERS, optuna.samplers) if section == "sampler" else (PRUNERS, optuna.pruners)
    if kind not in table:
        raise ValueError(
            f"search space {source}: {section} name {kind!r} is not one of {', '.join(table)} "
            "(docs/sweeps.md lists the Optuna class of each)"
        )
    return getattr(module, table[kind])


def _check_sampler(spec: Mapping[str, Any], source: str, n_objectives: int) -> None:
    opts = dict(spec)
    kind = _canonical(opts.pop("name", "tpe"))
    cls = _optuna_class("sampler", kind, source)
    _check_arguments(source, "sampler", kind, cls, opts)
    if n_objectives > 1 and kind in _SINGLE_OBJECTIVE_SAMPLERS:
        raise ValueError(
            f"search space {source}: sampler {kind!r} searches one objective only and the space gives "
            f"{n_objectives}; use tpe, nsga2, nsga3, gp, qmc or random for a multi-objective search"
        )


def _check_pruner(spec: Mapping[str, Any], source: str, n_objectives: int, section: str = "pruner") -> None:
    opts = dict(spec)
    kind = _canonical(opts.pop("name", "median"))
    cls = _optuna_class("pruner", kind, source)
    if n_objectives > 1 and kind != "none":
        raise ValueError(
            f"search space {source}: {section} {kind!r} given for a search of {n_objectives} objectives; "
            "Optuna cannot prune multi-objective studies (trial.report is single-objective): remove "
            f"'{section}' or set it to {{name: none}}"
        )
    wrapped = opts.pop("wrapped", None)
    _check_arguments(source, section, kind, cls, opts)
    if kind == "patient":
        if wrapped is not None and not isinstance(wrapped, Mapping):
            raise ValueError(
                f"search space {source}: {section}.wrapped must be a pruner mapping such as "
                "{name: median, n_warmup_steps: 500}"
            )
        _check_pruner(wrapped or {"name": "median"}, source, n_objectives, f"{section}.wrapped")
    elif wrapped is not None:
        raise ValueError(f"search space {source}: {section}.wrapped is for the patient pruner only")


def _construct(source: str, section: str, kind: str, cls: type, opts: Mapping[str, Any]) -> Any:
    from optuna.exceptions import ExperimentalWarning

    try:
        with warnings.catch_warnings():
            # the space file chose the experimental class (QMC, NSGA-III, ...) or option on purpose
            warnings.simplefilter("ignore", ExperimentalWarning)
            return cls(**opts)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"search space {source}: {section} {kind!r} ({cls.__name__}) rejects its arguments "
            f"{dict(opts)}: {exc}"
        ) from None


def _packaged_group_option(group: str, value: Any) -> bool:
    """Whether ``<group>=<value>`` selects a preset of the packaged config group ``group``
    (``hepgan/conf/<group>/<value>.yaml``) that stands for ``<group>.name=<value>``: the file exists, the
    group's files set ``name`` (so the group has one), and this file's ``name``, if set, is ``value``."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", value):
        return False
    if not re.fullmatch(r"[A-Za-z_]\w*", group):
        return False
    from importlib import resources

    import yaml

    try:
        folder = resources.files("hepgan.conf").joinpath(group)
        if not folder.joinpath(f"{value}.yaml").is_file():
            return False
        names = {}
        for f in folder.iterdir():
            if f.name.endswith(".yaml"):
                doc = yaml.safe_load(f.read_text())
                if isinstance(doc, Mapping) and "name" in doc:
                    names[f.name.removesuffix(".yaml")] = doc["name"]
    except (ModuleNotFoundError, OSError, yaml.YAMLError):
        return False
    return bool(names) and names.get(value, value) == value


def override_of(key: str, value: Any) -> str:
    """The Hydra override of one sampled parameter: ``key=value``, except that ``<group>.name`` set to an
    option of a packaged config group becomes ``<group>=<value>`` (``optim.name=adam`` -> ``optim=adam``)
    so that the group's preset file applies."""
    group, dot, leaf = key.partition(".")
    if dot and leaf == "name" and _packaged_group_option(group, value):
        return f"{group}={value}"
    return f"{key}={format_value(value)}"


@dataclass
class SearchSpace:
    """A parsed search space: Optuna distributions per override key plus study settings.

    ``objectives``/``directions``: the metrics searched and their directions, in order (one for a plain
    search); ``objective``/``direction`` are the first of them.
    """

    name: str
    distributions: dict[str, Any]
    direction: str = "minimize"
    objective: str = "physics_score"
    fixed: list[str] = field(default_factory=list)
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    objectives: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.objectives:
            self.objectives, self.directions = [self.objective], [self.direction]
        if len(self.directions) != len(self.objectives):
            raise ValueError(
                f"search space {self.source}: {len(self.objectives)} objectives but "
                f"{len(self.directions)} directions"
            )
        self.objective, self.direction = self.objectives[0], self.directions[0]

    @property
    def multi_objective(self) -> bool:
        """Whether the search has several objectives (a Pareto front, no pruning)."""
        return len(self.objectives) > 1

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides of one trial: the fixed ones, then one per sampled parameter
        (:func:`override_of`: ``key=value``, or ``group=option`` for a preset)."""
        return [*self.fixed, *(override_of(k, v) for k, v in params.items())]

    def make_sampler(self, seed_offset: int = 0, *, seed: int | None = None) -> Any:
        """A new Optuna sampler named by the file's ``sampler.name`` (see :data:`SAMPLERS`), the other
        entries passed to its constructor; ``seed_offset`` keeps successive processes from repeating draws.

        Samplers are re-created in every process (array task, steering call), so a fixed seed alone would
        make each of them propose the same first points; the offset (number of trials so far) decorrelates
        them while keeping a campaign reproducible. ``seed``: use exactly this seed instead (a worker's own,
        see ``hepgan.sweep.study.WorkerIdentity``), whether or not the file has one. TPE defaults to
        ``constant_liar=True``: batches of trials are asked before any is told. A sampler whose extra package
        is missing (``cmaes`` for CMA-ES, ``torch`` for GP) raises ValueError saying what to install.
        """
        opts = dict(self.sampler)
        kind = _canonical(opts.pop("name", "tpe"))
        cls = _optuna_class("sampler", kind, self.source)
        _check_arguments(self.source, "sampler", kind, cls, opts)
        base = opts.pop("seed", None)
        if seed is not None:
            opts["seed"] = int(seed)
        elif base is not None:
            opts["seed"] = int(base) + int(seed_offset)
        if kind == "tpe":
            # batches of trials are asked before any is told: the liar keeps them apart
            opts.setdefault("constant_liar", True)
        if kind in _NEEDS:
            module, how = _NEEDS[kind]
            if importlib.util.find_spec(module) is None:
                raise ValueError(
                    f"search space {self.source}: sampler {kind!r} (optuna.samplers.{cls.__name__}) "
                    f"needs the Python package {module!r}, which is not installed: {how}; or choose "
                    f"another sampler ({', '.join(k for k in SAMPLERS if k != kind)})"
                )
        return _construct(self.source, "sampler", kind, cls, opts)

    def make_pruner(self) -> Any:
        """The Optuna pruner named by the file's ``pruner.name`` (see :data:`PRUNERS`; default ``median``
        with ``n_startup_trials: 5``, ``n_warmup_steps: 3``), the other entries passed to its constructor;
        ``patient`` wraps the pruner given as ``wrapped`` (default median). A multi-objective search gets
        ``NopPruner``: Optuna does not prune those.

        A trial reports its objective at the training step of each validation, so ``n_warmup_steps`` (and
        ``min_resource``, ``max_resource`` of the halving pruners) count training updates, not validations."""
        if self.multi_objective:
            import optuna

            return optuna.pruners.NopPruner()
        return _make_pruner(self.pruner, self.source, "pruner")


def _make_pruner(spec: Mapping[str, Any], source: str, section: str) -> Any:
    opts = dict(spec)
    kind = _canonical(opts.pop("name", "median"))
    cls = _optuna_class("pruner", kind, source)
    wrapped = opts.pop("wrapped", None)
    _check_arguments(source, section, kind, cls, opts)
    if kind == "median":
        opts.setdefault("n_startup_trials", 5)
        opts.setdefault("n_warmup_steps", 3)
    if kind == "patient":
        opts["wrapped_pruner"] = _make_pruner(wrapped or {"name": "median"}, source, f"{section}.wrapped")
    return _construct(source, section, kind, cls, opts)


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


def _objectives(doc: Mapping[str, Any], source: str) -> tuple[list[str], list[str]]:
    """The objectives and directions of a space: ``objectives: {name: direction, ...}`` or the single
    ``objective``/``direction`` pair."""
    if "objectives" in doc:
        if "objective" in doc or "direction" in doc:
            raise ValueError(
                f"search space {source}: give either 'objectives' (several, each with its direction) or "
                "'objective' and 'direction', not both"
            )
        spec = doc["objectives"]
        if not isinstance(spec, Mapping) or not spec:
            raise ValueError(
                f"search space {source}: 'objectives' must be a non-empty mapping of metric -> direction, "
                "e.g. {physics_score: minimize, showers_per_s: maximize}"
            )
        names, directions = [str(k) for k in spec], [str(v) for v in spec.values()]
    else:
        names, directions = (
            [str(doc.get("objective", "physics_score"))],
            [str(doc.get("direction", "minimize"))],
        )
    for name, direction in zip(names, directions, strict=True):
        if direction not in _DIRECTIONS:
            field_name = f"objectives.{name}" if "objectives" in doc else "direction"
            raise ValueError(
                f"search space {source}: {field_name} must be minimize or maximize; got {direction!r}"
            )
    return names, directions


def parse_space(doc: Mapping[str, Any], *, source: str = "<dict>") -> SearchSpace:
    """Build a :class:`SearchSpace` from a parsed YAML mapping (see the module docstring).

    Checks everything a campaign would trip over later: parameter specs, ``enqueue`` points, objective
    directions, and the sampler's and pruner's names and arguments against the Optuna constructors
    (ValueError naming the file and the field, with the valid choices).
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"search space {source}: expected a mapping at the top; got {type(doc).__name__}")
    known = {
        "study",
        "direction",
        "objective",
        "objectives",
        "fixed",
        "params",
        "sampler",
        "pruner",
        "enqueue",
    }
    extra = set(doc) - known
    if extra:
        raise ValueError(f"search space {source}: unknown keys {sorted(extra)} (known: {sorted(known)})")
    params = doc.get("params")
    if not isinstance(params, Mapping) or not params:
        raise ValueError(
            f"search space {source}: 'params' must be a non-empty mapping of override key -> spec"
        )
    objectives, directions = _objectives(doc, source)
    fixed = doc.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(f, str) and "=" in f for f in fixed):
        raise ValueError(f"search space {source}: 'fixed' must be a list of 'key=value' overrides")
    for section in ("sampler", "pruner"):
        if not isinstance(doc.get(section) or {}, Mapping):
            raise ValueError(f"search space {source}: {section!r} must be a mapping")
    sampler, pruner = dict(doc.get("sampler") or {}), dict(doc.get("pruner") or {})
    _check_sampler(sampler, source, len(objectives))
    if pruner or len(objectives) == 1:
        _check_pruner(pruner, source, len(objectives))
    distributions = {str(k): _distribution(str(k), v, source) for k, v in params.items()}
    if _canonical(sampler.get("name", "tpe")) == "bruteforce":
        endless = [k for k, d in distributions.items() if getattr(d, "step", 1) is None]
        if endless:
            raise ValueError(
                f"search space {source}: sampler 'bruteforce' enumerates every point, so every float "
                f"parameter needs a 'step'; params {', '.join(endless)} have none"
            )
    return SearchSpace(
        name=str(doc.get("study", "hepgan-hpo")),
        distributions=distributions,
        enqueue=_enqueue(doc.get("enqueue"), distributions, source),
        objectives=objectives,
        directions=directions,
        fixed=list(fixed),
        sampler=sampler,
        pruner=pruner,
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
