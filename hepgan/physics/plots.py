"""Validation figures as the 3DGAN papers show them (matplotlib, headless).

Each function takes the generated and reference :class:`ObservableSet` and returns a ``Figure``; the
reference (simulation) is drawn as a filled histogram or black line, the generated set in colour, and
per-bin ratios generated/reference sit in a panel below where the papers have one.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never open a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from hepgan.physics import binning, distances
from hepgan.physics.extract import ObservableSet
from hepgan.physics.observables import SCALAR_NAMES, SPARSITY_THRESHOLDS, spectrum_edges

REF_STYLE = {"color": "black", "label": "reference"}
GEN_STYLE = {"color": "tab:red", "label": "generated"}

LABELS = {
    "e_vis": "visible energy [GeV]",
    "sf": "sampling fraction",
    "x_mean": "x barycentre [cell]",
    "x_var": "x second moment [cell$^2$]",
    "y_mean": "y barycentre [cell]",
    "y_var": "y second moment [cell$^2$]",
    "z_mean": "z barycentre [layer]",
    "z_var": "z second moment [layer$^2$]",
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


def _energy_bins(ref: ObservableSet, gen: ObservableSet) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Energy bins only (angles pooled), as ``(label, gen mask, ref mask)``; empty bins dropped."""
    out = []
    for b in binning.make_bins(ref.energy, None):
        mg, mr = b.mask(gen.energy, None), b.mask(ref.energy, None)
        if mg.any() and mr.any():
            out.append((b.label, mg, mr))
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def profiles_figure(gen: ObservableSet, ref: ObservableSet, axis: str) -> Figure:
    """Mean energy profile along ``axis`` (``"x"``, ``"y"`` or ``"z"``) per energy bin, with ratio panels."""
    bins = _energy_bins(ref, gen)
    pg, pr = getattr(gen, f"profile_{axis}"), getattr(ref, f"profile_{axis}")
    fig, axes = plt.subplots(
        2, len(bins), figsize=(3.2 * len(bins), 4.2), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
    )  # fmt: skip
    idx = np.arange(pr.shape[1])
    for j, (label, mg, mr) in enumerate(bins):
        a, r = axes[0, j], axes[1, j]
        mean_r, mean_g = pr[mr].mean(0), pg[mg].mean(0)
        a.step(idx, mean_r, where="mid", **REF_STYLE)
        a.step(idx, mean_g, where="mid", **GEN_STYLE)
        a.set_yscale("log")
        a.set_title(label, fontsize=9)
        r.plot(idx, _ratio(mean_g, mean_r), ".", color=GEN_STYLE["color"])
        r.axhline(1.0, color="grey", lw=0.8)
        r.set_ylim(0.5, 1.5)
        r.set_xlabel(f"{axis} [{'layer' if axis == 'z' else 'cell'}]")
    axes[0, 0].set_ylabel("mean energy [GeV]")
    axes[1, 0].set_ylabel("gen / ref")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{'longitudinal' if axis == 'z' else 'transverse ' + axis} profile")
    fig.tight_layout()
    return fig


