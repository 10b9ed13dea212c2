"""A 3DGAN-family model for cylindrical grids: the CaloChallenge datasets 2 and 3.

The grid is ``(alpha, r, layer)`` (``hepgan.data.geometry``: ``ds2`` 16 x 9 x 45, ``ds3`` 50 x 18 x 45).
The layers follow the fixed-angle 3DGAN's pattern (``hepgan.models.gan3d``): a Dense layer reshaped to
a coarse grid, convolutions with LeakyReLU and BatchNorm between upsamplings, a last one-filter
convolution and a ReLU; a discriminator of four convolutions with LeakyReLU, BatchNorm and dropout, an
average pooling and the three heads (real/fake logit, energy regression, ECAL sum). What differs, and
why:

- *Azimuth is periodic*: every convolution pads the alpha axis circularly (the cells at alpha 0 and
  2 pi are neighbours) and the r and layer axes with zeros ("same" size), so the whole model keeps the
  grid's shape until the generator's last crop.
- *Energy as a value*: the energies span three decades (1 GeV - 1 TeV), so the generator receives
  ``log10(E / GeV) / 3`` (0 at 1 GeV, 1 at 1 TeV) beside ``N(0, 1)`` noise (``latent_dim - 1``
  entries), as AngleGAN concatenates its conditions, rather than the fixed-angle model's
  ``(E / 100) * noise`` (whose norm would shrink a 1 GeV latent to 1 % of a 100 GeV one).

Shapes (``ds2``; ``ds3`` in brackets): Dense -> ``(4, 3, 12)`` [``(5, 3, 12)``] x ``g_dense_channels``
-> conv g0 -> upsample ``(2, 1, 2)`` [``(2, 2, 2)``] -> conv g1 -> upsample ``(2, 3, 2)``
[``(5, 3, 2)``] -> conv g2 -> conv 1 -> ReLU -> ``(16, 9, 48)`` [``(50, 18, 48)``] cropped to 45
layers. Kernels ``(3, 3, 5)``. The discriminator's four convolutions keep the grid, then an average
pooling by 2 feeds the heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hepgan.cells import undo_power
from hepgan.models.base import Discriminator, Generator, as_batch_vector, name_convs
from hepgan.models.config import ResolvedModelConfig
from hepgan.models.conv import Conv3D, Initializer
from hepgan.models.layers import (
    Dropout,
    avg_pool2,
    batch_norm,
    glorot_normal,
    glorot_uniform,
    he_uniform,
    leaky_relu,
)

# Per arch: the grid (alpha, r, layer), the Dense output grid and the two upsampling factors.
GRIDS: dict[str, tuple[int, int, int]] = {"ds2": (16, 9, 45), "ds3": (50, 18, 45)}
_DENSE: dict[str, tuple[int, int, int]] = {"ds2": (4, 3, 12), "ds3": (5, 3, 12)}
_UP: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "ds2": ((2, 1, 2), (2, 3, 2)),
    "ds3": ((2, 2, 2), (5, 3, 2)),
}
KERNEL = (3, 3, 5)
E_MIN_GEV = 1e-3  # the log-energy input is clipped here (the data start at 1 GeV)


def _conv(
    cin: int, cout: int, cfg: ResolvedModelConfig, init: Initializer, rngs: nnx.Rngs, bias: bool = True
) -> Conv3D:
    """A ``KERNEL`` convolution, zero-padded in r and layer, unpadded in alpha (see :func:`circular`)."""
    _, ky, kz = KERNEL
    pads = ((0, 0), ((ky - 1) // 2, ky // 2), ((kz - 1) // 2, kz // 2))
    return Conv3D(
        cin, cout, KERNEL, padding=pads, use_bias=bias, kernel_init=init, impl=cfg.conv_impl, rngs=rngs
    )


def circular(conv: Conv3D, x: jax.Array) -> jax.Array:
    """``conv`` of ``x: [B, A, R, Z, C]`` with the alpha axis padded circularly by ``KERNEL[0] // 2``
    (an odd kernel: the output keeps ``A``)."""
    p = KERNEL[0] // 2
    return conv(jnp.concatenate([x[:, -p:], x, x[:, :p]], axis=1))


def upsample(x: jax.Array, f: tuple[int, int, int]) -> jax.Array:
    """Nearest-neighbour upsampling of ``x: [B, A, R, Z, C]`` by ``f`` per axis (Keras UpSampling3D)."""
    for axis, k in zip((1, 2, 3), f, strict=True):
        if k > 1:
            x = jnp.repeat(x, k, axis=axis)
    return x


class CylindricalGenerator(Generator):
    """Generator ``[B, latent_dim] -> [B, A, R, 45]`` (preprocessed units, >= 0); see the module docstring."""

    def __init__(self, cfg: ResolvedModelConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.grid = GRIDS[cfg.arch]
        c0, (g0, g1, g2) = cfg.g_dense_channels, cfg.g_channels
        eps, axis = cfg.bn_epsilon, cfg.bn_axis_name
        dx, dy, dz = _DENSE[cfg.arch]
        self.dense = nnx.Linear(self.latent_dim, dx * dy * dz * c0, kernel_init=glorot_uniform, rngs=rngs)
        self.conv1 = _conv(c0, g0, cfg, he_uniform, rngs)
        self.bn1 = batch_norm(g0, eps, axis, rngs)
        self.conv2 = _conv(g0, g1, cfg, he_uniform, rngs)
        self.bn2 = batch_norm(g1, eps, axis, rngs)
        self.conv3 = _conv(g1, g2, cfg, he_uniform, rngs)
        self.conv4 = _conv(g2, 1, cfg, glorot_normal, rngs, bias=False)
        name_convs(self)

    def latent(self, key: jax.Array, energy: jax.Array, theta: jax.Array | None = None) -> jax.Array:
        """``[log10(E / GeV) / 3, N(0, 1)^(latent_dim - 1)]``: ``energy: [B] GeV``; ``theta`` ignored
        (normal incidence). Returns ``[B, latent_dim]``."""
        e = as_batch_vector("energy", energy)
        noise = jax.random.normal(key, (e.shape[0], self.latent_dim - 1), jnp.float32)
        return jnp.concatenate([(jnp.log10(jnp.maximum(e, E_MIN_GEV)) / 3.0)[:, None], noise], axis=1)

    def __call__(self, z: jax.Array) -> jax.Array:
        """``z: [B, latent_dim]`` -> showers ``[B, A, R, 45]``."""
        self.check_latent(z)
        up1, up2 = _UP[self.cfg.arch]
        x = self.dense(z).reshape(z.shape[0], *_DENSE[self.cfg.arch], -1)
        x = self.bn1(leaky_relu(circular(self.conv1, x)))
        x = self.bn2(leaky_relu(circular(self.conv2, upsample(x, up1))))
        x = leaky_relu(circular(self.conv3, upsample(x, up2)))
        x = jax.nn.relu(circular(self.conv4, x))  # [B, A, R, 48, 1]
        return x[:, :, :, : self.grid[2], 0]


class CylindricalDiscriminator(Discriminator):
    """Discriminator ``[B, A, R, 45] -> {"logit", "energy", "ecal"}``, each ``[B]``: four circular-alpha
    convolutions (LeakyReLU, BatchNorm after the last three, dropout), average pooling by 2, Dense heads
    for the logit and the energy (E/100 units) and the ECAL sum of the input cells (not learned)."""

    heads = ("logit", "energy", "ecal")

    def __init__(self, cfg: ResolvedModelConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.grid = GRIDS[cfg.arch]
        d0, d1, d2, d3 = cfg.d_channels
        eps, axis = cfg.bn_epsilon, cfg.bn_axis_name
        self.conv1 = _conv(1, d0, cfg, glorot_uniform, rngs)
        self.conv2 = _conv(d0, d1, cfg, glorot_uniform, rngs)
        self.bn2 = batch_norm(d1, eps, axis, rngs)
        self.conv3 = _conv(d1, d2, cfg, glorot_uniform, rngs)
        self.bn3 = batch_norm(d2, eps, axis, rngs)
        self.conv4 = _conv(d2, d3, cfg, glorot_uniform, rngs)
        self.bn4 = batch_norm(d3, eps, axis, rngs)
        self.dropout = Dropout(cfg.dropout, rng=cfg.dropout_rng, rngs=rngs)
        n_flat = (self.grid[0] // 2) * (self.grid[1] // 2) * (self.grid[2] // 2) * d3
        self.head_logit = nnx.Linear(n_flat, 1, kernel_init=glorot_uniform, rngs=rngs)
        self.head_energy = nnx.Linear(n_flat, 1, kernel_init=glorot_uniform, rngs=rngs)
        name_convs(self)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """``x: [B, A, R, 45]`` preprocessed cells -> ``[B]`` each: ``logit``, ``energy`` (E/100),
        ``ecal`` (sum of the cells before the power transform)."""
        self.check_input(x)
        h = self.dropout(leaky_relu(circular(self.conv1, x[..., None])))
        for conv, bn in ((self.conv2, self.bn2), (self.conv3, self.bn3), (self.conv4, self.bn4)):
            h = self.dropout(self.batch_norm(bn, leaky_relu(circular(conv, h))))
        h = avg_pool2(h).reshape(x.shape[0], -1)
        return {
            "logit": self.head_logit(h)[:, 0],
            "energy": self.head_energy(h)[:, 0],
            "ecal": jnp.sum(undo_power(x, self.cfg.cell_power), axis=(1, 2, 3)),
        }
