"""Voxel geometry of CaloChallenge 2022 datasets 2 and 3, as the challenge's binning files define it.

The binning files (``code/binning_dataset_2.xml`` and ``code/binning_dataset_3.xml`` of the public
repository CaloChallenge/homepage) give, for each of the 45 layers, the radial bin edges in mm and the
number of angular bins ``n_bin_alpha``; in both datasets every layer has the same binning, so one set of
edges per dataset is stored here:

- dataset 2: 9 radial bins of 4.65 mm (edges 0 .. 41.85 mm), 16 angular bins: 144 voxels a layer;
- dataset 3: 18 radial bins of 2.325 mm (edges 0 .. 41.85 mm), 50 angular bins: 900 voxels a layer.

Flat voxel index (the challenge's order, and hepgan's ``"ZXY"`` order of a grid ``[alpha, r, layer]``):
``(layer * n_alpha + alpha) * n_r + r``.

Where a voxel sits (the challenge's ``XMLHandler``): at the centre of its radial bin, ``r_c = (r_lo +
r_hi) / 2``, and at the centre of its angular bin, the angular bins dividing ``[-pi, pi]`` evenly (so the
first bin's centre is ``-pi + pi / n_alpha``, no further offset); ``x = r_c cos(alpha_c)`` (the challenge
calls it eta) and ``y = r_c sin(alpha_c)`` (phi), in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLD_MEV = 0.5e-3 / 0.033
"""Voxel readout threshold of datasets 2 and 3 in MeV, 15.15 keV: the challenge's evaluation sets every
voxel below ``0.5 keV / 0.033`` (the silicon deposit threshold over the sampling fraction) to 0 before it
computes anything."""

R_EDGES_DS2 = (0.0, 4.65, 9.3, 13.95, 18.6, 23.25, 27.9, 32.55, 37.2, 41.85)
"""Radial bin edges of dataset 2 in mm, every layer (``binning_dataset_2.xml``)."""

R_EDGES_DS3 = (
    0.0, 2.325, 4.65, 6.975, 9.3, 11.625, 13.95, 16.275, 18.6, 20.925,
    23.25, 25.575, 27.9, 30.225, 32.55, 34.875, 37.2, 39.525, 41.85,
)  # fmt: skip
"""Radial bin edges of dataset 3 in mm, every layer (``binning_dataset_3.xml``)."""


@dataclass(frozen=True)
class Binning:
    """Cylindrical voxel binning shared by all layers: ``n_layers`` layers, ``n_alpha`` angular bins over
    ``[-pi, pi]`` and radial bins with edges ``r_edges`` (mm). ``threshold`` is the voxel readout
    threshold in MeV applied before any feature is computed."""

    name: str
    n_layers: int
    n_alpha: int
    r_edges: tuple[float, ...]
    threshold: float = THRESHOLD_MEV

    def __post_init__(self) -> None:
        edges = np.asarray(self.r_edges, np.float64)
        if self.n_layers < 1 or self.n_alpha < 1 or edges.ndim != 1 or len(edges) < 2:
            raise ValueError(
                f"binning {self.name!r}: needs n_layers >= 1, n_alpha >= 1 and at least two radial edges; "
                f"got n_layers={self.n_layers}, n_alpha={self.n_alpha}, r_edges={self.r_edges}"
            )
        if np.any(np.diff(edges) <= 0) or edges[0] < 0:
            raise ValueError(
                f"binning {self.name!r}: radial edges must start at >= 0 mm and increase; got {self.r_edges}"
            )

    @property
    def n_r(self) -> int:
        """Radial bins per layer."""
        return len(self.r_edges) - 1

    @property
    def voxels_per_layer(self) -> int:
        """``n_alpha * n_r``."""
        return self.n_alpha * self.n_r

    @property
    def n_voxels(self) -> int:
        """``n_layers * n_alpha * n_r``: the length of a flat shower."""
        return self.n_layers * self.voxels_per_layer

    @property
    def grid(self) -> tuple[int, int, int]:
        """The hepgan grid ``(X, Y, Z) = (n_alpha, n_r, n_layers)`` of these showers."""
        return (self.n_alpha, self.n_r, self.n_layers)

    def r_centres(self) -> np.ndarray:
        """Radial bin centres ``[n_r]`` mm."""
        e = np.asarray(self.r_edges, np.float64)
        return e[:-1] + (e[1:] - e[:-1]) / 2

    def alpha_centres(self) -> np.ndarray:
        """Angular bin centres ``[n_alpha]`` rad: midpoints of ``n_alpha`` equal bins over ``[-pi, pi]``."""
        e = np.linspace(-np.pi, np.pi, self.n_alpha + 1)
        return e[:-1] + (e[1:] - e[:-1]) / 2

    def voxel_r(self) -> np.ndarray:
        """Radius of each voxel of one layer ``[n_alpha * n_r]`` mm, in flat order (alpha outer, r inner)."""
        return np.tile(self.r_centres(), self.n_alpha)

    def voxel_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of each voxel of one layer, ``[n_alpha * n_r]`` mm each, in flat order:
        ``x = r cos(alpha)`` (the challenge's eta), ``y = r sin(alpha)`` (its phi)."""
        r = self.voxel_r()
        alpha = np.repeat(self.alpha_centres(), self.n_r)
        return r * np.cos(alpha), r * np.sin(alpha)


DATASET_2 = Binning("2", n_layers=45, n_alpha=16, r_edges=R_EDGES_DS2)
DATASET_3 = Binning("3", n_layers=45, n_alpha=50, r_edges=R_EDGES_DS3)
DATASETS: dict[str, Binning] = {"2": DATASET_2, "3": DATASET_3}


def get_binning(dataset: str | Binning) -> Binning:
    """The binning of dataset ``"2"`` or ``"3"``, or ``dataset`` itself when it is a :class:`Binning`."""
    if isinstance(dataset, Binning):
        return dataset
    key = str(dataset)
    if key not in DATASETS:
        raise ValueError(
            f"CaloChallenge dataset {dataset!r} is not supported: choose '2' (6480 voxels) or '3' "
            "(40500 voxels), or pass a Binning"
        )
    return DATASETS[key]


def dataset_for_voxels(n_voxels: int) -> Binning:
    """The dataset (2 or 3) whose showers have ``n_voxels`` voxels; ``ValueError`` for any other count."""
    for b in DATASETS.values():
        if b.n_voxels == n_voxels:
            return b
    raise ValueError(
        f"showers with {n_voxels} voxels match no supported CaloChallenge dataset "
        "(dataset 2: 6480 = 45 x 16 x 9, dataset 3: 40500 = 45 x 50 x 18)"
    )
