"""The CaloChallenge high-level features of a set of showers, as the challenge's evaluation defines them.

Reproduces ``HighLevelFeatures.CalculateFeatures`` of CaloChallenge/homepage (``code/HighLevelFeatures.py``)
on showers first thresholded as ``code/evaluate.py`` does (voxels below the readout threshold set to 0).
Per event, with ``E_v`` the voxel energies of layer ``l`` and ``(x_v, y_v, r_v)`` the voxel positions of
:mod:`~hepgan.physics.calochallenge.binning`:

- ``e_layer[l] = sum_v E_v``; ``e_tot`` = sum over all voxels; the energy ratio is ``e_tot / e_inc``;
- centres of energy ``ec_eta[l] = sum_v x_v E_v / (e_layer[l] + 1e-16)``, likewise ``ec_phi`` with
  ``y_v`` and ``ec_r`` with ``r_v`` (the challenge's 1e-16 keeps an empty layer at 0 instead of NaN);
- widths ``width_eta[l] = sqrt(max(sum_v x_v^2 E_v / (e_layer[l] + 1e-16) - ec_eta[l]^2, 0))``, likewise
  ``width_phi``, ``width_r`` (a layer with one lit voxel or none has width 0, up to the cancellation
  in the difference: ~1e-7 mm for one voxel, as in the challenge's code);
- ``sparsity[l] = 1 - (fraction of the layer's voxels with E_v > 0)``: the fraction of voxels left empty
  after the threshold (``1 - 1/144`` for a dataset-2 layer with one lit voxel). The challenge's name is
  "sparsity", and its histogram axis reads "fraction of voxels with 0 energy deposition".

Everything is computed in float64 in chunks of events, whatever the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from hepgan.physics.calochallenge.binning import Binning

EPS = 1e-16
"""The challenge's guard in every energy-weighted mean (``HighLevelFeatures._calculate_EC``)."""

LAYER_FEATURES = ("e_layer", "ec_eta", "ec_phi", "ec_r", "width_eta", "width_phi", "width_r", "sparsity")
"""Per-layer features, each ``[N, n_layers]``."""

CHUNK = 2048
"""Events per chunk: bounds the float64 copy of a dataset-3 chunk to about 660 MB."""


@dataclass
class Features:
    """High-level features of ``N`` showers; energies in MeV, positions and widths in mm.

    ``e_inc``, ``e_tot``: ``[N]`` MeV. ``e_layer``: ``[N, L]`` MeV. ``ec_eta``, ``ec_phi``, ``ec_r``,
    ``width_eta``, ``width_phi``, ``width_r``: ``[N, L]`` mm. ``sparsity``: ``[N, L]`` (fraction).
    ``voxel_max``: the largest voxel energy in the set (MeV, after the threshold), which sets the upper
    edge of the challenge's voxel-spectrum histogram when this set is the reference.
    """

    e_inc: np.ndarray
    e_tot: np.ndarray
    e_layer: np.ndarray
    ec_eta: np.ndarray
    ec_phi: np.ndarray
    ec_r: np.ndarray
    width_eta: np.ndarray
    width_phi: np.ndarray
    width_r: np.ndarray
    sparsity: np.ndarray
    voxel_max: float

    def __len__(self) -> int:
        return int(self.e_inc.shape[0])

    @property
    def e_ratio(self) -> np.ndarray:
        """Deposited over incident energy ``e_tot / e_inc`` ``[N]``."""
        return self.e_tot / self.e_inc

    def hlf_vector(self) -> np.ndarray:
        """The challenge's high-level feature vector ``[N, 8 L + 2]`` (362 for L = 45), the input of its
        high-level classifier and of FPD/KPD (``prepare_high_data_for_classifier`` in ``evaluate.py``), in
        its order: ``log10(e_inc)``, ``log10(e_layer + 1e-8)`` (L), ``ec_eta / 100``, ``ec_phi / 100``,
        ``width_eta / 100``, ``width_phi / 100`` (L each), ``log10(e_tot + 1e-8)``, ``sparsity`` (L),
        ``ec_r / 100``, ``width_r / 100`` (L each). Energies enter in MeV, lengths in mm."""
        return np.concatenate(
            [
                np.log10(self.e_inc)[:, None],
                np.log10(self.e_layer + 1e-8),
                self.ec_eta / 1e2,
                self.ec_phi / 1e2,
                self.width_eta / 1e2,
                self.width_phi / 1e2,
                np.log10(self.e_tot + 1e-8)[:, None],
                self.sparsity,
                self.ec_r / 1e2,
                self.width_r / 1e2,
            ],
            axis=1,
        )

    def __getitem__(self, idx: slice | np.ndarray) -> Features:
        kw = {f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name != "voxel_max"}
        return Features(**kw, voxel_max=self.voxel_max)


