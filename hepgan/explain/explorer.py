"""An offline, GAN Lab-style explorer of a trained generator: one HTML page with sliders over precomputed
showers.

:func:`precompute` samples the generator of a run on a small grid of conditions and latent points and
keeps, per grid point, the shower's x-y projection (summed over depth ``z``), its y-z projection (summed
over ``x``) and the numbers shown next to them; :func:`write_explorer` writes them into one
self-contained HTML file (vanilla JavaScript and canvas inline, the arrays embedded as base64; no server,
no network); :func:`explore` does both.

The grid: ``nE`` energies x ``nT`` angles (1 for the fixed-angle model) x ``nD`` latent directions x
``nS`` steps. The directions are varied one at a time with the others at 0 (a "plus" grid, not the full
product): point ``(e, t, d, s)`` is the shower of the noise ``n0 + steps[s] * u_d``, where ``n0 ~ N(0, 1)``
is one fixed noise vector (from ``seed``) and ``u_d`` the unit vector of direction ``d``, so ``steps`` are
in standard deviations of the noise along ``u_d``. ``steps`` is odd and symmetric around 0, so its middle
point is the same shower for every direction. The page's sliders move in physical units (GeV, degrees,
standard deviations) and show the nearest precomputed point (nearest in ``log E`` for the energy).

The latent vector is built as the generator's own ``latent`` builds it, with the noise given:
fixed25 ``z = E/100 * noise`` (with ``conditioning="product_and_value"`` its first entry is ``E/100``),
angle51 ``z = [E/100, theta, noise]``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np

from hepgan.data.types import Showers
from hepgan.fileio import write_text

log = logging.getLogger(__name__)

TEMPLATE = "explorer_template.html"
"""The page template (package data of :mod:`hepgan.explain`)."""

N_ENERGIES = 8
"""Energies of the default grid (log-spaced over the run's energy range)."""

N_THETAS = 5
"""Angles of the default grid of angle models (evenly spaced over the run's angle range)."""

FLOAT32_MAX_BYTES = 4_000_000
"""``encoding="auto"`` embeds the maps as float32 up to this many raw bytes, as "log16" above."""

LOG16_DECADES = 12.0
"""The "log16" encoding keeps values down to this many decades below the largest of each array."""


@dataclass
class ReferenceData:
    """Mean simulated showers at the grid conditions: the reference events grouped by their nearest grid
    energy (in ``log E``) and nearest grid angle.

    Shapes (``nE``, ``nT``: grid energies and angles; ``X, Y, Z``: the cell grid), GeV unless said:
    ``energy: [nE, nT]`` mean incident energy of the events in each group (NaN where none);
    ``count: [nE, nT]`` int64 events per group; ``xy: [nE, nT, X, Y]`` and ``yz: [nE, nT, Y, Z]`` mean
    projections; ``longitudinal: [nE, nT, Z]`` mean energy per layer; ``lateral: [nE, nT, X]`` mean energy
    per x column; ``e_vis: [nE, nT]`` mean visible energy; ``sampling_fraction: [nE, nT]``
    ``e_vis / energy`` (ratio of the means); ``depth: [nE, nT]`` energy-weighted mean layer index of the
    mean shower (0 = front). Empty groups hold zeros (NaN for ``energy``).
    """

    energy: np.ndarray
    count: np.ndarray
    xy: np.ndarray
    yz: np.ndarray
    longitudinal: np.ndarray
    lateral: np.ndarray
    e_vis: np.ndarray
    sampling_fraction: np.ndarray
    depth: np.ndarray


@dataclass
class ExplorerData:
    """What the explorer page shows: the grid axes and, per grid point, two projections, two profiles and
    three numbers of the generated shower (see the module docstring for the grid).

    Axes: ``energies: [nE]`` GeV (ascending); ``thetas_deg: [nT]`` degrees (``[90]`` for the fixed-angle
    model); ``direction_names: [nD]``; ``direction_r2: [nD]`` (R^2 of the direction's fit, None when not
    from a fit); ``steps: [nS]`` standard deviations of the noise along each direction (odd, symmetric).

    Per grid point ``[nE, nT, nD, nS]``, GeV unless said: ``xy: [..., X, Y]`` float32 summed over depth;
    ``yz: [..., Y, Z]`` float32 summed over x; ``longitudinal: [..., Z]`` energy per layer;
    ``lateral: [..., X]`` energy per x column; ``e_vis: [...]`` visible energy; ``sampling_fraction:
    [...]`` ``e_vis / E``; ``depth: [...]`` energy-weighted mean layer index (0 = front; 0 for an empty
    shower).

    ``angle_model``: the generator takes the angle (the page shows the angle slider); ``info``: run facts
    shown on the page (model arch/size, step, checkpoint, BatchNorm statistics, seed, latent formula,
    ...; JSON-able); ``reference``: mean simulated showers at the grid conditions, or None.
    """

    energies: np.ndarray
    thetas_deg: np.ndarray
    direction_names: list[str]
    direction_r2: list[float | None]
    steps: np.ndarray
    xy: np.ndarray
    yz: np.ndarray
    longitudinal: np.ndarray
    lateral: np.ndarray
    e_vis: np.ndarray
    sampling_fraction: np.ndarray
    depth: np.ndarray
    angle_model: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    reference: ReferenceData | None = None

    def __post_init__(self) -> None:
        self.energies = np.asarray(self.energies, np.float64)
        self.thetas_deg = np.asarray(self.thetas_deg, np.float64)
        self.steps = np.asarray(self.steps, np.float64)
        self.direction_names = [str(n) for n in self.direction_names]
        self.direction_r2 = [None if r is None else float(r) for r in self.direction_r2]
        for name in ("energies", "thetas_deg", "steps"):
            a = getattr(self, name)
            if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
                raise ValueError(f"ExplorerData.{name} must be a non-empty 1-D array of finite numbers")
        if np.any(self.energies <= 0) or np.any(np.diff(self.energies) <= 0):
            raise ValueError(f"ExplorerData.energies must be positive and ascending; got {self.energies}")
        if self.steps.size % 2 != 1 or self.steps[self.steps.size // 2] != 0.0:
            raise ValueError(
                f"ExplorerData.steps must be odd in number with 0 in the middle; got {self.steps}"
            )
        if not self.direction_names or len(self.direction_r2) != len(self.direction_names):
            raise ValueError(
                "ExplorerData.direction_names must be non-empty and direction_r2 as long; got "
                f"{len(self.direction_names)} names and {len(self.direction_r2)} R^2 values"
            )
        head = (self.energies.size, self.thetas_deg.size, len(self.direction_names), self.steps.size)
        self.xy = np.asarray(self.xy, np.float32)
        self.yz = np.asarray(self.yz, np.float32)
        if self.xy.ndim != 6 or self.xy.shape[:4] != head:
            raise ValueError(
                f"ExplorerData.xy must be [{', '.join(map(str, head))}, X, Y]; got {self.xy.shape}"
            )
        x, y = self.xy.shape[4:]
        if self.yz.ndim != 6 or self.yz.shape[:5] != (*head, y):
            raise ValueError(
                f"ExplorerData.yz must be [{', '.join(map(str, head))}, {y}, Z]; got {self.yz.shape}"
            )
        z = self.yz.shape[5]
        want = {
            "longitudinal": (*head, z),
            "lateral": (*head, x),
            "e_vis": head,
            "sampling_fraction": head,
            "depth": head,
        }
        for name, shape in want.items():
            a = np.asarray(getattr(self, name), np.float64)
            if a.shape != shape:
                raise ValueError(f"ExplorerData.{name} must have shape {list(shape)}; got {list(a.shape)}")
            setattr(self, name, a)
        if self.reference is not None:
            r = self.reference
            ne, nt = head[:2]
            ref_want = {
                "energy": (ne, nt),
                "count": (ne, nt),
                "xy": (ne, nt, x, y),
                "yz": (ne, nt, y, z),
                "longitudinal": (ne, nt, z),
                "lateral": (ne, nt, x),
                "e_vis": (ne, nt),
                "sampling_fraction": (ne, nt),
                "depth": (ne, nt),
            }
            for name, shape in ref_want.items():
                got = np.shape(getattr(r, name))
                if got != shape:
                    raise ValueError(
                        f"ExplorerData.reference.{name} must have shape {list(shape)}; got {list(got)}"
                    )

    @property
    def grid(self) -> tuple[int, int, int]:
        """The cell grid ``(X, Y, Z)``."""
        return int(self.xy.shape[4]), int(self.xy.shape[5]), int(self.yz.shape[5])

    @property
    def n_points(self) -> int:
        """Number of grid points ``nE * nT * nD * nS`` (the middle step repeated for every direction)."""
        return int(np.prod(self.xy.shape[:4]))


# --------------------------------------------------------------------------------------------------------
# shower summaries
# --------------------------------------------------------------------------------------------------------


def summarize(cells: np.ndarray, energy: np.ndarray) -> dict[str, np.ndarray]:
    """The explorer's view of showers ``cells: [..., X, Y, Z]`` GeV at incident ``energy: [...]`` GeV.

    Returns ``xy: [..., X, Y]`` float32 (summed over depth), ``yz: [..., Y, Z]`` float32 (summed over x),
    and float64 ``longitudinal: [..., Z]``, ``lateral: [..., X]`` (GeV per layer / per x column),
    ``e_vis: [...]`` GeV, ``sampling_fraction: [...]`` (``e_vis / energy``, 0 where ``energy`` is 0) and
    ``depth: [...]`` (energy-weighted mean layer index, 0 for an empty shower).
    """
    cells = np.asarray(cells)
    if cells.ndim < 3:
        raise ValueError(f"cells must be [..., X, Y, Z]; got shape {cells.shape}")
    energy = np.asarray(energy, np.float64)
    if energy.shape != cells.shape[:-3]:
        raise ValueError(f"energy must have shape {list(cells.shape[:-3])}; got {list(energy.shape)}")
    xy = np.asarray(np.sum(cells, axis=-1, dtype=np.float64))
    yz = np.asarray(np.sum(cells, axis=-3, dtype=np.float64))
    longitudinal = np.sum(yz, axis=-2)
    lateral = np.sum(xy, axis=-1)
    return {
        "xy": xy.astype(np.float32),
        "yz": yz.astype(np.float32),
        **_numbers(longitudinal, lateral, energy),
    }


def _numbers(longitudinal: np.ndarray, lateral: np.ndarray, energy: np.ndarray) -> dict[str, np.ndarray]:
    """Profiles ``[..., Z]``, ``[..., X]`` GeV and ``energy: [...]`` GeV -> the profiles and the numbers."""
    e_vis = np.sum(longitudinal, axis=-1)
    layers = np.arange(longitudinal.shape[-1], dtype=np.float64)
    moment = np.sum(longitudinal * layers, axis=-1)
    depth = np.divide(moment, e_vis, out=np.zeros_like(e_vis), where=e_vis > 0)
    sf = np.divide(e_vis, energy, out=np.zeros_like(e_vis), where=energy > 0)
    return {
        "longitudinal": longitudinal,
        "lateral": lateral,
        "e_vis": e_vis,
        "sampling_fraction": sf,
        "depth": depth,
    }


def nearest_index(axis: np.ndarray, values: np.ndarray, *, log: bool = False) -> np.ndarray:
    """Index into ``axis: [n]`` of the point nearest to each of ``values: [m]`` (in ``log`` when ``log``);
    ties go to the lower index. Returns ``[m]`` int64."""
    a = np.log(np.asarray(axis, np.float64)) if log else np.asarray(axis, np.float64)
    v = np.log(np.asarray(values, np.float64)) if log else np.asarray(values, np.float64)
    return np.argmin(np.abs(v[:, None] - a[None, :]), axis=1).astype(np.int64)


def reference_means(
    showers: Showers, energies: np.ndarray, thetas_deg: np.ndarray, *, chunk: int = 256
) -> ReferenceData:
    """Group the reference ``showers`` (cells in GeV) by nearest grid energy (``energies: [nE]`` GeV, in
    ``log E``) and nearest grid angle (``thetas_deg: [nT]`` degrees; showers without an angle are at 90)
    and average each group; see :class:`ReferenceData`. Reads ``chunk`` events at a time."""
    energies = np.asarray(energies, np.float64)
    thetas_deg = np.asarray(thetas_deg, np.float64)
    ne, nt = energies.size, thetas_deg.size
    x, y, z = showers.grid
    ie = nearest_index(energies, showers.energy, log=True)
    it = nearest_index(thetas_deg, np.degrees(showers.theta_or_normal().astype(np.float64)))
    group = ie * nt + it
    xy = np.zeros((ne * nt, x, y))
    yz = np.zeros((ne * nt, y, z))
    count = np.bincount(group, minlength=ne * nt).astype(np.int64)
    e_sum = np.bincount(group, weights=showers.energy.astype(np.float64), minlength=ne * nt)
    for start in range(0, len(showers), chunk):
        cells = np.asarray(showers.ecal[start : start + chunk])
        g = group[start : start + chunk]
        np.add.at(xy, g, np.sum(cells, axis=3, dtype=np.float64))
        np.add.at(yz, g, np.sum(cells, axis=1, dtype=np.float64))
    n = np.maximum(count, 1).astype(np.float64)
    xy /= n[:, None, None]
    yz /= n[:, None, None]
    mean_e = np.where(count > 0, e_sum / n, np.nan)
    nums = _numbers(np.sum(yz, axis=1), np.sum(xy, axis=2), np.nan_to_num(mean_e))
    return ReferenceData(
        energy=mean_e.reshape(ne, nt),
        count=count.reshape(ne, nt),
        xy=xy.astype(np.float32).reshape(ne, nt, x, y),
        yz=yz.astype(np.float32).reshape(ne, nt, y, z),
        longitudinal=nums["longitudinal"].reshape(ne, nt, z),
        lateral=nums["lateral"].reshape(ne, nt, x),
        e_vis=nums["e_vis"].reshape(ne, nt),
        sampling_fraction=nums["sampling_fraction"].reshape(ne, nt),
        depth=nums["depth"].reshape(ne, nt),
    )


# --------------------------------------------------------------------------------------------------------
# latent directions and the grid
# --------------------------------------------------------------------------------------------------------


def read_directions(
    path: str | Path, *, max_directions: int = 2
) -> dict[str, tuple[np.ndarray, float | None]]:
    """The latent directions of a ``dissect.json`` (``{"latent_directions": {name: {"vector": [...],
    "r2": float}}}``), the ``max_directions`` with the highest R^2 first: ``{name: (vector [n] float64,
    r2)}``. Empty when the file has no ``latent_directions``. Raises ``ValueError`` naming the file when it
    is not readable JSON or an entry has no vector."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    found = doc.get("latent_directions") if isinstance(doc, dict) else None
    if not isinstance(found, dict):
        return {}
    out: dict[str, tuple[np.ndarray, float | None]] = {}
    for name, entry in found.items():
        vec = entry.get("vector") if isinstance(entry, dict) else entry
        try:
            arr = np.asarray(vec, np.float64)
        except (TypeError, ValueError):
            arr = np.zeros(0)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{path}: latent_directions[{name!r}] has no vector (a list of floats)")
        r2 = entry.get("r2") if isinstance(entry, dict) else None
        out[str(name)] = (arr, None if r2 is None or not math.isfinite(float(r2)) else float(r2))
    ranked = sorted(out.items(), key=lambda kv: -math.inf if kv[1][1] is None else -cast(float, kv[1][1]))
    return dict(ranked[:max_directions])


def unit_directions(
    directions: Mapping[str, np.ndarray | tuple[np.ndarray, float | None]],
    noise_dim: int,
    latent_dim: int,
) -> tuple[list[str], np.ndarray, list[float | None]]:
    """Names, unit vectors ``[nD, noise_dim]`` float32 and R^2 (None where not given) of ``directions``.

    A vector of ``noise_dim`` entries is taken as a direction of the noise; one of ``latent_dim`` entries
    as a direction of the latent vector, of which the noise entries are kept (the last ``noise_dim``).
    ``ValueError`` naming the direction for another length, a non-finite or a zero vector."""
    names, vectors, r2s = [], [], []
    for name, value in directions.items():
        vec, r2 = value if isinstance(value, tuple) else (value, None)
        v = np.asarray(vec, np.float64).ravel()
        if v.size == latent_dim and v.size != noise_dim:
            v = v[latent_dim - noise_dim :]
        if v.size != noise_dim:
            raise ValueError(
                f"latent direction {name!r} has {v.size} entries; expected {noise_dim} (noise) or "
                f"{latent_dim} (latent vector)"
            )
        norm = float(np.linalg.norm(v))
        if not np.all(np.isfinite(v)) or norm == 0.0:
            raise ValueError(f"latent direction {name!r} is not a finite non-zero vector")
        names.append(str(name))
        vectors.append(v / norm)
        r2s.append(None if r2 is None else float(r2))
    if not names:
        raise ValueError("no latent directions given")
    return names, np.asarray(vectors, np.float32), r2s


def _axis_directions(noise_dim: int, first: int) -> dict[str, np.ndarray]:
    """The noise coordinate axes ``first`` and ``first + 1`` (as many as there are) as directions."""
    out = {}
    for i in range(first, min(first + 2, noise_dim)):
        v = np.zeros(noise_dim)
        v[i] = 1.0
        out[f"noise[{i}]"] = v
    return out


def _default_energies(conf: Any) -> np.ndarray:
    """``N_ENERGIES`` log-spaced energies (3 significant digits) over the run's ``data.energy`` range; the
    listed energies of a ``list``/``fixed`` spec when there are at most that many."""
    from hepgan.data.simulate import EnergySpec

    spec = EnergySpec.coerce(conf.data.energy)
    if spec.kind in ("list", "fixed") and len(set(spec.values)) <= N_ENERGIES:
        return np.unique(np.asarray(spec.values, np.float64))
    lo, hi = spec.bounds
    return np.unique([float(f"{e:.3g}") for e in np.geomspace(lo, hi, N_ENERGIES)])


def _default_thetas(conf: Any, angle_model: bool) -> np.ndarray:
    """90 degrees for a fixed-angle model; ``N_THETAS`` angles over the run's ``data.theta_deg`` range."""
    from hepgan.data.simulate import parse_theta

    if not angle_model:
        return np.asarray([90.0])
    lo, hi = parse_theta(conf.data.theta_deg)
    return np.asarray([lo]) if lo == hi else np.linspace(lo, hi, N_THETAS)


def conditioned_latent(g: Any, energy: np.ndarray, theta: np.ndarray, noise: np.ndarray) -> Any:
    """The latent vectors ``[B, latent_dim]`` float32 (JAX) the generator ``g`` builds from ``energy: [B]``
    GeV, ``theta: [B]`` rad and the given ``noise: [B, noise_dim]`` instead of a random draw (see the
    module docstring). ``TypeError`` for a generator of another kind."""
    import jax.numpy as jnp

    from hepgan.models import AngleGenerator, Generator3D

    e = jnp.asarray(energy, jnp.float32) / jnp.float32(100.0)
    n = jnp.asarray(noise, jnp.float32)
    if isinstance(g, AngleGenerator):
        th = jnp.asarray(theta, jnp.float32)
        return jnp.concatenate([e[:, None], th[:, None], n], axis=1)
    if isinstance(g, Generator3D):
        z = e[:, None] * n
        if g.cfg.conditioning == "product_and_value":
            z = z.at[:, 0].set(e)
        return z
    raise TypeError(f"the explorer builds latents of Generator3D and AngleGenerator; got {type(g).__name__}")


def noise_dim_of(g: Any) -> int:
    """Entries of the latent vector of generator ``g`` that are noise (the rest are conditions)."""
    from hepgan.models import AngleGenerator

    return int(g.latent_dim) - (2 if isinstance(g, AngleGenerator) else 0)


def _latent_formula(g: Any) -> str:
    from hepgan.models import AngleGenerator

    if isinstance(g, AngleGenerator):
        return "z = [E/100, theta (rad), n0 + s * u]"
    if g.cfg.conditioning == "product_and_value":
        return "z = E/100 * (n0 + s * u), then z[0] = E/100"
    return "z = E/100 * (n0 + s * u)"


def _checkpoint_spec(run_dir: Path, checkpoint: str | Path | None) -> tuple[Path, bool, int | None]:
    """``(run directory, best, step)`` as ``hepgan.train.api.evaluate_checkpoint`` reads ``checkpoint``."""
    from hepgan.train.api import _which_checkpoint

    return _which_checkpoint(run_dir, checkpoint)


def run_reference(conf: Any, n_events: int) -> Showers:
    """The first ``n_events`` held-out reference events of the run ``conf`` (its validation events: the
    simulator stream after the training events, or the reference files/fraction), cells in GeV."""
    from hepgan.data.source import open_source

    if n_events < 1:
        raise ValueError(f"reference: need at least 1 event; got {n_events}")
    data = conf.data
    if data.kind == "simulated":
        data = dataclasses.replace(data, n_events=1, n_reference=n_events)
    source = open_source(data).reference
    return source.read(np.arange(min(n_events, len(source))))


def precompute(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    energies: Sequence[float] | np.ndarray | None = None,
    thetas_deg: Sequence[float] | np.ndarray | None = None,
    directions: Mapping[str, np.ndarray] | None = None,
    steps: int = 5,
    span: float = 2.0,
    seed: int = 0,
    reference: Showers | int | None = None,
    directions_file: str | Path | None = None,
    max_directions: int = 2,
) -> ExplorerData:
    """Sample the generator of a run over the explorer grid (see the module docstring).

    ``run_dir``: a directory written by ``hepgan-train``; ``checkpoint``: None/"best" (the best checkpoint,
    the newest if the run kept none), "latest", or a path inside the run (as
    :func:`hepgan.train.api.evaluate_checkpoint`). The EMA weights in eval mode with the run's BatchNorm
    statistics ``train.sample_bn`` ("recomputed": measured on copies, at the grid's conditions).

    ``energies``: grid energies in GeV (default: ``N_ENERGIES`` log-spaced over the run's ``data.energy``
    range); ``thetas_deg``: grid angles in degrees (angle models; default ``N_THETAS`` over
    ``data.theta_deg``; fixed-angle models take only 90). ``directions``: ``{name: vector}`` of noise
    (``noise_dim``) or latent (``latent_dim``) entries, normalised to unit length; None: the
    ``max_directions`` with the highest R^2 in ``directions_file`` (a ``dissect.json``) when it exists,
    else the first two noise coordinates the generator reads. ``steps`` (odd) points from ``-span`` to
    ``span`` standard deviations along each direction; ``seed``: the base noise ``n0``.
    ``reference``: simulated showers (cells in GeV) to average at the grid conditions, or a number of the
    run's held-out reference events to read (:func:`run_reference`), or None.

    Returns :class:`ExplorerData` (maps ``[nE, nT, nD, steps, ...]``). Raises ``FileNotFoundError`` for a
    folder that is not a run (naming ``manifest.json``) or a missing checkpoint, ``ValueError`` for a bad
    grid.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hepgan.models.conv import kernel_spectra, use_kernel_spectra
    from hepgan.train.checkpoint import restore_run
    from hepgan.train.state import recompute_bn_stats

    if steps < 1 or steps % 2 != 1:
        raise ValueError(f"steps must be an odd positive number (0 in the middle); got {steps}")
    if not (math.isfinite(span) and span > 0):
        raise ValueError(f"span must be a positive number of standard deviations; got {span}")
    root, best, step = _checkpoint_spec(Path(run_dir), checkpoint)
    players, state, preprocess, conf = restore_run(root, best=best, step=step)
    probe = players.generator(state, ema=True)
    angle_model = probe.cfg.arch == "angle51"
    latent_dim, noise_dim = int(probe.latent_dim), noise_dim_of(probe)

    e_axis = _default_energies(conf) if energies is None else np.asarray(energies, np.float64).ravel()
    if e_axis.size == 0 or not np.all(np.isfinite(e_axis)) or np.any(e_axis <= 0):
        raise ValueError(f"energies must be positive numbers of GeV; got {e_axis}")
    e_axis = np.unique(e_axis)
    t_axis = (
        _default_thetas(conf, angle_model)
        if thetas_deg is None
        else np.asarray(thetas_deg, np.float64).ravel()
    )
    t_axis = np.unique(t_axis)
    if t_axis.size == 0 or not np.all((t_axis > 0) & (t_axis < 180)):
        raise ValueError(f"thetas_deg must lie strictly between 0 and 180 degrees; got {t_axis}")
    if not angle_model and not np.array_equal(t_axis, [90.0]):
        raise ValueError(
            f"thetas_deg: the {probe.cfg.arch} model is at normal incidence only (90 degrees); got {t_axis}"
        )

    source = "given"
    if directions is None:
        found = {}
        if directions_file is not None and Path(directions_file).is_file():
            found = read_directions(directions_file, max_directions=max_directions)
            source = str(directions_file)
        if not found:
            skip = 1 if not angle_model and probe.cfg.conditioning == "product_and_value" else 0
            directions = _axis_directions(noise_dim, skip)
            source = "noise axes"
        else:
            directions = cast(Any, found)
    names, units, r2s = unit_directions(cast(Any, directions), noise_dim, latent_dim)
    s_axis = np.linspace(-span, span, steps)
    s_axis[steps // 2] = 0.0

    ne, nt, nd, ns = e_axis.size, t_axis.size, len(names), steps
    n0 = np.asarray(jax.random.normal(jax.random.key(seed), (noise_dim,), jnp.float32), np.float32)
    noise = n0 + (s_axis.astype(np.float32)[None, :, None] * units[:, None, :])  # [nD, nS, noise_dim]
    shape = (ne, nt, nd, ns)
    grid_e = np.broadcast_to(e_axis[:, None, None, None], shape).reshape(-1)  # float64, as on the page
    cond_e = grid_e.astype(np.float32)
    cond_t = np.broadcast_to(np.radians(t_axis)[None, :, None, None], shape).reshape(-1).astype(np.float32)
    flat_noise = np.broadcast_to(noise[None, None], (*shape, noise_dim)).reshape(-1, noise_dim)
    n = cond_e.size

    bn_stats = conf.train.sample_bn
    if bn_stats == "recomputed":  # on copies: the state's own statistics stay as they are
        copied = state.g.replace(batch_stats=jax.tree.map(jnp.copy, state.g.batch_stats))
        g = players.generator(state.replace(g=copied), ema=True)
        recompute_bn_stats(g, cond_e, cond_t, seed)
    else:
        g = probe

    @nnx.jit
    def sample(g: Any, spectra: Any, z: jax.Array) -> jax.Array:
        with use_kernel_spectra(spectra):
            return g(z)

    batch = min(int(conf.train.batch_size), n)
    spectra = nnx.jit(lambda g: kernel_spectra(g, jax.ShapeDtypeStruct((batch, latent_dim), jnp.float32)))(g)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        rows = np.resize(np.arange(start, min(start + batch, n)), batch)  # the last chunk padded
        z = conditioned_latent(g, cond_e[rows], cond_t[rows], flat_noise[rows])
        x = np.asarray(preprocess.invert_cells(sample(g, spectra, z)), np.float32)[: min(batch, n - start)]
        for k, v in summarize(x, grid_e[start : start + len(x)]).items():
            parts.setdefault(k, []).append(v)
    out = {k: np.concatenate(v).reshape(*shape, *v[0].shape[1:]) for k, v in parts.items()}

    ref = None
    if reference is not None:
        showers = run_reference(conf, reference) if isinstance(reference, int) else reference
        if showers.grid != (*out["xy"].shape[4:], out["yz"].shape[5]):
            raise ValueError(f"reference showers have grid {showers.grid}; the generator's is {probe.grid}")
        ref = reference_means(showers, e_axis, t_axis)

    info = {
        "run_dir": str(root),
        "arch": probe.cfg.arch,
        "size": probe.cfg.size,
        "step": int(state.step),
        "checkpoint": "best" if best else "latest" if step is None else f"step {step}",
        "weights": "EMA",
        "sample_bn": bn_stats,
        "seed": int(seed),
        "latent_dim": latent_dim,
        "noise_dim": noise_dim,
        "latent": _latent_formula(probe),
        "directions_from": source,
        "reference_events": None if ref is None else int(ref.count.sum()),
    }
    return ExplorerData(
        energies=e_axis,
        thetas_deg=t_axis,
        direction_names=names,
        direction_r2=r2s,
        steps=s_axis,
        angle_model=angle_model,
        info=info,
        reference=ref,
        **out,
    )


# --------------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------------


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def encode_array(a: np.ndarray, encoding: str) -> tuple[str, dict[str, Any]]:
    """``a`` (any shape, values >= 0) as base64 of little-endian ``encoding`` values, and the decoding
    parameters: "float32" (exact float32), or "log16" (uint16 ``q``: 0 for 0 and for values more than
    ``LOG16_DECADES`` below the largest, else ``10**(lo + (q - 1) * step)``; relative error up to
    ``ln(10) * step / 2``, 2e-4 for 12 decades)."""
    flat = np.asarray(a, np.float64).ravel()
    if encoding == "float32":
        return _b64(flat.astype("<f4")), {"size": int(flat.size)}
    if encoding != "log16":
        raise ValueError(f"encoding must be 'float32', 'log16' or 'auto'; got {encoding!r}")
    pos = flat > 0
    hi = float(np.log10(flat[pos].max())) if pos.any() else 0.0
    keep = pos & (flat >= 10.0 ** (hi - LOG16_DECADES))
    lo = float(np.log10(flat[keep].min())) if keep.any() else hi
    step = (hi - lo) / 65534.0
    q = np.zeros(flat.size, np.float64)
    if step > 0:
        q[keep] = 1.0 + np.rint((np.log10(flat[keep]) - lo) / step)
    else:
        q[keep] = 1.0
    return _b64(q.astype("<u2")), {"size": int(flat.size), "lo": lo, "step": step}


def _finite_or_none(a: np.ndarray) -> list[Any]:
    return [_finite_or_none(v) if np.ndim(v) else (float(v) if np.isfinite(v) else None) for v in a]


def _finite_max(arrays: Any) -> float:
    """The largest finite value over ``arrays``; 1 when there is no positive one (an all-zero grid)."""
    best = 0.0
    for a in arrays:
        a = np.asarray(a, np.float64)
        finite = a[np.isfinite(a)]
        if finite.size:
            best = max(best, float(finite.max()))
    return best if best > 0 else 1.0


def page_payload(data: ExplorerData, *, encoding: str = "auto", decades: float = 5.0) -> dict[str, Any]:
    """The page's data: ``{"meta": JSON-able dict, "blobs": {name: base64}}`` with blobs ``xy`` ``[nE, nT,
    nD, nS, X, Y]`` and ``yz`` ``[nE, nT, nD, nS, Y, Z]`` (C order), with a reference also ``ref_xy``
    ``[nE, nT, X, Y]`` and ``ref_yz`` ``[nE, nT, Y, Z]``. ``encoding``: see :func:`encode_array`; "auto"
    is "float32" up to ``FLOAT32_MAX_BYTES`` raw bytes, else "log16". ``decades``: the fixed log colour
    range ``[hi / 10**decades, hi]`` GeV, ``hi`` the largest projection cell over the grid and the
    reference."""
    arrays = {"xy": data.xy, "yz": data.yz}
    ref = data.reference
    if ref is not None:
        arrays.update(ref_xy=np.asarray(ref.xy, np.float32), ref_yz=np.asarray(ref.yz, np.float32))
    if encoding == "auto":
        raw = sum(4 * a.size for a in arrays.values())
        encoding = "float32" if raw <= FLOAT32_MAX_BYTES else "log16"
    blobs, specs = {}, {}
    for name, a in arrays.items():
        blobs[name], specs[name] = encode_array(a, encoding)
        specs[name]["shape"] = list(a.shape)
    hi = _finite_max(arrays.values())
    long_max = _finite_max([data.longitudinal] + ([ref.longitudinal] if ref is not None else []))
    lat_max = _finite_max([data.lateral] + ([ref.lateral] if ref is not None else []))
    x, y, z = data.grid
    meta: dict[str, Any] = {
        "version": 1,
        "encoding": encoding,
        "grid": [x, y, z],
        "energies": data.energies.tolist(),
        "thetas_deg": data.thetas_deg.tolist(),
        "directions": [
            {"name": n, "r2": r} for n, r in zip(data.direction_names, data.direction_r2, strict=True)
        ],
        "steps": data.steps.tolist(),
        "centre": int(data.steps.size // 2),
        "angle_model": bool(data.angle_model),
        "colour": {"lo": hi / 10.0**decades, "hi": hi, "decades": float(decades)},
        "long_max": long_max,
        "lat_max": lat_max,
        "blobs": specs,
        "info": json.loads(json.dumps(data.info, default=str)),
        "reference": None
        if ref is None
        else {"energy": _finite_or_none(np.asarray(ref.energy)), "count": np.asarray(ref.count).tolist()},
    }
    return {"meta": meta, "blobs": blobs}


def _script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</``, ``<!--``)."""
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _notes(data: ExplorerData) -> str:
    ne, nt, nd, ns = data.xy.shape[:4]
    x, y, z = data.grid

    def nums(a: np.ndarray) -> str:
        return ", ".join(f"{v:.4g}" for v in a)

    dirs = ", ".join(
        html.escape(n) + ("" if r is None else f" (R² {r:.2f})")
        for n, r in zip(data.direction_names, data.direction_r2, strict=True)
    )
    angle = f"{nt} angle(s) ({nums(data.thetas_deg)}°)" if data.angle_model else "normal incidence (90°)"
    latent = html.escape(str(data.info.get("latent", "z from n0 + s * u")))
    seed = html.escape(str(data.info.get("seed", "?")))
    ref = (
        "No reference set was given."
        if data.reference is None
        else "Reference: the mean of the simulated showers whose energy is nearest (in log E) to the grid "
        "energy shown (and nearest grid angle); its E is their mean incident energy and E_vis/E the ratio "
        "of the means."
    )
    return (
        f"<p><b>Precomputed grid</b>: {ne} energies ({nums(data.energies)} GeV) × {angle} × {nd} latent "
        f"direction(s) [{dirs}] × {ns} steps s = ({nums(data.steps)}), the directions varied one at a time "
        f"with the others at 0 (a “plus” grid): {data.n_points} showers of {x}×{y}×{z} cells. "
        "<b>Each slider shows the nearest precomputed point</b> (nearest in log E for the energy); the "
        "value drawn is printed next to it. Moving one direction slider sets the others back to 0.</p>"
        f"<p><b>Latent</b>: {latent}, with one fixed noise vector n0 ~ N(0, 1) (seed {seed}) and u the unit "
        "vector of the chosen direction, so s is in standard deviations of the noise along u.</p>"
        "<p><b>Maps</b>: x-y projection (summed over depth z) and y-z projection (summed over x, depth to "
        "the right), log10 colour scale with one fixed range for every grid point (cells below it white). "
        "<b>Numbers</b>: E_vis = visible energy (sum of the cells), E_vis/E the sampling fraction, depth "
        f"the energy-weighted mean layer index (0 = front). {ref}</p>"
    )


def render_page(data: ExplorerData, *, title: str | None = None, encoding: str = "auto") -> str:
    """The explorer page of ``data`` as HTML text (see :func:`write_explorer`)."""
    payload = page_payload(data, encoding=encoding)
    if title is None:
        i = data.info
        title = f"Shower explorer: {i.get('arch', '?')}/{i.get('size', '?')}, step {i.get('step', '?')}"
    template = resources.files("hepgan.explain").joinpath(TEMPLATE).read_text(encoding="utf-8")
    fill = {
        "__TITLE__": html.escape(title),
        "__NOTES__": _notes(data),
        "/*__META__*/null": _script_json(payload["meta"]),
        "/*__BLOBS__*/null": _script_json(payload["blobs"]),
    }
    # one pass, so that no filled-in text is read as a placeholder
    return re.sub("|".join(re.escape(k) for k in fill), lambda mo: fill[mo.group(0)], template)


def write_explorer(
    data: ExplorerData, path: str | Path, *, title: str | None = None, encoding: str = "auto"
) -> Path:
    """Write the explorer page of ``data`` to ``path`` (parent folders created; atomic): one
    self-contained HTML file, no network. ``encoding`` of the maps: "auto", "float32" or "log16" (see
    :func:`page_payload`). Returns the path; ``OSError`` naming ``path`` when it cannot be written."""
    path = Path(path)
    text = render_page(data, title=title, encoding=encoding)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text(path, text)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the explorer page {path}: {exc.strerror or exc}") from exc


def explore(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    title: str | None = None,
    encoding: str = "auto",
    **kw: Any,
) -> Path:
    """:func:`precompute` the grid of ``run_dir`` (keywords ``kw``; without ``directions``, those of
    ``out_dir/dissect.json`` when it exists) and :func:`write_explorer` it to ``out_dir/explorer.html``.
    Returns the page's path."""
    out_dir = Path(out_dir)
    kw.setdefault("directions_file", out_dir / "dissect.json")
    data = precompute(run_dir, **kw)
    page = write_explorer(data, out_dir / "explorer.html", title=title, encoding=encoding)
    log.info("explorer: %s (%.2f MB, %d showers)", page, page.stat().st_size / 1e6, data.n_points)
    return page
