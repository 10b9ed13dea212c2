"""paper/build.py: the directives that assemble the paper from the studies' committed results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def build(tmp_path, monkeypatch):
    """The build module with its repository root and paper folder moved to ``tmp_path``."""
    spec = importlib.util.spec_from_file_location("paper_build", ROOT / "paper" / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_build"] = mod
    spec.loader.exec_module(mod)
    (tmp_path / "paper").mkdir()
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "PAPER", tmp_path / "paper")
    yield mod
    sys.modules.pop("paper_build", None)


def test_include_whole_file_and_one_section(build, tmp_path):
    (tmp_path / "t.md").write_text(
        "# Title\n\nintro\n\n## A\n\n| a |\n|---|\n| 1 |\n\n### A.1\n\nsub\n\n## B\n\nbee\n"
    )
    assert build.expand("<!-- include: t.md -->").startswith("# Title")
    part = build.expand("x <!-- include: t.md#A --> y")
    assert "| 1 |" in part and "sub" in part  # the subsection belongs to A
    assert "bee" not in part and "intro" not in part
    assert build.expand("<!-- include: t.md#B -->") == "bee"


def test_value_directive_formats_a_number_from_json(build, tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"summary": {"cells": [{"score": 0.41623}]}}))
    assert build.expand("score <!-- value: r.json:summary.cells.0.score | .2f -->") == "score 0.42"


def test_figure_directive_copies_the_image_and_writes_caption_and_command(build, tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "fig.png").write_bytes(b"\x89PNG fake")
    md = build.expand("<!-- figure: study/fig.png | The caption. | python make_fig.py -->")
    assert "![Figure 1](figures/study_fig.png)" in md
    assert "The caption." in md and "`python make_fig.py`" in md
    assert (tmp_path / "paper" / "figures" / "study_fig.png").read_bytes() == b"\x89PNG fake"


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("<!-- include: missing.md -->", "missing.md does not exist"),
        ("<!-- include: t.md#Nope -->", "no heading 'Nope'"),
        ("<!-- value: r.json:a.b | .2f -->", "has no key 'a.b'"),
        ("<!-- figure: only-a-path.png -->", "needs PATH | CAPTION | COMMAND"),
    ],
)
def test_bad_directives_name_the_file_or_key(build, tmp_path, directive, message):
    (tmp_path / "t.md").write_text("## A\n\ntext\n")
    (tmp_path / "r.json").write_text(json.dumps({"a": {"c": 1}}))
    with pytest.raises(build.BuildError, match=message.replace("|", r"\|")):
        build.expand(directive)


def test_html_embeds_figures_and_renders_tables(build, tmp_path):
    figs = tmp_path / "paper" / "figures"
    figs.mkdir()
    (figs / "a.png").write_bytes(b"PNGDATA")
    page = build.to_html("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![f](figures/a.png)\n", "T")
    assert "<table>" in page and "<td>2</td>" in page
    assert 'src="data:image/png;base64,UE5HREFUQQ=="' in page and "figures/a.png" not in page


def test_failed_regenerate_command_names_the_study(build, monkeypatch, capsys):
    monkeypatch.setattr(build, "STUDIES", {"broken": [sys.executable, "-c", "import sys; sys.exit(3)"]})
    with pytest.raises(build.BuildError, match="study 'broken'"):
        build.regenerate(["broken"])
