"""The published CaloChallenge 2022 results for datasets 2 and 3, and a Markdown table of ours beside them.

``hepgan/physics/calochallenge_published.json`` holds, per dataset and submission, the numbers of the
challenge's results files (``final_results/CaloChallenge_results_ds2.hdf`` and ``..._ds3.hdf`` of
CaloChallenge/homepage, behind the tables and figures of arXiv:2410.21611): classifier AUCs (low-level,
high-level, CNN; mean and spread of 10 trainings), FPD and KPD (x 1e3, with errors), parameter counts
and the separation powers per feature and layer. Its ``source`` field says where they come from.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

COLUMNS = (
    ("AUC low", "auc_low", ".4f"),
    ("AUC high", "auc_high", ".4f"),
    ("FPD x1e3", "fpd_x1e3", ".4g"),
    ("KPD x1e3", "kpd_x1e3", ".3g"),
    ("sep E_dep/E_inc", "sep_E_ratio", ".3g"),
    ("sep voxel", "sep_voxel", ".3g"),
    ("sep E_layer", "sep_E_layer", ".3g"),
    ("sep centres", "sep_centres", ".3g"),
    ("sep widths", "sep_widths", ".3g"),
    ("sep sparsity", "sep_sparsity", ".3g"),
)
"""Columns of :func:`comparison_markdown`: header, key of :func:`summary_row`, number format. The
per-layer separation powers enter as their mean over layers; "centres" pools EC_eta, EC_phi, EC_r and
"widths" width_eta, width_phi, width_r."""


@cache
def _load() -> dict[str, Any]:
    text = resources.files("hepgan.physics").joinpath("calochallenge_published.json").read_text()
    return dict(json.loads(text))


def published_source() -> dict[str, Any]:
    """The ``source`` record of the published table (repository, commit, paths, write-up)."""
    return dict(_load()["source"])


def published(dataset: str) -> list[dict[str, Any]]:
    """The published rows of dataset ``"2"`` or ``"3"``: one dict per submission (GEANT4 first) with
    ``id``, ``name``, ``auc_low``, ``auc_low_std``, ``auc_high``, ..., ``fpd_x1e3``, ``fpd_x1e3_err``,
    ``kpd_x1e3``, ``kpd_x1e3_err`` and ``sep`` (per feature: a list over 45 layers, or one value)."""
    data = _load()["datasets"]
    if str(dataset) not in data:
        raise ValueError(f"no published CaloChallenge results for dataset {dataset!r}; have {sorted(data)}")
    return [dict(row) for row in data[str(dataset)]]


def _mean(values: Any) -> float | None:
    arr = np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))], float)
    ok = np.isfinite(arr)
    return float(arr[ok].mean()) if ok.any() else None


def summary_row(sep: dict[str, Any], **numbers: float | None) -> dict[str, float | None]:
    """One table row from separation powers ``sep`` (feature -> value or per-layer list) and the other
    ``numbers`` (``auc_low``, ``auc_high``, ``fpd_x1e3``, ``kpd_x1e3``): the keys of :data:`COLUMNS`."""
    row: dict[str, float | None] = {
        k: numbers.get(k) for k in ("auc_low", "auc_high", "fpd_x1e3", "kpd_x1e3")
    }
    row["sep_E_ratio"] = _mean(sep.get("E_ratio"))
    row["sep_voxel"] = _mean(sep.get("voxel"))
    row["sep_E_layer"] = _mean(sep.get("E_layer"))
    row["sep_centres"] = _mean([sep.get(k) for k in ("EC_eta", "EC_phi", "EC_r")])
    row["sep_widths"] = _mean([sep.get(k) for k in ("width_eta", "width_phi", "width_r")])
    row["sep_sparsity"] = _mean(sep.get("sparsity"))
    return row


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, fmt)


def comparison_markdown(result: dict[str, Any], *, name: str = "this evaluation") -> str:
    """Markdown table of the suite's ``result`` (the dict of
    :func:`hepgan.physics.calochallenge.suite.evaluate`) as a bold first row above the published rows
    of the same dataset, then notes on what is comparable and the source."""
    ds = str(result["dataset"])
    sep = {k: v for k, v in result.get("separation_power", {}).items()}
    ours = summary_row(sep, **{k: result.get(k) for k in ("auc_low", "auc_high", "fpd_x1e3", "kpd_x1e3")})
    lines = [
        f"CaloChallenge dataset {ds}: {name} beside the published submissions",
        "",
        "| submission | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
        f"| **{name}** | " + " | ".join(f"**{_cell(ours[k], f)}**" for _, k, f in COLUMNS) + " |",
    ]
    for row in published(ds):
        cells = summary_row(
            row["sep"], **{k: row.get(k) for k in ("auc_low", "auc_high", "fpd_x1e3", "kpd_x1e3")}
        )
        lines.append(f"| {row['name']} | " + " | ".join(_cell(cells[k], f) for _, k, f in COLUMNS) + " |")
    comparable = result.get("comparable", {})
    settings = result.get("classifier", {}).get("settings", {})
    src = published_source()
    lines += [
        "",
        f"{name}: {result.get('n_generated')} generated and {result.get('n_reference')} reference events; "
        f"classifier settings {settings.get('name', 'not run')}, one training (published: mean of 10). "
        "Comparable with the published protocol: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in comparable.items())
        + ".",
        "Separation powers are means over the 45 layers (centres: EC_eta, EC_phi, EC_r; widths: their "
        "widths). The GEANT4 row compares the reference with other GEANT4 showers.",
        f"Source: {src['repository']} ({', '.join(src['paths'])}, commit {src['commit']}); "
        f"{src['write_up']}.",
    ]
    return "\n".join(lines) + "\n"
