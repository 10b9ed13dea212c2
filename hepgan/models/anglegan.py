"""AngleGAN (Khattak et al., EPJC 82 (2022) 386; Keras ``AngleArch3dGAN.py``): 51x51x25 showers, 60-120 deg.

Layer by layer as the Keras original, channel-last ``[B, X, Y, Z, C]`` inside (``docs/models.md`` has the
tables). BatchNorm epsilon 1e-6 everywhere as the original. Initialisers as Keras: generator
convolutions ``he_uniform``, its last convolution ``glorot_normal``, its Dense the default
``glorot_uniform``; discriminator convolutions and heads ``VarianceScaling()`` (fan_in, truncated normal);
biases zero. The generator uses ReLU, the discriminator LeakyReLU(0.3).

The discriminator's angle and ECAL-sum heads are fixed functions of the image, computed on
``x^(1/cell_power)`` (the cells before the power-0.85 preprocessing). The angle head is
``measured_angle`` below.
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
    variance_scaling,
)

GRID = (51, 51, 25)
DENSE_GRID = (9, 9, 8)  # Dense(5184) = 9*9*8*8, reshaped to (9, 9, 8, 8)
D_POOLED = (19, 18, 7)  # (51,51,25) -same-> -pad z1-> (47,46,22) -pad z1-> (43,41,19) -> (39,36,14) -> /2


def _safe_div(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a / b`` where ``b > 0``, else 0, with finite gradients on both branches (double ``where``)."""
    ok = b > 0.0
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


def measured_angle(cells: jax.Array, cell_size_mm: float, layer_thickness_mm: float) -> jax.Array:
    """Polar angle of the shower axis from its energy distribution. ``cells: [B, X, Y, Z]`` linear
    energies (any unit) -> ``theta: [B]`` rad, ``pi/2`` = normal incidence.

    With cell centres ``y_j = (j + 1/2) * cell_size_mm`` and layer depths ``z_l = (l + 1/2) *
    layer_thickness_mm``, the per-layer barycentres ``ybar_l`` are fitted by the straight line
    ``y = a + s z`` by least squares with the layer energies ``E_l`` as weights:

        s = sum_l E_l (z_l - zbar)(ybar_l - ybar) / sum_l E_l (z_l - zbar)^2,
        zbar = sum_l E_l z_l / E,  ybar = sum_l E_l ybar_l / E,

    and ``theta = pi/2 - atan(s)``: the tilt is in the ``Y``-``Z`` plane (``hepgan.data.types``) and the
    axis direction ``(0, cos theta, sin theta)`` has ``dy/dz = cot theta``. Since ``E_l ybar_l`` is the
    y-moment of layer ``l``, ``s`` is the energy-weighted covariance of (y, z) over the cells divided by
    the variance of z: smooth in every cell energy, so the head passes gradients to the generator.
    Physical units matter: for the 3DGAN ECAL the cell pitch (5.1 mm) and the layer thickness (4.0 mm)
    differ, and the ratio scales ``s``. (The Keras ``ecal_angle`` worked in cell indices, i.e. a ratio
    of 1, and averaged per-layer angles; the fit here is the same idea, better conditioned.)
    Events with no energy, or all of it in one layer, get ``pi/2``.
    """
    y = (jnp.arange(cells.shape[2], dtype=jnp.float32) + 0.5) * cell_size_mm  # [Y]
    z = (jnp.arange(cells.shape[3], dtype=jnp.float32) + 0.5) * layer_thickness_mm  # [Z]
    e_yz = jnp.sum(cells, axis=1)  # [B, Y, Z]
    e_l = jnp.sum(e_yz, axis=1)  # [B, Z] layer energies
    ey_l = jnp.sum(e_yz * y[None, :, None], axis=1)  # [B, Z] y-moments per layer
    e_tot = jnp.sum(e_l, axis=1)
    zbar = _safe_div(jnp.sum(e_l * z[None, :], axis=1), e_tot)
    ybar = _safe_div(jnp.sum(ey_l, axis=1), e_tot)
    dz = z[None, :] - zbar[:, None]  # [B, Z]
    s_yz = jnp.sum(dz * ey_l, axis=1) - ybar * jnp.sum(dz * e_l, axis=1)
    s_zz = jnp.sum(e_l * dz * dz, axis=1)
    slope = _safe_div(s_yz, s_zz)
    return jnp.float32(jnp.pi / 2) - jnp.arctan(slope)


