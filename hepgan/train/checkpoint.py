"""Checkpoints with Orbax: the last ``k`` by step and the best by validation score, resumable.

Layout under the run directory::

    checkpoints/<step>/{state, extra}   the last ``keep_last`` saves (CheckpointManager, async)
    best/<step>/{state, extra}          the best save by ``physics_score`` (lower is better)

``state`` is the :class:`~hepgan.train.state.GANState` as a dict of pytrees; ``extra`` is JSON: the data
position (:meth:`hepgan.data.pipeline.Pipeline.position`), the epoch, rollback count, the last validation
metrics and a SHA-256 fingerprint of the state's bytes. Orbax writes each step into a temporary directory
and renames it when complete, so an interrupted save never looks like a checkpoint; a checkpoint that
fails to restore or whose fingerprint does not match (a damaged file) is reported and the one before it
is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hepgan.train.state import GANState, PlayerState

PLAYERS = ("g", "d")

log = logging.getLogger(__name__)

SCORE = "physics_score"


def state_to_tree(state: GANState) -> dict[str, Any]:
    """The checkpointed form of a state: its fields as a dict, each player's :class:`PlayerState` as a
    dict of its fields (``{"step", "rng", "lr_scale", "g": {"params", ...}, "d": {...}, "ema_g_params"}``)."""
    tree = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    for who in PLAYERS:
        tree[who] = {f.name: getattr(tree[who], f.name) for f in dataclasses.fields(PlayerState)}
    return tree


def tree_to_state(tree: dict[str, Any]) -> GANState:
    """The inverse of :func:`state_to_tree`."""
    players = {who: PlayerState(**tree[who]) for who in PLAYERS}
    return GANState(**{**tree, **players})


# Checkpoints written before the per-player state kept the players' fields flat: g_params, g_batch_stats,
# g_opt_state, lr_g (and d_...). They restore through this map.
_LEGACY = {"params": "{}_params", "batch_stats": "{}_batch_stats", "opt_state": "{}_opt_state", "lr": "lr_{}"}


def _to_legacy(tree: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in tree.items() if k not in PLAYERS}
    for who in PLAYERS:
        flat.update({old.format(who): tree[who][new] for new, old in _LEGACY.items()})
    return flat


def _from_legacy(flat: dict[str, Any]) -> dict[str, Any]:
    tree = {
        k: v for k, v in flat.items() if not any(k == o.format(w) for o in _LEGACY.values() for w in PLAYERS)
    }
    for who in PLAYERS:
        tree[who] = {new: flat[old.format(who)] for new, old in _LEGACY.items()}
    return tree


def _digest(tree: Any) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def fingerprint(state: GANState) -> str:
    """SHA-256 over every array of ``state`` (shape, dtype and bytes), in tree order."""
    return _digest(state_to_tree(state))


class Checkpointer:
    """Save and restore :class:`GANState` plus JSON extras in ``directory`` (see the module docstring).

    ``keep_last``: checkpoints kept by step; ``keep_best``: also keep the best by ``physics_score``;
    ``async_save``: write in a background thread (call :meth:`wait` or :meth:`close` before exiting).
    """

    def __init__(
        self, directory: str | Path, *, keep_last: int = 3, keep_best: bool = True, async_save: bool = True
    ):
        if keep_last < 1:
            raise ValueError(f"train.keep_last: at least 1 checkpoint must be kept; got {keep_last}")
        self.directory = Path(directory).absolute()
        self.latest = ocp.CheckpointManager(
            self.directory / "checkpoints",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep_last,
                create=True,
                cleanup_tmp_directories=True,
                enable_async_checkpointing=async_save,
            ),
        )
        self.best: ocp.CheckpointManager | None = None
        if keep_best:
            self.best = ocp.CheckpointManager(
                self.directory / "best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1,
                    best_fn=lambda m: m[SCORE],
                    best_mode="min",
                    keep_checkpoints_without_metrics=False,
                    create=True,
                    cleanup_tmp_directories=True,
                    enable_async_checkpointing=async_save,
                ),
            )

    @staticmethod
    def _args(state: GANState, extra: dict[str, Any]) -> ocp.args.Composite:
        return ocp.args.Composite(
            state=ocp.args.StandardSave(state_to_tree(state)), extra=ocp.args.JsonSave(extra)
        )

    def save(self, step: int, state: GANState, extra: dict[str, Any]) -> None:
        """Save ``state`` at ``step`` with ``extra`` (JSON-able); the fingerprint is added to ``extra``.

        A step that is already saved is left as it is: a run resumed at step ``s`` first drops every save
        newer than ``s`` (:meth:`discard_after`), so an existing step is the one it restored, or one an
        earlier attempt wrote from the same state (resume is bitwise).
        """
        # One save in flight at a time: keeps memory bounded, and under jax.distributed the two managers
        # would otherwise run Orbax's step-named barriers for the same step at once and collide.
        self.wait()
        if step in self.latest.all_steps():
            return
        extra = {**extra, "fingerprint": fingerprint(state)}
        self.latest.save(step, args=self._args(state, extra), force=True)

    def save_best(self, step: int, state: GANState, extra: dict[str, Any], metrics: dict[str, float]) -> None:
        """Offer ``state`` as the best checkpoint; kept if its ``physics_score`` is the lowest so far.

        A step already in ``best/`` is left as it is (see :meth:`save`).
        """
        if self.best is None or not np.isfinite(metrics.get(SCORE, np.nan)):
            return
        self.wait()  # see save()
        if step in self.best.all_steps():
            return
        extra = {**extra, "fingerprint": fingerprint(state), "metrics": metrics}
        self.best.save(
            step, args=self._args(state, extra), metrics={SCORE: float(metrics[SCORE])}, force=True
        )

    def latest_step(self) -> int | None:
        """Newest saved step, or None."""
        return self.latest.latest_step()

    def discard_after(self, step: int) -> list[str]:
        """Delete every save newer than ``step`` (``-1``: all), in ``checkpoints/`` and ``best/``.

        A run that resumes at ``step`` will write those steps again, bitwise equal; what an interrupted
        attempt left there (a best save without its latest save, a save after a damaged one, the
        checkpoints of a crashed first interval) would otherwise block those saves. Returns the deleted
        folders, for the log.
        """
        deleted = []
        for manager in (self.latest, self.best):
            if manager is None:
                continue
            manager.wait_until_finished()
            manager.reload()
            for s in sorted(manager.all_steps()):
                if s > step:
                    manager.delete(s)
                    deleted.append(f"{manager.directory}/{s}")
        return deleted

    def restore(
        self,
        template: GANState,
        *,
        best: bool = False,
        step: int | None = None,
        model: str | None = None,
    ) -> tuple[GANState, dict[str, Any]] | None:
        """The newest checkpoint that restores and verifies (or the best, with ``best``), else None.

        ``template``: a state with the wanted shapes, dtypes and shardings (e.g. the freshly initialised
        one). A damaged checkpoint is logged as a warning and skipped. ``step``: exactly that saved step
        instead (of ``best/`` with ``best``); a missing step raises ``FileNotFoundError`` listing the saved
        ones, a damaged one ``ValueError`` (no fallback to another step when one was asked for).
        ``model``: the template's model as ``"<arch>/<size>"``; a checkpoint saved with another model
        (``extra["model"]``) raises ``ValueError("model mismatch: ...")`` instead of being taken for damage.
        """
        manager = self.best if best else self.latest
        if manager is None:
            return None
        manager.wait_until_finished()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_to_tree(template))
        steps = sorted(manager.all_steps(), reverse=True)
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(
                    f"no checkpoint of step {step} under {manager.directory}; saved steps: {sorted(steps)}"
                )
            steps = [step]
        for s in steps:
            if model is not None:
                saved = _saved_model(Path(manager.directory) / str(s))
                if saved is not None and saved != model:
                    raise ValueError(
                        f"model mismatch: checkpoint {manager.directory}/{s} holds model {saved}, the "
                        f"config asks for {model}; give the run directory of a {model} model, or the "
                        f"model={saved.replace('/', '_')} settings"
                    )
            try:
                state, extra = self._restore_step(manager, s, abstract)
            except Exception as exc:  # any damage: fall back to the previous checkpoint
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                if step is not None:
                    raise ValueError(
                        f"checkpoint {manager.directory}/{s} is damaged or incomplete "
                        f"({type(exc).__name__}: {first})"
                    ) from exc
                log.warning(
                    "checkpoint %s/%d is damaged or incomplete (%s: %s); trying the previous one",
                    manager.directory,
                    s,
                    type(exc).__name__,
                    first,
                )
                continue
            return state, extra
        return None

    @staticmethod
    def _restore_step(manager: Any, s: int, abstract: dict[str, Any]) -> tuple[GANState, dict[str, Any]]:
        """Step ``s`` of ``manager`` restored into the shapes of ``abstract`` (a :func:`state_to_tree` of
        shape-dtype structs) and checked against its fingerprint; the flat layout of older checkpoints
        is read when the current one is not there."""

        def read(target: dict[str, Any]) -> dict[str, Any]:
            args = ocp.args.Composite(state=ocp.args.StandardRestore(target), extra=ocp.args.JsonRestore())
            return manager.restore(s, args=args)

        try:
            out = read(abstract)
            tree = out["state"]
        except Exception as exc:
            try:
                out = read(_to_legacy(abstract))
            except Exception:
                raise exc from None
            tree = _from_legacy(out["state"])
            out = {**out, "state": _to_legacy(tree)}  # the fingerprint was taken over the flat tree
        extra = dict(out["extra"])
        if extra.get("fingerprint") not in (None, _digest(out["state"])):
            raise ValueError("the restored arrays do not match the fingerprint saved with them")
        return tree_to_state(tree), extra

    def wait(self) -> None:
        """Block until the background saves are on disk."""
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        """Wait for the saves, then release the managers."""
        self.wait()
        self.latest.close()
        if self.best is not None:
            self.best.close()


def _saved_model(step_dir: Path) -> str | None:
    """``"<arch>/<size>"`` recorded in a checkpoint's ``extra``, or None (older checkpoints, damage)."""
    import json

    for path in (step_dir / "extra" / "metadata", step_dir / "extra"):
        if path.is_file():
            try:
                model = json.loads(path.read_text()).get("model")
            except (OSError, ValueError, AttributeError):
                return None
            return model if isinstance(model, str) else None
    return None


