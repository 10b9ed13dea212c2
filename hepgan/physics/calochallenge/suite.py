"""The CaloChallenge 2022 evaluation of datasets 2 and 3: read, compute every metric, write the results.

:func:`evaluate` takes both sets in the challenge's own representation (flat showers ``[N, V]`` MeV in the
challenge's voxel order, incident energies MeV, the dataset's binning) and returns a JSON-ready dict:
separation powers per feature and layer with their summary, the low- and high-level classifier AUCs,
FPD and KPD. :func:`read_files` reads CaloChallenge HDF5 files with the checks the command line needs;
:func:`from_showers` turns a hepgan :class:`~hepgan.data.types.Showers` (grid ``[N, alpha, r, layer]``,
GeV) into that representation.

FPD and KPD use the challenge's calls of JetNet (``code/evaluate.py``): ``fpd(reference, generated,
min_samples=10000)`` (JetNet: ``max_samples`` 50000, 20 batches, 10 points) and ``kpd(reference,
generated, batch_size=10000)`` (10 batches, polynomial kernel of degree 4, batches drawn with
replacement), on the 362 high-level features, each divided by the reference's largest absolute value:
:mod:`hepgan.physics.fpd` with ``convention="jetnet"`` and those sizes, seeded ``42 + seed`` (JetNet's
seed at ``seed=0``).
With fewer than 50000 (FPD) or 10000 (KPD) events per set the sizes shrink to the smaller set (FPD keeps
the challenge's 1:5 ratio of smallest to largest batch); the results then are not the published ones'
protocol, and the JSON says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hepgan.data.types import Showers
from hepgan.physics import fpd as fpdlib
from hepgan.physics.calochallenge.binning import Binning, dataset_for_voxels, get_binning
from hepgan.physics.calochallenge.classifier import ClassifierSettings, challenge_auc, low_level_inputs
from hepgan.physics.calochallenge.features import CHUNK, Features, compute_features
from hepgan.physics.calochallenge.separation import separation_powers, summarise, voxel_histograms
from hepgan.physics.errors import InsufficientEventsError

MIN_EVENTS = fpdlib.MIN_EVENTS_FPD
"""Fewest events per set for the suite: FPD's minimum (its fit in 1/N needs batch sizes well apart)."""

MEV_PER_GEV = 1000.0

PUBLISHED_EVENTS = 100_000
"""Events per set in the published evaluation of datasets 2 and 3 (the evaluation file(s) of each, and
100k generated showers): separation powers (whose finite-sample floor goes as 1/N) and the classifier's
60k/20k/20k split are only comparable at that size."""

FPD_MIN_SAMPLES = 10_000
FPD_MAX_SAMPLES = 50_000
FPD_BATCHES = 20
FPD_POINTS = 10
KPD_BATCH = 10_000
KPD_BATCHES = 10
KPD_DEGREE = 4


def _fail(path: str | os.PathLike[str], key: str | None, message: str) -> ValueError:
    where = f"{path}" + (f", key '{key}'" if key else "")
    return ValueError(f"{where}: {message}")


