"""3D convolution for the 3DGAN family: XLA's direct convolution or an FFT convolution, chosen per layer.

All convolutions here are stride 1, dilation 1, channel-last (``x: [B, X, Y, Z, Cin]``, kernel
``[kx, ky, kz, Cin, Cout]``, the Keras/Flax layout) and, like every deep-learning "convolution", a
cross-correlation: ``y[o] = sum_k x[o + k] w[k]``.

Why two implementations: on CPU, XLA's direct 3D convolution runs far below the machine's FLOP rate,
while an FFT convolution (``rfftn`` over the three spatial axes, a per-frequency channel contraction,
``irfftn``) is often an order of magnitude faster for these large kernels (up to 6x6x8 = 288 taps).
On GPU cuDNN's direct convolution is fast and ``auto`` keeps it.

``auto`` decides per layer at trace time from a cost model in floating-point operations with one
backend-dependent constant (``CPU_FFT_ADVANTAGE``) measured by ``hepgan.bench.conv``; it needs no
timing at run time, so it is deterministic and works under ``jit`` on abstract shapes. A measured
choice (time both once per shape and cache) would adapt to any machine, but it would make the compiled
program depend on noisy timings and cost a compile of both variants per layer; on another CPU, rerun the
benchmark and adjust the constant if the crossover moves.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

CONV_IMPLS = ("xla", "fft", "auto")
PADDINGS = ("same", "valid")

# A padding is "same", "valid", or explicit zeros ((lo, hi), (lo, hi), (lo, hi)) before and after each
# spatial axis: Keras's ZeroPadding3D followed by a "valid" Conv3D, folded into the convolution.
Padding = str | tuple[tuple[int, int], ...]

# Cost-model constant for CPU: the FFT path is taken while it needs fewer than CPU_FFT_ADVANTAGE times
# the FLOPs of the direct convolution. On the paper layers (`hepgan-bench conv`, batch 16, 2-core x86-64,
# jax 0.10.2) the FFT path ran at 1.2-21x the useful FLOP rate of XLA's CPU convolution, which is slowest
# with few channels (e.g. the 2x2x2 convolutions to one channel: about 4x the FLOPs, yet 2.7-5.7x faster);
# 8 lies inside that range and selects the FFT for every paper layer, each of which it sped up.
CPU_FFT_ADVANTAGE = 8.0

# The per-frequency channel contraction of the FFT path: up to this many (Cin x Cout) channel pairs a
# broadcast multiply-and-sum (one fused loop over the spectrum, no transposes) beats XLA's batched complex
# matmul on CPU; above it the matmul wins. Measured per paper layer, forward and backward, batch 16, on the
# 2-core x86-64 VM (`hepgan-bench peers` JSON, section "levers"): the products 6-64 (2x2x2 to one
# channel, 6->6, 1->32, 8->8) ran 1.1-1.5x faster multiplied, 256-512 (32->8, 64->6, 8->64) 1.1-1.9x slower.
MULTIPLY_CONTRACTION_MAX = 64


def same_padding(kernel: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Keras/TensorFlow "same" padding per axis for stride 1: ``(k-1)//2`` before, the rest after.

    For even kernels TensorFlow (and XLA's "SAME") put the extra zero *after* the data.
    """
    return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)


