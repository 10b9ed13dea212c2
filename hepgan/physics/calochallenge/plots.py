"""Figures of the CaloChallenge suite (matplotlib, headless), drawn with the challenge's histogram bins:
the reference as a filled histogram, the generated set as a coloured line."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never open a window

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from hepgan.physics.calochallenge.features import Features
from hepgan.physics.calochallenge.separation import ATTR, PER_LAYER, feature_edges

REF_STYLE: dict[str, Any] = {"color": "0.6", "alpha": 0.5, "label": "reference"}
GEN_STYLE: dict[str, Any] = {"color": "tab:red", "label": "generated"}

LABELS = {
    "EC_eta": r"centre of energy $x$ ($\Delta\eta$) [mm]",
    "EC_phi": r"centre of energy $y$ ($\Delta\phi$) [mm]",
    "EC_r": "centre of energy $r$ [mm]",
    "width_eta": "width in $x$ [mm]",
    "width_phi": "width in $y$ [mm]",
    "width_r": "width in $r$ [mm]",
}


def _unit_hist(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.histogram(np.asarray(values, np.float64), bins=edges)[0].astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def _pair(ax: Axes, ref: np.ndarray, gen: np.ndarray, edges: np.ndarray, *, log: bool = False) -> None:
    """Unit-sum histograms of ``ref`` and ``gen`` (the quantities the separation power compares); a log
    y axis only when there is something positive to show on it."""
    hr, hg = _unit_hist(ref, edges), _unit_hist(gen, edges)
    ax.stairs(hr, edges, fill=True, **REF_STYLE)
    ax.stairs(hg, edges, **GEN_STYLE)
    if log and (hr.any() or hg.any()):
        ax.set_yscale("log")


def layer_energy_figure(gen: Features, ref: Features) -> plt.Figure:
    """Mean energy per layer (MeV) of both sets, with the ratio generated / reference below."""
    fig, (a, r) = plt.subplots(2, 1, figsize=(6, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    layers = np.arange(ref.e_layer.shape[1])
    mr, mg = ref.e_layer.mean(0), gen.e_layer.mean(0)
    a.step(layers, mr, where="mid", color="black", label="reference")
    a.step(layers, mg, where="mid", color=GEN_STYLE["color"], label="generated")
    a.set_yscale("log")
    a.set_ylabel("mean energy in layer [MeV]")
    a.legend()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mr > 0, mg / mr, np.nan)
    r.plot(layers, ratio, ".", color=GEN_STYLE["color"])
    r.axhline(1.0, color="grey", lw=0.8)
    r.set_ylim(0.5, 1.5)
    r.set_xlabel("layer")
    r.set_ylabel("gen / ref")
    fig.tight_layout()
    return fig


def energy_ratio_figure(gen: Features, ref: Features, sep: float | None) -> plt.Figure:
    """``E_dep / E_inc`` in the challenge's bins, with its separation power."""
    fig, ax = plt.subplots(figsize=(5, 4))
    _pair(ax, ref.e_ratio, gen.e_ratio, feature_edges("E_ratio"))
    ax.set_xlabel(r"$E_\mathrm{dep} / E_\mathrm{inc}$")
    ax.set_ylabel("fraction of events")
    ax.set_title("separation power " + ("n/a" if sep is None else f"{sep:.3g}"), fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig


def shape_figure(gen: Features, ref: Features, seps: dict[str, Any], layers: tuple[int, ...]) -> plt.Figure:
    """Centres of energy and widths (rows) in a few ``layers`` (columns), challenge bins, log y; each
    panel titled with its separation power."""
    names = [n for n in PER_LAYER if n in LABELS]
    fig, axes = plt.subplots(
        len(names), len(layers), figsize=(3.2 * len(layers), 2.3 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        g, r = getattr(gen, ATTR[name]), getattr(ref, ATTR[name])
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            _pair(ax, r[:, layer], g[:, layer], feature_edges(name), log=True)
            value = seps.get(name, [None] * (layer + 1))[layer]
            ax.set_title(f"layer {layer}: sep " + ("n/a" if value is None else f"{value:.3g}"), fontsize=8)
            ax.set_xlabel(LABELS[name], fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def voxel_figure(hist: tuple[np.ndarray, np.ndarray, np.ndarray], sep: float | None) -> plt.Figure:
    """The voxel-energy spectrum (unit-sum, log-log) from ``(edges, ref counts, gen counts)``."""
    edges, cr, cg = hist
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.stairs(cr / max(cr.sum(), 1.0), edges, fill=True, **REF_STYLE)
    ax.stairs(cg / max(cg.sum(), 1.0), edges, **GEN_STYLE)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("voxel energy [MeV]")
    ax.set_ylabel("fraction of voxels above threshold")
    ax.set_title("separation power " + ("n/a" if sep is None else f"{sep:.3g}"), fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig


def separation_figure(seps: dict[str, Any]) -> plt.Figure:
    """Separation power per layer, one line per per-layer feature (log y; missing values left out)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in PER_LAYER:
        v = np.array([np.nan if x is None else x for x in seps.get(name, [])], np.float64)
        if np.isfinite(v).any():
            ax.plot(np.arange(len(v)), np.where(v > 0, v, np.nan), ".-", label=name, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("separation power")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def write_figures(
    out_dir: str | Path,
    gen: Features,
    ref: Features,
    result: dict[str, Any],
    voxel_hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[Path]:
    """Write the suite's figures as PNG into ``out_dir`` (created); ``result`` is the dict of
    :func:`hepgan.physics.calochallenge.suite.evaluate`. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seps = result["separation_power"]
    n_layers = ref.e_layer.shape[1]
    layers = tuple(
        sorted({min(n_layers - 1, k) for k in (n_layers // 9, n_layers // 2, (7 * n_layers) // 9)})
    )
    figures = {
        "layer_energy.png": layer_energy_figure(gen, ref),
        "energy_ratio.png": energy_ratio_figure(gen, ref, seps.get("E_ratio")),
        "shapes.png": shape_figure(gen, ref, seps, layers),
        "separation_per_layer.png": separation_figure(seps),
    }
    if voxel_hist is not None:
        figures["voxel_spectrum.png"] = voxel_figure(voxel_hist, seps.get("voxel"))
    paths = []
    for name, fig in figures.items():
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
