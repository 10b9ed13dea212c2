"""Compile once, run many: a persistent JAX compilation cache shared by all trials of a campaign.

Thousands of trials of a sweep compile the same few programs (one per distinct model/batch/mesh shape).
With ``jax_compilation_cache_dir`` on a shared file system, the first trial of each shape compiles and
every later one loads the executable. ``hepgan-sweep warm PLAN`` fills the cache for a plan's distinct
shapes before the array starts, so that no array task pays for compilation.

What makes two trials share an executable is decided by XLA (the lowered program and its options), not by
this module; the shape key below only decides how many warm-up compilations ``warm`` performs. Note that
values baked into the program as constants (a learning rate closed over as a Python float) make distinct
programs; hyperparameters passed as traced arguments (``optax.inject_hyperparams``) do not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hepgan.sweep.plan import read_plan
from hepgan.sweep.runner import RunSettings, compose_config, load_callable

ENV_VAR = "HEPGAN_COMPILE_CACHE"
#: ``fn(cfg) -> None``: builds the training step for ``cfg`` and compiles it (no training).
CompileFn = Callable[[Any], Any]
DEFAULT_COMPILE_FNS = ("hepgan.train:compile_step", "hepgan.train.loop:compile_step")
#: config sections that decide compiled shapes by default (the rest: learning rates, seeds, logging)
DEFAULT_SHAPE_KEYS = ("model", "data", "parallel", "train.batch_size")


def configure_compile_cache(
    cache_dir: str | os.PathLike | None = None, *, min_compile_time_s: float = 0.0, min_entry_bytes: int = 0
) -> Path | None:
    """Point JAX's persistent compilation cache at ``cache_dir`` (or ``$HEPGAN_COMPILE_CACHE``).

    ``min_compile_time_s=0`` and ``min_entry_bytes=0`` cache every program: in a sweep even a 0.5 s
    compile repeats thousands of times. XLA's own autotuning caches go there too where JAX supports it.
    Returns the folder, or None when neither argument nor environment variable is set. Call before the
    first compilation of the process.
    """
    d = cache_dir if cache_dir is not None else os.environ.get(ENV_VAR)
    if not d:
        return None
    import jax

    path = Path(d).resolve()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_bytes))
    try:
        jax.config.update("jax_persistent_cache_enable_xla_caches", "all")
    except (AttributeError, ValueError):
        pass  # older/newer JAX without this option: the executables are cached all the same
    return path


def shape_key(cfg: Any, keys: Sequence[str] = DEFAULT_SHAPE_KEYS) -> str:
    """A short hash of the parts of ``cfg`` named by ``keys`` (dotted paths; missing ones count as None)."""
    from omegaconf import OmegaConf

    parts = {}
    for k in keys:
        node = OmegaConf.select(cfg, k, default=None)
        if node is not None and OmegaConf.is_config(node):
            node = OmegaConf.to_container(node, resolve=True)
        parts[k] = node
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_compile_fn() -> CompileFn:
    """``hepgan.train.compile_step(cfg)``: builds state and step for ``cfg``, compiles, does not train."""
    errors = []
    for spec in DEFAULT_COMPILE_FNS:
        try:
            return load_callable(spec)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError(
        "warm needs a function that compiles the training step of a config; hepgan.train.compile_step is "
        "not available (" + "; ".join(errors) + "); pass --compile-fn module:function"
    )


def warm_plan(
    plan_path: str | os.PathLike,
    settings: RunSettings,
    *,
    compile_fn: CompileFn | None = None,
    keys: Sequence[str] = DEFAULT_SHAPE_KEYS,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compile each distinct shape of a plan once (first entry of each shape key); returns a summary.

    The compilation cache must be configured first (:func:`configure_compile_cache`).
    """
    fn = compile_fn if compile_fn is not None else default_compile_fn()
    entries = read_plan(plan_path)
    first_of: dict[str, int] = {}
    for i, e in enumerate(entries):
        first_of.setdefault(shape_key(compose_config(e.overrides, settings), keys), i)
    for key, i in first_of.items():
        if log is not None:
            log(f"compiling shape {key} (entry {i}: {' '.join(entries[i].overrides)})")
        fn(compose_config(entries[i].overrides, settings))
    return {
        "entries": len(entries),
        "distinct_shapes": len(first_of),
        "compiled_entries": sorted(first_of.values()),
    }
