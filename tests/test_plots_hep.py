"""HEP-style validation figures: statistical errors equal to independent NumPy computations, out-of-range
ratios as arrows at the panel edge, empty reference bins left blank, global rcParams untouched."""

from __future__ import annotations

import io
import itertools

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from hepgan.physics import distances, plots
from hepgan.physics.extract import ObservableSet
from hepgan.physics.observables import SCALAR_NAMES, SPARSITY_THRESHOLDS, spectrum_edges

GRID = (5, 5, 6)


def _set(
    seed: int, n: int, *, profile_z: np.ndarray | None = None, energy: np.ndarray | None = None
) -> ObservableSet:
    rng = np.random.default_rng(seed)
    return ObservableSet(
        scalars={k: rng.normal(1.0, 0.1, n) for k in SCALAR_NAMES},
        profile_x=rng.random((n, GRID[0])),
        profile_y=rng.random((n, GRID[1])),
        profile_z=rng.random((n, GRID[2])) if profile_z is None else profile_z,
        sparsity=rng.random((n, len(SPARSITY_THRESHOLDS))),
        spectrum=rng.integers(1, 100, len(spectrum_edges()) - 1).astype(float),
        energy=np.full(n, 100.0) if energy is None else energy,  # one energy: one condition bin
        theta=rng.uniform(1.2, 1.9, n),
        grid=GRID,
        extra={"mean_xy": rng.random(GRID[:2]), "mean_yz": rng.random(GRID[1:])},
    )


