"""``fit(cfg) -> dict``: train a 3DGAN from a composed config; the one trainer, read top to bottom.

Sections in execution order: setup, mesh (processes, devices, reduction backend), data, models, step,
restore, loop, finish. A run directory (``cfg.out``) receives ``manifest.json``, ``checkpoints/`` and
``best/`` (Orbax), ``train.csv`` and ``val.csv``, ``tb/`` (TensorBoard) and ``report/`` (the final
validation report). Starting ``fit`` again on the same directory resumes from the newest intact
checkpoint (a Slurm requeue is a rerun).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from hepgan.data.types import Showers
from hepgan.fileio import write_json, write_text
from hepgan.train.checkpoint import model_tag
from hepgan.train.config import Config, to_config, to_dict
from hepgan.train.state import GANState, param_count
from hepgan.train.step import LAYER_PREFIX

log = logging.getLogger("hepgan.train")


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient norm (the message names the step range)."""


class Preempted(RuntimeError):
    """Training stopped on a signal (SIGTERM, SIGUSR1, SIGINT) after checkpointing its last step.

    ``signum``: the signal received (by any process of the run); ``step``: the step saved. Rerunning
    the same command in the same run directory resumes there, bitwise.
    """

    def __init__(self, signum: int, step: int, checkpoint: str):
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: stopped after step {step} and saved it to {checkpoint}; run the same "
            "command again to resume"
        )
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


#: what a scheduler sends before pre-emption or the time limit (Slurm --signal, LSF -wa), and Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class _StopSignals:
    """While installed, the first of :data:`STOP_SIGNALS` is recorded in ``signum`` for the loop to stop
    cleanly after the current step. Repeats of SIGTERM and SIGUSR1 are ignored: launchers forward a
    scheduler's signal that the tasks may also receive directly (srun at the time limit, mpirun when the
    whole process group is signalled), and the doubled signal must not cost the checkpoint; a scheduler
    ends a stuck job with SIGKILL after its grace time. A second SIGINT (Ctrl-C) ends the run at once.
    Handlers can only be set from the main thread; elsewhere (``fit`` in a worker thread) nothing is
    installed."""

    def __init__(self, enabled: bool):
        self.signum = 0
        self.previous: dict[int, Any] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if not self.signum:
            self.signum = signum
            log.warning(
                "%s received: stopping after this step with a checkpoint%s",
                signal.Signals(signum).name,
                " (Ctrl-C again ends at once)" if signum == signal.SIGINT else "",
            )
        if signum == signal.SIGINT:
            signal.signal(signum, self.previous[signum])

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


#: model and data settings that may change between attempts of one run folder (they leave the
#: checkpoints and the training events as they are)
_FREE_DATA_KEYS = ("prefetch", "cache_dir", "workers", "in_memory_max_gb")


def config_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """What a run folder's checkpoints depend on: the resolved ``model`` and ``data`` settings (the data
    without :data:`_FREE_DATA_KEYS`), and their SHA-256. ``config``: a resolved config dict."""
    import hashlib

    part = {
        "model": config.get("model", {}),
        "data": {k: v for k, v in config.get("data", {}).items() if k not in _FREE_DATA_KEYS},
    }
    digest = hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()
    return {"sha256": digest, **part}


def _check_same_run(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to reuse a run folder whose manifest has other model or data settings (its checkpoints
    could not be restored, and the folder would silently mix two models)."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return
    try:
        first = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); it is not a run folder hepgan can resume") from None
    from hepgan.train.config import upgrade

    old, new = config_fingerprint(upgrade(first)), config_fingerprint(config)
    if old["sha256"] == new["sha256"]:
        return
    diffs = []
    for group in ("model", "data"):
        for key in sorted(set(old[group]) | set(new[group])):
            a, b = old[group].get(key), new[group].get(key)
            if a != b:
                diffs.append(f"{group}.{key}: folder {a!r}, config {b!r}")
    raise ValueError(
        f"run folder {run_dir} holds a run of another model or data config ("
        + "; ".join(diffs[:6])
        + ("; ..." if len(diffs) > 6 else "")
        + "). Resuming it would mix two runs: give another out=, or delete the folder to start afresh"
    )


def _trim_csv(path: Path, last_step: int) -> None:
    """Keep the header and the rows of steps <= ``last_step`` of a log CSV (a resumed run writes the
    later ones again); a torn last line (no newline: a kill or a full disk mid-write) is dropped."""
    if not path.exists():
        return
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    rows = list(csv.reader(io.StringIO("".join(lines))))
    if not rows:
        write_text(path, "")
        return
    header, kept = rows[0], [rows[0]]
    for row in rows[1:]:
        try:
            ok = len(row) == len(header) and int(float(row[0])) <= last_step
        except ValueError:
            ok = False
        if ok:
            kept.append(row)
    out = io.StringIO()
    csv.writer(out).writerows(kept)
    if len(kept) != len(rows) or len(lines) != len(text.splitlines()):
        write_text(path, out.getvalue())


