"""Keras layer semantics the 3DGAN architectures rely on, for channel-last arrays ``[B, X, Y, Z, C]``.

Keras defaults are spelled out here because a port that silently takes the framework's own defaults
(LeakyReLU slope 0.01, BatchNorm epsilon 1e-5, bilinear upsampling, lecun init) is a different model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# Keras UpSampling3D lives with the convolution that folds it in; re-exported here with the other layers.
from hepgan.models.config import DROPOUT_RNGS
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


_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive counters over the 32-bit range


def _mix32(x: jax.Array) -> jax.Array:
    """A 32-bit integer finaliser (xor-shift / multiply, constants of the "lowbias32" hash, bias about
    0.1 of an ideal avalanche); ``x`` uint32, any shape."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hash_bits(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """32 pseudo-random bits per element, uint32 ``shape``: a counter-based hash of each element's flat
    index and two 32-bit seeds drawn from ``key`` (``jax.random.bits``), computed inside one fused
    elementwise loop without materialising any state.

    Written here because no ``jax.random`` generator is cheap on CPU: Threefry (the default, and what
    ``nnx.Dropout`` uses) costs about 15 ns per element on the 2-core VM, 20 % of a paper fixed25 training
    step at batch 16, and XLA's RngBitGenerator (``impl="rbg"``) is no faster there; this hash costs a few
    integer operations. It is not a general-purpose generator (no jumps, no streams, 2^32 elements at
    most); dropout masks need only independent-looking bits that differ per key.
    """
    n = math.prod(int(s) for s in shape)
    if n >= 2**32:
        raise ValueError(f"hash_bits: at most 2^32 elements per call; got shape {tuple(shape)}")
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    i = (
        jax.lax.iota(jnp.uint32, n).reshape(tuple(int(s) for s in shape))
        if n
        else jnp.zeros(shape, jnp.uint32)
    )
    return _mix32(_mix32(i * jnp.uint32(_GOLDEN) + seeds[0]) ^ seeds[1])


class Dropout(nnx.Dropout):
    """Keras ``Dropout(rate)``: in training mode each element is kept with probability ``1 - rate`` and
    scaled by ``1 / (1 - rate)``; in ``eval()`` mode the identity. State and modes as ``nnx.Dropout`` (the
    ``dropout`` RNG stream, one key per call), so checkpoints are interchangeable.

    ``rng="hash"`` draws the mask from :func:`hash_bits` (keep where the bits are below
    ``(1 - rate) 2^32``, exact to 2^-32); ``rng="threefry"`` is ``nnx.Dropout`` itself
    (``jax.random.bernoulli``), the masks of hepgan before the hash. Both are Bernoulli masks of the same
    rate; they differ element by element, so runs are reproducible bit for bit only with the same choice.
    """

    def __init__(self, rate: float, *, rng: str = "hash", rngs: nnx.Rngs) -> None:
        if rng not in DROPOUT_RNGS:
            raise ValueError(
                f"Dropout rng (ModelConfig.dropout_rng) must be one of {DROPOUT_RNGS}; got {rng!r}"
            )
        super().__init__(rate, rngs=rngs)
        self.rng = rng

    def __call__(self, inputs: jax.Array) -> jax.Array:  # type: ignore[override]
        """``inputs``: any shape -> same shape, masked and rescaled in training mode."""
        if self.rng == "threefry":
            return super().__call__(inputs)
        if self.rate == 0.0 or self.deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        keep = 1.0 - float(self.rate)
        threshold = jnp.uint32(min(round(keep * 2**32), 2**32 - 1))
        mask = hash_bits(self.rngs(), inputs.shape) < threshold
        return jnp.where(mask, inputs / jnp.asarray(keep, inputs.dtype), jnp.zeros_like(inputs))


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
