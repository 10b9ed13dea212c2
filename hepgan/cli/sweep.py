"""``hepgan-sweep``: hyperparameter campaigns on Slurm, LSF or PanDA (see docs/sweeps.md).

Grid sweeps:   plan -> (array job) run -> collect / best
Optuna:        ask -> run -> tell (driver-batch)   or   worker (worker-pull), retry
PanDA phpo:    panda-eval (evaluation payload), panda-steer (steering)
Compile once:  warm (fill the shared JAX compilation cache before the array starts)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PROG = "hepgan-sweep"
#: a training was pre-empted after checkpointing: requeue the task (sysexits EX_TEMPFAIL, as hepgan-train)
EXIT_PREEMPTED = 75


def _log(msg: str) -> None:
    print(msg, flush=True)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument(
        "--config-module", default="hepgan.conf", help="package of the base Hydra config (%(default)s)"
    )
    g.add_argument(
        "--config-dir", default=None, help="folder of the base Hydra config (instead of the module)"
    )
    g.add_argument("--config-name", default="config", help="primary config name (%(default)s)")
    g.add_argument(
        "--run-dir-key",
        default="out",
        help="config key set to each trial's directory ('' to leave the config alone; default %(default)s)",
    )
    g.add_argument(
        "--train-fn", default=None, help="training callable module:function (default hepgan.train.fit)"
    )
    g.add_argument("--objective", default="physics_score", help="metric minimised and reported (%(default)s)")
    g.add_argument(
        "--compile-cache",
        default=None,
        help="shared persistent JAX compilation cache folder (default: $HEPGAN_COMPILE_CACHE, else none)",
    )


def _settings(args: argparse.Namespace) -> Any:
    from hepgan.sweep.cache import configure_compile_cache
    from hepgan.sweep.runner import RunSettings, load_callable

    configure_compile_cache(args.compile_cache)
    return RunSettings(
        config_module=args.config_module,
        config_dir=args.config_dir,
        config_name=args.config_name,
        run_dir_key=args.run_dir_key or None,
        objective=args.objective,
        train_fn=load_callable(args.train_fn) if args.train_fn else None,
    )


# ---------------------------------------------------------------------------------------------------------
# sub-commands
# ---------------------------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from hepgan.sweep.plan import config_loader, plan_index_path, plan_sweep, sweep_arguments, write_plan
    from hepgan.sweep.runner import RunSettings, compose_config

    overrides = sweep_arguments(args.sweep)
    loader = None
    if any("glob(" in o for o in overrides):
        loader = config_loader(args.config_module, args.config_dir)
    entries = plan_sweep(overrides, loader=loader)
    if args.validate:
        settings = RunSettings(args.config_module, args.config_dir, args.config_name)
        for i, e in enumerate(entries):
            try:
                compose_config(e.overrides, settings)
            except ValueError as exc:
                raise ValueError(
                    f"entry {i} does not compose (use --no-validate to skip this check): {exc}"
                ) from None
    path = write_plan(args.output, entries, comment="sweep: " + " ".join(overrides))
    _log(f"{path}: {len(entries)} entries (index {plan_index_path(path)})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hepgan.sweep.plan import default_sweep_dir, open_plan_index, scheduler_task, task_entries

    if args.index == "auto":
        task, job = scheduler_task()
        _log(f"{job['scheduler']} job {job['job_id']} task {job['task_id']} -> array index {task}")
    else:
        try:
            task = int(args.index)
        except ValueError:
            raise ValueError(f"INDEX must be an integer or 'auto'; got {args.index!r}") from None
    plan = open_plan_index(args.plan, log=_log)  # the index header only: constant time in the plan length
    n = len(plan)
    indices = task_entries(task, n, offset=args.offset, per_task=args.per_task)
    if not indices:
        _log(
            f"task {task}: nothing to do (plan has {n} entries, offset {args.offset}, "
            f"per-task {args.per_task})"
        )
        return 0
    if args.dry_run:
        sd = Path(args.sweep_dir) if args.sweep_dir else default_sweep_dir(args.plan)
        for i, e in zip(indices, plan.entries(list(indices)), strict=True):
            line = {
                "index": i,
                "overrides": list(e.overrides),
                "meta": dict(e.meta),
                "run_dir": str(sd / str(i)),
            }
            print(json.dumps(line), flush=True)
        return 0
    from hepgan.sweep.runner import run_plan_entries

    results = run_plan_entries(plan, list(indices), _settings(args), sweep_dir=args.sweep_dir, log=_log)
    if any(r["status"] == "preempted" for r in results):
        _log(f"pre-empted: exiting {EXIT_PREEMPTED} so that the task is requeued; a rerun resumes it")
        return EXIT_PREEMPTED
    return 1 if any(r["status"] == "failed" for r in results) else 0


def cmd_index(args: argparse.Namespace) -> int:
    from hepgan.sweep.plan import index_plan, plan_index_path

    plan = index_plan(args.plan)
    if args.count:  # for job scripts: N=$(hepgan-sweep index PLAN --count); sbatch --array=0-$((N-1))
        print(len(plan))
    else:
        _log(f"{args.plan}: {len(plan)} entries; index {plan_index_path(args.plan)}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from hepgan.sweep.study import ask_plan

    entries = ask_plan(args.space, args.study_dir, args.n, args.output)
    _log(
        f"{args.output}: {len(entries)} new trials "
        f"({entries[0].meta['optuna_trial']}..{entries[-1].meta['optuna_trial']})"
    )
    return 0


def cmd_tell(args: argparse.Namespace) -> int:
    from hepgan.sweep.study import tell_results

    counts = tell_results(args.study_dir, args.results, fail_missing=args.fail_missing, log=_log)
    _log(json.dumps(counts))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from hepgan.sweep.space import load_space
    from hepgan.sweep.study import open_storage, run_worker, worker_identity

    space = load_space(args.space)
    if args.heartbeat < 0 or (args.heartbeat and args.grace <= args.heartbeat):
        raise ValueError(
            f"--grace ({args.grace} s) must be longer than --heartbeat ({args.heartbeat} s; 0 turns it off)"
        )
    storage = open_storage(
        args.storage,
        heartbeat_interval=args.heartbeat or None,
        grace_period=args.grace,
        max_retry=args.max_retry,
    )
    sweep_dir = args.sweep_dir or str(Path(args.space).with_suffix("")) + "-trials"
    results = run_worker(
        space,
        storage,
        args.n_trials,
        sweep_dir,
        _settings(args),
        max_total=args.max_total,
        identity=worker_identity(args.worker_id),
        log=_log,
    )
    _log(f"worker done: {len(results)} trials")
    if results and results[-1]["status"] == "preempted":
        _log(f"pre-empted: exiting {EXIT_PREEMPTED} so that the task is requeued")
        return EXIT_PREEMPTED
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from hepgan.sweep.space import load_space
    from hepgan.sweep.study import JOURNAL_NAME, SPACE_NAME, open_storage, retry_failed

    if args.study_dir:
        space = load_space(Path(args.study_dir) / SPACE_NAME)
        storage = open_storage(Path(args.study_dir) / JOURNAL_NAME)
    elif args.space and args.storage:
        space, storage = load_space(args.space), open_storage(args.storage)
    else:
        raise ValueError("retry needs --study-dir D (driver-batch) or SPACE with --storage URL (worker-pull)")
    numbers = retry_failed(space, storage, max_attempts=args.max_attempts, stale_running=args.stale)
    _log(f"re-enqueued {len(numbers)} failed trials: {numbers}")
    return 0


def cmd_panda_eval(args: argparse.Namespace) -> int:
    """PanDA evaluation payload: train the point of input.json, write output.json; exit 0 once written."""
    from hepgan.sweep.panda import panda_eval
    from hepgan.sweep.runner import write_json
    from hepgan.sweep.space import load_space

    try:
        space = load_space(args.space) if args.space else None
        settings = _settings(args)
    except ValueError as exc:  # PanDA reads output.json, not the exit code: say it there
        out = {"status": 1, "loss": None, "message": f"ValueError: {exc}"}
        write_json(Path(args.workdir) / args.output, out)
        _log(json.dumps(out))
        return 0
    out = panda_eval(
        args.workdir,
        settings,
        space=space,
        storage=args.storage,
        input_name=args.input,
        output_name=args.output,
    )
    _log(json.dumps(out))
    return 0


def cmd_panda_steer(args: argparse.Namespace) -> int:
    """PanDA steering step: new points (or [] to end the search) from %IN to %OUT."""
    from hepgan.sweep.panda import panda_steer
    from hepgan.sweep.space import load_space

    new = panda_steer(
        load_space(args.space),
        args.in_path,
        args.out_path,
        budget=args.budget,
        n_points=args.n_points,
        storage=args.storage,
        target=args.target,
        patience=args.patience,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    _log(f"{args.out_path}: {len(new)} new points")
    return 0


def _objectives_of(args: argparse.Namespace, *, want_study: bool = False) -> tuple[Any, Any]:
    """The search space named by ``--space`` or ``--study-dir`` (None without either) and, when
    ``want_study`` and its storage is known (``--study-dir``, or ``--space`` with ``--storage``), its
    study."""
    from hepgan.sweep.space import load_space
    from hepgan.sweep.study import JOURNAL_NAME, SPACE_NAME, load_study, open_storage

    if args.study_dir and args.space:
        raise ValueError("give --study-dir D (driver-batch) or --space SPACE [--storage URL], not both")
    if args.storage and not args.space:
        raise ValueError("--storage needs --space SPACE (the study's search space)")
    if args.study_dir:
        space = load_space(Path(args.study_dir) / SPACE_NAME)
        storage = open_storage(Path(args.study_dir) / JOURNAL_NAME) if want_study else None
    elif args.space:
        space = load_space(args.space)
        storage = open_storage(args.storage) if want_study and args.storage else None
    else:
        return None, None
    return space, None if storage is None else load_study(space, storage)


def cmd_collect(args: argparse.Namespace) -> int:
    from hepgan.sweep.results import collect

    space, study = _objectives_of(args, want_study=True)
    if space is None:
        out = collect(args.dirs, args.output, metric=args.metric)
    else:
        out = collect(
            args.dirs, args.output, objectives=space.objectives, directions=space.directions, study=study
        )
    _log(json.dumps(out, indent=2))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from hepgan.sweep.results import select_best, write_best
    from hepgan.sweep.runner import load_callable

    eval_fn = load_callable(args.eval_fn) if args.eval_fn else None
    space, _ = _objectives_of(args)
    report = select_best(
        args.dirs,
        metric=space.objective if space is not None else args.metric,
        top_k=args.top_k,
        reevaluate=args.reevaluate,
        eval_fn=eval_fn,
        seed=args.seed,
        maximize=space.direction == "maximize" if space is not None else args.maximize,
        objectives=None if space is None else space.objectives,
        directions=None if space is None else space.directions,
    )
    if args.out:
        write_best(report, args.out)
    if "rule" in report:
        _log(f"best: {report['rule']}")
    _log(json.dumps(report["best"], indent=2))
    return 0


def cmd_warm(args: argparse.Namespace) -> int:
    from hepgan.sweep.cache import DEFAULT_SHAPE_KEYS, warm_plan
    from hepgan.sweep.runner import load_callable

    settings = _settings(args)
    fn = load_callable(args.compile_fn) if args.compile_fn else None
    keys = args.shape_keys.split(",") if args.shape_keys else DEFAULT_SHAPE_KEYS
    _log(json.dumps(warm_plan(args.plan, settings, compile_fn=fn, keys=keys, log=_log)))
    return 0


# ---------------------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------------------


def _add_space_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group("search space", f"take the {what} from the campaign's space")
    g.add_argument("--space", default=None, help="search space YAML")
    g.add_argument("--study-dir", default=None, help="driver-batch study dir (its space and study)")
    g.add_argument("--storage", default=None, help="with --space: the worker-pull study's storage")


def build_parser() -> argparse.ArgumentParser:
    """The ``hepgan-sweep`` argument parser (one sub-command per step of a campaign)."""
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("plan", help="expand a Hydra sweep into an index-addressed plan file")
    s.add_argument(
        "sweep", nargs="+", help="Hydra overrides with sweeps (a=1,2 b=range(3)) and/or YAML sweep files"
    )
    s.add_argument("-o", "--output", required=True, help="plan file to write")
    s.add_argument("--config-module", default="hepgan.conf")
    s.add_argument("--config-dir", default=None)
    s.add_argument("--config-name", default="config")
    s.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="do not compose every entry against the base config",
    )
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("run", help="run plan entries for one array task, each in <sweep_dir>/<index>")
    s.add_argument("plan")
    s.add_argument(
        "index", help="array task index (0-based) or 'auto' (SLURM_ARRAY_TASK_ID / LSB_JOBINDEX-1)"
    )
    s.add_argument("--offset", type=int, default=0, help="plan index of task 0 (split plans over arrays)")
    s.add_argument("--per-task", type=int, default=1, help="entries run one after the other by each task")
    s.add_argument(
        "--sweep-dir", default=None, help="where run dirs go (default: the plan path minus suffix)"
    )
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="print the task's entries (JSON lines: index, overrides, meta, run_dir) and train nothing",
    )
    _add_run_options(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "index", help="(re)build a plan's index PLAN.idx (after editing the plan or copying it without -p)"
    )
    s.add_argument("plan")
    s.add_argument("--count", action="store_true", help="print only the number of entries (for job scripts)")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("ask", help="driver-batch: ask N new Optuna trials and write them as a plan")
    s.add_argument("space", help="search space YAML")
    s.add_argument("--study-dir", required=True, help="folder keeping the study (journal file + space copy)")
    s.add_argument("-n", type=int, required=True, help="number of new trials")
    s.add_argument("-o", "--output", required=True, help="plan file to write")
    s.set_defaults(func=cmd_ask)

    s = sub.add_parser("tell", help="driver-batch: feed result.json files back into the study")
    s.add_argument("study_dir")
    s.add_argument("results", nargs="+", help="folders searched for result.json")
    s.add_argument("--fail-missing", action="store_true", help="mark asked trials without a result as failed")
    s.set_defaults(func=cmd_tell)

    s = sub.add_parser("worker", help="worker-pull: ask, train, tell through a shared storage")
    s.add_argument("space", help="search space YAML")
    s.add_argument("--storage", required=True, help="journal file path, or sqlite:/// / postgresql:// URL")
    s.add_argument("--n-trials", type=int, required=True, help="trials run by this worker")
    s.add_argument("--max-total", type=int, default=None, help="stop once the study holds this many trials")
    s.add_argument("--sweep-dir", default=None, help="where trial dirs go (default: <space>-trials)")
    s.add_argument(
        "--worker-id",
        default=None,
        help="stable name of this worker (seeds its sampler; a restart with it resumes its trials); "
        "default: the scheduler's job/task, else host, pid and time",
    )
    s.add_argument(
        "--heartbeat",
        type=float,
        default=60.0,
        help="seconds between heartbeats of the running trial (%(default)s; 0: off)",
    )
    s.add_argument(
        "--grace",
        type=float,
        default=600.0,
        help="a trial without heartbeat this long is failed and retried (%(default)s s)",
    )
    s.add_argument(
        "--max-retry", type=int, default=3, help="retries of a killed worker's trial (%(default)s)"
    )
    _add_run_options(s)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("retry", help="re-enqueue failed trials' parameters")
    s.add_argument("space", nargs="?", default=None, help="search space YAML (worker-pull)")
    s.add_argument("--storage", default=None, help="storage of the study (worker-pull)")
    s.add_argument("--study-dir", default=None, help="study dir (driver-batch)")
    s.add_argument(
        "--max-attempts", type=int, default=3, help="attempts per parameter set in all (%(default)s)"
    )
    s.add_argument("--stale", action="store_true", help="first mark RUNNING trials failed (no worker alive)")
    s.set_defaults(func=cmd_retry)

    s = sub.add_parser("panda-eval", help="PanDA phpo evaluation: input.json -> train -> output.json")
    s.add_argument("space", nargs="?", default=None, help="search space YAML (fixed overrides, key check)")
    s.add_argument("--workdir", default=".", help="folder with input.json (%(default)s)")
    s.add_argument("--input", default="input.json")
    s.add_argument("--output", default="output.json")
    s.add_argument(
        "--storage",
        default=None,
        help="the steering's Optuna storage (journal file or database URL): report to the point's trial "
        "and be pruned by the space's pruner (default: no storage, no pruning)",
    )
    _add_run_options(s)
    s.set_defaults(func=cmd_panda_eval)

    s = sub.add_parser("panda-steer", help="PanDA phpo steering: %%IN -> new points in %%OUT")
    s.add_argument("space", help="search space YAML")
    s.add_argument("--in", dest="in_path", required=True, help="iDDS input (%%IN)")
    s.add_argument("--out", dest="out_path", required=True, help="output for new points (%%OUT)")
    s.add_argument("--budget", type=int, required=True, help="total points of the search (%%MAX_POINTS)")
    s.add_argument("--n-points", type=int, default=1, help="new points per call (%%NUM_POINTS)")
    s.add_argument(
        "--storage",
        default=None,
        help="Optuna storage the evaluation jobs reach too (database URL or shared journal file): keeps "
        "the study, with pruned and failed trials (default: stateless, rebuilt from %%IN)",
    )
    s.add_argument(
        "--target", type=float, default=None, help="end the search once a trial reaches this objective value"
    )
    s.add_argument(
        "--patience",
        type=int,
        default=None,
        help="end the search after this many completed trials in a row without a new best",
    )
    s.set_defaults(func=cmd_panda_steer)

    s = sub.add_parser("collect", help="table (CSV, markdown) and plots of every trial")
    s.add_argument("dirs", nargs="+")
    s.add_argument(
        "-o", "--output", required=True, help="output path prefix (writes .csv, .md, _objective.png)"
    )
    s.add_argument("--metric", default="physics_score", help="objective without a space (%(default)s)")
    _add_space_options(s, "objectives and directions (several: Pareto front, _pareto.csv and .png)")
    s.set_defaults(func=cmd_collect)

    s = sub.add_parser("best", help="the best trial by physics (optionally re-evaluating the top k)")
    s.add_argument("dirs", nargs="+")
    s.add_argument("--metric", default="physics_score")
    s.add_argument("--maximize", action="store_true", help="higher is better for --metric")
    _add_space_options(
        s, "objectives instead of --metric (several: the best of the Pareto front on the first)"
    )
    s.add_argument("--top-k", type=int, default=1)
    s.add_argument(
        "--reevaluate", type=int, default=None, metavar="N", help="re-evaluate the top k on N events"
    )
    s.add_argument(
        "--eval-fn", default=None, help="re-evaluation callable module:function(run, n_events, seed)"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="write the selection report (JSON) here")
    s.set_defaults(func=cmd_best)

    s = sub.add_parser("warm", help="compile a plan's distinct shapes into the shared compilation cache")
    s.add_argument("plan")
    s.add_argument("--compile-fn", default=None, help="module:function(cfg) compiling one config")
    s.add_argument("--shape-keys", default=None, help="comma-separated config keys defining a shape")
    _add_run_options(s)
    s.set_defaults(func=cmd_warm)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hepgan-sweep``; returns the exit code (2 with a one-line message on bad input)."""
    args = build_parser().parse_args(argv)
    # an array task of a plan never needs Optuna: keep its ~0.1 s import off every task's start-up
    if args.cmd not in ("plan", "run", "index"):
        try:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
        except ImportError:
            pass
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"{PROG} {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
