"""Shower observables, batched and written in JAX so that training can call them inside ``jit``.

Every function takes ``showers: [B, X, Y, Z]`` cell energies in file units (GeV of visible energy, see
:mod:`hepgan.data.types`) and works for any grid (25x25x25, 51x51x25, CaloChallenge-style voxel grids
reshaped to ``[B, X, Y, Z]``). Shapes are checked in Python, so a mismatch raises ``ValueError`` at trace
time, never deep inside XLA.

Conventions (the docs in ``docs/physics.md`` repeat them):

- positions along an axis are cell *indices* ``0 .. n-1`` (as the 3DGAN analysis code uses them), except
  for the measured angle, which needs physical lengths (cell pitch and layer thickness in mm);
- the second moment is the *central* one, ``sum_i (i - m1)^2 p_i / sum_i p_i`` (cells^2);
- an event with no energy gets 0 for every ratio instead of NaN, so that one dead event cannot poison a
  batch mean during training;
- the measured angle follows :mod:`hepgan.data.types`: ``theta`` is the polar angle, ``pi/2`` is normal
  incidence and the axis tilts in the ``Y``-``Z`` plane, so the barycentre moves along ``Y`` by
  ``dy/dz = cot(theta)`` per unit depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

HIT_THRESHOLD = 2e-4
"""Default cell threshold for counting hits, in file units (GeV), as in the 3DGAN papers."""

SPARSITY_THRESHOLDS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
"""Cell thresholds (GeV) at which :func:`sparsity` is evaluated by default (spectrum bin edges, so that
:func:`compute_all` reads them off the per-event cell histogram)."""

SPECTRUM_LOG10_RANGE = (-6.0, 1.0)
SPECTRUM_BINS_PER_DECADE = 5
"""Default cell-energy spectrum: log-spaced bins from 1 keV to 10 GeV, 5 per decade."""

Array = jax.Array


def _check(showers: Any, name: str = "showers") -> None:
    if getattr(showers, "ndim", None) != 4:
        raise ValueError(
            f"{name} must be a [B, X, Y, Z] array of cell energies; "
            f"got shape {getattr(showers, 'shape', None)}"
        )


def _check_events(showers: Any, per_event: Any, name: str) -> None:
    _check(showers)
    if tuple(per_event.shape) != (showers.shape[0],):
        raise ValueError(
            f"{name} must be [B]={showers.shape[0]} (one value per shower); "
            f"got shape {tuple(per_event.shape)}"
        )


def _safe_div(num: Array, den: Array) -> Array:
    """``num / den`` with 0 where ``den == 0`` (an empty event or layer has no barycentre)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))


def total_energy(showers: Array) -> Array:
    """Total visible energy per event. ``showers: [B, X, Y, Z] GeV -> [B] GeV``."""
    _check(showers)
    return jnp.sum(showers, axis=(1, 2, 3))


def sampling_fraction(showers: Array, energy: Array) -> Array:
    """Visible over incident energy. ``showers: [B, X, Y, Z] GeV``, ``energy: [B] GeV -> [B]`` (~0.02)."""
    _check_events(showers, energy, "energy")
    return _safe_div(total_energy(showers), energy.astype(showers.dtype))


def profiles(showers: Array) -> tuple[Array, Array, Array]:
    """Energy profiles, GeV: ``[B, X]``, ``[B, Y]`` (transverse), ``[B, Z]`` (longitudinal)."""
    _check(showers)
    return (
        jnp.sum(showers, axis=(2, 3)),
        jnp.sum(showers, axis=(1, 3)),
        jnp.sum(showers, axis=(1, 2)),
    )


def profile_moments(profile: Array) -> Array:
    """First moment and central second moment of profiles. ``profile: [B, n] -> [B, 2]`` (cells, cells^2)."""
    if profile.ndim != 2:
        raise ValueError(f"profile must be [B, n]; got shape {tuple(profile.shape)}")
    idx = jnp.arange(profile.shape[1], dtype=profile.dtype)[None, :]
    tot = jnp.sum(profile, axis=1)
    m1 = _safe_div(jnp.sum(profile * idx, axis=1), tot)
    m2 = _safe_div(jnp.sum(profile * (idx - m1[:, None]) ** 2, axis=1), tot)
    return jnp.stack([m1, m2], axis=1)


def moments(showers: Array) -> Array:
    """Moments along X, Y, Z. ``showers: [B, X, Y, Z] -> [B, 3, 2]``: ``[:, a, 0]`` barycentre (cell index),
    ``[:, a, 1]`` central second moment (cells^2) along axis ``a``."""
    return jnp.stack([profile_moments(p) for p in profiles(showers)], axis=1)


