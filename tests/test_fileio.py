"""Atomic writes: whole files or the previous ones, with the permissions of an ordinary write."""

from __future__ import annotations

import errno
import json
import os

import pytest

from hepgan import fileio


def test_write_json_is_whole_and_readable_like_an_ordinary_file(tmp_path):
    path = fileio.write_json(tmp_path / "r.json", {"a": 1.5, "n": float("nan")})
    assert json.loads(path.read_text().replace("NaN", "null")) == {"a": 1.5, "n": None}
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    fileio.write_json(path, {"status": "ok"})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        fileio.write_json(path, {"status": "error"})
    assert json.loads(path.read_text()) == {"status": "ok"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
