"""The explain views' pages: self-contained HTML (figures embedded as base64 PNG), one file to copy."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hepgan.fileio import write_text

STYLE = (
    "body{font-family:sans-serif;max-width:1400px;margin:auto;padding:0 1em} img{max-width:100%}"
    " table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    " .warn{background:#fff3cd;border-left:4px solid #e0a800;padding:4px 8px;margin:4px 0}"
    " .ok{background:#e8f5e9;border-left:4px solid #43a047;padding:4px 8px;margin:4px 0}"
)


def save_figure(fig: Any, path: str | Path, *, dpi: int = 90) -> str:
    """Save the matplotlib ``fig`` as PNG at ``path`` (parents created), close it, and return an
    ``<img>`` tag with the PNG embedded (base64), for :func:`write_page`."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    png = buf.getvalue()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(png)
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{b64}">'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 4) -> str:
    """An HTML table; floats with ``digits`` significant digits, everything escaped."""

    def cell(v: Any) -> str:
        return html.escape(f"{v:.{digits}g}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path: str | Path, title: str, body: str) -> Path:
    """Write one self-contained HTML page (``body``: HTML, already escaped where it holds text)."""
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    return write_text(Path(path), page)


PAGES = (
    ("dynamics.html", "Training dynamics", "D(real)/D(fake) per bin, per-layer norms, collapse indicators"),
    ("dissect.html", "Generator dissection", "which channels follow which observable; ablations"),
    ("traverse.html", "Traversals", "energy and angle sweeps, latent interpolations and directions"),
    ("explorer.html", "Explorer", "sliders over precomputed showers (offline)"),
)
"""The explain pages, as ``index.html`` and the validation report list them."""


def write_index(out: Path, run_dir: Path) -> Path:
    """``out/index.html``: links to the explain pages present in ``out`` (and the command for the
    missing ones)."""
    items = []
    for page, title, what in PAGES:
        if (out / page).exists():
            items.append(f'<li><a href="{page}">{html.escape(title)}</a>: {html.escape(what)}</li>')
        else:
            items.append(
                f"<li>{html.escape(title)}: not made yet (<code>hepgan-explain all {run_dir}</code>)</li>"
            )
    report = run_dir / "report" / "report.html"
    link = ""
    if report.exists():
        rel = Path("..") / "report" / "report.html" if out == run_dir / "explain" else report.resolve()
        link = f'<p>The run\'s validation report: <a href="{html.escape(str(rel))}">report.html</a></p>'
    body = f"<p>Run: <code>{html.escape(str(run_dir))}</code></p>{link}<ul>{''.join(items)}</ul>"
    return write_page(out / "index.html", "hepgan explain", body)