def hits(showers: Array, threshold: float = HIT_THRESHOLD) -> Array:
    """Number of cells above ``threshold`` (GeV). ``[B, X, Y, Z] -> [B]`` int32."""
    _check(showers)
    return jnp.sum(showers > threshold, axis=(1, 2, 3), dtype=jnp.int32)


def depth_thirds(n_layers: int) -> tuple[tuple[int, int], ...]:
    """Layer ranges ``[(start, stop)] * 3`` of the first/middle/last third of depth (``np.array_split``
    convention: the first parts take the remainder, so 25 layers split 9/8/8)."""
    if n_layers < 3:
        raise ValueError(f"depth thirds need at least 3 layers; got Z={n_layers}")
    sizes = [len(a) for a in np.array_split(np.arange(n_layers), 3)]
    starts = np.cumsum([0, *sizes[:-1]])
    return tuple((int(s), int(s + n)) for s, n in zip(starts, sizes, strict=True))


def depth_fractions(showers: Array) -> Array:
    """Fractions of the visible energy in the first, middle and last third of depth.

    ``showers: [B, X, Y, Z] -> [B, 3]``."""
    _, _, pz = profiles(showers)
    tot = jnp.sum(pz, axis=1)
    parts = [jnp.sum(pz[:, a:b], axis=1) for a, b in depth_thirds(showers.shape[3])]
    return jnp.stack([_safe_div(p, tot) for p in parts], axis=1)


def sparsity(showers: Array, thresholds: Sequence[float] = SPARSITY_THRESHOLDS) -> Array:
    """Fraction of cells below each threshold (GeV), empty cells (``<= 0``) always counted, so threshold
    0 gives the fraction of empty cells. ``[B, X, Y, Z] -> [B, T]``; 1 = nothing above threshold."""
    _check(showers)
    n_cells = showers.shape[1] * showers.shape[2] * showers.shape[3]
    cols = [jnp.sum((showers < t) | (showers <= 0), axis=(1, 2, 3), dtype=jnp.int32) for t in thresholds]
    return jnp.stack(cols, axis=1).astype(showers.dtype) / n_cells


