"""Compare a generated shower set with a reference set: the yardstick training, sweeps and studies use.

``evaluate(generated, reference, metrics=..., seed=...) -> dict[str, float]`` always returns
``physics_score`` (lower is better) and ``sf_rel_error``. Metric names (``metrics=``), cheapest first:

============== ============================================================================= ==========
name           what it adds                                                                   cost
============== ============================================================================= ==========
``sf``         ``sf_rel_error`` (mean over condition bins of the relative error of the mean  always
               sampling fraction; the 3DGAN papers' best-epoch criterion), ``sf_rel_error_max``
``separation`` ``sep/<observable>`` histogram separation power per observable (mean over     always
               condition bins), ``sep/cell_spectrum``, ``sep_mean``, ``sep_rms``, ``sep_max``
``gan3d``      ``gan3d_metric`` the 3DGAN per-epoch metric and its parts ``gan3d_moments``,  fast
               ``gan3d_profiles``, ``gan3d_angle``; ``gan3d_metric_legacy`` with the moment
               term counted twice as in the original analysis code
``distances``  ``chi2ndf/<obs>``, ``ks/<obs>``, ``w1/<obs>`` per observable                  ~1 s
``fpd``        ``fpd``, ``fpd_err`` (high-level features), ``fpd_convention/<name>`` = 1     ~1 s
``kpd``        ``kpd``, ``kpd_err`` (high-level features), ``kpd_convention/<name>`` = 1     ~1-5 s
``classifier`` ``auc_hlf`` (+``_err``) on high-level features and ``auc_cells`` on raw cells  10-60 s
============== ============================================================================= ==========

Groups: ``"fast"`` = sf + separation + gan3d (a few seconds for 1-2k events, for use every few epochs);
``"all"`` (the default, ``metrics=None``) = everything. ``classifier_hlf`` / ``classifier_cells`` select
one of the two classifiers.

A metric that needs more events than the sets hold (``fpd`` 500, ``kpd`` 100, the classifiers 200 per set)
is skipped rather than failing the evaluation: its keys are left out, a warning is logged, and the reason
goes into the caller's ``skipped`` dict (``{"fpd": "needs >= 500 events in each set; got 64"}``), which
:func:`hepgan.physics.report.write_report` records in ``metrics.json`` and the report. The condition bins
every metric shares are not optional: a bin with too few events still raises.

``physics_score = sf_rel_error + sep_rms``, ``sep_rms`` the root mean square over SCORE_OBSERVABLES of
the separation powers: every term is unit-free and in [0, 1]; the separation powers see the shape of
each distribution (resolution, tails), not only its mean; the root mean square keeps one badly modelled
observable from being averaged away by nine good ones while staying less noisy than the maximum; the
sampling-fraction term keeps the papers' criterion inside the score. See ``docs/physics.md`` for the
reasoning and the calibration.

FPD and KPD follow ``fpd_convention`` (``"hepgan"``, the default, for validation sets of a few thousand
events, or ``"jetnet"``, JetNet's kernel and batch schedule, for numbers comparable with published ones;
:mod:`hepgan.physics.fpd`). The result names the convention in a key of its own,
``fpd_convention/hepgan`` or ``fpd_convention/jetnet`` (and ``kpd_convention/...``), set to 1.0, so that
the dict stays one of numbers and a value is never stored without it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hepgan.data.types import Showers
from hepgan.physics import binning, classifier, distances
from hepgan.physics import fpd as fpd_mod
from hepgan.physics.errors import GridMismatchError, InsufficientEventsError
from hepgan.physics.extract import ObservableSet, extract
from hepgan.physics.observables import SCALAR_NAMES

log = logging.getLogger(__name__)

SCORE_OBSERVABLES: tuple[str, ...] = (
    "sf",
    "x_var",
    "y_var",
    "z_mean",
    "z_var",
    "hits",
    "frac_first",
    "frac_middle",
    "frac_last",
    "angle",
)
"""Observables whose separation powers make up ``physics_score``: energy scale, transverse and
longitudinal shape, occupancy and direction. Barycentres along x/y and hottest-cell positions are left
out: for a point-like beam they measure the beam spot, not the shower."""

HLF_NAMES: tuple[str, ...] = (
    "e_vis",
    "sf",
    "x_mean",
    "x_var",
    "y_mean",
    "y_var",
    "z_mean",
    "z_var",
    "hits",
    "frac_first",
    "frac_middle",
    "frac_last",
    "shower_max",
    "angle",
)
"""High-level features for FPD/KPD and the feature classifier; ``log10(E)`` (and the true angle, where
the data carry one) are appended so that the comparison is conditional on the primary."""

FAST: tuple[str, ...] = ("sf", "separation", "gan3d")
ALL: tuple[str, ...] = (*FAST, "distances", "fpd", "kpd", "classifier_hlf", "classifier_cells")
GROUPS: dict[str, tuple[str, ...]] = {
    "fast": FAST,
    "all": ALL,
    "classifier": ("classifier_hlf", "classifier_cells"),
}
MIN_EVENTS_PER_BIN = 10


def resolve_metrics(metrics: Sequence[str] | str | None) -> tuple[str, ...]:
    """Expand group names; ``None`` means ``"all"``. Unknown names raise ``ValueError`` listing valid ones."""
    if metrics is None:
        metrics = ("all",)
    elif isinstance(metrics, str):
        metrics = (metrics,)
    out: list[str] = []
    for m in metrics:
        names = GROUPS.get(m, (m,))
        for n in names:
            if n not in ALL:
                raise ValueError(f"unknown metric {m!r}: expected any of {sorted({*ALL, *GROUPS})}")
            if n not in out:
                out.append(n)
    return tuple(out)


def check_compatible(generated: Showers, reference: Showers) -> None:
    """Raise :class:`GridMismatchError` if the two sets cannot be compared cell by cell."""
    if generated.grid != reference.grid:
        raise GridMismatchError(
            f"generated showers have grid {generated.grid} but the reference has {reference.grid}: "
            "both sets must use the same [X, Y, Z] cell grid"
        )
    for name, s in (("generated", generated), ("reference", reference)):
        if len(s) == 0:
            raise GridMismatchError(f"the {name} set is empty (0 events)")


def _has_angle(o: ObservableSet) -> bool:
    return o.theta is not None and float(np.ptp(o.theta)) > 1e-3


def _theta(o: ObservableSet) -> np.ndarray:
    return o.theta if o.theta is not None else np.full(len(o), np.pi / 2)


def _rel(a_ref: np.ndarray, a_gen: np.ndarray) -> np.ndarray:
    """``|ref - gen| / |ref|`` element-wise, NaN where the reference is 0 (left out by the callers)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a_ref != 0, np.abs(a_ref - a_gen) / np.abs(a_ref), np.nan)


