"""Tests of hepgan.models: the paper architectures layer by layer, the Keras conventions, the heads, and
the equivalence of the XLA and FFT convolutions.

Parameter counts are derived by hand from the Keras layer lists (docs/models.md shows the arithmetic):
Conv3D kx*ky*kz*Cin*Cout + Cout (bias), Dense in*out + out, BatchNorm 2 trainable (gamma, beta) and
2 non-trainable (moving mean, variance) numbers per channel.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hepgan.models import ModelConfig, build, conv_specs, measured_angle
from hepgan.models.conv import (
    MULTIPLY_CONTRACTION_MAX,
    Conv3D,
    ConvSpec,
    choose_impl,
    conv3d,
    conv3d_fft,
    conv3d_xla,
    conv_output_shape,
    fft_length,
)
from hepgan.models.gan3d import Generator3D
from hepgan.models.layers import Dropout, avg_pool2, batch_norm, hash_bits, upsample_nearest, zero_pad
from hepgan.train.state import param_count

# ---------------------------------------------------------------------------------------------------
# Paper architectures: per-layer parameter counts and shapes (no compilation: nnx.eval_shape)

# Trainable parameters per layer.
PAPER_PARAMS = {
    ("fixed25", "G"): {
        "dense": 200 * 3136 + 3136,  # 630336
        "conv1": 6 * 6 * 8 * 8 * 64 + 64,  # 147520 (same)
        "bn1": 2 * 64,
        "conv2": 6 * 5 * 8 * 64 * 6 + 6,  # 92166
        "bn2": 2 * 6,
        "conv3": 3 * 3 * 8 * 6 * 6 + 6,  # 2598
        "conv4": 2 * 2 * 2 * 6 * 1,  # 48, no bias
    },
    ("fixed25", "D"): {
        "conv1": 125 * 1 * 32 + 32,  # 4032
        "conv2": 125 * 32 * 8 + 8,  # 32008
        "bn2": 16,
        "conv3": 125 * 8 * 8 + 8,  # 8008
        "bn3": 16,
        "conv4": 8008,
        "bn4": 16,
        "head_logit": 11 * 11 * 11 * 8 + 1,  # 10649
        "head_energy": 10649,
    },
    ("angle51", "G"): {
        "dense": 256 * 5184 + 5184,  # 1332288
        "conv1": 6 * 6 * 8 * 8 * 8 + 8,  # 18440
        "bn1": 16,
        "conv2": 4 * 4 * 6 * 8 * 6 + 6,  # 4614
        "bn2": 12,
        "conv3": 4 * 4 * 6 * 6 * 6 + 6,  # 3462
        "bn3": 12,
        "conv4": 3462,
        "bn4": 12,
        "conv5": 3 * 3 * 5 * 6 * 6 + 6,  # 1626
        "bn5": 12,
        "conv6": 3 * 3 * 3 * 6 * 6 + 6,  # 978
        "conv7": 2 * 2 * 2 * 6 + 1,  # 49 (with bias in AngleGAN)
    },
    ("angle51", "D"): {
        "conv1": 5 * 6 * 6 * 1 * 16 + 16,  # 2896
        "conv2": 5 * 6 * 6 * 16 * 8 + 8,  # 23048
        "bn2": 16,
        "conv3": 5 * 6 * 6 * 8 * 8 + 8,  # 11528
        "bn3": 16,
        "conv4": 11528,
        "bn4": 16,
        "head_logit": 19152 + 1,  # flatten 19*18*7*8 = 19152
        "head_energy": 19153,
    },
}
# Totals as Keras' summary() reports them (trainable + non-trainable BN moving statistics).
PAPER_TOTALS = {
    ("fixed25", "G"): (872808, 140),  # 872948 = "about 0.87 M"
    ("fixed25", "D"): (73402, 48),  # 73450 = "about 73 k"
    ("angle51", "G"): (1364983, 64),  # 1365047 = "about 1.36 M"
    ("angle51", "D"): (87354, 48),
}
# Input shape (without batch) of every convolution, from the layer lists by hand.
PAPER_CONV_INPUTS = {
    "fixed25": {
        "G.conv1": (7, 7, 8, 8),
        "G.conv2": (18, 18, 16, 64),  # up(2,2,2) of (7,7,8) = (14,14,16), pad (2,2,0)
        "G.conv3": (28, 28, 33, 6),  # (13,14,9) up (2,2,3) = (26,28,27), pad (1,0,3)
        "G.conv4": (26, 26, 26, 6),
        "D.conv1": (25, 25, 25, 1),
        "D.conv2": (29, 29, 29, 32),
        "D.conv3": (29, 29, 29, 8),
        "D.conv4": (27, 27, 27, 8),
    },
    "angle51": {
        "G.conv1": (54, 54, 48, 8),  # up 6 of (9,9,8)
        "G.conv2": (53, 53, 43, 8),  # (49,49,41) pad (2,2,1)
        "G.conv3": (54, 54, 40, 6),  # (50,50,38) pad (2,2,1)
        "G.conv4": (55, 55, 37, 6),  # (51,51,35) pad (2,2,1)
        "G.conv5": (54, 54, 32, 6),  # (52,52,32) pad (1,1,0)
        "G.conv6": (54, 54, 28, 6),  # (52,52,28) pad (1,1,0)
        "G.conv7": (52, 52, 26, 6),
        "D.conv1": (51, 51, 25, 1),
        "D.conv2": (51, 51, 27, 16),  # pad (0,0,1)
        "D.conv3": (47, 46, 24, 8),  # (47,46,22) pad (0,0,1)
        "D.conv4": (43, 41, 19, 8),
    },
}
GRIDS = {"fixed25": (25, 25, 25), "angle51": (51, 51, 25)}


def _per_layer(model: nnx.Module, kind: type) -> dict[str, int]:
    out: dict[str, int] = {}
    for path, v in nnx.to_flat_state(nnx.state(model, kind)):
        out[str(path[0])] = out.get(str(path[0]), 0) + math.prod(v.shape)
    return out


@pytest.fixture(scope="module", params=["fixed25", "angle51"])
def paper(request: pytest.FixtureRequest) -> tuple[str, nnx.Module, nnx.Module]:
    arch = request.param
    g, d = nnx.eval_shape(lambda: build(ModelConfig(arch=arch, size="paper"), nnx.Rngs(0)))
    return arch, g, d


def test_paper_parameter_counts_per_layer(paper: tuple[str, nnx.Module, nnx.Module]) -> None:
    arch, g, d = paper
    for role, model in (("G", g), ("D", d)):
        assert _per_layer(model, nnx.Param) == PAPER_PARAMS[(arch, role)], (arch, role)
        trainable, stats = PAPER_TOTALS[(arch, role)]
        assert sum(_per_layer(model, nnx.Param).values()) == trainable
        # moving mean and variance: as many as gamma and beta
        bn_stats = _per_layer(model, nnx.BatchStat)
        assert sum(bn_stats.values()) == stats
        assert bn_stats == {k: v for k, v in PAPER_PARAMS[(arch, role)].items() if k.startswith("bn")}


def test_paper_shapes_and_padding(paper: tuple[str, nnx.Module, nnx.Module]) -> None:
    arch, g, d = paper
    specs = conv_specs(g, d, batch=1)

    def keras_input(s: ConvSpec) -> tuple[int, ...]:
        # Keras's ZeroPadding3D before a conv is folded into its explicit padding here
        # and so is UpSampling3D before it
        up = tuple(f * n for f, n in zip(s.upsample, s.x_shape[1:4], strict=True))
        if isinstance(s.padding, str):
            return (*up, s.x_shape[4])
        return (*(n + lo + hi for n, (lo, hi) in zip(up, s.padding, strict=True)), s.x_shape[4])

    assert {s.name: keras_input(s) for s in specs} == PAPER_CONV_INPUTS[arch]
    same = {s.name for s in specs if s.padding == "same"}
    assert same == ({"G.conv1", "D.conv1"} if arch == "fixed25" else {"D.conv1"})
    z = jax.ShapeDtypeStruct((3, g.latent_dim), jnp.float32)
    x = nnx.eval_shape(lambda m, z: m(z), g, z)
    assert x.shape == (3, *GRIDS[arch]) and x.dtype == jnp.float32
    out = nnx.eval_shape(lambda m, x: m(x), d, x)
    heads = {"logit", "energy", "ecal"} | ({"angle"} if arch == "angle51" else set())
    assert set(out) == heads and all(v.shape == (3,) for v in out.values())


def test_keras_conventions_of_paper_layers(paper: tuple[str, nnx.Module, nnx.Module]) -> None:
    arch, g, d = paper
    eps = 1e-3 if arch == "fixed25" else 1e-6
    for model in (g, d):
        bns = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
        assert bns and all(bn.momentum == 0.99 and bn.epsilon == eps for bn in bns)
    assert d.dropout.rate == 0.2
    assert g.latent_dim == (200 if arch == "fixed25" else 256)


# ---------------------------------------------------------------------------------------------------
# Keras layer semantics against NumPy


def _np_correlate(x: np.ndarray, w: np.ndarray, padding: str | tuple) -> np.ndarray:
    """Direct cross-correlation, Keras/TensorFlow "same" (extra zero after), "valid" or explicit zeros
    ((lo, hi),) * 3, in float64."""
    k = w.shape[:3]
    if padding == "same":
        x = np.pad(x, [(0, 0)] + [((kk - 1) // 2, kk - 1 - (kk - 1) // 2) for kk in k] + [(0, 0)])
    elif padding != "valid":
        x = np.pad(x, [(0, 0), *padding, (0, 0)])
    out = [x.shape[i + 1] - k[i] + 1 for i in range(3)]
    y = np.zeros((x.shape[0], *out, w.shape[-1]))
    for a in range(k[0]):
        for b in range(k[1]):
            for c in range(k[2]):
                patch = x[:, a : a + out[0], b : b + out[1], c : c + out[2], :]
                y += patch @ w[a, b, c]
    return y


@pytest.mark.parametrize("impl", ["xla", "fft"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv_matches_numpy_correlation(impl: str, padding: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6, 9, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 2, 3, 2)).astype(np.float32)  # even and odd kernel sizes
    got = np.asarray(jax.jit(conv3d, static_argnums=(2, 3))(jnp.asarray(x), jnp.asarray(w), padding, impl))
    np.testing.assert_allclose(got, _np_correlate(x, w, padding), rtol=1e-5, atol=1e-5)


# Explicit zeros: asymmetric, more before than after, wider than the kernel (outputs that see only
# padding), and a kernel longer than input plus either pad; channel products on both sides of
# MULTIPLY_CONTRACTION_MAX so that both contractions of the FFT path are checked.
@pytest.mark.parametrize("impl", ["xla", "fft"])
@pytest.mark.parametrize(
    "pads, kernel, channels",
    [
        (((2, 2), (2, 2), (0, 0)), (6, 5, 8), (3, 2)),
        (((3, 1), (0, 2), (1, 0)), (4, 3, 2), (9, 8)),
        (((4, 4), (0, 0), (3, 5)), (2, 3, 2), (2, 40)),
        (((2, 2), (1, 1), (0, 0)), (8, 4, 3), (1, 1)),
    ],
)
@pytest.mark.parametrize("upsample", [(1, 1, 1), (2, 1, 3), (3, 2, 2)])
def test_conv_explicit_padding_matches_numpy(
    impl: str, pads: tuple, kernel: tuple, channels: tuple, upsample: tuple
) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 6, 9, channels[0])).astype(np.float32)
    w = rng.standard_normal((*kernel, *channels)).astype(np.float32)
    assert (channels[0] * channels[1] <= MULTIPLY_CONTRACTION_MAX) == (channels[1] != 40 and channels[0] != 9)
    conv = jax.jit(conv3d, static_argnums=(2, 3, 4))
    got = np.asarray(conv(jnp.asarray(x), jnp.asarray(w), pads, impl, upsample))
    # Keras UpSampling3D: each voxel repeated, independently of the code under test
    x_up = x.repeat(upsample[0], 1).repeat(upsample[1], 2).repeat(upsample[2], 3)
    want = _np_correlate(x_up, w, pads)
    assert got.shape == want.shape == (2, *conv_output_shape(x_up.shape[1:4], kernel, pads), channels[1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("bad", ["full", ((1, 1), (1, 1)), ((1, -1), (0, 0), (0, 0)), ((1,), (0,), (0,))])
def test_conv_rejects_bad_padding(bad: object) -> None:
    with pytest.raises(ValueError, match="padding"):
        conv3d(jnp.zeros((1, 5, 5, 5, 1)), jnp.zeros((2, 2, 2, 1, 1)), bad, "fft")
    for factors in ((2, 2), (1, 0, 1), "2x"):
        with pytest.raises(ValueError, match="upsample"):
            conv3d(jnp.zeros((1, 5, 5, 5, 1)), jnp.zeros((2, 2, 2, 1, 1)), "valid", "fft", factors)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv3d(jnp.zeros((1, 2, 5, 5, 1)), jnp.zeros((4, 2, 2, 1, 1)), ((0, 1), (0, 0), (0, 0)), "xla")


def test_upsample_pad_pool_match_numpy() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 3, 2, 2)).astype(np.float32)
    up = np.asarray(upsample_nearest(jnp.asarray(x), (2, 1, 3)))
    for i, j, k in np.ndindex(4, 3, 6):
        np.testing.assert_array_equal(up[0, i, j, k], x[0, i // 2, j, k // 3])
    padded = np.asarray(zero_pad(jnp.asarray(x), (1, 0, 2)))
    assert padded.shape == (1, 4, 3, 6, 2)
    np.testing.assert_array_equal(padded[0, 1:3, :, 2:4], x[0])
    assert np.abs(padded).sum() == pytest.approx(np.abs(x).sum(), rel=1e-6)
    y = rng.standard_normal((1, 5, 4, 3, 1)).astype(np.float32)
    pooled = np.asarray(avg_pool2(jnp.asarray(y)))
    assert pooled.shape == (1, 2, 2, 1, 1)  # odd trailing voxels dropped, as Keras "valid"
    np.testing.assert_allclose(pooled[0, 1, 0, 0, 0], y[0, 2:4, 0:2, 0:2, 0].mean(), rtol=1e-6)


def test_batchnorm_running_average_is_keras_convention() -> None:
    bn = batch_norm(3, 1e-3, None, nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(3).normal(5.0, 2.0, (64, 3)), jnp.float32)
    y = bn(x)
    # Keras: moving = 0.99 * moving + 0.01 * batch, starting from mean 0 and variance 1
    np.testing.assert_allclose(bn.mean[...], 0.01 * np.asarray(x).mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.99 + 0.01 * np.asarray(x).var(0), rtol=1e-5)
    want = (np.asarray(x) - np.asarray(x).mean(0)) / np.sqrt(np.asarray(x).var(0) + 1e-3)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# XLA vs FFT convolution on every paper conv shape: outputs and gradients (batch 1)
#
# Tolerance: the FFT path rounds in O(log N) complex operations per output instead of one long sum, so
# the difference is a few float32 ulps of the largest magnitude involved; 1e-5 of the largest |value|
# (about 100 ulps) leaves margin while any indexing or flip error shows up at order 1.
CONV_TOL = 1e-5


def _paper_specs() -> list:
    out = []
    for arch in ("fixed25", "angle51"):
        g, d = nnx.eval_shape(lambda arch=arch: build(ModelConfig(arch=arch), nnx.Rngs(0)))
        out += [pytest.param(s, id=f"{arch}-{s.name}") for s in conv_specs(g, d, batch=1)]
    return out


@pytest.mark.parametrize("spec", _paper_specs())
def test_fft_equals_xla_on_paper_layer(spec) -> None:
    rng = np.random.default_rng(sum(spec.x_shape))
    x = jnp.asarray(rng.standard_normal(spec.x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(spec.kernel_shape), jnp.float32)

    def fwd_and_grads(impl: str):
        f = conv3d_xla if impl == "xla" else conv3d_fft

        @jax.jit
        def run(x: jax.Array, w: jax.Array):
            y, vjp = jax.vjp(lambda x, w: f(x, w, spec.padding, spec.upsample), x, w)
            ct = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
            return (y, *vjp(ct))

        return [np.asarray(a) for a in run(x, w)]

    ref, got = fwd_and_grads("xla"), fwd_and_grads("fft")
    for name, r, g in zip(("output", "grad_x", "grad_kernel"), ref, got, strict=True):
        assert r.shape == g.shape, name
        scale = np.abs(r).max()
        assert np.abs(g - r).max() <= CONV_TOL * scale, (name, np.abs(g - r).max() / scale)


def test_fft_length_is_smooth_and_long_enough() -> None:
    for n in range(1, 200):
        m = fft_length(n)
        assert m >= n and m - n < 10
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        assert r == 1


def test_auto_choice() -> None:
    assert choose_impl((16, 51, 51, 27, 16), (5, 6, 6, 16, 8), "valid", backend="gpu") == "xla"
    assert choose_impl((16, 51, 51, 27, 16), (5, 6, 6, 16, 8), "valid", backend="cpu") == "fft"
    with pytest.raises(ValueError, match="conv_impl"):
        conv3d(jnp.zeros((1, 3, 3, 3, 1)), jnp.zeros((2, 2, 2, 1, 1)), "valid", "cudnn")
    with pytest.raises(ValueError, match="padding"):
        conv3d(jnp.zeros((1, 3, 3, 3, 1)), jnp.zeros((2, 2, 2, 1, 1)), "full", "xla")


# ---------------------------------------------------------------------------------------------------
# Tiny models: real forward passes, heads, latent, modes


# One batch size and shared jitted callables, so that each tiny model compiles once per mode.
TINY_BATCH = 4
_gen_call = nnx.jit(lambda g, z: g(z))
_disc_call = nnx.jit(lambda d, x: d(x))


@pytest.fixture(scope="module", params=["fixed25", "angle51"])
def tiny(request: pytest.FixtureRequest):
    arch = request.param
    g, d = build(ModelConfig(arch=arch, size="tiny"), nnx.Rngs(0))
    return arch, g, d


def _line_shower(theta: float, geo: tuple[float, float], grid: tuple[int, int, int]) -> np.ndarray:
    """Cells of a straight shower axis at polar angle ``theta`` tilted in Y-Z: in each layer the energy
    sits on two neighbouring y-cells with the barycentre exactly on the axis (x spread over 3 cells)."""
    cell, layer = geo
    nx, ny, nz = grid
    cells = np.zeros(grid)
    depth_profile = np.exp(-0.5 * ((np.arange(nz) - 8.0) / 4.0) ** 2) + 0.01
    for l in range(nz):
        z = (l + 0.5) * layer - nz * layer / 2
        yc = (ny / 2) * cell + z / math.tan(theta)  # y (mm) of the axis in this layer
        j = yc / cell - 0.5  # fractional cell index of the axis
        j0 = math.floor(j)
        f = j - j0
        for jj, wgt in ((j0, 1 - f), (j0 + 1, f)):
            cells[nx // 2 - 1 : nx // 2 + 2, jj, l] += depth_profile[l] * wgt / 3
    return cells


@pytest.mark.parametrize("theta_deg", [60.0, 75.0, 90.0, 118.0])
def test_measured_angle_of_straight_shower(theta_deg: float) -> None:
    geo = (5.1, 4.0)
    theta = math.radians(theta_deg)
    cells = _line_shower(theta, geo, (51, 51, 25))
    got = float(measured_angle(jnp.asarray(cells[None], jnp.float32), *geo)[0])
    assert got == pytest.approx(theta, abs=1e-4)
    # the pitch / thickness ratio matters: the same cells read with a cubic geometry give another angle
    cubic = float(measured_angle(jnp.asarray(cells[None], jnp.float32), 1.0, 1.0)[0])
    assert cubic == pytest.approx(
        math.pi / 2 - math.atan(math.tan(math.pi / 2 - theta) * 4.0 / 5.1), abs=1e-4
    )


def test_measured_angle_degenerate_events_have_finite_gradient() -> None:
    cells = np.zeros((3, 51, 51, 25), np.float32)
    cells[1, 25, 25, 10] = 1.0  # all energy in one layer
    cells[2] = _line_shower(1.2, (5.1, 4.0), (51, 51, 25))
    x = jnp.asarray(cells)
    angle, vjp = jax.vjp(jax.jit(lambda x: measured_angle(x, 5.1, 4.0)), x)
    np.testing.assert_allclose(angle[:2], [math.pi / 2, math.pi / 2], rtol=1e-6)
    (grad,) = vjp(jnp.ones((3,), jnp.float32))
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad[2]).max()) > 0


def test_measured_angle_agrees_with_physics_observable() -> None:
    observables = pytest.importorskip("hepgan.physics.observables")
    x = jnp.asarray(np.random.default_rng(4).exponential(1.0, (4, 51, 51, 25)), jnp.float32)
    np.testing.assert_allclose(
        measured_angle(x, 5.1, 4.0), observables.measured_angle(x, 5.1, 4.0), rtol=1e-5, atol=1e-6
    )


def test_tiny_forward_and_heads(tiny) -> None:
    arch, g, d = tiny
    energy = jnp.asarray([10.0, 100.0, 300.0, 500.0], jnp.float32)
    theta = jnp.asarray([1.1, 1.57, 1.8, 2.0], jnp.float32)
    z = g.latent(jax.random.key(0), energy, theta)
    assert z.shape == (TINY_BATCH, g.latent_dim)
    x = _gen_call(g, z)
    assert x.shape == (TINY_BATCH, *GRIDS[arch]) and bool(jnp.all(x >= 0)) and bool(jnp.all(jnp.isfinite(x)))
    # real-looking input with a known sum: the ECAL head is the sum of the cells, undone power for angle51
    cells = np.random.default_rng(5).exponential(0.1, (TINY_BATCH, *GRIDS[arch])).astype(np.float32)
    out = _disc_call(d, jnp.asarray(cells))
    power = 1.0 if arch == "fixed25" else 0.85
    np.testing.assert_allclose(
        out["ecal"], (cells.astype(np.float64) ** (1 / power)).sum((1, 2, 3)), rtol=1e-5
    )
    assert all(v.shape == (TINY_BATCH,) and bool(jnp.all(jnp.isfinite(v))) for v in out.values())
    if arch == "angle51":  # the angle head reads the geometry's 5.1 mm pitch and 4.0 mm layers
        line = np.stack([_line_shower(t, (5.1, 4.0), GRIDS[arch]) for t in (1.1, 1.4, 1.7, 2.0)])
        got = _disc_call(d, jnp.asarray(line**0.85, jnp.float32))["angle"]
        np.testing.assert_allclose(got, [1.1, 1.4, 1.7, 2.0], atol=2e-4)


def test_latent_conditioning(tiny) -> None:
    arch, g, _ = tiny
    key = jax.random.key(7)
    e1 = jnp.asarray([100.0, 250.0], jnp.float32)
    th = jnp.asarray([1.2, 1.9], jnp.float32)
    z1 = np.asarray(g.latent(key, e1, th))
    z2 = np.asarray(g.latent(key, 2 * e1, th))
    if arch == "fixed25":  # (E/100) * N(0,1): the same noise scales with E
        np.testing.assert_allclose(z2, 2 * z1, rtol=1e-6)
    else:  # [E/100, theta, N(0,1)...]: the noise does not depend on E
        np.testing.assert_allclose(z1[:, :2], [[1.0, 1.2], [2.5, 1.9]], rtol=1e-6)
        np.testing.assert_allclose(z2[:, 2:], z1[:, 2:])
        with pytest.raises(ValueError, match="theta"):
            g.latent(key, e1)
    big = np.asarray(
        g.latent(key, jnp.full((4000,), 100.0, jnp.float32), jnp.full((4000,), 1.5, jnp.float32))
    )
    noise = big if arch == "fixed25" else big[:, 2:]
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1.0) < 0.02


def test_product_and_value_conditioning_gives_the_energy() -> None:
    cfg = ModelConfig(arch="fixed25", size="tiny", conditioning="product_and_value")
    g = Generator3D(cfg, rngs=nnx.Rngs(0))
    paper = Generator3D(ModelConfig(arch="fixed25", size="tiny"), rngs=nnx.Rngs(0))
    key, e = jax.random.key(3), jnp.asarray([30.0, 100.0, 420.0], jnp.float32)
    z, z_paper = np.asarray(g.latent(key, e)), np.asarray(paper.latent(key, e))
    np.testing.assert_allclose(z[:, 0], [0.3, 1.0, 4.2], rtol=1e-6)  # E/100 exactly
    np.testing.assert_allclose(z[:, 1:], z_paper[:, 1:], rtol=1e-6)  # the rest is the paper's E * noise
    assert g(jnp.asarray(z)).shape == (3, 25, 25, 25)
    assert param_count(nnx.state(g, nnx.Param)) == param_count(nnx.state(paper, nnx.Param))
    with pytest.raises(ValueError, match="conditioning"):
        ModelConfig(arch="fixed25", conditioning="concat").resolve()
    with pytest.raises(ValueError, match="fixed25 only"):
        ModelConfig(arch="angle51", conditioning="product_and_value").resolve()


def test_bad_inputs_raise_clear_errors(tiny) -> None:
    _, g, d = tiny
    with pytest.raises(ValueError, match="latent"):
        g(jnp.zeros((2, g.latent_dim + 1), jnp.float32))
    with pytest.raises(ValueError, match="expects showers"):
        d(jnp.zeros((2, 25, 25, 24), jnp.float32))
    with pytest.raises(ValueError, match="energy"):
        g.latent(jax.random.key(0), jnp.zeros((2, 1), jnp.float32), jnp.zeros((2,), jnp.float32))


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(arch="fixed51").resolve()
    with pytest.raises(ValueError, match="size"):
        ModelConfig(size="huge").resolve()
    with pytest.raises(ValueError, match="conv_impl"):
        ModelConfig(conv_impl="cudnn").resolve()
    with pytest.raises(ValueError, match="g_channels"):
        ModelConfig(g_channels=[4, 4]).resolve()
    cfg = ModelConfig(arch="angle51", size="small", d_channels=[3, 3, 3, 3]).resolve()
    assert cfg.d_channels == (3, 3, 3, 3) and cfg.latent_dim == 64 and cfg.cell_power == 0.85
    geo = pytest.importorskip("hepgan.data.geometry").get_geometry("angle51")
    assert (cfg.cell_size_mm, cfg.layer_thickness_mm) == (geo.cell_size_mm, geo.layer_thickness_mm)
    assert cfg.resolve() is cfg
    hash(cfg)  # a static module attribute must be hashable
    with pytest.raises(ValueError, match="cell_size_mm"):
        ModelConfig(arch="angle51", cell_size_mm=-1.0).resolve()


def test_same_seed_same_parameters_for_every_conv_impl() -> None:
    states = []
    for impl in ("xla", "fft", "auto"):
        g, d = nnx.eval_shape(lambda impl=impl: build(ModelConfig(size="tiny", conv_impl=impl), nnx.Rngs(3)))
        states.append(jax.tree.map(lambda a: (a.shape, a.dtype), nnx.state((g, d), nnx.Param)))
    assert states[0] == states[1] == states[2]
    g1, _ = build(ModelConfig(size="tiny", conv_impl="xla"), nnx.Rngs(3))
    g2, _ = build(ModelConfig(size="tiny", conv_impl="fft"), nnx.Rngs(3))
    same = jax.tree.map(
        lambda a, b: bool(jnp.all(a == b)), nnx.state(g1, nnx.Param), nnx.state(g2, nnx.Param)
    )
    assert all(jax.tree.leaves(same))


def test_train_eval_modes_of_discriminator(tiny) -> None:
    arch, _, d = tiny
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.exponential(0.1, (TINY_BATCH, *GRIDS[arch])), jnp.float32)
    other = x.at[1:].set(jnp.asarray(rng.exponential(0.3, (TINY_BATCH - 1, *GRIDS[arch])), jnp.float32))
    d.eval()
    try:
        stats_before = jax.tree.map(np.asarray, nnx.state(d, nnx.BatchStat))
        a, b = _disc_call(d, x)["logit"], _disc_call(d, x)["logit"]
        np.testing.assert_array_equal(a, b)  # no dropout in eval mode
        first_elsewhere = _disc_call(d, other)["logit"]  # the same first event among other events
        stats_after = jax.tree.map(np.asarray, nnx.state(d, nnx.BatchStat))
        assert all(jax.tree.leaves(jax.tree.map(np.array_equal, stats_before, stats_after)))
        if arch == "fixed25":  # Keras training=True: batch statistics even in eval mode
            assert not np.allclose(first_elsewhere[0], a[0], rtol=1e-4)
        else:  # running averages in eval mode: an event's output does not depend on the batch
            np.testing.assert_allclose(first_elsewhere[0], a[0], rtol=1e-4, atol=1e-5)
    finally:
        d.train()
    # dropout active in training mode
    assert not np.array_equal(_disc_call(d, x)["logit"], _disc_call(d, x)["logit"])


@pytest.mark.parametrize("impl", ["fft", "xla"])
def test_sampling_with_precomputed_kernel_spectra_matches(impl: str) -> None:
    """A generator's kernel transforms computed once (sampling with fixed weights) give the showers of the
    plain call; only FFT-path layers get one, and a spectrum of the wrong shape is refused."""
    g, _ = build(ModelConfig(arch="fixed25", size="tiny", conv_impl=impl), nnx.Rngs(3))
    g.eval()
    spectra = g.kernel_spectra(TINY_BATCH)
    n_convs = sum(isinstance(m, Conv3D) for _, m in nnx.iter_graph(g))
    assert len(spectra) == (n_convs if impl == "fft" else 0)
    key, e = jax.random.key(1), jnp.linspace(10.0, 500.0, TINY_BATCH)
    sample = nnx.jit(lambda g, sp: g.sample(key, e, None, sp))
    plain, cached = np.asarray(sample(g, None)), np.asarray(sample(g, spectra))
    assert plain.shape == (TINY_BATCH, 25, 25, 25) and np.abs(plain).max() > 0
    np.testing.assert_allclose(cached, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
    if impl == "fft":
        wrong = {**spectra, "conv2": spectra["conv1"]}
        with pytest.raises(ValueError, match="kernel spectrum"):
            g.sample(key, e, None, wrong)


def test_hash_dropout_is_a_bernoulli_mask_of_the_rate() -> None:
    """The hash mask keeps 1 - rate of the elements (binomial 5-sigma band), rescales them, shows no
    correlation between neighbours or between two keys, repeats for the same key, and is the identity in
    eval mode; "threefry" is nnx.Dropout's mask."""
    x = jnp.ones((8, 25, 25, 25, 4), jnp.float32)
    n = x.size
    for rate in (0.2, 0.5):
        drop = Dropout(rate, rngs=nnx.Rngs(dropout=7))
        a, b = np.asarray(drop(x)), np.asarray(drop(x))  # two calls: two keys from the stream
        keep = 1.0 - rate
        assert set(np.unique(a)) == {0.0, np.float32(1.0 / keep)}
        kept = (a > 0).astype(np.float64)
        assert abs(kept.mean() - keep) < 5 * np.sqrt(keep * rate / n)
        flat = kept.ravel() - keep
        for lag in (1, 4, 25, 625):  # neighbours along every axis of the flat index
            corr = np.mean(flat[:-lag] * flat[lag:]) / (keep * rate)
            assert abs(corr) < 5 / np.sqrt(n), (rate, lag, corr)
        other = (b > 0).astype(np.float64).ravel() - keep
        assert abs(np.mean(flat * other) / (keep * rate)) < 5 / np.sqrt(n)
    key = jax.random.key(3)
    np.testing.assert_array_equal(hash_bits(key, (5, 7)), hash_bits(key, (5, 7)))
    assert not np.array_equal(hash_bits(key, (5, 7)), hash_bits(jax.random.key(4), (5, 7)))
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
    ref = nnx.Dropout(0.2, rngs=nnx.Rngs(dropout=7))
    mine = Dropout(0.2, rng="threefry", rngs=nnx.Rngs(dropout=7))
    np.testing.assert_array_equal(mine(x), ref(x))
    with pytest.raises(ValueError, match="dropout_rng"):
        Dropout(0.2, rng="philox", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout_rng"):
        ModelConfig(dropout_rng="philox").resolve()


def test_fft_contractions_and_channel_first_layout_agree() -> None:
    """Both contractions of the FFT path, and its channel-first entry, give the channel-last result."""
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((2, 6, 5, 7, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 2, 4, 3, 5)), jnp.float32)
    pads, up = ((1, 2), (0, 1), (2, 0)), (2, 1, 2)
    ref = np.asarray(conv3d_xla(x, w, pads, up))
    scale = np.abs(ref).max()
    for contraction in ("dot", "multiply"):
        got = conv3d_fft(x, w, pads, up, contraction=contraction)
        assert np.abs(np.asarray(got) - ref).max() <= CONV_TOL * scale
        cf = conv3d_fft(jnp.moveaxis(x, -1, 1), w, pads, up, contraction=contraction, channels_first=True)
        assert np.abs(np.moveaxis(np.asarray(cf), 1, -1) - ref).max() <= CONV_TOL * scale
    with pytest.raises(ValueError, match="contraction"):
        conv3d_fft(x, w, pads, up, contraction="gemm")
    with pytest.raises(ValueError, match="conv3d expects"):
        conv3d_fft(x[0], w, pads, up)


def test_hash_dropout_mask_does_not_depend_on_the_sharding() -> None:
    """The mask is a function of the key and the global element index: a batch sharded over devices
    (the xla backend) gets the mask of the unsharded batch."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    n = len(jax.devices())
    if n < 2:
        pytest.skip("needs several (simulated) devices")
    mesh = jax.make_mesh((n,), ("data",))
    x = jnp.zeros((2 * n, 5, 4, 3, 2), jnp.float32)
    key = jax.random.key(11)
    whole = np.asarray(jax.jit(lambda k, x: hash_bits(k, x.shape))(key, x))
    sharded = jax.jit(lambda k, x: hash_bits(k, x.shape) + x.astype(jnp.uint32))(
        key, jax.device_put(x, NamedSharding(mesh, P("data")))
    )
    assert len(sharded.sharding.device_set) == n
    np.testing.assert_array_equal(np.asarray(sharded), whole)
