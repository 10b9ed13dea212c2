"""Training dynamics of a run from its logs, with warnings for patterns that precede divergence or collapse.

Reads what ``hepgan-train`` writes into a run folder (all optional except ``manifest.json``):

- ``train.csv``: one row per logged step (losses per player and loss term, ``d_real_p``/``d_fake_p`` =
  mean sigmoid of D on real/generated showers, gradient, parameter and update norms, learning rates);
- ``val.csv``: one row per validation (``physics_score``, lower is better, and its ingredients);
- ``layers.csv`` (long format): ``step,player,layer,weight_norm,grad_norm,update_norm,update_ratio``, the L2
  norms of one top-level parameter group of G (``player`` "g") or D ("d"), every
  ``logging.layer_stats_every`` steps;
- ``dynamics.csv`` (long format): ``step,quantity,variable,lo,hi,value,n``, at each validation: quantity
  ``d_real``/``d_fake`` = mean sigmoid of D on the reference / generated showers in bins of ``variable``
  ``energy`` (GeV) or ``theta`` (degrees), and ``diversity/<obs>`` = std of the generated observable / std
  of the real one in energy bins (1: as diverse as the data, 0: collapsed); ``n`` = showers in the bin.

API: :func:`load_logs` -> :class:`RunLogs`; :func:`diagnose` -> list of :class:`Finding`; :func:`plot`
(PNG figures); :func:`explain_dynamics` (all of it, plus ``dynamics.json`` and ``dynamics.html``);
:func:`format_findings` (terminal text). The thresholds of the rules are the module constants below; each
rule, its threshold and the reason for it are listed in :func:`diagnose`.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ASYM_FACTOR",
    "ASYM_FLOOR",
    "ASYM_MIN_BINS",
    "ASYM_MIN_GAP",
    "CAPTIONS",
    "DIVERSITY_BIN_FRACTION",
    "DIVERSITY_COLLAPSED",
    "DIVERSITY_FALL_BELOW",
    "DIVERSITY_FALL_POINTS",
    "DIVERSITY_FALL_REL",
    "DIVERSITY_NOISY",
    "DYNAMICS_COLUMNS",
    "D_FOOLED_FAKE",
    "D_LOSS_FALL_REL",
    "D_WINS_FAKE",
    "D_WINS_REAL",
    "FROZEN_LR_FRACTION",
    "GRAD_MEDIAN_WINDOW",
    "GRAD_MIN_HISTORY",
    "GRAD_SPIKE_FACTOR",
    "GRAD_TREND_FACTOR",
    "GRAD_TREND_MIN_POINTS",
    "G_LOSS_FLAT_REL",
    "LAYERS_COLUMNS",
    "LOSS_TREND_MIN_POINTS",
    "MIN_BIN_SHOWERS",
    "MIN_SUSTAIN_POINTS",
    "STALL_POINTS",
    "STALL_REL",
    "SUSTAIN_POINTS",
    "TITLES",
    "UPDATE_RATIO_HIGH",
    "UPDATE_RATIO_LOW",
    "WARMUP_FRACTION",
    "WEIGHT_GROWTH_FACTOR",
    "WEIGHT_MONOTONE_FRACTION",
    "Finding",
    "RunLogs",
    "absent_panels",
    "diagnose",
    "explain_dynamics",
    "format_findings",
    "load_logs",
    "plot",
    "summarize",
]

# --- thresholds of the rules (see diagnose() for the reasons) -------------------------------------------
SUSTAIN_POINTS = 5  # consecutive logged points a condition must hold to count as sustained
MIN_SUSTAIN_POINTS = 3  # ... fewer when the log is shorter, but never fewer than this
D_WINS_REAL = 0.95  # D(real) above this ...
D_WINS_FAKE = 0.05  # ... and D(fake) below this: the discriminator wins
D_FOOLED_FAKE = 0.9  # D(fake) above this: the generator fools D completely
GRAD_SPIKE_FACTOR = 10.0  # a gradient norm above this times its running median is a spike
GRAD_MEDIAN_WINDOW = 20  # logged points in that running median
GRAD_MIN_HISTORY = 5  # points needed before the spike test starts
GRAD_TREND_FACTOR = 10.0  # log-linear growth of a gradient norm by more than this over the run
GRAD_TREND_MIN_POINTS = 10  # points needed for the trend fit
WARMUP_FRACTION = 0.1  # leading fraction of the log left out of trend fits (initial transient)
UPDATE_RATIO_HIGH = 1e-1  # update norm / weight norm above this: steps too large
UPDATE_RATIO_LOW = 1e-6  # ... below this: the layer is frozen
FROZEN_LR_FRACTION = 1e-2  # points where the player's lr is below this times its peak are not "frozen"
WEIGHT_GROWTH_FACTOR = 10.0  # weight norm growth (last / first) that counts as unbounded ...
WEIGHT_MONOTONE_FRACTION = 0.9  # ... when at least this fraction of its steps go up
DIVERSITY_COLLAPSED = 0.2  # std(generated) / std(real) below this in a bin: collapsed there
DIVERSITY_BIN_FRACTION = 0.5  # more than this fraction of energy bins collapsed: mode collapse
DIVERSITY_FALL_POINTS = 3  # consecutive validations with falling diversity ...
DIVERSITY_FALL_REL = 0.3  # ... losing more than this fraction of it in total ...
DIVERSITY_NOISY = 3.0  # median spread ratio above this at the latest validation: noisier than the data
DIVERSITY_FALL_BELOW = 0.5  # ... and ending below this: a fall from above the data's spread towards it is
# the generator learning the data's fluctuations, not collapsing
MIN_BIN_SHOWERS = 5  # bins with fewer showers are ignored (their std / mean are noise)
LOSS_TREND_MIN_POINTS = 20  # points in the second half of the log needed for the loss-trend rule
D_LOSS_FALL_REL = 0.3  # D's loss falling by more than this fraction of its level ...
G_LOSS_FLAT_REL = 0.05  # ... while G's changes by less than this fraction of its level
ASYM_MIN_GAP = 0.3  # D(real) - D(fake) in a bin at least this ...
ASYM_FACTOR = 2.0  # ... and at least this times the median gap over the bins ...
ASYM_FLOOR = 0.05  # ... (the median taken as at least this) marks a bin where G is worst
ASYM_MIN_BINS = 3  # bins needed for the per-bin comparison
STALL_POINTS = 3  # validations without a new best physics_score ...
STALL_REL = 0.02  # ... (new best: lower than the previous best by more than this fraction): stalled

PLAYERS = {"g": "G", "d": "D"}
# the columns of the long-format logs (see the module docstring)
LAYERS_COLUMNS = ("step", "player", "layer", "weight_norm", "grad_norm", "update_norm", "update_ratio")
DYNAMICS_COLUMNS = ("step", "quantity", "variable", "lo", "hi", "value", "n")
# train.csv columns of a player (d_* / g_*) that are not loss terms
_NOT_LOSS = ("grad_norm", "param_norm", "update_norm", "gns_g2", "gns_s", "real_p", "fake_p")
_UNITS = {"energy": "GeV", "theta": "deg"}

CAPTIONS = {
    "losses": "Total loss of each player (top) and each loss term (below) against the training step "
    "(log scale where the values span decades); D's loss falling while G's stays flat or climbs means D "
    "is pulling ahead.",
    "d_outputs": "Mean sigmoid of D on real (blue) and generated (orange) showers per logged step; healthy "
    "training keeps both away from 0 and 1 (dotted: the thresholds 0.95, 0.05 and 0.9 of the rules).",
    "d_bins": "Left: D(real) - D(fake) per bin (rows) at each validation (columns), red = D separates the "
    "generated showers there; right: D(real) and D(fake) per bin at the latest validation. A lone red row "
    "is the region where the generator is worst.",
    "grad_norms": "L2 norm of each player's gradient, log scale; dashed: 10x the running median (the spike "
    "threshold). Points above it, or a steady climb, precede divergence.",
    "layer_norms": "Per-layer gradient (top) and weight (bottom) L2 norms of G (left) and D (right), log "
    "scale; a weight norm climbing by decades grows without bound, a gradient norm at ~0 is a dead layer.",
    "update_ratios": "Norm of the last optimizer update over the layer's weight norm, log scale; shaded: the "
    "healthy band 1e-6 to 1e-1 (dotted: 1e-3, typical). Above: steps too large; below: layer frozen.",
    "diversity": "Spread of the generated observable at fixed conditions / the real one's, per energy bin "
    "(thin lines) and their median (thick) at each validation, log scale; 1 = as varied as the data, "
    "below the red line (0.2) = collapsed, far above 1 = noisier than the data.",
    "physics_score": "The validation yardstick physics_score (lower is better) against the step; star: the "
    "best validation. A flat tail means the run has stopped improving.",
}
TITLES = {
    "losses": "Losses",
    "d_outputs": "D(real) and D(fake) over training",
    "d_bins": "D(real) and D(fake) per energy / angle bin",
    "grad_norms": "Gradient norms per player",
    "layer_norms": "Per-layer gradient and weight norms",
    "update_ratios": "Update-to-weight ratios per layer",
    "diversity": "Diversity of the generated showers",
    "physics_score": "physics_score over training",
}


# --- loading ----------------------------------------------------------------------------------------------


@dataclass
class RunLogs:
    """The logs of one run folder, as NumPy columns (an absent file: an empty dict).

    ``train``/``val``: column name -> float array (one entry per row, rows sorted by step; an empty field
    is NaN). ``layers``/``dynamics``: the long-format files as columns; ``player``, ``layer``, ``quantity``
    and ``variable`` are string arrays, the others float arrays (norms: L2, dimensionless ratios; ``lo``/
    ``hi``: bin edges in GeV or degrees). ``files``: which of the four CSV files exist. ``checkpoints``:
    the steps of ``checkpoints/<step>/``.
    """

    run_dir: Path
    manifest: dict[str, Any]
    train: dict[str, np.ndarray] = field(default_factory=dict)
    val: dict[str, np.ndarray] = field(default_factory=dict)
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    dynamics: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, bool] = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)

    def layer_names(self, player: str) -> list[str]:
        """The layers of ``player`` ("g"/"d") in ``layers.csv``, in order of first appearance."""
        if not self.layers:
            return []
        names = self.layers["layer"][self.layers["player"] == player]
        return list(dict.fromkeys(str(n) for n in names))

    def layer_series(self, player: str, layer: str, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one ``layers.csv`` column for one layer, sorted by step."""
        if not self.layers:
            return np.zeros(0), np.zeros(0)
        sel = (self.layers["player"] == player) & (self.layers["layer"] == layer)
        steps, values = self.layers["step"][sel], self.layers[column][sel]
        order = np.argsort(steps, kind="stable")
        return steps[order], values[order]

    def dynamics_steps(self, prefix: str = "") -> np.ndarray:
        """Sorted validation steps in ``dynamics.csv`` with a quantity starting with ``prefix``."""
        if not self.dynamics:
            return np.zeros(0)
        sel = np.char.startswith(self.dynamics["quantity"].astype(str), prefix)
        return np.unique(self.dynamics["step"][sel])

    def dynamics_bins(self, step: float, quantity: str, variable: str) -> dict[str, np.ndarray]:
        """The bins of one quantity and variable at one validation step, sorted by lower edge:
        ``lo``, ``hi``, ``value``, ``n``."""
        if not self.dynamics:
            return {k: np.zeros(0) for k in ("lo", "hi", "value", "n")}
        d = self.dynamics
        sel = (d["step"] == step) & (d["quantity"] == quantity) & (d["variable"] == variable)
        order = np.argsort(d["lo"][sel], kind="stable")
        return {k: d[k][sel][order] for k in ("lo", "hi", "value", "n")}

    def quantities(self) -> list[str]:
        """The distinct quantities in ``dynamics.csv``, in order of first appearance."""
        return list(dict.fromkeys(str(q) for q in self.dynamics.get("quantity", [])))

    def variables(self, quantity: str) -> list[str]:
        """The binning variables of ``quantity`` in ``dynamics.csv``."""
        if not self.dynamics:
            return []
        return list(
            dict.fromkeys(str(v) for v in self.dynamics["variable"][self.dynamics["quantity"] == quantity])
        )


