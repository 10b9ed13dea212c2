"""``fixed25``: the fixed-angle 3DGAN format (the public ``EleEscan_*.h5`` files).

``ECAL`` ``[N, 25, 25, 25]`` cell energies (GeV) and ``target`` ``[N, C >= 2]`` with the particle id (PDG
code, +-11 for electrons) in ``target[:, 0]`` and the primary energy (GeV) in ``target[:, 1]``.
Reading puts ``target[:, 0]`` into ``Showers.extra["pdgID"]`` and any further columns into
``extra["target_rest"]``; writing puts them back. ``theta`` (rad) is stored only when the showers are
not at normal incidence, so that files of the simulator's normal showers have the public files' keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from pathlib import Path

import h5py
import numpy as np

from hepgan.data.formats.base import (
    DEFAULT_PDG_ID,
    NORMAL,
    EcalFormat,
    Layout,
    Selection,
    ShowerFileError,
    Sink,
    as_f32,
    need,
)
from hepgan.data.types import Showers


class Fixed25(EcalFormat):
    """The fixed-angle 3DGAN layout (see the module docstring)."""

    name = "fixed25"
    expected = "'ECAL' [N, 25, 25, 25] and 'target' [N, C >= 2] (fixed-angle 3DGAN)"
    core_keys = frozenset({"ECAL", "target", "theta"})
    energy_key = "target"
    default_grid = (25, 25, 25)
    # EcalEnergyTrain.GetprocData drops ECAL cells below 1e-6 GeV.
    cell_threshold = 1e-6
    detect_order = 1
    derived_extras = ("pdgID",)
    packed_extras = frozenset({"pdgID", "target_rest"})

    def matches(self, keys: Set[str]) -> bool:
        """``ECAL`` and ``target``."""
        return "ECAL" in keys and "target" in keys

    def inspect_conditions(
        self, path: Path, ds: Mapping[str, h5py.Dataset]
    ) -> tuple[dict[str, int], str | None]:
        """``target`` ``[N, >=2]``; ``theta`` when present."""
        target = need(path, ds, "target", "[N, C >= 2] with the primary energy (GeV) in column 1")
        if target.ndim != 2 or target.shape[1] < 2:
            raise ShowerFileError(
                path,
                f"expected shape [N, C >= 2] (particle id, primary energy GeV, ...); found {target.shape}",
                "target",
            )
        return {"target": int(target.shape[0])}, ("theta" if "theta" in ds else None)

    def read_energy(
        self, f: h5py.File, layout: Layout, sel: Selection
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``target[:, 1]`` (GeV), with ``pdgID`` (column 0) and ``target_rest`` (columns 2 on)."""
        target = np.asarray(f["target"][sel])
        extra = {"pdgID": target[:, 0]}
        if target.shape[1] > 2:
            extra["target_rest"] = target[:, 2:]
        return as_f32(target[:, 1]), extra

    def create(self, w: Sink, s: Showers) -> None:
        """``ECAL`` (float32 GeV) and ``target`` (float32, two columns plus ``target_rest``'s)."""
        w.new("ECAL", w.grid, np.float32, "GeV")
        cols = 2 + (s.extra["target_rest"].shape[1] if "target_rest" in s.extra else 0)
        w.new("target", (cols,), np.float32)
        w.f["target"].attrs["columns"] = "0: particle id (PDG code), 1: primary energy (GeV)"

    def write(self, w: Sink, a: int, b: int, s: Showers) -> None:
        """Cells to ``ECAL``; particle id (default electron), energy and ``target_rest`` to ``target``."""
        if w.normal_incidence and s.theta is not None and not np.all(s.theta == NORMAL):
            raise ValueError(
                f"{w.path}: fixed25 file started with normal incidence (no theta stored) but a later "
                "chunk has other angles; write angled showers in the 'angle' format"
            )
        w.f["ECAL"][a:b] = s.ecal
        target = np.empty((len(s), w.f["target"].shape[1]), dtype=np.float32)
        target[:, 0] = s.extra.get("pdgID", DEFAULT_PDG_ID)
        target[:, 1] = s.energy
        if target.shape[1] > 2:
            target[:, 2:] = s.extra["target_rest"]
        w.f["target"][a:b] = target

    def stores_theta(self, w: Sink, s: Showers, theta_is_mtheta: bool) -> bool:
        """Never at normal incidence (a fixed-angle file means it: the public files' keys)."""
        return not w.normal_incidence and super().stores_theta(w, s, theta_is_mtheta)


FIXED25 = Fixed25()
