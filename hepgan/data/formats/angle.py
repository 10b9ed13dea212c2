"""``angle``: the variable-angle 3DGAN format (AngleGAN).

``ECAL`` ``[N, 51, 51, 25]`` cell energies (GeV), ``energy`` ``[N]`` (``[N, 1]`` accepted, GeV) and
``theta`` and/or ``mtheta`` ``[N]`` (rad); any other per-event dataset (``eta``, ``phi``, ``HCAL``,
``pdgID``, ...) passes through ``Showers.extra``. ``Showers.theta`` is ``theta``, or ``mtheta`` when
the file holds only that; the writer stores ``theta`` only when it differs from ``extra["mtheta"]``,
so an mtheta-only file is written back as one. Showers without an angle are written at ``pi/2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from pathlib import Path

import h5py
import numpy as np

from hepgan.data.formats.base import EcalFormat, Layout, Selection, ShowerFileError, Sink, as_f32, need
from hepgan.data.types import Showers


class Angle(EcalFormat):
    """The variable-angle 3DGAN layout (see the module docstring)."""

    name = "angle"
    expected = "'ECAL' [N, 51, 51, 25], 'energy' [N] and 'theta' and/or 'mtheta' [N] (variable-angle 3DGAN)"
    core_keys = frozenset({"ECAL", "energy", "theta"})
    energy_key = "energy"
    default_grid = (51, 51, 25)
    # AngleTrain3dGAN.GetDataAngle drops ECAL cells below 1e-4 GeV.
    cell_threshold = 1e-4
    detect_order = 2

    def matches(self, keys: Set[str]) -> bool:
        """``ECAL`` and ``energy``."""
        return "ECAL" in keys and "energy" in keys

    def inspect_conditions(
        self, path: Path, ds: Mapping[str, h5py.Dataset]
    ) -> tuple[dict[str, int], str | None]:
        """``energy`` ``[N]`` or ``[N, 1]``; ``theta``, else ``mtheta``, required."""
        energy = need(path, ds, "energy", "primary energies [N] (GeV)")
        if energy.ndim not in (1, 2) or (energy.ndim == 2 and energy.shape[1] != 1):
            raise ShowerFileError(path, f"expected shape [N] or [N, 1]; found {energy.shape}", "energy")
        if "theta" in ds:
            theta_key = "theta"
        elif "mtheta" in ds:
            theta_key = "mtheta"
        else:
            raise ShowerFileError(
                path, "missing dataset; expected 'theta' and/or 'mtheta' [N] (rad)", "theta"
            )
        return {"energy": int(energy.shape[0])}, theta_key

    def read_energy(
        self, f: h5py.File, layout: Layout, sel: Selection
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``energy`` (GeV)."""
        return as_f32(np.asarray(f["energy"][sel]).reshape(-1)), {}

    def create(self, w: Sink, s: Showers) -> None:
        """``ECAL`` and ``energy`` (float32 GeV)."""
        w.new("ECAL", w.grid, np.float32, "GeV")
        w.new("energy", (), np.float32, "GeV")

    def write(self, w: Sink, a: int, b: int, s: Showers) -> None:
        """Cells to ``ECAL``, primary energies to ``energy``."""
        w.f["ECAL"][a:b] = s.ecal
        w.f["energy"][a:b] = s.energy

    def stores_theta(self, w: Sink, s: Showers, theta_is_mtheta: bool) -> bool:
        """Always, unless ``theta`` would repeat ``mtheta`` (no angle at all is written as ``pi/2``)."""
        return not theta_is_mtheta


ANGLE = Angle()
