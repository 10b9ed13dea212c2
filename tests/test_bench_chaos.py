"""The chaos benchmark end to end, small: two SIGKILLs of a 12-step run (one aimed at a checkpoint write,
one at the end of the run), restarts until done, and the bitwise comparison it reports."""

from __future__ import annotations

import pytest

from hepgan.bench.chaos import AIMS, run


@pytest.mark.slow
def test_chaos_kills_restarts_and_compares(tmp_path):
    res = run(quick=True, kills=2, seed=1, keep=str(tmp_path))
    assert res["kills"] == 2 and res["restarts"] == 2
    assert res["kills_by_aim"] == {AIMS[0]: 1, AIMS[1]: 0, AIMS[2]: 1}
    assert res["bitwise_equal"] and res["logs_equal"] and res["result_status"] == "ok"
    assert res["nothing_lost"] and res["train_rows"] == res["steps"] == 12
    # the comparison can fail: the reference and the chaos run are separate folders with their own state
    assert (tmp_path / "reference" / "checkpoints").is_dir() and (tmp_path / "chaos" / "checkpoints").is_dir()
