"""Plan index: a sweep task reads only its own entries, and gets the same entries as a whole-plan read."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import write_conf

from hepgan.cli.sweep import main
from hepgan.sweep.plan import (
    INDEX_MAGIC,
    PlanEntry,
    index_plan,
    open_plan_index,
    plan_index_path,
    plan_length,
    read_plan,
    read_plan_entries,
    write_plan,
)
from hepgan.sweep.runner import RunSettings, run_plan_entries

# a hand-written plan with every kind of line the format allows
HAND_WRITTEN = (
    "\ufeff# hepgan-sweep plan v1\r\n"
    "# comment\r\n"
    "\r\n"
    "optim.lr_g=1e-3 'name=x y'  # optuna_study=s optuna_trial=3\r\n"
    "   # indented comment\n"
    "\u3000# comment after an ideographic space\n"
    "\n"
    "\t model=fixed25 +tag=\"état \u00e9t\u00e9\" 'a=b#c'\n"
    '\u00e9t\u00e9=1 x="it\'s"\n'
    "last=1  # k=v"  # no trailing newline
)


def _all_by_index(path: Path) -> list[PlanEntry]:
    n = plan_length(path)
    return read_plan_entries(path, list(range(n)))


def test_written_plan_round_trips_through_its_index(tmp_path: Path) -> None:
    entries = [
        PlanEntry(("a=1", "name='x y'", "+b=[1,2]")),
        PlanEntry(("a=2",), {"optuna_study": "s", "optuna_trial": "7"}),
        PlanEntry(("tag=caf\u00e9 \u2028 form\x0cfeed", "c=#not-meta")),  # no line break for the format
        PlanEntry(("+x=' quoted '", 'y="a\\b"')),
    ]
    p = write_plan(tmp_path / "plan.txt", entries, comment="two lines\nof comment")
    assert plan_index_path(p).is_file()
    assert read_plan(p) == entries
    assert _all_by_index(p) == entries
    assert read_plan_entries(p, [3, 1]) == [entries[3], entries[1]]


def test_hand_written_plan_is_indexed_once_and_matches_read_plan(tmp_path: Path) -> None:
    p = tmp_path / "plan.txt"
    p.write_bytes(HAND_WRITTEN.encode("utf-8"))
    expected = read_plan(p)
    assert [e.overrides for e in expected] == [
        ("optim.lr_g=1e-3", "name=x y"),
        ("model=fixed25", "+tag=état été", "a=b#c"),
        ("été=1", "x=it's"),
        ("last=1",),
    ]
    assert expected[0].meta == {"optuna_study": "s", "optuna_trial": "3"}
    assert expected[3].meta == {"k": "v"}
    logs: list[str] = []
    assert open_plan_index(p, log=logs.append).n_entries == 4
    assert len(logs) == 1 and "has no index" in logs[0] and plan_index_path(p).is_file()
    logs.clear()
    assert open_plan_index(p, log=logs.append).entries([0, 1, 2, 3]) == expected
    assert logs == []  # the index written by the first task serves the next ones silently


def test_read_only_folder_still_serves_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "plan.txt"
    p.write_text("a=1\nb=2\n")

    def refuse(path: object, data: bytes) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("hepgan.sweep.plan.write_bytes", refuse)
    logs: list[str] = []
    assert read_plan_entries(p, [1], log=logs.append) == [PlanEntry(("b=2",))]
    assert not plan_index_path(p).exists()
    assert "could not write" in logs[0] and "hepgan-sweep index" in logs[0]
    with pytest.raises(ValueError, match="cannot be written"):
        index_plan(p)


def test_task_reads_only_its_own_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every other line is unparseable as shell words: a whole-plan read fails, the task's read does not
    lines = ["a=1 'unterminated"] * 50 + ["good=1 'x y'  # trial=50"] + ['b=2 "open'] * 50
    p = write_plan_lines(tmp_path / "plan.txt", lines)
    with pytest.raises(ValueError, match="shell words"):
        read_plan(p)
    monkeypatch.setattr("hepgan.sweep.plan.read_plan", _forbidden)
    monkeypatch.setattr("hepgan.sweep.plan._scan_offsets", _forbidden)  # the index exists: no scan
    assert read_plan_entries(p, [50]) == [PlanEntry(("good=1", "x y"), {"trial": "50"})]
    with pytest.raises(ValueError, match="entry 49"):
        read_plan_entries(p, [49])


def write_plan_lines(path: Path, lines: list[str]) -> Path:
    """A plan of raw lines, indexed the way a task would (one byte scan)."""
    path.write_text("# hepgan-sweep plan v1\n" + "\n".join(lines) + "\n")
    index_plan(path)
    return path


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("the task path must not read or scan the whole plan")


def test_stale_index_is_rebuilt_from_the_plan(tmp_path: Path) -> None:
    p = write_plan(tmp_path / "plan.txt", [PlanEntry((f"a={i}",)) for i in range(5)])
    # same size, new content: an edit keeping the length (a changed digit) is caught by the time
    p.write_text(p.read_text().replace("a=3", "a=9"))
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    logs: list[str] = []
    assert read_plan_entries(p, [3], log=logs.append) == [PlanEntry(("a=9",))]
    assert "changed since it was indexed" in logs[0]
    # entries added by hand: the new length comes from the rebuilt index
    with p.open("a") as f:
        f.write("a=5\na=6\n")
    assert plan_length(p) == 7
    assert read_plan_entries(p, [6]) == [PlanEntry(("a=6",))]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b[:20], "shorter than its header"),
        (lambda b: b[:-3], "entries need"),
        (lambda b: b"NOTMINE!" + b[8:], "not a plan index"),
        (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "format version 99"),
    ],
)
def test_damaged_index_is_a_clear_error(tmp_path: Path, damage: object, match: str) -> None:
    p = write_plan(tmp_path / "plan.txt", [PlanEntry(("a=1",)), PlanEntry(("a=2",))])
    ip = plan_index_path(p)
    assert ip.read_bytes()[:8] == INDEX_MAGIC
    ip.write_bytes(damage(ip.read_bytes()))  # type: ignore[operator]
    with pytest.raises(ValueError, match=match) as err:
        read_plan_entries(p, [0])
    assert str(ip) in str(err.value) and f"hepgan-sweep index {p}" in str(err.value)
    index_plan(p)  # the advertised repair
    assert read_plan_entries(p, [1]) == [PlanEntry(("a=2",))]


def test_offset_not_at_an_entry_line_is_damage(tmp_path: Path) -> None:
    p = write_plan(tmp_path / "plan.txt", [PlanEntry(("a=1",)), PlanEntry(("b=2",))])
    ip = plan_index_path(p)
    raw = bytearray(ip.read_bytes())
    raw[-8:] = struct.pack("<Q", 3)  # entry 1 now points into the header comment
    ip.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"is damaged.*entry 1.*not an entry line"):
        read_plan_entries(p, [1])


def test_out_of_range_and_unwritable_entries(tmp_path: Path) -> None:
    p = write_plan(tmp_path / "plan.txt", [PlanEntry(("a=1",))])
    with pytest.raises(ValueError, match="has 1 entries; index 1 is out of range"):
        read_plan_entries(p, [1])
    with pytest.raises(ValueError, match=r"entry 1 .*one plan line"):
        write_plan(tmp_path / "bad.txt", [PlanEntry(("a=1",)), PlanEntry(("a=x\ny",))])
    with pytest.raises(ValueError, match=r"entry 0 .*at least one override"):
        write_plan(tmp_path / "bad.txt", [PlanEntry((), {"k": "v"})])
    with pytest.raises(ValueError, match="cannot be read"):
        plan_length(tmp_path / "missing.txt")


def test_cli_run_dry_run_and_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "plan.txt"
    p.write_text("# hand written\nx=1\nx=2  # trial=1\nx=3\n")
    assert main(["index", str(p)]) == 0
    assert "3 entries" in capsys.readouterr().out
    assert main(["index", str(p), "--count"]) == 0  # N for the job scripts' --array=0-$((N-1))
    assert capsys.readouterr().out == "3\n"
    assert main(["run", str(p), "0", "--offset", "1", "--per-task", "5", "--dry-run"]) == 0
    out = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert [(r["index"], r["overrides"], r["meta"]) for r in out] == [
        (1, ["x=2"], {"trial": "1"}),
        (2, ["x=3"], {}),
    ]
    assert out[0]["run_dir"] == str(tmp_path / "plan" / "1")
    assert not (tmp_path / "plan").exists()  # a dry run trains nothing
    plan_index_path(p).write_bytes(b"garbage")
    assert main(["run", str(p), "0", "--dry-run"]) == 2
    assert "hepgan-sweep index" in capsys.readouterr().err


def test_run_plan_entries_uses_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = write_conf(tmp_path)
    p = write_plan(tmp_path / "plan.txt", [PlanEntry((f"optim.lr_g={lr}",)) for lr in (0.1, 0.2, 0.3)])
    monkeypatch.setattr("hepgan.sweep.plan.read_plan", _forbidden)
    seen = []

    def fit(cfg: Any) -> dict[str, float]:
        seen.append(cfg.optim.lr_g)
        return {"physics_score": 1.0}

    settings = RunSettings(config_dir=str(conf), train_fn=fit)
    [res] = run_plan_entries(p, [1], settings)
    assert res["status"] == "ok" and seen == [0.2]
    assert res["meta"] == {"plan": str(p.resolve()), "index": 1}
    with pytest.raises(ValueError, match="index 3 is out of range"):
        run_plan_entries(open_plan_index(p), [3], settings)


def test_bench_runs_end_to_end_at_tiny_sizes(tmp_path: Path) -> None:
    from hepgan.bench.common import write_result
    from hepgan.bench.plan import run

    result = run(sizes=(10, 100), baseline_max=100, repeats=1, lookup_repeats=3, workdir=tmp_path)
    path = write_result("plan_startup", result, tmp_path)
    doc = json.loads(path.read_text())
    assert {"machine", "per_n", "index_startup_ratio", "index_lookup_ratio", "interpreter_s"} <= set(doc)
    assert [r["n"] for r in doc["per_n"]] == [10, 100]
    for row in doc["per_n"]:
        assert set(row["startup_s"]) == {"first", "middle", "last"}
        assert row["baseline_startup_s"] > 0 and row["old_over_new"] > 0
        assert row["index_bytes"] == 40 + 8 * row["n"]
    assert not list(tmp_path.glob("hepgan-plan-bench-*"))  # the plans are cleaned up