PROFILE_FLOOR = 1e-3
"""Profile cells whose reference mean is below this fraction of the profile's maximum are left out of
the 3DGAN profile term: their relative errors are ratios of tiny, noisy means (and without a floor a
near-empty reference cell sent the metric to 1e39)."""

MOMENT_FLOORS = (1.0, 1.0 / 12.0)
"""Smallest denominators (cell, cell^2) of the relative errors of the mean first and second moments:
a barycentre within one cell of the grid edge or a spread below that of one uniformly lit cell (1/12)
is below what a cell-index moment resolves, and dividing by it would let rounding dominate."""


def _rel_floor(a_ref: float, a_gen: float, floor: float) -> float:
    """``|ref - gen| / max(|ref|, floor)``."""
    return float(abs(a_ref - a_gen) / max(abs(a_ref), floor))


def gan3d_terms(gen: ObservableSet, ref: ObservableSet, with_angle: bool) -> dict[str, float]:
    """The three terms of the 3DGAN per-epoch metric for one condition bin, each bounded.

    - moments: relative error of the mean first and second moment, ``sum over moments of (mean over
      axes of |rel err|) / 2``, the denominators floored at :data:`MOMENT_FLOORS`;
    - profiles: relative error of the mean profile, averaged over cells and over the three axes; cells
      whose reference mean is below :data:`PROFILE_FLOOR` times the profile's maximum are left out
      (the original divides by every cell and gets inf/NaN for empty ones, huge values for near-empty);
    - angle: relative error of the mean measured angle. (The original compares each generated event's
      measured angle with the true angle it was generated at; comparing with the reference's measured
      angle instead cancels the bias of the angle measurement itself, which a perfect generator shares.)
    """
    mom = []
    axes = [("x_mean", "x_var"), ("y_mean", "y_var"), ("z_mean", "z_var")]
    for k in (0, 1):
        errs = [
            _rel_floor(np.mean(ref.scalars[a[k]]), np.mean(gen.scalars[a[k]]), MOMENT_FLOORS[k]) for a in axes
        ]
        mom.append(np.mean(errs))
    prof = []
    for pg, pr in (
        (gen.profile_x, ref.profile_x),
        (gen.profile_y, ref.profile_y),
        (gen.profile_z, ref.profile_z),
    ):
        mr, mg = pr.mean(0), pg.mean(0)
        ok = mr > PROFILE_FLOOR * mr.max()
        prof.append(float(np.mean(np.abs(mr[ok] - mg[ok]) / mr[ok])) if ok.any() else 0.0)
    out = {"moments": float(np.sum(mom) / 2.0), "profiles": float(np.mean(prof))}
    if with_angle:
        out["angle"] = float(_rel(np.mean(ref.scalars["angle"]), np.mean(gen.scalars["angle"])))
    return out


