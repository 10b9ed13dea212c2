"""The one in-memory container for a set of calorimeter showers, shared by every room.

Conventions (all rooms rely on them):
- ``ecal``: ``[N, X, Y, Z]`` float32 cell energies in *file units*: GeV of visible (sampled) energy,
  so that ``ecal.sum() / energy`` is the sampling fraction (about 0.02 for the 3DGAN W/Si calorimeter).
  ``Z`` is depth (the layer index); ``X`` and ``Y`` are transverse.
- ``energy``: ``[N]`` float32 primary (incident) particle energy in GeV.
- ``theta``: ``[N]`` float32 polar angle of incidence in radians, ``pi/2`` = normal incidence; the shower
  axis is tilted in the ``Y``-``Z`` plane (as in the 3DGAN variable-angle data). ``None`` when the data
  carry no angle (fixed-angle data are at normal incidence).
- ``extra``: any other per-event arrays (``eta``, ``phi``, ``HCAL``, ``pdgID``, ``mtheta``, ...), first
  axis ``N``, passed through readers and writers unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Showers:
    """A batch of showers with their conditions; see the module docstring for shapes and units."""

    ecal: np.ndarray
    energy: np.ndarray
    theta: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.ecal.shape[0]
        if self.ecal.ndim != 4:
            raise ValueError(f"Showers.ecal must be [N, X, Y, Z]; got shape {self.ecal.shape}")
        if self.energy.shape != (n,):
            raise ValueError(f"Showers.energy must be [N]={n}; got shape {self.energy.shape}")
        if self.theta is not None and self.theta.shape != (n,):
            raise ValueError(f"Showers.theta must be [N]={n}; got shape {self.theta.shape}")
        for k, v in self.extra.items():
            if v.shape[:1] != (n,):
                raise ValueError(f"Showers.extra[{k!r}] must have first axis N={n}; got shape {v.shape}")

    def __len__(self) -> int:
        return int(self.ecal.shape[0])

    @property
    def grid(self) -> tuple[int, int, int]:
        """Cell grid ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.ecal.shape[1:])  # type: ignore[return-value]

    def theta_or_normal(self) -> np.ndarray:
        """``theta`` ``[N]`` rad, or ``pi/2`` for every event when the data carry no angle."""
        if self.theta is not None:
            return self.theta
        return np.full(len(self), np.pi / 2, dtype=np.float32)

    def __getitem__(self, idx: slice | np.ndarray) -> Showers:
        return Showers(
            ecal=self.ecal[idx],
            energy=self.energy[idx],
            theta=None if self.theta is None else self.theta[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    @staticmethod
    def concat(parts: Iterable[Showers]) -> Showers:
        """Concatenate along the event axis; all parts must share grid, angle presence and extra keys."""
        parts = list(parts)
        if not parts:
            raise ValueError("Showers.concat needs at least one part")
        keys = set(parts[0].extra)
        for p in parts[1:]:
            if p.grid != parts[0].grid:
                raise ValueError(f"cannot concatenate grids {parts[0].grid} and {p.grid}")
            if (p.theta is None) != (parts[0].theta is None) or set(p.extra) != keys:
                raise ValueError("cannot concatenate showers with different angle/extra keys")
        return Showers(
            ecal=np.concatenate([p.ecal for p in parts]),
            energy=np.concatenate([p.energy for p in parts]),
            theta=None if parts[0].theta is None else np.concatenate([p.theta for p in parts]),  # type: ignore[misc]
            extra={k: np.concatenate([p.extra[k] for p in parts]) for k in keys},
        )

    def as_dict(self) -> Mapping[str, np.ndarray]:
        """Flat mapping ``ecal``, ``energy``, ``theta`` (if any), then the extras."""
        out = {"ecal": self.ecal, "energy": self.energy}
        if self.theta is not None:
            out["theta"] = self.theta
        out.update(self.extra)
        return out