def tb_tag(kind: str, key: str) -> str:
    """The TensorBoard tag of metric ``key`` of a ``kind`` ("train" or "val") row, grouped as users read
    them: ``D/`` and ``G/`` (each player's loss and D(real), D(fake)), ``D_terms/`` and ``G_terms/`` (the
    loss terms), ``health/`` (gradient, parameter and update norms, critical batch, finite, lr scale),
    ``optim/`` (learning rates), ``progress/`` (showers/s, step, input-wait, compute and communication
    seconds, master-worker staleness), ``layers_g/`` and
    ``layers_d/`` (per-layer norms), ``physics/`` and ``physics_sep/`` (validation metrics and
    per-observable separation powers),
    ``dynamics/`` (D per bin and diversity at validation), ``validation/`` (its bookkeeping)."""
    if key.startswith(LAYER_PREFIX):
        _, who, rest = key.split("/", 2)
        return f"layers_{who}/{rest}"
    if kind == "val":
        if key.startswith("sep"):
            return f"physics_sep/{key.removeprefix('sep/')}"
        if key.startswith("dyn_"):
            return f"dynamics/{key.removeprefix('dyn_')}"
        if key in ("val_seconds", "showers_seen", "train_seconds") or key.startswith("n_"):
            return f"validation/{key}"
        return f"physics/{key}"
    if key in ("d_loss", "g_loss"):
        return f"{key[0].upper()}/loss"
    if key in ("d_real_p", "d_fake_p", "d_real_loss", "d_fake_loss"):
        return f"D/{key[2:]}"
    health = ("_grad_norm", "_param_norm", "_update_norm")
    if key.endswith(health) or key in ("lr_scale", "finite") or key.startswith("b_noise") or "_gns_" in key:
        return f"health/{key}"
    if key.startswith("lr_"):
        return f"optim/{key}"
    if key in ("showers_per_s", "epoch", "step_seconds", "input_seconds", "compute_seconds", "comm_seconds"):
        return f"progress/{key}"
    if key.startswith("staleness") or key == "master_serve_seconds":
        return f"progress/{key}"
    if key.startswith(("d_", "g_")):
        return f"{key[0].upper()}_terms/{key[2:]}"
    return f"{kind}/{key}"


#: long-format logs beside train.csv and val.csv: file -> header
LONG_LOGS = {
    "layers": ("step", "player", "layer", "weight_norm", "grad_norm", "update_norm", "update_ratio"),
    "dynamics": ("step", "quantity", "variable", "lo", "hi", "value", "n"),
}