def _check_file(path: Path, f: h5py.File, binning: Binning | None) -> tuple[int, Binning]:
    """Keys, shapes, voxel count and voxel order of one file; returns ``(events, binning)``."""
    expected = "a CaloChallenge file holds 'incident_energies' [N, 1] (MeV) and 'showers' [N, n_voxels] (MeV)"
    for key in ("incident_energies", "showers"):
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise _fail(path, key, f"missing; {expected}")
    showers, inc = f["showers"], f["incident_energies"]
    if showers.ndim != 2:
        raise _fail(path, "showers", f"expected shape [N, n_voxels]; found {showers.shape}")
    if inc.ndim not in (1, 2) or (inc.ndim == 2 and inc.shape[1] != 1):
        raise _fail(path, "incident_energies", f"expected shape [N, 1]; found {inc.shape}")
    if inc.shape[0] != showers.shape[0]:
        raise _fail(
            path, "incident_energies", f"{inc.shape[0]} energies but {showers.shape[0]} showers in 'showers'"
        )
    n_vox = int(showers.shape[1])
    if binning is None:
        try:
            binning = dataset_for_voxels(n_vox)
        except ValueError as exc:
            raise _fail(path, "showers", str(exc)) from None
    elif n_vox != binning.n_voxels:
        raise _fail(
            path, "showers",
            f"{n_vox} voxels per shower, but CaloChallenge dataset {binning.name} has {binning.n_voxels} "
            f"({binning.n_layers} layers x {binning.n_alpha} angular x {binning.n_r} radial bins); "
            "check --dataset or the file",
        )  # fmt: skip
    order = f.attrs.get("voxel_order")
    if order is not None and str(order.decode() if isinstance(order, bytes) else order) != "ZXY":
        raise _fail(
            path, "showers",
            f"attribute voxel_order={order!r}: the voxels are not in the challenge's order (layer, angle, "
            "radius; hepgan's 'ZXY'); rewrite the file in that order",
        )  # fmt: skip
    grid = f.attrs.get("grid")
    if grid is not None and tuple(int(g) for g in np.ravel(grid)) != binning.grid:
        raise _fail(
            path, "showers",
            f"attribute grid={tuple(int(g) for g in np.ravel(grid))} is not dataset {binning.name}'s grid "
            f"{binning.grid} (angle, radius, layer)",
        )  # fmt: skip
    return int(showers.shape[0]), binning


def _check_values(path: Path, showers: np.ndarray, e_inc: np.ndarray) -> None:
    for a in range(0, len(showers), CHUNK):
        block = showers[a : a + CHUNK]
        if not np.isfinite(block).all():
            raise _fail(path, "showers", "holds NaN or infinite voxel energies; every voxel must be a number")
        if (block < 0).any():
            neg = block[block < 0]
            raise _fail(
                path, "showers",
                f"holds negative voxel energies ({neg.size} in events {a}..{a + len(block) - 1}, lowest "
                f"{neg.min():.4g} MeV); energies must be >= 0 (the challenge's threshold would silently "
                "zero them, hiding a generator bug)",
            )  # fmt: skip
    if not np.isfinite(e_inc).all() or (e_inc <= 0).any():
        bad = e_inc[~(np.isfinite(e_inc) & (e_inc > 0))]
        raise _fail(
            path, "incident_energies",
            f"holds {bad.size} non-positive or non-finite energies (first {bad[0]!r}); incident energies "
            "must be > 0 MeV",
        )  # fmt: skip


def read_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dataset: str | Binning | None = None,
    *,
    max_events: int | None = None,
    which: str = "input",
) -> tuple[np.ndarray, np.ndarray, Binning]:
    """Read CaloChallenge HDF5 files (a file, directory, glob or list; concatenated in order).

    Returns ``(showers [N, V] MeV as stored, incident_energies [N] float64 MeV, binning)``; at most
    ``max_events`` events. ``dataset`` ``"2"``/``"3"``/a :class:`Binning`, or ``None`` to recognise it
    from the voxel count. Raises ``ValueError`` naming the file and key for: a missing key, shapes that
    are not ``[N, 1]`` / ``[N, V]``, a voxel count that is not the dataset's, a voxel order other than
    the challenge's, negative or non-finite voxel energies, non-positive incident energies, no events.
    ``which`` ("generated", "reference") names the set in messages."""
    from hepgan.data.formats import expand_paths

    files = expand_paths(paths)
    binning = None if dataset is None else get_binning(dataset)
    showers: list[np.ndarray] = []
    energies: list[np.ndarray] = []
    n = 0
    for path in files:
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise _fail(path, None, f"cannot be opened as HDF5 ({exc})") from None
        with f:
            n_file, binning = _check_file(path, f, binning)
            take = n_file if max_events is None else min(n_file, max_events - n)
            s = np.asarray(f["showers"][:take])
            e = np.asarray(f["incident_energies"][:take], np.float64).reshape(-1)
        _check_values(path, s, e)
        showers.append(s)
        energies.append(e)
        n += take
        if max_events is not None and n >= max_events:
            break
    if n == 0 or binning is None:
        raise ValueError(f"the {which} input {paths} holds no events")
    dtype = np.result_type(*showers)
    return np.concatenate(showers).astype(dtype, copy=False), np.concatenate(energies), binning


