"""Per-shower provenance of generated files, and one shower of such a file regenerated exactly.

``hepgan-generate`` writes into every output file (see ``docs/data.md``, "Provenance of generated files"):

- the file attribute :data:`PROVENANCE_ATTR` (``hepgan_provenance``), one JSON object: the run directory
  (absolute), the checkpoint kind (``"latest"`` or ``"best"``) and step, the SHA-256 of the run's model and
  data config (:func:`hepgan.train.loop.config_fingerprint` of the manifest's ``config``), the run's git
  commit and hepgan version from its manifest (``null`` when absent), the generation's ``seed``, ``batch``
  (the generator chunk size), ``n``, ``bn_stats`` mode, ``energy`` and ``theta_deg`` specs as given,
  ``format``, ``events_per_file``, the JAX backend and version, the hepgan version and the creation time
  (UTC); the most used of these also as plain attributes ``hepgan_run_dir``, ``hepgan_checkpoint``,
  ``hepgan_step``, ``hepgan_config_sha256``, ``hepgan_seed``, ``hepgan_batch``, ``hepgan_bn_stats``,
  ``hepgan_version`` and ``hepgan_created_utc``;
- the per-event dataset :data:`LATENT_INDEX` (``hepgan_latent_index``, ``[N]`` int64): the shower's index
  in the whole generation, so that it came from generator chunk ``index // batch``, row ``index % batch``,
  whose noise is drawn from ``fold_in(key(seed), index // batch)``;
- with ``bn_stats == "recomputed"``, the BatchNorm statistics the generator sampled with, one float32
  attribute per array, named :data:`BN_ATTR_PREFIX` + its path (``hepgan_sampling_bn.bn1.mean.value``).

:func:`regenerate` uses these to draw one shower again, bit for bit.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import jax
import numpy as np

PROVENANCE_ATTR = "hepgan_provenance"
"""File attribute holding the generation's provenance as one JSON object."""

LATENT_INDEX = "hepgan_latent_index"
"""Per-event dataset ``[N]`` int64: the event's index in the whole generation."""

BN_ATTR_PREFIX = "hepgan_sampling_bn."
"""Prefix of the file attributes holding recomputed BatchNorm statistics (float32, one per array)."""

SCHEMA = 1
"""Version of the provenance record (``"schema"`` in the JSON object)."""

_REQUIRED = ("run_dir", "checkpoint", "step", "config_sha256", "seed", "batch", "bn_stats")


def run_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What a run directory's ``manifest.json`` says about the run that made a generation:
    ``run_dir`` (absolute, the folder holding ``manifest.json``), ``config_sha256`` (the fingerprint of
    its model and data config), ``run_git_commit``, ``run_git_dirty`` and ``run_hepgan_version`` (``None``
    when the manifest lacks them). Raises ``FileNotFoundError`` without a manifest, ``ValueError`` for one
    without a readable ``config``."""
    from hepgan.train.checkpoint import read_manifest
    from hepgan.train.loop import config_fingerprint

    run, manifest, config = read_manifest(Path(run_dir).resolve())
    fingerprint = config_fingerprint(config)["sha256"]
    git_entry, packages_entry = manifest.get("git"), manifest.get("packages")
    git: dict[str, Any] = git_entry if isinstance(git_entry, dict) else {}
    packages: dict[str, Any] = packages_entry if isinstance(packages_entry, dict) else {}
    return {
        "run_dir": str(run),
        "config_sha256": fingerprint,
        "run_git_commit": git.get("commit"),
        "run_git_dirty": git.get("dirty"),
        "run_hepgan_version": packages.get("hepgan"),
    }


def provenance_attrs(record: dict[str, Any], bn_stats: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The file attributes of a generation described by ``record`` (the JSON object: see the module
    docstring), plus the plain copies, plus ``bn_stats`` (:func:`bn_stats_arrays`) when given. The
    creation time is set here when ``record`` has none."""
    import hepgan

    rec = {
        "schema": SCHEMA,
        "hepgan_version": hepgan.__version__,
        "jax_backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "latent_index": LATENT_INDEX,
        **record,
    }
    if bn_stats:
        rec["bn_stats_attrs"] = sorted(BN_ATTR_PREFIX + k for k in bn_stats)
    attrs: dict[str, Any] = {PROVENANCE_ATTR: json.dumps(rec, sort_keys=True)}
    for key in ("run_dir", "checkpoint", "config_sha256", "bn_stats", "created_utc"):
        attrs[f"hepgan_{key}"] = str(rec[key])
    for key in ("step", "seed", "batch"):
        attrs[f"hepgan_{key}"] = np.int64(rec[key])
    attrs["hepgan_version"] = str(rec["hepgan_version"])
    for k, v in (bn_stats or {}).items():
        attrs[BN_ATTR_PREFIX + k] = np.asarray(v, np.float32)
    return attrs