class AngleGenerator(Generator):
    """Generator ``[B, latent_dim] -> [B, 51, 51, 25]`` (cells^0.85 x scale in the paper's preprocessing).

    Dense(9*9*8*c) -> reshape (9,9,8,c) -> UpSampling(6) -> Conv3D(g0,(6,6,8)) -> ReLU -> BN
    -> 3 x [ZeroPad(2,2,1) -> Conv3D(g,(4,4,6)) -> ReLU -> BN] -> ZeroPad(1,1,0) -> Conv3D(g4,(3,3,5))
    -> ReLU -> BN -> ZeroPad(1,1,0) -> Conv3D(g5,(3,3,3)) -> ReLU -> Conv3D(1,(2,2,2)) -> ReLU.
    """

    def __init__(self, cfg: ModelConfig | ResolvedModelConfig, *, rngs: nnx.Rngs) -> None:
        cfg = cfg.resolve()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.grid = GRID
        c0, g = cfg.g_dense_channels, cfg.g_channels
        eps, axis, impl = cfg.bn_epsilon, cfg.bn_axis_name, cfg.conv_impl
        n_dense = DENSE_GRID[0] * DENSE_GRID[1] * DENSE_GRID[2] * c0
        self.dense = nnx.Linear(self.latent_dim, n_dense, kernel_init=glorot_uniform, rngs=rngs)
        he = he_uniform
        self.conv1 = Conv3D(c0, g[0], (6, 6, 8), upsample=(6, 6, 6), kernel_init=he, impl=impl, rngs=rngs)
        self.bn1 = batch_norm(g[0], eps, axis, rngs)
        self.conv2 = Conv3D(
            g[0], g[1], (4, 4, 6), padding=zero_padding((2, 2, 1)), kernel_init=he, impl=impl, rngs=rngs
        )
        self.bn2 = batch_norm(g[1], eps, axis, rngs)
        self.conv3 = Conv3D(
            g[1], g[2], (4, 4, 6), padding=zero_padding((2, 2, 1)), kernel_init=he, impl=impl, rngs=rngs
        )
        self.bn3 = batch_norm(g[2], eps, axis, rngs)
        self.conv4 = Conv3D(
            g[2], g[3], (4, 4, 6), padding=zero_padding((2, 2, 1)), kernel_init=he, impl=impl, rngs=rngs
        )
        self.bn4 = batch_norm(g[3], eps, axis, rngs)
        self.conv5 = Conv3D(
            g[3], g[4], (3, 3, 5), padding=zero_padding((1, 1, 0)), kernel_init=he, impl=impl, rngs=rngs
        )
        self.bn5 = batch_norm(g[4], eps, axis, rngs)
        self.conv6 = Conv3D(
            g[4], g[5], (3, 3, 3), padding=zero_padding((1, 1, 0)), kernel_init=he, impl=impl, rngs=rngs
        )
        self.conv7 = Conv3D(g[5], 1, (2, 2, 2), kernel_init=glorot_normal, impl=impl, rngs=rngs)
        name_convs(self)

    def latent(self, key: jax.Array, energy: jax.Array, theta: jax.Array | None = None) -> jax.Array:
        """``concat[E/100, theta, N(0, 1)^(latent_dim - 2)]`` as the paper.

        ``key``: PRNG key; ``energy: [B] GeV``; ``theta: [B] rad`` (required). -> ``[B, latent_dim]``.
        """
        e = as_batch_vector("energy", energy)
        if theta is None:
            raise ValueError("AngleGenerator.latent needs theta [B] rad (the angle conditions the generator)")
        t = as_batch_vector("theta", theta, e.shape[0])
        noise = jax.random.normal(key, (e.shape[0], self.latent_dim - 2), jnp.float32)
        return jnp.concatenate([(e / 100.0)[:, None], t[:, None], noise], axis=1)

    def __call__(self, z: jax.Array) -> jax.Array:
        """``z: [B, latent_dim]`` -> showers ``[B, 51, 51, 25]`` (preprocessed units, >= 0)."""
        self.check_latent(z)
        x = self.dense(z).reshape(z.shape[0], *DENSE_GRID, -1)  # [B, 9, 9, 8, c]
        x = self.bn1(jax.nn.relu(self.conv1(x)))  # UpSampling 6 -> [B, 54, 54, 48, c] -> [B, 49, 49, 41, g0]
        x = self.bn2(jax.nn.relu(self.conv2(x)))  # ZeroPad (2, 2, 1) -> [B, 50, 50, 38, g1]
        x = self.bn3(jax.nn.relu(self.conv3(x)))  # ZeroPad (2, 2, 1) -> [B, 51, 51, 35, g2]
        x = self.bn4(jax.nn.relu(self.conv4(x)))  # ZeroPad (2, 2, 1) -> [B, 52, 52, 32, g3]
        x = self.bn5(jax.nn.relu(self.conv5(x)))  # ZeroPad (1, 1, 0) -> [B, 52, 52, 28, g4]
        x = jax.nn.relu(self.conv6(x))  # ZeroPad (1, 1, 0) -> [B, 52, 52, 26, g5]
        x = jax.nn.relu(self.conv7(x))  # [B, 51, 51, 25, 1]
        return x[..., 0]


