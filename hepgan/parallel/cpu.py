"""The device layout of a CPU host: one JAX device per core, one compute thread each (``per_core``).

XLA's CPU client makes one device that spreads each operation over every core (Eigen's thread pool). For
the 3DGAN step that is a poor use of a multi-core host: measured on a 2-core VM, one process on both
cores trained the paper fixed25 model at 2.1-2.6 showers/s, while one worker on one core alone ran at
4.2 (docs/parallel.md, "CPU hosts"). ``per_core`` (the default) gives XLA one device per usable core,
each running its operations on one thread, and the trainer runs data-parallel over them (backend
``auto`` -> ``shard_map`` with global-batch BatchNorm: one device's update rule, averaged gradients and
global-batch statistics, each device drawing its own noise). ``shared`` is
XLA's own layout (one device, all cores).

XLA reads its flags once, when the first JAX computation starts the CPU backend, so :func:`configure`
must run before that: :func:`hepgan.parallel.setup` calls it first. A device count already forced in
``XLA_FLAGS`` (the tests' 8 simulated devices, a user's choice) is respected, and hosts with a GPU or
TPU plugin are left alone unless ``JAX_PLATFORMS=cpu``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import metadata

log = logging.getLogger(__name__)

LAYOUTS = ("per_core", "shared")
#: one compute thread per device. The device count must stand before these in XLA_FLAGS: XLA's flag
#: parser stops at the bare ``intra_op_parallelism_threads=1`` (measured with the scaling benchmark).
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
_COUNT_FLAG = "--xla_force_host_platform_device_count"
_ACCELERATOR_DISTS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu", "jax-metal")


@dataclass(frozen=True)
class CpuLayout:
    """What :func:`configure` decided: ``layout`` (``per_core``, ``shared``, or ``kept``: the flags or
    the backend were set already), ``devices`` (CPU devices it asked for, None when it did not set
    them), ``reason`` (one line for the start-up log)."""

    layout: str
    devices: int | None
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: what srun/taskset/cgroups allow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def accelerator_host() -> bool:
    """Whether JAX will use an accelerator: a GPU/TPU plugin is installed and ``JAX_PLATFORMS`` does not
    restrict JAX to the CPU. Decided without starting a JAX backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return any(p.strip() not in ("", "cpu") for p in platforms.split(","))
    names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    return any(name.startswith(_ACCELERATOR_DISTS) for name in names)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without that query: assume not started
        return False


def device_count(
    cores: int, devices: int | None, global_batch: int | None, *, one_device_per_process: bool = False
) -> int:
    """The CPU devices of the ``per_core`` layout: ``devices`` if given, else one per usable core, reduced
    to the most that divide ``global_batch`` (every device takes an equal share); 1 for the mpi backend
    (``one_device_per_process``)."""
    n = 1 if one_device_per_process else (devices or cores)
    if devices is None and global_batch:
        n = max(k for k in range(1, n + 1) if global_batch % k == 0)
    return n


def configure(
    layout: str,
    devices: int | None,
    *,
    one_device_per_process: bool = False,
    global_batch: int | None = None,
) -> CpuLayout:
    """Set ``XLA_FLAGS`` for ``layout`` before the JAX backend starts; returns what was decided.

    ``layout``: ``per_core`` or ``shared`` (``parallel.cpu_layout``). ``devices``: the mesh size asked for
    (``parallel.devices``; None: one per usable core, or the most cores that divide ``global_batch``).
    ``one_device_per_process``: the mpi backend (one device per process, one thread each under
    ``per_core``). Raises ``ValueError`` for an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"parallel.cpu_layout: unknown {layout!r}; valid: {list(LAYOUTS)}")
    flags = os.environ.get("XLA_FLAGS", "")
    if layout == "shared":
        return CpuLayout("shared", None, "one CPU device on all cores (parallel.cpu_layout=shared)")
    if accelerator_host():
        return CpuLayout("kept", None, "an accelerator host: the CPU layout is not changed")
    if _backends_started():
        return CpuLayout("kept", None, "the JAX backend had started already; its CPU layout is kept")
    if _COUNT_FLAG in flags:
        return CpuLayout("kept", None, f"XLA_FLAGS sets the CPU device count already ({flags.strip()})")
    cores = usable_cores()
    n = device_count(cores, devices, global_batch, one_device_per_process=one_device_per_process)
    # the count first, the user's flags next, the one-thread flags last (see ONE_THREAD)
    os.environ["XLA_FLAGS"] = " ".join(f for f in (f"{_COUNT_FLAG}={n}", flags.strip(), ONE_THREAD) if f)
    what = "one device per process" if one_device_per_process else f"{n} devices on {cores} usable cores"
    return CpuLayout(
        "per_core", n, f"CPU host: {what}, one compute thread each (parallel.cpu_layout=per_core)"
    )