def apply_threshold(showers: np.ndarray, threshold: float) -> np.ndarray:
    """``showers`` with every voxel below ``threshold`` set to 0 (the challenge's
    ``np.where(shower < min_energy, 0, shower)``); same shape and unit (MeV) as ``showers: [N, V]``."""
    return np.where(showers < threshold, np.zeros_like(showers), showers)


def _mean_and_width(pos: np.ndarray, e: np.ndarray, denom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted centre and width along ``pos: [V]`` of ``e: [n, L, V]``; ``denom: [n, L]``."""
    centre = (e @ pos) / denom
    second = (e @ (pos * pos)) / denom
    return centre, np.sqrt(np.clip(second - centre**2, 0.0, None))


def compute_features(
    showers: np.ndarray,
    incident_energies: np.ndarray,
    binning: Binning,
    *,
    threshold: float | None = None,
    chunk: int = CHUNK,
) -> Features:
    """High-level features (module docstring) of ``showers: [N, V]`` MeV in the challenge's flat voxel
    order, with ``incident_energies: [N]`` or ``[N, 1]`` MeV. Voxels below ``threshold`` (MeV; default the
    binning's readout threshold, 15.15 keV for datasets 2 and 3) count as 0. ``ValueError`` when ``V`` is
    not ``binning.n_voxels``, the event counts differ or an incident energy is not > 0."""
    showers = np.asarray(showers)
    e_inc = np.asarray(incident_energies, np.float64).reshape(-1)
    if showers.ndim != 2 or showers.shape[1] != binning.n_voxels:
        raise ValueError(
            f"showers must be [N, {binning.n_voxels}] for CaloChallenge dataset {binning.name} "
            f"({binning.n_layers} layers x {binning.n_alpha} angular x {binning.n_r} radial bins); "
            f"got shape {showers.shape}"
        )
    if len(e_inc) != len(showers):
        raise ValueError(f"{len(showers)} showers but {len(e_inc)} incident energies")
    if not np.all(np.isfinite(e_inc) & (e_inc > 0)):
        raise ValueError("incident energies must be finite and > 0 MeV (the features divide by them)")
    thr = binning.threshold if threshold is None else threshold
    n, n_layers, per_layer = len(showers), binning.n_layers, binning.voxels_per_layer
    x, y = binning.voxel_xy()
    r = binning.voxel_r()
    out = {name: np.zeros((n, n_layers)) for name in LAYER_FEATURES}
    e_tot = np.zeros(n)
    voxel_max = 0.0
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        flat = apply_threshold(np.asarray(showers[a:b], np.float64), thr)
        e = flat.reshape(b - a, n_layers, per_layer)
        e_tot[a:b] = flat.sum(axis=1)
        voxel_max = max(voxel_max, float(flat.max(initial=0.0)))
        e_layer = e.sum(axis=2)
        out["e_layer"][a:b] = e_layer
        out["sparsity"][a:b] = 1.0 - (e > 0).mean(axis=2)
        denom = e_layer + EPS
        for axis, pos in (("eta", x), ("phi", y), ("r", r)):
            out[f"ec_{axis}"][a:b], out[f"width_{axis}"][a:b] = _mean_and_width(pos, e, denom)
    return Features(e_inc=e_inc, e_tot=e_tot, voxel_max=voxel_max, **out)
