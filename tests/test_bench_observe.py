"""``hepgan-bench observe`` (quick): the explain logging's cost against its baselines, measured."""

from __future__ import annotations

import math

from hepgan.bench import observe


def test_quick_run_measures_both_costs():
    result = observe.run(quick=True)
    row = result["cases"]["tiny"]
    for part, base, extra in (("step", "without_s", "with_s"), ("validation", "validation_s", "probe_s")):
        assert row[part][base] > 0 and row[part][extra] > 0, part
        assert math.isfinite(row[part]["ratio"]) and row[part]["ratio"] > 0, part
    assert math.isclose(row["step"]["ratio"], row["step"]["with_s"] / row["step"]["without_s"])
    assert row["validation"]["dynamics_events"] == 512
