"""``fit`` on ``data=files``: 3DGAN fixed-angle HDF5 files written by the package's writer, the tiny model,
three steps. The run trains, checkpoints, validates against the held-out part of the files and records
in its manifest which files (paths, sizes, checksums) it trained and validated on."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hepgan.data import formats
from hepgan.data.types import Showers
from hepgan.train import fit
from hepgan.train.config import compose

N_FILES, PER_FILE, BATCH, STEPS = 3, 16, 8, 3
# 12 of the 48 events held out: validation needs at least 10 reference showers per energy bin (here one
# bin: more than 10 distinct energies and too few events for a second); 36 train events, 4 steps of 8.
REFERENCE_FRACTION = 0.25


def _showers(n: int, seed: int) -> Showers:
    """Sparse fixed-angle showers: ``ecal [n, 25, 25, 25]`` GeV (about 2 % of ``energy``), ``energy [n]``
    GeV in 10-500, normal incidence."""
    rng = np.random.default_rng(seed)
    energy = rng.uniform(10.0, 500.0, n).astype(np.float32)
    cells = rng.exponential(1.0, (n, 25, 25, 25)) * (rng.random((n, 25, 25, 25)) < 0.2)
    cells *= 0.02 * energy[:, None, None, None] / cells.sum(axis=(1, 2, 3), keepdims=True)
    return Showers(ecal=cells.astype(np.float32), energy=energy, theta=None)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit_files")
    written = formats.write_files(
        (_showers(PER_FILE, seed) for seed in range(N_FILES)),
        root / "data",
        fmt="fixed25",
        events_per_file=PER_FILE,
        prefix="EleEscan",
    )
    cfg = compose(
        [
            "debug=default",
            "data=files",
            f"data.paths=['{root / 'data'}']",  # a folder: every shower file in it
            f"data.reference_fraction={REFERENCE_FRACTION}",
            f"train.batch_size={BATCH}",
            f"train.max_steps={STEPS}",
            "parallel.devices=2",
            f"out={root / 'run'}",
        ]
    )
    return written, root / "run", fit(cfg, handle_signals=False)


def test_files_were_written_in_the_fixed25_format(files_run):
    written, _, _ = files_run
    assert len(written) == N_FILES
    for path in written:
        assert formats.detect_format(path) == "fixed25"
        assert len(formats.read_file(path)) == PER_FILE


def test_fit_trains_checkpoints_and_validates(files_run):
    _, run_dir, result = files_run
    assert result["status"] == "ok" and result["step"] == STEPS
    assert math.isfinite(result["objective"])
    assert (run_dir / "checkpoints" / str(STEPS)).is_dir()
    with open(run_dir / "val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, STEPS]  # before training and at the end
    assert all(math.isfinite(float(r["physics_score"])) for r in rows)
    with open(run_dir / "train.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps and max(steps) == STEPS


def test_manifest_names_the_files(files_run):
    written, run_dir, _ = files_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    expected = {str(p.resolve()): p for p in written}
    n_total = N_FILES * PER_FILE
    n_reference = round(REFERENCE_FRACTION * n_total)
    for part, n in (("data", n_total - n_reference), ("reference", n_reference)):
        described = manifest[part]
        assert described["n_events"] == n, part
        assert described["of"]["kind"] == "files" and described["of"]["n_events"] == n_total
        files = described["of"]["files"]
        assert {str(Path(f["path"]).resolve()) for f in files} == set(expected), part
        for f in files:
            path = expected[str(Path(f["path"]).resolve())]
            assert f["format"] == "fixed25" and f["n_events"] == PER_FILE
            assert f["size_bytes"] == path.stat().st_size
            assert f["sha256"] == _sha256(path)
    assert manifest["config"]["data"]["kind"] == "files"
