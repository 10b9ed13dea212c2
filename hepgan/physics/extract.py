"""Host-side extraction: run the jitted observables over a whole shower set in fixed-size chunks.

Metrics, plots and the report all start from an :class:`ObservableSet` (NumPy arrays per event), computed
once per shower set. Chunks are padded to a fixed size so XLA compiles the observables once per grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from hepgan.data.types import Showers
from hepgan.physics import observables as obs

DEFAULT_CHUNK = 512


def pitch_for_grid(grid: tuple[int, int, int]) -> tuple[float, float]:
    """``(cell_size_mm, layer_thickness_mm)`` for a grid, from the geometry presets of
    :mod:`hepgan.data.geometry` whose shape matches; ``(1.0, 1.0)`` (angle measured in cell units) for a
    grid no preset describes, e.g. a CaloChallenge voxelisation."""
    try:
        from hepgan.data.geometry import geometry_for_shape

        g = geometry_for_shape(grid)
    except (ImportError, ValueError):  # a grid no preset describes: angle in cell units
        return 1.0, 1.0
    return float(g.cell_size_mm), float(g.layer_thickness_mm)


@dataclass
class ObservableSet:
    """Per-event observables of one shower set (NumPy, float64 for stable statistics).

    ``scalars[name]: [N]`` for every name in :data:`hepgan.physics.observables.SCALAR_NAMES`;
    ``profile_x/y/z: [N, X|Y|Z] GeV``; ``sparsity: [N, T]``; ``spectrum: [K]`` counts over the set;
    ``energy: [N] GeV``; ``theta: [N] rad`` or ``None`` (the *true* angle the showers were made with);
    ``extra["mean_xy"]: [X, Y]`` and ``extra["mean_yz"]: [Y, Z]`` GeV, the mean shower's projections.
    """

    scalars: dict[str, np.ndarray]
    profile_x: np.ndarray
    profile_y: np.ndarray
    profile_z: np.ndarray
    sparsity: np.ndarray
    spectrum: np.ndarray
    energy: np.ndarray
    theta: np.ndarray | None
    grid: tuple[int, int, int]
    pitch: tuple[float, float] = (1.0, 1.0)
    extra: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.energy.shape[0])

    def features(self, names: tuple[str, ...]) -> np.ndarray:
        """Stack the named per-event scalars into ``[N, F]``."""
        return np.stack([self.scalars[n] for n in names], axis=1)

    def select(self, mask: np.ndarray) -> ObservableSet:
        """The events where ``mask: [N] bool`` holds (the spectrum stays the set's total)."""
        return ObservableSet(
            scalars={k: v[mask] for k, v in self.scalars.items()},
            profile_x=self.profile_x[mask],
            profile_y=self.profile_y[mask],
            profile_z=self.profile_z[mask],
            sparsity=self.sparsity[mask],
            spectrum=self.spectrum,
            energy=self.energy[mask],
            theta=None if self.theta is None else self.theta[mask],
            grid=self.grid,
            pitch=self.pitch,
        )


def extract(
    showers: Showers,
    *,
    pitch: tuple[float, float] | None = None,
    threshold: float = obs.HIT_THRESHOLD,
    chunk: int = DEFAULT_CHUNK,
) -> ObservableSet:
    """Compute every observable of ``showers`` (``ecal [N, X, Y, Z] GeV``, ``energy [N] GeV``).

    ``pitch``: ``(cell_size_mm, layer_thickness_mm)`` for the measured angle; default from the geometry
    preset matching the grid (:func:`pitch_for_grid`).
    """
    if len(showers) == 0:
        raise ValueError("cannot compute observables of an empty shower set (0 events)")
    pitch = pitch_for_grid(showers.grid) if pitch is None else pitch
    n = len(showers)
    size = min(chunk, n)
    parts: list[dict[str, np.ndarray]] = []
    spectrum = np.zeros(len(obs.spectrum_edges()) - 1)
    sum_xy = np.zeros(showers.grid[:2])
    sum_yz = np.zeros(showers.grid[1:])
    for start in range(0, n, size):
        ecal = np.asarray(showers.ecal[start : start + size], dtype=np.float32)
        energy = np.asarray(showers.energy[start : start + size], dtype=np.float32)
        m = ecal.shape[0]
        if m < size:  # pad with empty events (no cell reaches the lowest spectrum edge)
            ecal = np.concatenate([ecal, np.zeros((size - m, *ecal.shape[1:]), np.float32)])
            energy = np.concatenate([energy, np.ones(size - m, np.float32)])
        out = obs.compute_all(
            jnp.asarray(ecal),
            jnp.asarray(energy),
            cell_size_mm=float(pitch[0]),
            layer_thickness_mm=float(pitch[1]),
            threshold=float(threshold),
        )
        host = {k: np.asarray(v) for k, v in out.items()}
        spectrum += host.pop("spectrum")
        sum_xy += host.pop("sum_xy")
        sum_yz += host.pop("sum_yz")
        parts.append({k: v[:m].astype(np.float64) for k, v in host.items()})
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return ObservableSet(
        scalars={k: cat[k] for k in obs.SCALAR_NAMES},
        profile_x=cat["profile_x"],
        profile_y=cat["profile_y"],
        profile_z=cat["profile_z"],
        sparsity=cat["sparsity"],
        spectrum=spectrum,
        energy=np.asarray(showers.energy, dtype=np.float64),
        theta=None if showers.theta is None else np.asarray(showers.theta, dtype=np.float64),
        grid=showers.grid,
        pitch=(float(pitch[0]), float(pitch[1])),
        extra={"mean_xy": sum_xy / n, "mean_yz": sum_yz / n},
    )
