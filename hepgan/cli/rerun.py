"""``hepgan-train --rerun RUN_DIR`` and ``hepgan-train --config-dir RUN_DIR/.hydra``: a run's own config as
the primary config.

A rerun takes the config its run recorded (``manifest.json``'s ``config``, brought up to date by
:func:`hepgan.train.config.upgrade`), not the packaged defaults: a later change of a packaged default or
group file must not change what a rerun computes. The recorded values are written, after the schema
(``defaults: [hepgan_schema, _self_]``) and with the packaged ``hydra`` settings (run directory ``${out}``,
the help page), into a generated primary config in a temporary folder; ``hepgan-train`` hands Hydra
``--config-dir <that folder> --config-name`` :data:`PRIMARY` (appended to the command line, so they win
over any given before), and the command line's value overrides apply on top as usual.

``--rerun`` also restores the recorded device layout (:func:`layout_pins`), refuses a multi-process run
outside a launch of its size (:func:`launch_problem`, with the command to use), warns where the code, the
package versions or the kind of device differ from the run's (:func:`provenance_warnings`,
:func:`device_warning`), and writes into a new run directory (default ``RUN_DIR-rerun``).
``--config-dir RUN_DIR/.hydra`` (a folder holding Hydra's ``config.yaml`` and ``overrides.yaml``, without
``--config-name``) composes that run's saved ``config.yaml`` the same way, ``out`` as saved or given.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hepgan.parallel.distributed import Launch

PRIMARY = "hepgan_rerun"
"""Name of the generated primary config (a name no config layer uses, so nothing shadows it)."""

FLAG = "--rerun"
SUFFIX = "-rerun"
"""Appended to the run directory's name to give the rerun's default ``out``."""

_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")
_LAUNCH_COMMANDS = {"openmpi": "mpirun", "mpich": "mpirun", "jsrun": "jsrun", "slurm": "srun"}


class RerunError(ValueError):
    """A rerun that cannot start (no manifest, no config, the run directory as target, a launch of the
    wrong size); the message is one paragraph for the user."""


@dataclass
class Plan:
    """What ``hepgan-train`` hands Hydra instead of the command line it was given.

    ``argv``: the new arguments (without the program name); ``config_dir``: the temporary folder holding
    the generated primary config (remove it with :meth:`cleanup`); ``out``: the run directory the config
    sets (None: the saved config's own, possibly an interpolation); ``notes``: lines for stderr (what is
    re-run from where into where, warnings), for ``process_id`` 0 to print (this process's rank in the
    run's launch: one run's processes print them once).
    """

    argv: list[str]
    config_dir: Path
    out: str | None = None
    notes: list[str] = field(default_factory=list)
    process_id: int = 0

    def cleanup(self) -> None:
        """Remove the temporary folder of the generated config (idempotent)."""
        shutil.rmtree(self.config_dir, ignore_errors=True)


def split_rerun(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``(RUN_DIR, the other arguments)`` of a command line holding ``--rerun RUN_DIR`` (or
    ``--rerun=RUN_DIR``), ``(None, argv)`` without it. Raises :class:`RerunError` for ``--rerun`` without
    a folder or given twice."""
    rest: list[str] = []
    found: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == FLAG:
            if i + 1 >= len(args) or args[i + 1].startswith("-") or "=" in args[i + 1]:
                raise RerunError(f"{FLAG} needs the run directory to re-run: hepgan-train {FLAG} RUN_DIR")
            found.append(args[i + 1])
            i += 2
            continue
        if a.startswith(FLAG + "="):
            found.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    if len(found) > 1:
        raise RerunError(f"{FLAG} given {len(found)} times ({', '.join(found)}); re-run one run at a time")
    return (found[0] if found else None), rest


