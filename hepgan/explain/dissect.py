"""Generator dissection: which channels of which generator layer follow which shower observable.

Over ``n_showers`` generated showers (conditions spread over the run's training range), each chosen
layer's channels are summarised by their spatial mean per shower (``[N, C]``, the layer's output before
its activation) and correlated (Pearson) with the showers' observables: the primary energy and angle
(the conditions) and shower observables of :mod:`hepgan.physics.observables`. A channel constant over
the showers has no correlation (NaN, reported as "inactive").

Correlation does not show that a unit is *used*; the ablation does: for each shower observable the
``top_k`` channels (at most a quarter of the layer's) of its best layer (largest ``|r|``) are set to zero
through :func:`hepgan.models.conv.tap_outputs`, the *same* latent vectors are generated again, and the
mean shift of every observable is reported in units of its standard deviation over the unablated
showers; the same for ``k`` random other channels of that layer is the control.

:func:`latent_directions` fits, at one fixed energy (and angle), each shower observable by least squares
on the generator's noise vector: the normalised coefficient vector is the latent direction along which
that observable grows fastest, its ``R^2`` how much of the observable the noise explains at all (about 0
for a generator that ignores its noise). :mod:`hepgan.explain.traverse` walks along these directions.

Latent vectors are always built by the model's own ``latent`` method with the noise given by the caller
(:func:`latent_with_noise`), so they follow its conditioning (``E/100 * noise`` for the fixed-angle
3DGAN, ``[E/100, theta, noise]`` for AngleGAN).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hepgan.fileio import write_json
from hepgan.models.conv import (
    apply_tap,
    conv_output_shape,
    kernel_spectra,
    record_convs,
    tap_outputs,
    use_kernel_spectra,
)

CONDITIONS = ("energy", "theta")
"""Observables that are the generator's conditions: ``energy`` (GeV) and ``theta`` (degrees)."""

DEFAULT_OBSERVABLES: tuple[str, ...] = (
    "energy",
    "theta",
    "e_vis",
    "sf",
    "z_mean",
    "z_var",
    "x_var",
    "y_var",
    "shower_max",
)
"""Observables :func:`dissect` correlates by default: the conditions (``theta`` only for models with an
angle condition), the visible energy, the sampling fraction, the shower depth ``z_mean`` and longitudinal
width ``z_var``, the lateral widths ``x_var``/``y_var`` and the layer of the shower maximum."""

DENSE = "dense"
"""Layer name of the generator's Dense output (reshaped to ``[B, X, Y, Z, C]``) in ``layers``."""

CONTROL_DRAWS = 3
"""Random channel sets averaged for the ablation control."""

REFERENCE_ENERGY_GEV = 100.0
"""Energy of the fixed-energy views (clipped into the run's range)."""

# Conditions by architecture when the run's data config does not give them (file data): (GeV), (deg)
_ARCH_RANGES = {
    "fixed25": ((10.0, 500.0), (90.0, 90.0)),
    "angle51": ((2.0, 500.0), (60.0, 120.0)),
    "ds2": ((1.0, 1000.0), (90.0, 90.0)),
    "ds3": ((1.0, 1000.0), (90.0, 90.0)),
}


def observable_names() -> tuple[str, ...]:
    """Every observable name :func:`dissect` accepts: the conditions and
    :data:`hepgan.physics.observables.SCALAR_NAMES`."""
    from hepgan.physics.observables import SCALAR_NAMES

    return (*CONDITIONS, *SCALAR_NAMES)


def _check_observables(observables: Sequence[str], has_theta: bool) -> tuple[str, ...]:
    """``observables`` validated, duplicates dropped, ``theta`` dropped for a model without an angle."""
    if isinstance(observables, str) or not observables:
        raise ValueError(f"observables must be a non-empty sequence of names; got {observables!r}")
    valid = observable_names()
    bad = [o for o in observables if o not in valid]
    if bad:
        raise ValueError(f"observables: unknown {bad}; valid: {list(valid)}")
    out = tuple(dict.fromkeys(o for o in observables if has_theta or o != "theta"))
    if not out:
        raise ValueError("observables: nothing left to analyse (theta alone, on a model without an angle)")
    return out


