"""Progress display (hepgan.progress): plain lines in a log, a bar on a terminal, nothing when disabled;
and the long commands (training, simulate, generate, evaluate, convert) reporting through it."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import pytest

from hepgan.progress import Progress, format_duration, track

# "[hepgan] <command> ..." lines of a task with a count: done/total unit (pct%)
COUNT = re.compile(r"^\[hepgan\] (\S+)(?: (\S+))? (\d+)/(\d+) (\w+) \((\d+)%\)")


class FakeClock:
    """Seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _default_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEPGAN_PROGRESS", raising=False)
    monkeypatch.delenv("HEPGAN_PROGRESS_INTERVAL", raising=False)


def _lines(text: str, command: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(f"[hepgan] {command}")]


# ---- the facility --------------------------------------------------------------------------------------


def test_plain_lines_come_every_interval_with_count_rate_and_eta() -> None:
    clock, out = FakeClock(), io.StringIO()
    with track(
        "train", total=100, unit="steps", per_unit={"showers": 16}, stream=out, interval=30, clock=clock
    ) as task:
        for _ in range(20):
            clock.now += 5.0
            task.advance(5, d=0.41, g=1.2)
    lines = out.getvalue().splitlines()
    # one line per 30 s (every 6th update), then the final one; nothing at the start
    assert lines[:3] == [
        "[hepgan] train 30/100 steps (30%) 1 steps/s 16 showers/s elapsed 30s eta 1m10s d=0.41 g=1.2",
        "[hepgan] train 60/100 steps (60%) 1 steps/s 16 showers/s elapsed 1m00s eta 40s d=0.41 g=1.2",
        "[hepgan] train 90/100 steps (90%) 1 steps/s 16 showers/s elapsed 1m30s eta 10s d=0.41 g=1.2",
    ]
    assert lines[3:] == [
        "[hepgan] train done 100/100 steps (100%) 1 steps/s 16 showers/s elapsed 1m40s d=0.41 g=1.2"
    ]


def test_rate_of_a_line_is_the_one_since_the_previous_line() -> None:
    clock, out = FakeClock(), io.StringIO()
    with track("simulate", total=None, unit="showers", stream=out, interval=10, clock=clock) as task:
        clock.now = 10.0
        task.advance(100)  # 10/s
        clock.now = 20.0
        task.advance(300)  # 30/s since the previous line
    assert out.getvalue().splitlines() == [
        "[hepgan] simulate 100 showers 10 showers/s elapsed 10s",
        "[hepgan] simulate 400 showers 30 showers/s elapsed 20s",
        "[hepgan] simulate done 400 showers 20 showers/s elapsed 20s",
    ]


def test_stages_tick_while_they_run_and_a_quick_failure_stays_silent() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress("evaluate", stream=out, interval=30, clock=clock, ticker=False) as progress:
        with pytest.raises(ValueError), progress.stage("read"):
            raise ValueError("bad file")  # failed before its first line: the error says it all
        with progress.stage("fpd"):
            clock.now += 31
            progress.tick()
            clock.now += 10
            progress.tick()  # not due yet
            clock.now += 5
        with pytest.raises(RuntimeError), progress.stage("figures"):
            clock.now += 40
            progress.tick()
            raise RuntimeError
    assert out.getvalue().splitlines() == [
        "[hepgan] evaluate fpd running elapsed 31s",
        "[hepgan] evaluate fpd done elapsed 46s",
        "[hepgan] evaluate figures running elapsed 40s",
        "[hepgan] evaluate figures stopped elapsed 40s",
    ]


def test_a_count_that_goes_back_restarts_the_rate() -> None:
    clock, out = FakeClock(), io.StringIO()
    with track("train", total=10, unit="steps", stream=out, interval=0, clock=clock) as task:
        clock.now = 1.0
        task.update(4)
        clock.now = 2.0
        task.update(2)  # a rollback
        clock.now = 3.0
        task.update(3)
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("[hepgan] train 2/10 steps (20%) elapsed 0.0s")  # no negative rate
    assert lines[2] == "[hepgan] train 3/10 steps (30%) 1 steps/s elapsed 1.0s eta 7.0s"


def test_terminal_gets_the_bar_not_lines() -> None:
    out = FakeTerminal()
    with track("simulate", total=40, unit="showers", stream=out) as task:
        for _ in range(4):
            task.advance(10)
    text = out.getvalue()
    assert "[hepgan]" not in text
    assert "━" in text and "40/40 showers" in text and "showers/s" in text


def test_disabled_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for stream in (io.StringIO(), FakeTerminal()):
        with Progress("train", enabled=False, stream=stream, interval=0) as progress:
            assert not progress.enabled
            with progress.task(total=3, unit="steps") as task:
                task.advance(3)
            with progress.stage("fpd"):
                pass
        assert stream.getvalue() == ""
    monkeypatch.setenv("HEPGAN_PROGRESS", "off")
    out = io.StringIO()
    with track("train", total=3, unit="steps", stream=out, interval=0) as task:
        task.advance(3)
    assert out.getvalue() == ""


