"""``hepgan-train``: compose the Hydra config, call :func:`hepgan.train.fit`, write ``result.json``.

Everything after the program name is Hydra's: overrides (``train.batch_size=64``), group choices
(``model=fixed25_paper``, ``experiment=paper_fixed25``), ``-m`` for sweeps, ``--cfg job`` to print the
config, ``--help`` for the groups and examples, ``-sc install=bash`` for tab completion. The groups come
from the packaged ``hepgan/conf`` and the user and site layers ``./conf`` and ``$HEPGAN_CONF``
(docs/configuration.md). The run directory is ``out`` (default: derived from the scheduler's job id, so
that a requeued job resumes its own run, else ``runs/<date>_<time>``; see :mod:`hepgan.train.rundir`;
under ``-m`` one subdirectory per job). ``result.json`` there holds ``status`` (``ok``, ``preempted``,
``nonfinite``, ``error``), ``objective`` (the final ``physics_score``, lower is better), ``metrics`` and
``paths``, for sweeps to collect.

``hepgan-train --rerun RUN_DIR [key=value ...]`` trains again what ``RUN_DIR/manifest.json`` records: its
config (brought up to date by :func:`hepgan.train.config.upgrade`) as the primary config instead of the
packaged defaults, its device layout, into ``RUN_DIR-rerun`` (``out=`` to choose), with a warning where
the git commit, the package versions or the kind of device differ from the run's; a multi-process run
must be re-run by a launch of its size (the error names the command). ``--config-dir RUN_DIR/.hydra``
composes a run's saved Hydra config the same way (:mod:`hepgan.cli.rerun`; docs/training.md, "Re-running
a run").

Exit codes: 0 done (also: the run had finished already), 1 bad input or an unwritable/full disk,
3 training diverged, 75 stopped by SIGTERM/SIGUSR1/SIGINT after checkpointing (``EX_TEMPFAIL``: run the
same command again to resume; the Slurm and LSF templates requeue on it).
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import Any, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hepgan.train.config import check_overrides

# exit codes: 1 bad input (or a disk that cannot be written), 3 training diverged, 75 pre-empted
EXIT_USAGE, EXIT_NONFINITE, EXIT_PREEMPTED = 1, 3, 75
# errors of the file system rather than of the run: reported in one paragraph, no traceback
_DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EEXIST,
}


def _write_result(run_dir: Path, result: dict[str, Any], process_id: int = 0) -> Path | None:
    """``result.json`` (process 0) or ``result.rank<K>.json`` (process K of a multi-process run, which
    writes only when it fails: the main process's file is the run's result, and a failure seen by one
    rank alone is kept beside it instead of overwriting it). Written atomically; None when the disk
    refuses (full, read-only): the previous file is then left as it was."""
    from hepgan.fileio import write_json

    path = run_dir / ("result.json" if process_id == 0 else f"result.rank{process_id}.json")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return write_json(path, result, default=float)
    except OSError as exc:
        print(f"hepgan-train: could not write {path} ({exc.strerror or exc})", file=sys.stderr)
        return None


def _fail(run_dir: Path, cfg: DictConfig, status: str, exc: BaseException, code: int, **fields: Any) -> None:
    """Record a stopped run (``status`` ``nonfinite``, ``error`` or ``preempted``) and exit with ``code``:
    every process prints the message; process 0 writes ``result.json``, another process
    ``result.rank<K>.json`` (a pre-empted run: process 0 only, all processes stop at the same step).
    A finished run's ``result.json`` is never replaced by an error."""
    pid = _process_id(cfg)
    finished = _read_status(run_dir / "result.json") == "ok" and status == "error"
    if (pid == 0 or status != "preempted") and not finished:
        result = {"status": status, "objective": None, "error": str(exc), "process": pid, **fields}
        _write_result(run_dir, result, pid)
    prefix = "hepgan-train" if pid == 0 else f"hepgan-train (process {pid})"
    print(f"{prefix}: {exc}", file=sys.stderr)
    sys.exit(code)