def json_safe(obj: Any) -> Any:
    """``obj`` with NumPy arrays and scalars as lists and numbers, non-finite floats as ``None``."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def as_float_array(values: Any) -> np.ndarray:
    """A JSON list (``None`` = NaN) or array as a float64 array."""
    return np.asarray(
        [np.nan if v is None else v for v in values] if isinstance(values, list) else values, float
    )


# --------------------------------------------------------------------------------------------------------
# latent vectors with the caller's noise
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _normal_source(noise: np.ndarray | None, seen: list[tuple[int, ...]]) -> Iterator[None]:
    """``jax.random.normal`` returning ``noise`` (or drawing as usual when ``None``), the shapes asked
    for appended to ``seen``."""
    original = jax.random.normal

    def normal(key: jax.Array, shape: Sequence[int] = (), dtype: Any = jnp.float32) -> jax.Array:
        seen.append(tuple(int(s) for s in shape))
        if noise is None:
            return original(key, tuple(shape), dtype)
        if tuple(shape) != noise.shape:
            raise ValueError(
                f"noise must be [B, noise_dim] = {tuple(shape)} for this generator; got shape {noise.shape}"
            )
        return jnp.asarray(noise, dtype)

    with mock.patch.object(jax.random, "normal", normal):
        yield


def _noise_shape(g: nnx.Module) -> tuple[int, bool]:
    """``(noise_dim, whether latent draws noise at all)``."""
    seen: list[tuple[int, ...]] = []
    one = jnp.ones((1,), jnp.float32)
    with _normal_source(None, seen):
        cast(Any, g).latent(jax.random.key(0), one * REFERENCE_ENERGY_GEV, one * (math.pi / 2))
    return (seen[0][-1], True) if seen else (int(cast(Any, g).latent_dim), False)


def noise_dim(g: nnx.Module) -> int:
    """Length of the noise vector the generator's ``latent`` draws (``latent_dim`` for the fixed-angle
    3DGAN, ``latent_dim - 2`` for AngleGAN); ``latent_dim`` when ``latent`` draws no noise at all."""
    return _noise_shape(g)[0]


def latent_with_noise(g: nnx.Module, noise: np.ndarray, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The generator's latent vectors ``[B, latent_dim]`` for ``noise: [B, noise_dim]`` (standard normal
    units), ``energy: [B] GeV``, ``theta: [B] rad``: the model's own ``latent`` with its normal draw
    replaced by ``noise``, so any conditioning it applies (``E/100 * noise``, ``[E/100, theta, noise]``)
    is applied to the caller's noise. A ``latent`` that draws no noise ignores ``noise``. Not thread-safe
    (it swaps ``jax.random.normal`` during the call)."""
    noise = np.asarray(noise, np.float32)
    if noise.ndim != 2:
        raise ValueError(f"noise must be [B, noise_dim]; got shape {noise.shape}")
    e = np.asarray(energy, np.float32)
    th = np.asarray(theta, np.float32)
    if e.shape != (noise.shape[0],) or th.shape != (noise.shape[0],):
        raise ValueError(
            f"energy and theta must be [B] = [{noise.shape[0]}] like noise; got {e.shape} and {th.shape}"
        )
    with _normal_source(noise, []):
        z = cast(Any, g).latent(jax.random.key(0), jnp.asarray(e), jnp.asarray(th))
    return np.asarray(z, np.float32)


# --------------------------------------------------------------------------------------------------------
# the restored generator, with taps
# --------------------------------------------------------------------------------------------------------


class TappedDense(nnx.Module):
    """A generator's Dense layer whose output ``[B, prod(grid) * C]`` passes through the
    :func:`~hepgan.models.conv.tap_outputs` tap named :data:`DENSE` as ``[B, *grid, C]`` (the generator
    reshapes it so next). Without that tap it computes exactly what ``linear`` computes."""

    def __init__(self, linear: nnx.Linear, grid: tuple[int, int, int]) -> None:
        self.linear = linear
        self.grid = grid

    def __call__(self, z: jax.Array) -> jax.Array:
        """``z: [B, latent_dim]`` -> ``[B, prod(grid) * C]``."""
        y = self.linear(z)
        tapped = apply_tap(DENSE, y.reshape(y.shape[0], *self.grid, -1))
        return tapped.reshape(y.shape)


def _dense_grid(g: nnx.Module) -> tuple[int, int, int]:
    from hepgan.models import anglegan, gan3d

    if isinstance(g, anglegan.AngleGenerator):
        return anglegan.DENSE_GRID
    if isinstance(g, gan3d.Generator3D):
        return gan3d.DENSE_GRID
    raise ValueError(f"layers: cannot tap the Dense layer of a {type(g).__name__}")


def tap_dense(g: nnx.Module) -> None:
    """Wrap ``g.dense`` (in place) in a :class:`TappedDense`, so ``tap_outputs({"dense": fn})`` sees the
    Dense output as ``[B, X, Y, Z, C]``; the generator's outputs are unchanged."""
    if not isinstance(getattr(g, "dense", None), TappedDense):
        cast(Any, g).dense = TappedDense(cast(Any, g).dense, _dense_grid(g))


def _resolve_checkpoint(checkpoint: str | int | None) -> tuple[bool, int | None]:
    """``(best, step)`` for :func:`hepgan.train.checkpoint.restore_run`."""
    if checkpoint is None or checkpoint == "latest":
        return False, None
    if checkpoint == "best":
        return True, None
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, int | np.integer) or int(checkpoint) < 0:
        raise ValueError(f"checkpoint must be None, 'latest', 'best' or a step >= 0; got {checkpoint!r}")
    return False, int(checkpoint)