def _read_csv(
    path: Path, *, text_columns: Sequence[str] = (), required: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Read one log CSV into columns: ``text_columns`` as strings, the rest as floats (empty field: NaN).

    An unterminated last line that does not parse is a row being written right now and is dropped.
    Raises ``ValueError`` naming the file and line for a malformed header, a row with the wrong number of
    fields, or a value that is not a number.
    """
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return {}
    header = [h.strip() for h in next(csv.reader(lines[:1]))]
    if not header or any(not h for h in header):
        raise ValueError(f"{path}, line 1: malformed header {lines[0].strip()!r} (an empty column name)")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise ValueError(f"{path}, line 1: duplicate column names {dup}")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}, line 1: the header lacks the columns {missing} (it has {header})")
    text_idx = {i for i, h in enumerate(header) if h in text_columns}
    rows: list[list[Any]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        torn = lineno == len(lines) and not line.endswith(("\n", "\r"))
        try:
            fields = next(csv.reader([line]))
            if len(fields) != len(header):
                raise ValueError(f"{len(fields)} fields where the header has {len(header)}")
            row: list[Any] = []
            for i, v in enumerate(fields):
                if i in text_idx:
                    row.append(v.strip())
                    continue
                try:
                    row.append(float(v) if v.strip() else math.nan)
                except ValueError:
                    raise ValueError(f"column {header[i]!r}: {v.strip()!r} is not a number") from None
        except ValueError as e:
            if torn:
                break
            raise ValueError(f"{path}, line {lineno}: {e}") from None
        rows.append(row)
    cols: dict[str, np.ndarray] = {}
    for i, h in enumerate(header):
        vals = [r[i] for r in rows]
        cols[h] = np.array(vals, dtype=str) if i in text_idx else np.array(vals, dtype=np.float64)
    return cols


def _sorted_by_step(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "step" not in cols:
        return cols
    order = np.argsort(cols["step"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def load_logs(run_dir: str | Path) -> RunLogs:
    """Read the logs of the run folder ``run_dir`` (whatever of them exist).

    Raises ``FileNotFoundError`` naming the folder when it holds no ``manifest.json`` (not a run folder),
    and ``ValueError`` naming the file and line of a malformed CSV or manifest.
    """
    run = Path(run_dir)
    manifest_path = run / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{run} is not a hepgan-train run folder: it has no manifest.json"
            + ("" if run.is_dir() else " (the folder does not exist)")
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest_path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    logs = RunLogs(run_dir=run, manifest=manifest if isinstance(manifest, dict) else {})
    for name, kind, text, required in (
        ("train.csv", "train", (), ("step",)),
        ("val.csv", "val", (), ("step",)),
        ("layers.csv", "layers", ("player", "layer"), LAYERS_COLUMNS),
        ("dynamics.csv", "dynamics", ("quantity", "variable"), DYNAMICS_COLUMNS),
    ):
        path = run / name
        logs.files[name] = path.is_file()
        if path.is_file():
            cols = _read_csv(path, text_columns=text, required=required)
            setattr(logs, kind, _sorted_by_step(cols) if cols and len(cols["step"]) else {})
    ckpt = run / "checkpoints"
    if ckpt.is_dir():
        logs.checkpoints = sorted(int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit())
    return logs


# --- findings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One diagnosis: ``severity`` "warning" or "info"; ``code`` a short id (e.g. ``mode_collapse``);
    ``step`` the training step where the condition (as it stands at the end of the log) started, or where
    it was first seen when it has since gone (None: not tied to a step); ``message`` one sentence with the
    numbers; ``details`` the numbers behind it (JSON-safe)."""

    severity: str
    code: str
    step: int | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers as None)."""
        return _json_safe(asdict(self))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, str | type(None)):
        return obj
    return str(obj)


def _g(x: float) -> str:
    """A number with 3 significant digits."""
    return f"{x:.3g}"


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index ranges of the runs of True in ``mask`` (stop exclusive)."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _sustained(mask: np.ndarray, need: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(first run of at least ``need`` True, the run reaching the end when it has at least ``need``)."""
    long = [r for r in _runs(mask) if r[1] - r[0] >= need]
    if not long:
        return None, None
    last = long[-1] if long[-1][1] == len(mask) else None
    return long[0], last


def _need(n: int) -> int | None:
    """Points a condition must hold for in a log of ``n`` points (None: too short to judge)."""
    return None if n < MIN_SUSTAIN_POINTS else min(SUSTAIN_POINTS, n)


def _col(cols: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """A column with at least one finite value, or None."""
    x = cols.get(name)
    return x if x is not None and len(x) and np.isfinite(x).any() else None


def _median_pos(x: np.ndarray) -> float:
    """Median of the finite positive entries (NaN when none)."""
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.median(x)) if len(x) else math.nan


def _sustained_rule(
    steps: np.ndarray,
    mask: np.ndarray,
    code: str,
    now: Callable[[int, int], str],
    past: Callable[[int, int], str],
    details: Callable[[int, int], dict[str, Any]],
) -> list[Finding]:
    """A warning when ``mask`` holds over the last sustained stretch of the log (``now(start, stop)``), an
    info when it held for a sustained stretch earlier only (``past``)."""
    need = _need(len(mask))
    if need is None:
        return []
    first, last = _sustained(mask, need)
    if last is not None:
        return [Finding("warning", code, int(steps[last[0]]), now(*last), details(*last))]
    if first is not None:
        return [Finding("info", code, int(steps[first[0]]), past(*first), details(*first))]
    return []


