"""Condition bins: the energy (and angle) bins within which generated and reference showers are compared.

The 3DGAN papers compare at matched conditions: showers of the same primary energy (and angle) bin. With
a few discrete energies (test beams, the papers' validation points) each value is its own bin; with a
continuous spectrum the bins are quantiles of the reference, so that each holds about as many events.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hepgan.physics.errors import InsufficientEventsError

MAX_DISCRETE = 10
"""Up to this many distinct reference energies (angles) count as discrete points, one bin each."""

EVENTS_PER_ENERGY_BIN = 300
"""Automatic binning aims at no fewer reference events than this per energy bin (at most 5 bins)."""


@dataclass(frozen=True)
class ConditionBin:
    """Half-open bin ``[e_lo, e_hi)`` GeV x ``[t_lo, t_hi)`` rad (angle bounds infinite if no angle)."""

    e_lo: float
    e_hi: float
    t_lo: float = -np.inf
    t_hi: float = np.inf
    label: str = ""

    def mask(self, energy: np.ndarray, theta: np.ndarray | None) -> np.ndarray:
        """``energy: [N] GeV``, ``theta: [N] rad | None -> [N] bool``: events inside the bin."""
        m = (energy >= self.e_lo) & (energy < self.e_hi)
        if theta is not None:
            m &= (theta >= self.t_lo) & (theta < self.t_hi)
        return m


def _edges(values: np.ndarray, n_quantile: int, given: Sequence[float] | None) -> tuple[np.ndarray, bool]:
    """Bin edges (outer edges open to +-inf) and whether the bins are discrete points."""
    if given is not None:
        e = np.asarray(sorted(float(v) for v in given))
        if e.size < 2:
            raise ValueError(f"bin edges need at least two values; got {list(given)}")
        return e, False
    uniq = np.unique(np.round(values, 6))
    if uniq.size <= MAX_DISCRETE:
        mids = 0.5 * (uniq[1:] + uniq[:-1])
        return np.concatenate([[-np.inf], mids, [np.inf]]), True
    q = np.quantile(values, np.linspace(0.0, 1.0, n_quantile + 1))
    q[0], q[-1] = -np.inf, np.inf
    return np.unique(q), False


def _labels(edges: np.ndarray, values: np.ndarray, discrete: bool, unit: str, scale: float) -> list[str]:
    out = []
    for lo, hi in itertools.pairwise(edges):
        inside = values[(values >= lo) & (values < hi)]
        if discrete and inside.size:
            out.append(f"{inside[0] * scale:.4g} {unit}")
        else:
            a = inside.min() if np.isinf(lo) and inside.size else lo
            b = inside.max() if np.isinf(hi) and inside.size else hi
            out.append(f"{a * scale:.4g}-{b * scale:.4g} {unit}")
    return out


def make_bins(
    ref_energy: np.ndarray,
    ref_theta: np.ndarray | None,
    *,
    energy_bins: Sequence[float] | None = None,
    theta_bins: Sequence[float] | None = None,
) -> list[ConditionBin]:
    """Condition bins from the reference conditions (``ref_energy: [N] GeV``, ``ref_theta: [N] rad``).

    ``energy_bins`` / ``theta_bins``: explicit edges (GeV / rad); default automatic (see module doc).
    Angle bins are made only when the reference angle varies by more than 1 mrad.
    """
    n = ref_energy.shape[0]
    n_e = int(np.clip(n // EVENTS_PER_ENERGY_BIN, 1, 5))
    e_edges, e_disc = _edges(ref_energy, n_e, energy_bins)
    e_lab = _labels(e_edges, ref_energy, e_disc, "GeV", 1.0)
    t_pairs: list[tuple[float, float, str]] = [(-np.inf, np.inf, "")]
    if ref_theta is not None and (theta_bins is not None or np.ptp(ref_theta) > 1e-3):
        n_t = 3 if n >= 3 * (len(e_edges) - 1) * 100 else 1
        t_edges, t_disc = _edges(ref_theta, n_t, theta_bins)
        t_lab = _labels(t_edges, ref_theta, t_disc, "deg", 180.0 / np.pi)
        t_pairs = [(lo, hi, lab) for lo, hi, lab in zip(t_edges[:-1], t_edges[1:], t_lab, strict=True)]
    bins = []
    for lo, hi, lab in zip(e_edges[:-1], e_edges[1:], e_lab, strict=True):
        for tlo, thi, tlab in t_pairs:
            label = f"E {lab}" + (f", theta {tlab}" if tlab else "")
            bins.append(ConditionBin(float(lo), float(hi), float(tlo), float(thi), label))
    return bins


def split(
    bins: Sequence[ConditionBin],
    energy: np.ndarray,
    theta: np.ndarray | None,
    *,
    min_events: int,
    which: str,
    metric: str = "binned metrics",
) -> list[np.ndarray]:
    """Masks ``[N] bool`` of the events of each bin; raises :class:`InsufficientEventsError` naming the
    bin when one holds fewer than ``min_events`` events of the ``which`` set."""
    masks = [b.mask(energy, theta) for b in bins]
    for b, m in zip(bins, masks, strict=True):
        if int(m.sum()) < min_events:
            raise InsufficientEventsError(
                metric, min_events, int(m.sum()), f"of the {which} set in bin {b.label}"
            )
    return masks
