"""The convergence figure drawn from a run's validation records."""

from __future__ import annotations

import numpy as np
import pytest

from hepgan.physics.plots import convergence_figure


def test_convergence_figure_draws_the_metrics_present() -> None:
    rows = [
        {"showers_seen": 0.0, "train_seconds": 0.0, "physics_score": 6.0, "sf_rel_error": 5.0},
        {
            "showers_seen": 4096.0,
            "train_seconds": 170.0,
            "physics_score": 0.5,
            "sf_rel_error": 0.1,
            "auc_hlf": 0.97,
        },
        {
            "showers_seen": 8192.0,
            "train_seconds": 350.0,
            "physics_score": 0.4,
            "sf_rel_error": 0.05,
            "auc_hlf": 0.9,
        },
    ]
    fig = convergence_figure(rows, title="t")
    labels = [ax.get_ylabel() for ax in fig.axes[::2]]
    assert labels == ["physics_score", "auc_hlf", "sf_rel_error"]  # auc_cells absent: no panel
    first = fig.axes[0].lines[0]
    assert list(first.get_xdata()) == [0.0, 4096.0, 8192.0]
    assert list(fig.axes[1].lines[0].get_xdata()) == pytest.approx([0.0, 170 / 60, 350 / 60])


def test_convergence_figure_needs_the_columns() -> None:
    with pytest.raises(ValueError, match="showers_seen"):
        convergence_figure([{"step": 1.0, "physics_score": 0.3}])


def test_energy_bins_follow_the_energy_distribution() -> None:
    """Log-uniform energies (CaloChallenge: 1 GeV - 1 TeV) get logarithmic bins, uniform ones (3DGAN:
    10-500 GeV) linear bins; either way the edges span the set."""
    from hepgan.physics.plots import energy_edges

    rng = np.random.default_rng(0)
    logu = 10 ** rng.uniform(0, 3, 5000)
    edges, log = energy_edges(logu)
    assert log and len(edges) == 16
    np.testing.assert_allclose(np.diff(np.log(edges)), np.log(edges[1] / edges[0]), rtol=1e-9)
    assert edges[0] == logu.min() and edges[-1] >= logu.max()
    # half of a log-uniform set lies below 31.6 GeV: about half of the bins there too
    assert 6 <= np.sum(edges < 31.6) <= 9
    uni = rng.uniform(10, 500, 5000)
    edges, log = energy_edges(uni)
    assert not log
    np.testing.assert_allclose(np.diff(edges), edges[1] - edges[0], rtol=1e-6)
    edges, log = energy_edges(np.full(10, 100.0))  # one energy: one bin around it
    assert not log and edges[0] < 100 < edges[-1]