def _leaf_name(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


def bn_stats_arrays(batch_stats: Any) -> dict[str, np.ndarray]:
    """The generator's BatchNorm statistics (a ``GANState.g.batch_stats`` pytree) as ``{path: float32
    array}``, paths like ``bn1.mean.value``; empty for a generator without BatchNorm."""
    return {_leaf_name(p): np.asarray(leaf, np.float32) for p, leaf in jax.tree.leaves_with_path(batch_stats)}


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance JSON object of a generated file (see the module docstring).

    Raises ``ValueError`` naming the file when it has none (a file not written by ``hepgan-generate``, or
    by one older than the provenance record) or when the record is damaged.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    with h5py.File(p, "r") as f:
        raw = f.attrs.get(PROVENANCE_ATTR)
    if raw is None:
        raise ValueError(
            f"{p}: the file has no '{PROVENANCE_ATTR}' attribute, so the run, checkpoint and noise its "
            "showers came from are unknown; only files written by hepgan-generate (with provenance) can be "
            "regenerated"
        )
    try:
        rec = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError as exc:
        raise ValueError(f"{p}: attribute '{PROVENANCE_ATTR}' is not valid JSON ({exc})") from None
    missing = [k for k in _REQUIRED if not isinstance(rec, dict) or k not in rec]
    if missing:
        raise ValueError(f"{p}: attribute '{PROVENANCE_ATTR}' lacks {missing}; the record is damaged")
    return rec


def _recorded_bn_stats(path: Path, rec: dict[str, Any], state: Any) -> Any:
    """``state`` with the generator's BatchNorm statistics replaced by those recorded in the file."""
    leaves = jax.tree.leaves_with_path(state.g.batch_stats)
    want = sorted(BN_ATTR_PREFIX + _leaf_name(p) for p, _ in leaves)
    with h5py.File(path, "r") as f:
        held = sorted(k for k in f.attrs if k.startswith(BN_ATTR_PREFIX))
        if held != want:
            raise ValueError(
                f"{path}: the showers were sampled with recomputed BatchNorm statistics (bn_stats "
                f"'recomputed'), which depend on every condition of the generation; the file must hold them "
                f"as attributes {want}, but holds {held}"
            )
        arrays = [np.asarray(f.attrs[BN_ATTR_PREFIX + _leaf_name(p)], np.float32) for p, _ in leaves]
    new = []
    for (p, old), a in zip(leaves, arrays, strict=True):
        if a.shape != tuple(old.shape):
            raise ValueError(
                f"{path}: attribute '{BN_ATTR_PREFIX + _leaf_name(p)}' has shape {a.shape}; the run's "
                f"generator expects {tuple(old.shape)}"
            )
        new.append(jax.numpy.asarray(a))
    treedef = jax.tree.structure(state.g.batch_stats)
    return state.replace(g=state.g.replace(batch_stats=jax.tree.unflatten(treedef, new)))


def regenerate(
    path: str | os.PathLike[str], index: int, *, run_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Shower ``index`` (0-based row of the file) of a file written by ``hepgan-generate``, drawn again
    from the run it came from: ``[X, Y, Z]`` float32 cell energies in GeV, equal bit for bit to the file's
    (``read_file(path).ecal[index]``) on the backend that generated it.

    Reads the provenance (:func:`read_provenance`), checks that the run's model and data config has the
    recorded fingerprint, restores the recorded checkpoint (same kind, ``latest`` or ``best``, same step)
    and draws the event's generator chunk ``c = i // batch`` again, ``i`` being the event's
    ``hepgan_latent_index``: the noise for ``[batch, latent_dim]`` from ``fold_in(key(seed), c)`` exactly
    as :func:`hepgan.train.state.generate` draws it (it is called with ``first_chunk=c``), the event's
    energy and angle read from the file, and every other row of the chunk at the same conditions. The
    shower is row ``i % batch``.

    Why the other rows may differ from the generation's: in eval mode a BatchNorm layer is a fixed
    per-channel affine map, so each row of the chunk depends only on its own latent vector and
    conditions; and XLA runs the same compiled program on a batch of the same shape, so the row's bits do
    not depend on the other rows' values either (checked on CPU by ``tests/test_explain_regenerate.py``;
    on a GPU, equality also needs the same convolution algorithms to be chosen, e.g. with
    ``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` for both runs).

    BatchNorm statistics: ``bn_stats == "running"`` uses the checkpoint's running averages. With
    ``"recomputed"`` the statistics were measured on one batch at conditions drawn from the whole
    generation's conditions (possibly spread over many files); ``hepgan-generate`` records the statistics
    themselves in every file (attributes ``hepgan_sampling_bn.*``) and they are used here as they are.

    Args:
        path: a generated HDF5 file.
        index: the event's row in this file, ``0 <= index < N``.
        run_dir: the run directory, when it has moved since the file was written (default: the recorded
            one).

    Raises:
        ValueError: the file has no (or a damaged) provenance record; ``index`` is out of range; the
            run's config fingerprint differs from the recorded one (both named); recorded BatchNorm
            statistics are missing or do not fit the generator.
        FileNotFoundError: the run directory, its manifest or the recorded checkpoint step is gone.
    """
    from hepgan.data.formats import ShowerFile
    from hepgan.train.checkpoint import restore_run
    from hepgan.train.state import BN_STATS, generate

    p = Path(path)
    rec = read_provenance(p)
    with ShowerFile(p, threshold=0.0) as sf:
        n = len(sf)
        if not 0 <= int(index) < n:
            raise ValueError(f"{p}: event index {index} out of range; the file holds {n} events (0..{n - 1})")
        ev = sf.read(int(index), int(index) + 1, check=False)
    if LATENT_INDEX not in ev.extra:
        raise ValueError(
            f"{p}: the file has a provenance record but no '{LATENT_INDEX}' dataset, so the event's place in "
            "the generation is unknown; the file was damaged or rewritten without it"
        )
    latent = int(ev.extra[LATENT_INDEX][0])
    batch, seed, mode = int(rec["batch"]), int(rec["seed"]), str(rec["bn_stats"])
    if mode not in BN_STATS:
        raise ValueError(f"{p}: recorded bn_stats {mode!r} is none of {list(BN_STATS)}")
    chunk, row = divmod(latent, batch)

    run = Path(run_dir) if run_dir is not None else Path(rec["run_dir"])
    now = run_record(run)
    if now["config_sha256"] != rec["config_sha256"]:
        raise ValueError(
            f"{p}: the showers were generated by a run with config fingerprint {rec['config_sha256']} "
            f"(recorded run directory {rec['run_dir']}), but {now['run_dir']}/manifest.json has model and "
            f"data config fingerprint {now['config_sha256']}; it is another model, so the shower cannot be "
            "regenerated from it"
        )
    players, state, preprocess, _ = restore_run(
        now["run_dir"], best=rec["checkpoint"] == "best", step=int(rec["step"])
    )
    if mode == "recomputed":
        state = _recorded_bn_stats(p, rec, state)
    energy = np.full(batch, ev.energy[0], np.float32)
    theta = np.full(batch, ev.theta_or_normal()[0], np.float32)
    x = generate(
        players,
        state,
        energy,
        theta,
        batch=batch,
        seed=seed,
        bn_stats="running",  # "recomputed": the recorded statistics are in ``state`` now
        ema=bool(rec.get("ema", True)),
        first_chunk=chunk,
    )
    return np.asarray(preprocess.invert_cells(x[row : row + 1]), np.float32)[0]