class _Logs:
    """CSV and TensorBoard writers of one run (train rows and validation rows apart, per-layer norms in
    ``layers.csv``, the validation's dynamics in ``dynamics.csv``).

    ``resume_step``: the step the run resumes from (-1: a fresh start); log rows and TensorBoard events
    after it, which an interrupted attempt wrote, are dropped (the resumed run writes them again).
    """

    def __init__(self, run_dir: Path, cfg: Any, resume_step: int = -1):
        self.files: dict[str, Any] = {}
        self.writers: dict[str, csv.DictWriter] = {}
        self.run_dir, self.use_csv = run_dir, cfg.csv
        if cfg.csv:
            for kind in ("train", "val", *LONG_LOGS):
                _trim_csv(run_dir / f"{kind}.csv", resume_step)
        self.tb = None
        if cfg.tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step: TensorBoard drops the events an interrupted attempt logged after resume_step
            purge = resume_step + 1 if (run_dir / "tb").exists() else None
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)

    def write(self, kind: str, step: int, row: dict[str, float]) -> None:
        """One row of ``{kind}.csv`` ("train" or "val"), its scalars in TensorBoard (see :func:`tb_tag`)."""
        if self.tb is not None:
            for k, v in row.items():
                # an undefined value (the critical-batch estimate while |G|^2 <= 0) stays in the CSV as
                # nan; TensorBoard cannot plot it and would warn on every write
                if math.isfinite(v):
                    self.tb.add_scalar(tb_tag(kind, k), v, step)
        if self.use_csv:
            self._csv_row(kind, {"step": step, **row})

    def write_long(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Rows of a long-format log (``kind`` in :data:`LONG_LOGS`), CSV only."""
        if self.use_csv:
            for row in rows:
                self._csv_row(kind, row, LONG_LOGS[kind])

    def write_layers(self, step: int, metrics: dict[str, float]) -> None:
        """The per-layer norms of one step (``layer/{who}/{layer}/{weight|grad|update}`` metrics) as
        ``layers.csv`` rows and TensorBoard scalars (``layers_g/``, ``layers_d/``)."""
        layers: dict[tuple[str, str], dict[str, float]] = {}
        for k, v in metrics.items():
            if k.startswith(LAYER_PREFIX):
                _, who, layer, what = k.split("/")
                layers.setdefault((who, layer), {})[what] = v
        rows = []
        for (who, layer), m in sorted(layers.items()):
            w, g, u = m.get("weight", math.nan), m.get("grad", math.nan), m.get("update", math.nan)
            ratio = u / w if w > 0 else math.nan
            rows.append(
                {
                    "step": step, "player": who, "layer": layer, "weight_norm": w, "grad_norm": g,
                    "update_norm": u, "update_ratio": ratio,
                }
            )  # fmt: skip
            if self.tb is not None:
                for name, v in (("weight_norm", w), ("grad_norm", g), ("update_ratio", ratio)):
                    if math.isfinite(v):
                        self.tb.add_scalar(f"layers_{who}/{layer}/{name}", v, step)
        self.write_long("layers", rows)

    def validation_media(
        self, step: int, figure: Any, histograms: dict[str, np.ndarray], tag: str = "showers/single"
    ) -> None:
        """TensorBoard images and histograms of one validation: ``figure`` (matplotlib, closed here)
        as image ``tag``, each ``histograms`` entry (``{tag: [N] values}``) as a histogram."""
        if self.tb is None:
            import matplotlib.pyplot as plt

            plt.close(figure)
            return
        self.tb.add_figure(tag, figure, step, close=True)
        for tag, values in histograms.items():
            finite = np.asarray(values, np.float64)
            finite = finite[np.isfinite(finite)]
            if finite.size:
                self.tb.add_histogram(tag, finite, step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """The run's hyperparameters with its final metrics (at ``step``) for TensorBoard's HParams tab, in
        the run's own event files: ``metrics`` keys are tags of scalars the run logs (``physics/...``) or
        new ones under ``hparams/``, written here."""
        if self.tb is None:
            return
        from tensorboardX.summary import hparams as hparams_summary

        for summary in hparams_summary(hparams, metrics):
            self.tb.file_writer.add_summary(summary, step)
        for tag, v in metrics.items():  # the ones no other writer logs
            if tag.startswith("hparams/") and math.isfinite(v):
                self.tb.add_scalar(tag, v, step)

    def _csv_row(self, kind: str, row: dict[str, Any], header: tuple[str, ...] | None = None) -> None:
        if kind not in self.writers:
            path = self.run_dir / f"{kind}.csv"
            if path.exists() and path.stat().st_size:  # resumed run: keep the header the file started with
                with open(path) as f:
                    fields = next(csv.reader(f), list(header or row))
            else:
                fields = list(header or row)
            self.files[kind] = open(path, "a", newline="")
            self.writers[kind] = csv.DictWriter(self.files[kind], fieldnames=fields, extrasaction="ignore")
            if not path.stat().st_size:
                self.writers[kind].writeheader()
        self.writers[kind].writerow(row)
        self.files[kind].flush()

    def close(self) -> None:
        """Close the files (idempotent; a later :meth:`write` reopens the CSV files)."""
        for f in self.files.values():
            f.close()
        self.files.clear()
        self.writers.clear()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The scalar settings of a resolved config as TensorBoard hparams: ``group.key`` -> bool, int, float
    or str (lists as their text; ``None`` as "None"), for the groups a sweep varies."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, bool | int | float | str):
            out[prefix] = node
        else:
            out[prefix] = str(node)

    for group in ("model", "optim", "train", "scaling", "parallel"):
        walk(group, config.get(group, {}))
    walk("data.n_events", config.get("data", {}).get("n_events"))
    return out


class _DynamicsProbe:
    """At each validation on the main process: D(real) and D(fake) per energy/angle bin and the diversity
    indicators (``dynamics.csv``, ``logging.dynamics_events`` showers), and TensorBoard images of single
    showers and histograms of their observables (``logging.tb_showers``). Returns TensorBoard scalars
    (``dyn_*`` metrics of the validation row)."""

    def __init__(self, run: Any, reference: Showers, lc: Any):
        from hepgan.physics.extract import extract

        self.run, self.lc = run, lc
        n = min(lc.dynamics_events or 256, len(reference))
        self.n = n
        self.reference = reference[np.arange(n)]
        self.ref_obs = extract(self.reference) if (lc.dynamics_events or lc.tb_showers) else None
        self.ref_x: np.ndarray | None = None

    def __call__(self, step: int, state: GANState, generated: Showers, logs: _Logs) -> dict[str, float]:
        from hepgan.physics.extract import extract
        from hepgan.train import probes

        if self.ref_obs is None:
            return {}
        gen = generated[np.arange(self.n)]
        gen_obs = extract(gen)
        out: dict[str, float] = {}
        if self.lc.dynamics_events:
            batch = self.run.conf.train.batch_size
            if self.ref_x is None:
                self.ref_x = self.run.preprocess.apply(self.reference)["ecal"]
            players = self.run.players
            d_real = probes.discriminator_probs(players, state, self.ref_x, batch=batch)
            fake_x = self.run.preprocess.apply(gen)["ecal"]
            d_fake = probes.discriminator_probs(players, state, fake_x, batch=batch)
            rows = probes.dynamics_rows(
                step, d_real, d_fake, gen.energy, gen.theta, gen_obs.scalars, self.ref_obs.scalars
            )
            logs.write_long("dynamics", rows)
            out = {f"dyn_{k}": v for k, v in probes.summary(rows).items()}
        if self.lc.tb_showers and logs.tb is not None:
            from hepgan.physics.plots import projections_figure

            hists = {}
            for name in ("e_vis", "sf", "z_mean", "x_var", "hits", "shower_max"):
                if name in gen_obs.scalars:
                    hists[f"observables_generated/{name}"] = gen_obs.scalars[name]
                    hists[f"observables_reference/{name}"] = self.ref_obs.scalars[name]
            single = probes.shower_figure(gen.ecal, self.reference.ecal, gen.energy)
            logs.validation_media(step, single, hists)
            mean = projections_figure(gen_obs, self.ref_obs)
            logs.validation_media(step, mean, {}, tag="showers/mean_projections")
        return out


class _Trace:
    """The JAX profiler trace of ``train.profile_steps`` into ``folder`` (started before the first step,
    stopped once the last step's state is computed); stopping twice, or without a start, does nothing."""

    def __init__(self, folder: Path):
        self.folder, self.active = folder, False

    def start(self, step: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        jax.profiler.start_trace(str(self.folder))
        self.active = True
        log.info("profiling from step %d into %s", step, self.folder)

    def stop(self, step: int, state: Any) -> None:
        if not self.active:
            return
        if state is not None:
            jax.block_until_ready(state)
        jax.profiler.stop_trace()
        self.active = False
        log.info("profile trace up to step %d written to %s (TensorBoard: profile tab)", step, self.folder)


class _CommSplit:
    """Compute against communication of a synchronous data-parallel step (shard_map or mpi with several
    workers), measured every ``parallel.comm_every`` steps: that step runs alone (the previous one waited
    for, the result waited for), then the same update without its collectives (every worker mean an
    identity; compiled once, state not donated) on the same batch and the new state. ``compute_seconds``
    is the second time; ``comm_seconds`` the first minus the second: the all-reduces' transfers *and*
    the time each worker waits in them for the slowest (docs/parallel.md, "Compute and communication").
    BatchNorm's own collectives (``sync_batchnorm``) are part of the model, not of the reducer: they stay
    in the second program and count as compute."""

    def __init__(self, twin: Callable[..., Any], every: int):
        self.twin, self.every = twin, every
        self.compiled = False
        self.last: dict[str, float] = {}

    @classmethod
    def build(cls, run: Any, par: Any) -> _CommSplit | None:
        """The split for ``run`` (None where there is nothing to split: xla, one worker, comm_every 0)."""
        twin = run.compute_only_step() if par.cfg.comm_every else None
        return None if twin is None else cls(twin, par.cfg.comm_every)

    def measure(self, step_fn: Callable[..., Any], state: GANState, batch: Any) -> tuple[GANState, Any]:
        """One training step (``step_fn``), timed alone, then its computation alone; returns the step's
        ``(state, metrics)``."""
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
        whole = time.perf_counter() - t0
        if not self.compiled:  # the first call compiles
            jax.block_until_ready(self.twin(state, batch))
            self.compiled = True
        t0 = time.perf_counter()
        jax.block_until_ready(self.twin(state, batch))
        alone = time.perf_counter() - t0
        # not clipped at 0: one pair of timings carries the step's own jitter (tens of ms on a busy
        # CPU), so a single difference can come out negative; medians over a run are what to read
        self.last = {"compute_seconds": alone, "comm_seconds": whole - alone}
        return state, metrics

    def row(self) -> dict[str, float]:
        """The newest measurement's columns (nan before the first, so that the CSV has the columns from
        its first row on)."""
        return {"compute_seconds": math.nan, "comm_seconds": math.nan, **self.last}


FIT_RESULT = "fit_result.json"


def _finished_result(run_dir: Path, resume_step: int, total_steps: int) -> dict[str, Any] | None:
    """The stored result of a run that finished at ``total_steps`` (restored there), else None."""
    if resume_step != total_steps:
        return None
    try:
        result = json.loads((run_dir / FIT_RESULT).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(result, dict) and result.get("status") == "ok" and result.get("step") == resume_step:
        return result
    return None


def _write_final_report(
    run_dir: Path,
    generated: Showers,
    reference: Showers,
    metrics: list[str] | None,
    history: list[dict[str, Any]],
    title: str,
) -> Path:
    """The end-of-run validation report under ``run_dir/report`` (``metrics``: as ``evaluate``)."""
    from hepgan.physics.metrics import evaluate
    from hepgan.physics.report import write_report

    skipped: dict[str, str] = {}  # metrics these sets cannot give (FPD under 500 events), with why
    computed = evaluate(generated, reference, metrics=metrics, skipped=skipped)
    full = {k: float(v) for k, v in computed.items()}
    if history:  # the starting point, to show what training changed
        full.update({f"step0/{k}": history[0][k] for k in ("physics_score", "sf_rel_error")})
    links = _explain_links(run_dir)
    return write_report(
        run_dir / "report", generated, reference, full, title=title, skipped=skipped, links=links
    )


def _explain_links(run_dir: Path) -> list[tuple[str, str, str]]:
    """The training dynamics page (``hepgan-explain dynamics``: from the logs alone, seconds) written now
    into ``run_dir/explain``, and the report's links to it and to the other explain pages (made by
    ``hepgan-explain all``). A failure here costs the link, never the report or the run."""
    from hepgan.explain.page import PAGES, write_index

    out = run_dir / "explain"
    try:
        from hepgan.explain.dynamics import explain_dynamics

        explain_dynamics(run_dir, out)
        write_index(out, run_dir)
    except Exception as exc:  # the report and the training stand without the page
        log.error("the training dynamics page failed (%s); hepgan-explain dynamics %s retries", exc, run_dir)
    links = [(t, f"../explain/{page}", what) for page, t, what in PAGES if (out / page).exists()]
    missing = [t for page, t, _ in PAGES if not (out / page).exists()]
    if (out / "index.html").exists():
        note = f"all explain pages; {', '.join(missing)}: run hepgan-explain all {run_dir}" if missing else ""
        links.insert(0, ("Explain index", "../explain/index.html", note or "all explain pages"))
    return links


def _common_step(par: Any, ckpt: Any, run_dir: Path) -> int | None:
    """The checkpoint step every process of a master-worker run restores: the newest step all of them
    saved (they save at the same barrier steps), None for a fresh start. ``ValueError`` when some
    processes have checkpoints and others none (a worker folder deleted or never written)."""
    from mpi4py import MPI

    steps = MPI.COMM_WORLD.allgather(ckpt.latest_step())
    if all(s is None for s in steps):
        return None
    if any(s is None for s in steps):
        missing = [i for i, s in enumerate(steps) if s is None]
        raise ValueError(
            f"run folder {run_dir}: ranks {missing} of this {par.backend} run have no checkpoint while the "
            f"others have (latest steps by rank: {steps}); the master (checkpoints/) and every worker "
            "(workers/worker<i>/) must resume together: restore the missing folders, or start afresh in a "
            "new out="
        )
    return int(min(s for s in steps if s is not None))


def fit(
    cfg: Config | DictConfig | dict[str, Any],
    *,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
    report: Callable[[int, dict[str, float]], None] | None = None,
    handle_signals: bool = True,
) -> dict[str, Any]:
    """Train the GAN ``cfg`` describes and return the run's result.

    ``cfg``: a composed config (see :func:`hepgan.train.config.compose`) or a :class:`Config`.
    ``on_validation(step, metrics)``: called after each validation (a sweep's pruning hook may raise).
    ``report(step, metrics)``: called on the main process after each validation once that step's
    checkpoints are saved; what it raises (``optuna.TrialPruned``) ends the run and propagates.
    ``handle_signals``: while training, SIGTERM, SIGUSR1 and SIGINT stop the run after the current step
    with a checkpoint and raise :class:`Preempted` (all processes of a multi-process run stop at the same
    step); only where ``fit`` runs in the main thread.
    Returns ``{"status", "is_main" (this process writes the run's logs and results), "objective" (final
    physics_score), "metrics" (final validation + last training metrics), "best", "step", "epoch",
    "history" (validation rows), "timing", "paths", "report_error" (None, or why the report failed:
    the training and its checkpoints are kept either way)}``. A run folder whose run has finished
    returns its stored result and changes nothing.
    Raises :class:`NonFiniteError` when training diverges (the last good checkpoint is kept),
    :class:`Preempted` on a stop signal, and ``ValueError`` for invalid settings or a run folder of
    another model or data config.
    """
    # ---- setup ---------------------------------------------------------------------------------------
    from hepgan.parallel import GNSTracker
    from hepgan.physics.metrics import evaluate
    from hepgan.provenance import build_manifest, write_manifest
    from hepgan.train.run import build_run

    start_time = datetime.now(UTC)
    conf = to_config(cfg)
    tc, lc = conf.train, conf.logging
    run_dir = Path(conf.out).absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the run directory (out={conf.out}): {exc.strerror}") from exc
    _check_same_run(run_dir, to_dict(conf))

    # ---- the run: processes and mesh, data, preprocessing, models, optimizers, state, step ------------
    run = build_run(conf)  # the data-parallel set-up comes first: before any other JAX computation
    par, pipe, opt = run.parallel, run.pipeline, run.optimizers
    assert par is not None and pipe is not None and run.sources is not None
    if par.cpu is not None and par.cpu.layout != "kept":
        log.info("%s", par.cpu.reason)
    log.info(
        "%s backend: %d worker(s) in %d process(es), global batch %d, per-device batch %d",
        par.backend,
        par.workers,
        par.process_count,
        tc.batch_size,
        par.per_device_batch(tc.batch_size),
    )
    sources, state, train_step, total_steps = run.sources, run.state, run.step, run.total_steps
    model_cfg, updates_per_step = run.model, run.updates_per_step
    n_ref = len(sources.reference) if tc.val_events is None else min(tc.val_events, len(sources.reference))
    reference = sources.reference.read(np.arange(n_ref))
    ref_theta = reference.theta_or_normal()
    steps_per_epoch = pipe.steps_per_epoch

    def generate_reference(st: GANState) -> Showers:
        """The EMA generator's showers at the reference events' (E, theta), in file units."""
        ecal = run.generate(st, reference.energy, ref_theta, seed=tc.seed + 7919)
        return Showers(ecal=ecal, energy=reference.energy, theta=reference.theta)

    # ---- restore -------------------------------------------------------------------------------------
    worker = par.master_worker and not par.is_master  # a downpour/easgd worker: own state, no validation
    if worker:  # its own optimizer states, key and data position, beside the master's centre
        from hepgan.train.checkpoint import Checkpointer

        ckpt = Checkpointer(
            run_dir / "workers" / f"worker{par.worker_index}", keep_last=max(tc.keep_last, 1), keep_best=False
        )
    else:
        ckpt = run.checkpointer(run_dir)
    # mpi processes are separate JAX programs with identical states: process 0 writes, all restore. Under
    # jax.distributed every process takes part in each (Orbax coordinates them). Master-worker: each
    # process writes its own.
    writes = par.backend != "mpi" or par.is_main
    par.barrier()  # nobody saves before every process has opened (and tidied) the checkpoint folder
    extra: dict[str, Any] = {"rollbacks": 0, "history": []}
    # master-worker: the step all processes saved (None: none has any, and restore finds nothing)
    restore_at = _common_step(par, ckpt, run_dir) if par.master_worker and tc.resume else None
    restored = ckpt.restore(state, model=model_tag(model_cfg), step=restore_at) if tc.resume else None
    if restored is not None:
        state, extra = restored
        pipe.restore(extra["data_position"])
        log.info("resumed from %s at step %d", ckpt.latest.directory, int(state.step))
    resume_step = int(state.step) if restored is not None else -1
    finished = _finished_result(run_dir, resume_step, total_steps)
    if finished is not None:
        log.info("%s: this run finished at step %d already; nothing to do", run_dir, resume_step)
        ckpt.close()
        pipe.close()
        return {**finished, "is_main": par.is_main}
    if writes:  # what an interrupted attempt saved after the restored step is written again, bitwise
        for gone in ckpt.discard_after(resume_step):
            log.info("discarded %s (newer than the restored step; it is written again)", gone)
    par.barrier()
    manifest = build_manifest(
        to_dict(conf), seed=tc.seed, data=sources.train.describe(), start_time=start_time
    )
    manifest["reference"] = sources.reference.describe()
    manifest["parameters"] = {
        "generator": param_count(state.g.params),
        "discriminator": param_count(state.d.params),
    }
    manifest["parallel"] = par.describe(tc.batch_size)
    manifest["scaling"] = opt.describe()
    # Process 0 alone writes the manifest, logs and report.
    manifest_path = write_manifest(run_dir, manifest) if par.is_main else run_dir / "manifest.json"
    logs = _Logs(run_dir, lc if par.is_main else replace(lc, tensorboard=False, csv=False), resume_step)
    gns = {p: GNSTracker(conf.parallel.gns_ema) for p in ("d", "g")}
    history: list[dict[str, Any]] = list(extra.get("history", []))

    def extra_now(step: int) -> dict[str, Any]:
        return {
            "data_position": pipe.position(),
            "epoch": step // steps_per_epoch,
            "rollbacks": extra["rollbacks"],
            "history": history,
            "model": model_tag(model_cfg),
        }

    probe = _DynamicsProbe(run, reference, lc) if par.is_main and lc.csv | lc.tensorboard else None

    def run_validation(step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        generated = generate_reference(state)
        metrics = {k: float(v) for k, v in evaluate(generated, reference, metrics=tc.val_metrics).items()}
        if probe is not None:
            metrics.update(probe(step, state, generated, logs))
        metrics["val_seconds"] = time.perf_counter() - t0
        # for convergence curves: showers seen, and training wall time of this process (compilation
        # included; validation, checkpoints and reports not; a resumed run counts from its restart)
        metrics["showers_seen"] = float(step * tc.batch_size)
        metrics["train_seconds"] = float(timing["train_seconds"])
        history.append({"step": step, "epoch": step / steps_per_epoch, **metrics})
        logs.write("val", step, metrics)
        log.info(
            "step %d: physics_score %.4f, sf_rel_error %.4f",
            step,
            metrics["physics_score"],
            metrics["sf_rel_error"],
        )
        if on_validation is not None:
            on_validation(step, metrics)
        if report is not None and par.is_main:  # (mpi: every process is its own JAX process 0)
            to_report.append((step, metrics))
        return metrics

    to_report: list[tuple[int, dict[str, float]]] = []

    def flush_reports() -> None:
        # called once the step's checkpoints are saved, so a pruned run keeps them
        while to_report:
            report(*to_report.pop(0))  # type: ignore[misc]

    # ---- loop ----------------------------------------------------------------------------------------
    from hepgan.progress import Progress

    step = int(state.step)
    timing = {"train_seconds": 0.0, "checkpoint_seconds": 0.0, "validation_seconds": 0.0, "steps": 0}
    last_metrics: dict[str, float] = {}
    status = "ok"
    last_good = step
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    # a bar on a terminal, a "[hepgan] train ..." line every $HEPGAN_PROGRESS_INTERVAL s in a batch log
    progress = Progress("train", enabled=lc.progress and par.is_main)

    layer_every = lc.layer_stats_every

    def check_pending() -> None:
        """Fetch the buffered step metrics; raise NonFiniteError at the first non-finite one. Writes the
        per-layer norms of the steps due (``logging.layer_stats_every``)."""
        nonlocal last_good, last_metrics
        if not pending:
            return
        fetched = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, fetched, strict=True):
            if m["finite"] < 1.0:
                pending.clear()
                raise NonFiniteError(
                    f"non-finite loss or gradient norm in the update of step {s} (steps {last_good + 1}..{s} "
                    f"were checked; d_loss={float(m['d_loss'])}, g_loss={float(m['g_loss'])}, "
                    f"d_grad_norm={float(m['d_grad_norm'])}, g_grad_norm={float(m['g_grad_norm'])})"
                )
            last_good = s
        for m in fetched:  # the critical batch estimate, from every step's gradient-norm estimators
            for p, tracker in gns.items():
                if f"{p}_gns_g2" in m:
                    tracker.update(float(m[f"{p}_gns_g2"]), float(m[f"{p}_gns_s"]))
        if layer_every:
            for (s, _), m in zip(pending, fetched, strict=True):
                if s % layer_every == 0 or s == total_steps:
                    logs.write_layers(s, {k: float(v) for k, v in m.items() if k.startswith(LAYER_PREFIX)})
        last_metrics = {k: float(v) for k, v in fetched[-1].items() if not k.startswith(LAYER_PREFIX)}
        last_metrics.update({f"b_noise_{p}": t.b_noise for p, t in gns.items() if t.n})
        scale = last_metrics.get("lr_scale", 1.0)
        lrs = opt.effective_lr({p: last_good * n for p, n in updates_per_step.items()})
        last_metrics.update({k: v * scale for k, v in lrs.items()})
        pending.clear()

    def stop_signal(step: int) -> int:
        """The stop signal any process received (0: none). Several processes agree at the logging
        steps (one small collective), so that all of them stop after the same step."""
        if par.process_count == 1:
            return stop.signum
        if par.master_worker:  # told by the master at a barrier (see exchange())
            return 0
        if step % lc.every_steps:
            return 0
        return par.max_over_processes(stop.signum)

    profile = tc.profile_steps
    trace = _Trace(
        run_dir / "profile" if par.process_count == 1 else run_dir / "profile" / f"process{par.process_index}"
    )

    def log_due(s: int) -> bool:
        return s % lc.every_steps == 0 or s % steps_per_epoch == 0 or s == total_steps

    def val_due(s: int) -> bool:  # the final validation comes after the loop
        epoch = s // steps_per_epoch
        return (
            s % steps_per_epoch == 0 and tc.val_every_epochs > 0 and epoch % tc.val_every_epochs == 0
            and s < total_steps
        )  # fmt: skip

    def ckpt_due(s: int) -> bool:
        if tc.ckpt_every_steps > 0:
            return s % tc.ckpt_every_steps == 0 and s < total_steps
        epoch = s // steps_per_epoch
        return s % steps_per_epoch == 0 and epoch % max(tc.ckpt_every_epochs, 1) == 0 and s < total_steps

    mw = None
    if par.master_worker:
        from hepgan.train.masterworker import MasterWorker

        mw = MasterWorker(par, state, lambda s: log_due(s) or val_due(s) or ckpt_due(s))
    split = _CommSplit.build(run, par) if mw is None else None

    def exchange(s: int) -> GANState:
        """Downpour/EASGD: the exchange after step ``s`` (and, at a barrier, the master's training row and
        what a stop signal or a non-finite value asks for)."""
        nonlocal last_metrics
        from hepgan.parallel.masterworker import STOP_NONFINITE, STOP_SIGNAL

        assert mw is not None
        own: NonFiniteError | None = None
        if worker:
            try:
                check_pending()
            except NonFiniteError as exc:
                own = exc
        new, reply = mw.exchange(state, s, signum=stop.signum, metrics=last_metrics, finite=own is None)
        if reply.kind == STOP_NONFINITE:
            raise own or NonFiniteError(
                f"a worker of this {par.backend} run produced a non-finite loss or gradient norm by step {s} "
                "(its own log names the step)"
            )
        if mw.is_master and log_due(s):
            last_metrics = mw.log_row()
        if reply.kind == STOP_SIGNAL:
            if writes:
                ckpt.save(s, new, extra_now(s))
            ckpt.wait()
            raise Preempted(reply.signum, s, str(ckpt.directory / "checkpoints" / str(s)))
        return new

    stop = _StopSignals(handle_signals)
    try:
        if restored is None:  # the starting point, validated and saved once (a resumed run has it)
            t0 = time.perf_counter()
            if not worker:
                run_validation(0)
            if writes:
                ckpt.save(0, state, extra_now(0))
            timing["validation_seconds"] += time.perf_counter() - t0
        flush_reports()
        with progress:
            task = progress.task(
                total=total_steps, unit="steps", completed=step, per_unit={"showers": tc.batch_size}
            )
            window_t, window_n, window_input = time.perf_counter(), 0, 0.0
            while step < total_steps:
                if profile is not None and step + 1 == profile[0]:
                    trace.start(step + 1)
                t0 = time.perf_counter()
                if mw is None or not mw.is_master:  # the master of downpour/easgd trains nothing itself
                    batch = next(pipe)
                    waited = time.perf_counter() - t0
                    window_input += waited
                    if mw is not None:
                        mw.window["input_seconds"] += waited
                        state, metrics = mw.timed_step(train_step, state, batch)
                    elif split is not None and (step + 1) % split.every == 0:
                        state, metrics = split.measure(train_step, state, batch)
                    else:
                        state, metrics = train_step(state, batch)
                    pending.append((step + 1, metrics))
                if profile is not None and step + 1 == profile[1]:
                    trace.stop(step + 1, state)
                step += 1
                window_n += 1
                if mw is not None and mw.due(step):
                    state = exchange(step)
                elif log_due(step):
                    try:
                        check_pending()
                    except NonFiniteError as exc:
                        if tc.on_nonfinite == "stop" or extra["rollbacks"] >= tc.max_rollbacks:
                            raise
                        back = ckpt.restore(state)
                        if back is None:
                            raise
                        # keep the data moving forward: the batches since the checkpoint are skipped
                        state = back[0].replace(lr_scale=back[0].lr_scale * tc.rollback_lr_factor)
                        extra["rollbacks"] += 1
                        log.warning(
                            "%s; rolled back to step %d with lr x %.3g",
                            exc,
                            int(state.step),
                            float(state.lr_scale),
                        )
                        step = last_good = int(state.step)
                        task.update(step)
                        continue
                if log_due(step) and not worker:
                    wall = max(time.perf_counter() - window_t, 1e-9)
                    rate = window_n * tc.batch_size / wall
                    timed = {"showers_per_s": rate, "step_seconds": wall / max(window_n, 1)}
                    if mw is None:
                        timed["input_seconds"] = window_input / max(window_n, 1)
                        timed.update(split.row() if split is not None else {})
                    window_t, window_n, window_input = time.perf_counter(), 0, 0.0
                    logs.write("train", step, {**last_metrics, **timed, "epoch": step / steps_per_epoch})
                    task.update(
                        d=last_metrics.get("d_loss", math.nan), g=last_metrics.get("g_loss", math.nan)
                    )
                task.update(step)
                timing["train_seconds"] += time.perf_counter() - t0
                timing["steps"] += 1

                if val_due(step):
                    t0 = time.perf_counter()
                    if not worker:
                        metrics_v = run_validation(step)
                        if writes:
                            ckpt.save_best(step, state, extra_now(step), metrics_v)
                    timing["validation_seconds"] += time.perf_counter() - t0
                if ckpt_due(step):
                    t0 = time.perf_counter()
                    check_pending()
                    if writes:
                        ckpt.save(step, state, extra_now(step))
                    timing["checkpoint_seconds"] += time.perf_counter() - t0
                flush_reports()
                signum = stop_signal(step) if step < total_steps else 0
                if signum:
                    check_pending()
                    if writes:
                        ckpt.save(step, state, extra_now(step))
                    ckpt.wait()
                    raise Preempted(signum, step, str(ckpt.directory / "checkpoints" / str(step)))
    except NonFiniteError as exc:
        trace.stop(step, None)
        stop.restore()
        ckpt.close()
        pipe.close()
        logs.close()
        good = ckpt.latest_step()
        raise NonFiniteError(
            f"{exc}. Training stopped; the last good checkpoint (step {good}) is kept in "
            f"{run_dir / 'checkpoints'} "
            "and a rerun in the same directory resumes from it. Lower optim.lr_g/optim.lr_d, set "
            "optim.clip_norm, or use train.on_nonfinite=rollback."
        ) from None
    except BaseException:
        # an interrupt, a pre-emption or a crash: wait for saves in flight so the last checkpoint is whole
        trace.stop(step, None)
        stop.restore()
        ckpt.close()
        pipe.close()
        logs.close()
        raise

    # ---- finish: final checkpoint, validation, report ---------------------------------------------------
    trace.stop(step, state)  # profile_steps reaching past the last step end here
    pipe.close()
    try:
        t0 = time.perf_counter()
        check_pending()
        # an attempt killed after its final validation left it in the restored history: not run twice
        done = history[-1] if history and history[-1]["step"] == step else None
        if worker:  # the master validates the centre; its figures are the run's
            final = {"physics_score": math.nan, "sf_rel_error": math.nan}
        else:
            final = done if done is not None else run_validation(step)
        if par.master_worker:
            from mpi4py import MPI

            final = MPI.COMM_WORLD.bcast(final, root=0)
        timing["validation_seconds"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if writes:
            ckpt.save(step, state, extra_now(step))
            ckpt.save_best(step, state, extra_now(step), final)
        ckpt.close()
        timing["checkpoint_seconds"] += time.perf_counter() - t0
        if stop.signum and not par.master_worker:  # the training is saved; the report is left to the rerun
            raise Preempted(stop.signum, step, str(run_dir / "checkpoints" / str(step)))
    except BaseException:
        ckpt.close()
        logs.close()
        raise
    finally:
        stop.restore()
    if par.is_main:
        best_row = min(history, key=lambda h: h["physics_score"]) if history else final
        logs.hparams(
            _hparams(to_dict(conf)),
            {
                "physics/physics_score": final["physics_score"],
                "physics/sf_rel_error": final["sf_rel_error"],
                "hparams/best_physics_score": best_row["physics_score"],
                "hparams/showers_per_s": timing["steps"] * tc.batch_size / max(timing["train_seconds"], 1e-9),
            },
            step,
        )
    report_path, report_error = None, None
    if tc.report and par.is_main:
        t0 = time.perf_counter()
        try:
            report_path = _write_final_report(
                run_dir, generate_reference(state), reference, tc.report_metrics, history,
                f"hepgan {model_cfg.arch}/{model_cfg.size} after {step} steps "
                f"({step / steps_per_epoch:.1f} epochs)",
            )  # fmt: skip
        except Exception as exc:  # the training and its checkpoints stand; the report is named failed
            report_error = f"{type(exc).__name__}: {exc}"
            log.error("the validation report failed (%s); the training and its checkpoints are kept", exc)
        finally:  # also on a kill-like interrupt: the rerun writes the report
            logs.close()
        timing["report_seconds"] = time.perf_counter() - t0
    logs.close()
    flush_reports()
    best = min(history, key=lambda h: h["physics_score"]) if history else None
    train_rate = timing["steps"] * tc.batch_size / max(timing["train_seconds"], 1e-9)
    result = {
        "status": status,
        "is_main": par.is_main,
        "objective": final["physics_score"],
        "metrics": {**final, **{f"train/{k}": v for k, v in last_metrics.items()}},
        "best": None if best is None else {"step": best["step"], "physics_score": best["physics_score"]},
        "initial": history[0] if history else None,
        "step": step,
        "epoch": step / steps_per_epoch,
        "history": history,
        "timing": {**timing, "showers_per_s": train_rate},
        "total_steps": total_steps,
        "report_error": report_error,
        "paths": {
            "run_dir": str(run_dir),
            "checkpoints": str(run_dir / "checkpoints"),
            "best": str(run_dir / "best"),
            "manifest": str(manifest_path),
            "report": None if report_path is None else str(report_path),
            "train_csv": str(run_dir / "train.csv"),
            "val_csv": str(run_dir / "val.csv"),
            "tensorboard": str(run_dir / "tb"),
        },
    }
    if par.is_main:  # written last: its presence marks a finished run (see _finished_result)
        write_json(run_dir / FIT_RESULT, result, default=float)
    if math.isfinite(final["physics_score"]):
        log.info("done: %s", run_dir)
    return result
