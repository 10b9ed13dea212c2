"""Fetch the public 3DGAN data sets: manifest, resumable download, checksum verification.

The manifest (``public_datasets.json``, shipped with the package) names each data set, where it comes
from, and its files with sizes and checksums where they are known. Where they are not, the file list
is read at fetch time from the repository's listing (the Zenodo records API, or ``files.json`` on a
mirror), and each download is verified against the checksum that listing publishes.

Downloads go to ``NAME.part`` and resume with an HTTP ``Range`` request when run again; a file
appears under its real name only once its size and checksum agree. The destination folder then holds a
``files.json`` listing, so it can itself be served as a mirror (``--base-url`` or
``HEPGAN_DATA_BASE_URL``). Only the standard library is used (``urllib``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hepgan.fileio import write_json

BASE_URL_ENV = "HEPGAN_DATA_BASE_URL"
USER_AGENT = "hepgan-data-fetch (python urllib)"
_BLOCK = 1 << 20


class FetchError(RuntimeError):
    """A download that cannot complete (offline, HTTP error, checksum mismatch, unknown data set)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set. ``checksum`` is ``"md5:<hex>"`` or ``"sha256:<hex>"``, or ``None`` when
    not known; ``size`` is in bytes or ``None``."""

    name: str
    size: int | None = None
    checksum: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A manifest entry; see ``public_datasets.json`` for the meaning of each field."""

    name: str
    description: str
    source: list[str]
    base_url: str | None = None
    download_query: str = ""
    listing_url: str | None = None
    files: list[RemoteFile] | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def load_manifest(path: str | os.PathLike[str] | None = None) -> dict[str, Dataset]:
    """Data sets by name from ``path`` or the manifest shipped with the package."""
    if path is None:
        text = resources.files("hepgan.data").joinpath("public_datasets.json").read_text()
    else:
        text = Path(path).read_text()
    raw = json.loads(text)
    out = {}
    for name, d in raw["datasets"].items():
        files = d.get("files")
        known = {"description", "source", "base_url", "download_query", "listing_url", "files", "notes"}
        out[name] = Dataset(
            name=name,
            description=d.get("description", ""),
            source=list(d.get("source", [])),
            base_url=d.get("base_url"),
            download_query=d.get("download_query", ""),
            listing_url=d.get("listing_url"),
            files=None if files is None else [RemoteFile(**f) for f in files],
            notes=d.get("notes", ""),
            extra={k: v for k, v in d.items() if k not in known},
        )
    return out


# ---------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _open(url: str, *, timeout: float, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except OSError as exc:  # URLError, refused connections and timeouts are all OSError
        reason = getattr(exc, "reason", exc)
        raise FetchError(
            f"cannot reach {_host(url)} ({reason}). Are you offline? On a cluster without internet, "
            f"fetch on a login node, or point --base-url (or {BASE_URL_ENV}) at a mirror."
        ) from None


def _get_json(url: str, *, timeout: float) -> Any:
    try:
        with _open(url, timeout=timeout, headers={"Accept": "application/json"}) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"listing {url} answered HTTP {exc.code} {exc.reason}") from None
    except (ValueError, UnicodeDecodeError):
        raise FetchError(
            f"listing {url} is not JSON; expected a Zenodo record or a files.json list"
        ) from None


def parse_listing(obj: Any) -> list[RemoteFile]:
    """Files from a Zenodo record JSON (``{"files": [{"key", "size", "checksum"}]}``) or our
    ``files.json`` (a list of ``{"name", "size", "checksum"}``)."""
    items = obj.get("files") if isinstance(obj, dict) else obj
    if isinstance(items, dict) and "entries" in items:  # the Zenodo /files endpoint
        items = items["entries"]
    if not isinstance(items, list):
        raise FetchError("listing holds no file list; expected Zenodo record JSON or files.json")
    out = []
    for it in items:
        name = it.get("name") or it.get("key") or it.get("filename")
        if not name:
            raise FetchError(f"listing entry without a file name: {it}")
        size = it.get("size", it.get("filesize"))
        out.append(RemoteFile(str(name), None if size is None else int(size), it.get("checksum")))
    return out


def resolve_files(ds: Dataset, *, base_url: str | None = None, timeout: float = 30.0) -> list[RemoteFile]:
    """The files of ``ds``: from the manifest when listed, else from the mirror's ``files.json`` (when
    ``base_url`` is given) or the data set's listing URL."""
    if ds.files:
        return list(ds.files)
    if base_url:
        return parse_listing(_get_json(base_url.rstrip("/") + "/files.json", timeout=timeout))
    if ds.listing_url:
        return parse_listing(_get_json(ds.listing_url, timeout=timeout))
    raise FetchError(
        f"data set {ds.name!r} has no direct download ({ds.notes or 'no file list'}); "
        f"mirror it and pass --base-url (the mirror must serve files.json)"
    )


# ---------------------------------------------------------------------------------------------------
# Checksums and the resumable download
# ---------------------------------------------------------------------------------------------------


