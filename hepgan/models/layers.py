"""Keras layer semantics the 3DGAN architectures rely on, for channel-last arrays ``[B, X, Y, Z, C]``.

Keras defaults are spelled out here because a port that silently takes the framework's own defaults
(LeakyReLU slope 0.01, BatchNorm epsilon 1e-5, bilinear upsampling, lecun init) is a different model.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# Keras UpSampling3D lives with the convolution that folds it in; re-exported here with the other layers.
from hepgan.models.conv import upsample_nearest as upsample_nearest

# Keras `LeakyReLU()` default alpha (Flax/JAX default is 0.01).
LEAKY_SLOPE = 0.3
# Keras BatchNormalization: moving = momentum * moving + (1 - momentum) * batch. Flax's nnx.BatchNorm
# updates `ra = momentum * ra + (1 - momentum) * batch` (flax/nnx/nn/normalization.py), the same
# convention, so Keras momentum 0.99 maps to Flax momentum 0.99 unchanged (PyTorch's momentum would be
# 0.01). Keras additionally applies Bessel's correction n/(n-1) to the batch variance entering the moving
# average; with n = B * X * Y * Z >= 10^4 here that is a relative 1e-4 or less, and it never touches
# training-mode outputs, so Flax's biased variance is kept.
BN_MOMENTUM = 0.99
KERAS_BN_EPSILON = 1e-3  # Keras default (fixed-angle 3DGAN)

# Keras initializers (tf.keras 2 definitions; JAX's variance_scaling computes fan_in/fan_out of a
# [kx, ky, kz, Cin, Cout] kernel as Keras does: receptive field x Cin, receptive field x Cout).
glorot_uniform = jax.nn.initializers.glorot_uniform()  # Keras default for Dense and Conv3D
glorot_normal = jax.nn.initializers.glorot_normal()  # truncated normal, as tf.keras
he_uniform = jax.nn.initializers.he_uniform()
# Keras `VarianceScaling()` with its defaults: scale 1, fan_in, truncated normal (tf.keras 2).
variance_scaling = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def leaky_relu(x: jax.Array) -> jax.Array:
    """Keras ``LeakyReLU()``: slope 0.3 for negative inputs."""
    return jax.nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def zero_pad(x: jax.Array, pads: Sequence[int]) -> jax.Array:
    """Keras ``ZeroPadding3D((px, py, pz))``: ``p`` zeros on *both* sides of each spatial axis."""
    return jnp.pad(x, ((0, 0), *((p, p) for p in pads), (0, 0)))


def avg_pool2(x: jax.Array) -> jax.Array:
    """Keras ``AveragePooling3D((2, 2, 2))`` with "valid" padding: an odd trailing voxel is dropped.
    ``x: [B, X, Y, Z, C]`` -> ``[B, X//2, Y//2, Z//2, C]``."""
    b, nx, ny, nz, c = x.shape
    mx, my, mz = nx // 2, ny // 2, nz // 2
    x = x[:, : 2 * mx, : 2 * my, : 2 * mz, :].reshape(b, mx, 2, my, 2, mz, 2, c)
    return x.mean(axis=(2, 4, 6))


def batch_norm(features: int, epsilon: float, axis_name: str | None, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """Keras ``BatchNormalization(momentum=0.99, epsilon=epsilon)`` over the channel (last) axis.

    Four numbers per channel as in Keras: trainable ``scale`` (gamma, ones) and ``bias`` (beta, zeros);
    non-trainable ``mean`` (zeros) and ``var`` (ones), stored as ``nnx.BatchStat``. ``axis_name``
    averages the batch statistics over a ``shard_map`` axis (global BatchNorm); ``None`` keeps them
    per device under ``shard_map`` and global under ``jit`` over a sharded batch.
    """
    return nnx.BatchNorm(
        features,
        momentum=BN_MOMENTUM,
        epsilon=epsilon,
        axis_name=axis_name,
        use_fast_variance=False,
        rngs=rngs,
    )
