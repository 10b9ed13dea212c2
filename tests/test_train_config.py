"""The configuration has one source of truth per setting: the schemas hold every default, the YAML
group files only what differs from them."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from hepgan.train.config import GROUPS, Config, check_overrides, compose, to_config

# @package _global_ overlays: they pin whole recipes (the papers' update, a test run) on purpose, so a
# later change of a default cannot leak into them; they are not options of a schema group.
OVERLAYS = ("experiment", "debug")


def _group_files() -> list[tuple[str, str, Any]]:
    conf = resources.files("hepgan.conf")
    files = []
    for group in GROUPS:
        folder = conf.joinpath(group)
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir(), key=lambda f: f.name):
            if f.name.endswith(".yaml"):
                files.append((group, f.name, f))
    return files


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of a plain nested dict; lists and empty dicts are values."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def test_every_schema_group_has_its_files_checked():
    groups = {g for g, _, _ in _group_files()}
    assert {"model", "data", "optim", "parallel", "scaling"} <= groups
    dirs = {p.name for p in resources.files("hepgan.conf").iterdir() if p.is_dir()}
    assert dirs - groups - {"hydra", "__pycache__"} == set(OVERLAYS)


def _restated(group: str, values: Any) -> list[str]:
    """The leaves of ``values`` (a group file's mapping) equal to the schema's default for that key."""
    defaults = _leaves(OmegaConf.to_container(OmegaConf.structured(GROUPS[group])))
    # keys outside the schema's leaves (below a free-form mapping such as data.simulator) have no default
    return [f"{k}: {v!r}" for k, v in _leaves(values).items() if k in defaults and defaults[k] == v]


@pytest.mark.parametrize(("group", "name", "path"), _group_files(), ids=lambda v: getattr(v, "name", v))
def test_group_files_do_not_restate_schema_defaults(group, name, path):
    restated = _restated(group, OmegaConf.to_container(OmegaConf.load(path)))
    assert not restated, (
        f"hepgan/conf/{group}/{name} restates the schema's defaults ({', '.join(restated)}): "
        "defaults live in the schema; a group file holds only what differs from it"
    )


def test_the_guard_sees_a_restated_default():
    values = {"name": "adam", "lr_g": 2e-4, "rmsprop": {"eps": 1e-7}, "adam": {"b1": 0.9}}
    assert _restated("optim", values) == ["rmsprop.eps: 1e-07"]
    assert _restated("train", {"batch_size": 16, "epochs": 30}) == ["batch_size: 16"]


def test_defaults_are_the_demo():
    # hepgan-train without arguments is the demo: the schema's defaults are its values
    conf = to_config(compose([]))
    assert (conf.train.batch_size, conf.train.epochs, conf.train.aux_loss_scale) == (16, 3, 0.2)
    assert (conf.model.size, conf.data.n_reference) == ("small", 512)  # the two group files' differences
    assert (conf.optim.name, conf.scaling.rule) == ("rmsprop", "none")
    schema = Config()
    for section in ("train", "logging"):  # no group files: exactly the schema
        assert dataclasses.asdict(getattr(conf, section)) == dataclasses.asdict(getattr(schema, section))


@pytest.mark.parametrize(
    ("overrides", "name", "hyper", "rule"),
    [
        (["optim=adam"], "adam", {"b1": 0.5, "b2": 0.999, "eps": 1e-8}, ("none", 128, 0, "constant")),
        (["optim.name=adam"], "adam", {"b1": 0.5, "b2": 0.999, "eps": 1e-8}, ("none", 128, 0, "constant")),
        (
            ["optim=lamb", "scaling=sqrt", "scaling.warmup_steps=500", "scaling.decay=cosine"],
            "lamb",
            {"b1": 0.9, "b2": 0.999, "eps": 1e-6, "weight_decay": 0.0},
            ("sqrt", 128, 500, "cosine"),
        ),
        (
            ["optim=lars", "scaling=linear", "scaling.decay=cosine"],
            "lars",
            {"momentum": 0.9, "trust_coefficient": 0.001, "weight_decay": 0.0},
            ("linear", 128, 500, "cosine"),
        ),
        (["experiment=cpu_fixed25"], "rmsprop", {"rho": 0.9, "eps": 1e-7}, ("none", 128, 0, "cosine")),
    ],
)
def test_optimizer_and_scaling_presets(overrides, name, hyper, rule):
    from hepgan.train.scaling import build_optimizers

    conf = to_config(compose(overrides))
    opt = build_optimizers(conf.optim, conf.scaling, 128, {"g": 10, "d": 10})
    assert (opt.optimizer, opt.hyperparameters) == (name, hyper)
    r = opt.rules["g"]
    assert (r.rule, r.ref_batch, r.warmup_steps, r.decay) == rule


@pytest.mark.parametrize(
    "override",
    ["optim.scaling=sqrt", "optim.ref_batch=64", "optim.warmup_steps=10", "optim.decay=cosine",
     "scaling.optimizer=lars", "optim.rho=0.9", "optim.b1=0.5"],
)  # fmt: skip
def test_scaling_is_one_group(override):
    # learning-rate scaling is the scaling group's alone; the optimizers' settings live in their sections
    with pytest.raises(ValueError, match="unknown config key"):
        compose([override])


SPACES = sorted((Path(__file__).resolve().parents[1] / "experiments" / "hpo").rglob("*space.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_search_spaces_name_schema_keys(path):
    # a renamed key (optim.decay -> scaling.decay) must not leave a search space behind
    from hepgan.sweep.space import format_value, load_space

    space = load_space(path)
    check_overrides(space.fixed)
    for key, dist in space.distributions.items():
        for choice in getattr(dist, "choices", None) or [None]:
            check_overrides([f"{key}={format_value(choice)}"])
    for point in space.enqueue:
        check_overrides(space.overrides(point))


def test_manifests_of_the_earlier_layout_upgrade_to_the_same_run():
    """A manifest written before optim and scaling were separated (the recipe run committed under
    experiments/) reads into today's schema with the same optimizer and learning-rate schedule."""
    import json
    from pathlib import Path

    from hepgan.train.config import to_config, to_dict, upgrade

    path = Path(__file__).resolve().parents[1] / "experiments" / "recipe" / "run" / "manifest.json"
    old = json.loads(path.read_text())["config"]
    assert "decay" in old["optim"] and "optimizer" in old["scaling"]  # the earlier layout
    conf = to_config(upgrade(old))
    assert (conf.optim.name, conf.optim.lr_g, conf.optim.rmsprop.rho, conf.optim.rmsprop.eps) == (
        "rmsprop",
        old["optim"]["lr_g"],
        old["optim"]["rho"],
        old["optim"]["eps"],
    )
    assert (conf.scaling.rule, conf.scaling.ref_batch, conf.scaling.decay) == ("none", 128, "cosine")
    assert conf.model.size == old["model"]["size"] and conf.train.batch_size == old["train"]["batch_size"]
    # made before the hash dropout: its masks were Threefry's
    assert "dropout_rng" not in old["model"] and conf.model.dropout_rng == "threefry"
    # the large-batch optimizer moved from scaling to optim
    lamb = {**old, "scaling": {**old["scaling"], "rule": "sqrt", "optimizer": "lamb", "weight_decay": 0.01}}
    conf = to_config(upgrade(lamb))
    assert (conf.optim.name, conf.optim.lamb.weight_decay, conf.scaling.rule) == ("lamb", 0.01, "sqrt")
    # today's layout passes unchanged
    today = to_dict(conf)
    assert upgrade(today) == today


def test_resuming_a_folder_made_before_the_hash_dropout_names_the_setting(tmp_path):
    """A run folder whose manifest predates ``model.dropout_rng`` resumes only with the masks it was
    trained with: today's default is refused naming the field, ``model.dropout_rng=threefry`` accepted."""
    import json
    from pathlib import Path

    from hepgan.train.loop import _check_same_run

    path = Path(__file__).resolve().parents[1] / "experiments" / "recipe" / "run" / "manifest.json"
    old = json.loads(path.read_text())["config"]
    (tmp_path / "manifest.json").write_text(json.dumps({"config": old}))
    new = {**old, "model": {**old["model"], "dropout_rng": "hash"}}  # today's default, all else equal
    with pytest.raises(ValueError, match=r"model\.dropout_rng: folder 'threefry', config 'hash'"):
        _check_same_run(tmp_path, new)
    _check_same_run(tmp_path, {**new, "model": {**new["model"], "dropout_rng": "threefry"}})
