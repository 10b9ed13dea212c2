"""File-system helpers shared by the CLI tests."""

from __future__ import annotations

import os
from pathlib import Path


def unwritable(tmp_path: Path) -> Path:
    """An output folder that cannot be made: under a read-only folder, or under a regular file when the
    tests run as root (root writes into read-only folders)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        return ro / "out"
    (tmp_path / "afile").write_text("")
    return tmp_path / "afile" / "sub"
