"""A parametrised electromagnetic shower simulator in the spirit of GFLASH.

The model follows G. Grindhammer and S. Peters, "The parameterized simulation of electromagnetic showers in
homogeneous and sampling calorimeters", hep-ex/0001020 (hereafter GP), with the numerical constants of the
GFLASH tuning classes of Geant4 (``GVFlashHomoShowerTuning``, ``GFlashSamplingShowerTuning``), which
implement that paper. docs/simulator.md lists every constant with its source and what is simplified.

One shower of primary energy ``E`` (GeV) at polar angle ``theta``:

1. *Medium.* The W/Si layers are homogenised (GP section 4): mass fractions ``w_i`` give ``Z_eff``,
   ``X0_eff``, ``R_M,eff``, ``E_c,eff``; ``F_S = X0_eff / (d_abs + d_sensor)`` and
   ``e/mip = 1 / (1 + 0.007 (Z_abs - Z_sensor))``. ``y = E / E_c,eff``.
2. *Longitudinal profile.* ``dE/dt = E f(t)``, ``f`` a gamma density in ``t`` (depth along the shower axis
   in X0_eff) with shape ``alpha`` and maximum ``T = (alpha - 1) / beta``. Per shower, ``(ln T, ln alpha)``
   is drawn from a correlated normal whose means, widths and correlation depend on ``ln y`` (GP eqs. for
   homogeneous media plus the sampling-calorimeter corrections in ``1/F_S`` and ``1 - e/mip``).
3. *Radial profile.* At depth ``tau`` (``t`` relative to the shower's centre of gravity, in units of the
   average maximum) the energy density in ``r`` (units of R_M,eff) is
   ``p * 2 r Rc^2 / (r^2 + Rc^2)^2 + (1 - p) * 2 r Rt^2 / (r^2 + Rt^2)^2`` with GP's ``Rc(tau)``,
   ``Rt(tau)``, ``p(tau)`` (and their sampling corrections). ``SimulatorConfig.radial_scale`` multiplies
   every transverse width.
4. *Spots.* The energy is deposited as ``N`` spots, each drawn independently: depth from the shower's gamma
   profile, core or tail with probability ``p(tau)``, radius by inverting the chosen component's CDF
   (``r = R sqrt(u / (1 - u))``), azimuth uniform. GFLASH would use ~``93 ln(Z) E^0.876 / 0.11``
   spots (tens of thousands at 100 GeV); we use ``N = clip(spots_per_gev * E, min_spots, max_spots)``
   and let the spot energies carry the sampling fluctuations instead: spot energies are
   ``Gamma(k)`` distributed with ``N k = E / a^2``, so the visible energy has relative spread
   ``a / sqrt(E)`` whatever ``N`` (drawn per hit cell as ``Gamma(n_cell k)``, the law of the sum of its
   spots); a per-shower factor ``1 + b * N(0, 1)`` adds the constant term ``b``.
   The visible energy is ``sampling_fraction * E`` on average (about 2 %, as in the 3DGAN files).
5. *Geometry.* The shower starts at the transverse centre of the front face; its axis is
   ``(0, cos theta, sin theta)`` in ``(x, y, z)`` (``theta = pi/2`` is normal incidence; for
   ``theta < pi/2`` the shower moves towards larger ``y`` with depth), see :mod:`hepgan.data.types`.
   Spots are binned into cells with one ``np.bincount`` on flat cell indices; spots outside the grid
   (leakage) are lost.

Reproducibility: event ``i`` (global index) draws every random number from its own generator
``default_rng(SeedSequence(seed, spawn_key=(i,)))`` -- the ``i``-th child of ``SeedSequence(seed).spawn``
-- so shower ``i`` is the same whatever the batch size, start offset, chunking or number of worker
processes. Its energy and angle are the first draws of that generator, so they too depend only on
``(seed, i)``; the shower's own draws do not depend on the configuration, so changing ``radial_scale``
or ``sampling_fraction`` changes a shower but not its random numbers.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hepgan.data.geometry import Geometry, get_geometry
from hepgan.data.types import Showers
from hepgan.progress import track

# --------------------------------------------------------------------------------------------------------
# GFLASH constants (GP tables; numerical values as in Geant4's GFlash tuning classes)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GflashConstants:
    """The GFLASH fit constants (GP hep-ex/0001020; values of Geant4 ``GVFlashHomoShowerTuning`` and
    ``GFlashSamplingShowerTuning``). ``y = E / E_c``, ``E`` in GeV where a ``ln E`` appears, ``Z`` the
    effective atomic number; radii in Moliere radii."""

    # homogeneous medium, individual profiles
    lnT_t1: float = -0.812  # <ln T_hom> = ln(ln y + lnT_t1)
    lnA_a1: float = 0.81  # <ln alpha_hom> = ln(a1 + (a2 + a3 / Z) ln y)
    lnA_a2: float = 0.458
    lnA_a3: float = 2.26
    # sampling calorimeter corrections
    sam_T_t1: float = -0.55  # <ln T_sam> = ln(exp<ln T_hom> + t1 / F_S + t2 (1 - e/mip))
    sam_T_t2: float = -0.69
    sam_A_a1: float = -0.476  # <ln alpha_sam> = ln(exp<ln alpha_hom> + a1 / F_S)
    sig_lnT_s1: float = -2.5  # sigma(ln T_sam) = 1 / (s1 + s2 ln y)
    sig_lnT_s2: float = 1.25
    sig_lnA_s1: float = -0.82  # sigma(ln alpha_sam) = 1 / (s1 + s2 ln y)
    sig_lnA_s2: float = 0.79
    rho_r1: float = 0.784  # corr(ln T, ln alpha) = r1 + r2 ln y
    rho_r2: float = -0.023
    # radial profile, homogeneous
    rc_z1a: float = 0.0251  # Rc = z1 + z2 tau, z1 = a + b ln E, z2 = c + d Z
    rc_z1b: float = 0.00319
    rc_z2a: float = 0.1162
    rc_z2b: float = -0.000381
    rt_k1a: float = 0.659  # Rt = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2))), k1 = a + b Z
    rt_k1b: float = -0.00309
    rt_k2: float = 0.645
    rt_k3: float = -2.59
    rt_k4a: float = 0.3585  # k4 = a + b ln E
    rt_k4b: float = 0.0412
    p_p1a: float = 2.632  # p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)), p1 = a + b Z
    p_p1b: float = -0.00094
    p_p2a: float = 0.401  # p2 = a + b Z
    p_p2b: float = 0.00187
    p_p3a: float = 1.313  # p3 = a + b ln E
    p_p3b: float = -0.0686
    # radial profile, sampling corrections
    sam_rc_c1: float = -0.0203  # Rc += c1 (1 - e/mip) + c2 / F_S exp(-tau)
    sam_rc_c2: float = 0.0397
    sam_rt_c1: float = -0.14  # Rt += c1 (1 - e/mip) + c2 / F_S exp(-tau)
    sam_rt_c2: float = -0.495
    sam_p_c1: float = 0.348  # p += (1 - e/mip) (c1 + c2 / F_S exp(-(tau - 1)^2))
    sam_p_c2: float = -0.642
    # GFLASH's own guards on the drawn profile (Geant4 GFlashSamplingShowerParameterisation)
    sigma_max: float = 0.5
    t_max_min: float = 1.0
    alpha_min: float = 1.1


GFLASH = GflashConstants()

# Moliere-radius scale energy E_s = m_e sqrt(4 pi / alpha), PDG (Review of Particle Physics, sec. 34.4.2)
E_S_MEV = 21.2052

# Energies below this make GFLASH's ln(ln y - ...) undefined for W/Si; far below any 3DGAN data set.
MIN_ENERGY_GEV = 0.1


# --------------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------------


# The CaloChallenge datasets 2 and 3 (README of calochallenge.github.io/homepage): cell energies are the
# sensor energy divided by 0.033, i.e. on the incident-energy scale (sampling_fraction 1 here), and cells
# below 0.5 keV / 0.033 = 15.15 keV read 0. Their Geant4 showers light thousands of cells above that
# threshold, so the showers are made of more spots than the 3DGAN presets' (a spot lights one cell).
_CALOCHALLENGE_RESPONSE: dict[str, Any] = {
    "sampling_fraction": 1.0,
    "cell_threshold_gev": 0.5e-6 / 0.033,
    "spots_per_gev": 100.0,
    "min_spots": 400,
    "max_spots": 12000,
}
GEOMETRY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ds2": _CALOCHALLENGE_RESPONSE,
    "ds3": _CALOCHALLENGE_RESPONSE,
}
"""Per-geometry defaults of :class:`SimulatorConfig` fields (:meth:`SimulatorConfig.for_geometry`)."""


@dataclass
class SimulatorConfig:
    """Everything that defines the simulated calorimeter and its response.

    Material constants are PDG values (Atomic and Nuclear Properties, pdg.lbl.gov/AtomicNuclearProperties):
    tungsten Z = 74, A = 183.84, rho = 19.30 g/cm3, X0 = 3.504 mm, R_M = 9.327 mm, E_c(e-) = 7.97 MeV;
    silicon Z = 14, A = 28.0855, rho = 2.329 g/cm3, X0 = 93.70 mm, R_M = 49.44 mm, E_c(e-) = 40.19 MeV.
    ``geometry`` is a preset name (:func:`hepgan.data.geometry.get_geometry`) or a
    :class:`~hepgan.data.geometry.Geometry`; it fixes the cell grid and the absorber/sensor thicknesses.

    Response: ``sampling_fraction`` is the mean visible fraction (0.02 as in the 3DGAN files);
    ``stochastic_term`` ``a`` and ``constant_term`` ``b`` give ``sigma/E = a/sqrt(E/GeV) (+) b`` before
    leakage (defaults 0.17 and 0.01, the SiW ECAL figure of the CLIC CDR, CERN-2012-003; CALICE
    measured 16.5 %/sqrt(E) (+) 1.1 % with its SiW prototype, NIM A 608 (2009) 372).
    ``radial_scale`` multiplies every transverse width. ``spots_per_gev``, ``min_spots`` and
    ``max_spots`` set the number of energy spots per shower (see the module docstring).
    ``longitudinal_fluctuations=False`` gives every shower the mean GFLASH profile parameters (for tests
    against the analytic profile). ``cell_threshold_gev``: cells below it read 0 (the readout threshold;
    0 keeps every deposit).

    A cylindrical geometry (``ds2``, ``ds3``) is binned around the particle's direction and needs normal
    incidence. For the CaloChallenge presets use :func:`calochallenge_simulator`: the challenge's files
    hold the sensor energy divided by its sampling fraction 0.033 (energies on the incident scale, so
    ``E_tot / E_inc`` is near 1 less leakage) and drop cells below 15.15 keV.
    """

    geometry: str | Geometry = "fixed25"
    absorber_z: float = 74.0
    absorber_a: float = 183.84
    absorber_density_g_cm3: float = 19.30
    absorber_x0_mm: float = 3.504
    absorber_moliere_mm: float = 9.327
    absorber_critical_energy_mev: float = 7.97
    sensor_z: float = 14.0
    sensor_a: float = 28.0855
    sensor_density_g_cm3: float = 2.329
    sensor_x0_mm: float = 93.70
    sensor_moliere_mm: float = 49.44
    sensor_critical_energy_mev: float = 40.19
    sampling_fraction: float = 0.02
    stochastic_term: float = 0.17
    constant_term: float = 0.01
    radial_scale: float = 1.0
    spots_per_gev: float = 40.0
    min_spots: int = 100
    max_spots: int = 2500
    longitudinal_fluctuations: bool = True
    cell_threshold_gev: float = 0.0

    def __post_init__(self) -> None:
        self.grid_geometry()  # raises for an unknown preset name
        positive = [
            "absorber_z",
            "absorber_a",
            "absorber_density_g_cm3",
            "absorber_x0_mm",
            "absorber_moliere_mm",
            "absorber_critical_energy_mev",
            "sensor_z",
            "sensor_a",
            "sensor_density_g_cm3",
            "sensor_x0_mm",
            "sensor_moliere_mm",
            "sensor_critical_energy_mev",
            "radial_scale",
            "spots_per_gev",
        ]
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"SimulatorConfig.{name} must be a finite number > 0; got {v!r}")
        if not 0 < self.sampling_fraction <= 1:
            raise ValueError(
                f"SimulatorConfig.sampling_fraction must be in (0, 1]; got {self.sampling_fraction!r}"
            )
        for name in ("stochastic_term", "constant_term"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise ValueError(f"SimulatorConfig.{name} must be in [0, 1); got {v!r}")
        if not (isinstance(self.min_spots, int) and isinstance(self.max_spots, int) and 1 <= self.min_spots):
            raise ValueError(
                "SimulatorConfig.min_spots and max_spots must be ints >= 1; "
                f"got {self.min_spots!r}, {self.max_spots!r}"
            )
        if not (math.isfinite(self.cell_threshold_gev) and self.cell_threshold_gev >= 0):
            raise ValueError(
                "SimulatorConfig.cell_threshold_gev must be a finite number >= 0; "
                f"got {self.cell_threshold_gev!r}"
            )
        if self.max_spots < self.min_spots:
            raise ValueError(
                f"SimulatorConfig.max_spots ({self.max_spots}) must be >= min_spots ({self.min_spots})"
            )

    @classmethod
    def for_geometry(cls, geometry: str | Geometry, **overrides: Any) -> SimulatorConfig:
        """The configuration for a geometry preset: :data:`GEOMETRY_DEFAULTS` of that preset (the
        CaloChallenge response for ``ds2``/``ds3``), then ``overrides`` (field names as the dataclass)."""
        name = geometry.name if isinstance(geometry, Geometry) else geometry
        return cls(**{**GEOMETRY_DEFAULTS.get(str(name), {}), "geometry": geometry, **overrides})

    def grid_geometry(self) -> Geometry:
        """The :class:`Geometry` named (or given) by ``geometry``."""
        return self.geometry if isinstance(self.geometry, Geometry) else get_geometry(self.geometry)

    def medium(self) -> Medium:
        """The homogenised W/Si medium of this configuration (GP section 4)."""
        return Medium.of(self)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (the geometry as its preset name or its fields)."""
        d = asdict(self)
        if isinstance(self.geometry, Geometry):
            d["geometry"] = asdict(self.geometry)
        return d


