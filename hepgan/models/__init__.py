"""The 3DGAN family in Flax NNX: the fixed-angle 3DGAN (25x25x25), AngleGAN (51x51x25) and a 3DGAN for
the CaloChallenge datasets 2 and 3 (cylindrical grids).

``build(ModelConfig(arch=..., size=..., conv_impl=...), nnx.Rngs(seed)) -> (generator, discriminator)``.
See ``docs/models.md`` for the layer tables, the Keras conventions kept, and the convolution choice.
"""

from __future__ import annotations

from flax import nnx

from hepgan.cells import undo_power
from hepgan.models.anglegan import AngleDiscriminator, AngleGenerator, measured_angle
from hepgan.models.base import Discriminator, Generator, conv_specs
from hepgan.models.config import ARCHS, PRESETS, SIZES, ModelConfig, ResolvedModelConfig
from hepgan.models.cylindrical import CylindricalDiscriminator, CylindricalGenerator
from hepgan.models.gan3d import Discriminator3D, Generator3D

__all__ = [
    "ARCHS",
    "PRESETS",
    "SIZES",
    "AngleDiscriminator",
    "AngleGenerator",
    "CylindricalDiscriminator",
    "CylindricalGenerator",
    "Discriminator",
    "Discriminator3D",
    "Generator",
    "Generator3D",
    "ModelConfig",
    "ResolvedModelConfig",
    "build",
    "conv_specs",
    "measured_angle",
    "undo_power",
]


def build(cfg: ModelConfig | ResolvedModelConfig, rngs: nnx.Rngs) -> tuple[Generator, Discriminator]:
    """Generator and discriminator for ``cfg`` (validated; ``ValueError`` names a bad field).

    Parameters are drawn from ``rngs`` (the ``params`` stream, else ``default``), generator first, so
    the same seed gives the same models whatever ``conv_impl`` is. Both start in training mode.
    """
    cfg = cfg.resolve()
    if cfg.arch == "fixed25":
        return Generator3D(cfg, rngs=rngs), Discriminator3D(cfg, rngs=rngs)
    if cfg.arch in ("ds2", "ds3"):
        return CylindricalGenerator(cfg, rngs=rngs), CylindricalDiscriminator(cfg, rngs=rngs)
    return AngleGenerator(cfg, rngs=rngs), AngleDiscriminator(cfg, rngs=rngs)
