"""``hepgan-bench levers`` in its quick form: every lever measured against its baseline, JSON out."""

from __future__ import annotations

import json
import math

from hepgan.bench import levers


def test_quick_levers_measure_each_lever_against_its_baseline(tmp_path) -> None:
    from hepgan.bench.common import write_result

    result = levers.run(quick=True)
    names = {s["lever"] for s in result["summary"]}
    assert names == {
        "fold_padding_upsample",
        "contraction (rule vs all dot)",
        "channels_first",
        "kernel_spectra",
        "dropout_rng",
        "transform_length",
        "split_fft",
    }  # the oneDNN flag needs fresh processes: full runs only
    for s in result["summary"]:
        assert s["baseline_s"] > 0 and s["lever_s"] > 0, s
        assert math.isclose(s["ratio"], s["baseline_s"] / s["lever_s"]), s
        assert isinstance(s["kept"], bool)
    # folding applies exactly to the layers with padding or upsampling (the paper layout has both)
    folded = {r["layer"] for r in result["layers"] if "fold_padding_upsample" in r}
    padded = {r["layer"] for r in result["layers"] if r["padding"] != "valid" or r["upsample"] != [1, 1, 1]}
    assert folded == padded and {"G.conv2", "G.conv3", "D.conv1", "D.conv4"} <= folded
    assert "G.conv4" not in folded
    t = result["transforms"]["transform_length"]
    assert t["lever_length"] < t["baseline_length"]
    path = write_result("levers", result, tmp_path)
    assert json.loads(path.read_text())["summary"] == json.loads(json.dumps(result["summary"]))
