"""Index-addressed sweep plans: one Hydra override set per line, run by array jobs.

A sweep is written in Hydra's override grammar (``optim.lr_g=1e-3,5e-4 train.batch_size=64,128
model=fixed25_paper``, ``range(...)``, ``choice(...)``, ``glob(...)``) and expanded by Hydra's own parser and
``BasicSweeper``, so the plan's entries are exactly the jobs ``hepgan-train -m`` would launch, in the
same order. Entry ``i`` of the plan is then addressable by an array task index, which is all a batch
system (Slurm, LSF, PanDA) needs.

Plan file format (text, UTF-8)::

    # hepgan-sweep plan v1
    # sweep: optim.lr_g=1e-3,5e-4 train.batch_size=64,128
    optim.lr_g=1e-3 train.batch_size=64
    optim.lr_g=1e-3 train.batch_size=128  # optuna_study=hpo optuna_trial=1

Lines starting with ``#`` are comments; every other non-empty line is one entry (its index is its position
among entries, from 0). An entry is a shell-quoted override list (``shlex``), so a line can be pasted onto
a ``hepgan-train`` command line; an optional trailing ``# key=value ...`` carries metadata (the Optuna
trial an entry belongs to).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hepgan.fileio import write_text

PLAN_HEADER = "# hepgan-sweep plan v1"


@dataclass(frozen=True)
class PlanEntry:
    """One line of a plan: the overrides of one training run and optional metadata (strings)."""

    overrides: tuple[str, ...]
    meta: Mapping[str, str] = field(default_factory=dict)

    def to_line(self) -> str:
        """The plan-file line for this entry (shell-quoted overrides, then ``# key=value`` metadata)."""
        line = shlex.join(self.overrides)
        if self.meta:
            line += "  # " + " ".join(f"{k}={v}" for k, v in self.meta.items())
        return line

    @staticmethod
    def from_line(line: str, *, where: str = "plan") -> PlanEntry:
        """Parse one plan-file line (see the module docstring); ``where`` names it in errors."""
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise ValueError(f"{where}: cannot split line {line!r} as shell words ({exc})") from None
        overrides: list[str] = []
        meta: dict[str, str] = {}
        in_meta = False
        for tok in tokens:
            if not in_meta and tok.startswith("#"):
                in_meta = True
                tok = tok[1:]
                if not tok:
                    continue
            if in_meta:
                key, sep, value = tok.partition("=")
                if not sep:
                    raise ValueError(f"{where}: metadata {tok!r} in line {line!r} is not key=value")
                meta[key] = value
            else:
                overrides.append(tok)
        return PlanEntry(tuple(overrides), meta)


# ---------------------------------------------------------------------------------------------------------
# Expansion (Hydra's grammar and BasicSweeper's order)
# ---------------------------------------------------------------------------------------------------------


def config_loader(config_module: str | None = None, config_dir: str | os.PathLike | None = None) -> Any:
    """A Hydra config loader over ``config_dir`` (a folder) or ``config_module`` (a package: hepgan.conf).

    Only needed for sweeps over config groups with ``glob(...)``; returns ``None`` when neither is given.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    if config_dir is not None:
        path = Path(config_dir)
        if not path.is_dir():
            raise ValueError(f"config dir {str(path)!r} does not exist or is not a folder")
        search = f"file://{path.resolve()}"
    elif config_module is not None:
        search = f"pkg://{config_module}"
    else:
        return None
    return ConfigLoaderImpl(config_search_path=create_config_search_path(search))


def expand_sweep(overrides: Sequence[str], *, loader: Any = None) -> list[list[str]]:
    """Expand a Hydra sweep into the override sets of its jobs, in Hydra multirun order.

    ``overrides``: Hydra override strings, sweeps included (``a=1,2 b=range(3) +c=x``). Uses
    ``OverridesParser`` and ``BasicSweeper.split_arguments`` (the code behind ``hydra -m``), so a key given
    twice keeps its first position and its last values, exactly as in Hydra.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create(config_loader=loader)
    try:
        parsed = parser.parse_overrides(list(overrides))
        batches = BasicSweeper.split_arguments(parsed, None)
    except HydraException as exc:
        raise ValueError(
            f"sweep {' '.join(overrides)!r} is not valid Hydra override grammar: {exc}"
        ) from None
    return [list(job) for job in batches[0]]


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar written back as Hydra override text (YAML true -> ``true``, not Python's ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return ",".join(_yaml_scalar(v) for v in value)
    return str(value)


def read_sweep_file(path: str | os.PathLike) -> list[str]:
    """Read a sweep definition from YAML into Hydra override strings.

    Accepted layouts: a list of override strings; or a mapping with ``params`` (``key: "v1,v2"`` as in
    ``hydra.sweeper.params``; a YAML list of values is joined into a sweep) and optional ``overrides``
    (a list of override strings, applied after ``params`` like a command line is).
    """
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"sweep file {str(p)!r}: cannot read YAML ({exc})") from None
    if isinstance(doc, list):
        return [_yaml_scalar(x) for x in doc]
    if not isinstance(doc, dict) or not set(doc) <= {"params", "overrides"}:
        raise ValueError(
            f"sweep file {str(p)!r}: expected a list of overrides or a mapping with keys 'params' "
            f"(key: values) and 'overrides' (list); got {type(doc).__name__} "
            f"{sorted(doc) if isinstance(doc, dict) else ''}"
        )
    params = doc.get("params") or {}
    extra = doc.get("overrides") or []
    if not isinstance(params, dict) or not isinstance(extra, list):
        raise ValueError(f"sweep file {str(p)!r}: 'params' must be a mapping and 'overrides' a list")
    return [f"{k}={_yaml_scalar(v)}" for k, v in params.items()] + [_yaml_scalar(x) for x in extra]


def sweep_arguments(args: Sequence[str]) -> list[str]:
    """Command-line sweep arguments -> override strings: ``*.yaml``/``*.yml`` files are read, others kept."""
    out: list[str] = []
    for a in args:
        if a.endswith((".yaml", ".yml")) and "=" not in a:
            out.extend(read_sweep_file(a))
        else:
            out.append(a)
    return out


# ---------------------------------------------------------------------------------------------------------
# Plan files
# ---------------------------------------------------------------------------------------------------------


def write_plan(path: str | os.PathLike, entries: Sequence[PlanEntry], *, comment: str | None = None) -> Path:
    """Write ``entries`` as a plan file (atomically) and return its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = [PLAN_HEADER]
    if comment:
        lines += [f"# {c}" for c in comment.splitlines()]
    lines += [e.to_line() for e in entries]
    return write_text(p, "\n".join(lines) + "\n")


def read_plan(path: str | os.PathLike) -> list[PlanEntry]:
    """Read a plan file into its entries (index = position)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"plan file {str(p)!r} cannot be read ({exc.strerror})") from None
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entries.append(PlanEntry.from_line(line, where=f"{p}:{n}"))
    return entries