def _read_status(path: Path) -> str | None:
    """The ``status`` of a result file, or None (missing, unreadable)."""
    import json

    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _disk_error(exc: BaseException) -> OSError | None:
    """The file-system error (full, read-only, not a folder...) behind ``exc``, if that is what it is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _check_out(argv: list[str]) -> None:
    """Fail before any set-up when the run directory cannot be created (:func:`check_writable_dir`).
    ``argv``: the command line (an ``out=`` override, else the default under ``runs/``)."""
    from hepgan.cli.outdir import check_writable_dir

    out = next(
        (a.split("=", 1)[1] for a in reversed(argv) if a.startswith(("out=", "+out=", "++out="))), None
    )
    check_writable_dir(out if out and "${" not in out else "runs", option="out")


def _process_id(cfg: DictConfig) -> int:
    """This process's index in a multi-process run, read without starting JAX (the error paths may run
    before or without :func:`hepgan.parallel.setup`): :func:`hepgan.parallel.distributed.planned_launch`
    of the run's ``parallel`` settings, 0 where those are themselves what failed."""
    from hepgan.parallel.config import ParallelConfig
    from hepgan.parallel.distributed import planned_launch

    try:
        par = OmegaConf.merge(OmegaConf.structured(ParallelConfig), cfg.get("parallel") or {})
        return planned_launch(cast(ParallelConfig, OmegaConf.to_object(par))).process_id
    except Exception:  # a malformed layout is itself the error being reported
        return 0


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    from hepgan.train.loop import NonFiniteError, Preempted, fit

    # Orbax logs every save at INFO, JAX its backend probing; the run's own log stays readable without them
    for noisy in ("absl", "jax._src.xla_bridge"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    OmegaConf.set_struct(cfg, False)
    cfg.out = str(run_dir)  # under -m each job has its own directory
    try:
        result = fit(cfg)
    except Preempted as exc:
        _fail(run_dir, cfg, "preempted", exc, EXIT_PREEMPTED, step=exc.step, signal=exc.signum)
    except NonFiniteError as exc:
        _fail(run_dir, cfg, "nonfinite", exc, EXIT_NONFINITE)
    except (ValueError, FileNotFoundError) as exc:
        _fail(run_dir, cfg, "error", exc, EXIT_USAGE)
    except Exception as exc:
        disk = _disk_error(exc)
        if disk is None:
            raise
        where = f" ({disk.filename})" if disk.filename else ""
        message = (
            f"the disk refused a write{where}: {disk.strerror or disk}. Every checkpoint saved before "
            "stays intact; free space or fix the permissions and rerun the same command to resume"
        )
        _fail(run_dir, cfg, "error", RuntimeError(message), EXIT_USAGE)
    if not result["is_main"]:  # under srun/mpirun every rank trains; one writes the result
        return float(result["objective"])
    keys = ("status", "objective", "metrics", "best", "initial", "step", "epoch", "timing", "paths")
    summary = {k: result.get(k) for k in (*keys, "report_error")}
    path = _write_result(run_dir, summary)
    if result.get("report_error"):
        print(f"hepgan-train: the validation report failed: {result['report_error']}", file=sys.stderr)
    p = result["paths"]
    print(
        f"hepgan-train: done after {result['step']} steps; physics_score {result['objective']:.4f} "
        f"(start {result['initial']['physics_score']:.4f})\n"
        f"  run directory  {p['run_dir']}\n"
        f"  checkpoints    {p['checkpoints']}\n"
        f"  report         {p['report']}\n"
        f"  manifest       {p['manifest']}\n"
        f"  logs           {p['train_csv']}, {p['val_csv']}, {p['tensorboard']}\n"
        f"  result         {path}",
        flush=True,
    )
    return float(result["objective"])


def main() -> None:
    """Console entry point: check the config layers, the overrides and the run directory, then hand over
    to Hydra.

    The command line is read with Hydra's own parser, so Hydra's flags keep their meaning: the arguments of
    ``-sc`` (``install=bash``, ``query=bash``) are not overrides, and ``--help``, ``--info``, ``--cfg`` and
    ``-sc`` create no run directory. Logging is left to Hydra, which sets it up for every run, sweep job
    and ``--info`` itself (a handler installed here as well printed every ``--info`` line twice).
    ``--rerun RUN_DIR`` and ``--config-dir RUN_DIR/.hydra`` make a run's recorded config the primary one
    (:mod:`hepgan.cli.rerun`): the command line handed to Hydra is rewritten to name it.
    """
    from hydra._internal.utils import get_args_parser

    from hepgan.cli.rerun import RerunError, is_saved_hydra_dir, plan_rerun, plan_saved_config, split_rerun

    parser = get_args_parser()
    plan = None
    try:
        rerun_dir, argv = split_rerun(sys.argv[1:])
        args = parser.parse_args(argv)
        runs = not (args.help or args.hydra_help or args.cfg or args.info or args.shell_completion)
        if rerun_dir is not None:
            plan = plan_rerun(rerun_dir, argv, runs=runs)
        elif args.config_dir and not args.config_name and is_saved_hydra_dir(args.config_dir):
            plan = plan_saved_config(args.config_dir, argv)
    except RerunError as exc:
        print(f"hepgan-train: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if plan is not None:
        if plan.process_id == 0:
            print("\n".join(plan.notes), file=sys.stderr, flush=True)
        if rerun_dir is not None:  # the rerun's manifest names the run it re-runs
            import os

            from hepgan.provenance import RERUN_ENV

            os.environ[RERUN_ENV] = str(Path(rerun_dir).resolve())
        sys.argv = [sys.argv[0], *plan.argv]
        args = parser.parse_args(plan.argv)
    try:
        overrides = [] if args.shell_completion else list(args.overrides)
        try:
            if runs:
                _check_out(overrides if plan is None or plan.out is None else [f"out={plan.out}", *overrides])
            check_overrides(overrides, [args.config_dir] if args.config_dir else None)
        except ValueError as exc:
            print(f"hepgan-train: {exc}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        except Exception:  # a malformed override: Hydra's own parser explains it below
            pass
        _hydra_main()
    finally:
        if plan is not None:
            plan.cleanup()


if __name__ == "__main__":
    main()
