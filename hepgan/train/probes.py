"""What the trainer records at each validation to explain its dynamics (``dynamics.csv``, TensorBoard).

- :func:`discriminator_probs`: the discriminator's D(x) = sigmoid(logit) on a shower set, evaluated as in
  training (eval mode: no dropout; BatchNorm as the model's config says, batch statistics by default),
  in batches of one kind (real or fake), as the paper's separate real and fake batches.
- :func:`dynamics_rows`: D(real) and D(fake) per energy bin (and angle bin for angle models), and the
  generated showers' diversity against the data's per energy bin: the rows of ``dynamics.csv``
  (``step, quantity, variable, lo, hi, value, n``).
- :func:`shower_figure`: single generated showers beside reference showers of the same energy, for
  TensorBoard's images tab.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

#: observables whose spread the diversity indicator compares: sampling fraction (E_vis/E), shower depth
#: (energy-weighted mean layer) and lateral width (variance in x, cells^2)
DIVERSITY_OBSERVABLES = ("sf", "z_mean", "x_var")
#: energy bins (equal counts of the reference conditions) and angle bins of dynamics.csv
N_ENERGY_BINS = 5
N_THETA_BINS = 4
#: fewest showers of a bin for which a spread is reported (fewer give nan)
MIN_BIN = 4

DYNAMICS_FIELDS = ("step", "quantity", "variable", "lo", "hi", "value", "n")


@functools.cache
def _logits() -> Any:
    """The jitted discriminator logit, made once per process: each validation reuses its compilation."""
    from flax import nnx

    return nnx.jit(lambda d, xb: d(xb)["logit"])


def discriminator_probs(players: Any, state: Any, x: np.ndarray, *, batch: int) -> np.ndarray:
    """D(x) = sigmoid(logit) of ``state``'s discriminator for ``x: [N, X, Y, Z]`` cells in network units
    (the training data's preprocessing), in batches of ``batch`` (the last one padded by repetition), on
    one device: BatchNorm layers that use batch statistics normalise over each batch alone, also where
    training normalised over the global batch of all devices. Returns ``[N]`` float64 in (0, 1)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    d = players.discriminator(state)
    for _, module in nnx.iter_graph(d):  # outside the training mesh: statistics of this batch alone
        if isinstance(module, nnx.BatchNorm):
            module.axis_name = None

    n = x.shape[0]
    out = []
    for start in range(0, n, batch):
        chunk = x[start : start + batch]
        m = chunk.shape[0]
        if m < batch:
            chunk = np.resize(chunk, (batch, *chunk.shape[1:]))
        out.append(np.asarray(jax.nn.sigmoid(_logits()(d, jnp.asarray(chunk, jnp.float32))))[:m])
    return np.concatenate(out).astype(np.float64)


def _bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-count bin edges of ``values`` (at most ``n_bins`` bins, fewer where values repeat)."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([values.min(), values.max() + 1e-9])
    return edges


def _binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (the last bin closed)."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def _spread(values: np.ndarray, conditions: list[np.ndarray]) -> float:
    """Spread of ``values`` [n] at fixed conditions: each value against the one of the shower nearest in
    the ``conditions`` ([n] each, standardised), ``sqrt(mean((v_i - v_nn(i))^2) / 2)``, which equals the
    standard deviation for independent fluctuations and ignores any smooth trend across the bin's
    energies (and angles). nan if a value is not finite."""
    if not np.all(np.isfinite(values)):
        return float("nan")
    c = np.column_stack(conditions)
    c = (c - c.mean(0)) / np.where(c.std(0) > 0, c.std(0), 1.0)
    dist = np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argmin(dist, axis=1)
    return float(np.sqrt(np.mean((values - values[nearest]) ** 2) / 2.0))


def dynamics_rows(
    step: int,
    d_real: np.ndarray,
    d_fake: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray | None,
    gen_scalars: dict[str, np.ndarray],
    ref_scalars: dict[str, np.ndarray],
) -> list[dict[str, float | int | str]]:
    """The ``dynamics.csv`` rows of one validation.

    ``d_real``/``d_fake``: ``[N]`` D on the reference showers and on generated showers at the same
    conditions ``energy: [N] GeV`` and ``theta: [N] rad`` (None: normal incidence, no angle bins);
    ``gen_scalars``/``ref_scalars``: per-event observables ``{name: [N]}`` of both sets (see
    :data:`DIVERSITY_OBSERVABLES`). Rows: quantity ``d_real``/``d_fake`` (mean D in the bin) over
    variable ``energy`` (GeV) and, where the angle varies, ``theta`` (degrees); quantity
    ``diversity/<obs>`` = the generated observable's spread at fixed conditions / the reference one's, in
    the energy bin (spread: differences to the shower of the nearest conditions, see :func:`_spread`, so
    that the trend across the bin's energies does not count as diversity). 1: as varied as the
    data; 0: every generated shower at given conditions alike (mode collapse); nan for too few showers
    or a constant reference.
    """
    rows: list[dict[str, float | int | str]] = []

    def add(quantity: str, variable: str, lo: float, hi: float, value: float, n: int) -> None:
        row: dict[str, float | int | str] = {"step": step, "quantity": quantity, "variable": variable}
        rows.append({**row, "lo": lo, "hi": hi, "value": value, "n": n})

    e = np.asarray(energy, np.float64)
    variables: list[tuple[str, np.ndarray, int]] = [("energy", e, N_ENERGY_BINS)]
    th = None if theta is None else np.rad2deg(np.asarray(theta, np.float64))
    if th is not None and float(np.ptp(th)) > 1e-3:  # a fixed angle gives no angle bins
        variables.append(("theta", th, N_THETA_BINS))
    else:
        th = None
    for variable, values, n_bins in variables:
        edges = _bins(values, n_bins)
        idx = _binned(values, edges)
        for b in range(len(edges) - 1):
            sel = idx == b
            n = int(sel.sum())
            if not n:
                continue
            lo, hi = float(edges[b]), float(edges[b + 1])
            add("d_real", variable, lo, hi, float(d_real[sel].mean()), n)
            add("d_fake", variable, lo, hi, float(d_fake[sel].mean()), n)
            if variable != "energy":
                continue
            for name in DIVERSITY_OBSERVABLES:
                if name not in gen_scalars or name not in ref_scalars:
                    continue
                cond = [e[sel]] if th is None else [e[sel], th[sel]]
                g = _spread(np.asarray(gen_scalars[name], np.float64)[sel], cond)
                r = _spread(np.asarray(ref_scalars[name], np.float64)[sel], cond)
                ok = n >= MIN_BIN and r > 0.0
                add(f"diversity/{name}", variable, lo, hi, g / r if ok else np.nan, n)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Scalars of one validation's dynamics rows for TensorBoard: ``d_real``, ``d_fake`` (means over
    the energy bins) and ``diversity_<obs>`` (median over the energy bins with a value)."""
    out: dict[str, float] = {}
    energy = [r for r in rows if r["variable"] == "energy"]
    for q in ("d_real", "d_fake"):
        vals = [float(r["value"]) for r in energy if r["quantity"] == q]
        if vals:
            out[q] = float(np.mean(vals))
    for name in DIVERSITY_OBSERVABLES:
        vals = [float(r["value"]) for r in energy if r["quantity"] == f"diversity/{name}"]
        finite = [v for v in vals if np.isfinite(v)]
        if finite:
            out[f"diversity_{name}"] = float(np.median(finite))
    return out


def shower_figure(gen: np.ndarray, ref: np.ndarray, energy: np.ndarray, *, n: int = 4) -> Any:
    """A figure of ``n`` single generated showers (top rows) and the reference showers of the same
    conditions (bottom rows), each as its y-z (side view, summed over x) and x-y (front view, summed
    over depth) projection on a log colour scale. ``gen``, ``ref``: ``[N, X, Y, Z]`` GeV; ``energy: [N]``
    GeV. The showers shown are those nearest to ``n`` energies spread over the range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    order = np.argsort(energy)
    picks = order[np.linspace(0, len(order) - 1, min(n, len(order))).astype(int)]
    fig, axes = plt.subplots(4, len(picks), figsize=(2.4 * len(picks), 8.5), squeeze=False)
    for col, i in enumerate(picks):
        for row, (x, who, axis, label) in enumerate(
            (
                (gen, "generated", 0, "y-z"),
                (ref, "reference", 0, "y-z"),
                (gen, "generated", 2, "x-y"),
                (ref, "reference", 2, "x-y"),
            )
        ):
            img = np.asarray(x[i], np.float64).sum(axis=axis)
            top = float(img.max())
            ax = axes[row, col]
            if top > 0:
                ax.imshow(
                    np.where(img > 0, img, np.nan).T,
                    origin="lower",
                    aspect="auto",
                    norm=mcolors.LogNorm(vmin=top * 1e-4, vmax=top),
                )
            ax.set_title(f"{who} {label}, {energy[i]:.0f} GeV", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig
