"""Histogram separation power per feature and layer, with the challenge's own histogram binning.

Separation power (the triangular discrimination, eq. 15 of arXiv:2009.03796), as ``_separation_power``
in ``code/evaluate_plotting_helper.py`` of CaloChallenge/homepage computes it: with ``p_i`` and ``q_i``
the reference and generated histograms normalised to unit sum over the bins (the challenge's
``plt.hist(density=True)`` times the bin widths; entries outside the bins are not counted),

    S = 0.5 * sum_i (p_i - q_i)^2 / (p_i + q_i + 1e-16).

``S`` is 0 for identical histograms and 1 for histograms with no bin in common (``0.5 * (sum p + sum q)``).
A set with no entry inside the bins has no unit-sum histogram: the challenge's code then returns NaN
(0/0 in the density), and so does :func:`separation_power`, without a warning.

Binning per feature, datasets 2 and 3 (the ``plot_*`` functions of the same file):

| feature | bins |
|---|---|
| ``E_ratio`` (e_tot / e_inc) | 100 equal bins on [0.5, 1.5] |
| ``E_layer`` | 39 log-spaced bins from the readout threshold to the reference's largest value in that layer |
| ``EC_eta``, ``EC_phi`` | 100 equal bins on [-30, 30] mm |
| ``width_eta``, ``width_phi`` | 100 equal bins on [0, 30] mm |
| ``EC_r`` | 100 equal bins on [0, 42] mm |
| ``width_r`` | 100 equal bins on [0, 20] mm |
| ``sparsity`` | 20 equal bins on [0, 1] |
| ``voxel`` (all voxels of all events) | 49 log-spaced bins, threshold to the reference's largest voxel |
"""

from __future__ import annotations

import numpy as np

from hepgan.physics.calochallenge.features import CHUNK, Features, apply_threshold

LINEAR_BINS: dict[str, tuple[float, float, int]] = {
    "E_ratio": (0.5, 1.5, 101),
    "EC_eta": (-30.0, 30.0, 101),
    "EC_phi": (-30.0, 30.0, 101),
    "width_eta": (0.0, 30.0, 101),
    "width_phi": (0.0, 30.0, 101),
    "EC_r": (0.0, 42.0, 101),
    "width_r": (0.0, 20.0, 101),
    "sparsity": (0.0, 1.0, 21),
}
"""``(low, high, number of edges)`` of the features binned evenly (``np.linspace`` arguments)."""

E_LAYER_EDGES = 40
VOXEL_EDGES = 50

PER_LAYER = ("E_layer", "EC_eta", "EC_phi", "EC_r", "width_eta", "width_phi", "width_r", "sparsity")
"""Features with one histogram per layer, in the order of the metrics JSON."""

SCALAR = ("E_ratio", "voxel")
"""Features with one histogram for the whole set."""

ATTR = {
    "E_layer": "e_layer",
    "EC_eta": "ec_eta",
    "EC_phi": "ec_phi",
    "EC_r": "ec_r",
    "width_eta": "width_eta",
    "width_phi": "width_phi",
    "width_r": "width_r",
    "sparsity": "sparsity",
}


def separation_power_counts(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Separation power of two histograms given as counts ``[K]`` over the same bins (module docstring):
    each normalised to unit sum first; NaN when either holds no entry."""
    p = np.asarray(p_counts, np.float64)
    q = np.asarray(q_counts, np.float64)
    sp, sq = p.sum(), q.sum()
    if sp <= 0 or sq <= 0:
        return float("nan")
    p, q = p / sp, q / sq
    return float(0.5 * np.sum((p - q) ** 2 / (p + q + 1e-16)))


def separation_power(ref: np.ndarray, gen: np.ndarray, edges: np.ndarray) -> float:
    """Separation power of samples ``ref: [M]`` and ``gen: [N]`` (any unit) histogrammed in ``edges: [K+1]``
    (numpy's rule: bins closed on the left, the last also on the right; values outside are dropped)."""
    hr, _ = np.histogram(np.asarray(ref, np.float64), bins=edges)
    hg, _ = np.histogram(np.asarray(gen, np.float64), bins=edges)
    return separation_power_counts(hr, hg)


def log_edges(threshold: float, top: float, n_edges: int) -> np.ndarray | None:
    """The challenge's ``np.logspace(log10(threshold), log10(top), n_edges)``; ``None`` when ``top`` does
    not exceed ``threshold`` (nothing above the threshold in the reference: no histogram to compare)."""
    if not (top > threshold > 0):
        return None
    return np.logspace(np.log10(threshold), np.log10(top), n_edges)


def feature_edges(name: str) -> np.ndarray:
    """Edges of an evenly binned feature (:data:`LINEAR_BINS`)."""
    lo, hi, k = LINEAR_BINS[name]
    return np.linspace(lo, hi, k)


def voxel_counts(showers: np.ndarray, edges: np.ndarray, threshold: float, chunk: int = CHUNK) -> np.ndarray:
    """Histogram ``[K]`` of every voxel energy of ``showers: [N, V]`` MeV after the threshold, in
    ``edges: [K+1]`` MeV (zeros fall below the first edge and are not counted, as in the challenge)."""
    counts = np.zeros(len(edges) - 1)
    for a in range(0, len(showers), chunk):
        flat = apply_threshold(np.asarray(showers[a : a + chunk], np.float64), threshold)
        counts += np.histogram(flat.reshape(-1), bins=edges)[0]
    return counts


def voxel_histograms(
    gen_showers: np.ndarray, ref_showers: np.ndarray, ref_max: float, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The challenge's voxel-spectrum histograms ``(edges [50], ref counts [49], gen counts [49])`` of
    ``gen_showers: [N, V]`` and ``ref_showers: [M, V]`` MeV: log-spaced from ``threshold`` to ``ref_max``
    (the reference's largest voxel, MeV). ``None`` when ``ref_max`` does not exceed the threshold."""
    edges = log_edges(threshold, ref_max, VOXEL_EDGES)
    if edges is None:
        return None
    return edges, voxel_counts(ref_showers, edges, threshold), voxel_counts(gen_showers, edges, threshold)


def separation_powers(
    gen: Features,
    ref: Features,
    threshold: float,
    *,
    voxel: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float | list[float]]:
    """Separation power of every challenge histogram: ``"E_ratio"`` and ``"voxel"`` (floats) and, for
    each per-layer feature of :data:`PER_LAYER`, a list over layers. ``"voxel"`` comes from the
    reference and generated voxel-spectrum counts ``voxel = (ref [K], gen [K])`` of
    :func:`voxel_histograms` and is NaN without them. ``threshold`` (MeV) is the low edge of the
    log-binned histograms. A layer whose reference never exceeds the threshold gives NaN for
    ``E_layer`` (no histogram range), as does any histogram left without entries."""
    out: dict[str, float | list[float]] = {
        "E_ratio": separation_power(ref.e_ratio, gen.e_ratio, feature_edges("E_ratio")),
        "voxel": float("nan") if voxel is None else separation_power_counts(*voxel),
    }
    for name in PER_LAYER:
        g, r = getattr(gen, ATTR[name]), getattr(ref, ATTR[name])
        values = []
        for layer in range(r.shape[1]):
            if name == "E_layer":
                e = log_edges(threshold, float(r[:, layer].max()), E_LAYER_EDGES)
                values.append(float("nan") if e is None else separation_power(r[:, layer], g[:, layer], e))
            else:
                values.append(separation_power(r[:, layer], g[:, layer], feature_edges(name)))
        out[name] = values
    return out


def summarise(seps: dict[str, float | list[float]]) -> dict[str, float | str]:
    """Means and maxima of :func:`separation_powers`' output: ``mean/<feature>`` and ``max/<feature>``
    over layers (NaN layers left out), ``mean`` and ``max`` over every histogram, and ``max_where``
    (``"<feature> layer <l>"`` or the scalar feature's name) naming the worst one."""
    out: dict[str, float | str] = {}
    every: list[tuple[float, str]] = []
    for name, v in seps.items():
        if isinstance(v, list):
            arr = np.asarray(v, np.float64)
            ok = np.isfinite(arr)
            out[f"mean/{name}"] = float(arr[ok].mean()) if ok.any() else float("nan")
            out[f"max/{name}"] = float(arr[ok].max()) if ok.any() else float("nan")
            every += [(float(x), f"{name} layer {i}") for i, x in enumerate(arr) if np.isfinite(x)]
        elif np.isfinite(v):
            every.append((float(v), name))
    if every:
        values = np.array([x for x, _ in every])
        out["mean"] = float(values.mean())
        out["max"] = float(values.max())
        out["max_where"] = every[int(values.argmax())][1]
    return out
