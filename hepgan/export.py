"""A trained generator as a standalone model file: ONNX (through jax2onnx) or serialized StableHLO.

The exported computation is the whole sampling chain of ``hepgan-generate`` except the noise draw:

    showers [B, X, Y, Z] GeV = generator(energy [B] GeV, theta [B] rad (angle51 only), noise [B, n] ~ N(0, 1))

with the energy/angle conditioning of the model's own ``latent`` (``E/100 * noise`` for fixed25,
``[E/100, theta, noise]`` for angle51), the generator in eval mode (BatchNorm with the statistics of the
run's ``train.sample_bn``), and the inverse of the cell preprocessing (``max(x, 0) ** (1/cell_power) /
cell_scale``), so a C++ caller only draws ``noise`` from N(0, 1).

The convolutions: StableHLO is lowered for one platform (the exporting machine's JAX backend), so it
keeps hepgan's own algorithm per layer for that platform (FFT convolutions where the CPU cost model
picks them, XLA's direct one on GPU). The ONNX graph computes every ``Conv3D`` as flax ``nnx.Conv`` with
explicit zero padding after the nearest upsampling (the same ``lax.conv_general_dilated`` as
``conv_impl="xla"``), which becomes ONNX ``Conv``: jax2onnx 0.17 lowers 3D convolutions only through
``nnx.Conv`` (its ``lax.conv_general_dilated`` rule knows 1D and 2D layouts only), and each ONNX runtime
picks its own algorithm. The inverse power transform uses ``lax.pow``: jax2onnx's ``jnp.power`` rule fails
on a symbolic batch. Neither changes the function beyond float32 rounding.

:func:`export_run` checks the exported model against :func:`hepgan.train.state.generate` (what
``hepgan-generate`` computes) on the same conditions and noise, before writing anything; see
:data:`TOLERANCE` for the criterion.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hepgan.fileio import write_bytes
from hepgan.models.conv import Conv3D, choose_impl, record_convs, resolve_padding, upsample_nearest

FORMATS = ("onnx", "stablehlo")
SUFFIXES = {"onnx": ".onnx", "stablehlo": ".stablehlo"}

TOLERANCE = 1e-4
"""Largest accepted ``max |exported - JAX|`` per shower, relative to that shower's largest cell (JAX).
float32 rounding of the two convolution algorithms (FFT in hepgan's CPU sampling, direct in ONNX)
differs by about 1e-6 of the largest cell; 1e-4 leaves room for the longer accumulation chains of the
paper models and is still two orders of magnitude below any physics-relevant cell difference (cell
energies are resolved to a few percent)."""

FLOOR_GEV = 1e-6
"""Smallest denominator of the relative difference (GeV): a shower whose largest cell is below it (an
untrained or collapsed generator) is compared in absolute terms at this scale. 1 keV is far below the
hit threshold of the 3DGAN validation (2e-4 GeV)."""

VERIFY_SHOWERS = 1000
"""Showers compared between the exported model and JAX."""

DYNAMIC_CHUNK = 128
"""Batch of the verification calls of a model with a dynamic batch; 1000 showers = 7 x 128 + 104, so two
different batch sizes are checked."""

BN_EVENTS = 1024
"""Conditions spread over the run's range on which ``train.sample_bn=recomputed`` statistics are measured
(as ``hepgan-explain`` does): an exported model has no requested conditions to measure them at."""

ONNX_OPSET = 17
"""ONNX opset of the exported graph, that of ONNX 1.12 (2022), rather than jax2onnx's default 23:
experiment frameworks often ship an older onnxruntime, and every operator the generators need exists in
opset 17. The file also carries the lowest IR version that opset allows (8), where the ONNX checker
accepts it."""

BATCH_SYMBOL = "batch"
"""Name of the symbolic batch dimension of a dynamic-batch export."""


class VerificationError(ValueError):
    """The exported model differs from JAX by more than :data:`TOLERANCE`."""


# --------------------------------------------------------------------------------------------------------
# the generator as a function of (energy, theta, noise)
# --------------------------------------------------------------------------------------------------------


class FlaxConv3D(nnx.Module):
    """A :class:`~hepgan.models.conv.Conv3D` computed as flax ``nnx.Conv``: nearest upsampling by the
    layer's factors, then ``nnx.Conv`` with the layer's padding as explicit zeros, the same kernel and bias.
    ``x: [B, X, Y, Z, Cin]`` -> ``[B, X', Y', Z', Cout]``, equal to ``Conv3D(impl="xla")``."""

    def __init__(self, conv: Conv3D) -> None:
        kernel = conv.kernel[...]
        bias = conv.bias[...] if conv.bias is not None else None
        shape = tuple(int(k) for k in kernel.shape[:3])
        self.upsample = conv.upsample
        self.conv = nnx.Conv(
            int(kernel.shape[3]),
            int(kernel.shape[4]),
            shape,
            padding=[(lo, hi) for lo, hi in resolve_padding(shape, conv.padding)],
            use_bias=bias is not None,
            kernel_init=lambda *_: kernel,
            bias_init=lambda *_: bias,
            rngs=nnx.Rngs(0),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [B, X, Y, Z, Cin]`` -> ``[B, X', Y', Z', Cout]``."""
        return self.conv(upsample_nearest(x, self.upsample))


@contextlib.contextmanager
def _normal_draws(noise: jax.Array | None, drawn: list[jax.Array]) -> Iterator[None]:
    """Inside the block ``jax.random.normal`` returns ``noise`` (traced or not; ``ValueError`` for another
    shape than asked), or draws as usual when ``noise`` is None; every value it returns is appended to
    ``drawn``. Lets the model's own ``latent`` condition caller-given noise."""
    original = jax.random.normal

    def normal(key: Any, shape: Any = (), dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(int(s) if isinstance(s, int | np.integer) else s for s in shape)
        if noise is None:
            value = original(key, shape, dtype)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {shape} for this generator; got {tuple(noise.shape)}")
        else:
            value = noise.astype(dtype)
        drawn.append(value)
        return value

    with mock.patch.object(jax.random, "normal", normal):
        yield


@dataclass(frozen=True)
class GeneratorFunction:
    """A trained generator as the pure function ``fn`` of the export.

    ``fn(energy [B] GeV, noise [B, noise_dim])`` (fixed25) or ``fn(energy [B] GeV, theta [B] rad, noise
    [B, noise_dim])`` (angle51) -> showers ``[B, X, Y, Z]`` float32 GeV, all float32; the weights are
    constants of ``fn``. ``grid``: ``(X, Y, Z)``; ``noise_dim``: length of the N(0, 1) noise vector;
    ``latent_dim``: the generator's input after conditioning.
    """

    fn: Callable[..., jax.Array]
    arch: str
    size: str
    angle: bool
    noise_dim: int
    latent_dim: int
    grid: tuple[int, int, int]

    @property
    def input_names(self) -> tuple[str, ...]:
        """``("energy", "noise")`` or ``("energy", "theta", "noise")``."""
        return ("energy", "theta", "noise") if self.angle else ("energy", "noise")

    def input_shapes(self, batch: int | str) -> list[tuple[int | str, ...]]:
        """Shapes of the inputs for ``batch`` rows (an int, or a dimension name for a dynamic batch)."""
        vector: tuple[int | str, ...] = (batch,)
        return [vector, vector, (batch, self.noise_dim)] if self.angle else [vector, (batch, self.noise_dim)]

    def describe(self, batch: int | None) -> dict[str, Any]:
        """Names, shapes, dtypes, units and meaning of inputs and outputs (``batch`` None: dynamic)."""
        b: int | str = BATCH_SYMBOL if batch is None else batch
        shapes = dict(zip(self.input_names, self.input_shapes(b), strict=True))
        meaning = {
            "energy": ("GeV", "primary particle energy (the model divides by 100 itself)"),
            "theta": ("rad", "incidence angle (pi/2 = normal incidence), as in the 'angle' HDF5 format"),
            "noise": ("1", "independent standard normal draws N(0, 1), float32"),
        }
        inputs = [
            {
                "name": n,
                "shape": list(shapes[n]),
                "dtype": "float32",
                "units": meaning[n][0],
                "meaning": meaning[n][1],
            }
            for n in self.input_names
        ]
        outputs = [
            {
                "name": "showers",
                "shape": [b, *self.grid],
                "dtype": "float32",
                "units": "GeV",
                "meaning": "cell energies [batch, x, y, z], as the ECAL dataset of hepgan-generate",
            }
        ]
        return {"inputs": inputs, "outputs": outputs}


def _swap_convs(g: nnx.Module) -> None:
    """Replace every ``Conv3D`` attribute inside ``g`` (in place) by its :class:`FlaxConv3D`."""
    found = [(path, node) for path, node in nnx.iter_graph(g) if isinstance(node, Conv3D)]
    for path, conv in found:
        parent: Any = g
        for key in path[:-1]:
            parent = parent[key] if isinstance(key, int) else getattr(parent, str(key))
        setattr(parent, str(path[-1]), FlaxConv3D(conv))


def _fix_impls(g: nnx.Module, batch: int) -> None:
    """Set every ``conv_impl="auto"`` layer of ``g`` (in place) to the algorithm "auto" takes for a latent
    batch of ``batch`` rows on the default backend, so that a symbolic batch needs no cost comparison."""
    z = jax.ShapeDtypeStruct((batch, int(cast(Any, g).latent_dim)), jnp.float32)
    with record_convs() as specs:
        nnx.eval_shape(lambda m, a: m(a), g, z)
    convs = {m.name: m for _, m in nnx.iter_graph(g) if isinstance(m, Conv3D)}
    for s in specs:
        if convs[s.name].impl == "auto":
            convs[s.name].impl = choose_impl(s.x_shape, s.kernel_shape, s.padding, upsample=s.upsample)


def generator_function(
    g: nnx.Module, preprocess: Any, *, convs: str = "flax", batch: int | None = None
) -> GeneratorFunction:
    """The export function of the generator module ``g`` (a :class:`hepgan.models.base.Generator` in eval
    mode with the weights and BatchNorm statistics to export; left unchanged) with the run's
    ``preprocess`` (:class:`hepgan.data.pipeline.Preprocess`).

    ``convs``: "flax" computes every convolution as :class:`FlaxConv3D` (the form jax2onnx converts, and
    ONNX ``Conv``); "native" keeps the model's own ``Conv3D`` with the algorithm hepgan samples with on the
    default backend (FFT convolutions on CPU where the cost model says so, XLA's direct one elsewhere),
    chosen for ``batch`` rows (None: :data:`DYNAMIC_CHUNK`).
    """
    if convs not in ("flax", "native"):
        raise ValueError(f"convs must be 'flax' or 'native'; got {convs!r}")
    module: Any = nnx.merge(*nnx.split(g))  # a copy whose layers can be changed
    if convs == "flax":
        _swap_convs(module)
    else:
        _fix_impls(module, DYNAMIC_CHUNK if batch is None else batch)
    graph, arrays = nnx.split(module)
    arch, size = str(module.cfg.arch), str(module.cfg.size)
    angle = arch != "fixed25"
    power, scale = float(preprocess.cell_power), float(preprocess.cell_scale)

    seen: list[jax.Array] = []
    one = jax.ShapeDtypeStruct((1,), jnp.float32)
    with _normal_draws(None, seen):
        jax.eval_shape(lambda e: module.latent(jax.random.key(0), e, e), one)
    if len(seen) != 1:
        raise ValueError(
            f"{type(g).__name__}.latent draws {len(seen)} normal arrays; the export supports generators that "
            "draw their noise in one jax.random.normal call"
        )
    noise_dim = int(seen[0].shape[-1])

    def to_gev(x: jax.Array) -> jax.Array:
        """Network-unit cells ``[B, X, Y, Z]`` -> GeV, as ``Preprocess.invert_cells``."""
        if power != 1.0:
            x = jax.lax.pow(jnp.maximum(x, 0.0), 1.0 / power)
        return x / jnp.float32(scale)

    def showers(energy: jax.Array, theta: jax.Array | None, noise: jax.Array) -> jax.Array:
        m: Any = nnx.merge(graph, arrays)
        with _normal_draws(noise, []):
            z = m.latent(None, energy, theta)  # the key is unused: the noise is given
        return to_gev(m(z))

    def fn_angle(energy: jax.Array, theta: jax.Array, noise: jax.Array) -> jax.Array:
        return showers(energy, theta, noise)

    def fn_fixed(energy: jax.Array, noise: jax.Array) -> jax.Array:
        return showers(energy, None, noise)

    return GeneratorFunction(
        fn=fn_angle if angle else fn_fixed,
        arch=arch,
        size=size,
        angle=angle,
        noise_dim=noise_dim,
        latent_dim=int(module.latent_dim),
        grid=cast(tuple[int, int, int], tuple(int(n) for n in module.grid)),
    )


def sampling_state(players: Any, state: Any, conf: Any, *, ema: bool = True, seed: int = 0) -> Any:
    """``state`` with the generator BatchNorm statistics it is sampled with: unchanged for
    ``train.sample_bn=running``; for ``recomputed``, those :func:`~hepgan.train.state.recompute_bn_stats`
    measures for the sampling weights (EMA unless ``ema`` is False) at :data:`BN_EVENTS` conditions spread
    over the run's range (``seed``), measured on copies."""
    from hepgan.explain.dissect import spread_conditions
    from hepgan.train.state import BN_STATS, recompute_bn_stats

    mode = str(conf.train.sample_bn)
    if mode not in BN_STATS:
        raise ValueError(f"train.sample_bn: unknown {mode!r} in the run's config; valid: {list(BN_STATS)}")
    if mode == "running":
        return state
    copied = state.g.replace(batch_stats=jax.tree.map(jnp.copy, state.g.batch_stats))
    g = players.generator(state.replace(g=copied), ema=ema)
    energy, theta = spread_conditions(conf, BN_EVENTS, seed)
    recompute_bn_stats(g, energy, theta, seed)
    measured = jax.tree.leaves(nnx.state(g, nnx.BatchStat))
    stats = jax.tree.unflatten(jax.tree.structure(state.g.batch_stats), measured)
    return state.replace(g=state.g.replace(batch_stats=stats))


# --------------------------------------------------------------------------------------------------------
# the two formats
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _converter_context() -> Iterator[None]:
    """What jax2onnx 0.17.1 needs to convert quietly. Its plugin scan logs a traceback for each example
    plugin whose optional package (equinox, dm-pix) is absent, onnx-ir logs value-info it does not
    serialise, and its flax plugins read ``Variable.value``, which flax 0.12 deprecates: silenced here,
    as none of it concerns the converted graph, which is checked numerically. Its ``nnx.Conv`` rule adds
    the bias by implicit rank promotion, so a process that made that an error (the test suite) allows it
    for the conversion."""
    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), jax.numpy_rank_promotion("allow"):
            warnings.filterwarnings(
                "ignore", message=r"'\.value' access is now deprecated", category=DeprecationWarning
            )
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def onnx_model(gf: GeneratorFunction, batch: int | None, metadata: dict[str, str] | None = None) -> bytes:
    """The ONNX model (serialized ``ModelProto``, opset :data:`ONNX_OPSET`) of ``gf`` for ``batch`` rows
    (None: a symbolic batch dimension :data:`BATCH_SYMBOL`), inputs named as ``gf.input_names``, output
    ``showers``; ``metadata`` goes into the model's ``metadata_props``."""
    import onnx
    from jax2onnx import to_onnx

    b: int | str = BATCH_SYMBOL if batch is None else batch
    with _converter_context():
        model = to_onnx(
            gf.fn,
            gf.input_shapes(b),
            model_name=f"hepgan_{gf.arch}_{gf.size}_generator",
            opset=ONNX_OPSET,
            input_names=list(gf.input_names),
            output_names=["showers"],
            return_mode="proto",
        )
    model.doc_string = (
        "hepgan generator: showers [batch, x, y, z] GeV from energy [batch] GeV"
        + (", theta [batch] rad" if gf.angle else "")
        + f" and noise [batch, {gf.noise_dim}] ~ N(0, 1)"
    )
    if metadata:
        onnx.helper.set_model_props(model, {k: str(v) for k, v in metadata.items()})
    current = model.ir_version
    model.ir_version = min(current, onnx.helper.find_min_ir_version_for(list(model.opset_import)))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError:
        model.ir_version = current  # a construct newer than the opset's IR version: keep jax2onnx's
    return cast(bytes, model.SerializeToString())


def _ir_version(model: bytes) -> int:
    """The IR version of a serialized ONNX model."""
    import onnx

    return int(onnx.load_from_string(model).ir_version)


def stablehlo_export(gf: GeneratorFunction, batch: int | None) -> Any:
    """``jax.export.Exported`` of ``gf`` for ``batch`` rows (None: symbolic batch :data:`BATCH_SYMBOL`),
    lowered for the default JAX platform. ``.serialize()`` gives the bytes, ``.mlir_module()`` the text."""
    b: Any = jax.export.symbolic_shape(BATCH_SYMBOL)[0] if batch is None else batch
    specs = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in gf.input_shapes(b)]
    return jax.export.export(jax.jit(gf.fn))(*specs)


# --------------------------------------------------------------------------------------------------------
# verification against hepgan's own sampling
# --------------------------------------------------------------------------------------------------------


def reference(
    players: Any,
    state: Any,
    preprocess: Any,
    energy: np.ndarray,
    theta: np.ndarray,
    *,
    chunk: int,
    seed: int,
    ema: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``(showers [N, X, Y, Z] GeV, noise [N, noise_dim])``: what ``hepgan-generate`` computes at
    ``energy: [N] GeV``, ``theta: [N] rad`` (:func:`hepgan.train.state.generate` in chunks of ``chunk``,
    seed ``seed``, the sampling statistics of ``state``), and the noise its ``latent`` drew for each
    shower, obtained by calling ``latent`` again with the same chunk keys and padded conditions."""
    from hepgan.train.state import generate

    x = generate(players, state, energy, theta, batch=chunk, seed=seed, ema=ema)
    showers = np.asarray(preprocess.invert_cells(x), np.float32)
    g: Any = players.generator(state, ema=ema)
    noise = []
    n = len(energy)
    for i, start in enumerate(range(0, n, chunk)):
        e = np.resize(energy[start : start + chunk], chunk).astype(np.float32)
        th = np.resize(theta[start : start + chunk], chunk).astype(np.float32)
        drawn: list[jax.Array] = []
        with _normal_draws(None, drawn):
            g.latent(jax.random.fold_in(jax.random.key(seed), i), jnp.asarray(e), jnp.asarray(th))
        noise.append(np.asarray(drawn[0], np.float32)[: min(chunk, n - start)])
    return showers, np.concatenate(noise)


def compare(exported: np.ndarray, expected: np.ndarray, floor: float = FLOOR_GEV) -> dict[str, float]:
    """``max_abs_gev``: ``max |exported - expected|`` over all cells; ``max_rel``: the largest per-shower
    ``max |exported - expected| / max(max(expected), floor)``; ``max_cell_gev``: the largest expected
    cell. ``exported``, ``expected``: ``[N, X, Y, Z]`` GeV."""
    if exported.shape != expected.shape:
        raise VerificationError(f"exported model gives shape {exported.shape}, JAX {expected.shape}")
    diff = np.abs(exported.astype(np.float64) - expected.astype(np.float64)).reshape(len(expected), -1)
    scale = np.maximum(expected.reshape(len(expected), -1).max(axis=1), floor)
    per_shower = diff.max(axis=1) / scale
    finite = bool(np.isfinite(exported).all())
    return {
        "max_abs_gev": float(diff.max()) if finite else math.inf,
        "max_rel": float(per_shower.max()) if finite else math.inf,
        "max_cell_gev": float(expected.max()),
    }


def run_chunks(
    call: Callable[..., np.ndarray], inputs: list[np.ndarray], batch: int | None, chunk: int = DYNAMIC_CHUNK
) -> np.ndarray:
    """``call`` over ``inputs`` (arrays of ``N`` rows) in calls of ``batch`` rows (the last one padded by
    repeating rows, as ``generate`` does), or of ``chunk`` rows with a smaller last call when ``batch``
    is None; returns the ``N`` rows of the concatenated outputs."""
    n = len(inputs[0])
    step = chunk if batch is None else batch
    out = []
    for start in range(0, n, step):
        part = [a[start : start + step] for a in inputs]
        if batch is not None:
            part = [np.resize(a, (batch, *a.shape[1:])) for a in part]
        out.append(np.asarray(call(*part))[: min(step, n - start)])
    return np.concatenate(out)


def onnx_runner(model: bytes, threads: int | None = None) -> Callable[..., np.ndarray]:
    """``call(*inputs) -> showers`` through an onnxruntime CPU session of ``model`` (``threads``: intra-op
    threads, None: onnxruntime's default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def call(*inputs: np.ndarray) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(a, np.float32) for name, a in zip(names, inputs, strict=True)}
        return cast(np.ndarray, session.run(None, feeds)[0])

    return call


def stablehlo_runner(serialized: bytes) -> Callable[..., np.ndarray]:
    """``call(*inputs) -> showers`` through ``jax.export.deserialize(serialized).call`` (jitted)."""
    exported = jax.export.deserialize(bytearray(serialized))
    fn = jax.jit(exported.call)

    def call(*inputs: np.ndarray) -> np.ndarray:
        return np.asarray(fn(*(jnp.asarray(a, jnp.float32) for a in inputs)))

    return call


# --------------------------------------------------------------------------------------------------------
# the command's work
# --------------------------------------------------------------------------------------------------------


def parse_batch(text: str) -> int | None:
    """``--batch``: a positive integer, or "dynamic" (None). ``ValueError`` naming the value otherwise."""
    if text.strip().lower() == "dynamic":
        return None
    try:
        batch = int(text)
    except ValueError:
        batch = 0
    if batch < 1:
        raise ValueError(f"--batch must be a positive integer or 'dynamic'; got {text!r}")
    return batch


def default_out(run_dir: str | os.PathLike[str], fmt: str) -> Path:
    """Where a model is written without ``--out``: ``<run_dir>/export/generator<suffix>``."""
    return Path(run_dir) / "export" / f"generator{SUFFIXES[fmt]}"


def resolve_out(out: str | os.PathLike[str] | None, run_dir: str | os.PathLike[str], fmt: str) -> Path:
    """The model file to write: ``out`` itself, ``out/generator<suffix>`` when ``out`` is an existing
    folder or ends with a slash, :func:`default_out` when None."""
    if out is None:
        return default_out(run_dir, fmt)
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", os.sep)):
        return path / f"generator{SUFFIXES[fmt]}"
    return path


def versions() -> dict[str, str | None]:
    """Versions of the packages that shape the exported file and its check."""
    from hepgan.provenance import package_versions

    return {
        "python": platform.python_version(),
        **package_versions(("hepgan", "jax", "jaxlib", "flax", "jax2onnx", "onnx", "onnx-ir", "onnxruntime")),
    }


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: Path,
    *,
    batch: int | None = None,
    best: bool = False,
    step: int | None = None,
    ema: bool = True,
    seed: int = 0,
    n_verify: int = VERIFY_SHOWERS,
) -> dict[str, Any]:
    """Export the generator of the run ``run_dir`` as ``fmt`` ("onnx" or "stablehlo") to the file ``out``
    (StableHLO also writes the MLIR text to ``out`` + ".mlir"), check it against JAX on ``n_verify``
    showers and write the JSON sidecar ``out`` + ".json"; returns the sidecar's content.

    ``batch``: rows per call (None: dynamic); ``best``/``step``: which checkpoint (as
    ``hepgan-generate``); ``ema``: the EMA weights (else the raw ones); ``seed``: the verification
    conditions and noise, and the conditions of recomputed BatchNorm statistics.

    Raises ``FileNotFoundError``/``ValueError`` from :func:`hepgan.train.checkpoint.restore_run`,
    ``ValueError`` for a bad ``fmt``, and :class:`VerificationError` (nothing written) when the exported
    model differs from JAX by more than :data:`TOLERANCE`.
    """
    from hepgan.explain.dissect import condition_range, spread_conditions
    from hepgan.explain.regenerate import run_record
    from hepgan.train.checkpoint import restore_run

    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}; got {fmt!r}")
    players, state, preprocess, conf = restore_run(run_dir, best=best, step=step)
    state = sampling_state(players, state, conf, ema=ema, seed=seed)
    convs = "flax" if fmt == "onnx" else "native"
    gf = generator_function(players.generator(state, ema=ema), preprocess, convs=convs, batch=batch)
    (e_lo, e_hi), (t_lo, t_hi) = condition_range(conf)
    record: dict[str, Any] = {
        "format": fmt,
        "file": out.name,
        **gf.describe(batch),
        "batch": "dynamic" if batch is None else batch,
        "model": {"arch": gf.arch, "size": gf.size, "latent_dim": gf.latent_dim, "noise_dim": gf.noise_dim},
        "trained_conditions": {"energy_gev": [e_lo, e_hi], "theta_deg": [t_lo, t_hi]},
        "run": {
            **run_record(run_dir),
            "checkpoint": "best" if best else "latest",
            "step": int(state.step),
            "weights": "ema" if ema else "raw",
            "bn_stats": str(conf.train.sample_bn),
        },
        "versions": versions(),
    }

    if fmt == "onnx":
        meta = {
            "hepgan.units": "energy GeV, theta rad, noise N(0,1), showers GeV",
            "hepgan.step": str(int(state.step)),
        }
        data = onnx_model(gf, batch, meta)
        call = onnx_runner(data)
        record["onnx_opset"] = ONNX_OPSET
        record["onnx_ir_version"] = _ir_version(data)
        record["convolutions"] = "ONNX Conv (direct)"
        runtime = "onnxruntime CPUExecutionProvider"
        extra: dict[Path, bytes] = {}
    else:
        exported = stablehlo_export(gf, batch)
        data = bytes(exported.serialize())
        call = stablehlo_runner(data)
        mlir = out.with_name(out.name + ".mlir")
        extra = {mlir: exported.mlir_module().encode()}
        record["mlir"] = mlir.name
        record["platforms"] = list(exported.platforms)
        record["convolutions"] = "hepgan's own algorithm per layer for the platform (FFT or direct)"
        record["calling_convention_version"] = int(exported.calling_convention_version)
        runtime = "jax.export.deserialize(...).call"

    energy, theta = spread_conditions(conf, n_verify, seed)
    chunk = min(DYNAMIC_CHUNK, n_verify) if batch is None else batch
    expected, noise = reference(players, state, preprocess, energy, theta, chunk=chunk, seed=seed, ema=ema)
    inputs = [energy, theta, noise] if gf.angle else [energy, noise]
    got = run_chunks(call, inputs, batch, chunk)
    numbers = compare(got, expected)
    passed = numbers["max_rel"] <= TOLERANCE
    record["verification"] = {
        "runtime": runtime,
        "reference": "hepgan.train.state.generate (what hepgan-generate computes), same conditions and noise",
        "n_showers": n_verify,
        "seed": seed,
        "call_batch": chunk,
        **numbers,
        "max_rel_definition": "max over showers of max|exported - JAX| / max(largest JAX cell, floor)",
        "floor_gev": FLOOR_GEV,
        "tolerance": TOLERANCE,
        "passed": passed,
    }
    if not passed:
        raise VerificationError(
            f"the exported {fmt} model differs from JAX by up to {numbers['max_rel']:.3g} of a shower's "
            f"largest cell (max abs {numbers['max_abs_gev']:.3g} GeV) on {n_verify} showers; the tolerance "
            f"is {TOLERANCE:g}. Nothing was written to {out}."
        )
    from hepgan.fileio import write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, data)
    for path, content in extra.items():
        write_bytes(path, content)
    write_json(out.with_name(out.name + ".json"), record)
    return record