def condition_range(conf: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((E_min, E_max) GeV, (theta_min, theta_max) degrees)`` a run was trained on: from its simulated
    data config, else the architecture's data range (fixed25: 10-500 GeV; angle51: 2-500 GeV,
    60-120 degrees). Fixed-angle models are always at 90 degrees."""
    from hepgan.data.simulate import EnergySpec, parse_theta

    arch = str(conf.model.arch)
    energy, theta = _ARCH_RANGES.get(arch, _ARCH_RANGES["fixed25"])
    if conf.data.kind == "simulated":
        energy = EnergySpec.parse(str(conf.data.energy)).bounds
        theta = parse_theta(str(conf.data.theta_deg))
    if arch != "angle51":  # normal incidence only
        theta = (90.0, 90.0)
    return (float(energy[0]), float(energy[1])), (float(theta[0]), float(theta[1]))


def spread_conditions(conf: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` conditions spread over the run's range: ``energy [n] GeV`` from its simulated energy spec
    (uniform over :func:`condition_range` otherwise) and ``theta [n] rad`` uniform in degrees."""
    from hepgan.data.simulate import EnergySpec

    rng = np.random.default_rng([seed, 0x4449])
    (e_lo, e_hi), (t_lo, t_hi) = condition_range(conf)
    u = rng.random(n)
    if conf.data.kind == "simulated":
        energy = EnergySpec.parse(str(conf.data.energy)).sample(u, np.arange(n))
    else:
        energy = e_lo + u * (e_hi - e_lo)
    theta = np.deg2rad(rng.uniform(t_lo, t_hi, n) if t_hi > t_lo else np.full(n, t_lo))
    return energy.astype(np.float32), theta.astype(np.float32)


