"""The ``("data",)`` device mesh and the two shardings of data parallelism: batch split, state replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def make_mesh(devices: int | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over the first ``devices`` local devices of every process.

    ``None`` takes all of ``jax.devices()``. Devices are ordered by process, so each process owns one
    contiguous block of the batch (what :class:`hepgan.data.pipeline.Pipeline` reads). Raises
    ``ValueError`` when ``devices`` exceeds the local device count.
    """
    if devices is None:
        return Mesh(np.array(jax.devices()), (AXIS,))
    n_local = jax.local_device_count()
    if not 1 <= devices <= n_local:
        raise ValueError(
            f"parallel.devices={devices}, but this process sees {n_local} device(s) "
            f"({jax.default_backend()}); use 1..{n_local} or null for all"
        )
    chosen = []
    for p in range(jax.process_count()):
        local = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        chosen.extend(local[:devices])
    return Mesh(np.array(chosen), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of the training state: a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch ``[B, ...]``: the leading axis split over ``"data"``."""
    return NamedSharding(mesh, P(AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of ``tree`` (identical on all processes) replicated on ``mesh``."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x: Any) -> jax.Array:
        a = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(put, tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a host batch (the same global batch on every process) split over ``"data"``."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]), batch
    )