def test_environment_chooses_interval_and_display(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HEPGAN_PROGRESS_INTERVAL", "5")
    assert Progress("x", enabled=False).interval == 5.0
    monkeypatch.setenv("HEPGAN_PROGRESS_INTERVAL", "soon")
    with caplog.at_level(logging.WARNING, logger="hepgan.progress"):
        assert Progress("x", enabled=False).interval == 30.0
    assert "HEPGAN_PROGRESS_INTERVAL" in caplog.text
    monkeypatch.setenv("HEPGAN_PROGRESS", "plain")  # lines even on a terminal (a tee'd log)
    out = FakeTerminal()
    with track("convert", total=2, unit="showers", stream=out, interval=0) as task:
        task.advance(2)
    assert out.getvalue().startswith("[hepgan] convert 2/2 showers (100%)")
    assert format_duration(3725) == "1h02m" and format_duration(7.25) == "7.2s"


# ---- the commands --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 2-step debug training with progress on, its stderr captured (not a terminal): the run
    directory and what the loop wrote."""
    from hepgan.train import fit
    from hepgan.train.config import compose

    out = tmp_path_factory.mktemp("progress") / "run"
    # (no per-layer norms or dynamics: fewer programs to compile; the train step's compile dominates)
    cfg = compose(
        [
            "debug=default",
            "logging.progress=true",
            "train.max_steps=2",
            "parallel.devices=1",
            "logging.layer_stats_every=0",
            "logging.dynamics_events=0",
            f"out={out}",
        ]
    )
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setenv("HEPGAN_PROGRESS_INTERVAL", "0")
        mp.delenv("HEPGAN_PROGRESS", raising=False)
        fit(cfg, handle_signals=False)
    return out, err.getvalue()


def test_training_writes_progress_lines_as_it_goes(trained: tuple[Path, str]) -> None:
    lines = _lines(trained[1], "train")
    counts = [(int(m[3]), int(m[4])) for m in map(COUNT.match, lines) if m and m[2] != "done"]
    assert counts == [(1, 2), (2, 2)]  # one per step (interval 0), before the final line
    assert lines[-1].startswith("[hepgan] train done 2/2 steps (100%)")
    assert re.search(r" [\d.]+ steps/s [\d.]+ showers/s elapsed \S+ d=\S+ g=\S+$", lines[-1])


def test_generate_reports_showers(
    trained: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from hepgan.cli.generate import main

    monkeypatch.setenv("HEPGAN_PROGRESS_INTERVAL", "0")
    assert main([str(trained[0]), "--n", "12", "--batch", "8", "--out", str(tmp_path / "gen")]) == 0
    lines = _lines(capsys.readouterr().err, "generate")
    assert any(ln.startswith("[hepgan] generate 8/12 showers (66%)") for ln in lines)
    assert any(re.match(r"\[hepgan\] generate done 12/12 showers \(100%\) \S+ showers/s", ln) for ln in lines)
    assert any(ln.startswith("[hepgan] generate write done 12/12 showers") for ln in lines)


def test_simulate_reports_showers_per_second(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from hepgan.cli.simulate import main

    monkeypatch.setenv("HEPGAN_PROGRESS_INTERVAL", "0")
    assert main(["--n-events", "20", "--events-per-file", "10", "--summary-only"]) == 0
    lines = _lines(capsys.readouterr().err, "simulate")
    assert re.match(r"\[hepgan\] simulate 10/20 showers \(50%\) \S+ showers/s elapsed \S+ eta \S+$", lines[0])
    assert lines[-1].startswith("[hepgan] simulate done 20/20 showers (100%)")


@pytest.fixture(scope="module")
def shower_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from hepgan.data.formats import write_file
    from hepgan.data.simulate import simulate

    d = tmp_path_factory.mktemp("showers")
    return {
        name: write_file(d / f"{name}.h5", simulate(400, energy="uniform:10:500", seed=seed), "fixed25")
        for name, seed in (("gen", 1), ("ref", 2))
    }


def test_evaluate_reports_stage_by_stage(
    shower_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from hepgan.cli.evaluate import main

    monkeypatch.setenv("HEPGAN_PROGRESS_INTERVAL", "0")
    argv = [str(shower_files["gen"]), str(shower_files["ref"]), "--out", str(tmp_path)]
    assert main([*argv, "--metrics", "sf", "--no-report"]) == 0
    captured = capsys.readouterr()
    done = [ln.split()[2] for ln in _lines(captured.err, "evaluate") if ln.split()[3] == "done"]
    assert done == ["read_generated", "read_reference", "observables", "sf", "separation", "metrics_json"]
    assert "[hepgan] evaluate observables done 800/800 showers (100%)" in captured.err
    assert "physics_score" in captured.out and "[hepgan]" not in captured.out


def test_convert_reports_showers_and_files(
    shower_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from hepgan.cli.data import main

    monkeypatch.setenv("HEPGAN_PROGRESS_INTERVAL", "0")
    argv = ["convert", str(shower_files["gen"]), str(tmp_path / "out"), "--format", "angle"]
    assert main([*argv, "--chunk", "150", "--events-per-file", "200"]) == 0
    lines = _lines(capsys.readouterr().err, "convert")
    assert lines[0].startswith("[hepgan] convert 150/400 showers (37%)") and lines[0].endswith("files=1")
    assert lines[-1].startswith("[hepgan] convert done 400/400 showers (100%)")
    assert lines[-1].endswith("files=2")
    assert main([*argv, "--overwrite", "--quiet"]) == 0
    assert "[hepgan]" not in capsys.readouterr().err