@dataclass(frozen=True)
class Medium:
    """Effective quantities of the layered medium (GP section 4; same formulas as Geant4's
    ``GFlashSamplingShowerParameterisation::ComputeZAX0EFFetc``).

    ``z_eff``, ``x0_mm``, ``moliere_mm`` (R_M,eff before ``radial_scale``), ``ec_mev``, ``fs``
    (``F_S = X0_eff / layer thickness``), ``ehat`` (e/mip).
    """

    z_eff: float
    x0_mm: float
    moliere_mm: float
    ec_mev: float
    fs: float
    ehat: float

    @staticmethod
    def of(cfg: SimulatorConfig) -> Medium:
        """Homogenise the absorber and sensor layers of ``cfg``'s geometry."""
        g = cfg.grid_geometry()
        # mass per area of each layer (g/cm2 x 10, the factor cancels in the fractions)
        m_abs = g.absorber_thickness_mm * cfg.absorber_density_g_cm3
        m_sen = g.sensor_thickness_mm * cfg.sensor_density_g_cm3
        w_abs, w_sen = m_abs / (m_abs + m_sen), m_sen / (m_abs + m_sen)
        rho_eff = (m_abs + m_sen) / g.sampling_layer_mm
        # X0 and R_M add as inverse mass thicknesses weighted by mass fraction
        x0_abs_m = cfg.absorber_x0_mm * cfg.absorber_density_g_cm3
        x0_sen_m = cfg.sensor_x0_mm * cfg.sensor_density_g_cm3
        x0_eff = 1.0 / (w_abs / x0_abs_m + w_sen / x0_sen_m) / rho_eff
        rm_abs_m = cfg.absorber_moliere_mm * cfg.absorber_density_g_cm3
        rm_sen_m = cfg.sensor_moliere_mm * cfg.sensor_density_g_cm3
        rm_eff = 1.0 / (w_abs / rm_abs_m + w_sen / rm_sen_m) / rho_eff
        ec_eff = (
            x0_eff
            * rho_eff
            * (
                w_abs * cfg.absorber_critical_energy_mev / x0_abs_m
                + w_sen * cfg.sensor_critical_energy_mev / x0_sen_m
            )
        )
        return Medium(
            z_eff=w_abs * cfg.absorber_z + w_sen * cfg.sensor_z,
            x0_mm=x0_eff,
            moliere_mm=rm_eff,
            ec_mev=ec_eff,
            fs=x0_eff / g.sampling_layer_mm,
            ehat=1.0 / (1.0 + 0.007 * (cfg.absorber_z - cfg.sensor_z)),
        )


