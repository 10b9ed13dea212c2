"""Build the paper: regenerate every study's tables and figures from committed results, then the paper.

    make paper                      # = .venv/bin/python paper/build.py
    python paper/build.py --no-regenerate   # only assemble paper.md / paper.html from what is there

Steps:

1. Each study's regenerate command (``STUDIES`` below) runs from the repository root. They read only
   committed result files (``results.json``, ``table.json``, the Optuna journals, the scaling JSON), never
   run folders, so a fresh clone rebuilds the same tables and figures.
2. ``paper/paper.src.md`` is expanded into ``paper/paper.md``:
   - ``<!-- include: PATH -->`` is replaced by the file's text (a table), ``PATH#Heading`` by the part
     under that Markdown heading;
   - ``<!-- figure: PATH | CAPTION | COMMAND -->`` copies the image to ``paper/figures/`` and writes it
     with its caption and the command that made it;
   - ``<!-- value: PATH:KEY.KEY... | FORMAT -->`` is replaced by a number from a JSON file (``FORMAT`` is
     a Python format spec such as ``.2f``), so the text quotes the results, not a copy of them.
3. ``paper/paper.html``: the same Markdown rendered with markdown-it-py (a dependency of rich, so always
   installed), the figures embedded, one self-contained file.

Exit status 1 with the study named if a regenerate command fails or a directive names a missing file or
key.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "paper"
PY = sys.executable
# study -> the command that regenerates its tables and figures from committed results
STUDIES: dict[str, list[str]] = {
    "large_batch": [PY, "experiments/large_batch/study.py", "figures"],
    "scaling": [PY, "experiments/scaling/model.py", "--out", "experiments/scaling"],
    "masterworker": [PY, "experiments/masterworker/study.py", "render", "experiments/masterworker"],
    "hpo": [PY, "experiments/hpo/writeup.py"],
    "reproducibility": [PY, "experiments/reproducibility/run.py", "--render"],
}
DIRECTIVE = re.compile(r"<!--\s*(include|figure|value):\s*(.*?)\s*-->", re.S)


class BuildError(Exception):
    """A study or a directive that cannot be built; the message names it."""


def regenerate(studies: list[str]) -> None:
    """Run each study's regenerate command; raise :class:`BuildError` naming the first that fails."""
    for name in studies:
        cmd = STUDIES[name]
        shown = " ".join(["python", *cmd[1:]])
        print(f"[paper] {name}: {shown}", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"study {name!r}: `{shown}` failed ({proc.returncode}):\n{proc.stderr[-1500:]}")


def _json_value(spec: str) -> str:
    path_key, _, fmt = (s.strip() for s in spec.partition("|"))
    path, _, keys = path_key.partition(":")
    f = ROOT / path
    if not f.is_file():
        raise BuildError(f"value directive: {path} does not exist")
    value: Any = json.loads(f.read_text())
    for k in keys.split("."):
        try:
            value = value[int(k)] if isinstance(value, list) else value[k]
        except (KeyError, IndexError, ValueError):
            raise BuildError(f"value directive: {path} has no key {keys!r} (stopped at {k!r})") from None
    return format(value, fmt) if fmt and value is not None else str(value)


def _include(arg: str) -> str:
    """A file's text, or with ``PATH#Heading`` the body under that Markdown heading (to the next heading
    of the same or a higher level)."""
    path, _, heading = arg.partition("#")
    f = ROOT / path.strip()
    if not f.is_file():
        raise BuildError(f"include directive: {path} does not exist")
    text = f.read_text()
    if not heading:
        return text.strip()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        level = len(line) - len(line.lstrip("#"))
        if level and line[level:].strip() == heading.strip():
            body = []
            for nxt in lines[i + 1 :]:
                lv = len(nxt) - len(nxt.lstrip("#"))
                if lv and lv <= level and nxt[lv : lv + 1] == " ":
                    break
                body.append(nxt)
            return "\n".join(body).strip()
    raise BuildError(f"include directive: {path} has no heading {heading.strip()!r}")


def expand(src: str) -> str:
    """``paper.src.md`` text -> ``paper.md`` text (copies figures into ``paper/figures``)."""
    figures = PAPER / "figures"
    figures.mkdir(exist_ok=True)
    n = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal n
        kind, arg = m.group(1), m.group(2)
        if kind == "include":
            return _include(arg)
        if kind == "value":
            return _json_value(arg)
        parts = [p.strip() for p in arg.split("|")]
        if len(parts) != 3:
            raise BuildError(f"figure directive needs PATH | CAPTION | COMMAND; got {arg!r}")
        path, caption, command = parts
        f = ROOT / path
        if not f.is_file():
            raise BuildError(f"figure directive: {path} does not exist")
        n += 1
        parts = Path(path).parts  # experiments/<study>/.../name.png -> figures/<study>_name.png
        study = parts[1] if len(parts) > 2 and parts[0] == "experiments" else Path(path).parent.name
        target = figures / f"{study}_{f.name}"
        shutil.copyfile(f, target)
        return (
            f"![Figure {n}]({target.relative_to(PAPER).as_posix()})\n\n"
            f"**Figure {n}.** {caption} *Made by:* `{command}` (source: `{path}`)."
        )

    return DIRECTIVE.sub(sub, src)


def to_html(md: str, title: str) -> str:
    """One self-contained HTML page of ``md`` (figures embedded as data URIs)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(md)

    def embed(m: re.Match[str]) -> str:
        f = PAPER / html.unescape(m.group(1))
        data = base64.b64encode(f.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', embed, body)
    style = (
        "body{max-width:60rem;margin:2rem auto;padding:0 1rem;font:16px/1.5 system-ui,sans-serif}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:100%}code{font-size:90%}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-regenerate", action="store_true", help="skip the studies' regenerate commands")
    ap.add_argument(
        "--study", action="append", choices=sorted(STUDIES), help="regenerate only these (repeatable)"
    )
    args = ap.parse_args(argv)
    try:
        if not args.no_regenerate:
            regenerate(args.study or list(STUDIES))
        src = (PAPER / "paper.src.md").read_text()
        md = expand(src)
        header = "<!-- made by paper/build.py from paper/paper.src.md: edit that, then `make paper` -->\n"
        (PAPER / "paper.md").write_text(header + md)
        title = next((line[2:].strip() for line in md.splitlines() if line.startswith("# ")), "hepgan")
        (PAPER / "paper.html").write_text(to_html(md, title))
    except BuildError as exc:
        print(f"paper/build.py: {exc}", file=sys.stderr)
        return 1
    print(f"[paper] {PAPER / 'paper.md'}, {PAPER / 'paper.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