def hlf_matrix(o: ObservableSet, with_angle: bool) -> np.ndarray:
    """High-level feature vectors ``[N, F]``: :data:`HLF_NAMES`, ``log10(E/GeV)`` and the true angle."""
    cols = [o.features(HLF_NAMES), np.log10(np.maximum(o.energy, 1e-12))[:, None]]
    if with_angle:
        cols.append(_theta(o)[:, None])
    return np.concatenate(cols, axis=1)


def evaluate(
    generated: Showers,
    reference: Showers,
    *,
    metrics: Sequence[str] | str | None = None,
    seed: int = 0,
    energy_bins: Sequence[float] | None = None,
    theta_bins: Sequence[float] | None = None,
    pitch: tuple[float, float] | None = None,
    duplicate_moment_term: bool = False,
    timings: dict[str, float] | None = None,
    skipped: dict[str, str] | None = None,
    progress: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
    fpd_convention: str = "hepgan",
) -> dict[str, float]:
    """Compare ``generated`` with ``reference`` showers (``ecal [N, X, Y, Z] GeV``, ``energy [N] GeV``,
    ``theta [N] rad`` or none) at matched conditions; see the module docstring for the metric names.

    ``energy_bins`` / ``theta_bins``: explicit condition-bin edges (GeV / rad), default automatic
    (:func:`hepgan.physics.binning.make_bins`). ``pitch``: ``(cell_size_mm, layer_thickness_mm)`` for the
    measured angle, default from the geometry preset of the grid. ``duplicate_moment_term``: make
    ``gan3d_metric`` the legacy value (moment term counted twice, as the original 3DGAN code does).
    ``timings``: if given, filled with wall seconds per stage. ``progress``: if given, each stage
    (``observables``, then the metrics' names) runs inside ``progress(stage)``, e.g.
    :meth:`hepgan.progress.Progress.stage`, which reports it as it goes. ``skipped``: if given, filled with
    metric name -> why it was skipped (too few events for it; see the module docstring); the returned dict
    then simply lacks that metric's keys. Raises :class:`GridMismatchError`, or
    :class:`InsufficientEventsError` for a condition bin with too few events (both ``ValueError``), with a
    message naming the problem. ``fpd_convention``: ``"hepgan"`` or ``"jetnet"`` for FPD and KPD (module
    docstring); an unknown name raises ``ValueError`` before anything is computed.
    """
    names = resolve_metrics(metrics)
    fpd_mod.check_convention(fpd_convention)
    check_compatible(generated, reference)
    t0 = time.perf_counter()
    with progress("observables") if progress is not None else contextlib.nullcontext():
        g = extract(generated, pitch=pitch)
        r = extract(reference, pitch=pitch)
    if timings is not None:
        timings["observables"] = time.perf_counter() - t0
    cells = None
    if "classifier_cells" in names:
        cells = (generated, reference)
    return evaluate_observables(
        g,
        r,
        metrics=names,
        seed=seed,
        energy_bins=energy_bins,
        theta_bins=theta_bins,
        duplicate_moment_term=duplicate_moment_term,
        cells=cells,
        timings=timings,
        skipped=skipped,
        progress=progress,
        fpd_convention=fpd_convention,
    )


