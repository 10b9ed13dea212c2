"""``hepgan-train``: compose the Hydra config, call :func:`hepgan.train.fit`, write ``result.json``.

Everything after the program name is Hydra's: overrides (``train.batch_size=64``), group choices
(``model=fixed25_paper``, ``experiment=paper_fixed25``), ``-m`` for sweeps, ``--cfg job`` to print the
config. The run directory is ``out`` (default ``runs/<date>_<time>``; under ``-m`` one subdirectory per
job). ``result.json`` there holds ``status``, ``objective`` (the final ``physics_score``, lower is
better), ``metrics`` and ``paths``, for sweeps to collect.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hepgan.train.config import check_overrides

# exit codes: 1 bad input, 3 training diverged
EXIT_USAGE, EXIT_NONFINITE = 1, 3


def _write_result(run_dir: Path, result: dict[str, Any], process_id: int = 0) -> Path:
    """``result.json`` (process 0) or ``result.rank<K>.json`` (process K of a multi-process run, which
    writes only when it fails: the main process's file is the run's result, and a failure seen by one
    rank alone is kept beside it instead of overwriting it)."""
    path = run_dir / ("result.json" if process_id == 0 else f"result.rank{process_id}.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return path


def _fail(run_dir: Path, cfg: DictConfig, status: str, exc: Exception, code: int) -> None:
    """Record a failed run (``status`` ``nonfinite`` or ``error``) and exit with ``code``: every process
    prints the error; process 0 writes ``result.json``, another process ``result.rank<K>.json``."""
    pid = _process_id(cfg)
    _write_result(run_dir, {"status": status, "objective": None, "error": str(exc), "process": pid}, pid)
    prefix = "hepgan-train" if pid == 0 else f"hepgan-train (process {pid})"
    print(f"{prefix}: {exc}", file=sys.stderr)
    sys.exit(code)


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
    from hepgan.train.loop import NonFiniteError, fit

    # Orbax logs every save at INFO, JAX its backend probing; the run's own log stays readable without them
    for noisy in ("absl", "jax._src.xla_bridge"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    OmegaConf.set_struct(cfg, False)
    cfg.out = str(run_dir)  # under -m each job has its own directory
    try:
        result = fit(cfg)
    except NonFiniteError as exc:
        _fail(run_dir, cfg, "nonfinite", exc, EXIT_NONFINITE)
    except (ValueError, FileNotFoundError) as exc:
        _fail(run_dir, cfg, "error", exc, EXIT_USAGE)
    if not result["is_main"]:  # under srun/mpirun every rank trains; one writes the result
        return float(result["objective"])
    summary = {
        k: result[k]
        for k in ("status", "objective", "metrics", "best", "initial", "step", "epoch", "timing", "paths")
    }
    path = _write_result(run_dir, summary)
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
    """Console entry point: check override keys against the schema, then hand over to Hydra."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    try:
        check_overrides(args)
    except ValueError as exc:
        print(f"hepgan-train: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Exception:  # a malformed override: Hydra's own parser explains it below
        pass
    _hydra_main()


if __name__ == "__main__":
    main()
