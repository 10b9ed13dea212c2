"""Validation figures in HEP style (matplotlib with mplhep, headless).

Each figure function takes the generated and reference :class:`ObservableSet` and returns a ``Figure``.
The same conventions hold in every figure:

- reference (simulation): black step histogram (or line), its statistical uncertainty a grey band;
- generated: red points with statistical error bars;
- uncertainties: histograms Poisson, ``sqrt(n)`` per bin, scaled like the contents when normalised (the
  uncertainty of the normalisation itself neglected); means (shower profiles, means per energy or angle
  bin) the standard error of the mean, ``std / sqrt(n)`` over the events of the bin (sample standard
  deviation, ``ddof=1``), computed from the per-event values;
- ratio panel under each main panel: generated / reference, the uncertainties of both propagated in
  quadrature, ``r sqrt((s_g / g)^2 + (s_r / r)^2)``. A ratio outside the displayed range
  (:data:`RATIO_RANGE`, or the ``ratio_range`` argument) is drawn as an open triangle at the panel's
  edge pointing up or down, never dropped; a bin whose reference is empty has no ratio and is left blank;
- style: mplhep's ROOT style (neutral: no experiment label) at report sizes, applied only while a
  figure is built (``plt.style.context``), so global matplotlib settings stay as they were.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never open a window

import matplotlib.pyplot as plt
import mplhep
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec
from matplotlib.ticker import MaxNLocator

from hepgan.physics import binning, distances
from hepgan.physics.extract import ObservableSet
from hepgan.physics.observables import SCALAR_NAMES, SPARSITY_THRESHOLDS, spectrum_edges

REF_COLOR = "black"
GEN_COLOR = "tab:red"
REF_STYLE: dict[str, Any] = {"color": REF_COLOR, "label": "reference"}
GEN_STYLE: dict[str, Any] = {"color": GEN_COLOR, "label": "generated"}

RATIO_RANGE: tuple[float, float] = (0.5, 1.5)
"""Displayed range of the generated / reference ratio panels (ratios outside it are drawn as arrows)."""

ARROW_INSET = 0.06
"""Out-of-range ratio markers sit this fraction of the panel height inside its top or bottom edge, so
that the whole triangle is visible."""

STYLE: dict[str, Any] = {
    **{k: v for k, v in mplhep.style.ROOT.items() if not k.startswith("mathtext.")},
    # math text (log-axis tick labels) is laid out when the figure is saved, outside the style context:
    # a built-in font set renders the same there, where ROOT's "custom" set would read the caller's fonts
    "mathtext.fontset": "stixsans",
    # ROOT's 26 pt and 12 pt ticks suit one 10 x 10 inch panel; the report's figures hold up to 20 panels
    "font.size": 10,
    "axes.linewidth": 1.0,
    "xtick.major.size": 5,
    "xtick.minor.size": 2.5,
    "ytick.major.size": 5,
    "ytick.minor.size": 2.5,
    "xtick.major.pad": 3,
    "legend.fontsize": "small",
}
STYLE.pop("figure.figsize", None)  # each figure sets its own size
"""rcParams every figure of this module is built under (mplhep's ROOT style at report sizes)."""

LABELS = {
    "e_vis": "visible energy [GeV]",
    "sf": "sampling fraction",
    "x_mean": "x barycentre [cell]",
    "x_var": "x second moment [cell²]",
    "y_mean": "y barycentre [cell]",
    "y_var": "y second moment [cell²]",
    "z_mean": "z barycentre [layer]",
    "z_var": "z second moment [layer²]",
    "hits": "hits above threshold",
    "frac_first": "energy fraction, first third",
    "frac_middle": "energy fraction, middle third",
    "frac_last": "energy fraction, last third",
    "max_x": "hottest cell x",
    "max_y": "hottest cell y",
    "max_z": "hottest cell z",
    "shower_max": "shower maximum [layer]",
    "angle": "measured angle [deg]",
}

_P = ParamSpec("_P")


def _hep_style(fn: Callable[_P, Figure]) -> Callable[_P, Figure]:
    """Build the figure under :data:`STYLE`; the previous rcParams are restored afterwards."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Figure:
        with plt.style.context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


# ---- statistics ---------------------------------------------------------------------------------------


def histogram(
    values: np.ndarray, edges: np.ndarray, *, density: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``values: [N]`` over ``edges: [K + 1]`` (entries outside folded into the edge bins)
    and its Poisson uncertainty, both ``[K]``: counts and ``sqrt(counts)``, or with ``density`` both
    divided by ``N * bin width`` (unit area; the normalisation's own uncertainty neglected)."""
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    counts = counts.astype(np.float64)
    err = np.sqrt(counts)
    if density:
        scale = 1.0 / (max(counts.sum(), 1.0) * np.diff(edges))
        return counts * scale, err * scale
    return counts, err


def mean_sem(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over events of ``values: [N, ...]`` and its standard error ``std(ddof=1) / sqrt(N)`` (both
    ``[...]``, in the unit of ``values``; the error is 0 for one event and NaN for none)."""
    n = values.shape[0]
    if n == 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan
    mean = values.mean(0)
    if n == 1:
        return mean, np.zeros_like(mean)
    return mean, values.std(0, ddof=1) / np.sqrt(n)


def binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``y: [N]`` in the bins of ``x: [N]`` given by ``edges: [K + 1]`` and its standard error
    (:func:`mean_sem`), both ``[K]`` in the unit of ``y``; NaN for an empty bin."""
    idx = np.digitize(x, edges) - 1
    out = [mean_sem(y[idx == k]) for k in range(len(edges) - 1)]
    return np.array([m for m, _ in out], np.float64), np.array([e for _, e in out], np.float64)


def ratio(
    gen: np.ndarray, gen_err: np.ndarray, ref: np.ndarray, ref_err: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ratio ``gen / ref`` per bin and its uncertainty ``sqrt(gen_err^2 + (r ref_err)^2) / ref``
    (uncorrelated sets; equal to ``r sqrt((s_g/g)^2 + (s_r/r)^2)`` and finite for ``gen = 0``); all
    ``[K]``, unit-free; NaN where the reference is not positive."""
    ok = np.isfinite(ref) & (ref > 0) & np.isfinite(gen)
    den = np.where(ok, ref, 1.0)
    r = np.where(ok, gen / den, np.nan)
    err = np.where(ok, np.sqrt(gen_err**2 + (np.where(ok, r, 0.0) * ref_err) ** 2) / den, np.nan)
    return r, err


# ---- drawing ----------------------------------------------------------------------------------------


def _main_and_ratio(fig: Figure, spec: SubplotSpec) -> tuple[Axes, Axes]:
    """A main panel and, below it sharing its x axis, a ratio panel a third of its height."""
    sub = spec.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.0)
    a = fig.add_subplot(sub[0])
    r = fig.add_subplot(sub[1], sharex=a)
    a.tick_params(labelbottom=False)
    return a, r


def _draw_hist(
    ax: Axes,
    edges: np.ndarray,
    ref: np.ndarray,
    ref_err: np.ndarray,
    gen: np.ndarray,
    gen_err: np.ndarray,
    x: np.ndarray,
    *,
    means: bool = False,
) -> None:
    """Reference as a step histogram with its uncertainty band, generated as points at ``x``.
    ``means=True`` (means per bin): no drop to zero at the outer edges, and the y range follows
    the values instead of including 0."""
    mplhep.histplot(ref, edges, histtype="step", ax=ax, flow="none", edges=not means, **REF_STYLE)
    mplhep.histplot(ref, edges, yerr=ref_err, histtype="band", ax=ax, flow="none", facecolor="0.75",
                    edgecolor="none", hatch=None, alpha=0.6)  # fmt: skip
    ax.errorbar(x, gen, gen_err, fmt="o", ms=3, elinewidth=1, **GEN_STYLE)


def _draw_ratio(
    r: Axes,
    x: np.ndarray,
    gen: np.ndarray,
    gen_err: np.ndarray,
    ref: np.ndarray,
    ref_err: np.ndarray,
    ratio_range: tuple[float, float],
    xlabel: str,
) -> None:
    """Ratio points with error bars; out-of-range ratios as triangles at the edge; no point where the
    reference is empty."""
    lo, hi = ratio_range
    rat, err = ratio(gen, gen_err, ref, ref_err)
    ok = np.isfinite(rat)
    inside = ok & (rat >= lo) & (rat <= hi)
    r.axhline(1.0, color="grey", lw=0.8, ls="--")
    r.errorbar(x[inside], rat[inside], err[inside], fmt="o", ms=3, elinewidth=1, color=GEN_COLOR)
    pad = ARROW_INSET * (hi - lo)
    for mask, y, marker in ((ok & (rat > hi), hi - pad, "^"), (ok & (rat < lo), lo + pad, "v")):
        if mask.any():
            r.plot(x[mask], np.full(int(mask.sum()), y), ls="none", marker=marker, ms=5, mfc="none",
                   color=GEN_COLOR)  # fmt: skip
    r.set_ylim(lo, hi)
    r.set_ylabel("gen / ref")
    r.set_xlabel(xlabel)


def _edges_centres(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n + 1) - 0.5, np.arange(n, dtype=np.float64)


# ---- figures ----------------------------------------------------------------------------------------


def _energy_bins(ref: ObservableSet, gen: ObservableSet) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Energy bins only (angles pooled), as ``(label, gen mask, ref mask)``; empty bins dropped."""
    out = []
    for b in binning.make_bins(ref.energy, None):
        mg, mr = b.mask(gen.energy, None), b.mask(ref.energy, None)
        if mg.any() and mr.any():
            out.append((b.label, mg, mr))
    return out


@_hep_style
def profiles_figure(
    gen: ObservableSet, ref: ObservableSet, axis: str, *, ratio_range: tuple[float, float] = RATIO_RANGE
) -> Figure:
    """Mean energy profile (GeV per cell or layer) along ``axis`` (``"x"``, ``"y"`` or ``"z"``) per energy
    bin, with its standard error from the per-event profiles ``[N, X|Y|Z]``, and ratio panels."""
    bins = _energy_bins(ref, gen)
    pg, pr = getattr(gen, f"profile_{axis}"), getattr(ref, f"profile_{axis}")
    edges, idx = _edges_centres(pr.shape[1])
    fig = plt.figure(figsize=(3.2 * len(bins), 4.4), layout="constrained")
    outer = fig.add_gridspec(1, len(bins))
    xlabel = f"{axis} [{'layer' if axis == 'z' else 'cell'}]"
    for j, (label, mg, mr) in enumerate(bins):
        a, r = _main_and_ratio(fig, outer[0, j])
        mean_r, err_r = mean_sem(pr[mr])
        mean_g, err_g = mean_sem(pg[mg])
        _draw_hist(a, edges, mean_r, err_r, mean_g, err_g, idx, means=True)
        a.set_yscale("log")
        a.set_title(label, fontsize=9)
        _draw_ratio(r, idx, mean_g, err_g, mean_r, err_r, ratio_range, xlabel)
        if j == 0:
            a.set_ylabel("mean energy [GeV]")
            a.legend()
        else:
            r.set_ylabel("")
    fig.suptitle(f"{'longitudinal' if axis == 'z' else 'transverse ' + axis} profile")
    return fig


@_hep_style
def distributions_figure(
    gen: ObservableSet,
    ref: ObservableSet,
    names: tuple[str, ...] = SCALAR_NAMES,
    *,
    ratio_range: tuple[float, float] = RATIO_RANGE,
) -> Figure:
    """Unit-area histograms of every per-event observable ``scalars[name]: [N]`` (all conditions pooled;
    angles in degrees) with Poisson errors, ratio panels and the separation power in each title."""
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig = plt.figure(figsize=(3.4 * cols, 3.3 * rows), layout="constrained")
    outer = fig.add_gridspec(rows, cols)
    for k, name in enumerate(names):
        a, r = _main_and_ratio(fig, outer[k // cols, k % cols])
        scale = 180.0 / np.pi if name == "angle" else 1.0
        vr, vg = ref.scalars[name] * scale, gen.scalars[name] * scale
        edges = distances.histogram_edges(vr, 30)
        hr, er = histogram(vr, edges)
        hg, eg = histogram(vg, edges)
        centres = 0.5 * (edges[1:] + edges[:-1])
        _draw_hist(a, edges, hr, er, hg, eg, centres)
        a.set_title(f"S = {distances.separation_power(vg, vr, edges):.3f}", fontsize=8)
        a.tick_params(labelsize=7)
        r.tick_params(labelsize=7)
        _draw_ratio(r, centres, hg, eg, hr, er, ratio_range, LABELS.get(name, name))
        r.xaxis.set_major_locator(MaxNLocator(5))  # long tick labels (11.925, ...) would touch
        r.xaxis.label.set_fontsize(8)
        r.yaxis.label.set_fontsize(7)
        if k == 0:
            a.legend(fontsize=7)
    return fig


def energy_edges(energy: np.ndarray, n_bins: int = 15) -> tuple[np.ndarray, bool]:
    """Bin edges ``[n_bins + 1]`` (GeV) over ``energy: [N] GeV`` and whether they are logarithmic.

    Logarithmic when the energies look log-uniform rather than uniform: their median is closer (in log)
    to the range's geometric middle than to its arithmetic middle (1 GeV - 1 TeV log-uniform: median
    31.6 GeV, geometric middle 31.6; 10-500 GeV uniform: median 255, arithmetic middle 255), so that the
    low energies of a log-uniform set get bins of their own."""
    lo, hi = float(np.min(energy)), float(np.max(energy))
    if not hi > lo:
        return np.array([lo - 1, hi + 1]), False
    top = hi + 1e-6 * max(hi, 1.0)
    if lo > 0:
        med = float(np.median(energy))
        geo, arith = np.sqrt(lo * hi), 0.5 * (lo + hi)
        if abs(np.log(med / geo)) < abs(np.log(med / arith)):
            return np.geomspace(lo, top, n_bins + 1), True
    return np.linspace(lo, top, n_bins + 1), False


@_hep_style
def versus_energy_figure(
    gen: ObservableSet, ref: ObservableSet, name: str, *, ratio_range: tuple[float, float] = RATIO_RANGE
) -> Figure:
    """Mean of observable ``name`` (``scalars[name]: [N]``) versus primary energy (GeV), e.g. the
    sampling fraction, with standard errors and ratio panel; logarithmic energy bins for log-uniform
    energies (:func:`energy_edges`), points at the geometric bin centres then."""
    edges, log = energy_edges(ref.energy)
    centres = np.sqrt(edges[1:] * edges[:-1]) if log else 0.5 * (edges[1:] + edges[:-1])
    mr, er = binned_mean(ref.energy, ref.scalars[name], edges)
    mg, eg = binned_mean(gen.energy, gen.scalars[name], edges)
    fig = plt.figure(figsize=(5.5, 4.8), layout="constrained")
    a, r = _main_and_ratio(fig, fig.add_gridspec(1, 1)[0, 0])
    _draw_hist(a, edges, mr, er, mg, eg, centres, means=True)
    a.set_ylabel(LABELS.get(name, name))
    a.legend()
    _draw_ratio(r, centres, mg, eg, mr, er, ratio_range, "primary energy [GeV]")
    if log:
        r.set_xscale("log")
    return fig


@_hep_style
def angle_figure(
    gen: ObservableSet, ref: ObservableSet, *, ratio_range: tuple[float, float] = RATIO_RANGE
) -> Figure:
    """Measured angle (deg): its unit-area distribution and, where the data carry the true angle
    ``theta: [N] rad``, its mean versus the true angle; both with ratio panels."""
    with_theta = ref.theta is not None and gen.theta is not None and np.ptp(ref.theta) > 1e-3
    fig = plt.figure(figsize=(10 if with_theta else 5.5, 4.6), layout="constrained")
    outer = fig.add_gridspec(1, 2 if with_theta else 1)
    deg = 180.0 / np.pi
    vr, vg = ref.scalars["angle"] * deg, gen.scalars["angle"] * deg
    edges = distances.histogram_edges(vr, 40)
    centres = 0.5 * (edges[1:] + edges[:-1])
    hr, er = histogram(vr, edges)
    hg, eg = histogram(vg, edges)
    a, r = _main_and_ratio(fig, outer[0, 0])
    _draw_hist(a, edges, hr, er, hg, eg, centres)
    a.set_ylabel("normalised")
    a.legend()
    _draw_ratio(r, centres, hg, eg, hr, er, ratio_range, "measured angle [deg]")
    if with_theta:
        assert ref.theta is not None and gen.theta is not None
        t_edges = np.linspace(ref.theta.min() * deg, ref.theta.max() * deg + 1e-6, 13)
        c = 0.5 * (t_edges[1:] + t_edges[:-1])
        mr, er = binned_mean(ref.theta * deg, vr, t_edges)
        mg, eg = binned_mean(gen.theta * deg, vg, t_edges)
        a, r = _main_and_ratio(fig, outer[0, 1])
        _draw_hist(a, t_edges, mr, er, mg, eg, c, means=True)
        a.plot(c, c, ":", color="grey", label="measured = true")
        a.set_ylabel("mean measured angle [deg]")
        a.legend()
        _draw_ratio(r, c, mg, eg, mr, er, ratio_range, "true angle [deg]")
    return fig


@_hep_style
def projections_figure(gen: ObservableSet, ref: ObservableSet) -> Figure:
    """2D projections of the mean shower (x-y summed over depth, y-z summed over x), GeV, log colour scale.

    Built from the profiles alone would lose the correlation, so this uses the mean 2D images stored in
    ``ObservableSet.extra`` (``mean_xy: [X, Y]``, ``mean_yz: [Y, Z]``) when
    :func:`hepgan.physics.extract.extract` put them there.
    """
    fig, axes = plt.subplots(2, 2, figsize=(8, 7), layout="constrained")
    for row, (o, name) in enumerate(((ref, "reference"), (gen, "generated"))):
        for col, key in enumerate(("mean_xy", "mean_yz")):
            img = o.extra.get(key)
            ax = axes[row, col]
            if img is None:
                ax.axis("off")
                continue
            img = np.asarray(img)
            positive = img[img > 0]
            vmin = float(positive.min()) if positive.size else 1e-9
            im = ax.imshow(
                np.where(img > 0, img, np.nan).T, origin="lower", aspect="auto",
                norm=matplotlib.colors.LogNorm(vmin=max(vmin, img.max() * 1e-6), vmax=max(img.max(), 1e-12)),
            )  # fmt: skip
            ax.set_title(f"{name}: mean {'x-y' if key == 'mean_xy' else 'y-z'}", fontsize=9)
            ax.set_xlabel("x [cell]" if key == "mean_xy" else "y [cell]")
            ax.set_ylabel("y [cell]" if key == "mean_xy" else "z [layer]")
            ax.minorticks_off()
            fig.colorbar(im, ax=ax, label="GeV")
    return fig


@_hep_style
def cells_figure(
    gen: ObservableSet, ref: ObservableSet, *, ratio_range: tuple[float, float] = RATIO_RANGE
) -> Figure:
    """Cell-energy spectrum per event (``spectrum: [K]`` counts / N, Poisson errors) and mean sparsity
    versus threshold (per-event ``sparsity: [N, T]``, standard errors), with ratio panels."""
    fig = plt.figure(figsize=(10, 4.6), layout="constrained")
    outer = fig.add_gridspec(1, 2)
    edges = spectrum_edges()
    centres = np.sqrt(edges[1:] * edges[:-1])
    nr, ng = max(len(ref), 1), max(len(gen), 1)
    hr, er = ref.spectrum / nr, np.sqrt(ref.spectrum) / nr
    hg, eg = gen.spectrum / ng, np.sqrt(gen.spectrum) / ng
    a, r = _main_and_ratio(fig, outer[0, 0])
    _draw_hist(a, edges, hr, er, hg, eg, centres)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_ylabel("cells per event")
    a.legend()
    _draw_ratio(r, centres, hg, eg, hr, er, ratio_range, "cell energy [GeV]")
    thr = np.maximum(np.asarray(SPARSITY_THRESHOLDS, np.float64), 1e-7)
    sr, ser = mean_sem(ref.sparsity)
    sg, seg = mean_sem(gen.sparsity)
    a, r = _main_and_ratio(fig, outer[0, 1])
    a.plot(thr, sr, "-", **REF_STYLE)
    a.fill_between(thr, sr - ser, sr + ser, color="0.75", alpha=0.6, lw=0)
    a.errorbar(thr, sg, seg, fmt="o", ms=3, elinewidth=1, **GEN_STYLE)
    a.set_xscale("log")
    a.set_ylabel("mean fraction of cells < threshold")
    a.legend()
    _draw_ratio(r, thr, sg, seg, sr, ser, ratio_range, "threshold [GeV] (0 drawn at 1e-7)")
    return fig


def all_figures(gen: ObservableSet, ref: ObservableSet) -> dict[str, Figure]:
    """Every figure of the report, by file stem."""
    figs = {
        "profile_z": profiles_figure(gen, ref, "z"),
        "profile_x": profiles_figure(gen, ref, "x"),
        "profile_y": profiles_figure(gen, ref, "y"),
        "sampling_fraction_vs_energy": versus_energy_figure(gen, ref, "sf"),
        "hits_vs_energy": versus_energy_figure(gen, ref, "hits"),
        "distributions": distributions_figure(gen, ref),
        "angle": angle_figure(gen, ref),
        "cells": cells_figure(gen, ref),
        "projections": projections_figure(gen, ref),
    }
    return figs


CONVERGENCE_METRICS = ("physics_score", "auc_hlf", "auc_cells", "sf_rel_error")
"""Validation columns :func:`convergence_figure` draws when a run has them (lower is better for all;
an AUC of 0.5 is a generator the classifier cannot tell from the simulation)."""


@_hep_style
def convergence_figure(rows: list[dict[str, float]], *, title: str = "") -> Figure:
    """Validation metrics against showers seen (left) and training wall time (right).

    ``rows``: a run's validation records (``val.csv`` as dicts, ``fit()``'s ``history``), each with
    ``showers_seen`` and ``train_seconds`` (written by hepgan-train since they were added; rows without
    them are skipped) and any of :data:`CONVERGENCE_METRICS`. Linear x axes (the row at 0 showers is
    the untrained generator). Returns a 2-column Figure, one row per metric.
    """
    rows = [r for r in rows if "showers_seen" in r and "train_seconds" in r]
    names = [m for m in CONVERGENCE_METRICS if any(np.isfinite(r.get(m, np.nan)) for r in rows)]
    if not rows or not names:
        raise ValueError(
            "convergence_figure: the rows need showers_seen, train_seconds and one of "
            f"{list(CONVERGENCE_METRICS)}; got columns {sorted(rows[0]) if rows else []}"
        )
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.6 * len(names)), squeeze=False, sharex="col")
    seen = np.asarray([r["showers_seen"] for r in rows], float)
    wall = np.asarray([r["train_seconds"] for r in rows], float) / 60.0
    for i, name in enumerate(names):
        y = np.asarray([r.get(name, np.nan) for r in rows], float)
        for j, x in enumerate((seen, wall)):
            ax = axes[i, j]
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], "o-", color=GEN_STYLE["color"])
            if name.startswith("auc"):
                ax.axhline(0.5, color="grey", ls=":", lw=1)
            if name in ("physics_score", "sf_rel_error") and (y[ok] > 0).all():
                ax.set_yscale("log")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("showers seen")
    axes[-1, 1].set_xlabel("training wall time [min]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
