"""hepgan.physics: shower observables (JAX), validation metrics, figures and reports.

``observables`` (jit-able, ``[B, X, Y, Z]``), ``metrics.evaluate`` (the yardstick: ``physics_score``,
``sf_rel_error`` and the rest), ``report.write_report``. This package knows nothing of training, models
or sweeps: the yardstick must not depend on what it measures. See docs/physics.md.
"""
