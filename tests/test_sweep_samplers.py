"""Optuna samplers and pruners by name, multi-objective search with its Pareto front, learning curves
recorded by driver-batch ``tell``, optimizer presets chosen by a search, and the shipped search spaces."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState
from sweep_helpers import write_conf

from hepgan.cli.sweep import main
from hepgan.sweep import space as space_mod
from hepgan.sweep.results import collect, pareto_rows, select_best
from hepgan.sweep.runner import RunSettings, compose_config, run_plan_entries
from hepgan.sweep.space import PRUNERS, SAMPLERS, load_space, parse_space
from hepgan.sweep.study import JOURNAL_NAME, ask_plan, load_study, open_storage, run_worker, tell_results

PARAMS = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "k": {"type": "int", "low": 1, "high": 4}}
HPO = Path(__file__).resolve().parents[1] / "experiments" / "hpo"


def _space(**doc: Any) -> Any:
    return parse_space({"params": PARAMS, **doc}, source="'s.yaml'")


# ---------------------------------------------------------------------------------------------------------
# samplers and pruners by name
# ---------------------------------------------------------------------------------------------------------

NEEDS = {"cmaes": "cmaes", "gp": "torch"}


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "gp"])
def test_every_sampler_name_builds_its_optuna_class_and_samples(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    params = {**PARAMS, "x": {**PARAMS["x"], "step": 0.25}} if name == "bruteforce" else PARAMS
    sp = parse_space({"params": params, "sampler": {"name": name, "seed": 1}})
    sampler = sp.make_sampler(0)
    assert type(sampler).__name__ == SAMPLERS[name]
    study = optuna.create_study(sampler=sampler)
    for _ in range(4):
        t = study.ask(dict(sp.distributions))
        study.tell(t, (t.params["x"] - 0.3) ** 2 + t.params["k"])
    assert len(study.trials) == 4 and all(0.0 <= t.params["x"] <= 1.0 for t in study.trials)


def test_constructor_arguments_pass_through_and_the_defaults_stay() -> None:
    pytest.importorskip("cmaes")
    cma = _space(sampler={"name": "cmaes", "seed": 0, "n_startup_trials": 5, "popsize": 6}).make_sampler()
    assert (cma._n_startup_trials, cma._popsize) == (5, 6)
    tpe = _space(sampler={"name": "tpe", "seed": 7}).make_sampler(3)
    assert tpe._constant_liar is True  # batches are asked before any is told
    assert _space().make_sampler()._constant_liar is True  # tpe is the default
    # the seed is offset by the trials so far (successive processes), or replaced by a worker's own
    draw = [
        _space(sampler={"name": "random", "seed": 7}).make_sampler(off)._rng.rng.random() for off in (3, 3)
    ]
    other = _space(sampler={"name": "random", "seed": 10}).make_sampler(0)._rng.rng.random()
    assert draw[0] == draw[1] == other
    fixed = _space(sampler={"name": "random", "seed": 7}).make_sampler(99, seed=10)._rng.rng.random()
    assert fixed == other


@pytest.mark.parametrize(
    ("spec", "cls", "attrs"),
    [
        ({}, "MedianPruner", {"_n_startup_trials": 5, "_n_warmup_steps": 3}),  # the default, as before
        ({"name": "median", "n_warmup_steps": 500}, "MedianPruner", {"_n_warmup_steps": 500}),
        ({"name": "percentile", "percentile": 25.0}, "PercentilePruner", {"_percentile": 25.0}),
        ({"name": "successive_halving", "min_resource": 200}, "SuccessiveHalvingPruner",
         {"_min_resource": 200}),
        ({"name": "asha", "reduction_factor": 3}, "SuccessiveHalvingPruner", {"_reduction_factor": 3}),
        ({"name": "hyperband", "min_resource": 100, "max_resource": 3000}, "HyperbandPruner",
         {"_min_resource": 100}),
        ({"name": "threshold", "upper": 2.0}, "ThresholdPruner", {"_upper": 2.0}),
        ({"name": "none"}, "NopPruner", {}),
        ({"name": "patient", "patience": 2, "wrapped": {"name": "percentile", "percentile": 50}},
         "PatientPruner", {"_patience": 2}),
    ],
)  # fmt: skip
def test_every_pruner_name_builds_its_optuna_class(spec: dict, cls: str, attrs: dict) -> None:
    pruner = _space(pruner=spec).make_pruner()
    assert type(pruner).__name__ == cls
    for k, v in attrs.items():
        assert getattr(pruner, k) == v
    if cls == "PatientPruner":
        assert type(pruner._wrapped_pruner).__name__ == "PercentilePruner"
    assert set(PRUNERS.values()) >= {cls}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"sampler": {"name": "tpee"}}, r"sampler name 'tpee' is not one of tpe, cmaes, random, qmc, gp"),
        ({"pruner": {"name": "medain"}}, r"pruner name 'medain' is not one of median, percentile"),
        # a typo in an argument: the constructor's accepted arguments are listed
        ({"sampler": {"name": "cmaes", "n_startup": 5}}, r"takes no argument 'n_startup'.*n_startup_trials"),
        ({"sampler": {"name": "tpe", "startup_trials": 5}}, r"TPESampler\) takes no.*constant_liar"),
        ({"pruner": {"name": "median", "warmup": 5}}, r"MedianPruner\) takes no .*'warmup'.*n_warmup_steps"),
        # arguments that take Python objects cannot come from a file
        ({"sampler": {"name": "tpe", "gamma": 3}}, r"takes no argument 'gamma'"),
        ({"pruner": {"name": "percentile"}}, r"needs the argument\(s\) percentile"),
        ({"pruner": {"name": "patient", "patience": 1, "wrapped": {"name": "x"}}}, r"pruner name 'x'"),
        ({"sampler": {"name": "qmc", "qmc_type": "nope"}}, r"QMCSampler\) rejects its arguments"),
        ({"sampler": {"name": "bruteforce"}}, r"needs a 'step'; params x have none"),
    ],
)  # fmt: skip
def test_bad_sampler_or_pruner_is_a_clear_error(doc: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        sp = _space(**doc)
        sp.make_sampler()
        sp.make_pruner()
    assert "search space 's.yaml'" in str(info.value)


def test_gp_without_torch_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        space_mod.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    sp = _space(sampler={"name": "gp", "seed": 0, "n_startup_trials": 3})  # the file itself is fine
    with pytest.raises(
        ValueError, match=r"'gp' \(optuna.samplers.GPSampler\) needs .*'torch'.*pip install torch"
    ):
        sp.make_sampler()


def test_gp_sampler_with_torch() -> None:
    pytest.importorskip("torch")
    sampler = _space(sampler={"name": "gp", "seed": 0, "n_startup_trials": 2}).make_sampler()
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: (t.suggest_float("x", 0.0, 1.0) - 0.3) ** 2 + t.suggest_int("k", 1, 4), n_trials=4
    )
    assert type(sampler).__name__ == "GPSampler" and len(study.trials) == 4


# ---------------------------------------------------------------------------------------------------------
# multi-objective
# ---------------------------------------------------------------------------------------------------------

MULTI = {"objectives": {"physics_score": "minimize", "showers_per_s": "maximize"}}


def test_multi_objective_space_form_and_its_checks() -> None:
    sp = _space(**MULTI, sampler={"name": "nsga2", "population_size": 4})
    assert (sp.objectives, sp.directions, sp.multi_objective) == (
        ["physics_score", "showers_per_s"],
        ["minimize", "maximize"],
        True,
    )
    assert (sp.objective, sp.direction) == ("physics_score", "minimize")  # the first, for single-metric code
    assert type(sp.make_pruner()).__name__ == "NopPruner"
    study = load_study(sp, optuna.storages.InMemoryStorage())
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    # the single form still works
    one = _space(objective="showers_per_s", direction="maximize")
    assert (one.objectives, one.directions, one.multi_objective) == (["showers_per_s"], ["maximize"], False)
    for doc, message in [
        ({**MULTI, "pruner": {"name": "median"}}, "cannot prune multi-objective"),
        ({**MULTI, "sampler": {"name": "cmaes"}}, "searches one objective only"),
        ({**MULTI, "objective": "x"}, "not both"),
        ({"objectives": {"a": "down"}}, r"objectives.a must be minimize or maximize"),
        ({"objectives": []}, "non-empty mapping"),
    ]:
        with pytest.raises(ValueError, match=message):
            _space(**doc)


def _fake_fit(cfg: Any, report: Any = None) -> dict[str, float]:
    """physics_score falls with the learning rate's distance to 1e-2; throughput rises with the batch.
    Writes val.csv (3 validations) and fit_result.json's timing as hepgan.train.fit does; the final
    metrics leave out showers_per_s (as fit's do). A batch of 96 "forgets" its throughput."""
    rd = Path(str(cfg.out))
    rd.mkdir(parents=True, exist_ok=True)
    lr, batch = float(cfg.optim.lr_g), int(cfg.train.batch_size)
    final = abs(math.log10(lr) + 2.0) + 0.5 * batch / 256
    with (rd / "val.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "physics_score", "sf_rel_error"])
        for step in (0, 10, 20):
            value = final + 1.0 / (step + 1)
            w.writerow([step, value, 0.1])
            if report is not None:
                report(step, {"physics_score": value})
    if batch != 96:
        (rd / "fit_result.json").write_text(json.dumps({"timing": {"showers_per_s": 10.0 * batch}}))
    return {"physics_score": final + 1.0 / 21, "sf_rel_error": 0.1}


SPACE2 = """\
study: multi
objectives:
  physics_score: minimize
  showers_per_s: maximize
params:
  optim.lr_g: {type: log, low: 1.0e-4, high: 1.0e-1}
  train.batch_size: {type: categorical, choices: [32, 64, 96, 128, 256]}
enqueue:
  - {optim.lr_g: 1.0e-2, train.batch_size: 32}
  - {optim.lr_g: 1.0e-2, train.batch_size: 96}
sampler: {name: random, seed: 2}
"""


def test_multi_objective_driver_batch_tell_collect_best(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    space_path = tmp_path / "space.yaml"
    space_path.write_text(SPACE2)
    entries = ask_plan(space_path, tmp_path / "st", 8, tmp_path / "r1.txt")
    run_plan_entries(
        tmp_path / "r1.txt", range(len(entries)), RunSettings(config_dir=str(conf), train_fn=_fake_fit)
    )
    lines: list[str] = []
    counts = tell_results(tmp_path / "st", [tmp_path / "r1"], log=lines.append)
    assert counts["COMPLETE"] == 7 and counts["FAIL"] == 1
    study = load_study(load_space(space_path), open_storage(tmp_path / "st" / JOURNAL_NAME))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.params["train.batch_size"] for t in failed] == [96]  # no throughput: failed with the reason
    assert "'showers_per_s' missing" in failed[0].user_attrs["fail_reason"]
    assert len(lines) == 1 and f"trial {failed[0].number}: FAIL" in lines[0]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for t in done:
        assert t.values[1] == 10.0 * t.params["train.batch_size"]  # from fit_result.json's timing
        assert t.intermediate_values == {}  # Optuna keeps none for several objectives

    # the Pareto front: from the study's best_trials, and the same from the rows alone
    out = tmp_path / "rep" / "trials"
    with_study = collect(
        [tmp_path / "r1"], out, objectives=["physics_score", "showers_per_s"],
        directions=["minimize", "maximize"], study=study,
    )  # fmt: skip
    with (out.with_suffix(".csv")).open() as f:
        rows = list(csv.DictReader(f))
    marked = {Path(r["run"]).name for r in rows if r["pareto"] == "yes"}
    by_plan = {int(t.user_attrs["plan_index"]) for t in study.best_trials}
    assert marked == {str(i) for i in by_plan} and with_study["pareto"] == len(by_plan) >= 1
    assert [r["pareto"] for r in rows[: len(marked)]] == ["yes"] * len(marked)  # listed first
    assert Path(with_study["pareto_plot"]).stat().st_size > 1000
    with Path(with_study["pareto_csv"]).open() as f:
        assert {Path(r["run"]).name for r in csv.DictReader(f)} == marked
    assert (
        main(
            ["collect", str(tmp_path / "r1"), "-o", str(tmp_path / "rep2" / "t"), "--space", str(space_path)]
        )
        == 0
    )
    with (tmp_path / "rep2" / "t.csv").open() as f:
        assert {Path(r["run"]).name for r in csv.DictReader(f) if r["pareto"] == "yes"} == marked

    # best: the lowest physics_score on the front, said so in the report
    report = select_best([tmp_path / "r1"], objectives=["physics_score", "showers_per_s"],
                         directions=["minimize", "maximize"])  # fmt: skip
    front = [t for t in study.best_trials]
    want = min(front, key=lambda t: t.values[0])
    assert Path(report["best"]["run"]).name == str(want.user_attrs["plan_index"])
    assert "lowest physics_score among" in report["rule"] and len(report["pareto"]) == len(front)
    assert main(["best", str(tmp_path / "r1"), "--study-dir", str(tmp_path / "st")]) == 0


def test_pareto_filter_respects_directions() -> None:
    def row(a: float, b: float, status: str = "ok") -> dict:
        return {"status": status, "m:a": a, "m:b": b}

    rows = [row(1, 1), row(2, 3), row(3, 2), row(2, 2), row(0.5, 0.5), row(1, 1), row(0, 9, "failed")]
    assert pareto_rows(rows, ["a", "b"], ["minimize", "minimize"]) == [4]
    # maximising b: (0.5, 0.5) best in a, (2, 3) best in b, (1, 1) (twice) between them; (2, 2) and (3, 2)
    # lose to (2, 3)
    assert pareto_rows(rows, ["a", "b"], ["minimize", "maximize"]) == [0, 1, 4, 5]
    assert pareto_rows(rows, ["a", "b"], ["maximize", "maximize"]) == [1, 2]
    assert pareto_rows([row(1, 1), row(1, 1)], ["a", "b"], ["minimize", "minimize"]) == [0, 1]  # ties kept


def test_multi_objective_worker_never_prunes(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    sp = parse_space({**yaml.safe_load(SPACE2), "enqueue": None}, source="'m.yaml'")
    seen: list[Any] = []

    def train(cfg: Any, report: Any = None) -> dict:
        seen.append(report)
        return _fake_fit(cfg, report)

    storage = open_storage(tmp_path / "m.journal")
    results = run_worker(sp, storage, 3, tmp_path / "t", RunSettings(config_dir=str(conf), train_fn=train))
    assert seen == [None, None, None]  # nothing to report to: Optuna does not prune several objectives
    states = [t.state for t in load_study(sp, storage).trials]
    assert len(results) == 3 and all(
        s == (TrialState.FAIL if r["overrides"][-1].endswith("=96") else TrialState.COMPLETE)
        for s, r in zip(states, results, strict=True)
    )


# ---------------------------------------------------------------------------------------------------------
# learning curves in driver-batch mode
# ---------------------------------------------------------------------------------------------------------


def test_tell_records_the_learning_curve_from_val_csv(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    space_path = tmp_path / "space.yaml"
    space_path.write_text(
        "study: curves\nparams:\n  optim.lr_g: {type: log, low: 1.0e-4, high: 1.0e-1}\n"
        "  train.batch_size: {type: categorical, choices: [32, 64]}\nsampler: {name: random, seed: 0}\n"
    )
    ask_plan(space_path, tmp_path / "st", 3, tmp_path / "r.txt")

    def train(cfg: Any) -> dict:
        if str(cfg.out).endswith("/2"):
            raise FloatingPointError("loss became NaN")
        return _fake_fit(cfg)

    run_plan_entries(tmp_path / "r.txt", range(3), RunSettings(config_dir=str(conf), train_fn=train))
    assert tell_results(tmp_path / "st", [tmp_path / "r"])["COMPLETE"] == 2
    assert tell_results(tmp_path / "st", [tmp_path / "r"])["already"] == 3  # idempotent
    study = optuna.load_study(study_name="curves", storage=open_storage(tmp_path / "st" / JOURNAL_NAME))
    for t in study.trials:
        run_dir = tmp_path / "r" / str(t.user_attrs["plan_index"])
        if t.state != TrialState.COMPLETE:
            assert t.intermediate_values == {}  # the failed run wrote no val.csv
            continue
        with (run_dir / "val.csv").open() as f:
            want = {int(r["step"]): float(r["physics_score"]) for r in csv.DictReader(f)}
        assert t.intermediate_values == want and sorted(want) == [0, 10, 20]


# ---------------------------------------------------------------------------------------------------------
# optimizer presets
# ---------------------------------------------------------------------------------------------------------


def test_a_sampled_optimizer_applies_its_preset_and_sampled_rates_still_win() -> None:
    sp = parse_space(
        {
            "params": {
                "optim.name": {"type": "categorical", "choices": ["rmsprop", "adam"]},
                "optim.lr_d": {"type": "log", "low": 1e-5, "high": 1e-2},
            }
        }
    )
    assert sp.overrides({"optim.name": "adam", "optim.lr_d": 1e-3}) == ["optim=adam", "optim.lr_d=0.001"]
    # a value that is not a packaged preset stays a value override (and fails where it is checked)
    assert sp.overrides({"optim.name": "sgd"}) == ["optim.name=sgd"]
    settings = RunSettings()  # the packaged config, hepgan.conf
    cfg = compose_config(["optim=adam"], settings)
    assert (cfg.optim.name, cfg.optim.lr_g, cfg.optim.lr_d) == ("adam", 2e-4, 2e-4)
    cfg = compose_config(
        [*sp.overrides({"optim.name": "adam", "optim.lr_d": 1e-3}), "optim.lr_g=1e-3"], settings
    )
    assert (cfg.optim.name, cfg.optim.lr_g, cfg.optim.lr_d) == ("adam", 1e-3, 1e-3)
    cfg = compose_config(["optim.name=adam"], settings)  # what a search used to run: RMSprop's rates
    assert (cfg.optim.name, cfg.optim.lr_g) == ("adam", 1e-3)
    # the group named directly, on top of an experiment that pins its own optimizer
    cfg = compose_config(["experiment=paper_fixed25", "optim=adam"], settings)
    assert (cfg.optim.name, cfg.optim.lr_g, cfg.train.batch_size) == ("adam", 2e-4, 128)


# ---------------------------------------------------------------------------------------------------------
# the shipped search spaces
# ---------------------------------------------------------------------------------------------------------

SPACES = sorted(HPO.rglob("*space*.yaml"))


def test_the_paper_spaces_are_shipped() -> None:
    names = {p.name for p in SPACES}
    assert {
        "paper_fixed25_space.yaml",
        "paper_angle51_space.yaml",
        "paper_fixed25_pareto_space.yaml",
    } <= names
    assert any(load_space(p).multi_objective for p in SPACES)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_search_space_composes_with_the_packaged_config(path: Path) -> None:
    sp = load_space(path)
    header = path.read_text().split("\n\nstudy:")[0]
    assert "hepgan-sweep" in header  # the command that runs it
    sp.make_pruner()
    study = optuna.create_study(directions=sp.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    points = [study.ask(dict(sp.distributions)).params, *sp.enqueue]
    for point in points:
        cfg = compose_config(sp.overrides(point), RunSettings())
        for key, value in point.items():
            if key == "scaling":  # the group's files set the rule they are named after
                assert cfg.scaling.rule == value
            elif "." not in key:  # another group named directly: its preset's name
                assert OmegaConf.select(cfg, f"{key}.name") == value
            else:
                got = OmegaConf.select(cfg, key)
                assert got == (pytest.approx(value) if isinstance(value, float) else value), key
