"""Deliberate faults, to see what the explain views show on a broken training (``docs/explain.md``).

``collapsed_latent()``: while active, the fixed-angle 3DGAN generator's latent vector is ``E/100 * ones``
instead of ``E/100 * N(0, 1)``: the generator ignores its noise, so every shower at one energy is the
same (total mode collapse at fixed conditions). Train under it, and look at the run under it too, so that
the run is collapsed wherever it is looked at::

    with collapsed_latent():
        fit(cfg)
        explain_dynamics(run_dir, out)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp


@contextlib.contextmanager
def collapsed_latent() -> Iterator[None]:
    """Replace ``Generator3D.latent`` by a noise-free one (see the module docstring); undone on exit."""
    from hepgan.models import gan3d
    from hepgan.models.base import as_batch_vector

    original = gan3d.Generator3D.latent

    def latent(self: Any, key: jax.Array, energy: jax.Array, theta: jax.Array | None = None) -> jax.Array:
        e = as_batch_vector("energy", energy) / 100.0
        return e[:, None] * jnp.ones((e.shape[0], self.latent_dim), jnp.float32)

    gan3d.Generator3D.latent = latent  # type: ignore[method-assign]
    try:
        yield
    finally:
        gan3d.Generator3D.latent = original  # type: ignore[method-assign]
