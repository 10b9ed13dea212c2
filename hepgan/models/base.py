"""The two roles every 3DGAN architecture fills, and the checks they share.

``Generator.latent(key, energy, theta) -> [B, latent_dim]`` builds the conditioned latent vector;
``Generator(latent) -> [B, X, Y, Z]`` cells in preprocessed units; ``Discriminator(x) -> dict`` of
``[B]`` heads. Train/eval mode is Flax's ``model.train()`` / ``model.eval()`` (BatchNorm, Dropout).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hepgan.models.config import ResolvedModelConfig
from hepgan.models.conv import (
    Conv3D,
    ConvSpec,
    Initializer,
    kernel_spectra,
    record_convs,
    use_kernel_spectra,
    zero_padding,
)
from hepgan.models.layers import Dropout, batch_norm, leaky_relu


def name_convs(module: nnx.Module) -> None:
    """Give every ``Conv3D`` attribute of ``module`` its attribute name (for ``conv_specs`` reports)."""
    for key, value in vars(module).items():
        if isinstance(value, Conv3D):
            value.name = key


def as_batch_vector(name: str, value: jax.Array, batch: int | None = None) -> jax.Array:
    """``value`` as a float32 ``[B]`` vector; ``ValueError`` naming ``name`` when it is not one."""
    arr = jnp.asarray(value, dtype=jnp.float32)
    if arr.ndim != 1 or (batch is not None and arr.shape[0] != batch):
        want = f"[{batch}]" if batch is not None else "[B]"
        raise ValueError(f"{name} must be a 1-D array {want}; got shape {arr.shape}")
    return arr


class Generator(nnx.Module):
    """Base of the generators: ``latent_dim``, output ``grid`` ``(X, Y, Z)`` and the config."""

    cfg: ResolvedModelConfig
    latent_dim: int
    grid: tuple[int, int, int]

    def latent(self, key: jax.Array, energy: jax.Array, theta: jax.Array | None = None) -> jax.Array:
        """Conditioned latent vectors ``[B, latent_dim]`` from ``energy: [B] GeV`` and ``theta: [B] rad``."""
        raise NotImplementedError

    def kernel_spectra(self, batch: int) -> dict[str, jax.Array]:
        """The FFT-path convolutions' kernel transforms for latent batches of ``batch`` (see
        ``hepgan.models.conv.kernel_spectra``), computed once for sampling with fixed weights: pass them
        to ``sample``. They belong to these weights: recompute after any update."""
        z = jax.ShapeDtypeStruct((batch, self.latent_dim), jnp.float32)
        return nnx.jit(lambda g: kernel_spectra(g, z))(self)

    def sample(
        self,
        key: jax.Array,
        energy: jax.Array,
        theta: jax.Array | None = None,
        spectra: dict[str, jax.Array] | None = None,
    ) -> jax.Array:
        """Showers ``[B, X, Y, Z]`` (preprocessed units) at ``energy: [B] GeV``, ``theta: [B] rad``,
        noise from ``key``; ``spectra`` from ``kernel_spectra(B)`` saves the kernel transforms (equal
        results within float32 rounding: about 1e-6 of the largest cell)."""
        with use_kernel_spectra(spectra or {}):
            return self(self.latent(key, energy, theta))

    def check_latent(self, z: jax.Array) -> None:
        """``ValueError`` unless ``z`` is ``[B, latent_dim]``."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"{type(self).__name__} ({self.cfg.arch}/{self.cfg.size}) expects latent "
                f"[B, {self.latent_dim}]; got shape {z.shape}"
            )