def plan_sweep(overrides: Sequence[str], *, loader: Any = None) -> list[PlanEntry]:
    """The plan entries of a Hydra sweep (see :func:`expand_sweep`)."""
    return [PlanEntry(tuple(job)) for job in expand_sweep(overrides, loader=loader)]


def default_sweep_dir(plan_path: str | os.PathLike) -> Path:
    """Where a plan's runs go unless told otherwise: the plan path without its suffix (``hpo/plan.txt`` ->
    ``hpo/plan``)."""
    p = Path(plan_path)
    return p.with_suffix("") if p.suffix else p.with_name(p.name + ".runs")


# ---------------------------------------------------------------------------------------------------------
# Array index mapping
# ---------------------------------------------------------------------------------------------------------


def scheduler_task(env: Mapping[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """The 0-based array task index of this process and a description of the job it belongs to.

    Slurm: ``SLURM_ARRAY_TASK_ID`` as is (submit with ``--array=0-(N-1)``; use ``--offset -1`` for a
    1-based range). LSF: ``LSB_JOBINDEX`` minus 1 (LSF arrays are 1-based, ``bsub -J "name[1-N]"``).
    PanDA/other: ``HEPGAN_TASK_INDEX`` (0-based). Raises ValueError when none is set.
    """
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_TASK_ID", "") != "":
        idx = _int_env(env, "SLURM_ARRAY_TASK_ID")
        job = {
            "scheduler": "slurm",
            "job_id": env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "")),
            "task_id": str(idx),
            "restart_count": env.get("SLURM_RESTART_COUNT", "0"),
        }
        return idx, job
    if env.get("LSB_JOBINDEX", "0") not in ("", "0"):
        raw = _int_env(env, "LSB_JOBINDEX")
        return raw - 1, {"scheduler": "lsf", "job_id": env.get("LSB_JOBID", ""), "task_id": str(raw)}
    if env.get("HEPGAN_TASK_INDEX", "") != "":
        idx = _int_env(env, "HEPGAN_TASK_INDEX")
        return idx, {"scheduler": "env", "job_id": env.get("PANDAID", ""), "task_id": str(idx)}
    raise ValueError(
        "--index auto: no array task index in the environment (looked for SLURM_ARRAY_TASK_ID, "
        "LSB_JOBINDEX > 0, HEPGAN_TASK_INDEX); run inside an array job or give the index explicitly"
    )


def _int_env(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from None


def job_info(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Scheduler job description of this process (empty scheduler "local" outside a batch system)."""
    env = os.environ if env is None else env
    try:
        return scheduler_task(env)[1]
    except ValueError:
        job_id = env.get("SLURM_JOB_ID") or env.get("LSB_JOBID") or env.get("PANDAID") or ""
        return {"scheduler": "local" if not job_id else "batch", "job_id": job_id, "task_id": ""}


def task_entries(task_index: int, n_entries: int, *, offset: int = 0, per_task: int = 1) -> range:
    """Plan indices run by array task ``task_index``: ``offset + task_index*per_task`` and the next
    ``per_task - 1``, clipped to the plan.

    ``offset`` lets a plan longer than the scheduler's array limit (Slurm ``MaxArraySize``, often 1001)
    be split over several submissions of the same array range; ``per_task`` packs several short runs
    into one task. An empty range means the task has nothing to do (the array is larger than the plan).
    """
    if per_task < 1:
        raise ValueError(f"--per-task must be >= 1; got {per_task}")
    if task_index < 0:
        raise ValueError(f"array task index must be >= 0; got {task_index}")
    start = offset + task_index * per_task
    if start < 0:
        raise ValueError(f"offset {offset} + task {task_index} * per-task {per_task} is negative ({start})")
    return range(min(start, n_entries), min(start + per_task, n_entries))
