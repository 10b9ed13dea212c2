"""The fixed-angle 3DGAN (Khattak et al.; Keras ``EcalEnergyGan.py``): 25x25x25 showers, normal incidence.

Layer by layer as the Keras original, channel-last ``[B, X, Y, Z, C]`` inside (``docs/models.md`` has the
tables with shapes and parameter counts). Initialisers as Keras: the generator's convolutions
``he_uniform``, its last convolution ``glorot_normal``, everything else the Keras default
``glorot_uniform``; all biases zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hepgan.cells import undo_power
from hepgan.models.base import Discriminator, Generator, as_batch_vector, name_convs
from hepgan.models.config import ModelConfig, ResolvedModelConfig
from hepgan.models.conv import Conv3D, zero_padding
from hepgan.models.layers import (
    avg_pool2,
    batch_norm,
    glorot_normal,
    glorot_uniform,
    he_uniform,
    leaky_relu,
)

GRID = (25, 25, 25)
DENSE_GRID = (7, 7, 8)  # the Dense output is reshaped to (7, 7, 8, channels)
D_POOLED = (11, 11, 11)  # 25 -> same -> 25 -> 25 -> 23 (ZeroPad 1, valid 5) -> AvgPool(2) -> 11


class Generator3D(Generator):
    """Generator ``[B, latent_dim] -> [B, 25, 25, 25]`` (cells x 100 in the paper's preprocessing).

    Dense(7*7*8*c) -> reshape (7,7,8,c) -> Conv3D(g0,(6,6,8),same) -> LeakyReLU -> BN -> UpSampling(2,2,2)
    -> ZeroPad(2,2,0) -> Conv3D(g1,(6,5,8)) -> LeakyReLU -> BN -> UpSampling(2,2,3) -> ZeroPad(1,0,3)
    -> Conv3D(g2,(3,3,8)) -> LeakyReLU -> Conv3D(1,(2,2,2),no bias) -> ReLU.
    """

    def __init__(self, cfg: ModelConfig | ResolvedModelConfig, *, rngs: nnx.Rngs) -> None:
        cfg = cfg.resolve()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.grid = GRID
        c0, (g0, g1, g2) = cfg.g_dense_channels, cfg.g_channels
        eps, axis, impl = cfg.bn_epsilon, cfg.bn_axis_name, cfg.conv_impl
        n_dense = DENSE_GRID[0] * DENSE_GRID[1] * DENSE_GRID[2] * c0
        self.dense = nnx.Linear(self.latent_dim, n_dense, kernel_init=glorot_uniform, rngs=rngs)
        self.conv1 = Conv3D(c0, g0, (6, 6, 8), padding="same", kernel_init=he_uniform, impl=impl, rngs=rngs)
        self.bn1 = batch_norm(g0, eps, axis, rngs)
        # The Keras UpSampling3D and ZeroPadding3D before conv2 and conv3 are part of those convolutions
        pad2, pad3 = zero_padding((2, 2, 0)), zero_padding((1, 0, 3))
        self.conv2 = Conv3D(
            g0, g1, (6, 5, 8), padding=pad2, upsample=(2, 2, 2), kernel_init=he_uniform, impl=impl, rngs=rngs
        )
        self.bn2 = batch_norm(g1, eps, axis, rngs)
        self.conv3 = Conv3D(
            g1, g2, (3, 3, 8), padding=pad3, upsample=(2, 2, 3), kernel_init=he_uniform, impl=impl, rngs=rngs
        )
        self.conv4 = Conv3D(g2, 1, (2, 2, 2), use_bias=False, kernel_init=glorot_normal, impl=impl, rngs=rngs)
        name_convs(self)

    def latent(self, key: jax.Array, energy: jax.Array, theta: jax.Array | None = None) -> jax.Array:
        """``(E/100) * N(0, 1)^latent_dim`` (multiplicative conditioning, as the paper); with
        ``conditioning="product_and_value"`` its first entry is E/100 itself.

        ``key``: PRNG key; ``energy: [B] GeV``; ``theta`` is ignored (normal incidence).
        Returns ``[B, latent_dim]``.
        """
        e = as_batch_vector("energy", energy) / 100.0
        noise = jax.random.normal(key, (e.shape[0], self.latent_dim), jnp.float32)
        z = e[:, None] * noise
        if self.cfg.conditioning == "product_and_value":
            z = z.at[:, 0].set(e)
        return z

    def __call__(self, z: jax.Array) -> jax.Array:
        """``z: [B, latent_dim]`` -> showers ``[B, 25, 25, 25]`` (preprocessed units, >= 0)."""
        self.check_latent(z)
        x = self.dense(z).reshape(z.shape[0], *DENSE_GRID, -1)  # [B, 7, 7, 8, c]
        x = self.bn1(leaky_relu(self.conv1(x)))  # [B, 7, 7, 8, g0]
        x = self.bn2(
            leaky_relu(self.conv2(x))
        )  # UpSampling (2, 2, 2), ZeroPad (2, 2, 0) -> [B, 13, 14, 9, g1]
        x = leaky_relu(self.conv3(x))  # UpSampling (2, 2, 3), ZeroPad (1, 0, 3) -> [B, 26, 26, 26, g2]
        x = jax.nn.relu(self.conv4(x))  # [B, 25, 25, 25, 1]
        return x[..., 0]


class Discriminator3D(Discriminator):
    """Discriminator ``[B, 25, 25, 25] -> {"logit", "energy", "ecal"}``, each ``[B]``.

    Conv3D(d0,5^3,same) -> LeakyReLU -> Dropout(0.2) -> 2 x [ZeroPad(2) -> Conv3D(d,5^3) -> LeakyReLU -> BN
    -> Dropout] -> ZeroPad(1) -> Conv3D(d3,5^3) -> LeakyReLU -> BN -> Dropout -> AvgPool(2) -> Flatten;
    heads Dense(1) real/fake (pre-sigmoid logit), Dense(1) energy (linear, E/100 units), and the ECAL sum
    of the input cells (not learned). The Keras model calls its BN layers with ``training=True``, so by
    default they use batch statistics in ``eval()`` mode too (``ModelConfig.d_bn_batch_stats``).
    """

    heads = ("logit", "energy", "ecal")

    def __init__(self, cfg: ModelConfig | ResolvedModelConfig, *, rngs: nnx.Rngs) -> None:
        cfg = cfg.resolve()
        self.cfg = cfg
        self.grid = GRID
        # Keras default initialiser; ZeroPadding3D 2, 2, 1 before conv2-conv4
        self.build_trunk((5, 5, 5), glorot_uniform, D_POOLED, ((2, 2, 2), (2, 2, 2), (1, 1, 1)), rngs)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """``x: [B, 25, 25, 25]`` preprocessed cells -> ``[B]`` each: ``logit``, ``energy`` (E/100),
        ``ecal`` (sum of the cells)."""
        self.check_input(x)
        h = x[..., None]
        h = self.dropout(leaky_relu(self.conv1(h)))  # [B, 25, 25, 25, d0]
        h = self.block(self.conv2, self.bn2, h)  # ZeroPad 2 -> 25^3
        h = self.block(self.conv3, self.bn3, h)  # ZeroPad 2 -> 25^3
        h = self.block(self.conv4, self.bn4, h)  # ZeroPad 1 -> 23^3
        h = avg_pool2(h).reshape(x.shape[0], -1)  # [B, 11*11*11*d3]
        return {
            "logit": self.head_logit(h)[:, 0],
            "energy": self.head_energy(h)[:, 0],
            # cell_power is 1 for the paper's fixed-angle preprocessing; honoured if configured otherwise
            "ecal": jnp.sum(undo_power(x, self.cfg.cell_power), axis=(1, 2, 3)),
        }