def from_showers(
    showers: Showers, dataset: str | Binning | None = None
) -> tuple[np.ndarray, np.ndarray, Binning]:
    """A hepgan :class:`Showers` (``ecal [N, n_alpha, n_r, n_layers]`` GeV, ``energy [N]`` GeV) in the
    challenge's representation: ``(showers [N, V] float64 MeV in the flat order (layer, alpha, r),
    incident_energies [N] float64 MeV, binning)``. ``dataset`` as in :func:`read_files`; ``None``
    recognises it from the grid. ``ValueError`` when the grid is not the dataset's."""
    grid = showers.grid
    if dataset is None:
        matches = [b for b in (get_binning("2"), get_binning("3")) if b.grid == grid]
        if not matches:
            raise ValueError(
                f"showers with grid {grid} are not CaloChallenge dataset 2 (16, 9, 45) or 3 (50, 18, 45) "
                "(angle, radius, layer)"
            )
        binning = matches[0]
    else:
        binning = get_binning(dataset)
        if grid != binning.grid:
            raise ValueError(
                f"showers have grid {grid}, but CaloChallenge dataset {binning.name} is {binning.grid} "
                "(angle, radius, layer)"
            )
    flat = np.asarray(showers.ecal, np.float64).transpose(0, 3, 1, 2).reshape(len(showers), -1)
    return flat * MEV_PER_GEV, np.asarray(showers.energy, np.float64) * MEV_PER_GEV, binning