def file_checksum(path: str | os.PathLike[str], algo: str = "sha256") -> str:
    """``"<algo>:<hex digest>"`` of a file, read in 1 MiB blocks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return f"{algo}:{h.hexdigest()}"


def verify_checksum(path: str | os.PathLike[str], checksum: str) -> None:
    """Raise ``FetchError`` unless ``path`` has ``checksum`` (``"md5:<hex>"`` or ``"sha256:<hex>"``)."""
    algo, _, want = checksum.partition(":")
    if algo not in ("md5", "sha256") or not want:
        raise FetchError(f"checksum {checksum!r} is not 'md5:<hex>' or 'sha256:<hex>'")
    got = file_checksum(path, algo).partition(":")[2]
    if got.lower() != want.lower():
        raise FetchError(f"checksum mismatch for {path}: expected {algo} {want}, got {got}")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    checksum: str | None = None,
    timeout: float = 30.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a previous partial download.

    ``size`` (bytes) and ``checksum`` are verified when given; a mismatching ``.part`` is deleted (a
    resume would keep the corruption). ``progress(done_bytes, total_bytes)`` is called per block.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and (size is None or dest.stat().st_size == size):
        if checksum is None:
            return dest
        try:
            verify_checksum(dest, checksum)
            return dest
        except FetchError:
            dest.unlink()  # a stale or damaged copy: fetch it again
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is None or offset < size:
        _transfer(url, part, offset, size, timeout, progress)
    got = part.stat().st_size
    if size is not None and got != size:
        raise FetchError(f"{dest.name}: got {got} of {size} bytes; run the fetch again to resume")
    if checksum is not None:
        try:
            verify_checksum(part, checksum)
        except FetchError as exc:
            part.unlink()
            raise FetchError(f"{exc}; the partial download was removed, run the fetch again") from None
    os.replace(part, dest)
    return dest


def _transfer(
    url: str,
    part: Path,
    offset: int,
    size: int | None,
    timeout: float,
    progress: Callable[[int, int | None], None] | None,
) -> None:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = _open(url, timeout=timeout, headers=headers)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return  # nothing left to send: the .part is already whole
        raise FetchError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    with resp:
        if offset and resp.status != 206:
            offset = 0  # the server ignored the range: start over
        elif offset:
            first = resp.headers.get("Content-Range", "").partition(" ")[2].partition("-")[0]
            if first and int(first) != offset:
                raise FetchError(f"{url}: asked to resume at byte {offset}, server sent {first}")
        total = size
        if total is None and resp.headers.get("Content-Length"):
            total = offset + int(resp.headers["Content-Length"])
        done = offset
        with open(part, "ab" if offset else "wb") as out:
            try:
                while block := resp.read(_BLOCK):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
            except (OSError, http.client.HTTPException) as exc:
                out.flush()
                raise FetchError(
                    f"download of {part.name.removesuffix('.part')} stopped at {done} bytes ({exc}); "
                    "run the fetch again to resume"
                ) from None
    if total is not None and done < total:
        raise FetchError(
            f"download of {part.name.removesuffix('.part')} stopped at {done} of {total} bytes; "
            "run the fetch again to resume"
        )


# ---------------------------------------------------------------------------------------------------
# The whole data set
# ---------------------------------------------------------------------------------------------------


def _progress_printer(name: str) -> Callable[[int, int | None], None]:
    def show(done: int, total: int | None) -> None:
        if total:
            print(
                f"\r  {name}: {done / 1e6:9.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr, flush=True
            )
        else:
            print(f"\r  {name}: {done / 1e6:9.1f} MB", end="", file=sys.stderr, flush=True)

    return show


def fetch(
    name: str,
    dest: str | os.PathLike[str] = "data",
    *,
    base_url: str | None = None,
    manifest: str | os.PathLike[str] | dict[str, Dataset] | None = None,
    timeout: float = 30.0,
    extract: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Download data set ``name`` into ``dest/name``; returns the local files (extracted ones too).

    ``base_url`` (else ``$HEPGAN_DATA_BASE_URL``) replaces the data set's own URL: a mirror serving the
    same file names and a ``files.json``. Files already present and verified are not downloaded again.
    """
    sets = manifest if isinstance(manifest, dict) else load_manifest(manifest)
    if name not in sets:
        raise FetchError(f"unknown data set {name!r}; known: {', '.join(sorted(sets)) or 'none'}")
    ds = sets[name]
    mirror = base_url or os.environ.get(BASE_URL_ENV) or None
    files = resolve_files(ds, base_url=mirror, timeout=timeout)
    root = (mirror or ds.base_url or "").rstrip("/")
    if not root:
        raise FetchError(f"data set {name!r} has no download URL; pass --base-url pointing at a mirror")
    query = "" if mirror else ds.download_query
    out_dir = Path(dest) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rf in files:
        url = f"{root}/{urllib.parse.quote(rf.name)}{query}"
        show = _progress_printer(rf.name) if progress else None
        paths.append(
            download(
                url, out_dir / rf.name, size=rf.size, checksum=rf.checksum, timeout=timeout, progress=show
            )
        )
        if progress:
            print(file=sys.stderr)
    # Record what was verified, so that this folder can serve as a mirror.
    listing = [{"name": f.name, "size": f.size, "checksum": f.checksum} for f in files]
    write_json(out_dir / "files.json", listing, indent=1)
    if extract:
        for p in list(paths):
            paths.extend(extract_archive(p, out_dir))
    return paths


def extract_archive(path: Path, out_dir: Path) -> list[Path]:
    """Unpack a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` into ``out_dir``; other files are left alone.

    Tar members go through the ``data`` filter (no absolute paths, links out of the folder or devices).
    """
    name = path.name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        with tarfile.open(path) as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
            tf.extractall(out_dir, filter="data")
        return [out_dir / m.name for m in members]
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            for n in names:
                target = (out_dir / n).resolve()
                if not target.is_relative_to(out_dir.resolve()):
                    raise FetchError(f"{path}: archive member {n!r} would land outside {out_dir}")
            zf.extractall(out_dir)
        return [out_dir / n for n in names]
    return []