def _rule_d_outputs(logs: RunLogs) -> list[Finding]:
    t = logs.train
    real, fake = _col(t, "d_real_p"), _col(t, "d_fake_p")
    out: list[Finding] = []
    steps = t.get("step", np.zeros(0))
    if real is not None and fake is not None:
        wins = (real > D_WINS_REAL) & (fake < D_WINS_FAKE)

        def numbers(a: int, b: int) -> dict[str, Any]:
            return {"d_real_p": float(np.nanmean(real[a:b])), "d_fake_p": float(np.nanmean(fake[a:b]))}

        out += _sustained_rule(
            steps,
            wins,
            "d_wins",
            lambda a, b: (
                f"The discriminator wins: D(real) = {_g(np.nanmean(real[a:b]))} > {D_WINS_REAL} and "
                f"D(fake) = {_g(np.nanmean(fake[a:b]))} < {D_WINS_FAKE} over the last {b - a} logged points "
                f"(since step {int(steps[a])}), so the generator's adversarial gradient vanishes: lower D's "
                "learning rate (lr_d), add label smoothing or instance noise, or update G more often."
            ),
            lambda a, b: (
                f"The discriminator won for {b - a} logged points (steps {int(steps[a])}-"
                f"{int(steps[b - 1])}: D(real) = {_g(np.nanmean(real[a:b]))}, D(fake) = "
                f"{_g(np.nanmean(fake[a:b]))}) and the generator has since caught up."
            ),
            numbers,
        )
    if fake is not None:
        fooled = fake > D_FOOLED_FAKE
        out += _sustained_rule(
            steps,
            fooled,
            "d_fooled",
            lambda a, b: (
                f"The generator fools D completely: D(fake) = {_g(np.nanmean(fake[a:b]))} > {D_FOOLED_FAKE} "
                f"over the last {b - a} logged points (since step {int(steps[a])}), so D has collapsed or "
                "stopped learning and G gets no useful signal: check D's gradient norm and learning rate."
            ),
            lambda a, b: (
                f"D(fake) was {_g(np.nanmean(fake[a:b]))} > {D_FOOLED_FAKE} for {b - a} logged points (steps "
                f"{int(steps[a])}-{int(steps[b - 1])}), then D recovered."
            ),
            lambda a, b: {"d_fake_p": float(np.nanmean(fake[a:b]))},
        )
    return out


def _rule_nonfinite(logs: RunLogs) -> list[Finding]:
    t = logs.train
    if not t or "step" not in t:
        return []
    watched = [
        c
        for c in (
            *("d_loss", "g_loss", "d_grad_norm", "g_grad_norm"),
            *("d_param_norm", "g_param_norm", "d_real_p", "d_fake_p"),
        )
        if c in t
    ]
    bad = np.zeros(len(t["step"]), bool)
    cols_bad: list[str] = []
    for c in watched:
        b = ~np.isfinite(t[c])
        if b.any():
            cols_bad.append(c)
            bad |= b
    if "finite" in t:
        fin = t["finite"]
        b = np.isfinite(fin) & (fin < 1)
        if b.any():
            cols_bad.append("finite")
            bad |= b
    if not bad.any():
        return []
    steps = t["step"]
    i = int(np.flatnonzero(bad)[0])
    return [
        Finding(
            "warning",
            "nonfinite",
            int(steps[i]),
            f"Non-finite losses or gradients at {int(bad.sum())} of {len(bad)} logged points (first at step "
            f"{int(steps[i])}; columns {', '.join(cols_bad)}): the run diverged there (and rolled back if "
            "train.max_rollbacks allowed it); lower the learning rates or clip the gradients.",
            {"n_points": int(bad.sum()), "columns": cols_bad},
        )
    ]


def _rule_gradients(logs: RunLogs) -> list[Finding]:
    t = logs.train
    out: list[Finding] = []
    for p, name in PLAYERS.items():
        x = _col(t, f"{p}_grad_norm")
        if x is None:
            continue
        steps = t["step"]
        ratios = np.full(len(x), math.nan)
        meds = np.full(len(x), math.nan)
        for i in range(GRAD_MIN_HISTORY, len(x)):
            meds[i] = _median_pos(x[max(0, i - GRAD_MEDIAN_WINDOW) : i])
            if meds[i] > 0 and np.isfinite(x[i]):
                ratios[i] = x[i] / meds[i]
        spikes = np.flatnonzero(np.nan_to_num(ratios) > GRAD_SPIKE_FACTOR)
        if len(spikes):
            i, j = int(spikes[0]), int(spikes[np.argmax(ratios[spikes])])
            out.append(
                Finding(
                    "warning",
                    "grad_spike",
                    int(steps[i]),
                    f"{name}'s gradient norm exploded: {_g(x[i])} at step {int(steps[i])}, "
                    f"{_g(ratios[i])}x its running median ({_g(meds[i])}) over the previous "
                    f"{GRAD_MEDIAN_WINDOW} logged points ({len(spikes)} such spike(s), the largest "
                    f"{_g(ratios[j])}x at step {int(steps[j])}): "
                    f"clip the gradients or lower lr_{p}.",
                    {
                        "player": p,
                        "n_spikes": len(spikes),
                        "max_ratio": float(ratios[j]),
                        "value": float(x[i]),
                    },
                )
            )
        start = int(len(x) * WARMUP_FRACTION)
        ok = np.isfinite(x) & (x > 0)
        ok[:start] = False
        if ok.sum() >= GRAD_TREND_MIN_POINTS:
            s, y = steps[ok], np.log10(x[ok])
            if s[-1] > s[0]:
                slope = float(np.polyfit(s, y, 1)[0])
                factor = 10 ** (slope * (s[-1] - s[0]))
                if factor > GRAD_TREND_FACTOR:
                    first, last = _median_pos(x[ok][:3]), _median_pos(x[ok][-3:])
                    out.append(
                        Finding(
                            "warning",
                            "grad_growth",
                            int(s[0]),
                            f"{name}'s gradient norm grows steadily: a log-linear fit over steps {int(s[0])}-"
                            f"{int(s[-1])} rises x{_g(factor)} (from ~{_g(first)} to ~{_g(last)}), a trend "
                            f"that ends in divergence: lower lr_{p} or clip the gradients.",
                            {"player": p, "factor": factor},
                        )
                    )
    return out


def _rule_losses(logs: RunLogs) -> list[Finding]:
    t = logs.train
    d, g = _col(t, "d_loss"), _col(t, "g_loss")
    if d is None or g is None:
        return []
    n = len(d)
    h = n // 2
    steps = t["step"][h:]
    ok = np.isfinite(d[h:]) & np.isfinite(g[h:])
    if ok.sum() < LOSS_TREND_MIN_POINTS or steps[ok][-1] <= steps[ok][0]:
        return []
    s, dl, gl = steps[ok], d[h:][ok], g[h:][ok]
    span = s[-1] - s[0]
    d_rel = float(np.polyfit(s, dl, 1)[0] * span / max(abs(dl.mean()), 1e-12))
    g_rel = float(np.polyfit(s, gl, 1)[0] * span / max(abs(gl.mean()), 1e-12))
    if d_rel < -D_LOSS_FALL_REL and abs(g_rel) < G_LOSS_FLAT_REL:
        return [
            Finding(
                "warning",
                "g_flat_d_falling",
                int(s[0]),
                f"Over steps {int(s[0])}-{int(s[-1])} D's loss fell by {_g(-100 * d_rel)}% of its level "
                f"while G's changed by only {_g(100 * g_rel)}%: D learns to reject the generated showers "
                "and G no longer follows, a common prelude to mode collapse; compare the diversity ratios.",
                {"d_loss_rel_change": d_rel, "g_loss_rel_change": g_rel},
            )
        ]
    return []


def _lr_at(logs: RunLogs, player: str, steps: np.ndarray) -> np.ndarray | None:
    """The player's learning rate from train.csv at ``steps`` over its peak (None: not logged)."""
    lr = _col(logs.train, f"lr_{player}")
    if lr is None:
        return None
    ok = np.isfinite(lr)
    peak = float(np.max(lr[ok]))
    if peak <= 0:
        return None
    return np.interp(steps, logs.train["step"][ok], lr[ok]) / peak


