"""The cells' power transform and its inverse: the one definition used by the preprocessing
(:class:`hepgan.data.pipeline.Preprocess`), the discriminators' ECAL-sum heads and the GAN update.

The papers train on ``(ecal * cell_scale) ** cell_power``: ``cell_power`` 1 for the fixed-angle 3DGAN,
0.85 for AngleGAN (:data:`CELL_POWER`). Losses that compare energies (the ECAL sum) undo the power first.
Both functions take NumPy or JAX arrays and return the same kind (JAX works inside ``jit``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

CELL_POWER = {"fixed25": 1.0, "angle51": 0.85, "ds2": 0.5, "ds3": 0.5}
"""The papers' cell power per model architecture (``EcalEnergyTrain.py``; ``AngleTrain3dGAN.py``
``xpower=0.85``). The CaloChallenge grids (no paper) take 0.5: their cells span seven decades (15 keV to
about 100 GeV at 1 TeV), which the square root compresses to three and a half."""


def _xp(x: Any) -> Any:
    return np if isinstance(x, np.ndarray | np.generic) else jnp


def apply_power(x: Any, cell_power: float, *, out: np.ndarray | None = None) -> Any:
    """``max(x, 0) ** cell_power``: cells ``[..., X, Y, Z]`` (>= 0, scaled) -> network units, same shape.

    A tiny negative from upstream float noise is clipped to 0 (a fractional power of it would be NaN).
    ``out``: NumPy only, write the result there (may be ``x`` itself, to save a copy of a large batch).
    ``cell_power == 1`` returns ``x`` unchanged (or copied into ``out``).
    """
    if cell_power == 1.0:
        if out is not None and out is not x:
            np.copyto(out, x)
            return out
        return x
    if out is not None:
        np.maximum(x, np.float32(0.0), out=out)
        return np.power(out, np.asarray(cell_power, out.dtype), out=out)
    xp = _xp(x)
    return xp.power(xp.maximum(x, 0), xp.asarray(cell_power, x.dtype))


def undo_power(x: Any, cell_power: float) -> Any:
    """Cells before the power transform: ``max(x, 0) ** (1 / cell_power)``.

    ``x: [..., X, Y, Z]`` network-unit cells ``>= 0`` (negatives are clipped to 0: a fractional power of a
    negative number is undefined) -> same shape and dtype, in the preprocessing's linear scale.
    """
    if cell_power == 1.0:
        return x
    xp = _xp(x)
    return xp.power(xp.maximum(x, 0), xp.asarray(1.0 / cell_power, x.dtype))