class AngleDiscriminator(Discriminator):
    """Discriminator ``[B, 51, 51, 25] -> {"logit", "energy", "ecal", "angle"}``, each ``[B]``.

    Conv3D(d0,(5,6,6),same) -> LeakyReLU -> Dropout(0.2) -> 2 x [ZeroPad(0,0,1) -> Conv3D(d,(5,6,6))
    -> LeakyReLU -> BN -> Dropout] -> Conv3D(d3,(5,6,6)) -> LeakyReLU -> BN -> Dropout -> AvgPool(2)
    -> Flatten (19*18*7*d3 = 19152 for the paper); heads Dense(1) real/fake logit, Dense(1) energy (E/100),
    and on ``x^(1/cell_power)``: the ECAL sum and ``measured_angle`` (rad).
    """

    heads = ("logit", "energy", "ecal", "angle")

    def __init__(self, cfg: ModelConfig | ResolvedModelConfig, *, rngs: nnx.Rngs) -> None:
        cfg = cfg.resolve()
        self.cfg = cfg
        self.grid = GRID
        # ZeroPadding3D (0, 0, 1) before conv2 and conv3, none before conv4
        self.build_trunk((5, 6, 6), variance_scaling, D_POOLED, ((0, 0, 1), (0, 0, 1), (0, 0, 0)), rngs)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """``x: [B, 51, 51, 25]`` preprocessed cells -> ``[B]`` each: ``logit``, ``energy`` (E/100),
        ``ecal`` (sum of ``x^(1/cell_power)``), ``angle`` (rad)."""
        self.check_input(x)
        h = x[..., None]
        h = self.dropout(leaky_relu(self.conv1(h)))  # [B, 51, 51, 25, d0]
        h = self.block(self.conv2, self.bn2, h)  # ZeroPad (0, 0, 1) -> 47,46,22
        h = self.block(self.conv3, self.bn3, h)  # ZeroPad (0, 0, 1) -> 43,41,19
        h = self.block(self.conv4, self.bn4, h)  # [B, 39, 36, 14, d3]
        h = avg_pool2(h).reshape(x.shape[0], -1)  # [B, 19*18*7*d3]
        linear = undo_power(x, self.cfg.cell_power)
        cell_mm, layer_mm = self.cfg.cell_size_mm, self.cfg.layer_thickness_mm
        assert cell_mm is not None and layer_mm is not None  # filled by ModelConfig.resolve for angle51
        return {
            "logit": self.head_logit(h)[:, 0],
            "energy": self.head_energy(h)[:, 0],
            "ecal": jnp.sum(linear, axis=(1, 2, 3)),
            "angle": measured_angle(linear, cell_mm, layer_mm),
        }
