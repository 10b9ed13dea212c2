"""The Keras peer of ``hepgan-bench peers``: the paper 3DGAN and AngleGAN in Keras 3 on TensorFlow (oneDNN).

``python hepgan/bench/peers_keras.py --arch fixed25|angle51 --batch N [--threads T]`` (or ``python -m
hepgan.bench.peers_keras ...``) with any Python that has TensorFlow: the file needs only TensorFlow/Keras,
NumPy and the standard library, so it runs from its own environment (``make peers-venv``), where hepgan is
not installed. It speaks the protocol of hepgan's side (:mod:`hepgan.bench.peers_worker`), one JSON
object per line on stdout (logs go to stderr):

- on start, after building and compiling the models, 2 warm-up iterations and 2 warm-up generations:
  ``{"ready": true, "framework": "keras <v> / tensorflow <v>", "onednn": bool, "threads": int,
  "params": {"g": int, "d": int}, "passes": {"g_forward": int, "d_updates": int, "g_updates": int}}``;
- ``{"op": "train", "n": k}`` -> ``{"seconds": [k floats]}``: wall time (``time.perf_counter``) of each
  of ``k`` training iterations on one batch of ``N`` showers;
- ``{"op": "generate", "n": k}`` -> ``{"seconds": [k floats]}``: wall time of each of ``k`` generator
  calls producing ``N`` showers (latent vectors drawn inside the timed call, as hepgan's side);
- ``{"op": "quit"}`` (or end of input) -> exit 0. A bad command or a failure answers ``{"error": str}``
  and exits 1.

The models are the published architectures, layer for layer as :mod:`hepgan.models.gan3d` and
:mod:`hepgan.models.anglegan` (channels_last, Keras defaults: LeakyReLU 0.3, BatchNorm momentum 0.99,
epsilon 1e-3 for fixed25 and 1e-6 for angle51, the same initialisers). ``params`` counts trainable
weights, which is what hepgan counts (``nnx.Param``); Keras' ``count_params()`` would add the BatchNorm
moving statistics.

One iteration is the Keras 3DGAN loop, as hepgan's ``paper`` schedule: ``generator.predict_on_batch``
for the fakes (inference mode), ``discriminator.train_on_batch`` on the real batch, then on the fake
batch, then ``combined.train_on_batch`` (generator, then the frozen discriminator) twice with fresh
noise; 5 % label flips; fixed25 fakes get energies from ``uniform(0.1, 5)`` (E/100) and an ECAL-sum
target from the real batch's sum per unit energy, angle51 fakes reuse the real batch's (E, theta) and
ECAL sums. ``passes`` is measured on the last warm-up iteration: generator inference calls and the
optimizers' update counters.

BatchNorm of the frozen discriminator: Keras 3 runs a layer with ``trainable=False`` in inference mode
(moving statistics), while the Keras 2 code the papers trained with, and hepgan, normalise the frozen
discriminator's activations by batch statistics in the generator's steps and leave its moving
statistics alone. :func:`keras_layers` ``BatchNorm`` does the latter, so both sides compute the same.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import IO, Any

import numpy as np

ARCHS = ("fixed25", "angle51")
PASSES = {"g_forward": 1, "d_updates": 2, "g_updates": 2}
"""The passes of one paper iteration: G inference for the fakes, D on real and on fake, G twice."""
# The experiments' ranges (as hepgan's side): fixed25 10-500 GeV at normal incidence; angle51 2-500 GeV
# at 60-120 degrees.
ENERGY_GEV = {"fixed25": (10.0, 500.0), "angle51": (2.0, 500.0)}
THETA_RAD = (1.0472, 2.0944)
GRID = {"fixed25": (25, 25, 25), "angle51": (51, 51, 25)}
LATENT_DIM = {"fixed25": 200, "angle51": 256}
BN_EPSILON = {"fixed25": 1e-3, "angle51": 1e-6}  # Keras default; AngleGAN passes 1e-6
CELL_POWER = {"fixed25": 1.0, "angle51": 0.85}  # cells enter the networks as x^power
LOSS_WEIGHTS = {"fixed25": (2.0, 0.1, 0.1), "angle51": (3.0, 0.1, 25.0, 0.1)}
LEARNING_RATE = 1e-3  # RMSprop, both players
LABEL_FLIP = 0.05
FAKE_ENERGY = (0.1, 5.0)  # fixed25 fakes' energies, E/100
# The angle51 calorimeter (hepgan.data.geometry "angle51"): transverse cell pitch and layer thickness, mm.
# The angle head fits the shower axis in physical units, so their ratio enters the measured angle.
ANGLE_CELL_MM = 5.1
ANGLE_LAYER_MM = 4.0
LEAKY_SLOPE = 0.3  # Keras LeakyReLU default
BN_MOMENTUM = 0.99  # Keras convention: moving = momentum * moving + (1 - momentum) * batch
DROPOUT = 0.2


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def import_tensorflow(threads: int) -> Any:
    """TensorFlow with oneDNN on and ``threads`` intra- and inter-op threads; returns the module.

    ``TF_ENABLE_ONEDNN_OPTS=1`` is read when TensorFlow loads, and the thread pools are fixed when its
    runtime starts, so this must run before anything else in the process imports TensorFlow.
    """
    if "tensorflow" in sys.modules:
        raise RuntimeError("peers_keras: TensorFlow was imported before its oneDNN and thread settings")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def onednn_enabled() -> bool:
    """Whether TensorFlow reports its oneDNN (formerly MKL) kernels as enabled in this process."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # no public API tells
    except ImportError:
        print("peers_keras: TensorFlow does not say whether oneDNN is on; reporting false", file=sys.stderr)
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def measured_angle(cells: Any, cell_size_mm: float, layer_thickness_mm: float) -> Any:
    """Polar angle of the shower axis, hepgan's ``measured_angle`` in TensorFlow ops.

    ``cells: [B, X, Y, Z]`` linear energies (any unit) -> ``theta: [B]`` rad, ``pi/2`` = normal
    incidence. The energy-weighted least-squares slope ``s`` of the per-layer y-barycentres against the
    layer depths (cell centres ``(j + 1/2) * cell_size_mm``, layer centres ``(l + 1/2) *
    layer_thickness_mm``), ``theta = pi/2 - atan(s)``; events with no energy, or all of it in one layer,
    get ``pi/2``. Differentiable in every cell energy.
    """
    import tensorflow as tf

    def safe_div(a: Any, b: Any) -> Any:
        ok = b > 0.0
        return tf.where(ok, a / tf.where(ok, b, tf.ones_like(b)), tf.zeros_like(a))

    cells = tf.convert_to_tensor(cells, tf.float32)
    y = (tf.range(tf.shape(cells)[2], dtype=tf.float32) + 0.5) * cell_size_mm  # [Y]
    z = (tf.range(tf.shape(cells)[3], dtype=tf.float32) + 0.5) * layer_thickness_mm  # [Z]
    e_yz = tf.reduce_sum(cells, axis=1)  # [B, Y, Z]
    e_l = tf.reduce_sum(e_yz, axis=1)  # [B, Z] layer energies
    ey_l = tf.reduce_sum(e_yz * y[None, :, None], axis=1)  # [B, Z] y-moments per layer
    e_tot = tf.reduce_sum(e_l, axis=1)
    zbar = safe_div(tf.reduce_sum(e_l * z[None, :], axis=1), e_tot)
    ybar = safe_div(tf.reduce_sum(ey_l, axis=1), e_tot)
    dz = z[None, :] - zbar[:, None]  # [B, Z]
    s_yz = tf.reduce_sum(dz * ey_l, axis=1) - ybar * tf.reduce_sum(dz * e_l, axis=1)
    s_zz = tf.reduce_sum(e_l * dz * dz, axis=1)
    return np.float32(np.pi / 2) - tf.atan(safe_div(s_yz, s_zz))