def is_saved_hydra_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a run's saved Hydra folder (``.hydra``: it holds ``config.yaml`` and
    ``overrides.yaml``)."""
    p = Path(path)
    return (p / "config.yaml").is_file() and (p / "overrides.yaml").is_file()


def read_manifest(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(manifest, config)`` of a run directory: its ``manifest.json`` and that manifest's ``config``
    passed through :func:`hepgan.train.config.upgrade`. Raises :class:`RerunError` naming the file when
    it is missing, unreadable, not JSON, or holds no ``config``."""
    from hepgan.train.config import upgrade

    run = Path(run_dir)
    path = run / "manifest.json"
    if not run.is_dir():
        raise RerunError(
            f"cannot re-run {run_dir}: it is not a folder; give the run directory hepgan-train wrote"
        )
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        sweep = any((child / "manifest.json").is_file() for child in run.iterdir() if child.is_dir())
        hint = " (a sweep's runs are its numbered subfolders: re-run one of those)" if sweep else ""
        raise RerunError(
            f"cannot re-run {run_dir}: {path} does not exist; give the run directory hepgan-train wrote "
            f"(it holds manifest.json){hint}"
        ) from None
    except (OSError, ValueError) as exc:
        raise RerunError(f"cannot re-run {run_dir}: {path} cannot be read ({exc})") from None
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict) or not config:
        raise RerunError(
            f"cannot re-run {run_dir}: {path} holds no training config (no 'config' entry); it is not a "
            "manifest hepgan-train wrote, or it was damaged"
        )
    return manifest, upgrade(config)


def default_out(run_dir: str | os.PathLike[str]) -> str:
    """The rerun's default run directory: ``run_dir`` with :data:`SUFFIX` appended to its name."""
    p = Path(run_dir)
    if p.name in ("", ".", ".."):
        p = p.resolve()
    return str(p.with_name(p.name + SUFFIX))


