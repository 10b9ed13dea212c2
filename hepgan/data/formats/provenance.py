"""Provenance of shower files: small file-level attributes saying what wrote a file, how and when.

Every file the writers of :mod:`hepgan.data.formats.write` produce carries ``hepgan_version``,
``hepgan_created_utc`` (UTC, ISO 8601), ``hepgan_n_events`` and ``hepgan_format``; the command-line
writers add what they know through :func:`provenance_attrs`:

``hepgan_tool``
    the program (``hepgan-simulate``, ``hepgan-generate``, ``hepgan-data convert``);
``hepgan_command``
    its command line;
``hepgan_seed``
    the random seed (int64), when the showers have one;
``hepgan_geometry``
    the geometry preset name (``fixed25``, ``angle51``, ``ds2``, ...), when known;
``hepgan_settings``
    a JSON object of the settings the showers depend on (the simulator's ``SimulatorConfig``, the energy
    and angle specs, the first event; the input files of a conversion).

``hepgan-generate`` also writes ``hepgan_provenance`` (the run, checkpoint step and config fingerprint:
:mod:`hepgan.explain.regenerate`). Values are strings, numbers or one JSON string each, a few kB at
most; only root attributes are added, no dataset is renamed, so a CaloChallenge file still passes the
challenge's own checks. :func:`file_provenance` reads them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hepgan.data.formats.base import ShowerFileError

PREFIX = "hepgan_"
"""Every provenance attribute's name starts with this."""

# Attributes holding one JSON object each, decoded by file_provenance.
_JSON_ATTRS = frozenset({"hepgan_settings", "hepgan_provenance"})
# Large arrays that belong to regeneration, not to a summary (hepgan.explain.regenerate).
_SKIP_PREFIX = "hepgan_sampling_bn."


def provenance_attrs(
    *,
    tool: str,
    command: str | None = None,
    seed: int | None = None,
    geometry: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The file attributes of a writing program: ``hepgan_tool``, and, when given, ``hepgan_command``,
    ``hepgan_seed`` (int64), ``hepgan_geometry`` and ``hepgan_settings`` (``settings`` as one JSON
    string; values that JSON cannot hold are written as their ``str``). Pass the result as ``attrs=``
    to :func:`~hepgan.data.formats.write_files` or :func:`~hepgan.data.formats.write_folder`."""
    attrs: dict[str, Any] = {"hepgan_tool": str(tool)}
    if command is not None:
        attrs["hepgan_command"] = str(command)
    if seed is not None:
        attrs["hepgan_seed"] = np.int64(seed)
    if geometry is not None:
        attrs["hepgan_geometry"] = str(geometry)
    if settings is not None:
        attrs["hepgan_settings"] = json.dumps(dict(settings), sort_keys=True, default=str)
    return attrs


def _plain(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (str, int, float, bool or list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value[()])
    if isinstance(value, np.generic):
        return value.item()
    return value


def file_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance attributes of the shower file at ``path``, names without the ``hepgan_`` prefix:
    ``{"version": "0.1.0", "created_utc": "...", "tool": "hepgan-simulate", "seed": 1, "format":
    "fixed25", "n_events": 3000, "settings": {...}, ...}`` (``settings`` and ``provenance`` decoded from
    JSON). ``{}`` for a file without them (the public data sets, files written elsewhere or before
    hepgan recorded provenance). Only attributes are read, no data. Raises ``ShowerFileError`` naming
    the file when it is missing or not HDF5, or when a JSON attribute is damaged."""
    p = Path(path)
    if not p.is_file():
        raise ShowerFileError(p, "no such file")
    if not h5py.is_hdf5(p):
        raise ShowerFileError(p, "not an HDF5 file (no HDF5 signature); expected an HDF5 shower file")
    with h5py.File(p, "r") as f:
        raw = {k: f.attrs[k] for k in f.attrs if k.startswith(PREFIX) and not k.startswith(_SKIP_PREFIX)}
    if "hepgan_version" not in raw and "hepgan_provenance" not in raw:
        return {}
    out: dict[str, Any] = {}
    for key in sorted(raw):
        value = _plain(raw[key])
        if key in _JSON_ATTRS:
            try:
                value = json.loads(value)
            except (TypeError, ValueError) as exc:
                raise ShowerFileError(p, f"attribute {key!r} is not valid JSON ({exc})") from None
        out[key[len(PREFIX) :]] = value
    return out
