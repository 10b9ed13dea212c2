"""hepgan's user and site config layers on Hydra's config search path (a Hydra ``SearchPathPlugin``).

Hydra finds this plugin because it lives in the ``hydra_plugins`` namespace package, which the hepgan
distribution ships. Whenever the primary config is hepgan's packaged one (``pkg://hepgan.conf``:
``hepgan-train``, :func:`hepgan.train.config.compose`, ``hepgan-sweep``), it appends, after the packaged
configs and in this order:

1. ``./conf`` of the working directory, where that is a folder (provider ``./conf``);
2. each folder named in ``$HEPGAN_CONF`` (several separated by ``os.pathsep``), in order (provider
   ``HEPGAN_CONF``). A name that is not a folder is an error: a misspelt site path must not pass silently.

A layer adds options: new groups (``site/``, ``local/``) and new files in existing groups
(``experiment/my_study.yaml``, ``hydra/launcher/mycluster.yaml``). A file with the group and name of a
packaged config (``model/fixed25_small.yaml``), or of a file of an earlier layer, is refused with a
``ValueError`` naming both files: with one of them silently winning, what a run used would depend on the
folder it was started from. docs/configuration.md describes the layers.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath, SearchPathElement
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV = "HEPGAN_CONF"
"""Environment variable naming site or user config folders (``os.pathsep``-separated)."""
CWD_PROVIDER = "./conf"
ENV_PROVIDER = ENV
PACKAGED = "pkg://hepgan.conf"
"""The search-path entry of hepgan's packaged configs: the layers are added only where it is present."""


def layer_dirs(
    cwd: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> list[tuple[str, Path]]:
    """The user and site config folders as ``(provider, absolute folder)``, in search-path order.

    ``cwd``: the working directory (default: the process's); ``environ``: the environment (default
    ``os.environ``). ``./conf`` comes first where it is a folder, then each ``HEPGAN_CONF`` entry (empty
    entries skipped, ``~`` expanded, relative ones taken from ``cwd``); a folder given twice counts once.
    Raises ``ValueError`` for a ``HEPGAN_CONF`` entry that is not a folder.
    """
    base = Path(cwd if cwd is not None else os.getcwd())
    env = os.environ if environ is None else environ
    found: list[tuple[str, Path]] = []
    if (base / "conf").is_dir():
        found.append((CWD_PROVIDER, (base / "conf").resolve()))
    for entry in env.get(ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        path = base / Path(entry.strip()).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"{ENV} names {entry.strip()!r}, which is not a folder ({path}); {ENV} takes config folders "
                f"separated by {os.pathsep!r} (docs/configuration.md)"
            )
        found.append((ENV_PROVIDER, path.resolve()))
    unique: dict[Path, str] = {}
    for provider, path in found:
        unique.setdefault(path, provider)
    return [(provider, path) for path, provider in unique.items()]


def config_files(root: Path) -> dict[str, Path]:
    """The Hydra configs of a config folder: ``"group/name"`` (as Hydra names them) -> file."""
    return {
        p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml")) if p.is_file()
    }


def _describe(source: Any, name: str) -> str:
    """Where packaged config ``name`` of a Hydra config source lives, for the error message."""
    scheme = source.scheme()
    if scheme == "pkg":
        try:
            return str(importlib.resources.files(source.path).joinpath(f"{name}.yaml"))
        except (ModuleNotFoundError, TypeError):
            return f"{source.full_path()}/{name}.yaml"
    if scheme == "file":
        return str(Path(source.path) / f"{name}.yaml")
    return f"the structured config {name!r} in Hydra's ConfigStore"


def check_layers(packaged: Sequence[SearchPathElement], layers: Sequence[tuple[str, Path]]) -> None:
    """Refuse a layer file that would shadow a packaged config or a file of an earlier layer.

    ``packaged``: the search-path entries before the layers (Hydra's, hepgan's, other plugins'); Hydra's
    ConfigStore is checked as well. ``layers``: :func:`layer_dirs`. Raises one ``ValueError`` naming both
    files of the first collision.
    """
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

    search = ConfigSearchPathImpl()
    for element in packaged:
        search.append(element.provider, element.path)
    search.append("schema", "structured://")
    sources = ConfigRepository(search).get_sources()
    seen: dict[str, tuple[str, Path]] = {}
    for provider, root in layers:
        for name, path in config_files(root).items():
            if name in seen:
                first_provider, first = seen[name]
                raise ValueError(
                    f"{path} (config folder {root}, from {provider}) and {first} (from {first_provider}) are "
                    f"both the config {name!r}: two config folders may add options but not the same one, or "
                    f"which of the two a run used would depend on the order of the folders. Rename or remove "
                    f"one of them (docs/configuration.md, 'Config layers')."
                )
            seen[name] = (provider, path)
            owner = next((s for s in sources if s.available() and s.is_config(name)), None)
            if owner is not None:
                group, _, stem = name.rpartition("/")
                hint = (
                    f"{group}/{stem}_site.yaml, selected as {group}={stem}_site" if group else f"{stem}_site"
                )
                raise ValueError(
                    f"{path} (config folder {root}, from {provider}) would shadow the packaged config "
                    f"{name!r} ({_describe(owner, name)}): a user or site config folder may add options but "
                    f"not replace hepgan's own, or what a run used would depend on the folder it was started "
                    f"from. Give it a new name (for example {hint}) or remove it (docs/configuration.md, "
                    f"'Config layers')."
                )


def _is_packaged(path: str | None) -> bool:
    """Whether a search-path entry is hepgan's packaged configs: ``pkg://hepgan.conf`` as the compose API
    writes it, ``pkg://hepgan/conf`` as ``@hydra.main`` does, or the ``hepgan/conf`` folder itself (an
    entry point run as a script)."""
    if path is None:
        return False
    if path.startswith("pkg://"):
        return path.replace("/", ".").rstrip(".") == PACKAGED.replace("/", ".")
    if path.startswith("file://"):
        return Path(path[len("file://") :]).parts[-2:] == ("hepgan", "conf")
    return False


def is_hepgan(search_path: ConfigSearchPath) -> bool:
    """Whether ``search_path`` is one of hepgan's: its primary configs are the packaged ``hepgan.conf``."""
    return any(_is_packaged(e.path) for e in search_path.get_path())


class HepganSearchPathPlugin(SearchPathPlugin):
    """Appends ``./conf`` and the ``HEPGAN_CONF`` folders to hepgan's search path (see the module)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Append the layers after the packaged configs, once each; raise ``ValueError`` for a bad layer."""
        if not is_hepgan(search_path):
            return
        present = {e.path for e in search_path.get_path()}
        layers = [(p, d) for p, d in layer_dirs() if f"file://{d}" not in present]
        check_layers(list(search_path.get_path()), layers)
        for provider, path in layers:
            search_path.append(provider=provider, path=f"file://{path}")