def evaluate_observables(
    g: ObservableSet,
    r: ObservableSet,
    *,
    metrics: Sequence[str] | str | None = None,
    seed: int = 0,
    energy_bins: Sequence[float] | None = None,
    theta_bins: Sequence[float] | None = None,
    duplicate_moment_term: bool = False,
    cells: tuple[Showers, Showers] | None = None,
    timings: dict[str, float] | None = None,
    skipped: dict[str, str] | None = None,
    progress: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
    fpd_convention: str = "hepgan",
) -> dict[str, float]:
    """:func:`evaluate` on observables already extracted (``cells``: the two shower sets, needed only
    by ``classifier_cells``; ``progress``: as for :func:`evaluate`, for the metrics' stages)."""
    names = resolve_metrics(metrics)
    fpd_mod.check_convention(fpd_convention)
    # the jetnet convention starts from JetNet's seed 42, so seed 0 draws the events JetNet would
    fpd_seed = seed + (fpd_mod.JETNET_SEED if fpd_convention == "jetnet" else 0)
    with_angle = _has_angle(r)
    bins = binning.make_bins(
        r.energy, _theta(r) if with_angle else None, energy_bins=energy_bins, theta_bins=theta_bins
    )
    tg = _theta(g) if with_angle else None
    tr = _theta(r) if with_angle else None
    gm = binning.split(bins, g.energy, tg, min_events=MIN_EVENTS_PER_BIN, which="generated")
    rm = binning.split(bins, r.energy, tr, min_events=MIN_EVENTS_PER_BIN, which="reference")
    gb = [g.select(m) for m in gm]
    rb = [r.select(m) for m in rm]
    out: dict[str, float] = {
        "n_generated": float(len(g)),
        "n_reference": float(len(r)),
        "n_bins": float(len(bins)),
    }

    def timed(stage: str, fn: Callable[[], None]) -> None:
        t = time.perf_counter()
        with progress(stage) if progress is not None else contextlib.nullcontext():
            fn()
        if timings is not None:
            timings[stage] = time.perf_counter() - t

    def do_sf() -> None:
        errs = [
            float(_rel(np.mean(b.scalars["sf"]), np.mean(a.scalars["sf"])))
            for a, b in zip(gb, rb, strict=True)
        ]
        out["sf_rel_error"] = float(np.mean(errs))
        out["sf_rel_error_max"] = float(np.max(errs))

    def do_separation() -> None:
        observed = SCALAR_NAMES if "separation" in names else SCORE_OBSERVABLES
        for name in observed:
            vals = [
                distances.separation_power(a.scalars[name], b.scalars[name])
                for a, b in zip(gb, rb, strict=True)
            ]
            out[f"sep/{name}"] = float(np.mean(vals))
        out["sep_mean"] = float(np.mean([out[f"sep/{n}"] for n in SCORE_OBSERVABLES]))
        out["sep_rms"] = float(np.sqrt(np.mean([out[f"sep/{n}"] ** 2 for n in SCORE_OBSERVABLES])))
        out["sep_max"] = float(np.max([out[f"sep/{n}"] for n in SCORE_OBSERVABLES]))
        hg, hr = g.spectrum / max(g.spectrum.sum(), 1.0), r.spectrum / max(r.spectrum.sum(), 1.0)
        s = hg + hr
        out["sep/cell_spectrum"] = float(0.5 * np.sum((hg[s > 0] - hr[s > 0]) ** 2 / s[s > 0]))

    def do_gan3d() -> None:
        terms = [gan3d_terms(a, b, with_angle) for a, b in zip(gb, rb, strict=True)]
        p = float(np.mean([t["moments"] for t in terms]))
        e = float(np.mean([t["profiles"] for t in terms]))
        a = float(np.mean([t["angle"] for t in terms])) if with_angle else 0.0
        out["gan3d_moments"], out["gan3d_profiles"] = p, e
        if with_angle:
            out["gan3d_angle"] = a
        out["gan3d_metric_legacy"] = 2 * p + e + a
        out["gan3d_metric"] = out["gan3d_metric_legacy"] if duplicate_moment_term else p + e + a

    def do_distances() -> None:
        for name in SCALAR_NAMES:
            chi, ksv, w1 = [], [], []
            for a, b in zip(gb, rb, strict=True):
                chi.append(distances.chi2_ndf(a.scalars[name], b.scalars[name])[0])
                ksv.append(distances.ks(a.scalars[name], b.scalars[name]))
                w1.append(distances.wasserstein1(a.scalars[name], b.scalars[name]))
            out[f"chi2ndf/{name}"] = float(np.mean(chi))
            out[f"ks/{name}"] = float(np.mean(ksv))
            out[f"w1/{name}"] = float(np.mean(w1))

    def do_fpd() -> None:
        out["fpd"], out["fpd_err"] = fpd_mod.fpd(
            hlf_matrix(r, with_angle), hlf_matrix(g, with_angle), seed=fpd_seed, convention=fpd_convention
        )
        out[f"fpd_convention/{fpd_convention}"] = 1.0

    def do_kpd() -> None:
        out["kpd"], out["kpd_err"] = fpd_mod.kpd(
            hlf_matrix(r, with_angle), hlf_matrix(g, with_angle), seed=fpd_seed, convention=fpd_convention
        )
        out[f"kpd_convention/{fpd_convention}"] = 1.0

    def do_cls_hlf() -> None:
        res = classifier.classifier_auc(
            hlf_matrix(g, with_angle), hlf_matrix(r, with_angle), seed=seed, name="classifier_hlf"
        )
        out["auc_hlf"], out["auc_hlf_err"] = res["auc"], res["auc_err"]

    def do_cls_cells() -> None:
        if cells is None:
            raise ValueError("metric 'classifier_cells' needs the shower cells; call evaluate() with Showers")
        gs, rs = cells
        res = classifier.classifier_auc(
            classifier.cell_inputs(
                gs.ecal[: classifier.MAX_CELL_EVENTS], gs.energy[: classifier.MAX_CELL_EVENTS]
            ),
            classifier.cell_inputs(
                rs.ecal[: classifier.MAX_CELL_EVENTS], rs.energy[: classifier.MAX_CELL_EVENTS]
            ),
            seed=seed,
            hidden=(16, 16),
            name="classifier_cells",
        )
        out["auc_cells"], out["auc_cells_err"] = res["auc"], res["auc_err"]

    timed("sf", do_sf)
    timed("separation", do_separation)
    stages: dict[str, Callable[[], None]] = {
        "gan3d": do_gan3d,
        "distances": do_distances,
        "fpd": do_fpd,
        "kpd": do_kpd,
        "classifier_hlf": do_cls_hlf,
        "classifier_cells": do_cls_cells,
    }
    for name in names:
        if name not in stages:
            continue
        try:
            timed(name, stages[name])
        except InsufficientEventsError as exc:
            # one metric the sample is too small for must not cost the others (or a run's final report);
            # the stages check their sizes before they write any key, so none is half written
            reason = f"needs >= {exc.needed} events{f' {exc.where}' if exc.where else ''}; got {exc.got}"
            log.warning("metric %r skipped: %s", name, reason)
            if skipped is not None:
                skipped[name] = reason
    out["physics_score"] = out["sf_rel_error"] + out["sep_rms"]
    return out
