"""Generator traversals: showers along paths through the conditions and the latent (noise) space.

Four kinds of path, each generated from latent vectors that the model's own ``latent`` method builds
from noise chosen here (:func:`hepgan.explain.dissect.latent_with_noise`), so the conditioning is the
model's (``E/100 * noise`` for the fixed-angle 3DGAN, ``[E/100, theta, noise]`` for AngleGAN):

- ``energy``: an energy sweep at one fixed noise vector (and angle);
- ``angle``: an angle sweep at the same noise vector and a fixed energy (models with an angle condition);
- ``interpolation``: spherical interpolation (slerp, which keeps the norm a Gaussian noise vector
  typically has) between two noise vectors at fixed energy and angle;
- ``direction_<observable>``: steps along a latent direction of
  :func:`hepgan.explain.dissect.latent_directions` from ``-span`` to ``+span`` standard deviations of the
  noise: the fixed noise vector with its component along the direction replaced by the step.

For each path: a figure of the showers' projections (x-y summed over depth, y-z summed over x, log
colour scale shared along the path) and one of the longitudinal and lateral profiles; per step the
shower observables, and the largest cell change along the path relative to the first shower's largest
cell (0: the path leaves the shower unchanged).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from hepgan.explain.dissect import (
    DEFAULT_OBSERVABLES,
    Probe,
    as_float_array,
    fit_latent_directions,
    json_safe,
    open_probe,
)
from hepgan.fileio import write_json

STEP_OBSERVABLES = ("e_vis", "sf", "z_mean", "z_var", "x_var", "y_var", "shower_max")
"""Shower observables reported per step of every path."""

N_SWEEP = 7
"""Steps of the default energy and angle sweeps."""


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between ``a: [D]`` and ``b: [D]`` at ``t: [T]`` in [0, 1] -> ``[T, D]``;
    linear where the two are (anti)parallel."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    cos = float(a64 @ b64) / max(na * nb, 1e-30)
    omega = math.acos(min(1.0, max(-1.0, cos)))
    if na == 0.0 or nb == 0.0 or math.sin(omega) < 1e-6:
        return (1.0 - t) * a64[None] + t * b64[None]
    s = math.sin(omega)
    return (np.sin((1.0 - t) * omega) / s) * a64[None] + (np.sin(t * omega) / s) * b64[None]


def _positive_int(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or int(v) < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {v!r}")
    return int(v)


def _values(name: str, values: Sequence[float], lo: float, hi: float) -> np.ndarray:
    arr = np.asarray(values, np.float64).ravel()
    if arr.size < 1 or not np.isfinite(arr).all() or (arr <= lo).any() or (arr >= hi).any():
        raise ValueError(
            f"{name} must be a non-empty sequence of numbers in ({lo:g}, {hi:g}); got {values!r}"
        )
    return arr


def _load_directions(
    directions: Mapping[str, Any] | None, out: Path, probe: Probe, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, float | None], str]:
    """``({observable: unit vector [noise_dim]}, {observable: R^2 or None}, source)``."""
    r2: dict[str, float | None] = {}
    if directions is None:
        saved = out / "dissect.json"
        try:
            doc = json.loads(saved.read_text()) if saved.is_file() else {}
            stored = doc["latent_directions"]
            vecs = {str(o): as_float_array(d["vector"]) for o, d in stored.items()}
            fits = {str(o): d.get("r2") for o, d in stored.items()}
            fits.update(doc.get("latent_r2") or {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            vecs = {}
            doc = {}
        same_run = str(doc.get("run_dir", "")) == str(probe.run_dir) and doc.get("step") == probe.step
        if (
            same_run
            and "latent_directions" in doc
            and all(v.shape == (probe.noise_dim,) for v in vecs.values())
        ):
            return vecs, fits, str(saved)
        dirs, fit_r2, _ = fit_latent_directions(probe, DEFAULT_OBSERVABLES, n=256, seed=seed)
        return dirs, dict(fit_r2), "latent_directions"
    out_dirs: dict[str, np.ndarray] = {}
    for name, vec in directions.items():
        v = np.asarray(vec, np.float64)
        if v.shape != (probe.noise_dim,) or not np.isfinite(v).all():
            raise ValueError(
                f"directions[{name!r}] must be a finite vector [noise_dim] = [{probe.noise_dim}]; got shape "
                f"{v.shape}"
            )
        norm = float(np.linalg.norm(v))
        out_dirs[str(name)] = v / norm if norm > 0 else v
        r2[str(name)] = None
    return out_dirs, r2, "argument"


def traverse(
    run_dir: str | Path | Probe,
    out_dir: str | Path,
    *,
    checkpoint: str | int | None = None,
    seed: int = 0,
    energies: Sequence[float] | None = None,
    thetas_deg: Sequence[float] | None = None,
    n_interp: int = 7,
    directions: Mapping[str, Any] | None = None,
    span: float = 2.0,
) -> dict[str, Any]:
    """Generate showers along the paths of the module docstring and write ``traverse.json``,
    ``traverse/*.png`` and ``traverse.html`` into ``out_dir``.

    ``energies``: GeV of the energy sweep (default: 7 values spaced geometrically over the run's range).
    ``thetas_deg``: degrees of the angle sweep (default: 7 values over the run's range for angle models,
    ``[90]`` for fixed-angle models, which take no other). ``n_interp``: steps of the interpolation and
    of each direction path. ``directions``: ``{name: vector [noise_dim]}`` (normalised here); default:
    ``latent_directions`` of ``out_dir/dissect.json`` if it was written for the same run directory and
    step, else fitted now (:func:`hepgan.explain.dissect.latent_directions`). ``span``: the direction
    paths run from ``-span`` to ``+span`` standard deviations. ``checkpoint``: None or "latest", "best",
    or a step. ``seed`` picks the two noise vectors. ``run_dir`` may also be a
    :class:`~hepgan.explain.dissect.Probe`.

    Returns the content of ``traverse.json``: per path (``paths[name]``) the ``parameter`` and its
    ``values`` per step, the fixed conditions, ``observables`` per step and ``max_rel_change``.
    """
    n_interp = _positive_int("n_interp", n_interp, 2)
    if isinstance(span, bool) or not isinstance(span, int | float) or not (math.isfinite(span) and span > 0):
        raise ValueError(f"span must be a positive number of standard deviations; got {span!r}")
    if isinstance(run_dir, Probe):
        probe = run_dir
    else:
        probe, _ = open_probe(
            run_dir, checkpoint=checkpoint, seed=seed, batch=max(N_SWEEP, n_interp), layers=[]
        )
    (e_lo, e_hi), (t_lo, t_hi) = probe.energy_range, probe.theta_range_deg
    e_sweep = (
        np.geomspace(e_lo, e_hi, N_SWEEP)
        if energies is None
        else _values("energies", energies, 0.0, math.inf)
    )
    if thetas_deg is None:
        t_sweep = np.linspace(t_lo, t_hi, N_SWEEP) if probe.has_theta and t_hi > t_lo else np.array([90.0])
    else:
        t_sweep = _values("thetas_deg", thetas_deg, 0.0, 180.0)
        if not probe.has_theta and not np.all(t_sweep == 90.0):
            raise ValueError(
                f"thetas_deg: a fixed-angle ({probe.arch}) model is at 90 degrees only; got {thetas_deg!r}"
            )
    out = Path(out_dir)
    (out / "traverse").mkdir(parents=True, exist_ok=True)
    dirs, r2, source = _load_directions(directions, out, probe, seed)

    rng = np.random.default_rng([seed, 0x5452])
    noise0, noise1 = rng.standard_normal((2, probe.noise_dim))
    e0, t0 = probe.reference_conditions()
    paths: dict[str, dict[str, Any]] = {}

    def one(
        name: str, parameter: str, values: np.ndarray, noise: np.ndarray, e: np.ndarray, th: np.ndarray
    ) -> None:
        cells, _ = probe.run(probe.latents(noise.astype(np.float32), e, th))
        scalars = probe.observables(cells, e, th, STEP_OBSERVABLES)
        peak = float(np.max(np.abs(cells[0])))
        change = float(np.max(np.abs(cells - cells[:1]))) / peak if peak > 0 else float(np.max(np.abs(cells)))
        paths[name] = {
            "parameter": parameter,
            "values": values,
            "energy_GeV": e,
            "theta_deg": np.rad2deg(th.astype(np.float64)),
            "observables": scalars,
            "max_rel_change": change,
            "cells": cells,
        }

    n = len(e_sweep)
    one("energy", "energy [GeV]", e_sweep, np.tile(noise0, (n, 1)), e_sweep, np.full(n, t0))
    if probe.has_theta and len(t_sweep) > 1:
        n = len(t_sweep)
        one("angle", "theta [deg]", t_sweep, np.tile(noise0, (n, 1)), np.full(n, e0), np.deg2rad(t_sweep))
    t = np.linspace(0.0, 1.0, n_interp)
    one("interpolation", "slerp t", t, slerp(noise0, noise1, t), np.full(n_interp, e0), np.full(n_interp, t0))
    steps = np.linspace(-span, span, n_interp)
    for obs, d in dirs.items():
        base = noise0 - float(noise0 @ d) * d
        one(
            f"direction_{obs}",
            f"{obs} direction [std]",
            steps,
            base[None] + steps[:, None] * d[None],
            np.full(n_interp, e0),
            np.full(n_interp, t0),
        )

    imgs = _figures(paths, out / "traverse", probe.has_theta)
    for p in paths.values():
        del p["cells"]
    result = json_safe(
        {
            "run_dir": str(probe.run_dir),
            "step": probe.step,
            "arch": probe.arch,
            "sample_bn": probe.sample_bn,
            "seed": seed,
            "noise_dim": probe.noise_dim,
            "noise_used": probe.noise_used,
            "interpolation": "spherical (slerp) between two standard-normal noise vectors",
            "span": float(span),
            "reference_energy_GeV": e0,
            "reference_theta_deg": math.degrees(t0),
            "directions_source": source,
            "directions_r2": r2,
            "paths": paths,
        }
    )
    write_json(out / "traverse.json", result, allow_nan=False)
    _page(result, imgs, out / "traverse.html")
    return cast(dict[str, Any], result)


def _figures(paths: dict[str, dict[str, Any]], folder: Path, has_theta: bool) -> dict[str, str]:
    """Projections and profiles per path as PNG files in ``folder``; ``{path name: <img> tags}``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from hepgan.explain.page import save_figure

    imgs: dict[str, str] = {}
    for name, p in paths.items():
        cells = p["cells"]  # [T, X, Y, Z] GeV
        steps = len(cells)
        labels = [f"{v:.3g}" for v in p["values"]]
        # images [T, rows, columns]: x-y with x across and y up, y-z with depth z across and y up; the
        # steps side by side in one image per row (a blank column between them), one shared colour scale
        projections = (
            (np.swapaxes(cells.sum(axis=3), 1, 2), "x-y (sum over z)\nx across, y up"),
            (cells.sum(axis=1), "y-z (sum over x)\nz across, y up"),
        )
        width = steps * (cells.shape[1] + 1)  # cells across the x-y row
        fig, axes = plt.subplots(2, 1, figsize=(min(2.0 + 0.06 * width, 18.0), 4.6), squeeze=False)
        for ax, (proj, title) in zip(axes[:, 0], projections, strict=True):
            rows, cols = proj.shape[1:]
            mosaic = np.full((rows, steps * (cols + 1) - 1), np.nan)
            for i in range(steps):
                mosaic[:, i * (cols + 1) : i * (cols + 1) + cols] = proj[i]
            vmax = float(proj.max())
            norm = LogNorm(vmin=vmax * 1e-5, vmax=vmax) if vmax > 0 else None
            cmap = plt.get_cmap("viridis").with_extremes(bad="white")
            masked = np.ma.masked_where(~(mosaic > 0), mosaic)
            ax.imshow(masked, origin="lower", norm=norm, cmap=cmap, aspect="auto", interpolation="nearest")
            ax.set_xticks([i * (cols + 1) + (cols - 1) / 2 for i in range(steps)], labels, fontsize=8)
            ax.set_yticks([])
            ax.set_ylabel(title, fontsize=8)
        axes[0, 0].set_title(f"{name}: {p['parameter']} (log colour scale, GeV)", fontsize=9)
        fig.subplots_adjust(left=0.08, right=0.99, top=0.92, bottom=0.08, hspace=0.3)
        tags = save_figure(fig, folder / f"{name}_projections.png")

        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        line_cmap = plt.get_cmap("plasma")
        profiles = (
            (cells.sum(axis=(1, 2)), "depth z [layer]", "longitudinal"),
            (cells.sum(axis=(2, 3)), "x [cell]", "lateral x"),
            (cells.sum(axis=(1, 3)), "y [cell]", "lateral y" + (" (tilt plane)" if has_theta else "")),
        )
        for ax, (prof, xlabel, title) in zip(axes, profiles, strict=True):
            for i in range(steps):
                ax.plot(prof[i], color=line_cmap(i / max(steps - 1, 1)), label=labels[i], lw=1.2)
            if (prof > 0).any():
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("energy [GeV]")
            ax.set_title(title, fontsize=9)
        axes[-1].legend(fontsize=7, title=p["parameter"], title_fontsize=7)
        fig.subplots_adjust(left=0.07, right=0.99, top=0.9, bottom=0.16, wspace=0.3)
        tags += save_figure(fig, folder / f"{name}_profiles.png")
        imgs[name] = tags
    return imgs


def _page(result: dict[str, Any], imgs: dict[str, str], path: Path) -> None:
    import html

    from hepgan.explain.page import table, write_page

    how = (
        "<p><b>How to read.</b> Each path generates one shower per step, changing one thing at a time: the "
        "energy or the angle at a fixed noise vector, the noise itself (spherical interpolation between two "
        f"noise vectors at {result['reference_energy_GeV']:.4g} GeV), or the noise along a latent direction "
        f"from -{result['span']:g} to +{result['span']:g} standard deviations (directions from "
        f"{html.escape(str(result['directions_source']))}: the direction that best predicts the observable "
        "at fixed energy, with its R<sup>2</sup>). Projections share one log colour scale along a path. "
        "'max change' is the largest cell change along the path relative to the first shower's largest "
        "cell: 0 means the path leaves the shower unchanged (e.g. noise paths of a collapsed generator).</p>"
    )
    parts = [how]
    if not result["noise_used"]:
        parts.append('<p class="warn">The generator\'s latent vector does not use noise at all.</p>')
    rows = []
    for name, p in result["paths"].items():
        r2 = (
            result["directions_r2"].get(name.removeprefix("direction_"))
            if name.startswith("direction_")
            else None
        )
        rows.append([name, p["parameter"], p["max_rel_change"], "" if r2 is None else r2])
    parts.append(table(["path", "parameter", "max change", "R^2"], rows))
    for name, p in result["paths"].items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        obs = p["observables"]
        header = [p["parameter"], *obs]
        steps = [[v, *(obs[o][i] for o in obs)] for i, v in enumerate(p["values"])]
        parts.append(table(header, [[("n/a" if c is None else c) for c in row] for row in steps]))
        parts.append(imgs[name])
    write_page(path, f"Generator traversals (step {result['step']})", "\n".join(parts))
