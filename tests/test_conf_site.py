"""The user and site config layers (``./conf``, ``$HEPGAN_CONF``) on Hydra's search path, and hepgan-train
behaving as a Hydra application: shell completion, ``--info``, ``--help``, group choices checked at once.

The layers are found from the working directory and the environment of the moment, so every test sets
both (``monkeypatch``; the subprocesses get their own ``cwd`` and ``env``)."""

from __future__ import annotations

import importlib.resources
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra_plugins.hepgan_searchpath import layer_dirs

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
GLOBAL = "# @package _global_\n"


def write(path: Path, text: str = GLOBAL) -> Path:
    """Write a config file (default: an empty global-package one), creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def packaged(name: str) -> Path:
    """The packaged config file ``name`` (``"model/tiny"``) as the error message names it."""
    return Path(str(importlib.resources.files("hepgan.conf").joinpath(f"{name}.yaml")))


def train(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``hepgan-train`` in ``cwd`` with this environment (less ``HEPGAN_CONF``) plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k != "HEPGAN_CONF"}
    return subprocess.run(
        [str(BIN / "hepgan-train"), *args], cwd=cwd, env={**base, "HYDRA_FULL_ERROR": "0", **(env or {})},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory without ``conf/`` and without ``HEPGAN_CONF``."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("HEPGAN_CONF", raising=False)
    return work


# ---------------------------------------------------------------------------------------------------------
# Which folders, in which order
# ---------------------------------------------------------------------------------------------------------


def test_layer_dirs_cwd_first_then_env_in_order(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "site").mkdir()
    (tmp_path / "mine").mkdir()
    env = {"HEPGAN_CONF": os.pathsep.join([str(tmp_path / "site"), "", "mine", str(tmp_path / "conf")])}
    assert layer_dirs(tmp_path, env) == [
        ("./conf", tmp_path.resolve() / "conf"),
        ("HEPGAN_CONF", tmp_path.resolve() / "site"),
        ("HEPGAN_CONF", tmp_path.resolve() / "mine"),  # relative to the working directory
    ]  # ./conf named again in HEPGAN_CONF counts once
    assert layer_dirs(tmp_path / "site", {}) == []  # no ./conf, no HEPGAN_CONF: the packaged configs alone


def test_hepgan_conf_naming_no_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"HEPGAN_CONF names 'nowhere', which is not a folder"):
        layer_dirs(tmp_path, {"HEPGAN_CONF": "nowhere"})


# ---------------------------------------------------------------------------------------------------------
# compose() sees the layers
# ---------------------------------------------------------------------------------------------------------


def test_compose_adds_options_from_cwd_and_env_layers(here: Path, tmp_path: Path, monkeypatch) -> None:
    from hepgan.train.config import compose

    write(here / "conf" / "site" / "mine.yaml", GLOBAL + "data:\n  cache_dir: /scratch/cache\n")
    write(  # a new model option that starts from a packaged one
        here / "conf" / "model" / "fixed25_small_nodrop.yaml",
        "defaults:\n  - fixed25_small\n  - _self_\n\ndropout: 0.0\n",
    )
    site = tmp_path / "site"
    write(site / "experiment" / "my_study.yaml", GLOBAL + "train:\n  batch_size: 32\n")
    monkeypatch.setenv("HEPGAN_CONF", str(site))

    cfg = compose(["+site=mine", "experiment=my_study", "model=fixed25_small_nodrop"])
    assert cfg.data.cache_dir == "/scratch/cache"
    assert cfg.train.batch_size == 32
    assert cfg.model.dropout == 0.0 and cfg.model.size == "small"


@pytest.mark.parametrize("name", ["model/fixed25_small", "hydra/launcher/slurm", "config"])
@pytest.mark.parametrize("layer", ["cwd", "env"])
def test_a_layer_file_shadowing_a_packaged_one_is_refused(here, tmp_path, monkeypatch, name, layer) -> None:
    from hepgan.train.config import compose

    root = here / "conf" if layer == "cwd" else tmp_path / "site"
    if layer == "env":
        monkeypatch.setenv("HEPGAN_CONF", str(root))
    mine = write(root / f"{name}.yaml", "{}\n")
    with pytest.raises(ValueError) as err:
        compose([])
    message = str(err.value)
    assert f"{mine} (config folder {root.resolve()}" in message
    assert f"would shadow the packaged config {name!r} ({packaged(name)})" in message
    assert "\n" not in message


def test_the_same_file_in_two_layers_is_refused(here, tmp_path, monkeypatch) -> None:
    from hepgan.train.config import compose

    first = write(here / "conf" / "experiment" / "scan.yaml")
    second = write(tmp_path / "site" / "experiment" / "scan.yaml")
    monkeypatch.setenv("HEPGAN_CONF", str(tmp_path / "site"))
    with pytest.raises(ValueError, match="are both the config 'experiment/scan'") as err:
        compose(["experiment=scan"])
    assert str(second) in str(err.value) and str(first) in str(err.value)


def test_misspelt_group_choices_list_the_options_of_every_layer(here, tmp_path) -> None:
    from hepgan.train.config import check_overrides, compose

    for check in (check_overrides, compose):
        with pytest.raises(
            ValueError, match=r"invalid config choice: model: 'fixed25_smal' is not a valid choice; valid "
            r"choices: .*fixed25_small"
        ):  # fmt: skip
            check(["model=fixed25_smal"])
    with pytest.raises(ValueError, match=r"model: 'fixed25_smal' is not a valid choice"):
        check_overrides(["model=tiny,fixed25_smal"])  # every value of a sweep
    with pytest.raises(ValueError, match=r"hydra/launcher: 'slrum' is not a valid choice; .*slurm"):
        check_overrides(["hydra/launcher=slrum"])

    write(here / "conf" / "site" / "mine.yaml")
    with pytest.raises(ValueError, match=r"site: 'mnie' is not a valid choice; valid choices: mine"):
        check_overrides(["+site=mnie"])
    check_overrides(["+site=mine", "model=tiny,fixed25_small", "experiment=null", "model=glob(fixed*)"])

    # folders given to Hydra directly (hydra.searchpath, --config-dir) count as well
    extra = write(tmp_path / "extra" / "experiment" / "other.yaml").parents[1]
    check_overrides(["experiment=other", f"hydra.searchpath=[file://{extra}]"])
    check_overrides(["experiment=other"], config_dirs=[str(extra)])
    with pytest.raises(ValueError, match=r"experiment: 'other' is not a valid choice"):
        check_overrides(["experiment=other"])


# ---------------------------------------------------------------------------------------------------------
# The repository's conf/
# ---------------------------------------------------------------------------------------------------------


def test_repository_conf_examples_compose(monkeypatch) -> None:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from hepgan.train.config import compose as hepgan_compose

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("HEPGAN_CONF", raising=False)
    for site in ("example_slurm", "example_lsf"):
        cfg = hepgan_compose([f"+site={site}"])
        assert cfg.data.paths and cfg.data.cache_dir, site
    GlobalHydra.instance().clear()
    with initialize_config_module("hepgan.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+site=example_slurm"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.max_num_timeout == 3  # the site's, on the packaged slurm
    assert (REPO / "conf" / "experiment" / "README.md").is_file()
    assert "/conf/local/" in (REPO / ".gitignore").read_text().splitlines()


# ---------------------------------------------------------------------------------------------------------
# hepgan-train as a Hydra application
# ---------------------------------------------------------------------------------------------------------


def test_cli_refuses_a_shadowing_file_in_one_paragraph(tmp_path: Path) -> None:
    mine = write(tmp_path / "conf" / "model" / "tiny.yaml", "{}\n")
    p = train("debug=default", f"out={tmp_path / 'run'}", cwd=tmp_path)
    assert p.returncode == 1, p.stderr[-3000:]
    assert p.stderr.startswith(f"hepgan-train: {mine} ") and str(packaged("model/tiny")) in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()


def test_shell_completion_installs_and_answers_queries(tmp_path: Path) -> None:
    p = train("-sc", "install=bash", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "complete -o nospace -o default -F hydra_bash_completion hepgan-train" in p.stdout

    write(tmp_path / "conf" / "site" / "mine.yaml")
    for line, expect in (
        ("hepgan-train model=fixed25_s", {"model=fixed25_small"}),
        ("hepgan-train +site=", {"+site=mine"}),
        ("hepgan-train optim.lr_", {"optim.lr_g=", "optim.lr_d="}),
    ):
        p = train("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
        assert p.returncode == 0, p.stderr[-3000:]
        assert set(p.stdout.split()) == expect, line


@pytest.mark.parametrize("info", [[], ["config"], ["searchpath"]])
def test_info_prints_every_line_once(tmp_path: Path, info: list[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (tmp_path / "conf").mkdir()
    p = train("--info", *info, cwd=tmp_path, env={"HEPGAN_CONF": str(site)})
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert out.count("Config search path") == 1 and "DEBUG" not in out
    lines = [s for s in out.splitlines() if any(c.isalpha() for c in s)]
    assert all(a != b for a, b in itertools.pairwise(lines)), out
    cwd_layer = [s.split("|")[1:3] for s in out.splitlines() if "| ./conf " in s]
    assert [[c.strip() for c in row] for row in cwd_layer] == [
        ["./conf", f"file://{(tmp_path / 'conf').resolve()}"]
    ]
    assert out.index("pkg://hepgan.conf") < out.index("file://" + str(site.resolve()))


def test_help_lists_groups_with_options_and_examples(tmp_path: Path) -> None:
    write(tmp_path / "conf" / "site" / "mine.yaml")
    p = train("--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.startswith("hepgan-train: train a 3DGAN")
    groups = dict(
        s.split(": ", 1) for s in p.stdout.splitlines() if s.split(":")[0] in ("model", "site", "experiment")
    )
    assert "fixed25_small" in groups["model"].split(", ") and groups["site"] == "mine"
    assert "paper_fixed25" in groups["experiment"]
    assert "== Examples ==" in p.stdout and "hepgan-train -m optim.lr_g=" in p.stdout
    assert "powered by Hydra" not in p.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=fixed25_smal", "model: 'fixed25_smal' is not a valid choice; valid choices: "),
        ("optim.name=rmsprp", "optim.name: 'rmsprp' is not a valid choice; valid choices: rmsprop, "),
        ("train.schedule=papr", "train.schedule: 'papr' is not a valid choice; valid choices: paper, "),
        ("parallel.backend=shardmap", "parallel.backend: 'shardmap' is not a valid choice; valid choices: "),
        ("scaling.rule=sqr", "scaling.rule: 'sqr' is not a valid choice; valid choices: "),
    ],
)
def test_cli_misspelt_choice_fails_before_any_set_up(tmp_path: Path, override: str, message: str) -> None:
    start = time.perf_counter()
    p = train(override, f"out={tmp_path / 'run'}", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert p.returncode == 1, p.stderr[-3000:]
    assert message in p.stderr and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()  # nothing simulated, built or written
    assert elapsed < 60, elapsed  # the import of the schemas, not a run's set-up
