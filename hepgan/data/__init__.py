"""hepgan.data: showers (``Showers``), their sources and the training input pipeline.

``DataConfig``, ``open_source``, ``Pipeline`` and ``Preprocess`` are re-exported here; they load on first
use so that ``import hepgan.data`` (and the data CLIs) stay light (the pipeline imports JAX).

Modules: ``formats`` (the HDF5 file formats, one module each, and their readers and writers),
``source`` (the training sources), ``config`` (``DataConfig``), ``hashing`` (file sha256 for
manifests), ``cache`` (on-disk simulated sets), ``simulate``, ``geometry``, ``pipeline``, ``fetch``,
``types`` (``Showers``); see ``docs/data.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DataConfig": "hepgan.data.config",
    "ShowerSource": "hepgan.data.source",
    "Sources": "hepgan.data.source",
    "open_source": "hepgan.data.source",
    "Pipeline": "hepgan.data.pipeline",
    "Preprocess": "hepgan.data.pipeline",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hepgan.data' has no attribute {name!r}")
