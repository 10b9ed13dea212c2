"""Explaining a trained 3DGAN and its training: ``hepgan-explain`` and its Python API.

Views (each writes PNG figures, a JSON summary and one self-contained HTML page into an output folder,
``RUN/explain`` by default):

- :mod:`hepgan.explain.dynamics`: the training dynamics from the run's logs and checkpoints (D(real) and
  D(fake) per energy and angle bin over time, per-layer gradient and weight norms, update-to-weight
  ratios, collapse indicators) with warnings for patterns that precede divergence or collapse.
- :mod:`hepgan.explain.dissect`: which generator channels follow which shower observables (correlation
  over many showers), and what zeroing the top channels does to those observables (ablation).
- :mod:`hepgan.explain.traverse`: showers along energy and angle sweeps at a fixed latent, latent
  interpolations, and latent directions from the dissection.
- :mod:`hepgan.explain.explorer`: one offline HTML page with sliders over precomputed showers.
- :mod:`hepgan.explain.regenerate`: one shower of a generated file, regenerated exactly from its
  per-shower provenance.
"""
