"""Checks the command-line tools run on an output folder before they spend minutes computing its content."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_writable_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Raise ``ValueError`` (naming ``option`` and the folder) unless ``path`` is a folder that exists and
    is writable, or can be created: its nearest existing ancestor must be a folder in which a file can be
    created. Creates nothing and leaves nothing behind. Returns ``path`` as a ``Path``.

    The probe creates (and at once removes) an anonymous temporary file rather than asking
    ``os.access``, which says yes to root on a folder without write permission and knows nothing of
    read-only mounts.
    """
    out = Path(path)
    probe = out.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(
            f"{option} {out}: {probe} is a file, not a folder, so the output folder cannot be made there; "
            "give a folder path"
        )
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ValueError(
            f"{option} {out}: cannot write in {probe} ({exc.strerror or exc}); give a writable folder"
        ) from None
    return out