class Probe:
    """A trained run's generator, ready to sample with taps: the EMA weights in eval mode with the run's
    BatchNorm statistics mode (``conf.train.sample_bn``, as :func:`hepgan.train.state.generate`), FFT
    kernels transformed once, one compiled call per ``batch`` latent vectors.

    ``layers``: the layers to tap (default: every conv, in call order; ``"dense"``: the Dense output; an
    empty list: none). ``checkpoint``: None or "latest", "best", or a step number. ``seed``: the
    BatchNorm recomputation batch ("recomputed" mode). ``batch``: latent vectors per compiled call.

    Attributes: ``g`` (the module; after editing its weights in place call :meth:`weights_changed`),
    ``run_dir``, ``checkpoint``, ``conf``, ``preprocess``, ``step``, ``arch``, ``sample_bn``,
    ``has_theta`` (the model takes an angle), ``energy_range`` (GeV), ``theta_range_deg``,
    ``latent_dim``, ``noise_dim``, ``noise_used`` (False when ``latent`` draws no noise), ``layers``
    (``{name: channels}`` of the tapped layers), ``layer_shapes`` (``{name: (X, Y, Z)}``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        checkpoint: str | int | None = None,
        seed: int = 0,
        batch: int = 64,
        layers: Sequence[str] | None = None,
    ) -> None:
        from hepgan.train.checkpoint import restore_run
        from hepgan.train.state import recompute_bn_stats

        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer; got {batch!r}")
        best, step = _resolve_checkpoint(checkpoint)
        players, state, preprocess, conf = restore_run(run_dir, best=best, step=step)
        self.run_dir, self.checkpoint = Path(run_dir), checkpoint
        self.conf, self.preprocess, self.batch = conf, preprocess, batch
        self.step = int(state.step)
        self.arch = str(conf.model.arch)
        self.has_theta = self.arch == "angle51"
        self.energy_range, self.theta_range_deg = condition_range(conf)
        mode = str(conf.train.sample_bn)
        if mode == "recomputed":  # on copies: the state's own statistics stay as they are
            copied = state.g.replace(batch_stats=jax.tree.map(jnp.copy, state.g.batch_stats))
            g = players.generator(state.replace(g=copied), ema=True)
            energy, theta = spread_conditions(conf, 1024, seed)
            recompute_bn_stats(g, energy, theta, seed)
        elif mode == "running":
            g = players.generator(state, ema=True)
        else:
            raise ValueError(f"train.sample_bn: unknown {mode!r} in the run's config")
        self.g = g
        self.sample_bn = mode
        self.latent_dim = int(cast(Any, g).latent_dim)
        self.noise_dim, self.noise_used = _noise_shape(g)
        self.layers, self.layer_shapes = self._layers(layers)
        if DENSE in self.layers:
            tap_dense(g)
        self.weights_changed()

        @nnx.jit
        def forward(
            m: Any, spectra: Any, z: jax.Array, masks: dict[str, jax.Array]
        ) -> tuple[jax.Array, dict[str, jax.Array]]:
            acts: dict[str, jax.Array] = {}

            def tap(name: str) -> Callable[[jax.Array], jax.Array]:
                def fn(y: jax.Array) -> jax.Array:
                    acts[name] = jnp.mean(y, axis=(1, 2, 3))  # [B, C]
                    return y * masks[name].reshape(1, 1, 1, 1, -1)

                return fn

            with use_kernel_spectra(spectra), tap_outputs({n: tap(n) for n in masks}):
                x = m(z)
            return x, acts

        self._forward = forward

    def weights_changed(self) -> None:
        """Transform the FFT-path kernels of ``g`` again: call after editing its weights in place."""
        z = jax.ShapeDtypeStruct((self.batch, self.latent_dim), jnp.float32)
        self.spectra = nnx.jit(lambda m: kernel_spectra(m, z))(self.g)

    def _layers(self, layers: Sequence[str] | None) -> tuple[dict[str, int], dict[str, tuple[int, int, int]]]:
        """``({name: channels}, {name: spatial shape})`` of the requested layers (default: every conv)."""
        g = cast(Any, self.g)
        with record_convs() as specs:
            nnx.eval_shape(lambda m, a: m(a), self.g, jax.ShapeDtypeStruct((1, self.latent_dim), jnp.float32))
        channels: dict[str, int] = {}
        shapes: dict[str, tuple[int, int, int]] = {}
        dense = getattr(g, DENSE, None)
        dense = dense.linear if isinstance(dense, TappedDense) else dense
        if isinstance(dense, nnx.Linear):
            grid = _dense_grid(self.g)
            channels[DENSE] = int(dense.out_features) // math.prod(grid)
            shapes[DENSE] = grid
        for s in specs:
            channels[s.name] = int(s.kernel_shape[4])
            up = tuple(f * n for f, n in zip(s.upsample, s.x_shape[1:4], strict=True))
            out = conv_output_shape(up, s.kernel_shape[:3], s.padding)
            shapes[s.name] = (out[0], out[1], out[2])
        if layers is None:
            names = [s.name for s in specs]
        else:
            if isinstance(layers, str):
                raise ValueError(f"layers must be a sequence of layer names; got {layers!r}")
            bad = [n for n in layers if n not in channels]
            if bad:
                raise ValueError(f"layers: unknown {bad}; this generator has {list(channels)}")
            names = list(dict.fromkeys(layers))
        return {n: channels[n] for n in names}, {n: shapes[n] for n in names}

    def latents(self, noise: np.ndarray, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``latent_with_noise`` of this generator: ``noise [N, noise_dim]``, ``energy [N] GeV``,
        ``theta [N] rad`` -> ``[N, latent_dim]``."""
        return latent_with_noise(self.g, noise, energy, theta)

    def run(
        self, z: np.ndarray, zeroed: dict[str, Sequence[int]] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Generate from latent vectors ``z: [N, latent_dim]`` with the channels ``zeroed[layer]`` of the
        tapped layers set to 0. Returns cells ``[N, X, Y, Z]`` in GeV and, per tapped layer, the spatial
        mean of each channel's output (before zeroing) ``[N, C]``."""
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 1:
            raise ValueError(f"z must be [N >= 1, {self.latent_dim}]; got shape {z.shape}")
        masks = {n: np.ones(c, np.float32) for n, c in self.layers.items()}
        for name, channels in (zeroed or {}).items():
            if name not in masks:
                raise ValueError(f"zeroed: layer {name!r} is not tapped; tapped layers: {list(self.layers)}")
            idx = np.asarray(list(channels), int)
            if idx.size and (idx.min() < 0 or idx.max() >= masks[name].size):
                raise ValueError(
                    f"zeroed[{name!r}]: channels must lie in [0, {masks[name].size}); got {list(channels)}"
                )
            masks[name][idx] = 0.0
        jmasks = {n: jnp.asarray(m) for n, m in masks.items()}
        cells, acts = [], []
        n = z.shape[0]
        for start in range(0, n, self.batch):
            chunk = np.resize(z[start : start + self.batch], (self.batch, self.latent_dim))
            x, a = self._forward(self.g, self.spectra, jnp.asarray(chunk), jmasks)
            m = min(self.batch, n - start)
            cells.append(np.asarray(self.preprocess.invert_cells(x), np.float32)[:m])
            acts.append({k: np.asarray(v, np.float64)[:m] for k, v in a.items()})
        return np.concatenate(cells), {k: np.concatenate([a[k] for a in acts]) for k in self.layers}

    def observables(
        self, cells: np.ndarray, energy: np.ndarray, theta: np.ndarray, names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """``{name: [N]}`` for ``names`` (see :func:`observable_names`) of showers ``cells: [N, X, Y, Z]``
        GeV at ``energy: [N] GeV``, ``theta: [N] rad``; ``energy`` in GeV, ``theta`` in degrees."""
        from hepgan.data.types import Showers
        from hepgan.physics.extract import extract

        e = np.asarray(energy, np.float32)
        th = np.asarray(theta, np.float32)
        out: dict[str, np.ndarray] = {}
        shower_names = [n for n in names if n not in CONDITIONS]
        if shower_names:
            obs = extract(Showers(cells, e, th if self.has_theta else None))
            out.update({n: np.asarray(obs.scalars[n], np.float64) for n in shower_names})
        if "energy" in names:
            out["energy"] = e.astype(np.float64)
        if "theta" in names:
            out["theta"] = np.rad2deg(th.astype(np.float64))
        return {n: out[n] for n in names}

    def reference_conditions(self) -> tuple[float, float]:
        """``(energy GeV, theta rad)`` of the fixed-condition views: 100 GeV and 90 degrees, each clipped
        into the run's range."""
        e = float(np.clip(REFERENCE_ENERGY_GEV, *self.energy_range))
        t = float(np.clip(90.0, *self.theta_range_deg))
        return e, math.radians(t)


def open_probe(
    run_dir: str | Path | Probe,
    *,
    checkpoint: str | int | None = None,
    seed: int = 0,
    batch: int = 64,
    layers: Sequence[str] | None = None,
) -> tuple[Probe, list[str]]:
    """``(probe, layer names)``: a :class:`Probe` of the run in ``run_dir`` tapping ``layers`` (default:
    every conv), or ``run_dir`` itself when it already is a probe (its ``checkpoint``, ``seed`` and
    ``batch`` stay; ``layers`` must be among the ones it taps)."""
    if isinstance(run_dir, Probe):
        if layers is not None:
            if isinstance(layers, str) or not layers:
                raise ValueError(f"layers must be a non-empty sequence of layer names; got {layers!r}")
            bad = [n for n in layers if n not in run_dir.layers]
            if bad:
                raise ValueError(
                    f"layers: {bad} are not tapped by this probe; it taps {list(run_dir.layers)}"
                )
        return run_dir, list(dict.fromkeys(run_dir.layers if layers is None else layers))
    probe = Probe(run_dir, checkpoint=checkpoint, seed=seed, batch=batch, layers=layers)
    return probe, list(probe.layers)


# --------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------


def _constant(v: np.ndarray) -> np.ndarray:
    """Per column of ``v: [N, K]``: True where it does not vary beyond float32 rounding."""
    std = np.nanstd(v, axis=0)
    scale = np.nanmax(np.abs(v), axis=0)
    return ~(std > 1e-6 * scale)


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation ``[C, F]`` of every column of ``a: [N, C]`` with every column of
    ``b: [N, F]``; NaN where either column is constant (or not finite)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(
            f"pearson needs a [N, C] and b [N, F] with the same N >= 2; got {a.shape}, {b.shape}"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        za = (a - a.mean(axis=0)) / a.std(axis=0)
        zb = (b - b.mean(axis=0)) / b.std(axis=0)
        r = za.T @ zb / a.shape[0]
    r[_constant(a), :] = np.nan
    r[:, _constant(b)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _rank(r: np.ndarray) -> np.ndarray:
    """Indices of ``r: [C]`` by decreasing ``|r|``, NaN last."""
    key = np.where(np.isfinite(r), np.abs(r), -1.0)
    return np.argsort(-key, kind="stable")


def _shifts(base: dict[str, np.ndarray], ablated: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean change of each observable in units of its standard deviation over ``base`` (NaN when it is
    constant)."""
    out = {}
    for name, b in base.items():
        sd = float(np.nanstd(b))
        diff = float(np.nanmean(ablated[name] - b))
        out[name] = diff / sd if sd > 1e-12 * max(float(np.nanmax(np.abs(b))), 1e-30) else math.nan
    return out


def _fit_directions(
    noise: np.ndarray, values: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Least squares of each standardised observable on ``noise: [N, D]`` (with an intercept): unit
    coefficient vectors ``[D]`` and ``R^2``; no vector and ``R^2`` 0 for an observable constant over the
    noise."""
    n, d = noise.shape
    design = np.concatenate([np.ones((n, 1)), noise.astype(np.float64)], axis=1)
    dirs, r2 = {}, {}
    for name, v in values.items():
        ok = np.isfinite(v)
        y = v[ok]
        if y.size < d + 2 or _constant(y[:, None])[0]:
            r2[name] = 0.0
            continue
        y = (y - y.mean()) / y.std()
        coef = np.linalg.lstsq(design[ok], y, rcond=None)[0]
        resid = y - design[ok] @ coef
        r2[name] = float(max(0.0, 1.0 - float(resid @ resid) / float(y @ y)))
        w = coef[1:]
        norm = float(np.linalg.norm(w))
        if norm > 0:
            dirs[name] = w / norm
    return dirs, r2


def fit_latent_directions(
    probe: Probe, observables: Sequence[str], *, n: int = 256, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, Any]]:
    """:func:`latent_directions` on a :class:`Probe`: ``(directions, R^2, settings)``, the settings being
    the fixed ``energy_GeV``, ``theta_deg``, ``n`` and ``noise_dim``. ``observables`` are not checked
    here (see :func:`observable_names`); conditions among them are skipped."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an integer >= 3; got {n!r}")
    names = [o for o in observables if o not in CONDITIONS]
    e0, t0 = probe.reference_conditions()
    rng = np.random.default_rng([seed, 0x4C44])
    noise = rng.standard_normal((n, probe.noise_dim)).astype(np.float32)
    energy, theta = np.full(n, e0, np.float32), np.full(n, t0, np.float32)
    cells, _ = probe.run(probe.latents(noise, energy, theta))
    values = probe.observables(cells, energy, theta, names) if names else {}
    dirs, r2 = _fit_directions(noise, values)
    info = {"energy_GeV": e0, "theta_deg": math.degrees(t0), "n": n, "noise_dim": probe.noise_dim}
    return dirs, r2, info


def latent_directions(
    run_dir: str | Path | Probe,
    *,
    observables: Sequence[str] = DEFAULT_OBSERVABLES,
    checkpoint: str | int | None = None,
    seed: int = 0,
    n: int = 256,
    batch: int = 64,
    r2: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Per shower observable, the unit direction ``[noise_dim]`` in the generator's noise space (standard
    normal units; ``noise_dim = latent_dim`` for the fixed-angle 3DGAN, ``latent_dim - 2`` for AngleGAN)
    along which that observable grows fastest at fixed conditions (100 GeV and 90 degrees, clipped into the
    run's range).

    Fitted by least squares of the standardised observable on ``n`` noise vectors; the conditions in
    ``observables`` are skipped. ``r2``: if given, filled with each fit's ``R^2``; an observable that does
    not vary with the noise at all gets ``R^2`` 0 and no direction. ``checkpoint``: None or "latest",
    "best", or a step. ``seed`` picks the noise (and the BatchNorm recomputation batch). ``run_dir`` may
    also be a :class:`Probe` (see :func:`open_probe`).
    """
    probe, _ = open_probe(run_dir, checkpoint=checkpoint, seed=seed, batch=batch, layers=None)
    names = _check_observables(observables, probe.has_theta)
    dirs, fit_r2, _ = fit_latent_directions(probe, names, n=n, seed=seed)
    if r2 is not None:
        r2.update(fit_r2)
    return dirs


# --------------------------------------------------------------------------------------------------------
# the dissection
# --------------------------------------------------------------------------------------------------------


def dissect(
    run_dir: str | Path | Probe,
    out_dir: str | Path,
    *,
    layers: Sequence[str] | None = None,
    n_showers: int = 512,
    top_k: int = 3,
    observables: Sequence[str] = DEFAULT_OBSERVABLES,
    checkpoint: str | int | None = None,
    seed: int = 0,
    batch: int = 64,
    n_directions: int = 256,
) -> dict[str, Any]:
    """Dissect a trained run's generator (see the module docstring) and write the results into
    ``out_dir``: ``dissect.json``, ``dissect/*.png`` (a correlation heatmap per layer, the ablation bar
    chart) and ``dissect.html``.

    ``layers``: generator layer names (default: every convolution, e.g. ``conv1``-``conv4``; ``"dense"``
    is the Dense output). ``n_showers``: showers generated at conditions spread over the run's range.
    ``top_k``: channels zeroed per observable (at most a quarter of the layer's channels, at least one,
    so that the cut is targeted and a control remains; only layers with at least two channels are
    ablated). ``observables``: names from
    :func:`observable_names` (``theta`` is dropped for fixed-angle models). ``checkpoint``: None or
    "latest", "best", or a step number. ``batch``: latent vectors per compiled call. ``n_directions``:
    noise vectors of the :func:`latent_directions` fit. ``run_dir`` may also be a :class:`Probe` (see
    :func:`open_probe`), e.g. one whose generator weights were edited.

    Returns the content of ``dissect.json``: ``layers`` (per layer ``channels``, ``shape``,
    ``correlation`` ``[C][F]`` with ``None`` for NaN, ``inactive`` channels), ``top_units`` (per
    observable the ``top_k`` units of all layers by ``|r|``), ``ablation`` (per shower observable: the
    layer, the zeroed ``top_channels`` and the control's ``random_channels``, ``shift_top`` and
    ``shift_random``: mean shift of every observable in standard deviations), ``latent_directions``.
    """
    if isinstance(n_showers, bool) or not isinstance(n_showers, int) or n_showers < 3:
        raise ValueError(f"n_showers must be an integer >= 3; got {n_showers!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer; got {top_k!r}")
    probe, layer_names = open_probe(run_dir, checkpoint=checkpoint, seed=seed, batch=batch, layers=layers)
    names = _check_observables(observables, probe.has_theta)
    if not layer_names:
        raise ValueError("layers: no layer to dissect (the probe taps none; give layer names)")
    out = Path(out_dir)
    (out / "dissect").mkdir(parents=True, exist_ok=True)

    energy, theta = spread_conditions(probe.conf, n_showers, seed)
    rng = np.random.default_rng([seed, 0x4453])
    noise = rng.standard_normal((n_showers, probe.noise_dim)).astype(np.float32)
    z = probe.latents(noise, energy, theta)
    cells, acts = probe.run(z)
    base = probe.observables(cells, energy, theta, names)
    obs_matrix = np.stack([base[o] for o in names], axis=1)  # [N, F]

    corr = {name: pearson(acts[name], obs_matrix) for name in layer_names}
    layer_out: dict[str, Any] = {}
    for name, r in corr.items():
        inactive = np.flatnonzero(_constant(acts[name])).tolist()
        layer_out[name] = {
            "channels": probe.layers[name],
            "shape": list(probe.layer_shapes[name]),
            "correlation": r,
            "inactive": inactive,
        }

    top_units: dict[str, list[dict[str, Any]]] = {}
    for j, o in enumerate(names):
        units = [(ln, c, float(r[c, j])) for ln, r in corr.items() for c in range(r.shape[0])]
        units = [u for u in units if math.isfinite(u[2])]
        units.sort(key=lambda u: -abs(u[2]))
        top_units[o] = [{"layer": ln, "channel": c, "r": v} for ln, c, v in units[:top_k]]

    ablation = _ablate(probe, z, energy, theta, names, base, corr, top_k, seed)
    dirs, r2, info = fit_latent_directions(probe, names, n=n_directions, seed=seed)
    result: dict[str, Any] = {
        "run_dir": str(probe.run_dir),
        "step": probe.step,
        "arch": probe.arch,
        "checkpoint": probe.checkpoint,
        "sample_bn": probe.sample_bn,
        "seed": seed,
        "n_showers": n_showers,
        "top_k": top_k,
        "energy_range_GeV": list(probe.energy_range),
        "theta_range_deg": list(probe.theta_range_deg),
        "noise_dim": probe.noise_dim,
        "noise_used": probe.noise_used,
        "observables": list(names),
        "observable_std": {o: float(np.nanstd(base[o])) for o in names},
        "layers": layer_out,
        "top_units": top_units,
        "ablation": ablation,
        "latent_directions": {o: {"vector": dirs[o], "r2": r2[o], **info} for o in dirs},
        "latent_r2": r2,
    }
    result = json_safe(result)
    figures = _figures(result, out / "dissect")
    write_json(out / "dissect.json", result, allow_nan=False)
    _page(result, figures, out / "dissect.html")
    return cast(dict[str, Any], result)


def _ablate(
    probe: Probe,
    z: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray,
    names: Sequence[str],
    base: dict[str, np.ndarray],
    corr: dict[str, np.ndarray],
    top_k: int,
    seed: int,
) -> dict[str, Any]:
    """Per shower observable: zero the top channels of its best layer, and random other channels of that
    layer (the control), on the same latent vectors ``z``; the shifts as in :func:`_shifts`."""
    rng = np.random.default_rng([seed, 0x4142])
    cache: dict[tuple[str, tuple[int, ...]], dict[str, float]] = {}

    def shift(layer: str, channels: Sequence[int]) -> dict[str, float]:
        key = (layer, tuple(sorted(int(c) for c in channels)))
        if key not in cache:
            cells, _ = probe.run(z, {layer: key[1]})
            cache[key] = _shifts(base, probe.observables(cells, energy, theta, names))
        return cache[key]

    out: dict[str, Any] = {}
    for j, o in enumerate(names):
        if o in CONDITIONS:
            continue
        candidates = {ln: r[:, j] for ln, r in corr.items() if r.shape[0] >= 2}
        scores = {
            ln: float(np.nanmax(np.abs(r))) if np.isfinite(r).any() else -1.0 for ln, r in candidates.items()
        }
        if not scores or max(scores.values()) < 0:
            reason = "no layer with two or more channels" if not scores else "no channel correlates"
            out[o] = {"skipped": reason}
            continue
        layer = max(scores, key=lambda ln: scores[ln])
        r = candidates[layer]
        k = min(top_k, max(1, r.shape[0] // 4))  # at most a quarter of the layer: a targeted cut
        top = sorted(int(c) for c in _rank(r)[:k])
        rest = np.setdiff1d(np.arange(r.shape[0]), top)
        draws = [
            sorted(int(c) for c in rng.choice(rest, size=min(k, rest.size), replace=False))
            for _ in range(CONTROL_DRAWS)
        ]
        shift_top = shift(layer, top)
        controls = [shift(layer, d) for d in draws]
        shift_random = {m: float(np.mean([c[m] for c in controls])) for m in base}
        out[o] = {
            "layer": layer,
            "k": k,
            "top_channels": top,
            "top_r": [float(r[c]) for c in top],
            "random_channels": draws,
            "shift_top": shift_top,
            "shift_random": shift_random,
        }
    return out


# --------------------------------------------------------------------------------------------------------
# figures and page
# --------------------------------------------------------------------------------------------------------


def _figures(result: dict[str, Any], folder: Path) -> dict[str, str]:
    """The heatmaps and the ablation chart as PNG files in ``folder``; ``{key: <img> tag}``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from hepgan.explain.page import save_figure

    names = result["observables"]
    imgs: dict[str, str] = {}
    for layer, info in result["layers"].items():
        r = np.asarray([as_float_array(row) for row in info["correlation"]], float).reshape(
            info["channels"], len(names)
        )
        c = r.shape[0]
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 1.5 + 0.25 * min(c, 64)))
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#bbbbbb")
        im = ax.imshow(
            np.ma.masked_invalid(r), cmap=cmap, vmin=-1, vmax=1, aspect="auto", interpolation="nearest"
        )
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        step = max(1, c // 16)
        ax.set_yticks(range(0, c, step))
        ax.set_ylabel("channel")
        ax.set_title(f"{layer}: channel mean vs observable (Pearson r; grey = inactive)")
        fig.colorbar(im, ax=ax, fraction=0.05)
        fig.tight_layout()
        imgs[f"corr_{layer}"] = save_figure(fig, folder / f"corr_{layer}.png")

    abl = {o: a for o, a in result["ablation"].items() if "shift_top" in a}
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(abl) + 2), 3.5))
    if abl:
        xs = np.arange(len(abl))
        top = [a["shift_top"][o] for o, a in abl.items()]
        rnd = [a["shift_random"][o] for o, a in abl.items()]
        ax.bar(xs - 0.2, as_float_array(top), 0.4, label="top-k channels zeroed")
        ax.bar(xs + 0.2, as_float_array(rnd), 0.4, label="k random channels zeroed")
        ax.set_xticks(xs, [f"{o}\n({a['layer']})" for o, a in abl.items()], fontsize=8)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "no ablation (no layer with two or more channels)", ha="center", transform=ax.transAxes
        )
    ax.set_ylabel("mean shift of the observable [std]")
    ax.set_title("ablation: shift of each observable when its top channels are zeroed")
    fig.tight_layout()
    imgs["ablation"] = save_figure(fig, folder / "ablation.png")
    return imgs


def _fmt(v: Any) -> Any:
    return "n/a" if v is None else v


def _page(result: dict[str, Any], imgs: dict[str, str], path: Path) -> None:
    from hepgan.explain.page import table, write_page

    how = (
        "<p><b>How to read.</b> Each generator layer's channels are summarised by their spatial mean per "
        f"shower over {result['n_showers']} generated showers (conditions spread over the training range) "
        "and correlated with the showers' observables (Pearson r, from -1 to 1; grey: the channel is "
        "constant, i.e. inactive). A high |r| says a channel <i>follows</i> an observable, not that the "
        "generator uses it; the ablation tests that: the top-k channels of the observable's best layer are "
        "set to zero and the same latent vectors generated again. The shift is the mean change of the "
        "observable in units of its standard deviation; zeroing k random other channels of the same layer is "
        "the control. A top-k shift far larger than the control's marks channels that carry the observable. "
        "Latent directions: how much of each observable the noise vector explains at fixed energy "
        "(R<sup>2</sup> near 0: the generator ignores its noise for that observable).</p>"
    )
    parts = [how]
    if not result["noise_used"]:
        parts.append('<p class="warn">The generator\'s latent vector does not use noise at all.</p>')
    rows = [
        [o, *(f"{u['layer']}:{u['channel']} ({u['r']:+.2f})" for u in units)]
        for o, units in result["top_units"].items()
    ]
    parts.append("<h2>Top units per observable (by |r|)</h2>")
    parts.append(table(["observable", *(f"#{i + 1}" for i in range(result["top_k"]))], rows))
    parts.append("<h2>Ablation</h2>" + imgs["ablation"])
    arows = []
    for o, a in result["ablation"].items():
        if "shift_top" not in a:
            arows.append([o, a.get("skipped", ""), "", "", ""])
            continue
        arows.append(
            [o, a["layer"], str(a["top_channels"]), _fmt(a["shift_top"][o]), _fmt(a["shift_random"][o])]
        )
    parts.append(
        table(
            ["observable", "layer", "zeroed channels", "shift (top-k) [std]", "shift (random) [std]"], arows
        )
    )
    drows = [[o, _fmt(d["r2"])] for o, d in result["latent_directions"].items()]
    parts.append("<h2>Latent directions (fixed energy)</h2>")
    parts.append(table(["observable", "R^2"], drows))
    parts.append("<h2>Correlations per layer</h2>")
    parts += [imgs[k] for k in imgs if k.startswith("corr_")]
    write_page(path, f"Generator dissection (step {result['step']})", "\n".join(parts))