def model_tag(model_cfg: Any) -> str:
    """The ``"<arch>/<size>"`` a checkpoint records for the model config ``model_cfg``."""
    return f"{model_cfg.arch}/{model_cfg.size}"


def read_manifest(run_dir: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(run directory, manifest, upgraded config)`` of the run ``run_dir`` (or its ``checkpoints/`` or
    ``best/`` folder). Raises ``FileNotFoundError`` naming the missing ``manifest.json``, ``ValueError``
    for a manifest without a readable training config."""
    import json

    from hepgan.train.config import upgrade

    run_dir = Path(run_dir)
    if run_dir.name in ("checkpoints", "best") and not (run_dir / "manifest.json").exists():
        run_dir = run_dir.parent
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(
            f"{manifest_path} not found: give the run directory that hepgan-train wrote (it holds "
            "manifest.json and checkpoints/)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        config = upgrade(manifest["config"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{manifest_path} has no readable training config ({type(exc).__name__}: {exc}); it is not a "
            "manifest hepgan-train wrote, or it was damaged"
        ) from None
    return run_dir, manifest, config


def restore_run(
    run_dir: str | Path, *, best: bool = False, step: int | None = None
) -> tuple[Any, GANState, Any, Any]:
    """Rebuild a trained run from its directory: ``(players, state, preprocess, config)``.

    Reads ``manifest.json`` for the configuration, assembles the run with
    :func:`hepgan.train.run.build_run` (one device, no data), and restores the newest intact checkpoint
    (the best by ``physics_score`` with ``best``), or exactly step ``step`` of ``checkpoints/`` (of
    ``best/`` with ``best``). Raises ``FileNotFoundError`` naming what is missing, ``ValueError`` for a
    damaged ``step`` or a manifest without a config.
    """
    from hepgan.train.run import build_run

    run_dir, _, config = read_manifest(run_dir)
    # The optimizer states are restored too, so their structure must match the run's: the run is built
    # as fit() builds it (optimizer choice and scaling rules included); schedule lengths do not change it.
    run = build_run(config, parallel=False, data=False)
    ckpt = Checkpointer(run_dir, keep_last=max(run.conf.train.keep_last, 1), keep_best=True)
    try:
        restored = ckpt.restore(run.state, best=best, step=step, model=model_tag(run.conf.model))
    finally:
        ckpt.close()
    if restored is None:
        which = "best" if best else "checkpoints"
        raise FileNotFoundError(f"no intact checkpoint under {run_dir / which}")
    return run.players, restored[0], run.preprocess, run.conf
