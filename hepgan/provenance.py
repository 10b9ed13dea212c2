"""The run manifest: everything needed to say where a result came from and to run it again.

``manifest.json`` in the run directory holds the resolved configuration, the seed, the versions of the
packages that shape the numbers, the JAX backend and devices, the git commit of the hepgan checkout (and
whether it had uncommitted changes), the data source's own description (file checksums or simulator
settings), the host and the start time.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "hepgan",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "hydra-core",
    "omegaconf",
    "numpy",
    "scipy",
    "h5py",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout holding ``path``.

    ``path`` defaults to the hepgan package itself; outside a git checkout (an installed wheel) both
    values are None.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


def jax_info() -> dict[str, Any]:
    """JAX backend, process layout and device list."""
    import jax

    return {
        "backend": jax.default_backend(),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()],
    }


# set by ``hepgan-train --rerun RUN_DIR`` to the run re-run; the rerun's manifest records it as ``rerun_of``
RERUN_ENV = "HEPGAN_RERUN_OF"


def build_manifest(
    config: dict[str, Any], *, seed: int, data: dict[str, Any], start_time: datetime | None = None
) -> dict[str, Any]:
    """The manifest dict: ``config`` (resolved, JSON-able), ``seed``, ``data`` (the source's
    ``describe()``), plus versions, JAX, git, host and ``start_time`` (UTC, default now)."""
    return {
        "start_time": (start_time or datetime.now(UTC)).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "seed": seed,
        "packages": package_versions(),
        "jax": jax_info(),
        "git": git_state(),
        "data": data,
        "config": config,
        **({"rerun_of": os.environ[RERUN_ENV]} if os.environ.get(RERUN_ENV) else {}),
    }


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` to ``run_dir/manifest.json``; a resumed run keeps the first one as
    ``manifest.json`` and appends its own to ``manifest.resumes.jsonl``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "manifest.json"
    text = json.dumps(manifest, indent=2, sort_keys=False, default=str)
    if path.exists():
        with open(run_dir / "manifest.resumes.jsonl", "a") as f:
            f.write(json.dumps(manifest, default=str) + "\n")
    else:
        path.write_text(text + "\n")
    return path