# --------------------------------------------------------------------------------------------------------
# energy and angle specifications
# --------------------------------------------------------------------------------------------------------

_SPEC_HELP = (
    'expected "fixed:E", "uniform:EMIN:EMAX", "loguniform:EMIN:EMAX" or "list:E1,E2,..." '
    f'with energies in GeV (>= {MIN_ENERGY_GEV}), e.g. "uniform:10:500"'
)


@dataclass(frozen=True)
class EnergySpec:
    """Distribution of primary energies (GeV). ``kind`` is ``fixed`` (``values = (E,)``), ``uniform`` or
    ``loguniform`` (``values = (Emin, Emax)``) or ``list`` (event ``i`` gets ``values[i % len]``)."""

    kind: str
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        n_expected = {"fixed": 1, "uniform": 2, "loguniform": 2}
        if self.kind not in (*n_expected, "list"):
            raise ValueError(f"energy spec kind {self.kind!r} is unknown: {_SPEC_HELP}")
        if self.kind in n_expected and len(self.values) != n_expected[self.kind]:
            raise ValueError(
                f"energy spec {self.kind!r} needs {n_expected[self.kind]} value(s); "
                f"got {self.values}: {_SPEC_HELP}"
            )
        if not self.values:
            raise ValueError(f"energy spec 'list' needs at least one energy: {_SPEC_HELP}")
        for v in self.values:
            if not (math.isfinite(v) and v >= MIN_ENERGY_GEV):
                raise ValueError(
                    f"energy {v!r} GeV in spec {self} is not a finite energy >= {MIN_ENERGY_GEV} GeV"
                )
        if self.kind in ("uniform", "loguniform") and not self.values[0] <= self.values[1]:
            raise ValueError(f"energy spec {self}: EMIN must be <= EMAX")

    def __str__(self) -> str:
        sep = "," if self.kind == "list" else ":"
        return f"{self.kind}:" + sep.join(f"{v:g}" for v in self.values)

    @staticmethod
    def parse(spec: str) -> EnergySpec:
        """Parse ``"fixed:100"``, ``"uniform:10:500"``, ``"loguniform:2:500"`` or ``"list:10,50,100"``."""
        kind, sep, rest = str(spec).strip().partition(":")
        kind = kind.strip().lower()
        if not sep or not rest:
            raise ValueError(f"cannot parse energy spec {spec!r}: {_SPEC_HELP}")
        parts = rest.split(",") if kind == "list" else rest.split(":")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"cannot parse energy spec {spec!r}: {_SPEC_HELP}") from None
        return EnergySpec(kind, values)

    @staticmethod
    def coerce(energy: EnergySpec | str | float | Sequence[float]) -> EnergySpec:
        """Accept a spec, a spec string, one energy (fixed) or a sequence of energies (list, cycled)."""
        if isinstance(energy, EnergySpec):
            return energy
        if isinstance(energy, str):
            return EnergySpec.parse(energy)
        if isinstance(energy, int | float | np.integer | np.floating):
            return EnergySpec("fixed", (float(energy),))
        try:
            values = tuple(float(v) for v in np.asarray(energy, dtype=np.float64).ravel())
        except (TypeError, ValueError):
            raise ValueError(
                f"energy must be a spec string, a number or a sequence of numbers; got {energy!r}"
            ) from None
        return EnergySpec("list", values)

    @property
    def bounds(self) -> tuple[float, float]:
        """Smallest and largest energy this spec can give, GeV."""
        return min(self.values), max(self.values)

    def sample(self, u: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Energies ``[n]`` GeV from uniforms ``u: [n]`` in [0, 1) and global event indices ``index: [n]``."""
        if self.kind == "fixed":
            return np.full(u.shape, self.values[0])
        if self.kind == "uniform":
            lo, hi = self.values
            return lo + u * (hi - lo)
        if self.kind == "loguniform":
            lo, hi = np.log(self.values[0]), np.log(self.values[1])
            return np.exp(lo + u * (hi - lo))
        return np.asarray(self.values)[np.asarray(index) % len(self.values)]


def parse_theta(theta_deg: float | tuple[float, float] | str) -> tuple[float, float]:
    """Incident polar angle(s) in degrees -> ``(min, max)``; a string may be ``"90"`` or ``"60:120"``.

    Angles must lie strictly between 0 and 180 degrees (90 = normal incidence); a range is sampled uniformly
    in degrees per event.
    """
    help_ = 'expected an angle in degrees or a range "DEGMIN:DEGMAX" with 0 < DEGMIN <= DEGMAX < 180'
    try:
        if isinstance(theta_deg, str):
            parts = [float(p) for p in theta_deg.split(":")]
        elif isinstance(theta_deg, int | float | np.integer | np.floating):
            parts = [float(theta_deg)]
        else:
            parts = [float(p) for p in theta_deg]
    except (TypeError, ValueError):
        raise ValueError(f"cannot read incident angle {theta_deg!r}: {help_}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(math.isfinite(p) and 0 < p < 180 for p in parts) or parts[0] > parts[1]:
        raise ValueError(f"bad incident angle {theta_deg!r}: {help_}")
    return parts[0], parts[1]


# --------------------------------------------------------------------------------------------------------
# the physics, vectorised over events and spots
# --------------------------------------------------------------------------------------------------------


def longitudinal_parameters(
    energy: np.ndarray, medium: Medium, c: GflashConstants = GFLASH
) -> dict[str, np.ndarray]:
    """GFLASH individual-profile statistics for a sampling calorimeter (GP section 4.2).

    ``energy: [n]`` GeV -> dict of ``[n]`` arrays: ``mean_lnT`` (T in X0_eff), ``mean_ln_alpha``,
    ``sigma_lnT``, ``sigma_ln_alpha``, ``rho`` (correlation of ln T and ln alpha).
    """
    ln_y = np.log(np.asarray(energy, dtype=np.float64) * 1e3 / medium.ec_mev)
    t_hom = ln_y + c.lnT_t1
    a_hom = c.lnA_a1 + (c.lnA_a2 + c.lnA_a3 / medium.z_eff) * ln_y
    t_sam = t_hom + c.sam_T_t1 / medium.fs + c.sam_T_t2 * (1.0 - medium.ehat)
    a_sam = a_hom + c.sam_A_a1 / medium.fs
    return {
        "mean_lnT": np.log(np.maximum(t_sam, 0.1)),
        "mean_ln_alpha": np.log(np.maximum(a_sam, 0.1)),
        "sigma_lnT": np.minimum(c.sigma_max, 1.0 / (c.sig_lnT_s1 + c.sig_lnT_s2 * ln_y)),
        "sigma_ln_alpha": np.minimum(c.sigma_max, 1.0 / (c.sig_lnA_s1 + c.sig_lnA_s2 * ln_y)),
        "rho": c.rho_r1 + c.rho_r2 * ln_y,
    }


def radial_parameters(
    energy: np.ndarray, tau: np.ndarray, medium: Medium, c: GflashConstants = GFLASH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GFLASH radial profile at reduced depth ``tau`` (GP section 3.3 and 4.3).

    ``energy: [S]`` GeV and ``tau: [S]`` (broadcastable) -> ``(r_core, r_tail, p_core)``, radii in units of
    R_M,eff, ``p_core`` the probability of the core component clipped to [0, 1].
    """
    ln_e = np.log(energy)
    z = medium.z_eff
    one_m_e = 1.0 - medium.ehat
    exp_m_tau = np.exp(-tau)
    r_core = (c.rc_z1a + c.rc_z1b * ln_e) + (c.rc_z2a + c.rc_z2b * z) * tau
    r_core += c.sam_rc_c1 * one_m_e + c.sam_rc_c2 / medium.fs * exp_m_tau
    k4 = c.rt_k4a + c.rt_k4b * ln_e
    r_tail = (c.rt_k1a + c.rt_k1b * z) * (np.exp(c.rt_k3 * (tau - c.rt_k2)) + np.exp(k4 * (tau - c.rt_k2)))
    r_tail += c.sam_rt_c1 * one_m_e + c.sam_rt_c2 / medium.fs * exp_m_tau
    arg = (c.p_p2a + c.p_p2b * z - tau) / (c.p_p3a + c.p_p3b * ln_e)
    p_core = (c.p_p1a + c.p_p1b * z) * np.exp(arg - np.exp(arg))
    p_core += one_m_e * (c.sam_p_c1 + c.sam_p_c2 / medium.fs * np.exp(-((tau - 1.0) ** 2)))
    # the sampling corrections can push a radius through zero far from the maximum; keep it physical
    return np.maximum(r_core, 0.01), np.maximum(r_tail, 0.02), np.clip(p_core, 0.0, 1.0)


def event_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of event ``index`` of ``seed``: child ``index`` of ``SeedSequence(seed)``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


@dataclass
class _SparseChunk:
    """Events of one chunk with only their hit cells: what a worker process sends back (a few kB per
    shower instead of the dense 62.5 kB of a 25x25x25 grid)."""

    shape: tuple[int, int, int, int]  # [n, X, Y, Z]
    hit: np.ndarray  # [H] int64 flat index into the [n, X, Y, Z] array
    deposit: np.ndarray  # [H] float32 GeV
    energy: np.ndarray  # [n] float32 GeV
    theta: np.ndarray  # [n] float32 rad

    def dense(self) -> Showers:
        ecal = np.zeros(self.shape, np.float32)
        ecal.reshape(-1)[self.hit] = self.deposit
        return Showers(ecal=ecal, energy=self.energy, theta=self.theta)


def _simulate_range(
    start: int, n: int, seed: int, spec: EnergySpec, theta: tuple[float, float], cfg: SimulatorConfig
) -> _SparseChunk:
    """Events ``start .. start+n-1`` in sparse form (simulated in blocks that bound memory)."""
    ncell = cfg.grid_geometry().n_cells
    parts = []
    for s, m in _blocks(start, n, cfg):
        hit, dep, energy, th = _simulate_block(s, m, seed, spec, theta, cfg)
        parts.append((hit + (s - start) * ncell, dep, energy, th))
    return _SparseChunk(
        shape=(n, *cfg.grid_geometry().shape),
        hit=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64),
        deposit=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32),
        energy=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32),
        theta=np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.float32),
    )


