"""The sha256 of data files for run manifests, hashed once per machine (:func:`file_sha256`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hepgan.fileio import write_json

_SHA_MEMO: dict[str, str] = {}  # file_sha256 results of this process, by (path, size, mtime)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, cached (used by :meth:`hepgan.data.source.FileSource.describe`).

    The cache key is (absolute path, size, mtime); hits come from memory, then from
    ``$HEPGAN_CACHE_DIR/sha256.json`` (default ``~/.cache/hepgan``), so big data sets are hashed once per
    machine, not once per run. A file that cannot be written to leaves the on-disk cache unused.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    cache_file = Path(os.environ.get("HEPGAN_CACHE_DIR", Path.home() / ".cache" / "hepgan")) / "sha256.json"
    try:
        disk = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        disk = {}
    if isinstance(disk, dict) and isinstance(disk.get(key), str):
        _SHA_MEMO[key] = disk[key]
        return disk[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    _SHA_MEMO[key] = digest
    try:
        disk = disk if isinstance(disk, dict) else {}
        disk[key] = digest
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, disk, indent=None)
    except OSError:
        pass
    return digest
