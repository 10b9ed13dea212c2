"""hepgan.sweep: hyperparameter campaigns on batch systems (see docs/sweeps.md).

- :mod:`hepgan.sweep.plan`: Hydra sweeps -> index-addressed plan files; array index mapping (Slurm, LSF).
- :mod:`hepgan.sweep.runner`: run one entry in its own directory; results survive crashes and requeues.
- :mod:`hepgan.sweep.space`, :mod:`hepgan.sweep.study`: Optuna search spaces, driver-batch and worker-pull.
- :mod:`hepgan.sweep.journal`: journal files that name damage instead of building on it; a heartbeat for them.
- :mod:`hepgan.sweep.panda`: PanDA ``phpo`` evaluation payload and steering.
- :mod:`hepgan.sweep.results`: table, plots and best-model selection on physics.
- :mod:`hepgan.sweep.cache`: the shared persistent JAX compilation cache and ``warm``.
- :mod:`hepgan.sweep.dryrun`: a stand-in training to rehearse a campaign without a GPU.

The training is injected (default ``hepgan.train.fit``); nothing here is imported by training.
"""
