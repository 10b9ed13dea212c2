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
from flax import nnx

CONV_IMPLS = ("xla", "fft", "auto")
PADDINGS = ("same", "valid")

# Cost-model constant for CPU: the FFT path is taken while it needs fewer than CPU_FFT_ADVANTAGE times
# the FLOPs of the direct convolution. On the paper layers (`hepgan-bench conv`, batch 16, 2-core x86-64,
# jax 0.10.2) the FFT path ran at 1.2-21x the useful FLOP rate of XLA's CPU convolution, which is slowest
# with few channels (e.g. the 2x2x2 convolutions to one channel: about 4x the FLOPs, yet 2.7-5.7x faster);
# 8 lies inside that range and selects the FFT for every paper layer, each of which it sped up.
CPU_FFT_ADVANTAGE = 8.0


def same_padding(kernel: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Keras/TensorFlow "same" padding per axis for stride 1: ``(k-1)//2`` before, the rest after.

    For even kernels TensorFlow (and XLA's "SAME") put the extra zero *after* the data.
    """
    return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)


def conv_output_shape(spatial: Sequence[int], kernel: Sequence[int], padding: str) -> tuple[int, ...]:
    """Spatial output shape of a stride-1 convolution with ``padding`` in {"same", "valid"}."""
    if padding == "same":
        return tuple(int(s) for s in spatial)
    return tuple(int(s) - int(k) + 1 for s, k in zip(spatial, kernel, strict=True))


def _check(x: jax.Array, w: jax.Array, padding: str) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"conv3d padding must be one of {PADDINGS}; got {padding!r}")
    if x.ndim != 5 or w.ndim != 5 or x.shape[-1] != w.shape[3]:
        raise ValueError(
            "conv3d expects x [B, X, Y, Z, Cin] and kernel [kx, ky, kz, Cin, Cout] with matching Cin; "
            f"got x {x.shape} and kernel {w.shape}"
        )
    if padding == "valid" and any(s < k for s, k in zip(x.shape[1:4], w.shape[:3], strict=True)):
        raise ValueError(f"conv3d 'valid': input {x.shape[1:4]} is smaller than the kernel {w.shape[:3]}")


def conv3d_xla(x: jax.Array, w: jax.Array, padding: str) -> jax.Array:
    """Direct convolution by XLA. ``x: [B, X, Y, Z, Cin]``, ``w: [kx, ky, kz, Cin, Cout]`` ->
    ``[B, X', Y', Z', Cout]`` (``X' = X`` for "same", ``X - kx + 1`` for "valid")."""
    _check(x, w, padding)
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1, 1),
        padding=same_padding(w.shape[:3]) if padding == "same" else "VALID",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )


def fft_length(n: int) -> int:
    """Smallest 2-3-5-7-smooth length ``>= n``: the FFT libraries are fastest on such sizes, and any
    length ``>= n`` is free of wrap-around for a "valid" correlation (see ``conv3d_fft``)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def conv3d_fft(x: jax.Array, w: jax.Array, padding: str) -> jax.Array:
    """The same result as ``conv3d_xla`` computed with real FFTs over the three spatial axes.

    Correlation theorem: with ``X = rfftn(x)`` and ``W = rfftn(w)`` (both zero-filled to length ``L``
    per axis), ``irfftn(X * conj(W))[o] = sum_k x[(o + k) mod L] w[k]``; multiplying by ``conj(W)``
    is the kernel flip that turns the convolution theorem into cross-correlation. For the "valid"
    outputs ``o <= N - k`` every index ``o + k <= N - 1 < L``, so no term wraps around as long as
    ``L >= N`` (the padded input length); "same" is explicit zero padding followed by "valid".
    The channel contraction is a complex matmul per frequency: ``sum_i X[b, f, i] conj(W)[f, i, o]``.
    Shapes as in ``conv3d_xla``; float32 in and out (complex64 inside).
    """
    _check(x, w, padding)
    kernel = tuple(int(k) for k in w.shape[:3])
    if padding == "same":
        x = jnp.pad(x, ((0, 0), *same_padding(kernel), (0, 0)))
    n = x.shape[1:4]
    out = conv_output_shape(n, kernel, "valid")
    lengths = tuple(fft_length(int(s)) for s in n)
    # Channel-first so that the transformed axes are the trailing, contiguous ones.
    xf = jnp.fft.rfftn(jnp.moveaxis(x, -1, 1), s=lengths, axes=(2, 3, 4))  # [B, Ci, Lx, Ly, Lz/2+1]
    wf = jnp.fft.rfftn(jnp.transpose(w, (3, 4, 0, 1, 2)), s=lengths, axes=(2, 3, 4))  # [Ci, Co, ...]
    yf = jnp.einsum("bixyz,ioxyz->boxyz", xf, jnp.conj(wf))
    y = jnp.fft.irfftn(yf, s=lengths, axes=(2, 3, 4))[:, :, : out[0], : out[1], : out[2]]
    return jnp.moveaxis(y, 1, -1).astype(x.dtype)


def conv_flops(
    batch: int, spatial: Sequence[int], kernel: Sequence[int], cin: int, cout: int, padding: str
) -> dict[str, float]:
    """Floating-point operation counts of one forward convolution by each method.

    ``direct``: ``2 B V_out k^3 Cin Cout`` (a multiply and an add per tap). ``fft``: real FFTs of the
    ``B Cin`` input and ``B Cout`` output channels and of the ``Cin Cout`` kernel slices at
    ``2.5 L log2 L`` each (half a complex FFT), plus ``8`` real operations per complex multiply-add of
    the ``B L_f Cin Cout`` channel contraction (``L_f`` = half-spectrum length).
    """
    kernel = tuple(int(k) for k in kernel)
    padded = [int(s) + (k - 1 if padding == "same" else 0) for s, k in zip(spatial, kernel, strict=True)]
    out = conv_output_shape(spatial, kernel, padding)
    lengths = [fft_length(p) for p in padded]
    n_fft = math.prod(lengths)
    n_freq = lengths[0] * lengths[1] * (lengths[2] // 2 + 1)
    one_fft = 2.5 * n_fft * math.log2(max(n_fft, 2))
    direct = 2.0 * batch * math.prod(out) * math.prod(kernel) * cin * cout
    fft = one_fft * (batch * (cin + cout) + cin * cout) + 8.0 * batch * n_freq * cin * cout
    return {"direct": direct, "fft": fft}


def choose_impl(
    x_shape: Sequence[int], kernel_shape: Sequence[int], padding: str, backend: str | None = None
) -> str:
    """The implementation ``auto`` uses for one layer: "xla" or "fft".

    ``x_shape: [B, X, Y, Z, Cin]``, ``kernel_shape: [kx, ky, kz, Cin, Cout]``. On GPU/TPU always
    "xla" (cuDNN/TPU convolutions are fast and the FFT path costs extra memory); on CPU "fft" when
    ``flops_fft < CPU_FFT_ADVANTAGE * flops_direct`` (see ``conv_flops``).
    """
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "xla"
    flops = conv_flops(x_shape[0], x_shape[1:4], kernel_shape[:3], kernel_shape[3], kernel_shape[4], padding)
    return "fft" if flops["fft"] < CPU_FFT_ADVANTAGE * flops["direct"] else "xla"


def conv3d(x: jax.Array, w: jax.Array, padding: str, impl: str = "auto") -> jax.Array:
    """Stride-1 3D cross-correlation by ``impl`` in {"xla", "fft", "auto"}; shapes as ``conv3d_xla``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}; got {impl!r}")
    if impl == "auto":
        impl = choose_impl(x.shape, w.shape, padding)
    return conv3d_fft(x, w, padding) if impl == "fft" else conv3d_xla(x, w, padding)


Initializer = Callable[..., jax.Array]
_GLOROT_UNIFORM = jax.nn.initializers.glorot_uniform()  # the Keras default


class ConvSpec(NamedTuple):
    """One convolution as called: layer name, input ``[B, X, Y, Z, Cin]``, kernel
    ``[kx, ky, kz, Cin, Cout]``, padding."""

    name: str
    x_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    padding: str


_RECORDING: list[list[ConvSpec]] = []


@contextlib.contextmanager
def record_convs() -> Iterator[list[ConvSpec]]:
    """Collect the ``ConvSpec`` of every ``Conv3D`` called (traced or not) inside the ``with`` block."""
    _RECORDING.append([])
    try:
        yield _RECORDING[-1]
    finally:
        _RECORDING.pop()


class Conv3D(nnx.Module):
    """Keras ``Conv3D(filters, kernel_size, padding, use_bias)`` with stride 1, channel-last.

    Parameters ``kernel: [kx, ky, kz, Cin, Cout]`` and ``bias: [Cout]`` (zeros, as Keras).
    ``impl`` selects the convolution algorithm (see the module docstring); it changes speed only.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        padding: str = "valid",
        use_bias: bool = True,
        kernel_init: Initializer = _GLOROT_UNIFORM,
        impl: str = "auto",
        name: str = "",
        rngs: nnx.Rngs,
    ) -> None:
        if padding not in PADDINGS:
            raise ValueError(f"Conv3D padding must be one of {PADDINGS}; got {padding!r}")
        if impl not in CONV_IMPLS:
            raise ValueError(f"Conv3D impl (ModelConfig.conv_impl) must be one of {CONV_IMPLS}; got {impl!r}")
        kshape = (*(int(k) for k in kernel_size), int(in_features), int(out_features))
        self.kernel = nnx.Param(kernel_init(rngs.params(), kshape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.padding = padding
        self.impl = impl
        self.name = name

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [B, X, Y, Z, Cin]`` -> ``[B, X', Y', Z', Cout]``."""
        if _RECORDING:
            _RECORDING[-1].append(
                ConvSpec(self.name, tuple(int(s) for s in x.shape), tuple(self.kernel.shape), self.padding)
            )
        y = conv3d(x, self.kernel[...], self.padding, self.impl)
        if self.bias is not None:
            y = y + self.bias[...].reshape(1, 1, 1, 1, -1)
        return y
