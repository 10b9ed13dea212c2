"""hepgan-evaluate end to end on small files, and the errors it turns into messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fs_helpers import unwritable

from hepgan.cli.evaluate import main
from hepgan.data.formats import write_file
from hepgan.data.simulate import SimulatorConfig, simulate


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval")
    out = {}
    for name, seed, n in (("gen", 1, 400), ("ref", 2, 400)):
        out[name] = write_file(d / f"{name}.h5", simulate(n, energy="uniform:10:500", seed=seed), "fixed25")
    wide = simulate(50, energy="uniform:10:500", config=SimulatorConfig(geometry="angle51"), seed=3)
    out["angle"] = write_file(d / "angle.h5", wide, "angle")
    return out


def test_fast_evaluation_writes_metrics_figures_and_report(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main([str(files["gen"]), str(files["ref"]), "--out", str(tmp_path), "--metrics", "fast"])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"physics_score", "sf_rel_error", "gan3d_metric"} <= set(metrics)
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8
    assert (tmp_path / "figures" / "profile_z.png").stat().st_size > 1000
    assert "physics_score" in capsys.readouterr().out


def test_mismatched_grids_exit_nonzero_with_message(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main([str(files["angle"]), str(files["ref"]), "--out", str(tmp_path), "--metrics", "fast"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "grid (51, 51, 25)" in err and "(25, 25, 25)" in err and "Traceback" not in err


def test_too_few_events_skips_the_metric_with_a_note(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [str(files["gen"]), str(files["ref"]), "--out", str(tmp_path), "--metrics", "fpd", "--no-report"]
    )
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["skipped"] == {"fpd": "needs >= 500 events in each set; got 400"}
    assert "fpd" not in metrics and metrics["physics_score"] >= 0
    assert "skipped fpd: needs >= 500 events in each set; got 400" in capsys.readouterr().out


def test_missing_file_and_checkpoint_usage_errors(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "nope.h5"), str(files["ref"]), "--out", str(tmp_path)]) == 1
    assert "nope.h5" in capsys.readouterr().err
    # --checkpoint takes the run directory instead of two shower sets
    assert main(["--checkpoint", "ckpt", str(files["ref"])]) == 2
    assert "give neither" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "no_run"), "--out", str(tmp_path / "ev")]) == 1
    assert "no_run" in capsys.readouterr().err


def test_unwritable_out_fails_before_any_work(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = unwritable(tmp_path)
    import hepgan.physics.extract

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluated although --out cannot be written")

    monkeypatch.setattr(hepgan.physics.extract, "extract", no_work)
    assert main([str(files["gen"]), str(files["ref"]), "--out", str(out), "--metrics", "fast"]) == 1
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # --checkpoint: the folder is checked before the run is even looked for
    assert main(["--checkpoint", str(tmp_path / "no_run"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "no_run" not in err


def test_checkpoint_restore_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hepgan.train.api

    def mismatch(*args: object, **kwargs: object) -> None:
        raise ValueError("model mismatch: checkpoint fixed25/paper, config fixed25/small")

    monkeypatch.setattr(hepgan.train.api, "evaluate_checkpoint", mismatch)
    assert main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err
    assert err == "hepgan-evaluate: model mismatch: checkpoint fixed25/paper, config fixed25/small\n"
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("convention", ["hepgan", "jetnet"])
def test_fpd_convention_option_reaches_the_metrics(
    files: dict[str, Path], tmp_path: Path, convention: str
) -> None:
    args = [str(files["gen"]), str(files["ref"]), "--out", str(tmp_path), "--metrics", "kpd", "--no-report"]
    rc = main([*args, "--fpd-convention", convention])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics[f"kpd_convention/{convention}"] == 1.0
    assert not any(k.startswith("kpd_convention/") and k != f"kpd_convention/{convention}" for k in metrics)