def zero_padding(pads: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Keras ``ZeroPadding3D((px, py, pz))`` as a convolution padding: ``p`` zeros on both sides of each
    spatial axis."""
    return tuple((int(p), int(p)) for p in pads)


def resolve_padding(kernel: Sequence[int], padding: Padding) -> tuple[tuple[int, int], ...]:
    """Zeros ``((lo, hi), (lo, hi), (lo, hi))`` before and after each spatial axis for ``padding``
    ("same", "valid" or already explicit) and a kernel of spatial shape ``kernel``."""
    if isinstance(padding, str):
        if padding not in PADDINGS:
            raise ValueError(f"conv3d padding must be one of {PADDINGS} or ((lo, hi),) * 3; got {padding!r}")
        return same_padding(kernel) if padding == "same" else ((0, 0),) * len(kernel)
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        pads = ()
    if len(pads) != len(kernel) or any(p < 0 for pair in pads for p in pair):
        raise ValueError(
            f"conv3d padding must be 'same', 'valid' or {len(kernel)} pairs (lo, hi) of zeros >= 0; "
            f"got {padding!r}"
        )
    return pads


def conv_output_shape(spatial: Sequence[int], kernel: Sequence[int], padding: Padding) -> tuple[int, ...]:
    """Spatial output shape of a stride-1 convolution: ``X + lo + hi - kx + 1`` per axis."""
    pads = resolve_padding(kernel, padding)
    return tuple(int(s) + lo + hi - int(k) + 1 for s, (lo, hi), k in zip(spatial, pads, kernel, strict=True))


def _check(
    x: jax.Array | jax.ShapeDtypeStruct, w: jax.Array, padding: Padding
) -> tuple[tuple[int, int], ...]:
    if x.ndim != 5 or w.ndim != 5 or x.shape[-1] != w.shape[3]:
        raise ValueError(
            "conv3d expects x [B, X, Y, Z, Cin] and kernel [kx, ky, kz, Cin, Cout] with matching Cin; "
            f"got x {x.shape} and kernel {w.shape}"
        )
    pads = resolve_padding(w.shape[:3], padding)
    if any(m < 1 for m in conv_output_shape(x.shape[1:4], w.shape[:3], pads)):
        raise ValueError(
            f"conv3d: input {x.shape[1:4]} padded by {pads} is smaller than the kernel {w.shape[:3]}"
        )
    return pads


def conv3d_xla(
    x: jax.Array, w: jax.Array, padding: Padding, upsample: Sequence[int] = (1, 1, 1)
) -> jax.Array:
    """Direct convolution by XLA. ``x: [B, X, Y, Z, Cin]``, ``w: [kx, ky, kz, Cin, Cout]`` ->
    ``[B, X', Y', Z', Cout]`` with ``X' = fx X + lo + hi - kx + 1`` (``fx X`` for "same"), where
    ``upsample = (fx, fy, fz)`` repeats each voxel first (Keras ``UpSampling3D``)."""
    x = upsample_nearest(x, check_upsample(upsample))
    pads = _check(x, w, padding)
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1, 1),
        padding=pads,
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )


def fft_length(n: int) -> int:
    """Smallest 2-3-5-7-smooth length ``>= n``: the FFT libraries are fastest on such sizes (on CPU the
    time per point is then within 10 % for every length from 9 to 60, so the smallest one wins)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fft_lengths(
    spatial: Sequence[int], kernel: Sequence[int], padding: Padding, upsample: Sequence[int] = (1, 1, 1)
) -> tuple[int, ...]:
    """Transform length per axis of ``conv3d_fft`` for an input of ``spatial`` shape (before the
    ``upsample`` factors): the smallest ``L = f M`` with ``M`` smooth and ``L >= f X + max(lo, hi)``
    (and ``>= kx`` and the output length), free of wrap-around as ``conv3d_fft`` explains."""
    up = tuple(int(f) * int(s) for f, s in zip(upsample, spatial, strict=True))
    pads = resolve_padding(kernel, padding)
    out = conv_output_shape(up, kernel, pads)
    return tuple(
        int(f) * fft_length(-(-max(s + max(lo, hi), int(k), m) // int(f)))
        for f, s, (lo, hi), k, m in zip(upsample, up, pads, kernel, out, strict=True)
    )


def check_upsample(upsample: Sequence[int]) -> tuple[int, int, int]:
    """``upsample`` as three integer factors >= 1 (``ValueError`` otherwise)."""
    try:
        factors = tuple(int(f) for f in upsample)
    except (TypeError, ValueError):
        factors = ()
    if len(factors) != 3 or min(factors) < 1:
        raise ValueError(f"conv3d upsample must be three integer factors >= 1; got {upsample!r}")
    return factors  # type: ignore[return-value]


def upsample_nearest(x: jax.Array, factors: Sequence[int]) -> jax.Array:
    """Keras ``UpSampling3D(size)``: repeat each voxel ``factors`` times per spatial axis.
    ``x: [B, X, Y, Z, C]`` -> ``[B, fx X, fy Y, fz Z, C]``."""
    for axis, f in zip((1, 2, 3), factors, strict=True):
        if f != 1:
            x = jnp.repeat(x, f, axis=axis)
    return x


def _upsampled_spectrum(xc: jax.Array, factors: Sequence[int], lengths: Sequence[int]) -> jax.Array:
    """``rfftn`` over the last three axes, at ``lengths``, of ``xc: [..., X, Y, Z]`` upsampled (nearest)
    by ``factors``, computed from the FFT of ``xc`` itself at ``M = L / f`` points per axis.

    Per axis ``u[j] = x[j // f]``, so ``U[k] = sum_m x[m] sum_r e^{-2 pi i (f m + r) k / L}
    = X_M[k mod M] * B[k]`` with ``B[k] = sum_{r<f} e^{-2 pi i r k / L}``: the small spectrum tiled ``f``
    times, times a fixed factor. The last axis is transformed in full (complex) and cut to ``L/2 + 1``.
    """
    small = tuple(n // f for n, f in zip(lengths, factors, strict=True))
    xs = jnp.fft.fftn(xc.astype(jnp.complex64), s=small, axes=(-3, -2, -1))
    xs = jnp.tile(xs, (1,) * (xc.ndim - 3) + tuple(factors))[..., : lengths[2] // 2 + 1]
    box = np.ones((1, 1, 1), np.complex128)
    for axis, (n, f) in enumerate(zip(lengths, factors, strict=True)):
        k = np.arange(n // 2 + 1 if axis == 2 else n)
        b = np.exp(-2j * np.pi * np.outer(k, np.arange(f)) / n).sum(axis=1)
        box = box * b.reshape([-1 if a == axis else 1 for a in range(3)])
    return xs * jnp.asarray(box.reshape((1,) * (xc.ndim - 3) + box.shape), jnp.complex64)


def kernel_spectrum(
    w: jax.Array, spatial: Sequence[int], padding: Padding, upsample: Sequence[int] = (1, 1, 1)
) -> jax.Array:
    """``conj(rfftn(w'))`` of ``conv3d_fft`` for an input of ``spatial`` shape (before ``upsample``):
    ``w: [kx, ky, kz, Cin, Cout]`` -> complex64 ``[Cin, Co, Lx, Ly, Lz/2+1]`` with ``L = fft_lengths``.

    Depends on the weights and shapes only, so a generator whose weights do not change (sampling) can
    compute it once (``use_kernel_spectra``) instead of in every call."""
    kernel = tuple(int(k) for k in w.shape[:3])
    pads = resolve_padding(kernel, padding)
    lengths = fft_lengths(spatial, kernel, pads, check_upsample(upsample))
    axes = (2, 3, 4)
    wt = jnp.transpose(w, (3, 4, 0, 1, 2))  # [Ci, Co, kx, ky, kz]
    wt = jnp.pad(wt, ((0, 0), (0, 0), *((0, n - k) for n, k in zip(lengths, kernel, strict=True))))
    if any(lo for lo, _ in pads):
        wt = jnp.roll(wt, tuple(-lo for lo, _ in pads), axis=axes)
    return jnp.conj(jnp.fft.rfftn(wt, axes=axes))


def conv3d_fft(
    x: jax.Array,
    w: jax.Array,
    padding: Padding,
    upsample: Sequence[int] = (1, 1, 1),
    spectrum: jax.Array | None = None,
    *,
    contraction: str | None = None,
    channels_first: bool = False,
) -> jax.Array:
    """The same result as ``conv3d_xla`` computed with real FFTs over the three spatial axes.

    Per axis the output is ``y[o] = sum_k x[o + k - lo] w[k]`` (``x`` zero outside ``[0, X)``). With
    ``X = rfftn(x)`` (``x`` zero-filled to length ``L``) and ``W = rfftn(w')``, where ``w'`` is the
    kernel zero-filled to ``L`` and rolled back by ``lo`` (tap ``k`` at position ``(k - lo) mod L``),
    ``irfftn(X * conj(W))[o] = sum_k x[(o + k - lo) mod L] w[k]``: multiplying by ``conj(W)`` turns the
    convolution theorem into cross-correlation, and the roll puts the padding into the circle instead of
    into the data. The indices read run from ``-lo`` to ``X + hi - 1``; they wrap onto zeros only, never
    onto data, when ``L >= X + max(lo, hi)`` (the negative ones land in ``[L - lo, L)``, the others stay
    below ``L``). So the padding costs no copy and only ``max(lo, hi)`` extra points per axis, where
    padding explicitly and transforming would need ``lo + hi`` (for "same" 5x5x5 on 25^3: 27^3 points
    instead of 30^3).

    An ``upsample`` (Keras ``UpSampling3D`` before the convolution) is never materialised: the
    spectrum of the upsampled input comes from the FFT of the small one (``_upsampled_spectrum``), so
    upsampling by ``f`` per axis makes the input transform ``f^3`` times smaller instead of larger.

    The channel contraction ``sum_i X[b, i, f] conj(W)[i, o, f]`` is a batched complex matmul over the
    frequencies, or, for at most ``MULTIPLY_CONTRACTION_MAX`` channel pairs, a fused multiply-and-sum
    (``contraction`` "dot" or "multiply" forces one; ``hepgan-bench levers`` measures both).
    Shapes as in ``conv3d_xla``; float32 in and out (complex64 inside). ``spectrum``: the kernel's
    ``kernel_spectrum`` if already computed (``w`` then only gives the shapes). ``channels_first``: ``x``
    is ``[B, Cin, X, Y, Z]`` and the output ``[B, Cout, X', Y', Z']`` (no transposes around the FFTs).
    """
    if contraction not in (None, "dot", "multiply"):
        raise ValueError(f"conv3d_fft contraction must be None, 'dot' or 'multiply'; got {contraction!r}")
    if x.ndim != 5:
        _check(x, w, padding)  # raises, naming the expected shapes
    if channels_first:
        return _conv3d_fft_cf(x, w, padding, upsample, spectrum, contraction)
    return jnp.moveaxis(
        _conv3d_fft_cf(jnp.moveaxis(x, -1, 1), w, padding, upsample, spectrum, contraction), 1, -1
    )


def _conv3d_fft_cf(
    xc: jax.Array,
    w: jax.Array,
    padding: Padding,
    upsample: Sequence[int],
    spectrum: jax.Array | None,
    contraction: str | None,
) -> jax.Array:
    """``conv3d_fft`` on channel-first ``xc: [B, Cin, X, Y, Z]`` -> ``[B, Cout, X', Y', Z']``."""
    x = jax.ShapeDtypeStruct((xc.shape[0], *xc.shape[2:], xc.shape[1]), xc.dtype)  # channel-last shape
    factors = check_upsample(upsample)
    up = tuple(f * int(n) for f, n in zip(factors, x.shape[1:4], strict=True))
    pads = _check(jax.ShapeDtypeStruct((x.shape[0], *up, x.shape[4]), x.dtype), w, padding)
    kernel = tuple(int(k) for k in w.shape[:3])
    cin, cout = int(w.shape[3]), int(w.shape[4])
    out = conv_output_shape(up, kernel, pads)
    lengths = fft_lengths(x.shape[1:4], kernel, pads, factors)
    axes = (2, 3, 4)  # channel-first: the transformed axes are the trailing, contiguous ones
    if factors == (1, 1, 1):
        xf = jnp.fft.rfftn(xc, s=lengths, axes=axes)  # [B, Ci, Lx, Ly, Lz/2+1]
    else:
        xf = _upsampled_spectrum(xc, factors, lengths)
    wf = kernel_spectrum(w, x.shape[1:4], pads, factors) if spectrum is None else spectrum
    if wf.shape != (cin, cout, lengths[0], lengths[1], lengths[2] // 2 + 1):
        raise ValueError(f"conv3d_fft: kernel spectrum of shape {wf.shape} does not fit lengths {lengths}")
    if contraction is None:
        contraction = "multiply" if cin * cout <= MULTIPLY_CONTRACTION_MAX else "dot"
    if contraction == "multiply":
        yf = jnp.sum(xf[:, :, None] * wf[None], axis=1)
    else:
        yf = jnp.einsum("bixyz,ioxyz->boxyz", xf, wf)
    y = jnp.fft.irfftn(yf, s=lengths, axes=axes)[:, :, : out[0], : out[1], : out[2]]
    return y.astype(xc.dtype)


def conv_flops(
    batch: int,
    spatial: Sequence[int],
    kernel: Sequence[int],
    cin: int,
    cout: int,
    padding: Padding,
    upsample: Sequence[int] = (1, 1, 1),
) -> dict[str, float]:
    """Floating-point operation counts of one forward convolution by each method.

    ``direct``: ``2 B V_out k^3 Cin Cout`` (a multiply and an add per tap). ``fft``: real FFTs of the
    ``B Cin`` input and ``B Cout`` output channels and of the ``Cin Cout`` kernel slices at
    ``2.5 L log2 L`` each (half a complex FFT), plus ``8`` real operations per complex multiply-add of
    the ``B L_f Cin Cout`` channel contraction (``L_f`` = half-spectrum length); ``L`` as ``fft_lengths``.
    ``spatial`` is the input before ``upsample``; an upsampled input is transformed at ``L / f`` points
    (a complex FFT, twice the real one's cost).
    """
    kernel = tuple(int(k) for k in kernel)
    factors = check_upsample(upsample)
    up = tuple(f * int(s) for f, s in zip(factors, spatial, strict=True))
    out = conv_output_shape(up, kernel, padding)
    lengths = fft_lengths(spatial, kernel, padding, factors)
    n_fft = math.prod(lengths)
    n_freq = lengths[0] * lengths[1] * (lengths[2] // 2 + 1)

    def one_fft(n: int) -> float:
        return 2.5 * n * math.log2(max(n, 2))

    n_small = n_fft // math.prod(factors)
    x_fft = one_fft(n_fft) if factors == (1, 1, 1) else 2.0 * one_fft(n_small)
    direct = 2.0 * batch * math.prod(out) * math.prod(kernel) * cin * cout
    fft = (
        batch * cin * x_fft + one_fft(n_fft) * (batch * cout + cin * cout) + 8.0 * batch * n_freq * cin * cout
    )
    return {"direct": direct, "fft": fft}


def choose_impl(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    padding: Padding,
    backend: str | None = None,
    upsample: Sequence[int] = (1, 1, 1),
) -> str:
    """The implementation ``auto`` uses for one layer: "xla" or "fft".

    ``x_shape: [B, X, Y, Z, Cin]``, ``kernel_shape: [kx, ky, kz, Cin, Cout]``. On GPU/TPU always
    "xla" (cuDNN/TPU convolutions are fast and the FFT path costs extra memory); on CPU "fft" when
    ``flops_fft < CPU_FFT_ADVANTAGE * flops_direct`` (see ``conv_flops``).
    """
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "xla"
    b, k = x_shape, kernel_shape
    flops = conv_flops(b[0], b[1:4], k[:3], k[3], k[4], padding, upsample)
    return "fft" if flops["fft"] < CPU_FFT_ADVANTAGE * flops["direct"] else "xla"


def conv3d(
    x: jax.Array, w: jax.Array, padding: Padding, impl: str = "auto", upsample: Sequence[int] = (1, 1, 1)
) -> jax.Array:
    """Stride-1 3D cross-correlation by ``impl`` in {"xla", "fft", "auto"} of ``x`` upsampled (nearest)
    by ``upsample``; shapes as ``conv3d_xla``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}; got {impl!r}")
    if impl == "auto":
        impl = choose_impl(x.shape, w.shape, padding, upsample=upsample)
    f = conv3d_fft if impl == "fft" else conv3d_xla
    return f(x, w, padding, upsample)


Initializer = Callable[..., jax.Array]
_GLOROT_UNIFORM = jax.nn.initializers.glorot_uniform()  # the Keras default


class ConvSpec(NamedTuple):
    """One convolution as called: layer name, input ``[B, X, Y, Z, Cin]`` (before ``upsample``), kernel
    ``[kx, ky, kz, Cin, Cout]``, padding, nearest-upsampling factors."""

    name: str
    x_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    padding: Padding
    upsample: tuple[int, int, int] = (1, 1, 1)


_RECORDING: list[list[ConvSpec]] = []
_SPECTRA: list[dict[str, jax.Array]] = []
_TAPS: list[dict[str, Callable[[jax.Array], jax.Array]]] = []


@contextlib.contextmanager
def record_convs() -> Iterator[list[ConvSpec]]:
    """Collect the ``ConvSpec`` of every ``Conv3D`` called (traced or not) inside the ``with`` block."""
    _RECORDING.append([])
    try:
        yield _RECORDING[-1]
    finally:
        _RECORDING.pop()


@contextlib.contextmanager
def use_kernel_spectra(spectra: dict[str, jax.Array]) -> Iterator[None]:
    """Inside the ``with`` block (traced or not), every FFT-path ``Conv3D`` named in ``spectra`` uses
    that precomputed ``kernel_spectrum`` instead of transforming its kernel (see ``kernel_spectra``)."""
    _SPECTRA.append(spectra)
    try:
        yield
    finally:
        _SPECTRA.pop()


@contextlib.contextmanager
def tap_outputs(taps: dict[str, Callable[[jax.Array], jax.Array]]) -> Iterator[None]:
    """Inside the ``with`` block (traced or not), every ``Conv3D`` named in ``taps`` passes its output
    ``[B, X', Y', Z', Cout]`` (bias added, before any activation) through ``taps[name]`` and returns what
    that gives (same shape and dtype expected): record it, or zero some channels (ablation).

    The callable runs at trace time under ``jit``, so enter the block inside the jitted function (a
    compiled function does not retrace when taps change); to record, store the value in a container made
    inside the traced function and return it from there. Other code can tap its own layers by
    name with :func:`apply_tap`. Nested blocks do not merge: the innermost one applies. Outside any
    block, and for layers not named, the model computes exactly what it computes without taps.
    """
    _TAPS.append(taps)
    try:
        yield
    finally:
        _TAPS.pop()


def apply_tap(name: str, y: jax.Array) -> jax.Array:
    """``y`` passed through the innermost :func:`tap_outputs` callable for layer ``name``, or ``y``
    itself when no tap names it."""
    fn = _TAPS[-1].get(name) if _TAPS else None
    return y if fn is None else fn(y)


def kernel_spectra(model: nnx.Module, x: jax.Array | jax.ShapeDtypeStruct) -> dict[str, jax.Array]:
    """``{layer name: kernel_spectrum}`` of every ``Conv3D`` of ``model`` that takes the FFT path when
    ``model`` is called on ``x`` (e.g. a latent batch ``[B, latent_dim]``). Found by an abstract call
    (nothing computed but the spectra); for sampling with fixed weights:
    ``with use_kernel_spectra(kernel_spectra(g, z)): g(z)``."""
    with record_convs() as specs:
        nnx.eval_shape(lambda m, a: m(a), model, x)
    convs = {m.name: m for _, m in nnx.iter_graph(model) if isinstance(m, Conv3D)}
    out: dict[str, jax.Array] = {}
    for s in specs:
        impl = convs[s.name].impl
        if impl == "auto":
            impl = choose_impl(s.x_shape, s.kernel_shape, s.padding, upsample=s.upsample)
        if impl == "fft":
            out[s.name] = kernel_spectrum(convs[s.name].kernel[...], s.x_shape[1:4], s.padding, s.upsample)
    return out


class Conv3D(nnx.Module):
    """Keras ``Conv3D(filters, kernel_size, padding, use_bias)`` with stride 1, channel-last.

    ``padding`` is "same", "valid" or explicit zeros ``((lo, hi),) * 3``: a Keras ``ZeroPadding3D``
    before a "valid" convolution is this layer with ``padding=zero_padding(pads)``, which the FFT path
    computes without copying the padded input (see ``conv3d_fft``). Likewise ``upsample``: a Keras
    ``UpSampling3D(size)`` right before this layer, never materialised by the FFT path.

    Parameters ``kernel: [kx, ky, kz, Cin, Cout]`` and ``bias: [Cout]`` (zeros, as Keras).
    ``impl`` selects the convolution algorithm (see the module docstring); it changes speed only.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        padding: Padding = "valid",
        upsample: Sequence[int] = (1, 1, 1),
        use_bias: bool = True,
        kernel_init: Initializer = _GLOROT_UNIFORM,
        impl: str = "auto",
        name: str = "",
        rngs: nnx.Rngs,
    ) -> None:
        if impl not in CONV_IMPLS:
            raise ValueError(f"Conv3D impl (ModelConfig.conv_impl) must be one of {CONV_IMPLS}; got {impl!r}")
        kshape = (*(int(k) for k in kernel_size), int(in_features), int(out_features))
        pads = resolve_padding(kshape[:3], padding)  # validates; "same" and "valid" stay readable
        padding = padding if isinstance(padding, str) else pads
        self.kernel = nnx.Param(kernel_init(rngs.params(), kshape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.padding = padding
        self.upsample = check_upsample(upsample)
        self.impl = impl
        self.name = name

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [B, X, Y, Z, Cin]`` -> ``[B, X', Y', Z', Cout]`` (``X' = fx X + lo + hi - kx + 1``), through
        the :func:`tap_outputs` tap named ``self.name`` if one is active."""
        if _RECORDING:
            _RECORDING[-1].append(
                ConvSpec(
                    self.name,
                    tuple(int(s) for s in x.shape),
                    tuple(self.kernel.shape),
                    self.padding,
                    self.upsample,
                )
            )
        spectrum = _SPECTRA[-1].get(self.name) if _SPECTRA else None
        if spectrum is not None:
            y = conv3d_fft(x, self.kernel[...], self.padding, self.upsample, spectrum)
        else:
            y = conv3d(x, self.kernel[...], self.padding, self.impl, self.upsample)
        if self.bias is not None:
            y = y + self.bias[...].reshape(1, 1, 1, 1, -1)
        return apply_tap(self.name, y)