def _override_values(overrides: Sequence[str]) -> dict[str, Any]:
    """The values of the plain ``key=value`` overrides in ``overrides`` (Hydra's grammar; sweeps, group
    choices, deletions and what does not parse are left out: Hydra reports those itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values: dict[str, Any] = {}
    parser = OverridesParser.create()
    for text in overrides:
        if text.startswith("-"):
            continue
        try:
            (o,) = parser.parse_overrides([text])
        except Exception:  # Hydra's own parser explains a malformed override later
            continue
        if o.is_delete() or o.is_sweep_override():
            continue
        values[o.key_or_group.lstrip("+")] = o.value()
    return values


def predicted_devices(
    parallel: Mapping[str, Any],
    global_batch: int | None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
    accelerator: bool | None = None,
) -> int | None:
    """How many devices a one-process run with ``parallel.devices`` null gets on this host, predicted
    without starting JAX as :func:`hepgan.parallel.cpu.configure` decides it (XLA's forced CPU device
    count; one device with ``cpu_layout`` shared; else the most usable cores that divide the global
    batch). None on an accelerator host, which cannot be counted before JAX starts."""
    from hepgan.parallel.cpu import accelerator_host, device_count, usable_cores

    env = os.environ if environ is None else environ
    if accelerator_host() if accelerator is None else accelerator:
        return None
    forced = _COUNT_FLAG.search(env.get("XLA_FLAGS", ""))
    if forced:
        return int(forced.group(1))
    if parallel.get("cpu_layout") == "shared":
        return 1
    n = cores if cores is not None else usable_cores()
    return device_count(n, None, global_batch, one_device_per_process=parallel.get("backend") == "mpi")


def layout_pins(
    config: Mapping[str, Any],
    recorded: Mapping[str, Any] | None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
    accelerator: bool | None = None,
) -> dict[str, Any]:
    """The ``parallel`` keys to set so that a rerun of ``config`` gets the device layout ``recorded``
    (the manifest's ``parallel`` section: the resolved backend, the workers, the processes): only those
    this host would otherwise resolve differently, so a rerun on a host like the run's keeps the recorded
    config unchanged. ``parallel.devices`` (null: all) is pinned to the run's devices per process where
    this host would give another count (or cannot tell: accelerators, several processes); a
    ``backend=auto`` that would resolve to another backend here is pinned to the run's, with its
    ``sync_batchnorm``. ``cpu_layout`` is part of the recorded config already. The mpi backend has one
    device per process: nothing to pin. Returns ``{key: value}`` of keys under ``parallel``."""
    from hepgan.parallel.cpu import accelerator_host

    if not recorded:
        return {}
    par = dict(config.get("parallel") or {})
    backend = recorded.get("backend")
    if backend not in ("xla", "shard_map"):
        return {}
    accel = accelerator_host() if accelerator is None else accelerator
    procs = int(recorded.get("process_count") or 1)
    batch = (config.get("train") or {}).get("batch_size")
    pins: dict[str, Any] = {}
    devices = par.get("devices")
    if devices is None and recorded.get("workers"):
        per_process = max(1, int(recorded["workers"]) // procs)
        predicted = (
            None
            if procs > 1
            else predicted_devices(par, batch, environ=environ, cores=cores, accelerator=accel)
        )
        devices = predicted
        if predicted != per_process:
            pins["devices"] = devices = per_process
    if par.get("backend", "auto") == "auto":
        # hepgan.parallel.runtime.setup: shard_map with global-batch BatchNorm on several CPU devices of
        # one process, xla everywhere else
        resolves_to = "shard_map" if not accel and (devices or 1) > 1 and procs == 1 else "xla"
        if resolves_to != backend:
            pins["backend"] = backend
            sync = bool(recorded.get("sync_batchnorm"))
            if sync != bool(par.get("sync_batchnorm")):
                pins["sync_batchnorm"] = sync
    return pins


def launch_command(launcher: str | None, processes: int, run_dir: str, overrides: Sequence[str]) -> str:
    """The command line that starts a rerun of ``run_dir`` as ``processes`` processes the way the run was
    launched (``mpirun -n 2 hepgan-train --rerun RUN_DIR``; ``srun``, ``jsrun`` for those launchers)."""
    tool = _LAUNCH_COMMANDS.get(launcher or "", "mpirun")
    words = [tool, "-n", str(processes), "hepgan-train", FLAG, run_dir, *overrides]
    return shlex.join(words)


def launch_problem(
    run_dir: str,
    manifest: Mapping[str, Any],
    parallel: Mapping[str, Any],
    overrides: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Why this process cannot re-run a multi-process run, or None.

    ``parallel``: the rerun's ``parallel`` settings (recorded, pinned, overridden). A run of N > 1
    processes (its manifest's ``parallel.process_count``) must be re-run by a launch of N processes
    (:func:`hepgan.parallel.distributed.planned_launch` of this process); the message gives the command.
    With ``launcher=explicit`` every process needs its own ``parallel.process_id``.
    """
    recorded = manifest.get("parallel") or {}
    try:
        procs = int(recorded.get("process_count") or 1)
    except (TypeError, ValueError):
        return None
    if procs <= 1:
        return None
    launcher = recorded.get("launcher")
    where = (
        f"{run_dir}/manifest.json records a run of {procs} processes (launcher {launcher}, backend "
        f"{recorded.get('backend')}), whose numbers depend on that layout"
    )
    launch, why = planned(parallel, environ)
    if launch is not None and launch.num_processes == procs:
        if launch.launcher == "explicit" and not any(o.startswith("parallel.process_id=") for o in overrides):
            return (
                f"{where}, started with parallel.launcher=explicit: start {procs} processes, process K as "
                f"`{shlex.join(['hepgan-train', FLAG, run_dir, *overrides])} parallel.process_id=K` "
                f"(K = 0..{procs - 1}; add parallel.coordinator_address=HOST:PORT of process 0 if it moved)"
            )
        return None
    found = why if launch is None else f"{launch.num_processes} process(es), launcher {launch.launcher}"
    return (
        f"{where}; this process is not part of a launch of that size (found: {found}). Start the rerun as "
        f"{procs} processes the same way: `{launch_command(launcher, procs, run_dir, overrides)}` (or, "
        "not bitwise equal then, in one process with parallel.launcher=none parallel.backend=xla)"
    )


def planned(
    parallel: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[Launch | None, str]:
    """This process's place in a run of ``parallel`` settings
    (:func:`hepgan.parallel.distributed.planned_launch`, read without starting JAX) and ``""``, or
    ``(None, why not)`` where the settings ask for a launcher that did not start this process."""
    from hepgan.parallel.config import ParallelConfig
    from hepgan.parallel.distributed import planned_launch

    known = set(ParallelConfig.__dataclass_fields__)
    try:
        return planned_launch(
            ParallelConfig(**{k: v for k, v in parallel.items() if k in known}), environ
        ), ""
    except (TypeError, ValueError) as exc:
        return None, str(exc)


def provenance_warnings(
    manifest: Mapping[str, Any],
    *,
    packages: Mapping[str, str | None] | None = None,
    git: Mapping[str, Any] | None = None,
) -> list[str]:
    """What differs between the code and package versions a run recorded (``manifest``'s ``git`` and
    ``packages``) and this installation's (``packages``, ``git``: default
    :func:`hepgan.provenance.package_versions` and :func:`hepgan.provenance.git_state`), one item each.
    Nothing recorded (an installed wheel: commit null) is no difference."""
    from hepgan import provenance

    items: list[str] = []
    old_git = manifest.get("git") or {}
    commit = old_git.get("commit")
    if commit:
        now = dict(provenance.git_state() if git is None else git)
        if now.get("commit") is None:
            items.append(f"the run's code is commit {commit}, this hepgan is not a git checkout")
        elif now["commit"] != commit:
            items.append(f"the run's code is commit {commit}, this checkout is at {now['commit']}")
        if old_git.get("dirty"):
            items.append(f"the run's checkout had uncommitted changes to {commit}, which are not recorded")
        if now.get("dirty"):
            items.append("this checkout has uncommitted changes")
    old = manifest.get("packages") or {}
    if isinstance(old, Mapping) and old:
        now_versions = dict(provenance.package_versions(tuple(old)) if packages is None else packages)
        for name, version in old.items():
            current = now_versions.get(name)
            if current != version:
                items.append(
                    f"{name} {version or 'not installed'} in the run, {current or 'not installed'} here"
                )
    return items


def device_warning(manifest: Mapping[str, Any], *, accelerator: bool | None = None) -> str | None:
    """A warning when the run's kind of device (CPU or an accelerator, from its manifest) is not the one
    this host will use (:func:`hepgan.parallel.cpu.accelerator_host`), else None."""
    from hepgan.parallel.cpu import accelerator_host

    platform = (manifest.get("jax") or {}).get("backend")
    kind = (manifest.get("parallel") or {}).get("device_kind")
    if platform is None and kind is None:
        return None
    was_cpu = platform == "cpu" if platform is not None else str(kind).lower() == "cpu"
    now_cpu = not (accelerator_host() if accelerator is None else accelerator)
    if was_cpu == now_cpu:
        return None
    then = "cpu" if was_cpu else f"{platform or 'an accelerator'} ({kind})"
    now = "cpu" if now_cpu else "an accelerator"
    return (
        f"the run trained on {then}, this rerun will run on {now}: other kernels, so its numbers will not "
        "be bitwise equal to the run's"
    )


def _packaged_hydra() -> tuple[list[Any], dict[str, Any]]:
    """The ``override hydra/...`` entries of the packaged ``config.yaml``'s defaults and its ``hydra``
    node (unresolved): the run directory ``${out}``, the sweep layout, the help page."""
    import importlib.resources

    from omegaconf import OmegaConf

    text = importlib.resources.files("hepgan.conf").joinpath("config.yaml").read_text()
    packaged = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    assert isinstance(packaged, dict)
    overrides = [
        d
        for d in packaged.get("defaults") or []
        if isinstance(d, dict) and any(str(k).startswith("override hydra/") for k in d)
    ]
    return overrides, dict(packaged.get("hydra") or {})


def write_primary(config: Mapping[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``config`` (a whole run config, as a manifest records it) as the primary config
    :data:`PRIMARY` into ``directory``: the schema first, then the values (``_self_``), with the
    packaged ``hydra`` settings. Returns the file."""
    from omegaconf import OmegaConf

    hydra_overrides, hydra_node = _packaged_hydra()
    body = {k: v for k, v in config.items() if k not in ("defaults", "hydra")}
    primary = {"defaults": ["hepgan_schema", "_self_", *hydra_overrides], **body, "hydra": hydra_node}
    path = Path(directory) / f"{PRIMARY}.yaml"
    header = "# generated by hepgan-train for a rerun: a run's recorded config as the primary config\n"
    path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(primary)))
    return path


def _handover(rest: Sequence[str], config: Mapping[str, Any]) -> tuple[list[str], Path]:
    """Write ``config`` as the primary config into a new temporary folder; the arguments that hand it to
    Hydra: ``rest`` with ``--config-dir`` and ``--config-name`` appended (later options win in argparse,
    and flags appended after the overrides keep them one block)."""
    tmp = Path(tempfile.mkdtemp(prefix="hepgan-rerun-"))
    write_primary(config, tmp)
    return [*rest, "--config-dir", str(tmp), "--config-name", PRIMARY], tmp


def _warning(what: str, items: Sequence[str]) -> str:
    """One warning paragraph for stderr: ``what``, then the ``items`` it lists."""
    return f"hepgan-train: warning: {what}: " + "; ".join(items) + "."


def plan_rerun(run_dir: str, rest: Sequence[str], *, runs: bool = True) -> Plan:
    """The hand-over of ``hepgan-train --rerun run_dir REST...``.

    ``rest``: the other arguments (overrides, Hydra flags); ``runs``: whether the command trains (not
    ``--cfg``, ``--help``, ``--info``): only then a multi-process run is refused outside its launch.
    Raises :class:`RerunError` for a missing or unreadable manifest, a manifest without ``config``, a
    target that is the run directory itself, ``--config-dir``/``--config-name`` given as well, and a
    multi-process run outside a launch of its size.
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(list(rest))
    if args.config_dir or args.config_name or args.config_path:
        raise RerunError(
            f"{FLAG} takes the config recorded in {run_dir}/manifest.json; --config-dir, --config-name and "
            "--config-path cannot be combined with it (give key=value overrides instead)"
        )
    manifest, config = read_manifest(run_dir)
    overrides = [o for o in args.overrides if not o.startswith("-")]
    given = _override_values(overrides)
    out = given.get("out")
    target = str(out) if out is not None else default_out(run_dir)
    if "${" not in target and Path(target).resolve() == Path(run_dir).resolve():
        raise RerunError(
            f"cannot re-run {run_dir} into itself (out={target}): its folder holds the run being re-run, "
            f"and hepgan-train would resume or return that run instead of training again. Give another "
            f"out=, or leave it out for {default_out(run_dir)}"
        )
    recorded = manifest.get("parallel") if isinstance(manifest.get("parallel"), dict) else None
    pins = {k: v for k, v in layout_pins(config, recorded).items() if f"parallel.{k}" not in given}
    parallel = {**(config.get("parallel") or {}), **pins}
    parallel.update({k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("parallel.")})
    if runs and (problem := launch_problem(run_dir, manifest, parallel, overrides)) is not None:
        raise RerunError(problem)
    config = {**config, "parallel": {**(config.get("parallel") or {}), **pins}, "out": target}
    notes = []
    commit = (manifest.get("git") or {}).get("commit")
    made = ", ".join(
        x for x in (f"commit {commit[:12]}" if commit else "", str(manifest.get("start_time") or "")) if x
    )
    pinned = ", ".join(f"parallel.{k}={v}" for k, v in pins.items())
    notes.append(
        f"hepgan-train: re-running the training recorded in {run_dir}/manifest.json"
        + (f" ({made})" if made else "")
        + f" into {target}"
        + (f"; device layout kept with {pinned}" if pinned else "")
    )
    notes += _provenance_notes(manifest, "the rerun may not be bitwise equal to the run")
    if (device := device_warning(manifest)) is not None:
        notes.append(_warning("other devices", [device]))
    launch, _ = planned(parallel)
    argv, tmp = _handover(list(rest), config)
    return Plan(argv, tmp, target, notes, launch.process_id if launch is not None else 0)


def _provenance_notes(manifest: dict[str, Any], what: str) -> list[str]:
    """One warning (or none) listing how the code and packages differ from ``manifest``'s; ``what``
    starts the sentence."""
    commit = (manifest.get("git") or {}).get("commit")
    if not (items := provenance_warnings(manifest)):
        return []
    checkout = f" (`git checkout {commit}`)" if commit else ""
    return [_warning(f"{what}, which needs the same code and package versions{checkout}", items)]


def plan_saved_config(hydra_dir: str, argv: Sequence[str]) -> Plan:
    """The hand-over of ``hepgan-train --config-dir RUN_DIR/.hydra ARGV...`` (a saved Hydra folder, no
    ``--config-name``): that run's ``config.yaml`` (upgraded) as the primary config, ``out`` as saved or
    given, the other arguments as they are. Warns as :func:`plan_rerun` where the run's manifest (in the
    folder above) records other code or package versions. Raises :class:`RerunError` for a
    ``config.yaml`` that cannot be read."""
    from omegaconf import OmegaConf

    from hepgan.train.config import upgrade

    path = Path(hydra_dir) / "config.yaml"
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:
        raise RerunError(f"{path} cannot be read as a run's saved config ({exc})") from None
    if not isinstance(saved, dict):
        raise RerunError(f"{path} holds no run config (a mapping of model, data, ...)")
    config = upgrade({str(k): v for k, v in saved.items()})
    notes = [f"hepgan-train: composing the config saved in {path} (a run's own, not the packaged defaults)"]
    try:
        manifest = json.loads((Path(hydra_dir).parent / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict):
        notes += _provenance_notes(
            manifest, "a run of this config may not be bitwise equal to the recorded one"
        )
    launch, _ = planned(config.get("parallel") or {})
    argv_out, tmp = _handover(list(argv), config)
    out = config.get("out")
    pid = launch.process_id if launch is not None else 0
    return Plan(argv_out, tmp, None if out is None else str(out), notes, pid)