def undo_power(x: Any, cell_power: float) -> Any:
    """Cells before the power transform, ``max(x, 0) ** (1 / cell_power)``, in TensorFlow ops;
    ``x: [B, X, Y, Z]`` network units -> same shape (``x`` itself for power 1)."""
    import tensorflow as tf

    if cell_power == 1.0:
        return x
    return tf.pow(tf.maximum(x, 0.0), 1.0 / cell_power)


@functools.cache
def keras_layers() -> Any:
    """The three layers hepgan's models need beyond stock Keras, as a namespace (built on first use, so
    that importing this module does not import TensorFlow):

    - ``BatchNorm(epsilon, batch_stats_always=False)``: Keras ``BatchNormalization(momentum=0.99)`` that
      also uses batch statistics when called in training mode while frozen (the frozen discriminator in
      the combined model), updating its moving statistics only when training and trainable;
      ``batch_stats_always`` uses batch statistics in inference calls too (the fixed-angle
      discriminator, called with ``training=True`` in the Keras original). ``[B, ..., C]`` -> same.
    - ``EcalSum(cell_power)``: ``[B, X, Y, Z]`` network units -> ``[B, 1]`` sum of the linear cells.
    - ``MeasuredAngle(cell_power, cell_size_mm, layer_thickness_mm)``: ``[B, X, Y, Z]`` -> ``[B, 1]`` rad.
    """
    import keras
    from keras import ops

    class BatchNorm(keras.layers.BatchNormalization):
        def __init__(self, epsilon: float, batch_stats_always: bool = False, **kwargs: Any) -> None:
            super().__init__(momentum=BN_MOMENTUM, epsilon=epsilon, **kwargs)
            self.batch_stats_always = batch_stats_always

        def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
            if training and self.trainable:
                return super().call(inputs, training=True, mask=mask)
            if training or self.batch_stats_always:
                mean, var = ops.moments(inputs, axes=list(range(len(inputs.shape) - 1)))
                return ops.batch_normalization(
                    inputs, mean, var, axis=-1, offset=self.beta, scale=self.gamma, epsilon=self.epsilon
                )
            return super().call(inputs, training=False, mask=mask)

    class EcalSum(keras.layers.Layer):
        def __init__(self, cell_power: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.cell_power = cell_power

        def call(self, x: Any) -> Any:
            return ops.sum(undo_power(x, self.cell_power), axis=(1, 2, 3))[:, None]

        def compute_output_shape(self, input_shape: Any) -> Any:
            return (input_shape[0], 1)

    class MeasuredAngle(keras.layers.Layer):
        def __init__(self, cell_power: float, cell_size_mm: float, layer_thickness_mm: float, **kw: Any):
            super().__init__(**kw)
            self.cell_power, self.cell_mm, self.layer_mm = cell_power, cell_size_mm, layer_thickness_mm

        def call(self, x: Any) -> Any:
            linear = undo_power(x, self.cell_power)
            return measured_angle(linear, self.cell_mm, self.layer_mm)[:, None]

        def compute_output_shape(self, input_shape: Any) -> Any:
            return (input_shape[0], 1)

    return argparse.Namespace(BatchNorm=BatchNorm, EcalSum=EcalSum, MeasuredAngle=MeasuredAngle)


def build_generator(arch: str) -> Any:
    """The paper generator of ``arch`` as a Keras functional model: ``[B, latent] -> [B, X, Y, Z]``
    (preprocessed cell units, >= 0). Layers and initialisers as :mod:`hepgan.models`."""
    import keras
    from keras import layers as L

    bn = functools.partial(keras_layers().BatchNorm, BN_EPSILON[arch])
    z = keras.Input((LATENT_DIM[arch],), name="latent")
    if arch == "fixed25":

        def conv(filters: int, kernel: tuple[int, int, int], **kw: Any) -> Any:
            return L.Conv3D(filters, kernel, kernel_initializer="he_uniform", **kw)

        def leaky() -> Any:
            return L.LeakyReLU(negative_slope=LEAKY_SLOPE)

        x = L.Reshape((7, 7, 8, 8))(L.Dense(7 * 7 * 8 * 8)(z))
        x = bn()(leaky()(conv(64, (6, 6, 8), padding="same")(x)))  # [B, 7, 7, 8, 64]
        x = L.ZeroPadding3D((2, 2, 0))(L.UpSampling3D((2, 2, 2))(x))  # [B, 18, 18, 16, 64]
        x = bn()(leaky()(conv(6, (6, 5, 8))(x)))  # [B, 13, 14, 9, 6]
        x = L.ZeroPadding3D((1, 0, 3))(L.UpSampling3D((2, 2, 3))(x))  # [B, 28, 28, 33, 6]
        x = leaky()(conv(6, (3, 3, 8))(x))  # [B, 26, 26, 26, 6]
        x = L.Conv3D(1, (2, 2, 2), use_bias=False, kernel_initializer="glorot_normal")(x)
    elif arch == "angle51":

        def block(x: Any, filters: int, kernel: tuple[int, int, int], pad: tuple[int, int, int]) -> Any:
            if any(pad):
                x = L.ZeroPadding3D(pad)(x)
            return L.ReLU()(L.Conv3D(filters, kernel, kernel_initializer="he_uniform")(x))

        x = L.Reshape((9, 9, 8, 8))(L.Dense(9 * 9 * 8 * 8)(z))
        x = L.UpSampling3D((6, 6, 6))(x)  # [B, 54, 54, 48, 8]
        x = bn()(block(x, 8, (6, 6, 8), (0, 0, 0)))  # [B, 49, 49, 41, 8]
        for _ in range(3):  # -> 50,50,38 -> 51,51,35 -> 52,52,32
            x = bn()(block(x, 6, (4, 4, 6), (2, 2, 1)))
        x = bn()(block(x, 6, (3, 3, 5), (1, 1, 0)))  # [B, 52, 52, 28, 6]
        x = block(x, 6, (3, 3, 3), (1, 1, 0))  # [B, 52, 52, 26, 6]
        x = L.Conv3D(1, (2, 2, 2), kernel_initializer="glorot_normal")(x)
    else:
        raise ValueError(f"peers_keras: unknown arch {arch!r}; valid: {list(ARCHS)}")
    x = L.Reshape(GRID[arch])(L.ReLU()(x))  # [B, X, Y, Z]
    return keras.Model(z, x, name=f"generator_{arch}")


def build_discriminator(arch: str) -> Any:
    """The paper discriminator of ``arch``: ``[B, X, Y, Z]`` -> ``[real/fake probability, energy (E/100),
    ECAL sum]`` (fixed25) or ``[probability, energy, angle (rad), ECAL sum]`` (angle51), each ``[B, 1]``,
    in the order of the Keras loss lists. Layers and initialisers as :mod:`hepgan.models`."""
    import keras
    from keras import layers as L

    if arch not in ARCHS:
        raise ValueError(f"peers_keras: unknown arch {arch!r}; valid: {list(ARCHS)}")
    ns = keras_layers()
    fixed = arch == "fixed25"
    kernel = (5, 5, 5) if fixed else (5, 6, 6)
    init = "glorot_uniform" if fixed else "variance_scaling"  # Keras VarianceScaling() defaults
    channels = (32, 8, 8, 8) if fixed else (16, 8, 8, 8)
    pads = ((2, 2, 2), (2, 2, 2), (1, 1, 1)) if fixed else ((0, 0, 1), (0, 0, 1), (0, 0, 0))

    image = keras.Input(GRID[arch], name="showers")
    h = L.Reshape((*GRID[arch], 1))(image)
    h = L.Conv3D(channels[0], kernel, padding="same", kernel_initializer=init)(h)
    h = L.Dropout(DROPOUT)(L.LeakyReLU(negative_slope=LEAKY_SLOPE)(h))
    for filters, pad in zip(channels[1:], pads, strict=True):
        if any(pad):
            h = L.ZeroPadding3D(pad)(h)
        h = L.Conv3D(filters, kernel, kernel_initializer=init)(h)
        h = L.LeakyReLU(negative_slope=LEAKY_SLOPE)(h)
        h = ns.BatchNorm(BN_EPSILON[arch], batch_stats_always=fixed)(h)
        h = L.Dropout(DROPOUT)(h)
    h = L.Flatten()(L.AveragePooling3D((2, 2, 2))(h))  # 11*11*11*8 resp. 19*18*7*8
    fake = L.Dense(1, activation="sigmoid", kernel_initializer=init, name="generation")(h)
    aux = L.Dense(1, kernel_initializer=init, name="auxiliary")(h)
    ecal = ns.EcalSum(CELL_POWER[arch], name="ecal")(image)
    if fixed:
        outputs = [fake, aux, ecal]
    else:
        angle = ns.MeasuredAngle(CELL_POWER[arch], ANGLE_CELL_MM, ANGLE_LAYER_MM, name="angle")(image)
        outputs = [fake, aux, angle, ecal]
    return keras.Model(image, outputs, name=f"discriminator_{arch}")


def losses(arch: str) -> list[str]:
    """The Keras loss names of the discriminator's outputs (order of :func:`build_discriminator`)."""
    mape = "mean_absolute_percentage_error"
    return (
        ["binary_crossentropy", mape, mape]
        if arch == "fixed25"
        else ["binary_crossentropy", mape, "mae", mape]
    )


def trainable_count(model: Any) -> int:
    """Number of trainable scalars of a Keras ``model`` (BatchNorm moving statistics excluded)."""
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


class Peer:
    """The compiled Keras GAN of one architecture and batch, and its timed calls.

    ``arch``: one of :data:`ARCHS`; ``batch``: showers per call; ``seed``: NumPy and Keras seed. The real
    batch is synthetic (gamma-distributed cells, energies and angles in the experiments' ranges) and
    reused by every iteration, so the times are compute, not input.
    """

    def __init__(self, arch: str, batch: int, seed: int = 0) -> None:
        import keras

        if arch not in ARCHS:
            raise ValueError(f"peers_keras: unknown arch {arch!r}; valid: {list(ARCHS)}")
        if batch < 1:
            raise ValueError(f"peers_keras: batch must be at least 1; got {batch}")
        keras.utils.set_random_seed(seed)
        self.arch, self.batch = arch, batch
        self.rng = np.random.default_rng(seed)
        lo, hi = ENERGY_GEV[arch]
        cells = self.rng.gamma(0.3, 0.02, size=(batch, *GRID[arch])).astype(np.float32)
        self.real = cells ** np.float32(CELL_POWER[arch])  # network units
        self.energy = (self.rng.uniform(lo, hi, batch) / 100.0).astype(np.float32)  # E/100
        self.theta = self.rng.uniform(*THETA_RAD, batch).astype(np.float32)
        self.ecal_real = cells.sum(axis=(1, 2, 3), dtype=np.float64).astype(np.float32)
        self.sum_per_energy = float(self.ecal_real.sum() / self.energy.sum())

        self.g = build_generator(arch)
        self.d = build_discriminator(arch)
        self.params = {"g": trainable_count(self.g), "d": trainable_count(self.d)}
        weights = list(LOSS_WEIGHTS[arch])
        self.d.compile(keras.optimizers.RMSprop(LEARNING_RATE), loss=losses(arch), loss_weights=weights)
        z = keras.Input((LATENT_DIM[arch],))
        self.d.trainable = False
        self.combined = keras.Model(z, self.d(self.g(z)), name=f"combined_{arch}")
        self.combined.compile(
            keras.optimizers.RMSprop(LEARNING_RATE), loss=losses(arch), loss_weights=weights
        )
        self.d.trainable = True
        self.g_forward = 0
        # Expected: the discriminator is frozen for the combined model's steps only (see freeze_d).
        warnings.filterwarnings("ignore", message="A layer's `trainable` state has changed")

    # ---- inputs --------------------------------------------------------------------------------------
    def latent(self, energy: np.ndarray) -> np.ndarray:
        """Generator inputs ``[B, latent]`` for ``energy: [B]`` E/100: ``E * N(0, 1)^200`` (fixed25),
        ``concat[E, theta, N(0, 1)^254]`` with the real batch's angles (angle51)."""
        n = LATENT_DIM[self.arch]
        if self.arch == "fixed25":
            return (energy[:, None] * self.rng.standard_normal((self.batch, n))).astype(np.float32)
        noise = self.rng.standard_normal((self.batch, n - 2))
        return np.concatenate([energy[:, None], self.theta[:, None], noise], axis=1).astype(np.float32)

    def conditions(self) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``[B]`` (E/100) and ECAL-sum targets ``[B]`` for a batch of fakes."""
        if self.arch == "angle51":
            return self.energy, self.ecal_real
        e = self.rng.uniform(*FAKE_ENERGY, self.batch).astype(np.float32)
        return e, (e * self.sum_per_energy).astype(np.float32)

    def targets(self, label: np.ndarray, energy: np.ndarray, ecal: np.ndarray) -> list[np.ndarray]:
        """The discriminator's targets, each ``[B, 1]``, in the order of its outputs."""
        cols = [label, energy, ecal] if self.arch == "fixed25" else [label, energy, self.theta, ecal]
        return [np.asarray(c, np.float32).reshape(-1, 1) for c in cols]

    def flip(self, labels: np.ndarray) -> np.ndarray:
        """``labels: [B]`` with each flipped (``1 - l``) with probability :data:`LABEL_FLIP`."""
        return np.where(self.rng.random(labels.shape) < LABEL_FLIP, 1.0 - labels, labels).astype(np.float32)

    # ---- the timed calls -----------------------------------------------------------------------------
    def generate(self) -> np.ndarray:
        """One generator call in inference mode: ``[B, X, Y, Z]`` showers (network units)."""
        e = self.energy if self.arch == "angle51" else self.conditions()[0]
        self.g_forward += 1
        return self.g.predict_on_batch(self.latent(e))

    def d_steps(self) -> np.ndarray:
        """The discriminator's half of an iteration: fakes from the generator in inference mode, then
        one ``train_on_batch`` on the real batch and one on the fakes. Returns the fakes ``[B, X, Y, Z]``."""
        ones = np.ones(self.batch, np.float32)
        e_fake, ecal_fake = self.conditions()
        self.g_forward += 1
        fakes = self.g.predict_on_batch(self.latent(e_fake))
        self.freeze_d(False)
        self.d.train_on_batch(self.real, self.targets(self.flip(ones), self.energy, self.ecal_real))
        self.d.train_on_batch(fakes, self.targets(self.flip(0.0 * ones), e_fake, ecal_fake))
        return fakes

    def g_steps(self) -> None:
        """The generator's half: two ``combined.train_on_batch`` calls with fresh noise, labels 1."""
        ones = np.ones(self.batch, np.float32)
        self.freeze_d(True)
        for _ in range(2):
            e, ecal = self.conditions()
            self.combined.train_on_batch(self.latent(e), self.targets(ones, e, ecal))

    def train_once(self) -> None:
        """One paper iteration: fakes, D on real, D on fake, G twice through the frozen D."""
        self.d_steps()
        self.g_steps()

    def freeze_d(self, frozen: bool) -> None:
        """Set the discriminator's ``trainable`` flag for the next call. Keras 3 reads it when a train
        function is traced (which weights the optimizer steps, how BatchNorm normalises), not at
        ``compile``, so each model must meet the discriminator in its own state, as in Keras 2."""
        if self.d.trainable == frozen:
            self.d.trainable = not frozen

    def counted_iteration(self) -> dict[str, int]:
        """Run one iteration and return the passes it made: generator inference calls and the two
        optimizers' update counts. Raises ``RuntimeError`` when a player's steps changed the other
        player's weights or left its own unchanged."""

        def snapshot(model: Any) -> list[np.ndarray]:  # all weights: a frozen model lists no trainable ones
            return [np.array(w.numpy()) for w in model.weights]

        def moved(before: list[np.ndarray], model: Any) -> bool:
            after = snapshot(model)
            return any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))

        def iterations(model: Any) -> int:
            return int(model.optimizer.iterations.numpy())

        self.freeze_d(False)
        d0, g0 = snapshot(self.d), snapshot(self.g)
        d_it, g_it, forward = iterations(self.d), iterations(self.combined), self.g_forward
        self.d_steps()
        d1 = snapshot(self.d)
        d_ok, g_kept = moved(d0, self.d), not moved(g0, self.g)
        g1 = snapshot(self.g)
        self.g_steps()
        g_ok, d_kept = moved(g1, self.g), not moved(d1, self.d)
        self.freeze_d(False)
        if not (d_ok and g_kept and g_ok and d_kept):
            raise RuntimeError(
                "peers_keras: each player's steps must change its own weights and only those; "
                f"D steps moved D: {d_ok}, left G: {g_kept}; G steps moved G: {g_ok}, left D: {d_kept}"
            )
        return {
            "g_forward": self.g_forward - forward,
            "d_updates": iterations(self.d) - d_it,
            "g_updates": iterations(self.combined) - g_it,
        }


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """Wall time in seconds (``time.perf_counter``) of each of ``n`` calls of ``fn``."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def serve(arch: str, batch: int, threads: int, out: IO[str], inp: IO[str]) -> int:
    """Build and warm the peer, announce it on ``out``, answer commands read from ``inp`` until
    ``quit`` or end of input; returns the exit code (0, or 1 after an ``{"error": ...}`` answer)."""

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    try:
        tf = import_tensorflow(threads)
        import keras

        peer = Peer(arch, batch)
        passes: dict[str, int] = {}
        for _ in range(2):
            passes = peer.counted_iteration()
        for _ in range(2):
            peer.generate()
        send(
            {
                "ready": True,
                "framework": f"keras {keras.__version__} / tensorflow {tf.__version__}",
                "onednn": onednn_enabled(),
                "threads": threads,
                "params": peer.params,
                "passes": passes,
            }
        )
    except Exception as exc:
        traceback.print_exc()
        send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    ops: dict[str, Callable[[], Any]] = {"train": peer.train_once, "generate": peer.generate}
    for line in iter(inp.readline, ""):  # line by line: the driver waits for each answer
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError(f"a command is a JSON object; got {line.strip()!r}")
            if cmd.get("op") == "quit":
                return 0
            if cmd.get("op") not in ops:
                raise ValueError(f"unknown op {cmd.get('op')!r}; valid: train, generate, quit")
            n = int(cmd.get("n", 1))
            if n < 1:
                raise ValueError(f"n must be at least 1; got {n}")
            send({"seconds": timed(ops[cmd["op"]], n)})
        except Exception as exc:
            traceback.print_exc()
            send({"error": f"{type(exc).__name__}: {exc}"})
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``peers_keras.py --arch A --batch N [--threads T]``; returns the exit code."""
    p = argparse.ArgumentParser(prog="peers_keras", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--batch", type=int, required=True, help="showers per call")
    p.add_argument("--threads", type=int, default=usable_cores(), help="TF intra- and inter-op threads")
    a = p.parse_args(argv)
    if a.batch < 1 or a.threads < 1:
        p.error("--batch and --threads must be at least 1")
    # The protocol owns stdout: anything else that prints (TensorFlow, Keras) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(a.arch, a.batch, a.threads, out, sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
