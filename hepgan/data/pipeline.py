"""From a :class:`~hepgan.data.source.ShowerSource` to device batches: preprocess, shuffle, batch, shard.

Two pieces:

- :class:`Preprocess` maps showers in file units (GeV of visible energy per cell, GeV primary energy,
  radians) to the units the 3DGAN networks see, and back. The papers' presets are
  ``Preprocess.for_model("fixed25")`` (cells x100, E/100) and ``Preprocess.for_model("angle51")``
  (cells^0.85, E/100, as AngleGAN's Keras ``GetDataAngle`` with ``xscale=1, xpower=0.85, yscale=100``).
- :class:`Pipeline` turns a source into an endless (or ``epochs``-bounded) stream of batches
  ``{"ecal": [B, X, Y, Z] f32, "energy": [B] f32, "theta": [B] f32 rad}`` as ``jax.Array`` sharded
  ``P("data")`` over a mesh. The order is a pure function of ``(seed, epoch)``, so
  :meth:`Pipeline.position` / :meth:`Pipeline.restore` resume the exact batch sequence after a restart
  (Slurm requeue), and in a multi-process run each process reads only the rows its devices hold.

Typical use in a training loop::

    train_src, ref_src = open_source(cfg.data)
    pipe = Pipeline(train_src, global_batch=128, preprocess=Preprocess.for_model("fixed25"),
                    seed=cfg.seed, mesh=mesh)
    pipe.restore(saved_position)          # only when resuming
    for step in range(n_steps):
        batch = next(pipe)
        state, metrics = train_step(state, batch)
        position = pipe.position()        # store with the checkpoint of this step
    pipe.close()
"""

from __future__ import annotations

import math
import queue
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hepgan.cells import CELL_POWER, apply_power, undo_power
from hepgan.data.config import DataConfig
from hepgan.data.source import ShowerSource
from hepgan.data.types import Showers

# The papers' preprocessing per model architecture: (cell_scale, cell_power, energy_scale); the cell
# power and its inverse are defined once, in hepgan.cells.
_PRESETS: dict[str, tuple[float, float, float]] = {
    # Fixed-angle 3DGAN (EcalEnergyTrain.py): ECAL x100, primary energy / 100.
    "fixed25": (100.0, CELL_POWER["fixed25"], 0.01),
    # AngleGAN (AngleTrain3dGAN.py defaults xscale=1, xpower=0.85, yscale=100).
    "angle51": (1.0, CELL_POWER["angle51"], 0.01),
    # CaloChallenge datasets 2 and 3 (no paper): cells in GeV on the incident scale, then ^0.5; E/100.
    "ds2": (1.0, CELL_POWER["ds2"], 0.01),
    "ds3": (1.0, CELL_POWER["ds3"], 0.01),
}