def max_position(showers: Array) -> Array:
    """Index ``(x, y, z)`` of the hottest cell per event. ``[B, X, Y, Z] -> [B, 3]`` int32."""
    _check(showers)
    b, nx, ny, nz = showers.shape
    flat = jnp.argmax(showers.reshape(b, nx * ny * nz), axis=1).astype(jnp.int32)
    return jnp.stack([flat // (ny * nz), (flat // nz) % ny, flat % nz], axis=1)


def shower_max_layer(showers: Array) -> Array:
    """Layer of the maximum of the longitudinal profile (shower maximum). ``[B, X, Y, Z] -> [B]`` int32."""
    return jnp.argmax(profiles(showers)[2], axis=1).astype(jnp.int32)


def measured_angle(showers: Array, cell_size_mm: float, layer_thickness_mm: float) -> Array:
    """Incident angle measured from the per-layer energy barycentres. ``[B, X, Y, Z] GeV -> [B] rad``.

    The barycentre ``y_l`` (mm) of each layer ``l`` at depth ``z_l = (l + 0.5) * layer_thickness_mm`` is
    fitted by a straight line with the layer energies as weights; ``theta = pi/2 - atan(dy/dz)``, so
    ``pi/2`` is normal incidence and a shower drifting towards ``+Y`` with depth has ``theta < pi/2``.
    Weighting by layer energy is what keeps the nearly empty first and last layers, whose barycentres
    are noise, from steering the fit. Events with no energy get ``pi/2``.
    """
    _check(showers)
    _, _, pz = profiles(showers)
    y = (jnp.arange(showers.shape[2], dtype=showers.dtype) + 0.5) * cell_size_mm
    z = (jnp.arange(showers.shape[3], dtype=showers.dtype) + 0.5) * layer_thickness_mm
    # per-layer y barycentre times layer energy, [B, Z]
    ey = jnp.sum(jnp.sum(showers, axis=1) * y[None, :, None], axis=1)
    w = pz
    wsum = jnp.sum(w, axis=1)
    zbar = _safe_div(jnp.sum(w * z[None, :], axis=1), wsum)
    ybar = _safe_div(jnp.sum(ey, axis=1), wsum)
    dz = z[None, :] - zbar[:, None]
    # sum_l w_l (z_l - zbar)(y_l - ybar) with w_l y_l = ey_l
    sxy = jnp.sum(dz * ey, axis=1) - ybar * jnp.sum(w * dz, axis=1)
    sxx = jnp.sum(w * dz**2, axis=1)
    slope = _safe_div(sxy, sxx)
    return jnp.asarray(jnp.pi / 2, showers.dtype) - jnp.arctan(slope)


def angle_response(
    theta: np.ndarray, measured: np.ndarray, n_bins: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """The measured angle's mean response to the true one, for :func:`expected_measured_angle`.

    ``theta: [N]`` true angles (rad) of reference showers, ``measured: [N]`` their :func:`measured_angle`
    (rad). Returns ``(centres [K], mean_measured [K])`` (rad): the true angles are cut into ``K`` equally
    populated bins (at most ``n_bins``, at least 20 events each) and each bin gives its mean true and mean
    measured angle. Binned means rather than a polynomial because the bias is not smooth: on the
    simulator's 51x51x25 grid it stays below 0.3 degrees within 5 degrees of normal incidence and jumps
    to 1.3-1.4 degrees at 10 degrees (``docs/physics.md``)."""
    theta = np.asarray(theta, np.float64).ravel()
    measured = np.asarray(measured, np.float64).ravel()
    if theta.shape != measured.shape or theta.size < 40:
        raise ValueError(
            f"angle_response: theta and measured must be [N] arrays of one length N >= 40; "
            f"got {theta.shape} and {measured.shape}"
        )
    k = int(min(n_bins, theta.size // 20))
    order = np.argsort(theta)
    parts = np.array_split(order, k)
    return (
        np.array([theta[p].mean() for p in parts]),
        np.array([measured[p].mean() for p in parts]),
    )


def expected_measured_angle(theta: Array, response: tuple[Any, Any]) -> Array:
    """What :func:`measured_angle` reads, on average, for showers of true angle ``theta: [B]`` (rad) ->
    ``[B]`` rad: linear interpolation in the ``response`` of :func:`angle_response` (constant beyond its
    ends). A loss that compares the measured angle of generated showers with this, instead of with
    ``theta``, does not ask the generator to undo the measurement's own bias."""
    centres, means = response
    return jnp.interp(theta, jnp.asarray(centres, jnp.float32), jnp.asarray(means, jnp.float32))


def cell_histogram(
    showers: Array,
    log10_range: tuple[float, float] = SPECTRUM_LOG10_RANGE,
    bins_per_decade: int = SPECTRUM_BINS_PER_DECADE,
) -> Array:
    """Per-event histogram of cell energies. ``showers: [B, X, Y, Z] GeV -> [B, K + 3]`` int32 counts:
    column 0 empty cells (``<= 0``), column 1 cells below the range, columns ``2 .. K+1`` the ``K``
    log-spaced bins of :func:`spectrum_edges`, column ``K+2`` cells at or above the range.

    The bin comes from ``log10(E)`` and the counting is one bincount over ``(event, bin)``: on CPU this
    is several times faster than one comparison pass per threshold or a search over edges.
    """
    _check(showers)
    b = showers.shape[0]
    lo, hi = log10_range
    n_bins = round((hi - lo) * bins_per_decade)
    v = showers.reshape(b, -1)
    u = (jnp.log10(jnp.maximum(v, jnp.asarray(1e-30, v.dtype))) - lo) * bins_per_decade
    idx = jnp.clip(jnp.floor(u).astype(jnp.int32) + 2, 1, n_bins + 2)
    idx = jnp.where(v > 0, idx, 0)
    width = n_bins + 3
    flat = idx + (jnp.arange(b, dtype=jnp.int32) * width)[:, None]
    return jnp.bincount(flat.reshape(-1), length=b * width).reshape(b, width)


def cell_spectrum(
    showers: Array,
    log10_range: tuple[float, float] = SPECTRUM_LOG10_RANGE,
    bins_per_decade: int = SPECTRUM_BINS_PER_DECADE,
) -> Array:
    """Histogram of cell energies over the whole batch in the log-spaced bins of :func:`spectrum_edges`
    (cells outside the range, empty cells included, are not counted). ``[B, X, Y, Z] GeV -> [K]`` float32.
    """
    h = cell_histogram(showers, log10_range, bins_per_decade)
    return jnp.sum(h[:, 2:-1], axis=0).astype(jnp.float32)


def _sparsity_columns(thresholds: Sequence[float]) -> list[int]:
    """For each threshold, how many leading :func:`cell_histogram` columns lie below it."""
    lo, _ = SPECTRUM_LOG10_RANGE
    cols = []
    for t in thresholds:
        if t == 0:
            cols.append(1)
            continue
        j = round((np.log10(t) - lo) * SPECTRUM_BINS_PER_DECADE) if t > 0 else -1
        if t <= 0 or j < 0 or abs(10 ** (lo + j / SPECTRUM_BINS_PER_DECADE) - t) > 1e-6 * t:
            raise ValueError(
                f"sparsity threshold {t} GeV: compute_all needs 0 or an edge of the cell spectrum "
                f"(10^(k/{SPECTRUM_BINS_PER_DECADE}) GeV from 1e-6 to 10); use sparsity() for other values"
            )
        cols.append(j + 2)
    return cols


def spectrum_edges(
    log10_range: tuple[float, float] = SPECTRUM_LOG10_RANGE,
    bins_per_decade: int = SPECTRUM_BINS_PER_DECADE,
) -> np.ndarray:
    """Bin edges ``[K + 1]`` in GeV of :func:`cell_spectrum`."""
    n_bins = round((log10_range[1] - log10_range[0]) * bins_per_decade)
    return np.logspace(log10_range[0], log10_range[1], n_bins + 1)


# The per-event scalars every metric works on; the order is the order of the feature vector.
SCALAR_NAMES: tuple[str, ...] = (
    "e_vis",
    "sf",
    "x_mean",
    "x_var",
    "y_mean",
    "y_var",
    "z_mean",
    "z_var",
    "hits",
    "frac_first",
    "frac_middle",
    "frac_last",
    "max_x",
    "max_y",
    "max_z",
    "shower_max",
    "angle",
)


@partial(
    jax.jit,
    static_argnames=("cell_size_mm", "layer_thickness_mm", "threshold", "sparsity_thresholds"),
)
def compute_all(
    showers: Array,
    energy: Array,
    *,
    cell_size_mm: float = 1.0,
    layer_thickness_mm: float = 1.0,
    threshold: float = HIT_THRESHOLD,
    sparsity_thresholds: tuple[float, ...] = SPARSITY_THRESHOLDS,
) -> dict[str, Array]:
    """All observables of a batch in one compiled call.

    ``showers: [B, X, Y, Z] GeV``, ``energy: [B] GeV``. Returns a dict: every name in :data:`SCALAR_NAMES`
    ``[B]`` (float32; ``angle`` in rad), ``profile_x [B, X]``, ``profile_y [B, Y]``, ``profile_z [B, Z]``
    (GeV), ``sparsity [B, T]``; summed over the batch: ``spectrum [K]`` (counts, bins
    :func:`spectrum_edges`), ``sum_xy [X, Y]`` and ``sum_yz [Y, Z]`` (GeV, the 2D projections).
    """
    _check_events(showers, energy, "energy")
    showers = showers.astype(jnp.float32)
    px, py, pz = profiles(showers)
    mom = jnp.stack([profile_moments(p) for p in (px, py, pz)], axis=1)
    fr = depth_fractions(showers)
    mp = max_position(showers).astype(jnp.float32)
    hist = cell_histogram(showers)
    n_cells = showers.shape[1] * showers.shape[2] * showers.shape[3]
    below = jnp.cumsum(hist, axis=1)
    spars = jnp.stack([below[:, c - 1] for c in _sparsity_columns(sparsity_thresholds)], axis=1)
    out = {
        "e_vis": jnp.sum(pz, axis=1),
        "sf": sampling_fraction(showers, energy),
        "x_mean": mom[:, 0, 0],
        "x_var": mom[:, 0, 1],
        "y_mean": mom[:, 1, 0],
        "y_var": mom[:, 1, 1],
        "z_mean": mom[:, 2, 0],
        "z_var": mom[:, 2, 1],
        "hits": hits(showers, threshold).astype(jnp.float32),
        "frac_first": fr[:, 0],
        "frac_middle": fr[:, 1],
        "frac_last": fr[:, 2],
        "max_x": mp[:, 0],
        "max_y": mp[:, 1],
        "max_z": mp[:, 2],
        "shower_max": jnp.argmax(pz, axis=1).astype(jnp.float32),
        "angle": measured_angle(showers, cell_size_mm, layer_thickness_mm),
        "profile_x": px,
        "profile_y": py,
        "profile_z": pz,
        "sparsity": spars.astype(jnp.float32) / n_cells,
        "spectrum": jnp.sum(hist[:, 2:-1], axis=0).astype(jnp.float32),
        "sum_xy": jnp.sum(showers, axis=(0, 3)),
        "sum_yz": jnp.sum(showers, axis=(0, 1)),
    }
    return out