def _layer_ratio(logs: RunLogs, player: str, layer: str) -> tuple[np.ndarray, np.ndarray]:
    steps, ratio = logs.layer_series(player, layer, "update_ratio")
    _, w = logs.layer_series(player, layer, "weight_norm")
    _, u = logs.layer_series(player, layer, "update_norm")
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(w > 0, u / w, np.where((w == 0) & (u == 0), 0.0, math.nan))
    return steps, np.where(np.isfinite(ratio), ratio, own)


def _rule_layers(logs: RunLogs) -> list[Finding]:
    out: list[Finding] = []
    for p, name in PLAYERS.items():
        names = logs.layer_names(p)
        high: dict[str, tuple[int, float]] = {}
        frozen: dict[str, tuple[int, float]] = {}
        growth: dict[str, tuple[int, float]] = {}
        for layer in names:
            steps, r = _layer_ratio(logs, p, layer)
            need = _need(len(r))
            if need is not None:
                _, last = _sustained(np.isfinite(r) & (r > UPDATE_RATIO_HIGH), need)
                if last is not None:
                    high[layer] = (int(steps[last[0]]), float(np.median(r[last[0] : last[1]])))
                lr = _lr_at(logs, p, steps)
                active = np.ones(len(r), bool) if lr is None else lr >= FROZEN_LR_FRACTION
                low = np.isfinite(r) & (r < UPDATE_RATIO_LOW)
                # points where the schedule switched the learning rate off neither break nor make a stretch
                idx = np.flatnonzero(active)
                if len(idx) >= MIN_SUSTAIN_POINTS:
                    n_need = _need(len(idx))
                    _, last = _sustained(low[idx], n_need or SUSTAIN_POINTS)
                    if last is not None:
                        sel = idx[last[0] : last[1]]
                        frozen[layer] = (int(steps[sel[0]]), float(np.median(r[sel])))
            s, w = logs.layer_series(p, layer, "weight_norm")
            ok = np.isfinite(w) & (w > 0)
            s, w = s[ok], w[ok]
            if len(w) >= MIN_SUSTAIN_POINTS:
                up = float(np.mean(np.diff(w) > 0))
                if up >= WEIGHT_MONOTONE_FRACTION and w[-1] > WEIGHT_GROWTH_FACTOR * w[0]:
                    i = int(np.argmax(w > WEIGHT_GROWTH_FACTOR * w[0]))
                    growth[layer] = (int(s[i]), float(w[-1] / w[0]))
        if high:
            out.append(
                Finding(
                    "warning",
                    "update_too_large",
                    min(v[0] for v in high.values()),
                    f"{name}'s optimizer steps are too large in layer(s) "
                    + ", ".join(f"{k} ({_g(v[1])})" for k, v in high.items())
                    + f": update/weight ratio above {UPDATE_RATIO_HIGH} up to the end of the log (healthy: "
                    f"~1e-3), each step rewrites a sizeable part of the weights; lower lr_{p}.",
                    {"player": p, "layers": {k: v[1] for k, v in high.items()}},
                )
            )
        if frozen and len(frozen) == len(names):
            out.append(
                Finding(
                    "warning",
                    "frozen_player",
                    min(v[0] for v in frozen.values()),
                    f"All {len(names)} layers of {name} have update/weight ratios below {UPDATE_RATIO_LOW} "
                    f"(median {_g(float(np.median([v[1] for v in frozen.values()])))}) since step "
                    f"{min(v[0] for v in frozen.values())} while lr_{p} is on: {name} is not training "
                    "(zero gradients or a stalled optimizer).",
                    {"player": p, "layers": {k: v[1] for k, v in frozen.items()}},
                )
            )
        elif frozen:
            out.append(
                Finding(
                    "warning",
                    "frozen_layer",
                    min(v[0] for v in frozen.values()),
                    f"{name}'s layer(s) "
                    + ", ".join(f"{k} (ratio {_g(v[1])}, since step {v[0]})" for k, v in frozen.items())
                    + f" are frozen: update/weight ratio below {UPDATE_RATIO_LOW} up to the end of the log "
                    "while the other layers train; look for dead activations or a vanishing gradient there.",
                    {"player": p, "layers": {k: v[1] for k, v in frozen.items()}},
                )
            )
        if growth:
            out.append(_growth_finding(p, growth))
    if not logs.layers:  # the players' total parameter norms stand in for the layers
        for p in PLAYERS:
            pn = _col(logs.train, f"{p}_param_norm")
            if pn is None:
                continue
            ok = np.isfinite(pn) & (pn > 0)
            s, w = logs.train["step"][ok], pn[ok]
            if len(w) >= MIN_SUSTAIN_POINTS and np.mean(np.diff(w) > 0) >= WEIGHT_MONOTONE_FRACTION:
                if w[-1] > WEIGHT_GROWTH_FACTOR * w[0]:
                    i = int(np.argmax(w > WEIGHT_GROWTH_FACTOR * w[0]))
                    out.append(_growth_finding(p, {"(all parameters)": (int(s[i]), float(w[-1] / w[0]))}))
    return out


def _growth_finding(p: str, growth: dict[str, tuple[int, float]]) -> Finding:
    return Finding(
        "warning",
        "weight_growth",
        min(v[0] for v in growth.values()),
        f"{PLAYERS[p]}'s weight norm grows without bound in "
        + ", ".join(
            f"{k} (x{_g(v[1])}, past x{_g(WEIGHT_GROWTH_FACTOR)} at step {v[0]})" for k, v in growth.items()
        )
        + ": it rises almost monotonically, which ends in saturated activations or overflow; add weight "
        f"decay or a spectral/weight norm, or lower lr_{p}.",
        {"player": p, "layers": {k: v[1] for k, v in growth.items()}},
    )