def _errorbars(ax: Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, half-length of the y error bar)`` of the one ErrorbarContainer on ``ax``."""
    (c,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    xy = np.asarray(c.lines[0].get_xydata())
    segs = c.lines[2][0].get_segments()
    half = np.array([(s[1][1] - s[0][1]) / 2 for s in segs])
    return xy[:, 0], xy[:, 1], half


def _main_and_ratio_axes(fig: Figure) -> tuple[list[Axes], list[Axes]]:
    ratio = [a for a in fig.axes if a.get_ylabel() == "gen / ref" or a.get_ylim() == plots.RATIO_RANGE]
    return [a for a in fig.axes if a not in ratio], ratio


def test_profile_errors_are_the_standard_error_of_the_per_event_profiles() -> None:
    ref, gen = _set(0, 40), _set(1, 30)
    fig = plots.profiles_figure(gen, ref, "z")
    (main,), (ratio,) = _main_and_ratio_axes(fig)
    x, y, err = _errorbars(main)
    p = gen.profile_z
    mean = p.sum(0) / len(p)
    sem = np.sqrt(((p - mean) ** 2).sum(0) / (len(p) - 1)) / np.sqrt(len(p))
    np.testing.assert_allclose(x, np.arange(GRID[2]))
    np.testing.assert_allclose(y, mean, rtol=1e-12)
    np.testing.assert_allclose(err, sem, rtol=1e-12)
    # the reference's band spans mean +- its standard error
    q = ref.profile_z
    q_mean, q_sem = q.mean(0), q.std(0, ddof=1) / np.sqrt(len(q))
    (band,) = [
        s for s in main.patches if s.get_data().baseline is not None and np.ndim(s.get_data().baseline)
    ]
    np.testing.assert_allclose(band.get_data().values, q_mean + q_sem, rtol=1e-12)
    np.testing.assert_allclose(band.get_data().baseline, q_mean - q_sem, rtol=1e-12)
    # ratio errors: both uncertainties propagated
    _, r, r_err = _errorbars(ratio)
    ok = (mean / q_mean >= 0.5) & (mean / q_mean <= 1.5)
    rat = mean / q_mean
    np.testing.assert_allclose(r, rat[ok], rtol=1e-12)
    np.testing.assert_allclose(
        r_err, (rat * np.sqrt((sem / mean) ** 2 + (q_sem / q_mean) ** 2))[ok], rtol=1e-9
    )
    plt.close(fig)


def test_histogram_errors_are_poisson_scaled_to_unit_area() -> None:
    ref, gen = _set(2, 200), _set(3, 150)
    fig = plots.distributions_figure(gen, ref, names=("sf",))
    (main,), _ = _main_and_ratio_axes(fig)
    _, y, err = _errorbars(main)
    edges = distances.histogram_edges(ref.scalars["sf"], 30)
    v = np.clip(gen.scalars["sf"], edges[0], edges[-1])  # tails folded into the edge bins
    counts = np.array([np.sum((v >= a) & (v < b)) for a, b in itertools.pairwise(edges)], float)
    counts[-1] += np.sum(v == edges[-1])
    width = np.diff(edges)
    np.testing.assert_allclose(y, counts / (len(gen) * width), rtol=1e-12)
    np.testing.assert_allclose(err, np.sqrt(counts) / (len(gen) * width), rtol=1e-12)
    assert np.sum(y * width) == pytest.approx(1.0)
    plt.close(fig)


@pytest.mark.parametrize("ratio_range", [(0.5, 1.5), (0.8, 1.25)])
def test_out_of_range_ratios_are_arrows_at_the_edge_and_empty_reference_is_blank(
    ratio_range: tuple[float, float],
) -> None:
    """Generated / reference = 3 in layer 1 and 0.1 in layer 3, reference empty in layer 4."""
    base = np.array([1.0, 2.0, 3.0, 2.0, 0.0, 0.5])
    g = base.copy()
    g[1], g[3], g[4] = 3 * base[1], 0.1 * base[3], 0.7
    ref = _set(4, 20, profile_z=np.tile(base, (20, 1)))
    gen = _set(5, 20, profile_z=np.tile(g, (20, 1)))
    fig = plots.profiles_figure(gen, ref, "z", ratio_range=ratio_range)
    _, (ratio,) = _main_and_ratio_axes(fig)
    lo, hi = ratio_range
    assert ratio.get_ylim() == pytest.approx(ratio_range)
    x, y, _ = _errorbars(ratio)
    np.testing.assert_allclose(x, [0, 2, 5])  # layer 4 (empty reference) is missing, not inf
    np.testing.assert_allclose(y, 1.0)
    arrows = {ln.get_marker(): ln.get_xydata() for ln in ratio.lines if ln.get_marker() in ("^", "v")}
    pad = plots.ARROW_INSET * (hi - lo)
    np.testing.assert_allclose(arrows["^"], [[1.0, hi - pad]])
    np.testing.assert_allclose(arrows["v"], [[3.0, lo + pad]])
    all_y = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ratio.lines])
    assert np.isfinite(all_y).all()
    plt.close(fig)


def test_every_report_figure_is_drawn_without_touching_global_rcparams() -> None:
    ref = _set(6, 300, energy=np.random.default_rng(6).uniform(10, 500, 300))
    gen = _set(7, 250, energy=np.random.default_rng(7).uniform(10, 500, 250))
    before = dict(mpl.rcParams)
    figs = plots.all_figures(gen, ref)
    assert dict(mpl.rcParams) == before
    assert list(figs) == [
        "profile_z", "profile_x", "profile_y", "sampling_fraction_vs_energy", "hits_vs_energy",
        "distributions", "angle", "cells", "projections",
    ]  # fmt: skip
    # built under the HEP style: frameless legends (matplotlib's default draws a frame)
    legend = figs["cells"].axes[0].get_legend()
    assert legend is not None and not legend.get_frame_on()
    assert mpl.rcParams["legend.frameon"]
    # cells: the spectrum per event with Poisson errors
    _, y, err = _errorbars(figs["cells"].axes[0])
    np.testing.assert_allclose(y, gen.spectrum / len(gen))
    np.testing.assert_allclose(err, np.sqrt(gen.spectrum) / len(gen))
    # angle: with a varying true angle both panels (distribution, mean versus true angle), each with ratio
    assert len(figs["angle"].axes) == 4
    for name, fig in figs.items():
        if name != "projections":
            assert any(a.get_ylabel() == "gen / ref" for a in fig.axes), name
        fig.savefig(io.BytesIO(), format="png", dpi=30)
        plt.close(fig)
    assert dict(mpl.rcParams) == before
