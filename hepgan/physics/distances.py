"""One-dimensional distances between a generated and a reference distribution of one observable.

All take ``gen: [N]`` and ``ref: [M]`` samples of the same observable (any unit). Histogram-based ones
share :func:`histogram_edges`, chosen from the reference alone so that the binning does not move with
the thing being judged.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

MAX_HIST_BINS = 20
MIN_HIST_BINS = 5
EVENTS_PER_HIST_BIN = 25


def n_hist_bins(n_events: int) -> int:
    """Histogram bins for ``n_events`` reference events: about 25 events a bin, 5 to 20 bins. The
    finite-sample floor of the separation power is ``K/4 (1/N + 1/M)``; tying ``K`` to ``N`` keeps that
    floor near 0.02 from 100 events up instead of letting it grow as the condition bins get small."""
    return int(np.clip(n_events // EVENTS_PER_HIST_BIN, MIN_HIST_BINS, MAX_HIST_BINS))


REL_RESOLUTION = 1e-4
"""Narrowest histogram bin, relative to the observable's magnitude (``max(|q0.5%|, |q99.5%|)`` of the
reference): about 1000 float32 rounding steps. Observables come out of float32 sums over thousands of
cells, so values that differ by less than this differ by rounding, not by physics; bins any narrower
made a pure x1.05 rescaling of the cells, which leaves ratios such as the moments unchanged, read as a
separation power of 0.01-0.02 on showers of one fixed shape."""


def histogram_edges(ref: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Edges ``[K+1]`` (float64) for histograms of an observable, from the reference ``ref: [M]`` alone.

    - Integer observables with a small range (hits, cell indices): one bin per integer, so that no bin
      straddles two values.
    - Otherwise ``K`` (default :func:`n_hist_bins`) equal bins over the reference's 0.5-99.5 % quantiles,
      each at least :data:`REL_RESOLUTION` of the observable's magnitude wide. A (nearly) constant
      observable, whose spread is below that, gets an odd number of bins of that width centred on its
      median, so that rounding-level differences stay inside the middle bin while a real shift (a x1.05
      rescaling) still moves the events out of it.
    """
    ref = np.asarray(ref, np.float64)
    n_bins = n_hist_bins(len(ref)) if n_bins is None else n_bins
    lo, hi = np.quantile(ref, [0.005, 0.995])
    if np.all(ref == np.round(ref)) and hi - lo + 1 <= n_bins:
        return np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.0, 1.0)
    min_width = REL_RESOLUTION * max(abs(lo), abs(hi), np.finfo(np.float64).tiny)
    if hi - lo >= n_bins * min_width:
        return np.linspace(lo, hi, n_bins + 1)
    k = n_bins | 1  # odd: the median sits in the middle of a bin, not on an edge
    return float(np.median(ref)) + (np.arange(k + 1) - k / 2) * min_width


def histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts ``[K]`` (float64) with under/overflow folded into the first/last bin (tails must count, not
    vanish). ``x: [N]`` any unit, ``edges: [K+1]`` increasing."""
    clipped = np.clip(np.asarray(x, np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    return counts.astype(np.float64)


def separation_power(gen: np.ndarray, ref: np.ndarray, edges: np.ndarray | None = None) -> float:
    """CaloChallenge separation power ``0.5 * sum_k (h1_k - h2_k)^2 / (h1_k + h2_k)`` on histograms
    normalised to unit sum: 0 for identical, 1 for disjoint distributions. For two samples of one
    distribution its expectation is about ``K/4 * (1/N + 1/M)`` (the finite-sample floor)."""
    edges = histogram_edges(ref) if edges is None else edges
    h1 = histogram(gen, edges)
    h2 = histogram(ref, edges)
    h1, h2 = h1 / max(h1.sum(), 1.0), h2 / max(h2.sum(), 1.0)
    s = h1 + h2
    ok = s > 0
    return float(0.5 * np.sum((h1[ok] - h2[ok]) ** 2 / s[ok]))


def chi2_ndf(gen: np.ndarray, ref: np.ndarray, edges: np.ndarray | None = None) -> tuple[float, float]:
    """Two-sample chi2 homogeneity test on common histograms: ``(chi2 / ndf, p-value)``; chi2/ndf is
    about 1 for samples of one distribution whatever their sizes."""
    edges = histogram_edges(ref) if edges is None else edges
    table = np.stack([histogram(gen, edges), histogram(ref, edges)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic / res.dof), float(res.pvalue)


def ks(gen: np.ndarray, ref: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic (largest CDF difference, 0..1)."""
    return float(stats.ks_2samp(gen, ref, method="asymp").statistic)


def wasserstein1(gen: np.ndarray, ref: np.ndarray) -> float:
    """Earth mover's distance in the observable's own unit."""
    return float(stats.wasserstein_distance(gen, ref))