def _diversity_series(logs: RunLogs, q: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, fraction of energy bins below DIVERSITY_COLLAPSED, median ratio, bins judged) of one
    diversity quantity at each validation."""
    steps = logs.dynamics_steps(q)
    frac, med, nb = (np.full(len(steps), math.nan) for _ in range(3))
    for k, s in enumerate(steps):
        b = logs.dynamics_bins(s, q, "energy")
        ok = np.isfinite(b["value"]) & (np.nan_to_num(b["n"], nan=MIN_BIN_SHOWERS) >= MIN_BIN_SHOWERS)
        if ok.any():
            frac[k] = float(np.mean(b["value"][ok] < DIVERSITY_COLLAPSED))
            med[k] = float(np.median(b["value"][ok]))
            nb[k] = float(ok.sum())
    keep = np.isfinite(med)
    return steps[keep], frac[keep], med[keep], nb[keep]


def _rule_diversity(logs: RunLogs) -> list[Finding]:
    out: list[Finding] = []
    obs_q = [q for q in logs.quantities() if q.startswith("diversity/")]
    collapsed: dict[str, dict[str, Any]] = {}
    past: dict[str, dict[str, Any]] = {}
    falling: dict[str, dict[str, Any]] = {}
    noisy: dict[str, float] = {}
    last_step = None
    for q in obs_q:
        obs = q.split("/", 1)[1]
        steps, frac, med, nb = _diversity_series(logs, q)
        if not len(steps):
            continue
        if med[-1] > DIVERSITY_NOISY:
            noisy[obs] = float(med[-1])
        last_step = int(steps[-1]) if last_step is None else max(last_step, int(steps[-1]))
        bad = frac > DIVERSITY_BIN_FRACTION
        runs = _runs(bad)
        if runs and runs[-1][1] == len(bad):
            a = runs[-1][0]
            collapsed[obs] = {
                "since": int(steps[a]),
                "median_ratio": float(med[-1]),
                "bins_low": round(float(frac[-1] * nb[-1])),
                "bins": int(nb[-1]),
            }
            continue
        if runs:
            a, b = runs[0]
            past[obs] = {
                "from": int(steps[a]),
                "to": int(steps[b - 1]),
                "median_ratio": float(np.min(med[a:b])),
            }
        k = DIVERSITY_FALL_POINTS + 1
        if len(med) >= k:
            tail = med[-k:]
            fell = tail[-1] < (1 - DIVERSITY_FALL_REL) * tail[0] and tail[-1] < DIVERSITY_FALL_BELOW
            if np.all(np.diff(tail) < 0) and fell:
                falling[obs] = {"since": int(steps[-k]), "from": float(tail[0]), "to": float(tail[-1])}
    if collapsed:
        since = min(v["since"] for v in collapsed.values())
        first = min((int(logs.dynamics_steps(q)[0]) for q in obs_q if len(logs.dynamics_steps(q))), default=0)
        remedy = (
            "restart from a checkpoint before that step with a lower lr_g or a stronger D, or add minibatch "
            "discrimination."
            if since > first
            else "it never varied, from the first validation on: check that the noise reaches the generator "
            "(the latent construction and conditioning) before tuning the training."
        )
        out.append(
            Finding(
                "warning",
                "mode_collapse",
                since,
                f"Mode collapse since step {since}: at the latest validation (step {last_step}) the "
                "generated showers' spread is below "
                f"{DIVERSITY_COLLAPSED} of the data's in most energy bins for "
                + ", ".join(
                    f"{o} (median std ratio {_g(v['median_ratio'])}, {v['bins_low']} of {v['bins']} bins)"
                    for o, v in collapsed.items()
                )
                + ": the generator ignores its latent noise; "
                + remedy,
                {"observables": collapsed, "latest_step": last_step},
            )
        )
    if past:
        out.append(
            Finding(
                "info",
                "mode_collapse",
                min(v["from"] for v in past.values()),
                "The generated showers were collapsed earlier and have since recovered: "
                + ", ".join(
                    f"{o} at steps {v['from']}-{v['to']} (median std ratio down to {_g(v['median_ratio'])})"
                    for o, v in past.items()
                )
                + ".",
                {"observables": past},
            )
        )
    if noisy:
        out.append(
            Finding(
                "info",
                "noisier_than_data",
                last_step,
                f"At the latest validation (step {last_step}) the generated showers fluctuate more than the "
                "data at fixed conditions: "
                + ", ".join(
                    f"{o} spread x{_g(v)} the data's (median over energy bins)" for o, v in noisy.items()
                )
                + ". The generator adds variation the simulation does not have (speckle and stray cells in "
                "the shower images, a broad sampling-fraction distribution); it usually shrinks with "
                "training, so compare with the physics_score trend.",
                {"observables": noisy},
            )
        )
    if falling:
        out.append(
            Finding(
                "warning",
                "diversity_falling",
                min(v["since"] for v in falling.values()),
                "The generated showers lose diversity at each of the last "
                f"{DIVERSITY_FALL_POINTS} validations: "
                + ", ".join(
                    f"{o} (median std ratio {_g(v['from'])} -> {_g(v['to'])})" for o, v in falling.items()
                )
                + ", a slide towards mode collapse; keep the checkpoint from before it and watch the next "
                "validations.",
                {"observables": falling},
            )
        )
    return out


def _gap_bins(logs: RunLogs, step: float, variable: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(lo, hi, D(real) - D(fake)) of the bins of ``variable`` with both quantities at ``step``."""
    r, f = logs.dynamics_bins(step, "d_real", variable), logs.dynamics_bins(step, "d_fake", variable)
    if not len(r["lo"]) or not len(f["lo"]):
        return None
    fk = {(lo, hi): (v, n) for lo, hi, v, n in zip(f["lo"], f["hi"], f["value"], f["n"], strict=True)}
    lo, hi, gap = [], [], []
    for a, b, v, n in zip(r["lo"], r["hi"], r["value"], r["n"], strict=True):
        if (a, b) not in fk:
            continue
        fv, fn = fk[(a, b)]
        if (
            min(np.nan_to_num(n, nan=MIN_BIN_SHOWERS), np.nan_to_num(fn, nan=MIN_BIN_SHOWERS))
            < MIN_BIN_SHOWERS
        ):
            continue
        if np.isfinite(v) and np.isfinite(fv):
            lo.append(a)
            hi.append(b)
            gap.append(v - fv)
    return np.array(lo), np.array(hi), np.array(gap)


def _flagged_bins(gap: np.ndarray) -> np.ndarray:
    if len(gap) < ASYM_MIN_BINS:
        return np.zeros(len(gap), bool)
    ref = max(float(np.median(gap)), ASYM_FLOOR)
    return (gap >= ASYM_MIN_GAP) & (gap >= ASYM_FACTOR * ref)


def _rule_bins(logs: RunLogs) -> list[Finding]:
    out: list[Finding] = []
    steps = logs.dynamics_steps("d_")
    if not len(steps):
        return out
    for var in logs.variables("d_real"):
        flags: list[set[tuple[float, float]]] = []
        last = None
        for s in steps:
            gb = _gap_bins(logs, s, var)
            if gb is None or not len(gb[2]):
                flags.append(set())
                continue
            lo, hi, gap = gb
            f = _flagged_bins(gap)
            flags.append({(float(a), float(b)) for a, b in zip(lo[f], hi[f], strict=True)})
            last = (s, lo, hi, gap, f)
        if last is None or last[0] != steps[-1] or not last[4].any():
            continue
        s, lo, hi, gap, f = last
        since = len(steps) - 1
        while since > 0 and flags[since - 1] & flags[-1]:
            since -= 1
        unit = _UNITS.get(var, "")
        where = ", ".join(f"{_g(a)}-{_g(b)} {unit}".strip() for a, b in zip(lo[f], hi[f], strict=True))
        gaps = ", ".join(_g(g) for g in gap[f])
        out.append(
            Finding(
                "warning",
                "bin_asymmetry",
                int(steps[since]),
                f"D separates the generated showers mainly in the {var} bin(s) {where}: D(real) - D(fake) = "
                f"{gaps} there at step {int(s)} against a median {_g(float(np.median(gap)))} over all "
                f"{len(gap)} bins (since step {int(steps[since])}), so the generator is worst in that range; "
                f"check its conditioning on {var} and the training statistics there.",
                {
                    "variable": var,
                    "bins": [
                        [float(a), float(b), float(g)] for a, b, g in zip(lo[f], hi[f], gap[f], strict=True)
                    ],
                    "median_gap": float(np.median(gap)),
                },
            )
        )
    return out


def _rule_stall(logs: RunLogs) -> list[Finding]:
    x = _col(logs.val, "physics_score")
    if x is None:
        return []
    ok = np.isfinite(x)
    s, x = logs.val["step"][ok], x[ok]
    if len(x) < STALL_POINTS + 2:
        return []
    before, tail = x[:-STALL_POINTS], x[-STALL_POINTS:]
    best_before = float(np.min(before))
    if float(np.min(tail)) < best_before * (1 - STALL_REL):
        return []
    i = int(np.argmin(x))
    sig = 0  # the last validation that set a new best by more than STALL_REL
    for k in range(1, len(x)):
        if x[k] < float(np.min(x[:k])) * (1 - STALL_REL):
            sig = k
    return [
        Finding(
            "info",
            "physics_stall",
            int(s[min(sig + 1, len(x) - STALL_POINTS)]),
            f"physics_score has not improved over the last {STALL_POINTS} validations (best {_g(x[i])} "
            f"at step {int(s[i])}; latest {_g(x[-1])} at step {int(s[-1])}): the run has stalled, so lower "
            "the learning rate, stop it, or keep the best checkpoint (best/).",
            {"best": float(x[i]), "best_step": int(s[i]), "latest": float(x[-1])},
        )
    ]


def absent_panels(logs: RunLogs) -> dict[str, str]:
    """The figure panels this run's logs cannot fill, each with the reason (the file or columns missing)."""
    out: dict[str, str] = {}
    t = logs.train

    def no_train(why: str) -> str:
        return "train.csv is absent" if not logs.files.get("train.csv") else why

    if not any(_col(t, c) is not None for c in _loss_columns(t)):
        out["losses"] = no_train("train.csv has no loss columns")
    if _col(t, "d_real_p") is None and _col(t, "d_fake_p") is None:
        out["d_outputs"] = no_train("train.csv lacks the columns d_real_p and d_fake_p")
    if _col(t, "d_grad_norm") is None and _col(t, "g_grad_norm") is None:
        out["grad_norms"] = no_train("train.csv lacks the columns d_grad_norm and g_grad_norm")
    if not logs.files.get("layers.csv"):
        out["layer_norms"] = out["update_ratios"] = "layers.csv is absent"
    elif not logs.layers:
        out["layer_norms"] = out["update_ratios"] = "layers.csv has no rows"
    if not logs.files.get("dynamics.csv"):
        out["d_bins"] = out["diversity"] = "dynamics.csv is absent"
    else:
        if not len(logs.dynamics_steps("d_")):
            out["d_bins"] = "dynamics.csv has no d_real/d_fake rows"
        if not len(logs.dynamics_steps("diversity/")):
            out["diversity"] = "dynamics.csv has no diversity rows"
    if _col(logs.val, "physics_score") is None:
        out["physics_score"] = (
            "val.csv is absent" if not logs.files.get("val.csv") else "val.csv lacks the column physics_score"
        )
    return out


def _loss_columns(t: dict[str, np.ndarray]) -> list[str]:
    """The loss columns of train.csv: d_loss, g_loss, then each player's loss terms."""
    terms = [
        c
        for c in t
        if c[:2] in ("d_", "g_") and c not in ("d_loss", "g_loss") and not c[2:].endswith(_NOT_LOSS)
    ]
    return [c for c in ("d_loss", "g_loss") if c in t] + terms