# ----------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """Cell and condition transform between file units and network units.

    ``ecal' = (ecal * cell_scale) ** cell_power`` (float32), ``energy' = energy * energy_scale``,
    ``theta`` passes through in radians (``pi/2`` where the data carry no angle).

    Attributes:
        cell_scale: factor on cell energies before the power (3DGAN fixed-angle: 100).
        cell_power: exponent applied after scaling (AngleGAN: 0.85; 1 = none). Must be > 0.
        energy_scale: factor on the primary energy (both papers: 0.01, i.e. E/100).
    """

    cell_scale: float = 100.0
    cell_power: float = 1.0
    energy_scale: float = 0.01

    def __post_init__(self) -> None:
        for name in ("cell_scale", "cell_power", "energy_scale"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"Preprocess.{name} must be a finite number > 0; got {v!r}")

    @classmethod
    def for_model(
        cls,
        arch: str,
        *,
        cell_scale: float | None = None,
        cell_power: float | None = None,
        energy_scale: float | None = None,
    ) -> Preprocess:
        """The paper preset for a model architecture, with optional per-field overrides.

        Args:
            arch: ``"fixed25"`` (cells x100, E/100) or ``"angle51"`` (cells^0.85, E/100).
            cell_scale, cell_power, energy_scale: replace the preset's value when not ``None``.

        Raises:
            ValueError: unknown ``arch`` (the message lists the known ones).
        """
        if arch not in _PRESETS:
            raise ValueError(
                f"Preprocess.for_model: unknown model arch {arch!r}; expected one of {sorted(_PRESETS)}"
            )
        s, p, e = _PRESETS[arch]
        return cls(
            cell_scale=s if cell_scale is None else float(cell_scale),
            cell_power=p if cell_power is None else float(cell_power),
            energy_scale=e if energy_scale is None else float(energy_scale),
        )

    @classmethod
    def from_config(cls, cfg: DataConfig, arch: str) -> Preprocess:
        """The preset of model ``arch`` with the overrides ``cfg.cell_scale``, ``cfg.cell_power``,
        ``cfg.energy_scale`` (each ``None`` = keep the preset's value)."""
        return cls.for_model(
            arch, cell_scale=cfg.cell_scale, cell_power=cfg.cell_power, energy_scale=cfg.energy_scale
        )

    def apply(self, showers: Showers, *, inplace: bool = False) -> dict[str, np.ndarray]:
        """Preprocess a batch on the host.

        Args:
            showers: ``ecal [N, X, Y, Z]`` GeV, ``energy [N]`` GeV, ``theta [N]`` rad or ``None``.
            inplace: transform ``showers.ecal`` in its own memory when it is float32 (saves allocating
                and filling a second cell array per batch); only for arrays nobody else holds.

        Returns:
            ``{"ecal": [N, X, Y, Z] f32 network units, "energy": [N] f32 (energy * energy_scale),
            "theta": [N] f32 rad}``.
        """
        own = inplace and showers.ecal.dtype == np.float32 and showers.ecal.flags.writeable
        out = showers.ecal if own else None
        ecal = np.multiply(showers.ecal, np.float32(self.cell_scale), out=out, dtype=np.float32)
        apply_power(ecal, self.cell_power, out=ecal)  # cells are energies: float noise below 0 is clipped
        energy = np.multiply(showers.energy, np.float32(self.energy_scale), dtype=np.float32)
        theta = np.asarray(showers.theta_or_normal(), dtype=np.float32)
        return {"ecal": ecal, "energy": energy, "theta": theta}

    def invert_cells(self, x: Any) -> Any:
        """Exact inverse of the cell transform: network units back to file units (GeV).

        Args:
            x: ``[..., X, Y, Z]`` cells in network units, NumPy or JAX (works inside ``jit``); values
                must be >= 0 (negative values are clipped to 0 before the inverse power).

        Returns:
            ``x ** (1 / cell_power) / cell_scale`` with the same array type and dtype as ``x``.
        """
        return undo_power(x, self.cell_power) / self.cell_scale

    def invert_energy(self, energy: Any) -> Any:
        """Network-unit energy ``[B]`` back to GeV (``energy / energy_scale``), NumPy or JAX."""
        return energy / self.energy_scale


# ----------------------------------------------------------------------------------------------------
# Pipeline
# ----------------------------------------------------------------------------------------------------

_DONE = object()  # end-of-stream marker from the prefetch thread


class Pipeline:
    """Seeded, resumable, sharded batches from a :class:`ShowerSource`.

    Order: epoch ``e`` visits the source in the order ``np.random.default_rng([seed, e]).permutation(n)``
    (or ``0..n-1`` with ``shuffle=False``); step ``k`` of the epoch is the slice
    ``[k * global_batch, (k + 1) * global_batch)`` of that order. With ``drop_last=True`` (the default)
    the ``n % global_batch`` leftover events of each epoch are skipped -- a different set every epoch
    when shuffling -- so every batch has the full size and the jitted step compiles once.

    Iteration is endless by default (the training loop decides when to stop, by steps); pass ``epochs``
    to stop with ``StopIteration`` after that many epochs.

    Sharding: with a ``mesh`` (which must have a ``"data"`` axis), every batch is a global ``jax.Array``
    of shape ``[global_batch, ...]`` sharded ``P("data")``; each process reads and preprocesses only the
    rows held by its own devices (``global_batch / process_count`` events, which rows is read from the
    sharding, so any mesh whose processes own contiguous blocks works) and the global array is
    assembled with ``jax.make_array_from_process_local_data``. Without a mesh, arrays are placed on the
    default device; with ``process_count > 1`` and no mesh they hold only this process's slice
    ``[process_index * L, (process_index + 1) * L)``, ``L = global_batch / process_count``.

    Prefetch: a background thread reads, preprocesses and places the next ``prefetch`` batches while the
    caller computes (``prefetch=0`` reads synchronously in :meth:`__next__`). Call :meth:`close` (or use
    the pipeline as a context manager) to stop the thread; a pipeline dropped without it is still
    garbage-collected and its thread then ends. Errors raised while reading (a broken file) are re-raised
    by :meth:`__next__` in the caller's thread.

    Args:
        source: the events; ``len(source)`` must be at least ``global_batch``.
        global_batch: events per step over all processes and devices.
        preprocess: the transform (default ``Preprocess()``, the fixed25 preset).
        seed: shuffling seed (independent of the model's seed streams).
        mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis, or ``None`` for the default device.
        shuffle: shuffle each epoch (``False``: source order, the same every epoch).
        drop_last: skip the partial last batch of an epoch. ``False`` is allowed only without a mesh in
            a single process (the partial batch cannot be split evenly over devices).
        process_index, process_count: this process and the number of processes; ``None`` takes
            ``jax.process_index()`` / ``jax.process_count()``. With a mesh they must match JAX's.
        prefetch: batches prepared ahead in the background thread (0 = none).
        epochs: stop after this many epochs; ``None`` = endless.

    Raises:
        ValueError: with the numbers involved, if ``global_batch`` is not divisible by the process count
            or the mesh's ``"data"`` axis size, if the source holds fewer events than one batch, if the
            mesh lacks a ``"data"`` axis, or for other inconsistent arguments.
    """

    def __init__(
        self,
        source: ShowerSource,
        global_batch: int,
        preprocess: Preprocess | None = None,
        seed: int = 0,
        mesh: Mesh | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
        process_index: int | None = None,
        process_count: int | None = None,
        prefetch: int = 2,
        epochs: int | None = None,
    ) -> None:
        self.source = source
        self.global_batch = int(global_batch)
        self.preprocess = preprocess if preprocess is not None else Preprocess()
        self.seed = int(seed)
        self.mesh = mesh
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.process_index = jax.process_index() if process_index is None else int(process_index)
        self.process_count = jax.process_count() if process_count is None else int(process_count)
        self.prefetch = int(prefetch)
        self.epochs = None if epochs is None else int(epochs)
        self.n_events = len(source)
        self._validate()

        self.local_batch = self.global_batch // self.process_count
        self._sharding = NamedSharding(mesh, P("data")) if mesh is not None else None
        self._rows = self._local_rows()
        if self.drop_last:
            self.steps_per_epoch = self.n_events // self.global_batch
        else:
            self.steps_per_epoch = -(-self.n_events // self.global_batch)

        # The position of the next batch __next__ will return (consumer side, not the prefetcher's).
        self._epoch = 0
        self._step = 0
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()

    # -- validation ---------------------------------------------------------------------------------

    def _validate(self) -> None:
        B, pc = self.global_batch, self.process_count
        if B <= 0:
            raise ValueError(f"Pipeline: global_batch must be a positive integer; got {B}")
        if pc <= 0 or not 0 <= self.process_index < pc:
            raise ValueError(
                f"Pipeline: process_index must be in [0, process_count); got {self.process_index} of {pc}"
            )
        if B % pc:
            raise ValueError(
                f"Pipeline: global_batch {B} is not divisible by the process count {pc}; "
                f"choose a global batch that is a multiple of {pc}"
            )
        if self.mesh is not None:
            if "data" not in self.mesh.axis_names:
                raise ValueError(
                    f"Pipeline: the mesh must have a 'data' axis to shard batches over; "
                    f"it has axes {tuple(self.mesh.axis_names)}"
                )
            nd = int(self.mesh.shape["data"])
            if B % nd:
                raise ValueError(
                    f"Pipeline: global_batch {B} is not divisible by the {nd} devices of the mesh's "
                    f"'data' axis; choose a global batch that is a multiple of {nd}"
                )
            if pc != jax.process_count():
                raise ValueError(
                    f"Pipeline: process_count={pc} but JAX runs {jax.process_count()} process(es); "
                    "with a mesh leave process_index/process_count as None (taken from JAX)"
                )
            if not self.drop_last:
                raise ValueError("Pipeline: drop_last=False cannot be sharded over a mesh (partial batch)")
        if not self.drop_last and pc > 1:
            raise ValueError("Pipeline: drop_last=False needs a single process (partial batch)")
        if self.n_events < B:
            raise ValueError(
                f"Pipeline: the source holds {self.n_events} events, fewer than one global batch of {B}; "
                "use more events or a smaller batch"
            )
        if self.prefetch < 0:
            raise ValueError(f"Pipeline: prefetch must be >= 0; got {self.prefetch}")
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"Pipeline: epochs must be >= 0 or None; got {self.epochs}")

    def _local_rows(self) -> tuple[int, int]:
        """Rows ``[start, stop)`` of each global batch that this process reads."""
        L = self.local_batch
        if self._sharding is None or jax.process_count() == 1:
            return self.process_index * L, (self.process_index + 1) * L
        # Which rows a process's devices hold is the mesh's business, not process_index's: ask it.
        shape = (self.global_batch,)
        spans = set()
        for index in self._sharding.addressable_devices_indices_map(shape).values():
            rows = index[0] if index is not None else slice(None)
            spans.add((rows.start or 0, rows.stop if rows.stop is not None else self.global_batch))
        start, stop = min(s for s, _ in spans), max(e for _, e in spans)
        if stop - start != L or sum(e - s for s, e in spans) != L:
            raise ValueError(
                f"Pipeline: this process's devices hold rows {sorted(spans)} of the global batch, not one "
                f"contiguous block of {L}; build the mesh from jax.devices() in process order"
            )
        return start, stop

    # -- order and position ---------------------------------------------------------------------------

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Source indices ``[n]`` int64 in the order epoch ``epoch`` visits them."""
        cached = self._perm_cache  # read once: the prefetch thread may replace it
        if cached is not None and cached[0] == epoch:
            return cached[1]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_events)
        else:
            order = np.arange(self.n_events, dtype=np.int64)
        self._perm_cache = (epoch, order)
        return order

    def batch_indices(self, epoch: int, step: int) -> np.ndarray:
        """Source indices ``[global_batch]`` of step ``step`` of epoch ``epoch`` (all processes)."""
        B = self.global_batch
        return self.epoch_order(epoch)[step * B : (step + 1) * B]

    def position(self) -> dict[str, Any]:
        """Where the stream stands: the next batch ``next()`` will return, as a JSON-able dict.

        Keys: ``epoch``, ``step`` (batches already taken in that epoch), ``seed``, plus ``global_batch``,
        ``n_events`` and ``shuffle``, which :meth:`restore` checks (or, for ``global_batch``, converts)
        because the batch sequence depends on them. Save it with the checkpoint of the step that
        consumed the last batch.
        """
        return {
            "epoch": self._epoch,
            "step": self._step,
            "seed": self.seed,
            "global_batch": self.global_batch,
            "n_events": self.n_events,
            "shuffle": self.shuffle,
        }

    def restore(self, position: Mapping[str, Any]) -> None:
        """Continue from a :meth:`position`: the following batches are exactly those an uninterrupted
        pipeline would have produced.

        A position saved with another ``global_batch`` (a batch-size schedule) is accepted when the
        events already taken in its epoch, ``step * old_batch``, are a whole number of new batches: the
        epoch's event order then continues where it stopped, in batches of the new size.

        Raises:
            ValueError: ``position`` lacks ``epoch``/``step``, was taken with a different seed, source
                size or shuffle setting (the sequence would differ), or with a global batch that does not
                divide the events already taken in the epoch.
        """
        try:
            epoch, step = int(position["epoch"]), int(position["step"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"Pipeline.restore: position needs integer 'epoch' and 'step'; got {dict(position)!r}"
            ) from exc
        mine = self.position()
        for key in ("seed", "n_events", "shuffle"):
            if key in position and position[key] != mine[key]:
                raise ValueError(
                    f"Pipeline.restore: the saved position has {key}={position[key]!r} but this pipeline "
                    f"has {key}={mine[key]!r}; the batch sequence would not be the same"
                )
        old_batch = int(position.get("global_batch", self.global_batch))
        if old_batch != self.global_batch:
            taken = step * old_batch
            if taken % self.global_batch:
                raise ValueError(
                    f"Pipeline.restore: the saved position took {taken} events of epoch {epoch} in batches "
                    f"of {old_batch}; that is not a whole number of batches of {self.global_batch}, so the "
                    "event order cannot continue exactly (change the batch size at an epoch boundary or at "
                    "a common multiple)"
                )
            step = taken // self.global_batch
        if epoch < 0 or not 0 <= step <= self.steps_per_epoch:
            raise ValueError(
                f"Pipeline.restore: epoch {epoch}, step {step} is outside [0, {self.steps_per_epoch}] steps"
            )
        self._stop_thread()
        self._epoch, self._step = self._normalise(epoch, step)

    def skip(self, n_batches: int) -> None:
        """Move the position ``n_batches`` batches ahead without reading them (e.g. to step past the data
        that made a run diverge after rolling back to a checkpoint); crosses epoch ends as iteration does.
        """
        if n_batches < 0:
            raise ValueError(f"Pipeline.skip: n_batches must be >= 0; got {n_batches}")
        self._stop_thread()
        total = self._epoch * self.steps_per_epoch + self._step + int(n_batches)
        self._epoch, self._step = divmod(total, self.steps_per_epoch)

    def _normalise(self, epoch: int, step: int) -> tuple[int, int]:
        return (epoch + 1, 0) if step >= self.steps_per_epoch else (epoch, step)

    # -- reading ------------------------------------------------------------------------------------

    def read_local(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        """This process's share of a batch, preprocessed, on the host.

        Returns:
            ``{"ecal": [L, X, Y, Z] f32, "energy": [L] f32, "theta": [L] f32 rad}`` with
            ``L = global_batch / process_count`` (smaller for a final partial batch with
            ``drop_last=False``).
        """
        idx = self.batch_indices(epoch, step)
        start, stop = self._rows
        if len(idx) < self.global_batch:  # partial batch: single process only (validated)
            start, stop = 0, len(idx)
        # The package's sources hand out fresh arrays (``fresh_arrays``), which may be transformed in place.
        inplace = bool(getattr(self.source, "fresh_arrays", False))
        return self.preprocess.apply(self.source.read(idx[start:stop]), inplace=inplace)

    def _place(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        if self._sharding is None:
            return {k: jax.device_put(v) for k, v in local.items()}
        if jax.process_count() == 1:
            return {k: jax.device_put(v, self._sharding) for k, v in local.items()}
        return {
            k: jax.make_array_from_process_local_data(self._sharding, v, (self.global_batch, *v.shape[1:]))
            for k, v in local.items()
        }

    def _produce(self, epoch: int, step: int) -> tuple[int, int, dict[str, jax.Array]]:
        return epoch, step, self._place(self.read_local(epoch, step))

    def _start_thread(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._thread = threading.Thread(
            target=_prefetch,
            args=(weakref.ref(self), self._epoch, self._step, self._queue, self._stop),
            name="hepgan-pipeline-prefetch",
            daemon=True,
        )
        self._thread.start()

    def _stop_thread(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        assert self._queue is not None
        while self._thread.is_alive():  # drain so a blocked put() sees the stop flag
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        self._thread, self._queue = None, None

    def close(self) -> None:
        """Stop the prefetch thread (the position is kept; iterating again restarts it)."""
        self._stop_thread()

    def __del__(self) -> None:
        # A pipeline dropped without close(): let its thread notice and exit (it holds no strong ref).
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Pipeline:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        """The next batch: ``{"ecal": [B, X, Y, Z] f32, "energy": [B] f32, "theta": [B] f32 rad}``."""
        if self.epochs is not None and self._epoch >= self.epochs:
            raise StopIteration
        if self.prefetch == 0:
            epoch, step, batch = self._produce(self._epoch, self._step)
        else:
            if self._thread is None:
                self._start_thread()
            assert self._queue is not None
            item = self._queue.get()
            if item is _DONE:
                self._stop_thread()
                raise StopIteration
            if isinstance(item, BaseException):
                self._stop_thread()
                raise item
            epoch, step, batch = item
        assert (epoch, step) == (self._epoch, self._step), "prefetch order out of step"
        self._epoch, self._step = self._normalise(epoch, step + 1)
        return batch

    @property
    def total_steps(self) -> int | None:
        """Batches from the start to the end, ``steps_per_epoch * epochs``; ``None`` when endless.

        (Not ``__len__``: an endless pipeline would then fail in a plain ``if pipeline:``.)
        """
        return None if self.epochs is None else self.steps_per_epoch * self.epochs


def _prefetch(
    ref: weakref.ReferenceType[Pipeline], epoch: int, step: int, q: queue.Queue[Any], stop: threading.Event
) -> None:
    """Prefetch thread body: put ``(epoch, step, batch)`` for consecutive positions into ``q``.

    It holds the pipeline only through ``ref`` between batches, so a pipeline that is dropped without
    ``close()`` is still collected and the thread then ends.
    """
    try:
        while not stop.is_set():
            pipe = ref()
            if pipe is None:
                return
            if pipe.epochs is not None and epoch >= pipe.epochs:
                item: Any = _DONE
            else:
                item = pipe._produce(epoch, step)
                epoch, step = pipe._normalise(epoch, step + 1)
            del pipe
            if not _put(q, item, ref, stop) or item is _DONE:
                return
    except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
        _put(q, exc, ref, stop)


def _put(q: queue.Queue[Any], item: Any, ref: weakref.ReferenceType[Pipeline], stop: threading.Event) -> bool:
    """Put ``item`` unless the pipeline stops or is gone first; whether it was put."""
    while not stop.is_set() and ref() is not None:
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
