"""Fetching public data sets, against a local HTTP server on 127.0.0.1 (no test touches the network)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hepgan.cli.data import main as data_main
from hepgan.data import fetch as FE


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}  # name -> bytes sent before dropping the connection, once
        self.honour_range = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        name = urlsplit(self.path).path.lstrip("/")
        rng = self.headers.get("Range")
        self.server.log.append((name, rng))
        if name not in self.server.files:
            self.send_error(404)
            return
        data = self.server.files[name]
        start = 0
        if rng and self.server.honour_range:
            start = int(rng.removeprefix("bytes=").partition("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut.pop(name, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join()


def _md5(b: bytes) -> str:
    return "md5:" + hashlib.md5(b).hexdigest()


def _sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _manifest(base_url: str | None, files: list[dict] | None, listing_url: str | None = None) -> dict:
    raw = {
        "datasets": {
            "demo": {
                "description": "test data",
                "source": ["local test server"],
                "base_url": base_url,
                "listing_url": listing_url,
                "files": files,
            }
        }
    }
    return raw


def _write_manifest(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(raw))
    return p


PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB block


def test_fetch_downloads_and_verifies(tmp_path: Path, server: _Server) -> None:
    server.files = {"a.h5": PAYLOAD, "b.txt": b"hello"}
    files = [
        {"name": "a.h5", "size": len(PAYLOAD), "checksum": _md5(PAYLOAD)},
        {"name": "b.txt", "size": 5, "checksum": _sha256(b"hello")},
    ]
    m = _write_manifest(tmp_path, _manifest(server.url, files))
    paths = FE.fetch("demo", tmp_path / "dest", manifest=m)
    assert [p.read_bytes() for p in paths] == [PAYLOAD, b"hello"]
    assert json.loads((tmp_path / "dest" / "demo" / "files.json").read_text())[0]["checksum"] == _md5(PAYLOAD)
    # A second fetch finds everything verified on disk and asks the server for nothing.
    n = len(server.log)
    FE.fetch("demo", tmp_path / "dest", manifest=m)
    assert len(server.log) == n


def test_interrupted_download_resumes_with_range(tmp_path: Path, server: _Server) -> None:
    server.files = {"a.h5": PAYLOAD}
    server.cut = {"a.h5": 300_000}
    m = _write_manifest(
        tmp_path, _manifest(server.url, [{"name": "a.h5", "size": len(PAYLOAD), "checksum": _md5(PAYLOAD)}])
    )
    with pytest.raises(FE.FetchError, match=r"a\.h5 stopped at 300000 .*run the fetch again to resume"):
        FE.fetch("demo", tmp_path, manifest=m)
    part = tmp_path / "demo" / "a.h5.part"
    assert part.stat().st_size == 300_000 and not (tmp_path / "demo" / "a.h5").exists()
    (path,) = FE.fetch("demo", tmp_path, manifest=m)
    assert server.log[-1] == ("a.h5", "bytes=300000-")
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, server: _Server) -> None:
    server.files = {"a.h5": PAYLOAD}
    server.honour_range = False
    dest = tmp_path / "a.h5"
    (tmp_path / "a.h5.part").write_bytes(PAYLOAD[:1000])
    FE.download(f"{server.url}/a.h5", dest, size=len(PAYLOAD), checksum=_md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_an_error_and_leaves_no_file(tmp_path: Path, server: _Server) -> None:
    server.files = {"a.h5": PAYLOAD}
    wrong = _sha256(b"something else")
    m = _write_manifest(tmp_path, _manifest(server.url, [{"name": "a.h5", "size": None, "checksum": wrong}]))
    with pytest.raises(FE.FetchError, match=r"checksum mismatch for .*a\.h5\.part: expected sha256 "):
        FE.fetch("demo", tmp_path, manifest=m)
    assert not list((tmp_path / "demo").glob("a.h5*"))


def test_file_list_from_a_zenodo_style_listing(tmp_path: Path, server: _Server) -> None:
    server.files = {
        "x.tgz": PAYLOAD,
        "api.json": json.dumps(
            {
                "id": 1,
                "files": [{"key": "x.tgz", "size": len(PAYLOAD), "checksum": _md5(PAYLOAD), "links": {}}],
            }
        ).encode(),
    }
    m = _write_manifest(tmp_path, _manifest(server.url, None, listing_url=f"{server.url}/api.json"))
    (path,) = FE.fetch("demo", tmp_path, manifest=m)
    assert path.name == "x.tgz" and path.read_bytes() == PAYLOAD


def test_mirror_via_environment_uses_its_files_json(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fetched folder is a valid mirror: serve its files and its files.json.
    listing = [{"name": "m.h5", "size": 5, "checksum": _md5(b"abcde")}]
    server.files = {"m.h5": b"abcde", "files.json": json.dumps(listing).encode()}
    m = _write_manifest(tmp_path, _manifest(None, None))  # no URL of its own, like a CERNBox share
    with pytest.raises(FE.FetchError, match=r"no direct download.*--base-url"):
        FE.fetch("demo", tmp_path, manifest=m)
    monkeypatch.setenv(FE.BASE_URL_ENV, server.url)
    (path,) = FE.fetch("demo", tmp_path, manifest=m)
    assert path.read_bytes() == b"abcde"


def test_extract_unpacks_archives(tmp_path: Path, server: _Server) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("EleEscan/EleEscan_1_1.h5")
        info.size = len(PAYLOAD)
        tf.addfile(info, io.BytesIO(PAYLOAD))
    server.files = {"ele.tar.gz": buf.getvalue()}
    m = _write_manifest(
        tmp_path, _manifest(server.url, [{"name": "ele.tar.gz", "checksum": _md5(buf.getvalue())}])
    )
    paths = FE.fetch("demo", tmp_path, manifest=m, extract=True)
    assert paths[-1] == tmp_path / "demo" / "EleEscan" / "EleEscan_1_1.h5"
    assert paths[-1].read_bytes() == PAYLOAD


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_is_a_clear_error_and_cli_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    m = _write_manifest(tmp_path, _manifest(url, [{"name": "a.h5", "size": 3, "checksum": None}]))
    with pytest.raises(FE.FetchError, match=r"cannot reach 127\.0\.0\.1:\d+ .*offline.*--base-url"):
        FE.fetch("demo", tmp_path, manifest=m, timeout=5)
    rc = data_main(
        ["fetch", "demo", "--dest", str(tmp_path), "--manifest", str(m), "--quiet", "--timeout", "5"]
    )
    err = capsys.readouterr().err
    assert rc != 0 and "cannot reach" in err and "Traceback" not in err


def test_unknown_name_and_http_error(
    tmp_path: Path, server: _Server, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _write_manifest(tmp_path, _manifest(server.url, [{"name": "gone.h5"}]))
    with pytest.raises(FE.FetchError, match="unknown data set 'nope'; known: demo"):
        FE.fetch("nope", tmp_path, manifest=m)
    assert data_main(["fetch", "demo", "--dest", str(tmp_path), "--manifest", str(m), "--quiet"]) == 1
    assert "answered HTTP 404" in capsys.readouterr().err


def test_shipped_manifest_is_honest_about_what_it_knows(capsys: pytest.CaptureFixture[str]) -> None:
    sets = FE.load_manifest()
    z = sets["3dgan-zenodo"]
    assert z.extra["zenodo_record"] == 3603086 and "3603086" in z.listing_url
    for ds in sets.values():
        assert ds.source and ds.description
        if ds.files is None:
            assert "not" in ds.notes  # says plainly that names/checksums are not recorded
        for f in ds.files or []:
            assert f.checksum is None or f.checksum.split(":")[0] in ("md5", "sha256")
    assert data_main(["list"]) == 0
    assert "3dgan-zenodo" in capsys.readouterr().out