def _rule_missing(logs: RunLogs) -> list[Finding]:
    out: list[Finding] = []
    f = logs.files
    if not f.get("train.csv"):
        out.append(
            Finding(
                "info",
                "missing_log",
                None,
                "train.csv is absent (logging.csv=false, or the run stopped before its first log): the "
                "panels losses, D(real)/D(fake) and gradient norms and the rules on them are absent.",
                {"file": "train.csv"},
            )
        )
    elif not logs.train:
        out.append(Finding("info", "missing_log", None, "train.csv has no rows yet.", {"file": "train.csv"}))
    if not f.get("val.csv"):
        out.append(
            Finding(
                "info",
                "missing_log",
                None,
                "val.csv is absent (no validation has run): the physics_score panel and the stall rule are "
                "absent.",
                {"file": "val.csv"},
            )
        )
    if not f.get("layers.csv"):
        out.append(
            Finding(
                "info",
                "missing_log",
                None,
                "layers.csv is absent: the run predates per-layer statistics or ran with "
                "logging.layer_stats_every=0, so the per-layer norm and update-to-weight panels and the "
                "frozen-layer, step-size and per-layer weight-growth rules are absent (the weight-growth "
                "rule falls back to the players' total parameter norms).",
                {"file": "layers.csv"},
            )
        )
    if not f.get("dynamics.csv"):
        ck = (
            f"; its {len(logs.checkpoints)} checkpoint(s) are not re-evaluated by this view"
            if logs.checkpoints
            else ""
        )
        out.append(
            Finding(
                "info",
                "missing_log",
                None,
                "dynamics.csv is absent: the run predates the per-bin discriminator and diversity logging "
                "or ran with logging.dynamics_events=0, so the panels D(real)/D(fake) per energy/angle bin "
                "and diversity ratios, and the mode-collapse, diversity-trend and per-bin rules, are absent"
                + ck
                + ".",
                {"file": "dynamics.csv", "checkpoints": len(logs.checkpoints)},
            )
        )
    if logs.train:
        need = {
            "d_real_p": "D-wins",
            "d_fake_p": "D-wins and D-fooled",
            "d_grad_norm": "gradient-explosion (D)",
            "g_grad_norm": "gradient-explosion (G)",
            "d_loss": "loss-trend",
            "g_loss": "loss-trend",
        }
        lacking = [c for c in need if _col(logs.train, c) is None]
        if lacking:
            rules = sorted({need[c] for c in lacking})
            out.append(
                Finding(
                    "info",
                    "missing_columns",
                    None,
                    f"train.csv lacks the columns {', '.join(lacking)} (another architecture or an older "
                    f"run): the {', '.join(rules)} rule(s) are skipped and their panels show what is there.",
                    {"file": "train.csv", "columns": lacking},
                )
            )
    if logs.val and _col(logs.val, "physics_score") is None:
        out.append(
            Finding(
                "info",
                "missing_columns",
                None,
                "val.csv lacks the column physics_score: the stall rule and its panel are skipped.",
                {"file": "val.csv", "columns": ["physics_score"]},
            )
        )
    return out


def diagnose(logs: RunLogs) -> list[Finding]:
    """Findings on the training dynamics of ``logs``: warnings first, then infos, each ordered by step.

    A condition "sustained" holds at ``SUSTAIN_POINTS`` (5) consecutive logged points (fewer in a shorter
    log, at least ``MIN_SUSTAIN_POINTS`` = 3). One that holds at the end of the log is a warning; one that
    held earlier only is an info. The rules:

    - ``d_wins``: D(real) > ``D_WINS_REAL`` (0.95) and D(fake) < ``D_WINS_FAKE`` (0.05), sustained. D is
      certain on both sides, the generator's BCE gradient through sigmoid(logit) ~ 0 vanishes and G stops
      learning (the classic non-saturating-GAN failure).
    - ``d_fooled``: D(fake) > ``D_FOOLED_FAKE`` (0.9), sustained. D calls the generated showers real: it has
      collapsed (dead units, too low a learning rate), so G is trained on a meaningless signal.
    - ``nonfinite``: a NaN/inf loss, gradient or parameter norm, or ``finite`` < 1 in train.csv. The run
      diverged at that step.
    - ``grad_spike``: a player's gradient norm above ``GRAD_SPIKE_FACTOR`` (10) x the median of its previous
      ``GRAD_MEDIAN_WINDOW`` (20) logged values (after ``GRAD_MIN_HISTORY`` = 5). Healthy runs fluctuate by
      up to ~6x their running median; an order of magnitude is an explosion, the step before divergence.
      ``step``: the first spike.
    - ``grad_growth``: a log-linear fit of the gradient norm (first ``WARMUP_FRACTION`` = 10% of the log
      left out, at least ``GRAD_TREND_MIN_POINTS`` = 10 points) rising more than ``GRAD_TREND_FACTOR`` (x10)
      over the run. A steady exponential climb ends in overflow even without single spikes. ``step``: the
      start of the fitted stretch.
    - ``update_too_large`` (layers.csv): a layer's update norm / weight norm > ``UPDATE_RATIO_HIGH`` (0.1)
      sustained to the end. Each step rewrites >10% of the weights (healthy: ~1e-3); training is unstable.
    - ``frozen_layer`` / ``frozen_player`` (layers.csv): update/weight < ``UPDATE_RATIO_LOW`` (1e-6)
      sustained to the end, at points where the player's learning rate is at least ``FROZEN_LR_FRACTION``
      (1%) of its peak (a schedule at ~0 is not a frozen layer). The layer no longer learns: dead ReLUs,
      vanishing gradients; all layers of a player: that player does not train.
    - ``weight_growth``: a layer's weight norm rising at >= ``WEIGHT_MONOTONE_FRACTION`` (90%) of its logged
      steps and by more than ``WEIGHT_GROWTH_FACTOR`` (x10) overall (without layers.csv: the players' total
      ``*_param_norm``). Unbounded growth saturates activations and precedes overflow.
    - ``mode_collapse`` (dynamics.csv): at the latest validation, std(generated) / std(real) of an
      observable below ``DIVERSITY_COLLAPSED`` (0.2) in more than ``DIVERSITY_BIN_FRACTION`` (half) of the
      energy bins with at least ``MIN_BIN_SHOWERS`` (5) showers. At fixed energy the generated showers
      barely vary: the generator ignores its latent noise. ``step``: the first validation of the collapsed
      stretch that reaches the latest one.
    - ``diversity_falling``: the median ratio over energy bins falls at each of the last
      ``DIVERSITY_FALL_POINTS`` (3) validations, by more than ``DIVERSITY_FALL_REL`` (30%) in total, to
      below ``DIVERSITY_FALL_BELOW`` (0.5: half the data's spread; observables not yet collapsed). The
      slide towards collapse. A fall from above 1 towards 1 is the generator's excess noise going away.
    - ``noisier_than_data`` (info): the median ratio over energy bins of an observable is above
      ``DIVERSITY_NOISY`` (3) at the latest validation: the generated showers fluctuate more than the data
      at fixed conditions (the opposite of collapse; common early in training).
    - ``g_flat_d_falling``: over the second half of the log (at least ``LOSS_TREND_MIN_POINTS`` = 20
      points), a linear fit of D's total loss falls by more than ``D_LOSS_FALL_REL`` (30%) of its mean while
      G's changes by less than ``G_LOSS_FLAT_REL`` (5%). D keeps learning to reject the generated showers
      while G no longer responds, as before a collapse.
    - ``bin_asymmetry`` (dynamics.csv): at the latest validation, a bin of energy or theta whose D(real) -
      D(fake) is at least ``ASYM_MIN_GAP`` (0.3) and at least ``ASYM_FACTOR`` (2) x the median over the
      bins (the median taken as at least ``ASYM_FLOOR`` = 0.05; at least ``ASYM_MIN_BINS`` = 3 bins). D tells
      the fakes apart there only: the generator is worst in that region.
    - ``physics_stall`` (info): the best physics_score of the last ``STALL_POINTS`` (3) validations is not
      lower than the best before by more than ``STALL_REL`` (2%) (at least 5 validations). Training no
      longer improves the physics.
    - ``missing_log`` / ``missing_columns`` (info): a log file or the columns a rule needs are absent; the
      rule and its panel are skipped.
    """
    findings: list[Finding] = []
    for rule in (
        _rule_missing,
        _rule_nonfinite,
        _rule_d_outputs,
        _rule_gradients,
        _rule_losses,
        _rule_layers,
        _rule_diversity,
        _rule_bins,
        _rule_stall,
    ):
        findings += rule(logs)
    big = 1 << 62
    return sorted(
        findings,
        key=lambda f: (f.severity != "warning", f.step if f.step is not None else big),
    )


