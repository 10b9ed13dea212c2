"""Hydra configuration groups of ``hepgan-train`` (YAML files; schemas in hepgan.train.config)."""
