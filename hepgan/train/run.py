"""``build_run(cfg) -> Run``: the one place that turns a config into the parts of a training run.

The trainer (:func:`hepgan.train.fit`), checkpoint restore (:func:`hepgan.train.checkpoint.restore_run`,
behind ``hepgan-generate`` and ``hepgan-evaluate``) and the training benchmarks all assemble their run
here, so what a benchmark measures and what a restore rebuilds is what training runs: the same
preprocessing (and its cell power in the models and the loss), models, optimizers with their
learning-rate scaling, state, update and reduction backend.

Order of assembly (the order ``fit`` needs it): data-parallel set-up (before any other JAX
computation), data, preprocessing, models, optimizers, state, update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flax import nnx
from omegaconf import DictConfig

from hepgan.train.config import Config, to_config
from hepgan.train.state import GANState, Players, generate, init_state
from hepgan.train.step import Batch, Metrics, StepConfig, make_step

if TYPE_CHECKING:
    from hepgan.data.pipeline import Pipeline, Preprocess
    from hepgan.data.source import Sources
    from hepgan.models import ModelConfig
    from hepgan.parallel import Parallel
    from hepgan.train.checkpoint import Checkpointer
    from hepgan.train.scaling import ScaledOptimizers


def updates_per_step(train: Any) -> dict[str, int]:
    """Optimizer updates per training step of each player for the ``train`` group's schedule
    (paper: D twice, G ``g_steps``; n_critic: D ``n_critic``, G ``g_steps``; simultaneous: one each)."""
    d = {"paper": 2, "n_critic": train.n_critic, "simultaneous": 1}.get(train.schedule, 1)
    g = 1 if train.schedule == "simultaneous" else train.g_steps
    return {"g": g, "d": d}


@dataclass(eq=False)
class Run:
    """The assembled parts of a run (see :func:`build_run`).

    ``conf``: the validated config; ``model``: the model config as built (cell power from the
    preprocessing, BatchNorm axis from the backend); ``preprocess``: file units <-> network units;
    ``parallel``: the data-parallel set-up (None for a run built without one); ``sources``/``pipeline``:
    the training and reference showers and the training batches (None without data); ``players``: the
    static halves of the models; ``state``: the initial training state (placed for the backend);
    ``optimizers``: both players' optimizers and learning-rate scaling; ``step_config``: the update's
    settings; ``update``: the pure update ``(state, batch) -> (state, metrics)``; ``step``: ``update``
    compiled for the backend (state donated; a plain ``jax.jit`` without a parallel set-up);
    ``total_steps``: training steps the run is planned for (the schedules' length).
    """

    conf: Config
    model: ModelConfig
    preprocess: Preprocess
    parallel: Parallel | None
    sources: Sources | None
    pipeline: Pipeline | None
    players: Players
    state: GANState
    optimizers: ScaledOptimizers
    step_config: StepConfig
    update: Callable[[GANState, Batch], tuple[GANState, Metrics]]
    step: Callable[[GANState, Batch], tuple[GANState, Metrics]]
    total_steps: int

    @property
    def updates_per_step(self) -> dict[str, int]:
        """Optimizer updates per training step of each player ("g", "d")."""
        return updates_per_step(self.conf.train)

    def compute_only_step(self) -> Callable[[GANState, Batch], tuple[GANState, Metrics]] | None:
        """The run's update with every worker mean replaced by the identity (``Reducer(silent=True)``),
        compiled for the backend, state not donated: the step's computation without its communication,
        for timing the two apart. None where the step has no collective to leave out (no parallel set-up,
        xla, or one worker)."""
        par = self.parallel
        if par is None or par.backend not in ("shard_map", "mpi") or par.workers < 2:
            return None
        silent = replace(par.reducer, silent=True)
        return par.compile(make_step(self.players, self.step_config, silent), donate=False, check=False)

    def checkpointer(self, run_dir: str | Path) -> Checkpointer:
        """The run's checkpoint manager in ``run_dir`` (``train.keep_last``, ``train.keep_best``)."""
        from hepgan.train.checkpoint import Checkpointer

        tc = self.conf.train
        return Checkpointer(run_dir, keep_last=max(tc.keep_last, 1), keep_best=tc.keep_best)

    def generate(
        self, state: GANState, energy: np.ndarray, theta: np.ndarray, *, seed: int, ema: bool = True
    ) -> np.ndarray:
        """Showers ``[N, X, Y, Z]`` in file units (GeV) from ``state``'s generator at ``energy: [N] GeV``
        and ``theta: [N] rad``, in chunks of ``train.batch_size``, with the BatchNorm statistics
        ``train.sample_bn`` (see :func:`hepgan.train.state.generate`; ``ema``: the EMA weights)."""
        tc = self.conf.train
        x = generate(
            self.players, state, energy, theta, batch=tc.batch_size, seed=seed, bn_stats=tc.sample_bn, ema=ema
        )
        return np.asarray(self.preprocess.invert_cells(x), np.float32)


def build_run(
    cfg: Config | DictConfig | dict[str, Any],
    *,
    parallel: Parallel | bool = True,
    data: bool = True,
    sources: Sources | None = None,
    total_steps: int | None = None,
) -> Run:
    """Assemble the run ``cfg`` describes (see the module docstring).

    ``cfg``: a composed config, a plain dict or a :class:`Config`. ``parallel``: True sets up the
    processes, mesh and reduction backend of ``cfg.parallel`` (call before any other JAX computation);
    a :class:`hepgan.parallel.Parallel` uses that one; False builds a single-device run without a mesh
    (restoring a checkpoint, generating). ``data``: open the data (``sources``, or those of ``cfg.data``)
    and build the training pipeline; without data nothing is read. ``total_steps``: the planned training
    steps (default: ``train.max_steps``, else ``train.epochs`` of the pipeline, else 1), which sets the
    length of decaying learning-rate schedules.

    Raises ``ValueError`` for invalid or inconsistent settings (the message names the key).
    """
    from hepgan.data.pipeline import Pipeline, Preprocess
    from hepgan.models import build
    from hepgan.parallel import setup
    from hepgan.train.scaling import build_optimizers

    conf = to_config(cfg)
    tc = conf.train
    par = setup(conf.parallel, tc.batch_size) if parallel is True else parallel or None
    if par is not None:
        par.per_device_batch(tc.batch_size)  # raises unless the batch splits evenly over the workers

    # ---- data --------------------------------------------------------------------------------------------
    if conf.data.kind == "simulated" and conf.data.geometry != conf.model.arch:
        raise ValueError(
            f"data.geometry {conf.data.geometry!r} and model.arch {conf.model.arch!r} differ; "
            "the generator must produce the data's grid"
        )
    preprocess = Preprocess.from_config(conf.data, conf.model.arch)
    pipe = None
    if data:
        if sources is None:
            from hepgan.data.source import open_source

            sources = open_source(conf.data)
        pipe = Pipeline(
            sources.train,
            tc.batch_size,
            preprocess,
            seed=tc.seed,
            shuffle=conf.data.shuffle,
            prefetch=conf.data.prefetch,
            **(par.pipeline_args() if par is not None else {}),  # the mesh, or this process's share
        )
    if total_steps is None:
        if tc.max_steps is not None:
            total_steps = tc.max_steps
        else:
            total_steps = tc.epochs * pipe.steps_per_epoch if pipe is not None else 1

    # ---- models: the discriminator's ECAL head undoes the preprocessing's cell power -------------------
    model = conf.model
    if model.cell_power is None:
        model = replace(model, cell_power=preprocess.cell_power)
    if par is not None and par.cfg.sync_batchnorm:  # BatchNorm moments averaged over the shard_map devices
        model = replace(model, bn_axis_name="data")
    generator, discriminator = build(model, nnx.Rngs(tc.seed))

    # ---- optimizers: the scaling rules give each player's peak rate for this global batch; the
    # optimizers carry only the warm-up/decay shape (peak 1) and the peak rates live in the state, so
    # a learning-rate sweep compiles one step
    per_step = updates_per_step(tc)
    opt = build_optimizers(
        conf.optim,
        conf.scaling,
        tc.batch_size,
        {p: total_steps * n for p, n in per_step.items()},
        unit_lr=True,
    )
    state, players = init_state(
        generator, discriminator, opt.g_tx, opt.d_tx, tc.seed, lr_g=opt.peak_lr["g"], lr_d=opt.peak_lr["d"]
    )

    # ---- the update ----------------------------------------------------------------------------------------
    step_config = StepConfig.from_train(
        tc, arch=model.arch, cell_power=preprocess.cell_power, layer_stats=conf.logging.layer_stats_every > 0
    )
    if par is not None:
        state = par.place_state(state)
        update = make_step(players, step_config, par.reducer)
        step = par.compile(update)
    else:
        import jax

        update = make_step(players, step_config)
        step = jax.jit(update, donate_argnums=0)
    return Run(
        conf=conf,
        model=model,
        preprocess=preprocess,
        parallel=par,
        sources=sources if data else None,
        pipeline=pipe,
        players=players,
        state=state,
        optimizers=opt,
        step_config=step_config,
        update=update,
        step=step,
        total_steps=total_steps,
    )
