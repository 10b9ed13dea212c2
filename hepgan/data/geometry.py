"""Calorimeter cell grids: the two 3DGAN geometries as presets.

Both presets describe the same tungsten/silicon sampling ECAL, a CLIC-like design as used for the 3DGAN
data sets, seen through two windows:

- ``fixed25``: 25 x 25 x 25 cells, the fixed-angle (normal incidence) 3DGAN data;
- ``angle51``: 51 x 51 x 25 cells, the variable-angle data (the wider window keeps tilted showers in).

Numbers and why:

- transverse pitch 5.1 mm: the cell size of the CLIC ECAL design (CLIC CDR Vol. 2, CERN-2012-003), also the
  cell size of the 3DGAN/LCD calorimeter data;
- a layer is 3.5 mm of tungsten (X0 = 3.504 mm, PDG) plus a 0.5 mm silicon sensor, 4.0 mm in all, i.e.
  about one radiation length of the homogenised W/Si mixture per layer (X0_eff = 3.98 mm). 25 layers are then
  about 25 X0: the shower maximum of a 500 GeV electron lies near 9.5 X0 and about 99 % of its energy falls
  within 25 X0 (GFLASH mean profile), while a 10 GeV shower peaks near 5.5 X0, so the 10-500 GeV range
  of the 3DGAN data is contained with the maximum well inside the stack. The 0.5 mm of silicon gives a
  visible (sampled) fraction of about 2 % (mip ratio 0.19 MeV / 7.9 MeV times e/mip about 0.7), as in the
  3DGAN files.

Coordinates (used by the simulator and by anyone who needs cell positions): ``x`` and ``y`` are
transverse, in mm, with 0 at the transverse centre of the grid (the middle of the central cell for odd
sizes); ``z`` is depth in mm from the front face, layer ``k`` spanning ``[k, k+1) * layer_thickness_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """A regular cell grid of a sampling calorimeter.

    ``shape`` is ``(X, Y, Z)`` with ``Z`` the depth (layer) axis; ``cell_size_mm`` the transverse pitch;
    ``layer_thickness_mm`` the depth pitch, equal to ``absorber_thickness_mm + sensor_thickness_mm``.
    """

    name: str
    shape: tuple[int, int, int]
    cell_size_mm: float
    layer_thickness_mm: float
    absorber_thickness_mm: float = 3.5
    sensor_thickness_mm: float = 0.5

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(s) <= 0 for s in self.shape):
            raise ValueError(
                f"Geometry {self.name!r}: shape must be three positive ints (X, Y, Z); got {self.shape}"
            )
        if self.cell_size_mm <= 0 or self.layer_thickness_mm <= 0:
            raise ValueError(
                f"Geometry {self.name!r}: cell_size_mm and layer_thickness_mm must be > 0; "
                f"got {self.cell_size_mm}, {self.layer_thickness_mm}"
            )
        if self.absorber_thickness_mm <= 0 or self.sensor_thickness_mm <= 0:
            raise ValueError(
                f"Geometry {self.name!r}: absorber_thickness_mm and sensor_thickness_mm must be > 0; "
                f"got {self.absorber_thickness_mm}, {self.sensor_thickness_mm}"
            )
        total = self.absorber_thickness_mm + self.sensor_thickness_mm
        if abs(total - self.layer_thickness_mm) > 1e-9 * max(1.0, total):
            raise ValueError(
                f"Geometry {self.name!r}: layer_thickness_mm ({self.layer_thickness_mm}) must equal "
                f"absorber_thickness_mm + sensor_thickness_mm ({total})"
            )

    @property
    def n_cells(self) -> int:
        """Number of cells ``X * Y * Z``."""
        return int(np.prod(self.shape))

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell-centre coordinates ``x: [X]``, ``y: [Y]``, ``z: [Z]`` in mm (see module docstring)."""
        nx, ny, nz = self.shape
        x = (np.arange(nx) - (nx - 1) / 2) * self.cell_size_mm
        y = (np.arange(ny) - (ny - 1) / 2) * self.cell_size_mm
        z = (np.arange(nz) + 0.5) * self.layer_thickness_mm
        return x, y, z


_CELL_MM = 5.1  # CLIC ECAL transverse pitch
_W_MM, _SI_MM = 3.5, 0.5  # one X0 of tungsten + a 0.5 mm silicon sensor per layer

PRESETS: dict[str, Geometry] = {
    "fixed25": Geometry("fixed25", (25, 25, 25), _CELL_MM, _W_MM + _SI_MM, _W_MM, _SI_MM),
    "angle51": Geometry("angle51", (51, 51, 25), _CELL_MM, _W_MM + _SI_MM, _W_MM, _SI_MM),
}


def get_geometry(name: str) -> Geometry:
    """The preset named ``name`` (``"fixed25"`` or ``"angle51"``); ``ValueError`` for any other name."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown geometry {name!r}: expected one of {sorted(PRESETS)} "
            "(fixed25 = 25x25x25 cells, angle51 = 51x51x25 cells)"
        ) from None


def geometry_for_shape(shape: tuple[int, int, int]) -> Geometry:
    """The preset whose cell grid is ``shape`` ``(X, Y, Z)``; ``ValueError`` when none matches."""
    for g in PRESETS.values():
        if tuple(int(s) for s in shape) == g.shape:
            return g
    raise ValueError(
        f"no geometry preset has the cell grid {tuple(shape)}: expected one of "
        + ", ".join(f"{n} {g.shape}" for n, g in PRESETS.items())
    )
