"""Model configuration: architecture, size preset, convolution algorithm and width overrides.

``ModelConfig`` is a plain dataclass (Hydra/OmegaConf structured-config compatible: ``str``, numbers,
``list[int] | None``). ``None`` fields take the value of the (arch, size) preset, so a config names
only what it changes. ``resolve`` returns the concrete widths the modules are built with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from hepgan.cells import CELL_POWER

ARCHS = ("fixed25", "angle51", "ds2", "ds3")
SIZES = ("paper", "small", "tiny")
CONDITIONINGS = ("product", "product_and_value")
"""How the fixed-angle generator receives the energy (``ModelConfig.conditioning``)."""

# Widths per (arch, size). "paper" is the published architecture exactly; "small" keeps every layer
# and every spatial shape but thins the channels (a CPU demo that trains in minutes); "tiny" is the
# same structure with 1-4 channels for tests (compiles and runs in a second or two).
#   latent_dim: generator input size; g_dense_channels: channels of the Dense output after the reshape
#   to (7,7,8) resp. (9,9,8); g_channels: the generator's conv filters before the last 1-filter conv;
#   d_channels: the discriminator's conv filters.
PRESETS: dict[tuple[str, str], dict[str, object]] = {
    ("fixed25", "paper"): dict(
        latent_dim=200, g_dense_channels=8, g_channels=[64, 6, 6], d_channels=[32, 8, 8, 8]
    ),
    ("fixed25", "small"): dict(
        latent_dim=64, g_dense_channels=4, g_channels=[16, 4, 4], d_channels=[8, 4, 4, 4]
    ),
    ("fixed25", "tiny"): dict(
        latent_dim=8, g_dense_channels=1, g_channels=[2, 2, 2], d_channels=[2, 2, 2, 2]
    ),
    ("angle51", "paper"): dict(
        latent_dim=256, g_dense_channels=8, g_channels=[8, 6, 6, 6, 6, 6], d_channels=[16, 8, 8, 8]
    ),
    ("angle51", "small"): dict(
        latent_dim=64, g_dense_channels=2, g_channels=[4, 4, 4, 4, 4, 4], d_channels=[8, 4, 4, 4]
    ),
    ("angle51", "tiny"): dict(
        latent_dim=8, g_dense_channels=1, g_channels=[2, 2, 2, 2, 2, 2], d_channels=[2, 2, 2, 2]
    ),
    # CaloChallenge datasets 2 and 3 (hepgan.models.cylindrical): no published 3DGAN exists for these
    # grids; "paper" is the fixed-angle model's scale of widths, "small" the CPU size.
    **{
        (arch, size): widths
        for arch in ("ds2", "ds3")
        for size, widths in {
            "paper": dict(
                latent_dim=200, g_dense_channels=8, g_channels=[64, 32, 16], d_channels=[32, 16, 16, 16]
            ),
            "small": dict(latent_dim=64, g_dense_channels=4, g_channels=[16, 8, 8], d_channels=[8, 8, 8, 8]),
            "tiny": dict(latent_dim=8, g_dense_channels=1, g_channels=[2, 2, 2], d_channels=[2, 2, 2, 2]),
        }.items()
    },
}

# Per-architecture defaults of the non-width fields (the papers' values).
ARCH_DEFAULTS: dict[str, dict[str, object]] = {
    # Keras BatchNormalization default epsilon; the fixed-angle D calls its BN layers with
    # training=True, so they always normalise with batch statistics.
    "fixed25": dict(bn_epsilon=1e-3, cell_power=CELL_POWER["fixed25"], d_bn_batch_stats=True),
    # AngleGAN passes epsilon=1e-6 to every BN layer; its cells enter as E^0.85 (hepgan.cells).
    "angle51": dict(bn_epsilon=1e-6, cell_power=CELL_POWER["angle51"], d_bn_batch_stats=False),
    # CaloChallenge grids: the fixed-angle epsilon; cells enter as E^0.5 (hepgan.cells), BN as usual.
    "ds2": dict(bn_epsilon=1e-3, cell_power=CELL_POWER["ds2"], d_bn_batch_stats=False),
    "ds3": dict(bn_epsilon=1e-3, cell_power=CELL_POWER["ds3"], d_bn_batch_stats=False),
}


DROPOUT_RNGS = ("hash", "threefry")
"""Mask generators of :class:`hepgan.models.layers.Dropout` (``ModelConfig.dropout_rng``)."""


@dataclass
class ModelConfig:
    """Which GAN to build. Fields left ``None`` take the (arch, size) preset / the paper's value.

    arch: "fixed25" (3DGAN, 25x25x25 showers, normal incidence), "angle51" (AngleGAN, 51x51x25), "ds2" or
      "ds3" (CaloChallenge datasets 2 and 3, (alpha, r, layer) grids; ``hepgan.models.cylindrical``).
    size: "paper" (the published widths), "small" (CPU demo) or "tiny" (tests).
    conv_impl: "xla" (direct convolution), "fft" (FFT convolution) or "auto" (per layer by a cost
      model: FFT where it is cheaper on CPU, always XLA on GPU/TPU); numerically equivalent.
    latent_dim, g_dense_channels, g_channels, d_channels: width overrides (see ``PRESETS``).
    conditioning: fixed25 only, how the generator receives the primary energy. "product" (the paper):
      ``z = (E/100) * N(0, 1)^latent_dim``, so the generator can read E only from the norm of ``z``,
      which fluctuates by about ``1/sqrt(2 latent_dim)`` (9 % at the small model's 64, 5 % at the
      paper's 200): wider than the simulated sampling-fraction resolution (1.5-3.5 %).
      "product_and_value": the same vector with its first entry replaced by E/100, so the generator
      knows E exactly; same parameter count. angle51 always concatenates E and theta (the paper).
    dropout: discriminator dropout rate (Keras 0.2).
    dropout_rng: how the dropout masks are drawn: "hash" (a counter-based hash, a few integer operations
      per element) or "threefry" (``jax.random.bernoulli``, 20 % of a fixed25 CPU training step; the
      masks of runs made before the hash). Same Bernoulli rate; see ``hepgan.models.layers.Dropout``.
    bn_epsilon: BatchNorm epsilon (1e-3 fixed25, 1e-6 angle51).
    bn_axis_name: mesh axis for cross-device BatchNorm statistics under ``shard_map`` (None: local).
    d_bn_batch_stats: discriminator BN always uses batch statistics, also in ``eval()`` mode, as the
      fixed-angle Keras model does (``training=True``); running averages then update only in ``train()``.
    cell_power: the power transform of the cells (x -> x^power in preprocessing, 0.85 for angle51); the
      discriminator's ECAL-sum and angle heads undo it (x^(1/power)) before measuring.
    cell_size_mm, layer_thickness_mm: cell pitch and layer thickness used by the angle head; None takes
      them from ``hepgan.data.geometry.get_geometry("angle51")``.
    """

    arch: str = "fixed25"
    size: str = "paper"
    conv_impl: str = "auto"
    latent_dim: int | None = None
    g_dense_channels: int | None = None
    g_channels: list[int] | None = None
    d_channels: list[int] | None = None
    conditioning: str = "product"
    dropout: float = 0.2
    dropout_rng: str = "hash"
    bn_epsilon: float | None = None
    bn_axis_name: str | None = None
    d_bn_batch_stats: bool | None = None
    cell_power: float | None = None
    cell_size_mm: float | None = None
    layer_thickness_mm: float | None = None

    def resolve(self) -> ResolvedModelConfig:
        """The concrete, validated configuration: every ``None`` filled from the presets, the angle
        head's geometry from ``hepgan.data.geometry`` (angle51). Raises ``ValueError`` naming the field
        and the accepted values."""
        if self.arch not in ARCHS:
            raise ValueError(f"ModelConfig.arch must be one of {ARCHS}; got {self.arch!r}")
        if self.size not in SIZES:
            raise ValueError(f"ModelConfig.size must be one of {SIZES}; got {self.size!r}")
        if self.conv_impl not in ("xla", "fft", "auto"):
            raise ValueError(
                f"ModelConfig.conv_impl must be one of ('xla', 'fft', 'auto'); got {self.conv_impl!r}"
            )
        if self.dropout_rng not in DROPOUT_RNGS:
            raise ValueError(
                f"ModelConfig.dropout_rng must be one of {DROPOUT_RNGS}; got {self.dropout_rng!r}"
            )
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(
                f"ModelConfig.conditioning must be one of {CONDITIONINGS}; got {self.conditioning!r}"
            )
        if self.arch != "fixed25" and self.conditioning != "product":
            raise ValueError(
                "ModelConfig.conditioning applies to arch fixed25 only (angle51 always concatenates E and "
                "theta to the noise, ds2/ds3 log10 E); "
                f"got conditioning={self.conditioning!r} with arch {self.arch}"
            )
        preset = {**PRESETS[(self.arch, self.size)], **ARCH_DEFAULTS[self.arch]}
        v = {f.name: getattr(self, f.name) for f in fields(self)}
        v.update({k: p for k, p in preset.items() if v[k] is None})
        v["g_channels"] = tuple(int(c) for c in v["g_channels"])
        v["d_channels"] = tuple(int(c) for c in v["d_channels"])
        n_g = len(PRESETS[(self.arch, "paper")]["g_channels"])  # type: ignore[arg-type]
        n_d = len(PRESETS[(self.arch, "paper")]["d_channels"])  # type: ignore[arg-type]
        if len(v["g_channels"]) != n_g or len(v["d_channels"]) != n_d:
            raise ValueError(
                f"ModelConfig for arch {self.arch!r} needs g_channels of length {n_g} and d_channels of "
                f"length {n_d}; got {list(v['g_channels'])} and {list(v['d_channels'])}"
            )
        # angle51 latent = [E/100, theta, noise...]; ds2/ds3 = [log10 E / 3, noise...]
        min_latent = (
            3
            if self.arch == "angle51"
            else 2
            if self.conditioning != "product" or self.arch in ("ds2", "ds3")
            else 1
        )
        widths = [v["g_dense_channels"], *v["g_channels"], *v["d_channels"]]
        if int(v["latent_dim"]) < min_latent or any(int(c) < 1 for c in widths):
            raise ValueError(
                f"ModelConfig widths must be positive (latent_dim >= {min_latent} for {self.arch}); got "
                f"latent_dim={v['latent_dim']}, g_dense_channels={v['g_dense_channels']}, "
                f"g_channels={list(v['g_channels'])}, d_channels={list(v['d_channels'])}"
            )
        if not 0.0 <= float(v["dropout"]) < 1.0 or float(v["cell_power"]) <= 0.0:
            raise ValueError(
                "ModelConfig.dropout must be in [0, 1) and cell_power > 0; "
                f"got {v['dropout']}, {v['cell_power']}"
            )
        if self.arch == "angle51" and (v["cell_size_mm"] is None or v["layer_thickness_mm"] is None):
            from hepgan.data.geometry import get_geometry

            geo = get_geometry("angle51")
            v["cell_size_mm"] = v["cell_size_mm"] or float(geo.cell_size_mm)
            v["layer_thickness_mm"] = v["layer_thickness_mm"] or float(geo.layer_thickness_mm)
        for k in ("cell_size_mm", "layer_thickness_mm"):
            if v[k] is not None and float(v[k]) <= 0:
                raise ValueError(f"ModelConfig.{k} must be > 0 (mm); got {v[k]}")
        return ResolvedModelConfig(**v)

    def as_dict(self) -> dict[str, object]:
        """JSON-able field mapping (for manifests)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ResolvedModelConfig:
    """``ModelConfig`` with every field concrete (from ``ModelConfig.resolve``); frozen and hashable so
    that modules keep it as a static attribute. Widths are tuples here."""

    arch: str
    size: str
    conv_impl: str
    latent_dim: int
    g_dense_channels: int
    g_channels: tuple[int, ...]
    d_channels: tuple[int, ...]
    conditioning: str
    dropout: float
    dropout_rng: str
    bn_epsilon: float
    bn_axis_name: str | None
    d_bn_batch_stats: bool
    cell_power: float
    cell_size_mm: float | None
    layer_thickness_mm: float | None

    def resolve(self) -> ResolvedModelConfig:
        """Already resolved: itself."""
        return self

    def as_dict(self) -> dict[str, object]:
        """JSON-able field mapping (for manifests)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}
