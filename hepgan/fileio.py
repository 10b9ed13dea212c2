"""Atomic file writes: a kill, a crash or a full disk never leaves half a file under the final name.

Every JSON file hepgan writes (``result.json``, ``manifest.json``, ``metrics.json``, benchmark results)
goes through :func:`write_json`: the text is written to a temporary file in the same folder, flushed
and fsynced, then renamed over the target (``os.replace`` is atomic on POSIX file systems). When the
write fails (``ENOSPC``, ``EACCES``) the temporary file is removed and the previous file, if any, is left
as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _default(obj: Any) -> Any:
    """JSON fallback: numbers (NumPy/JAX scalars) as floats, anything else as its string."""
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    The parent folder must exist. Raises ``OSError`` (the previous content of ``path`` is kept).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode an ordinary open() would (0666 - umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`write_bytes`."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`write_text`); returns the path.

    Non-JSON scalars (NumPy, JAX) are written as floats, other objects as strings, unless ``default=`` is
    given. Further keyword arguments go to :func:`json.dumps`.
    """
    kwargs.setdefault("default", _default)
    return write_text(path, json.dumps(data, indent=indent, **kwargs) + "\n")