def _blocks(start: int, n: int, cfg: SimulatorConfig) -> list[tuple[int, int]]:
    """Split events into blocks whose spot and cell arrays stay within a few tens of MB."""
    block = int(np.clip(4_000_000 // cfg.grid_geometry().n_cells, 8, 256))
    return [(s, min(block, start + n - s)) for s in range(start, start + n, block)]


def _simulate_block(
    start: int,
    n: int,
    seed: int,
    spec: EnergySpec,
    theta: tuple[float, float],
    cfg: SimulatorConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulate events ``start .. start+n-1``; returns ``hit: [H]`` flat indices into the block's
    ``[n, X, Y, Z]`` array (ascending), ``deposit: [H]`` float32 GeV, ``energy: [n]`` float32 GeV and
    ``theta: [n]`` float32 rad."""
    geo = cfg.grid_geometry()
    med = cfg.medium()
    nx, ny, nz = geo.shape
    index = np.arange(start, start + n, dtype=np.int64)

    # pass 1: per-event scalars, each from the event's own generator
    rngs = [event_rng(seed, int(i)) for i in index]
    head = np.stack([g.random(2) for g in rngs])
    norm = np.stack([g.standard_normal(3) for g in rngs])
    energy = spec.sample(head[:, 0], index)
    theta_deg = theta[0] + head[:, 1] * (theta[1] - theta[0])
    theta_rad = np.deg2rad(theta_deg)

    lp = longitudinal_parameters(energy, med)
    if cfg.longitudinal_fluctuations:
        c1, c2 = np.sqrt((1 + lp["rho"]) / 2), np.sqrt((1 - lp["rho"]) / 2)
        ln_t = lp["mean_lnT"] + lp["sigma_lnT"] * (c1 * norm[:, 0] + c2 * norm[:, 1])
        ln_a = lp["mean_ln_alpha"] + lp["sigma_ln_alpha"] * (c1 * norm[:, 0] - c2 * norm[:, 1])
    else:
        ln_t, ln_a = lp["mean_lnT"], lp["mean_ln_alpha"]
    t_max = np.maximum(GFLASH.t_max_min, np.exp(ln_t))
    alpha = np.maximum(GFLASH.alpha_min, np.exp(ln_a))
    beta = (alpha - 1.0) / t_max
    # tau = t / <t>_shower * <t>_mean / T_mean (Geant4 ComputeTau): the radial shape follows the shower's own
    # development while keeping GP's normalisation of tau to the average maximum
    a_mean = np.exp(lp["mean_ln_alpha"])
    tau_per_t = beta / alpha * a_mean / (a_mean - 1.0)

    n_spots = np.clip(np.ceil(cfg.spots_per_gev * energy), cfg.min_spots, cfg.max_spots).astype(np.int64)
    a = cfg.stochastic_term
    # spot energies ~ Gamma(k) with N k = E / a^2: the summed spread is exactly a / sqrt(E) whatever N
    k_shape = energy / (a * a * n_spots) if a > 0 else np.ones(n)
    const = np.maximum(0.0, 1.0 + cfg.constant_term * norm[:, 2])
    e_unit = cfg.sampling_fraction * energy * const / (n_spots * k_shape)

    # pass 2: the spots of every event from the event's own generator. Spot geometry runs in float32: a
    # position error of 1e-7 relative is far below a cell, and float32 transcendentals are several times
    # faster.
    f32 = np.float32
    t_list, u_list = [], []
    for j, g in enumerate(rngs):
        m = int(n_spots[j])
        t_list.append(g.standard_gamma(alpha[j], m, dtype=f32) * f32(1.0 / beta[j]))
        u_list.append(g.random((3, m), dtype=f32))
    t = np.concatenate(t_list)
    u = np.concatenate(u_list, axis=1)
    ev = np.repeat(np.arange(n), n_spots)

    # vectorised over all spots of the block
    r_core, r_tail, p_core = radial_parameters(energy.astype(f32)[ev], t * tau_per_t.astype(f32)[ev], med)
    r_unit = np.where(u[0] < p_core, r_core, r_tail) * f32(med.moliere_mm * cfg.radial_scale)
    u1 = u[1]
    r = r_unit * np.sqrt(u1 / (1.0 - u1))
    phi = f32(2.0 * np.pi) * u[2]
    s = t * f32(med.x0_mm)
    sin_t, cos_t = np.sin(theta_rad).astype(f32)[ev], np.cos(theta_rad).astype(f32)[ev]
    x = r * np.cos(phi)
    v = r * np.sin(phi)
    y = s * cos_t + v * sin_t
    z = s * sin_t - v * cos_t

    iz = np.floor(z * f32(1 / geo.layer_thickness_mm))
    if geo.cylindrical:
        # normal incidence (checked in simulate): y is the second transverse coordinate. Cell [a, r, z]:
        # azimuth bin a of [-pi, pi) (the challenge's convention), radial bin r of r_edges_mm.
        edges = np.asarray(geo.r_edges_mm, dtype=f32)
        azimuth = np.arctan2(y, x) + f32(np.pi)  # [0, 2 pi]
        ix = np.clip(np.floor(azimuth * f32(nx / (2.0 * np.pi))), 0, f32(nx - 1))
        iy = (np.searchsorted(edges, np.hypot(x, y), side="right") - 1).astype(f32)
    else:
        ix = np.floor(x * f32(1 / geo.cell_size_mm) + f32(nx / 2))
        iy = np.floor(y * f32(1 / geo.cell_size_mm) + f32(ny / 2))
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (iz >= 0) & (iz < nz)
    flat = ((ev * nx + ix.astype(np.int64)) * ny + iy.astype(np.int64)) * nz + iz.astype(np.int64)

    # pass 3: cell energies. A sum of n Gamma(k) spot energies is Gamma(n k), so one draw per hit cell
    # gives exactly the distribution of per-spot draws at a fraction of the cost.
    ncell = nx * ny * nz
    counts = np.bincount(flat[inside], minlength=n * ncell)
    hit = np.flatnonzero(counts)  # ascending, hence grouped by event
    n_hit = counts[hit]
    ev_hit = hit // ncell
    if a > 0:
        bounds = np.searchsorted(ev_hit, np.arange(n + 1))
        gam = np.empty(len(hit))
        for j, g in enumerate(rngs):
            lo, hi = bounds[j], bounds[j + 1]
            gam[lo:hi] = g.standard_gamma(k_shape[j] * n_hit[lo:hi])
    else:
        gam = n_hit.astype(np.float64)
    deposit = (gam * e_unit[ev_hit]).astype(f32)
    if cfg.cell_threshold_gev > 0:  # the readout threshold: cells below it read 0
        keep = deposit >= f32(cfg.cell_threshold_gev)
        hit, deposit = hit[keep], deposit[keep]
    return hit, deposit, energy.astype(f32), theta_rad.astype(f32)


# --------------------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------------------


def _check_incidence(cfg: SimulatorConfig, theta: tuple[float, float]) -> None:
    """``ValueError`` for an angle other than normal incidence on a cylindrical grid."""
    geo = cfg.grid_geometry()
    if geo.cylindrical and theta != (90.0, 90.0):
        raise ValueError(
            f"the {geo.name} geometry is binned around the particle's direction (normal incidence): "
            f"theta_deg must be 90; got {theta}"
        )


def _check_counts(n: int, seed: int, start: int, workers: int, chunk: int) -> None:
    for name, v, lo in (
        ("n", n, 0),
        ("seed", seed, 0),
        ("start", start, 0),
        ("workers", workers, 1),
        ("chunk", chunk, 1),
    ):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < lo:
            raise ValueError(f"simulate: {name} must be an int >= {lo}; got {v!r}")


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """``advance(k)`` for ``k`` more showers simulated: a bar with showers/s on a terminal, periodic
    ``[hepgan] simulate`` lines otherwise (:mod:`hepgan.progress`)."""
    with track("simulate", total=total, unit="showers", enabled=enabled) as task:
        yield task.advance


def iter_simulate(
    n: int,
    *,
    energy: EnergySpec | str | float | Sequence[float],
    theta_deg: float | tuple[float, float] = 90.0,
    config: SimulatorConfig | None = None,
    seed: int = 0,
    start: int = 0,
    workers: int = 1,
    progress: bool = False,
    chunk: int | None = None,
) -> Iterator[Showers]:
    """Stream events ``start .. start+n-1`` in order as :class:`Showers` of ``chunk`` events (the last may be
    shorter): ``ecal: [chunk, X, Y, Z]`` GeV visible, ``energy: [chunk]`` GeV, ``theta: [chunk]`` rad.
    The default ``chunk`` keeps a chunk near 64 MB (1000 fixed25 or 258 angle51 showers).

    With ``workers > 1`` chunks are simulated in that many processes (spawned, so safe after JAX is
    loaded) that send back only the hit cells; at most ``2 * workers`` chunks are in flight so memory stays
    bounded. The result does not depend on ``chunk`` or ``workers``.
    """
    cfg = config if config is not None else SimulatorConfig()
    _check_incidence(cfg, parse_theta(theta_deg))
    if chunk is None:
        chunk = default_chunk(cfg)
    _check_counts(n, seed, start, workers, chunk)
    spec = EnergySpec.coerce(energy)
    theta = parse_theta(theta_deg)
    tasks = [(s, min(chunk, start + n - s)) for s in range(start, start + n, chunk)]
    with _progress_bar(progress, n) as advance:
        if workers == 1 or len(tasks) <= 1:
            for s, m in tasks:
                out = _simulate_range(s, m, seed, spec, theta, cfg).dense()
                advance(m)
                yield out
            return
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx)
        pending: deque[tuple[int, Future[_SparseChunk]]] = deque()
        todo = iter(tasks)
        try:
            for s, m in todo:
                pending.append((m, pool.submit(_simulate_range, s, m, seed, spec, theta, cfg)))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                m, fut = pending.popleft()
                out = fut.result().dense()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(
                        (nxt[1], pool.submit(_simulate_range, nxt[0], nxt[1], seed, spec, theta, cfg))
                    )
                advance(m)
                yield out
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def simulate(
    n: int,
    *,
    energy: EnergySpec | str | float | Sequence[float],
    theta_deg: float | tuple[float, float] = 90.0,
    config: SimulatorConfig | None = None,
    seed: int = 0,
    start: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> Showers:
    """Simulate ``n`` showers, events ``start .. start+n-1`` of ``seed``, in memory.

    Returns :class:`Showers` with ``ecal: [n, X, Y, Z]`` float32 GeV of visible energy, ``energy: [n]``
    float32 GeV, ``theta: [n]`` float32 rad (always filled). ``energy`` is an :class:`EnergySpec`, a spec
    string (``"fixed:100"``, ``"uniform:10:500"``, ``"loguniform:2:500"``, ``"list:10,50,100"``), one
    energy, or a sequence of energies cycled by global event index. ``theta_deg`` is one angle or a
    ``(min, max)`` range in degrees. For large ``n`` prefer :func:`iter_simulate`, which streams.
    """
    _check_counts(n, seed, start, workers, 1)
    spec = EnergySpec.coerce(energy)
    theta = parse_theta(theta_deg)
    cfg = config if config is not None else SimulatorConfig()
    _check_incidence(cfg, theta)
    nx, ny, nz = cfg.grid_geometry().shape
    ncell = nx * ny * nz
    out = Showers(
        ecal=np.zeros((n, nx, ny, nz), np.float32),
        energy=np.zeros(n, np.float32),
        theta=np.zeros(n, np.float32),
    )
    if workers == 1:
        # scatter each block's hit cells into the result: no per-chunk dense arrays to concatenate
        with _progress_bar(progress, n) as advance:
            for s, m in _blocks(start, n, cfg):
                hit, dep, e, th = _simulate_block(s, m, seed, spec, theta, cfg)
                i = s - start
                out.ecal.reshape(-1)[hit + i * ncell] = dep
                out.energy[i : i + m] = e
                out.theta[i : i + m] = th  # type: ignore[index]
                advance(m)
        return out
    chunk = max(1, min(default_chunk(cfg), -(-n // (4 * workers))))
    pos = 0
    for part in iter_simulate(
        n,
        energy=spec,
        theta_deg=theta,
        config=cfg,
        seed=seed,
        start=start,
        workers=workers,
        progress=progress,
        chunk=chunk,
    ):
        m = len(part)
        out.ecal[pos : pos + m] = part.ecal
        out.energy[pos : pos + m] = part.energy
        out.theta[pos : pos + m] = part.theta  # type: ignore[index]
        pos += m
    return out


def default_chunk(config: SimulatorConfig | None = None) -> int:
    """Events per streamed chunk: about 2^24 cells (64 MB of float32), at most 1000 events."""
    cfg = config if config is not None else SimulatorConfig()
    return int(np.clip(2**24 // cfg.grid_geometry().n_cells, 1, 1000))


def default_workers() -> int:
    """A sensible worker count for this machine: the usable CPU cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


__all__ = [
    "GFLASH",
    "EnergySpec",
    "GflashConstants",
    "Medium",
    "SimulatorConfig",
    "default_chunk",
    "default_workers",
    "event_rng",
    "iter_simulate",
    "longitudinal_parameters",
    "parse_theta",
    "radial_parameters",
    "simulate",
]
