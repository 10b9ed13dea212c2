"""hepgan.explain.dynamics on synthetic run folders: a healthy run, runs with one injected pathology each
(mode collapse, discriminator wins, exploding gradients, a frozen layer), an old run with only train.csv
and val.csv, a malformed CSV, and a folder that is not a run."""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from hepgan.explain import dynamics as dyn

N_TRAIN = 60  # logged training points, every 10 steps
LOG_EVERY = 10
VAL_STEPS = [0, 100, 200, 300, 400, 500, 600]
LAYERS = {"g": ["dense", "conv1", "bn1", "conv2"], "d": ["conv1", "conv2", "head_logit"]}
E_EDGES = [10.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0]
THETA_EDGES = [60.0, 80.0, 100.0, 120.0]
OBS = ("sf", "z_mean", "x_var")
ALL_FIGURES = set(dyn.TITLES)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _train_columns(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = N_TRAIN
    step = LOG_EVERY * np.arange(1, n + 1)
    decay = np.exp(-np.arange(n) / 8.0)  # an initial transient, flat afterwards
    cols = {
        "step": step.astype(float),
        "d_real_p": 0.62 + 0.04 * rng.standard_normal(n),
        "d_fake_p": 0.38 + 0.04 * rng.standard_normal(n),
        "d_grad_norm": 30.0 * np.exp(0.3 * rng.standard_normal(n)),
        "g_grad_norm": 20.0 * np.exp(0.3 * rng.standard_normal(n)),
        "d_loss": 3.0 + 2.0 * decay + 0.2 * rng.standard_normal(n),
        "g_loss": 2.5 + 2.0 * decay + 0.2 * rng.standard_normal(n),
        "d_real_bce": 0.5 + 0.05 * rng.standard_normal(n),
        "d_fake_bce": 0.5 + 0.05 * rng.standard_normal(n),
        "g_bce": 1.0 + 0.1 * rng.standard_normal(n),
        "g_energy": 40.0 + 30.0 * decay,
        "d_param_norm": 5.6 + 0.004 * np.arange(n),
        "g_param_norm": 14.0 + 0.01 * np.arange(n),
        "finite": np.ones(n),
        "lr_g": np.full(n, 1e-3),
        "lr_d": np.full(n, 1e-3),
    }
    return cols


def _layer_rows(rng: np.random.Generator, *, frozen: str | None = None) -> list[list[object]]:
    rows: list[list[object]] = []
    for k, step in enumerate(range(20, LOG_EVERY * N_TRAIN + 1, 20)):
        for p, names in LAYERS.items():
            for j, layer in enumerate(names):
                w = (1.0 + j) * (1.0 + 0.01 * k)
                ratio = 1e-3 * np.exp(0.3 * rng.standard_normal())
                if frozen == f"{p}/{layer}":
                    ratio = 1e-8
                g = 0.5 * np.exp(0.3 * rng.standard_normal())
                rows.append([step, p, layer, w, g, ratio * w, ratio])
    return rows


def _dynamics_rows(
    rng: np.random.Generator, *, diversity: list[float] | None = None, bad_bin: int | None = None
) -> list[list[object]]:
    diversity = diversity or [1.0] * len(VAL_STEPS)
    rows: list[list[object]] = []
    for v, step in enumerate(VAL_STEPS):
        for var, edges in (("energy", E_EDGES), ("theta", THETA_EDGES)):
            for b, (lo, hi) in enumerate(itertools.pairwise(edges)):
                real = 0.6 + 0.03 * rng.standard_normal()
                fake = 0.45 + 0.03 * rng.standard_normal()
                if var == "energy" and b == bad_bin and v >= 4:
                    fake = 0.05
                rows.append([step, "d_real", var, lo, hi, real, 80])
                rows.append([step, "d_fake", var, lo, hi, fake, 80])
        for obs in OBS:
            for lo, hi in itertools.pairwise(E_EDGES):
                value = diversity[v] * np.exp(0.08 * rng.standard_normal())
                rows.append([step, f"diversity/{obs}", "energy", lo, hi, value, 80])
    return rows


def write_run(
    root: Path,
    *,
    train: dict[str, np.ndarray] | None = None,
    physics: list[float] | None = None,
    layers: list[list[object]] | None = None,
    dynamics: list[list[object]] | None = None,
) -> Path:
    """A run folder with manifest.json and whichever logs are given (train.csv and val.csv always)."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"config": {}}))
    rng = np.random.default_rng(0)
    cols = train if train is not None else _train_columns(rng)
    names = list(cols)
    _write_csv(
        root / "train.csv",
        names,
        [[repr(float(cols[c][i])) for c in names] for i in range(len(cols["step"]))],
    )
    scores = physics or [6.3, 1.2, 0.9, 0.7, 0.6, 0.52, 0.45]
    _write_csv(
        root / "val.csv",
        ["step", "sf_rel_error", "physics_score"],
        [[s, 0.1, x] for s, x in zip(VAL_STEPS, scores, strict=True)],
    )
    if layers is not None:
        _write_csv(root / "layers.csv", list(dyn.LAYERS_COLUMNS), layers)
    if dynamics is not None:
        _write_csv(root / "dynamics.csv", list(dyn.DYNAMICS_COLUMNS), dynamics)
    return root


def full_run(root: Path, **kw: object) -> Path:
    """A complete healthy run; keyword arguments replace its parts."""
    rng = np.random.default_rng(1)
    parts: dict[str, object] = {
        "layers": _layer_rows(rng),
        "dynamics": _dynamics_rows(rng),
    }
    parts |= kw
    return write_run(root, **parts)  # type: ignore[arg-type]


def codes(findings: list[dyn.Finding], severity: str = "warning") -> set[str]:
    return {f.code for f in findings if f.severity == severity}


def test_healthy_run_has_no_warnings_and_all_figures(tmp_path: Path) -> None:
    run = full_run(tmp_path / "run")
    findings = dyn.diagnose(dyn.load_logs(run))
    assert codes(findings) == set(), dyn.format_findings(findings)
    res = dyn.explain_dynamics(run, tmp_path / "out")
    assert set(res["figures"]) == ALL_FIGURES
    for name in ALL_FIGURES:
        assert (tmp_path / "out" / "dynamics" / f"{name}.png").stat().st_size > 1000
    page = (tmp_path / "out" / "dynamics.html").read_text()
    assert 'class="ok"' in page and 'class="warn"' not in page
    assert page.count("How to read:") == len(ALL_FIGURES)
    data = json.loads((tmp_path / "out" / "dynamics.json").read_text(), parse_constant=pytest.fail)
    assert data["summary"]["warnings"] == 0
    assert data["summary"]["g_layers"] == 4 and data["summary"]["d_layers"] == 3
    assert 0.8 < data["summary"]["diversity_latest_median"]["sf"] < 1.2
    assert dyn.format_findings(findings).startswith("no warning signs")


def test_collapsed_run_warns_with_the_step_it_started(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    div = [1.0, 0.95, 0.9, 0.02, 0.02, 0.02, 0.02]
    run = full_run(tmp_path / "run", dynamics=_dynamics_rows(rng, diversity=div))
    findings = dyn.diagnose(dyn.load_logs(run))
    collapse = [f for f in findings if f.code == "mode_collapse"]
    assert len(collapse) == 1 and collapse[0].severity == "warning"
    assert collapse[0].step == VAL_STEPS[3]
    assert set(collapse[0].details["observables"]) == set(OBS)
    assert collapse[0].details["observables"]["sf"]["median_ratio"] < 0.05
    res = dyn.explain_dynamics(run, tmp_path / "out")
    assert set(res["figures"]) == ALL_FIGURES
    page = (tmp_path / "out" / "dynamics.html").read_text()
    assert 'class="warn"' in page and "mode_collapse" in page
    assert html.escape(collapse[0].message) in page
    assert "WARNING [mode_collapse] step 300" in dyn.format_findings(findings)


def test_falling_diversity_warns_before_collapse(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    div = [1.0, 1.0, 1.0, 0.9, 0.7, 0.5, 0.35]
    findings = dyn.diagnose(
        dyn.load_logs(full_run(tmp_path / "run", dynamics=_dynamics_rows(rng, diversity=div)))
    )
    assert "diversity_falling" in codes(findings) and "mode_collapse" not in codes(findings)
    # a generator noisier than the data calming down towards it (ratio 30 -> 1.2) is not a warning
    calming = [30.0, 30.0, 30.0, 20.0, 9.0, 3.0, 1.2]
    findings = dyn.diagnose(
        dyn.load_logs(full_run(tmp_path / "run2", dynamics=_dynamics_rows(rng, diversity=calming)))
    )
    assert "diversity_falling" not in codes(findings)
    assert "noisier_than_data" not in codes(findings, "info")  # 1.2 at the end: as varied as the data
    noisy = [30.0] * 7
    findings = dyn.diagnose(
        dyn.load_logs(full_run(tmp_path / "run3", dynamics=_dynamics_rows(rng, diversity=noisy)))
    )
    assert "noisier_than_data" in codes(findings, "info") and not codes(findings)


def test_discriminator_wins(tmp_path: Path) -> None:
    cols = _train_columns(np.random.default_rng(4))
    cols["d_real_p"][-10:] = 0.99
    cols["d_fake_p"][-10:] = 0.01
    findings = dyn.diagnose(dyn.load_logs(full_run(tmp_path / "run", train=cols)))
    (wins,) = [f for f in findings if f.code == "d_wins"]
    assert wins.severity == "warning" and wins.step == int(cols["step"][-10])
    assert codes(findings) == {"d_wins"}


def test_discriminator_fooled_then_recovered_is_info(tmp_path: Path) -> None:
    cols = _train_columns(np.random.default_rng(5))
    cols["d_fake_p"][10:20] = 0.97
    findings = dyn.diagnose(dyn.load_logs(full_run(tmp_path / "run", train=cols)))
    assert "d_fooled" in codes(findings, "info") and "d_fooled" not in codes(findings)


def test_exploding_gradients(tmp_path: Path) -> None:
    cols = _train_columns(np.random.default_rng(6))
    cols["d_grad_norm"][40:] *= 1.4 ** np.arange(1, 21)  # x840 over the last 20 points
    run = full_run(tmp_path / "run", train=cols)
    findings = dyn.diagnose(dyn.load_logs(run))
    spike = [f for f in findings if f.code == "grad_spike"]
    assert len(spike) == 1 and spike[0].details["player"] == "d" and spike[0].step > cols["step"][40]
    assert "grad_growth" in codes(findings)
    dyn.explain_dynamics(run, tmp_path / "out")
    page = (tmp_path / "out" / "dynamics.html").read_text()
    assert 'class="warn"' in page and "grad_spike" in page


def test_nonfinite_values(tmp_path: Path) -> None:
    cols = _train_columns(np.random.default_rng(7))
    cols["g_loss"][30] = np.nan
    cols["finite"][30] = 0.0
    findings = dyn.diagnose(dyn.load_logs(full_run(tmp_path / "run", train=cols)))
    (bad,) = [f for f in findings if f.code == "nonfinite"]
    assert bad.step == int(cols["step"][30]) and "g_loss" in bad.details["columns"]


def test_frozen_layer_and_large_updates(tmp_path: Path) -> None:
    rows = _layer_rows(np.random.default_rng(8), frozen="g/conv2")
    for r in rows:
        if r[1] == "d" and r[2] == "head_logit":
            r[6] = 0.5
            r[5] = 0.5 * float(r[3])  # type: ignore[arg-type]
    run = full_run(tmp_path / "run", layers=rows)
    findings = dyn.diagnose(dyn.load_logs(run))
    (frozen,) = [f for f in findings if f.code == "frozen_layer"]
    assert frozen.details == {"player": "g", "layers": {"conv2": pytest.approx(1e-8)}}
    assert frozen.step == 20
    (large,) = [f for f in findings if f.code == "update_too_large"]
    assert set(large.details["layers"]) == {"head_logit"} and large.details["player"] == "d"
    assert codes(findings) == {"frozen_layer", "update_too_large"}
    dyn.explain_dynamics(run, tmp_path / "out")
    assert (tmp_path / "out" / "dynamics" / "update_ratios.png").exists()


def test_schedule_at_zero_is_not_a_frozen_layer(tmp_path: Path) -> None:
    """A learning rate decayed to ~0 makes every update tiny; that is the schedule, not a dead layer."""
    cols = _train_columns(np.random.default_rng(9))
    rows = _layer_rows(np.random.default_rng(9))
    cols["lr_g"] = 1e-3 * np.clip(1 - cols["step"] / 400.0, 0, 1)
    for r in rows:
        if r[1] == "g" and float(r[0]) >= 400:  # type: ignore[arg-type]
            r[6] = 0.0
            r[5] = 0.0
    findings = dyn.diagnose(dyn.load_logs(full_run(tmp_path / "run", train=cols, layers=rows)))
    assert not codes(findings) & {"frozen_layer", "frozen_player"}, dyn.format_findings(findings)


def test_unbounded_weight_growth(tmp_path: Path) -> None:
    rows = _layer_rows(np.random.default_rng(10))
    for r in rows:
        if r[1] == "d" and r[2] == "conv2":
            k = (int(r[0]) - 20) // 20  # type: ignore[call-overload]
            r[3] = 1.0 * 1.12**k
            r[5] = float(r[6]) * float(r[3])  # type: ignore[arg-type]
    findings = dyn.diagnose(dyn.load_logs(full_run(tmp_path / "run", layers=rows)))
    (growth,) = [f for f in findings if f.code == "weight_growth"]
    assert set(growth.details["layers"]) == {"conv2"} and growth.details["player"] == "d"


def test_bin_asymmetry_names_the_bin(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    findings = dyn.diagnose(
        dyn.load_logs(full_run(tmp_path / "run", dynamics=_dynamics_rows(rng, bad_bin=5)))
    )
    (asym,) = [f for f in findings if f.code == "bin_asymmetry"]
    assert asym.details["variable"] == "energy" and asym.step == VAL_STEPS[4]
    assert [b[:2] for b in asym.details["bins"]] == [[400.0, 500.0]]
    assert "400-500 GeV" in asym.message


def test_g_flat_while_d_falls(tmp_path: Path) -> None:
    cols = _train_columns(np.random.default_rng(12))
    cols["d_loss"][30:] = np.linspace(3.0, 1.0, 30)
    cols["g_loss"][30:] = 2.5
    findings = dyn.diagnose(dyn.load_logs(full_run(tmp_path / "run", train=cols)))
    assert "g_flat_d_falling" in codes(findings)


def test_physics_stall_is_info(tmp_path: Path) -> None:
    run = full_run(tmp_path / "run", physics=[6.3, 1.0, 0.6, 0.5, 0.62, 0.55, 0.58])
    findings = dyn.diagnose(dyn.load_logs(run))
    (stall,) = [f for f in findings if f.code == "physics_stall"]
    assert stall.severity == "info" and stall.details["best_step"] == 300 and stall.step == 400
    assert codes(findings) == set()


def test_old_run_without_new_logs(tmp_path: Path) -> None:
    """Only train.csv and val.csv, and a train.csv without D's outputs: the page is still written, with
    info findings naming what is absent."""
    cols = _train_columns(np.random.default_rng(13))
    del cols["d_real_p"], cols["d_fake_p"]
    run = write_run(tmp_path / "run", train=cols)
    (run / "checkpoints" / "600").mkdir(parents=True)
    logs = dyn.load_logs(run)
    assert logs.layers == {} and logs.dynamics == {} and logs.checkpoints == [600]
    findings = dyn.diagnose(logs)
    assert codes(findings) == set()
    missing = {f.details["file"] for f in findings if f.code == "missing_log"}
    assert missing == {"layers.csv", "dynamics.csv"}
    (dyn_info,) = [f for f in findings if f.code == "missing_log" and f.details["file"] == "dynamics.csv"]
    assert "predates" in dyn_info.message and "1 checkpoint" in dyn_info.message
    assert any(f.code == "missing_columns" and "d_real_p" in f.details["columns"] for f in findings)
    res = dyn.explain_dynamics(run, tmp_path / "out")
    assert set(res["figures"]) == {"losses", "grad_norms", "physics_score"}
    assert set(res["absent_panels"]) == ALL_FIGURES - set(res["figures"])
    for name in res["figures"]:
        assert (tmp_path / "out" / "dynamics" / f"{name}.png").exists()
    page = (tmp_path / "out" / "dynamics.html").read_text()
    assert 'class="ok"' in page and "Absent panels" in page and "dynamics.csv is absent" in page
    assert "layers.csv is absent" in page and "lacks the columns d_real_p and d_fake_p" in page


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    run = full_run(tmp_path / "run")
    with open(run / "train.csv", "a") as f:
        f.write("610,0.5")  # a row being written right now
    logs = dyn.load_logs(run)
    assert len(logs.train["step"]) == N_TRAIN


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    run = full_run(tmp_path / "run")
    lines = (run / "train.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 2)[0]  # line 4 of the file loses two fields
    (run / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.csv, line 4: .*fields"):
        dyn.load_logs(run)
    run2 = full_run(tmp_path / "run2")
    text = (run2 / "layers.csv").read_text().splitlines()
    fields = text[5].split(",")
    text[5] = ",".join([*fields[:3], "abc", *fields[4:]])
    (run2 / "layers.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"layers\.csv, line 6: column 'weight_norm': 'abc' is not a number"):
        dyn.load_logs(run2)
    (run2 / "layers.csv").write_text("step,player,layer\n20,g,dense\n")
    with pytest.raises(ValueError, match=r"layers\.csv, line 1: the header lacks the columns"):
        dyn.load_logs(run2)


def test_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match=r"manifest\.json") as e:
        dyn.load_logs(tmp_path / "x")
    assert str(tmp_path / "x") in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        dyn.explain_dynamics(tmp_path / "missing", tmp_path / "out")