def distributions_figure(
    gen: ObservableSet, ref: ObservableSet, names: tuple[str, ...] = SCALAR_NAMES
) -> Figure:
    """Histograms of every per-event observable (all conditions pooled), with separation power."""
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        scale = 180.0 / np.pi if name == "angle" else 1.0
        vr, vg = ref.scalars[name] * scale, gen.scalars[name] * scale
        edges = distances.histogram_edges(vr, 30)
        ax.hist(np.clip(vr, edges[0], edges[-1]), bins=edges, histtype="stepfilled", alpha=0.3, density=True,
                **REF_STYLE)  # fmt: skip
        ax.hist(np.clip(vg, edges[0], edges[-1]), bins=edges, histtype="step", density=True, **GEN_STYLE)
        ax.set_xlabel(LABELS.get(name, name), fontsize=8)
        ax.set_title(f"S = {distances.separation_power(vg, vr, edges):.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.digitize(x, edges) - 1
    mean = np.full(len(edges) - 1, np.nan)
    err = np.full(len(edges) - 1, np.nan)
    for k in range(len(edges) - 1):
        v = y[idx == k]
        if v.size:
            mean[k] = v.mean()
            err[k] = v.std() / np.sqrt(v.size)
    return mean, err


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


def versus_energy_figure(gen: ObservableSet, ref: ObservableSet, name: str) -> Figure:
    """Mean of observable ``name`` versus primary energy (e.g. the sampling fraction), with ratio panel;
    logarithmic energy bins for log-uniform energies (:func:`energy_edges`)."""
    edges, log = energy_edges(ref.energy)
    centres = np.sqrt(edges[1:] * edges[:-1]) if log else 0.5 * (edges[1:] + edges[:-1])
    mr, er = _binned_mean(ref.energy, ref.scalars[name], edges)
    mg, eg = _binned_mean(gen.energy, gen.scalars[name], edges)
    fig, (a, r) = plt.subplots(2, 1, figsize=(5.5, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    a.errorbar(centres, mr, er, fmt="o-", ms=3, **REF_STYLE)
    a.errorbar(centres, mg, eg, fmt="s--", ms=3, **GEN_STYLE)
    a.set_ylabel(LABELS.get(name, name))
    a.legend(fontsize=8)
    r.plot(centres, _ratio(mg, mr), "o", color=GEN_STYLE["color"])
    r.axhline(1.0, color="grey", lw=0.8)
    r.set_xlabel("primary energy [GeV]")
    r.set_ylabel("gen / ref")
    if log:
        r.set_xscale("log")
    fig.tight_layout()
    return fig


def angle_figure(gen: ObservableSet, ref: ObservableSet) -> Figure:
    """Measured angle: its distribution and, where the data carry the true angle, its mean versus it."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    deg = 180.0 / np.pi
    vr, vg = ref.scalars["angle"] * deg, gen.scalars["angle"] * deg
    edges = distances.histogram_edges(vr, 40)
    axes[0].hist(np.clip(vr, edges[0], edges[-1]), bins=edges, histtype="stepfilled", alpha=0.3, density=True,
                 **REF_STYLE)  # fmt: skip
    axes[0].hist(np.clip(vg, edges[0], edges[-1]), bins=edges, histtype="step", density=True, **GEN_STYLE)
    axes[0].set_xlabel("measured angle [deg]")
    axes[0].legend(fontsize=8)
    if ref.theta is not None and gen.theta is not None and np.ptp(ref.theta) > 1e-3:
        t_edges = np.linspace(ref.theta.min() * deg, ref.theta.max() * deg + 1e-6, 13)
        c = 0.5 * (t_edges[1:] + t_edges[:-1])
        mr, er = _binned_mean(ref.theta * deg, vr, t_edges)
        mg, eg = _binned_mean(gen.theta * deg, vg, t_edges)
        axes[1].errorbar(c, mr, er, fmt="o-", ms=3, **REF_STYLE)
        axes[1].errorbar(c, mg, eg, fmt="s--", ms=3, **GEN_STYLE)
        axes[1].plot(c, c, ":", color="grey", label="measured = true")
        axes[1].set_xlabel("true angle [deg]")
        axes[1].set_ylabel("mean measured angle [deg]")
        axes[1].legend(fontsize=8)
    else:
        axes[1].axis("off")
    fig.tight_layout()
    return fig


def projections_figure(gen: ObservableSet, ref: ObservableSet) -> Figure:
    """2D projections of the mean shower (x-y summed over depth, y-z summed over x), log colour scale.

    Built from the profiles alone would lose the correlation, so this uses the mean 2D images stored in
    ``ObservableSet.extra`` (``mean_xy``, ``mean_yz``) when :func:`hepgan.physics.report.write_report`
    put them there.
    """
    fig, axes = plt.subplots(2, 2, figsize=(8, 7))
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
            fig.colorbar(im, ax=ax, label="GeV")
    fig.tight_layout()
    return fig


def cells_figure(gen: ObservableSet, ref: ObservableSet) -> Figure:
    """Cell-energy spectrum (all events) and mean sparsity versus threshold."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    edges = spectrum_edges()
    a.stairs(ref.spectrum / max(len(ref), 1), edges, fill=True, alpha=0.3, **REF_STYLE)
    a.stairs(gen.spectrum / max(len(gen), 1), edges, **GEN_STYLE)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("cell energy [GeV]")
    a.set_ylabel("cells per event")
    a.legend(fontsize=8)
    thr = np.maximum(np.asarray(SPARSITY_THRESHOLDS), 1e-7)
    b.plot(thr, ref.sparsity.mean(0), "o-", **REF_STYLE)
    b.plot(thr, gen.sparsity.mean(0), "s--", **GEN_STYLE)
    b.set_xscale("log")
    b.set_xlabel("threshold [GeV] (0 drawn at 1e-7)")
    b.set_ylabel("mean sparsity (fraction of cells < threshold)")
    fig.tight_layout()
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