def write_results(
    out_dir: str | os.PathLike[str],
    result: dict[str, Any],
    features: dict[str, Features] | None = None,
    voxel_hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write ``result`` (of :func:`evaluate`) to ``out_dir/metrics.json``, the Markdown table beside the
    published results to ``out_dir/comparison.md`` and, when ``features`` (``generated``, ``reference``,
    as :func:`evaluate`'s ``features_out`` fills it) are given, the figures to ``out_dir/figures``;
    ``voxel_hist`` adds the voxel spectrum. Returns the path of ``metrics.json``."""
    from hepgan.fileio import write_json, write_text
    from hepgan.physics.calochallenge.plots import write_figures
    from hepgan.physics.calochallenge.published import comparison_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = write_json(out / "metrics.json", _finite_or_none(result))
    write_text(out / "comparison.md", comparison_markdown(result))
    if features is not None:
        write_figures(out / "figures", features["generated"], features["reference"], result, voxel_hist)
    return path


def _finite_or_none(x: Any) -> Any:
    """JSON-ready copy: non-finite floats as ``None``, NumPy scalars as Python numbers, recursively."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(float(x)) else None
    return x


def evaluate(
    gen_showers: np.ndarray,
    gen_energies: np.ndarray,
    ref_showers: np.ndarray,
    ref_energies: np.ndarray,
    dataset: str | Binning,
    *,
    classifier: ClassifierSettings | None,
    seed: int = 0,
    fpd_batches: int = FPD_BATCHES,
    skipped: dict[str, str] | None = None,
    features_out: dict[str, Features] | None = None,
    hist_out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """The CaloChallenge suite on generated ``gen_showers: [N, V]`` MeV with ``gen_energies: [N]`` MeV
    against reference ``ref_showers: [M, V]``, ``ref_energies: [M]`` (flat, challenge voxel order).

    Returns a JSON-ready dict: ``separation_power`` (``E_ratio``, ``voxel``: floats; ``E_layer``,
    ``EC_eta``, ``EC_phi``, ``EC_r``, ``width_eta``, ``width_phi``, ``width_r``, ``sparsity``: one value per
    layer), ``separation_summary`` (:func:`~hepgan.physics.calochallenge.separation.summarise`),
    ``auc_low``/``auc_high`` (+ ``_err``) and ``classifier`` (details and settings; not computed when
    ``classifier`` is None), ``fpd``, ``fpd_err``, ``kpd``, ``kpd_err`` (and the same x 1e3, the
    published unit) with their settings, ``comparable`` (which numbers follow the published protocol).
    Non-finite values are ``None``. Metrics not computed are named in ``skipped`` (when given) with the
    reason. Raises :class:`InsufficientEventsError` below :data:`MIN_EVENTS` events in a set.
    ``features_out``, when given, receives the two :class:`Features` (keys ``generated``, ``reference``)
    and ``hist_out`` the voxel-spectrum histograms (key ``voxel``: edges, reference and generated
    counts), for figures."""
    binning = get_binning(dataset)
    n_gen, n_ref = len(gen_showers), len(ref_showers)
    n = min(n_gen, n_ref)
    if n < MIN_EVENTS:
        raise InsufficientEventsError(
            "calochallenge", MIN_EVENTS, n, "in each set (FPD fits batches of sizes a factor 5 apart)"
        )
    skipped = {} if skipped is None else skipped
    thr = binning.threshold
    gen = compute_features(gen_showers, gen_energies, binning)
    ref = compute_features(ref_showers, ref_energies, binning)
    if features_out is not None:
        features_out.update(generated=gen, reference=ref)
    hist = voxel_histograms(gen_showers, ref_showers, ref.voxel_max, thr)
    if hist_out is not None and hist is not None:
        hist_out["voxel"] = hist
    seps = separation_powers(gen, ref, thr, voxel=None if hist is None else (hist[1], hist[2]))
    result: dict[str, Any] = {
        "suite": "calochallenge",
        "dataset": binning.name,
        "threshold_mev": thr,
        "n_generated": n_gen,
        "n_reference": n_ref,
        "separation_power": seps,
        "separation_summary": summarise(seps),
    }

    x_gen, x_ref = gen.hlf_vector(), ref.hlf_vector()
    if classifier is None:
        skipped["classifier"] = "not requested (--classifier off)"
    else:
        details: dict[str, Any] = {"settings": classifier.as_dict()}
        low = challenge_auc(
            low_level_inputs(gen_showers, gen_energies, thr),
            low_level_inputs(ref_showers, ref_energies, thr),
            classifier, seed=seed, name="auc_low",
        )  # fmt: skip
        high = challenge_auc(x_gen, x_ref, classifier, seed=seed, name="auc_high")
        for key, res in (("low", low), ("high", high)):
            result[f"auc_{key}"] = res["auc"]
            result[f"auc_{key}_err"] = res["auc_err"]
            details[key] = res
        result["classifier"] = details

    max_fpd = min(n, FPD_MAX_SAMPLES)
    min_fpd = FPD_MIN_SAMPLES if max_fpd == FPD_MAX_SAMPLES else max(max_fpd // 5, 2)
    fpd_val, fpd_err = fpdlib.fpd(
        x_ref, x_gen, convention="jetnet", min_samples=min_fpd, max_samples=max_fpd,
        num_batches=fpd_batches, num_points=FPD_POINTS, seed=fpdlib.JETNET_SEED + seed, trace_method="eigh",
    )  # fmt: skip
    kpd_batch = min(n, KPD_BATCH)
    kpd_val, kpd_err = fpdlib.kpd(
        x_ref, x_gen, convention="jetnet", num_batches=KPD_BATCHES, batch_size=kpd_batch,
        degree=KPD_DEGREE, seed=fpdlib.JETNET_SEED + seed, replace=True,
    )  # fmt: skip
    result.update(
        fpd=fpd_val, fpd_err=fpd_err, kpd=kpd_val, kpd_err=kpd_err,
        fpd_x1e3=fpd_val * 1e3, fpd_x1e3_err=fpd_err * 1e3,
        kpd_x1e3=kpd_val * 1e3, kpd_x1e3_err=kpd_err * 1e3,
        fpd_settings={"convention": "jetnet", "min_samples": min_fpd, "max_samples": max_fpd,
                      "num_batches": fpd_batches, "num_points": FPD_POINTS, "features": int(x_ref.shape[1])},
        kpd_settings={"convention": "jetnet", "batch_size": kpd_batch, "num_batches": KPD_BATCHES,
                      "degree": KPD_DEGREE, "replace": True, "features": int(x_ref.shape[1])},
    )  # fmt: skip
    full = n >= PUBLISHED_EVENTS
    result["comparable"] = {
        "separation_power": full,
        "classifier": full and classifier is not None and classifier.name == "challenge",
        "fpd": max_fpd == FPD_MAX_SAMPLES and fpd_batches == FPD_BATCHES,
        "kpd": kpd_batch == KPD_BATCH,
    }
    return _finite_or_none(result)
