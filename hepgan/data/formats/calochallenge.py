"""``calochallenge``: the Fast Calorimeter Simulation Challenge 2022 format.

``incident_energies`` ``[N, 1]`` (MeV) and ``showers`` ``[N, n_voxels]`` (MeV); ``theta`` ``[N]`` (rad)
when the showers carry an angle. The flat voxel axis has no geometry of its own, so our writer stores
the grid (attribute ``grid`` = X, Y, Z) and the flattening order (``voxel_order``, default ``"ZXY"``:
cell ``[x, y, z]`` is voxel ``((z * X) + x) * Y + y``); a file without ``grid`` needs the grid passed
in, except the challenge's datasets 2 (6480 voxels) and 3 (40500), read as the ``ds2``/``ds3`` grids
(alpha, r, layer) of :mod:`hepgan.data.geometry`, whose "ZXY" order is the challenge's own.
GeV <-> MeV is exact: the writer multiplies float32 GeV by 1000 in float64 (at most 34 significant
bits), the reader divides by 1000 and gets the same float32 back.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from pathlib import Path

import h5py
import numpy as np

from hepgan.data.formats.base import (
    DEFAULT_VOXEL_ORDER,
    MEV_PER_GEV,
    Format,
    Layout,
    Selection,
    ShowerFileError,
    Sink,
    as_f32,
    need,
)
from hepgan.data.types import Showers

# The challenge's own datasets 2 and 3 carry no grid attribute: their voxel counts name them. Grids as the
# ``ds2``/``ds3`` presets of hepgan.data.geometry, (alpha, r, layer), whose "ZXY" order is the challenge's.
CHALLENGE_GRIDS: dict[int, tuple[int, int, int]] = {6480: (16, 9, 45), 40500: (50, 18, 45)}


class CaloChallenge(Format):
    """The CaloChallenge 2022 layout (see the module docstring)."""

    name = "calochallenge"
    expected = "'incident_energies' [N, 1] and 'showers' [N, n_voxels] (CaloChallenge 2022)"
    core_keys = frozenset({"incident_energies", "showers", "theta"})
    cell_key = "showers"
    energy_key = "incident_energies"
    # The files come with their own readout threshold already applied.
    cell_threshold = 0.0
    # Checked first: a file with both layouts' datasets is a CaloChallenge file.
    detect_order = 0

    def matches(self, keys: Set[str]) -> bool:
        """``incident_energies`` and ``showers``."""
        return {"incident_energies", "showers"} <= keys

    def inspect(
        self,
        path: Path,
        f: h5py.File,
        ds: Mapping[str, h5py.Dataset],
        want_grid: tuple[int, int, int] | None,
    ) -> tuple[Layout, dict[str, int]]:
        """Ranks, the grid (which must be given: attribute or caller), voxel count and order."""
        showers = need(path, ds, "showers", "[N, n_voxels] cell energies (MeV)")
        inc = need(path, ds, "incident_energies", "[N, 1] primary energies (MeV)")
        if showers.ndim != 2:
            raise ShowerFileError(
                path, f"expected rank 2 [N, n_voxels]; found shape {showers.shape}", "showers"
            )
        if inc.ndim not in (1, 2) or (inc.ndim == 2 and inc.shape[1] != 1):
            raise ShowerFileError(path, f"expected shape [N, 1]; found {inc.shape}", "incident_energies")
        if want_grid is None:
            want_grid = CHALLENGE_GRIDS.get(int(showers.shape[1]))
        if want_grid is None:
            raise ShowerFileError(
                path,
                "the file carries no voxel grid (attribute 'grid'); pass the grid explicitly "
                "(geometry=(X, Y, Z) or a preset name; CLI: --geometry) to read its flat voxels",
                "showers",
            )
        n = int(showers.shape[0])
        grid = want_grid
        if int(showers.shape[1]) != grid[0] * grid[1] * grid[2]:
            raise ShowerFileError(
                path,
                f"{showers.shape[1]} voxels per event do not fill the grid {grid} "
                f"({grid[0] * grid[1] * grid[2]} voxels)",
                "showers",
            )
        voxel_order = str(f.attrs.get("voxel_order", DEFAULT_VOXEL_ORDER))
        if sorted(voxel_order) != ["X", "Y", "Z"]:
            raise ShowerFileError(path, f"attribute voxel_order={voxel_order!r} is not a permutation of XYZ")
        theta_key = "theta" if "theta" in ds else None
        layout = Layout(self, n, grid, theta_key, voxel_order=voxel_order)
        return layout, {"showers": n, "incident_energies": int(inc.shape[0])}

    def read_cells(self, f: h5py.File, layout: Layout, sel: Selection) -> np.ndarray:
        """``showers`` (MeV, flat in ``voxel_order``) as ``[m, X, Y, Z]`` float32 GeV."""
        flat = np.asarray(f["showers"][sel], dtype=np.float64) / MEV_PER_GEV
        dims = {"X": layout.grid[0], "Y": layout.grid[1], "Z": layout.grid[2]}
        cube = flat.reshape(flat.shape[0], *(dims[a] for a in layout.voxel_order))
        perm = [1 + layout.voxel_order.index(a) for a in "XYZ"]
        return as_f32(cube.transpose(0, *perm))

    def read_energy(
        self, f: h5py.File, layout: Layout, sel: Selection
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``incident_energies`` (MeV) in GeV."""
        inc = np.asarray(f["incident_energies"][sel], dtype=np.float64)
        return as_f32(inc.reshape(-1) / MEV_PER_GEV), {}

    def create(self, w: Sink, s: Showers) -> None:
        """``showers`` and ``incident_energies`` (float64 MeV), attributes ``voxel_order``/``voxel_index``."""
        w.f.attrs["voxel_order"] = DEFAULT_VOXEL_ORDER
        w.f.attrs["voxel_index"] = "((z * X) + x) * Y + y for cell [x, y, z]"
        g = w.grid
        # float64 keeps GeV -> MeV -> GeV exact for float32 inputs (x * 1000 needs <= 34 bits).
        w.new("showers", (g[0] * g[1] * g[2],), np.float64, "MeV")
        w.new("incident_energies", (1,), np.float64, "MeV")

    def write(self, w: Sink, a: int, b: int, s: Showers) -> None:
        """Cells flattened in :data:`DEFAULT_VOXEL_ORDER` and energies, both in MeV."""
        order = [1 + "XYZ".index(ax) for ax in DEFAULT_VOXEL_ORDER]
        cube = s.ecal.astype(np.float64).transpose(0, *order)
        w.f["showers"][a:b] = cube.reshape(len(s), -1) * MEV_PER_GEV
        w.f["incident_energies"][a:b] = s.energy.astype(np.float64)[:, None] * MEV_PER_GEV


CALOCHALLENGE = CaloChallenge()
