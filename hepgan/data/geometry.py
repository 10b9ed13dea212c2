"""Calorimeter cell grids: the two 3DGAN geometries and CaloChallenge datasets 2 and 3 as presets.

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

Cylindrical presets: the CaloChallenge 2022 datasets 2 and 3 (calochallenge.github.io/homepage; the
binning files ``binning_dataset_2.xml``, ``binning_dataset_3.xml`` of its evaluation code):

- ``ds2``: 45 layers x 16 angular x 9 radial bins (6480 voxels), radial pitch 4.65 mm (0.5 R_M of W);
- ``ds3``: 45 layers x 50 angular x 18 radial bins (40500 voxels), radial pitch 2.325 mm.

The detector is 90 physical layers of 1.4 mm W and 0.3 mm Si read out in pairs, so a readout layer is 3.4
mm deep (0.8 X0 of W) and holds two sampling layers (``layers_per_cell = 2``). The cell grid is ``(X, Y,
Z) = (alpha, r, layer)``: cell ``[a, r, z]`` covers the azimuth ``-pi + [a, a + 1) * 2 pi / n_alpha``
(the challenge's ``XMLHandler`` convention) and the radii ``[r_edges_mm[r], r_edges_mm[r + 1])`` around
the particle's direction at depth ``[z, z + 1) * layer_thickness_mm``. With the CaloChallenge format's
``voxel_order`` "ZXY" (cell ``[x, y, z]`` is voxel ``(z * X + x) * Y + y``) this is the challenge's own
flat order, layer by layer, angle by angle, radius fastest, so its files are read without reordering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """A regular cell grid of a sampling calorimeter.

    ``shape`` is ``(X, Y, Z)`` with ``Z`` the depth (layer) axis; ``cell_size_mm`` the transverse pitch
    (cartesian) or the radial pitch of the first bin (cylindrical); ``layer_thickness_mm`` the depth
    pitch, equal to ``layers_per_cell * (absorber_thickness_mm + sensor_thickness_mm)``.

    ``kind``: ``"cartesian"`` (square cells) or ``"cylindrical"`` (``shape = (n_alpha, n_r, n_layers)``
    with the radial bin edges ``r_edges_mm``, ``n_r + 1`` increasing values from 0; see the module
    docstring).
    """

    name: str
    shape: tuple[int, int, int]
    cell_size_mm: float
    layer_thickness_mm: float
    absorber_thickness_mm: float = 3.5
    sensor_thickness_mm: float = 0.5
    kind: str = "cartesian"
    r_edges_mm: tuple[float, ...] | None = None
    layers_per_cell: int = 1

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
        if not (isinstance(self.layers_per_cell, int) and self.layers_per_cell >= 1):
            raise ValueError(
                f"Geometry {self.name!r}: layers_per_cell must be an int >= 1; got {self.layers_per_cell!r}"
            )
        total = self.layers_per_cell * (self.absorber_thickness_mm + self.sensor_thickness_mm)
        if abs(total - self.layer_thickness_mm) > 1e-9 * max(1.0, total):
            raise ValueError(
                f"Geometry {self.name!r}: layer_thickness_mm ({self.layer_thickness_mm}) must equal "
                f"layers_per_cell x (absorber_thickness_mm + sensor_thickness_mm) ({total})"
            )
        if self.kind not in KINDS:
            raise ValueError(f"Geometry {self.name!r}: kind must be one of {KINDS}; got {self.kind!r}")
        if self.kind == "cylindrical":
            edges = np.asarray(self.r_edges_mm if self.r_edges_mm is not None else (), dtype=float)
            if edges.shape != (self.shape[1] + 1,) or edges[0] != 0 or np.any(np.diff(edges) <= 0):
                raise ValueError(
                    f"Geometry {self.name!r}: a cylindrical grid needs r_edges_mm, {self.shape[1] + 1} "
                    f"increasing radii from 0 (n_r = shape[1] = {self.shape[1]}); got {self.r_edges_mm}"
                )
        elif self.r_edges_mm is not None:
            raise ValueError(f"Geometry {self.name!r}: r_edges_mm is for cylindrical grids only")

    @property
    def sampling_layer_mm(self) -> float:
        """Thickness of one physical absorber + sensor layer (mm): what the sampling corrections use."""
        return self.absorber_thickness_mm + self.sensor_thickness_mm

    @property
    def cylindrical(self) -> bool:
        """Whether cells are bins in (alpha, r) rather than squares in (x, y)."""
        return self.kind == "cylindrical"

    @property
    def n_cells(self) -> int:
        """Number of cells ``X * Y * Z``."""
        return int(np.prod(self.shape))

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell-centre coordinates ``x: [X]``, ``y: [Y]``, ``z: [Z]`` in mm (see module docstring); for a
        cylindrical grid ``alpha: [X]`` in rad, ``r: [Y]`` (the bins' middle radii) and ``z: [Z]`` in mm."""
        nx, ny, nz = self.shape
        if self.cylindrical:
            edges = np.asarray(self.r_edges_mm, dtype=float)
            alpha = -np.pi + (np.arange(nx) + 0.5) * (2 * np.pi / nx)
            return alpha, (edges[:-1] + edges[1:]) / 2, (np.arange(nz) + 0.5) * self.layer_thickness_mm
        x = (np.arange(nx) - (nx - 1) / 2) * self.cell_size_mm
        y = (np.arange(ny) - (ny - 1) / 2) * self.cell_size_mm
        z = (np.arange(nz) + 0.5) * self.layer_thickness_mm
        return x, y, z


_CELL_MM = 5.1  # CLIC ECAL transverse pitch
_W_MM, _SI_MM = 3.5, 0.5  # one X0 of tungsten + a 0.5 mm silicon sensor per layer

KINDS = ("cartesian", "cylindrical")
# CaloChallenge datasets 2 and 3: 1.4 mm W + 0.3 mm Si, read out in pairs (3.4 mm per readout layer)
_CC_W_MM, _CC_SI_MM = 1.4, 0.3


def _cc(name: str, n_alpha: int, n_r: int, pitch_mm: float) -> Geometry:
    edges = tuple(round(i * pitch_mm, 6) for i in range(n_r + 1))
    return Geometry(
        name, (n_alpha, n_r, 45), pitch_mm, 2 * (_CC_W_MM + _CC_SI_MM), _CC_W_MM, _CC_SI_MM,
        kind="cylindrical", r_edges_mm=edges, layers_per_cell=2,
    )  # fmt: skip


PRESETS: dict[str, Geometry] = {
    "fixed25": Geometry("fixed25", (25, 25, 25), _CELL_MM, _W_MM + _SI_MM, _W_MM, _SI_MM),
    "angle51": Geometry("angle51", (51, 51, 25), _CELL_MM, _W_MM + _SI_MM, _W_MM, _SI_MM),
    "ds2": _cc("ds2", 16, 9, 4.65),
    "ds3": _cc("ds3", 50, 18, 2.325),
}


def get_geometry(name: str) -> Geometry:
    """The preset named ``name`` (``"fixed25"``, ``"angle51"``, ``"ds2"``, ``"ds3"``); ``ValueError`` for
    any other name."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown geometry {name!r}: expected one of {sorted(PRESETS)} "
            "(fixed25 = 25x25x25 cells, angle51 = 51x51x25 cells, ds2/ds3 = the CaloChallenge datasets "
            "2 and 3 as (alpha, r, layer) = 16x9x45 and 50x18x45)"
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