class Discriminator(nnx.Module):
    """Base of the discriminators: input ``grid`` ``(X, Y, Z)``, the heads it returns, and the BN call."""

    cfg: ResolvedModelConfig
    grid: tuple[int, int, int]
    heads: tuple[str, ...]

    def check_input(self, x: jax.Array) -> None:
        """``ValueError`` unless ``x`` is ``[B, X, Y, Z]`` with this model's grid."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.grid:
            raise ValueError(
                f"{type(self).__name__} ({self.cfg.arch}) expects showers "
                f"[B, {', '.join(map(str, self.grid))}]; got shape {x.shape}"
            )

    def build_trunk(
        self,
        kernel: tuple[int, int, int],
        kernel_init: Initializer,
        pooled: tuple[int, int, int],
        pads: tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]],
        rngs: nnx.Rngs,
    ) -> None:
        """The layers both 3DGAN discriminators share, named as in the Keras models: ``conv1`` ("same"),
        ``conv2``-``conv4`` ("valid") with ``bn2``-``bn4``, one ``dropout`` (no parameters, so one module
        serves the four Keras Dropout layers) and the Dense heads ``head_logit``, ``head_energy`` on the
        flattened ``[*pooled, d3]`` features. ``kernel_init`` initialises the convolutions and the heads.
        ``pads``: the Keras ZeroPadding3D before ``conv2``-``conv4``, folded into those convolutions."""
        cfg = self.cfg
        d0, d1, d2, d3 = cfg.d_channels
        eps, axis, impl = cfg.bn_epsilon, cfg.bn_axis_name, cfg.conv_impl
        self.conv1 = Conv3D(1, d0, kernel, padding="same", kernel_init=kernel_init, impl=impl, rngs=rngs)
        p2, p3, p4 = (zero_padding(p) for p in pads)
        self.conv2 = Conv3D(d0, d1, kernel, padding=p2, kernel_init=kernel_init, impl=impl, rngs=rngs)
        self.bn2 = batch_norm(d1, eps, axis, rngs)
        self.conv3 = Conv3D(d1, d2, kernel, padding=p3, kernel_init=kernel_init, impl=impl, rngs=rngs)
        self.bn3 = batch_norm(d2, eps, axis, rngs)
        self.conv4 = Conv3D(d2, d3, kernel, padding=p4, kernel_init=kernel_init, impl=impl, rngs=rngs)
        self.bn4 = batch_norm(d3, eps, axis, rngs)
        self.dropout = Dropout(cfg.dropout, rng=cfg.dropout_rng, rngs=rngs)
        n_flat = pooled[0] * pooled[1] * pooled[2] * d3
        self.head_logit = nnx.Linear(n_flat, 1, kernel_init=kernel_init, rngs=rngs)
        self.head_energy = nnx.Linear(n_flat, 1, kernel_init=kernel_init, rngs=rngs)
        name_convs(self)

    def block(self, conv: Conv3D, bn: nnx.BatchNorm, h: jax.Array) -> jax.Array:
        """One hidden layer: ZeroPad (in ``conv``'s padding) -> ``conv`` -> LeakyReLU -> ``bn`` -> Dropout.
        ``h: [B, X, Y, Z, C]``."""
        return self.dropout(self.batch_norm(bn, leaky_relu(conv(h))))

    def batch_norm(self, bn: nnx.BatchNorm, x: jax.Array) -> jax.Array:
        """Apply ``bn``; with ``cfg.d_bn_batch_stats`` normalise by batch statistics in every mode.

        In ``eval()`` mode that must not move the running averages (Keras updates them only while
        training), so they are put back after the call.
        """
        if self.cfg.d_bn_batch_stats and bn.use_running_average:
            mean, var = bn.mean[...], bn.var[...]
            y = bn(x, use_running_average=False)
            bn.mean[...], bn.var[...] = mean, var
            return y
        return bn(x)


def conv_specs(generator: Generator, discriminator: Discriminator, batch: int = 1) -> list[ConvSpec]:
    """Every convolution the two models run on a batch of ``batch`` events, in call order, with the layer
    name prefixed by "G." / "D.". Traced abstractly (``nnx.eval_shape``): nothing is computed."""
    specs: list[ConvSpec] = []
    z = jax.ShapeDtypeStruct((batch, generator.latent_dim), jnp.float32)
    x = jax.ShapeDtypeStruct((batch, *discriminator.grid), jnp.float32)
    for prefix, model, arg in (("G.", generator, z), ("D.", discriminator, x)):
        with record_convs() as rec:
            nnx.eval_shape(lambda m, a: m(a), model, arg)
        specs += [s._replace(name=prefix + s.name) for s in rec]
    return specs
