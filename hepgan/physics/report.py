"""A self-contained validation report: metrics.json, PNG figures and one HTML page embedding them."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib.pyplot as plt

from hepgan.data.types import Showers
from hepgan.fileio import write_json, write_text
from hepgan.physics import plots
from hepgan.physics.extract import ObservableSet, extract

HEADLINE = ("physics_score", "sf_rel_error", "gan3d_metric", "sep_rms", "fpd", "kpd", "auc_hlf", "auc_cells")
"""Metrics shown at the top of the report (with their ``_err`` where there is one)."""


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def write_metrics(
    out_dir: str | Path, metrics: dict[str, float], *, skipped: dict[str, str] | None = None
) -> Path:
    """Write ``metrics`` to ``out_dir/metrics.json`` (non-finite values as null, atomically) and return
    the path. ``skipped``: metric name -> why it was not computed (the ``skipped`` dict that
    :func:`hepgan.physics.metrics.evaluate` filled), stored under the key ``"skipped"`` when not empty."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, object] = dict(_json_safe(metrics))
    if skipped:
        data["skipped"] = dict(skipped)
    return write_json(out / "metrics.json", data, sort_keys=True)


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(
    out_dir: str | Path,
    generated: Showers,
    reference: Showers,
    metrics: dict[str, float],
    *,
    observables: tuple[ObservableSet, ObservableSet] | None = None,
    title: str = "hepgan physics validation",
    skipped: dict[str, str] | None = None,
    links: list[tuple[str, str, str]] | None = None,
) -> Path:
    """Write ``metrics.json``, ``figures/*.png`` and ``report.html`` (figures embedded as base64 PNG, so
    the page is one file to copy around) into ``out_dir``; return the HTML path.

    ``generated`` / ``reference``: the shower sets (``ecal [N, X, Y, Z] GeV``, ``energy [N] GeV``);
    ``metrics``: what :func:`hepgan.physics.metrics.evaluate` returned; ``observables``: the two sets'
    :class:`ObservableSet` if already computed (saves recomputing them); ``skipped``: the metrics that
    could not be computed and why (filled by ``evaluate(..., skipped=...)``), listed in ``metrics.json``
    and on the page; ``links``: ``(title, href relative to the page, what it shows)`` of pages to list
    under "Explain" (the run's ``hepgan-explain`` pages). ``metrics.json`` is written first, so a failure
    in the figures does not lose it.
    """
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out, metrics, skipped=skipped)
    g, r = observables if observables is not None else (extract(generated), extract(reference))
    sections = []
    for name, fig in plots.all_figures(g, r).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        png = buf.getvalue()
        (fig_dir / f"{name}.png").write_bytes(png)
        b64 = base64.b64encode(png).decode("ascii")
        sections.append(
            f'<h3>{html.escape(name.replace("_", " "))}</h3><img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{b64}">'
        )
    head_rows = []
    for k in HEADLINE:
        if k in metrics:
            err = metrics.get(f"{k}_err")
            val = _fmt(metrics[k]) + (f" &plusmn; {_fmt(err)}" if err is not None else "")
            head_rows.append(f"<tr><th>{html.escape(k)}</th><td>{val}</td></tr>")
    skipped_part = ""
    if skipped:
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in sorted(skipped.items())
        )
        skipped_part = f"<h2>Skipped metrics</h2><p>Not computed for these sets:</p><ul>{items}</ul>"
    explain_part = ""
    if links:
        items = "".join(
            f'<li><a href="{html.escape(href)}">{html.escape(t)}</a>: {html.escape(what)}</li>'
            for t, href, what in links
        )
        explain_part = f"<h2>Explain</h2><ul>{items}</ul>"
    all_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in sorted(metrics.items())
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto}} img{{max-width:100%}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>generated: {len(generated)} events, reference: {len(reference)} events, grid {generated.grid}.
Lower is better for every distance; classifier AUC 0.5 means indistinguishable.</p>
<h2>Main numbers</h2><table>{"".join(head_rows)}</table>
{skipped_part}
{explain_part}
<h2>Figures</h2>{"".join(sections)}
<h2>All metrics</h2><table>{all_rows}</table>
</body></html>
"""
    return write_text(out / "report.html", page)