def _at(f: Finding) -> str:
    return f"step {f.step}" if f.step is not None else ""


def format_findings(findings: Iterable[Finding]) -> str:
    """The findings as terminal text, one per line (``WARNING``/``info``, code, step, message)."""
    lines = []
    for f in findings:
        tag = "WARNING" if f.severity == "warning" else "info   "
        at = f"step {f.step}" if f.step is not None else "-"
        lines.append(f"{tag} [{f.code}] {at}: {f.message}")
    if not any(f.startswith("WARNING") for f in lines):
        lines.insert(0, "no warning signs")
    return "\n".join(lines)


# --- figures ----------------------------------------------------------------------------------------------


def _figure(nrows: int, ncols: int, *, width: float = 5.0, height: float = 3.2) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _positive(y: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(y) & (y > 0), y, np.nan)


def _log_y(ax: Any, *ys: np.ndarray) -> None:
    """Log y scale when some value is finite and positive (a log axis without one is meaningless)."""
    if any(np.any(np.isfinite(y) & (y > 0)) for y in ys):
        ax.set_yscale("log")


def _log_y_if_wide(ax: Any, *ys: np.ndarray) -> None:
    """Log y scale when the finite values are non-negative and their positive ones span more than a decade
    (symmetric-log, linear around 0, when some are 0); linear otherwise."""
    y = np.concatenate([v[np.isfinite(v)] for v in ys]) if ys else np.zeros(0)
    pos = y[y > 0]
    if not len(pos) or y.min() < 0 or pos.max() <= 10 * pos.min():
        return
    if y.min() > 0:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=float(pos.min()))


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _plot_losses(logs: RunLogs) -> Any:
    t = logs.train
    cols = [c for c in _loss_columns(t) if _col(t, c) is not None]
    totals = [c for c in cols if c in ("d_loss", "g_loss")]
    terms = {p: [c for c in cols if c.startswith(f"{p}_") and c not in totals] for p in PLAYERS}
    panels = ([("total", totals)] if totals else []) + [
        (f"{PLAYERS[p]} loss terms", terms[p]) for p in PLAYERS if terms[p]
    ]
    fig, axes = _figure(len(panels), 1, width=9.0, height=2.8)
    for ax, (title, names) in zip(axes[:, 0], panels, strict=True):
        for c in names:
            ax.plot(t["step"], t[c], label=c, lw=1)
        _log_y_if_wide(ax, *(t[c] for c in names))
        ax.set_title(title)
        ax.set_ylabel("loss")
        _legend(ax, fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("step")
    return fig


def _plot_d_outputs(logs: RunLogs) -> Any:
    t = logs.train
    fig, axes = _figure(1, 1, width=9.0)
    ax = axes[0, 0]
    for c, label, color in (("d_real_p", "D(real)", "C0"), ("d_fake_p", "D(fake)", "C1")):
        if _col(t, c) is not None:
            ax.plot(t["step"], t[c], label=label, color=color)
    for y, ls in ((D_WINS_REAL, ":"), (D_WINS_FAKE, ":"), (D_FOOLED_FAKE, "-.")):
        ax.axhline(y, color="gray", ls=ls, lw=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("mean sigmoid(D)")
    _legend(ax)
    return fig


def _plot_d_bins(logs: RunLogs) -> Any:
    steps = logs.dynamics_steps("d_")
    variables = [v for v in logs.variables("d_real") if v in logs.variables("d_fake")] or logs.variables(
        "d_real"
    )
    fig, axes = _figure(len(variables), 2, width=5.5, height=3.4)
    for row, var in zip(axes, variables, strict=True):
        edges = sorted(
            {
                (float(a), float(b))
                for s in steps
                for q in ("d_real", "d_fake")
                for a, b in zip(
                    logs.dynamics_bins(s, q, var)["lo"], logs.dynamics_bins(s, q, var)["hi"], strict=True
                )
            }
        )
        grid = np.full((len(edges), len(steps)), np.nan)
        for j, s in enumerate(steps):
            gb = _gap_bins(logs, s, var)
            if gb is None:
                continue
            for a, b, g in zip(*gb, strict=True):
                grid[edges.index((float(a), float(b))), j] = g
        unit = _UNITS.get(var, "")
        im = row[0].imshow(
            grid, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
        )
        row[0].set_yticks(range(len(edges)), [f"{_g(a)}-{_g(b)}" for a, b in edges], fontsize=7)
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
        row[0].set_xticks(ticks, [str(int(steps[k])) for k in ticks], fontsize=7)
        row[0].set_xlabel("validation step")
        row[0].set_ylabel(f"{var} bin [{unit}]")
        row[0].set_title(f"D(real) - D(fake) per {var} bin")
        fig.colorbar(im, ax=row[0])
        s = steps[-1]
        for q, color in (("d_real", "C0"), ("d_fake", "C1")):
            b = logs.dynamics_bins(s, q, var)
            if len(b["lo"]):
                row[1].plot(
                    0.5 * (b["lo"] + b["hi"]), b["value"], "o-", color=color, label=f"{q} (step {int(s)})"
                )
        row[1].set_ylim(0, 1)
        row[1].set_xlabel(f"{var} [{unit}]")
        row[1].set_ylabel("mean sigmoid(D)")
        _legend(row[1], fontsize=7)
    return fig


def _plot_grad_norms(logs: RunLogs) -> Any:
    t = logs.train
    fig, axes = _figure(1, 1, width=9.0)
    ax = axes[0, 0]
    ys = []
    for k, (p, name) in enumerate(PLAYERS.items()):
        x = _col(t, f"{p}_grad_norm")
        if x is None:
            continue
        y = _positive(x)
        ys.append(y)
        ax.plot(t["step"], y, color=f"C{k}", label=f"{name} grad norm", lw=1)
        thr = np.array(
            [
                GRAD_SPIKE_FACTOR * _median_pos(x[max(0, i - GRAD_MEDIAN_WINDOW) : i])
                if i >= GRAD_MIN_HISTORY
                else np.nan
                for i in range(len(x))
            ]
        )
        ax.plot(
            t["step"],
            thr,
            color=f"C{k}",
            ls="--",
            lw=0.8,
            label=f"{name}: {_g(GRAD_SPIKE_FACTOR)}x running median",
        )
    _log_y(ax, *ys)
    ax.set_xlabel("step")
    ax.set_ylabel("L2 norm")
    _legend(ax, fontsize=7)
    return fig


def _plot_layer_norms(logs: RunLogs) -> Any:
    fig, axes = _figure(2, 2, width=5.5, height=3.4)
    for j, (p, name) in enumerate(PLAYERS.items()):
        for i, col in enumerate(("grad_norm", "weight_norm")):
            ax = axes[i, j]
            ys = []
            for layer in logs.layer_names(p):
                s, y = logs.layer_series(p, layer, col)
                y = _positive(y)
                ys.append(y)
                ax.plot(s, y, label=layer, lw=1)
            _log_y(ax, *ys)
            ax.set_title(f"{name}: {col.replace('_', ' ')}")
            ax.set_xlabel("step")
            _legend(ax, fontsize=6, ncol=2)
    return fig


def _plot_update_ratios(logs: RunLogs) -> Any:
    fig, axes = _figure(1, 2, width=5.5, height=3.6)
    for ax, (p, name) in zip(axes[0], PLAYERS.items(), strict=True):
        ys = []
        for layer in logs.layer_names(p):
            s, r = _layer_ratio(logs, p, layer)
            y = _positive(r)
            ys.append(y)
            ax.plot(s, y, label=layer, lw=1)
        ax.axhspan(UPDATE_RATIO_LOW, UPDATE_RATIO_HIGH, color="green", alpha=0.08, label="healthy band")
        ax.axhline(1e-3, color="green", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{name}: update norm / weight norm")
        ax.set_xlabel("step")
        _legend(ax, fontsize=6, ncol=2)
    return fig


def _plot_diversity(logs: RunLogs) -> Any:
    import matplotlib

    qs = [q for q in logs.quantities() if q.startswith("diversity/")]
    fig, axes = _figure(1, len(qs), width=4.5, height=3.4)
    cmap = matplotlib.colormaps["viridis"]
    for ax, q in zip(axes[0], qs, strict=True):
        steps = logs.dynamics_steps(q)
        edges = sorted(
            {
                (float(a), float(b))
                for s in steps
                for a, b in zip(*(logs.dynamics_bins(s, q, "energy")[k] for k in ("lo", "hi")), strict=True)
            }
        )
        grid = np.full((len(edges), len(steps)), np.nan)
        for j, s in enumerate(steps):
            bins = logs.dynamics_bins(s, q, "energy")
            for a, hi, v in zip(bins["lo"], bins["hi"], bins["value"], strict=True):
                grid[edges.index((float(a), float(hi))), j] = v
        for i, (a, b) in enumerate(edges):
            ax.plot(
                steps,
                grid[i],
                color=cmap(i / max(len(edges) - 1, 1)),
                lw=0.8,
                alpha=0.8,
                label=f"{_g(a)}-{_g(b)} GeV",
            )
        s_med, _, med, _ = _diversity_series(logs, q)
        ax.plot(s_med, med, color="black", lw=2, label="median")
        ax.axhline(1.0, color="green", ls=":", lw=0.8)
        ax.axhline(DIVERSITY_COLLAPSED, color="red", ls="--", lw=0.8)
        # log scale: a collapsed generator sits decades below 1, an over-noisy one decades above
        finite = grid[np.isfinite(grid) & (grid > 0)]
        lo = min(float(finite.min()) / 2, 0.05) if finite.size else 0.05
        hi = max(float(finite.max()) * 2, 2.0) if finite.size else 2.0
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.set_title(q.split("/", 1)[1])
        ax.set_xlabel("validation step")
        ax.set_ylabel("spread(generated) / spread(real)")
        _legend(ax, fontsize=6, ncol=2)
    return fig


def _plot_physics(logs: RunLogs) -> Any:
    x = logs.val["physics_score"]
    s = logs.val["step"]
    fig, axes = _figure(1, 1, width=9.0)
    ax = axes[0, 0]
    ax.plot(s, x, "o-")
    ok = np.isfinite(x)
    if ok.any():
        i = int(np.nanargmin(np.where(ok, x, np.inf)))
        ax.plot(
            [s[i]],
            [x[i]],
            marker="*",
            ms=14,
            color="C3",
            ls="none",
            label=f"best {_g(x[i])} (step {int(s[i])})",
        )
    if ok.any() and np.all(x[ok] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("physics_score (lower is better)")
    _legend(ax)
    return fig


_PLOTTERS: dict[str, Callable[[RunLogs], Any]] = {
    "losses": _plot_losses,
    "d_outputs": _plot_d_outputs,
    "d_bins": _plot_d_bins,
    "grad_norms": _plot_grad_norms,
    "layer_norms": _plot_layer_norms,
    "update_ratios": _plot_update_ratios,
    "diversity": _plot_diversity,
    "physics_score": _plot_physics,
}


def plot(logs: RunLogs, out_dir: str | Path) -> dict[str, str]:
    """Write the figures the logs allow as ``out_dir/<name>.png`` and return ``{name: <img> tag}`` (the PNG
    embedded). Names: ``losses``, ``d_outputs``, ``d_bins``, ``grad_norms``, ``layer_norms``,
    ``update_ratios``, ``diversity``, ``physics_score``; the absent ones are listed by
    :func:`absent_panels`."""
    from hepgan.explain.page import save_figure

    out = Path(out_dir)
    skip = absent_panels(logs)
    tags: dict[str, str] = {}
    for name, fn in _PLOTTERS.items():
        if name in skip:
            continue
        tags[name] = save_figure(fn(logs), out / f"{name}.png")
    return tags


# --- summary, page, entry point ---------------------------------------------------------------------------


def _tail_mean(x: np.ndarray | None, k: int = SUSTAIN_POINTS) -> float:
    if x is None:
        return math.nan
    y = x[np.isfinite(x)][-k:]
    return float(y.mean()) if len(y) else math.nan


def summarize(logs: RunLogs) -> dict[str, Any]:
    """Headline numbers of the run's dynamics (JSON-safe; NaN where a log lacks them)."""
    t, v = logs.train, logs.val
    steps = t.get("step", np.zeros(0))
    out: dict[str, Any] = {
        "files": dict(logs.files),
        "checkpoints": len(logs.checkpoints),
        "train_points": len(steps),
        "last_step": int(steps[-1]) if len(steps) else None,
        "d_real_p_recent": _tail_mean(_col(t, "d_real_p")),
        "d_fake_p_recent": _tail_mean(_col(t, "d_fake_p")),
    }
    for p in PLAYERS:
        x = _col(t, f"{p}_grad_norm")
        out[f"{p}_grad_norm_median"] = _median_pos(x) if x is not None else math.nan
        out[f"{p}_grad_norm_max"] = float(np.nanmax(x)) if x is not None else math.nan
        out[f"{p}_layers"] = len(logs.layer_names(p))
    ps = _col(v, "physics_score")
    out["validations"] = len(v.get("step", []))
    if ps is not None:
        i = int(np.nanargmin(np.where(np.isfinite(ps), ps, np.inf)))
        out |= {"physics_score_best": float(ps[i]), "physics_score_best_step": int(v["step"][i])}
        out["physics_score_latest"] = float(ps[np.isfinite(ps)][-1])
    div: dict[str, float] = {}
    for q in logs.quantities():
        if q.startswith("diversity/"):
            _, _, med, _ = _diversity_series(logs, q)
            if len(med):
                div[q.split("/", 1)[1]] = float(med[-1])
    out["diversity_latest_median"] = div
    return _json_safe(out)


def _page_body(
    logs: RunLogs,
    findings: list[Finding],
    tags: dict[str, str],
    absent: dict[str, str],
    summary: dict[str, Any],
) -> str:
    from hepgan.explain.page import table

    esc = html.escape
    parts = [f"<p>Run folder: <code>{esc(str(logs.run_dir))}</code></p>", "<h2>Findings</h2>"]
    warns = [f for f in findings if f.severity == "warning"]
    infos = [f for f in findings if f.severity != "warning"]
    for f in warns:
        parts.append(f'<div class="warn"><b>{esc(f.code)}</b> {esc(_at(f))}: {esc(f.message)}</div>')
    if not warns:
        parts.append(
            '<div class="ok">No warning signs: none of the divergence or collapse patterns is present in the '
            "logs this run has.</div>"
        )
    if infos:
        parts.append(
            "<ul>"
            + "".join(f"<li><b>{esc(f.code)}</b> {esc(_at(f))}: {esc(f.message)}</li>" for f in infos)
            + "</ul>"
        )
    rows = [[k, v] for k, v in summary.items() if not isinstance(v, dict)]
    rows += [
        [f"diversity {k} (latest median)", v] for k, v in summary.get("diversity_latest_median", {}).items()
    ]
    parts += ["<h2>Summary</h2>", table(["quantity", "value"], rows)]
    if absent:
        parts.append("<h2>Absent panels</h2>")
        parts.append(
            "<ul>" + "".join(f"<li>{esc(TITLES[k])}: {esc(why)}</li>" for k, why in absent.items()) + "</ul>"
        )
        if not logs.files.get("dynamics.csv"):
            parts.append(
                "<p>dynamics.csv is absent: the run predates the per-bin discriminator and diversity logging "
                "or ran with <code>logging.dynamics_events=0</code>.</p>"
            )
        if not logs.files.get("layers.csv"):
            parts.append(
                "<p>layers.csv is absent: the run predates per-layer statistics or ran with "
                "<code>logging.layer_stats_every=0</code>.</p>"
            )
    parts.append("<h2>Figures</h2>")
    for name, tag in tags.items():
        parts.append(f"<h3>{esc(TITLES[name])}</h3>\n{tag}\n<p><i>How to read:</i> {esc(CAPTIONS[name])}</p>")
    return "\n".join(parts)


def explain_dynamics(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Load the logs of ``run_dir``, diagnose them and write ``out_dir/dynamics.json`` (findings, summary
    numbers, figure paths, absent panels), ``out_dir/dynamics/<name>.png`` and ``out_dir/dynamics.html``
    (findings first, then the figures with a how-to-read caption each). Returns what ``dynamics.json``
    holds, plus ``json`` and ``page`` (the paths written)."""
    from hepgan.explain.page import write_page
    from hepgan.fileio import write_json

    logs = load_logs(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    findings = diagnose(logs)
    tags = plot(logs, out / "dynamics")
    absent = absent_panels(logs)
    summary = summarize(logs)
    summary |= {
        "warnings": sum(f.severity == "warning" for f in findings),
        "infos": sum(f.severity != "warning" for f in findings),
    }
    result: dict[str, Any] = {
        "run_dir": str(logs.run_dir),
        "findings": [f.to_dict() for f in findings],
        "summary": summary,
        "figures": {k: str(Path("dynamics") / f"{k}.png") for k in tags},
        "absent_panels": absent,
    }
    result = _json_safe(result)
    json_path = write_json(out / "dynamics.json", result, allow_nan=False)
    page = write_page(
        out / "dynamics.html",
        f"Training dynamics: {logs.run_dir.name}",
        _page_body(logs, findings, tags, absent, summary),
    )
    return result | {"json": str(json_path), "page": str(page)}
