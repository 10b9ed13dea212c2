"""Per-shower provenance written by hepgan-generate, and one shower regenerated bit for bit from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from explain_helpers import shared_run

from hepgan.cli.generate import main as generate_main
from hepgan.data.formats import detect_format, iter_showers, read_file, write_files
from hepgan.data.types import Showers
from hepgan.explain.regenerate import (
    BN_ATTR_PREFIX,
    LATENT_INDEX,
    PROVENANCE_ATTR,
    read_provenance,
    regenerate,
    run_record,
)

N, BATCH, PER_FILE, SEED = 40, 16, 25, 7


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory, "healthy")


@pytest.fixture(scope="module")
def gen(run, tmp_path_factory) -> list[Path]:
    """40 showers in chunks of 16 over files of 25: chunk 1 (events 16-31) straddles the two files and
    chunk 2 (32-39) is padded."""
    out = tmp_path_factory.mktemp("gen")
    argv = [str(run), "--n", str(N), "--batch", str(BATCH), "--events-per-file", str(PER_FILE)]
    assert generate_main([*argv, "--seed", str(SEED), "--out", str(out)]) == 0
    return sorted(out.glob("generated_*.h5"))


def _where(paths: list[Path], event: int) -> tuple[Path, int]:
    """File and row of the generation's event ``event``."""
    return paths[event // PER_FILE], event % PER_FILE


def test_provenance_attributes_and_latent_index(run, gen) -> None:
    assert [len(read_file(p)) for p in gen] == [25, 15]
    manifest = json.loads((run / "manifest.json").read_text())
    from hepgan.train.config import upgrade
    from hepgan.train.loop import config_fingerprint

    sha = config_fingerprint(upgrade(manifest["config"]))["sha256"]
    index = []
    for p in gen:
        with h5py.File(p, "r") as f:
            rec = json.loads(f.attrs[PROVENANCE_ATTR])
            assert f.attrs["hepgan_run_dir"] == str(run.resolve()) == rec["run_dir"]
            assert f.attrs["hepgan_checkpoint"] == "latest" == rec["checkpoint"]
            assert int(f.attrs["hepgan_step"]) == 8 == rec["step"]  # the shared run: 8 steps
            assert f.attrs["hepgan_config_sha256"] == sha == rec["config_sha256"]
            assert int(f.attrs["hepgan_seed"]) == SEED and int(f.attrs["hepgan_batch"]) == BATCH
            assert f.attrs["hepgan_bn_stats"] == "running" == rec["bn_stats"]
            assert f.attrs["hepgan_version"] == rec["hepgan_version"]
            assert (
                rec["created_utc"].endswith("+00:00") and f.attrs["hepgan_created_utc"] == rec["created_utc"]
            )
            assert not any(k.startswith(BN_ATTR_PREFIX) for k in f.attrs)
            assert f[LATENT_INDEX].dtype == np.int64 and f[LATENT_INDEX].shape == (len(f["ECAL"]),)
            index.append(f[LATENT_INDEX][:])
        assert rec["energy"] == "uniform:10:500" and rec["theta_deg"] == "90"
        assert rec["run_git_commit"] == manifest["git"]["commit"]
        assert rec["run_hepgan_version"] == manifest["packages"]["hepgan"]
        assert rec["n"] == N and rec["events_per_file"] == PER_FILE and rec["format"] == "fixed25"
        assert read_provenance(p) == rec
    assert rec["config_sha256"] == run_record(run)["config_sha256"]
    np.testing.assert_array_equal(np.concatenate(index), np.arange(N))


def test_generated_files_read_as_before(run, gen, tmp_path) -> None:
    """The extra dataset and attributes change neither format detection nor the events read; the events
    are those generate() makes."""
    from hepgan.train.checkpoint import restore_run
    from hepgan.train.state import generate

    parts = []
    for p in gen:
        old = tmp_path / p.name  # the same file as written before provenance existed
        with h5py.File(p, "r") as src, h5py.File(old, "w") as dst:
            for k in ("ECAL", "target"):
                src.copy(k, dst)
            dst.attrs.update({k: v for k, v in src.attrs.items() if not k.startswith("hepgan_")})
            dst.attrs["hepgan_format"] = src.attrs["hepgan_format"]
        assert detect_format(p) == detect_format(old) == "fixed25"
        new_s, old_s = read_file(p), read_file(old)
        np.testing.assert_array_equal(new_s.ecal, old_s.ecal)
        np.testing.assert_array_equal(new_s.energy, old_s.energy)
        assert new_s.theta is None and old_s.theta is None
        assert set(new_s.extra) == set(old_s.extra) | {LATENT_INDEX}
        parts.append(new_s)
    assert sum(len(s) for s in iter_showers(gen[0].parent, chunk=16)) == N
    files = Showers.concat(parts)
    players, state, preprocess, _ = restore_run(run)
    x = generate(players, state, files.energy, files.theta_or_normal(), batch=BATCH, seed=SEED)
    np.testing.assert_array_equal(files.ecal, np.asarray(preprocess.invert_cells(x), np.float32))


@pytest.mark.parametrize("event", [0, 17, 39])  # first; in a chunk straddling two files; in the padded chunk
def test_regenerate_is_exact(gen, event) -> None:
    path, row = _where(gen, event)
    x = regenerate(path, row)
    want = read_file(path).ecal[row]
    assert x.shape == want.shape == (25, 25, 25) and x.dtype == np.float32 and want.sum() > 0
    assert np.array_equal(x, want)


def test_regenerate_refuses_another_config(run, gen, tmp_path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["data"]["n_events"] += 1  # another data set: another model
    other = tmp_path / "other_run"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps(manifest))
    recorded = read_provenance(gen[0])["config_sha256"]
    now = run_record(other)["config_sha256"]
    assert now != recorded
    with pytest.raises(ValueError, match="fingerprint") as err:
        regenerate(gen[0], 3, run_dir=other)
    assert recorded in str(err.value) and now in str(err.value)


def test_regenerate_refuses_file_without_provenance(tmp_path) -> None:
    rng = np.random.default_rng(0)
    s = Showers(ecal=rng.random((4, 25, 25, 25), dtype=np.float32), energy=np.full(4, 50.0, np.float32))
    (path,) = write_files([s], tmp_path, fmt="fixed25")
    with pytest.raises(ValueError, match=PROVENANCE_ATTR) as err:
        regenerate(path, 0)
    assert str(path) in str(err.value)


def test_recomputed_statistics_are_recorded_and_regenerated(run, tmp_path) -> None:
    """bn_stats "recomputed": the statistics depend on the whole generation's conditions, so the files
    carry them; the showers equal generate(..., bn_stats="recomputed") and regenerate exactly."""
    from hepgan.train.checkpoint import restore_run
    from hepgan.train.state import generate

    copy = shutil.copytree(run, tmp_path / "run_recomputed")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["train"]["sample_bn"] = "recomputed"  # not part of the config fingerprint
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "gen"
    argv = [str(copy), "--n", "20", "--batch", "8", "--events-per-file", "12", "--seed", "3", "--best"]
    assert generate_main([*argv, "--energy", "list:20,200,400", "--out", str(out)]) == 0
    paths = sorted(out.glob("generated_*.h5"))
    files = Showers.concat([Showers(s.ecal, s.energy) for s in map(read_file, paths)])
    rec = read_provenance(paths[1])
    assert (
        rec["bn_stats"] == "recomputed" and rec["checkpoint"] == "best" and rec["energy"] == "list:20,200,400"
    )
    with h5py.File(paths[1], "r") as f:
        held = sorted(k for k in f.attrs if k.startswith(BN_ATTR_PREFIX))
    assert held == rec["bn_stats_attrs"] and len(held) == 4  # mean and var of the generator's 2 BatchNorms
    players, state, preprocess, _ = restore_run(copy, best=True)
    theta = np.full(20, np.pi / 2, np.float32)
    x = generate(players, state, files.energy, theta, batch=8, seed=3, bn_stats="recomputed")
    np.testing.assert_array_equal(files.ecal, np.asarray(preprocess.invert_cells(x), np.float32))
    assert np.array_equal(regenerate(paths[1], 5), files.ecal[17])


def test_write_files_attrs_must_not_replace_the_writers_own(tmp_path) -> None:
    s = Showers(ecal=np.ones((2, 25, 25, 25), np.float32), energy=np.full(2, 50.0, np.float32))
    with pytest.raises(ValueError, match="grid"):
        write_files([s], tmp_path, fmt="fixed25", attrs={"grid": np.int64(3)})
    assert list(tmp_path.iterdir()) == []
    (path,) = write_files([s], tmp_path, fmt="fixed25", attrs={"note": "x", "n": np.int64(2)})
    with h5py.File(path, "r") as f:
        assert f.attrs["note"] == "x" and int(f.attrs["n"]) == 2 and f.attrs["hepgan_format"] == "fixed25"
