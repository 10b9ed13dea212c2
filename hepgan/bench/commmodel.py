"""Alpha-beta model of the gradient all-reduce, and of data-parallel weak and strong scaling.

Units throughout: bytes, seconds, bytes/s; ``alpha`` is the latency of one message in s, ``beta`` the
transfer time per byte in s/B (``1 / bandwidth``), ``p`` the number of workers (GPUs).

All-reduce of ``n`` bytes over ``p`` workers (Thakur, Rabenseifner & Gropp 2005, "Optimization of
collective communication operations in MPICH", Int. J. High Perform. Comput. Appl. 19(1) 49-66; the
bandwidth-optimal ring: Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms for clusters of
workstations", J. Parallel Distrib. Comput. 69(2) 117-124). The reduction arithmetic (the ``gamma``
term of Thakur et al.) is left out; on GPUs it runs at memory bandwidth, far above the links'.

- ring (reduce-scatter then all-gather, ``p - 1`` steps each, ``n / p`` bytes per step):
  ``T = 2 (p - 1) alpha + 2 (p - 1) / p * n * beta``
- binary tree (reduce to a root, then broadcast; ``ceil(log2 p)`` rounds each, the whole message per
  round): ``T = 2 ceil(log2 p) (alpha + n beta)``. Fewer latencies than the ring, but ``log2 p`` times
  the volume: cheaper for small messages, dearer for large ones (:func:`crossover_bytes`). Pipelined
  trees (e.g. NCCL's double binary tree) remove most of the ``log2 p`` volume factor; not modelled.
- two-level (hierarchical, as NCCL and Horovod's hierarchical all-reduce do it), ``g`` GPUs per node,
  ``m = p / g`` nodes: reduce-scatter inside the node (ring over the intra-node link), a ring across the
  nodes on each GPU's ``n / g`` shard (the node's ``g`` shards share its network ports), all-gather inside
  the node:
  ``T = 2 (g - 1) alpha_i + 2 (g - 1) / g * n * beta_i + 2 (m - 1) alpha_e + 2 (m - 1) / m * n * beta_e``
  with ``beta_e = 1 / (nics_per_node * link bandwidth)``.

The flat algorithms (ring, tree) on more than one node run at the pace of their slowest hop, the network:
every step pays the network's ``alpha`` and its bandwidth (``nics_per_node`` ports used as rails).

Scaling (per training step; the gradient all-reduces of a step are summed):

- weak scaling (per-GPU batch fixed): ``T(p) = T_compute + exposed(p)``, ``E(p) = T(1) / T(p)``;
- strong scaling (global batch ``B`` fixed): the per-GPU batch is ``B / p`` and
  ``T_compute(p) = T_compute(B_ref) * max(B / p, b_min) / B_ref`` (linear in the batch down to
  ``b_min`` showers per GPU, constant below: a GPU that gets too few showers is no longer kept busy; the
  floor is a modelling assumption, not a measurement), ``E(p) = T(1) / (p T(p))``;
- ``exposed(p) = T_comm(p) - min(overlap * T_comm(p), backward_fraction * T_compute)``: the fraction
  ``overlap`` of the communication that runs behind the backward pass, which lasts at most
  ``backward_fraction`` of the compute time. ``overlap = 0`` (nothing hidden) is the conservative default.

The link figures of :data:`LINKS` are nominal vendor bandwidths and typical latencies, assumptions stated
beside each; none of them is measured in this repository.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ALGORITHMS = ("ring", "tree", "hierarchical")

# ----------------------------------------------------------------------------------------------------
# Links
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One kind of link: ``alpha_s`` latency per message [s], ``bandwidth_Bps`` per direction [bytes/s]
    (per GPU for NVLink, per port for a network), ``source`` where the figures come from."""

    name: str
    alpha_s: float
    bandwidth_Bps: float
    source: str

    @property
    def beta_s_per_B(self) -> float:
        """Transfer time per byte [s/B], ``1 / bandwidth_Bps``."""
        return 1.0 / self.bandwidth_Bps


GB = 1e9  # bytes
US = 1e-6  # seconds

# Bandwidths: the vendors' nominal figures per direction. Real collectives reach some 70-90 % of them,
# so every time below is optimistic by that much (an assumption, not measured here).
# Latencies: typical figures, assumptions. Vendors quote about 1 us MPI ping-pong latency for InfiniBand
# adapters and below that for NVLink; a collective library step (kernel launch, synchronisation, chunk
# pipelining) costs more: NCCL's own tuning model (NVIDIA/nccl, src/graph/tuning.cc, hwLat/baseLat)
# budgets a few us per ring hop plus a base latency per call. We take 3 us (NVLink) and 5 us (InfiniBand).
NVLINK1 = Link(
    "NVLink 1 (P100 SXM2)",
    3 * US,  # assumption: typical latency, not measured here
    80 * GB,  # NVIDIA Tesla P100 datasheet: 4 links x 20 GB/s per direction (160 GB/s bidirectional)
    "NVIDIA Tesla P100 datasheet (160 GB/s bidirectional NVLink); latency assumed",
)
NVLINK2 = Link(
    "NVLink 2 (V100 SXM2)",
    3 * US,  # assumption: typical latency, not measured here
    150 * GB,  # NVIDIA Tesla V100 datasheet: 6 links x 25 GB/s per direction (300 GB/s bidirectional)
    "NVIDIA Tesla V100 datasheet (300 GB/s bidirectional NVLink); latency assumed",
)
NVLINK3 = Link(
    "NVLink 3 (A100 SXM4)",
    3 * US,  # assumption: typical latency, not measured here
    300 * GB,  # NVIDIA A100 datasheet: 12 links x 25 GB/s per direction (600 GB/s bidirectional)
    "NVIDIA A100 datasheet (600 GB/s bidirectional NVLink); latency assumed",
)
NVLINK4 = Link(
    "NVLink 4 (H100 SXM5)",
    3 * US,  # assumption: typical latency, not measured here
    450 * GB,  # NVIDIA H100 datasheet: 18 links x 25 GB/s per direction (900 GB/s bidirectional)
    "NVIDIA H100 datasheet (900 GB/s bidirectional NVLink); latency assumed",
)
IB_EDR = Link(
    "InfiniBand EDR 100 Gb/s",
    5 * US,  # assumption: adapter ~1 us, collective step a few us (see above)
    100e9 / 8,  # InfiniBand Trade Association roadmap: EDR 4x = 100 Gb/s data rate
    "IBTA roadmap (EDR 4x, 100 Gb/s); latency assumed",
)
IB_HDR = Link(
    "InfiniBand HDR 200 Gb/s",
    5 * US,  # assumption, as EDR
    200e9 / 8,  # IBTA roadmap: HDR 4x = 200 Gb/s
    "IBTA roadmap (HDR 4x, 200 Gb/s); latency assumed",
)
IB_NDR = Link(
    "InfiniBand NDR 400 Gb/s",
    5 * US,  # assumption, as EDR
    400e9 / 8,  # IBTA roadmap: NDR 4x = 400 Gb/s
    "IBTA roadmap (NDR 4x, 400 Gb/s); latency assumed",
)
ETH_25G = Link(
    "25 GbE (cloud, TCP)",
    25 * US,  # assumption: kernel TCP between cloud VMs, typically 10-50 us one way; not measured here
    25e9 / 8,  # IEEE 802.3by: 25 Gb/s
    "IEEE 802.3by (25 Gb/s); latency assumed (TCP between cloud VMs)",
)
LINKS: dict[str, Link] = {
    "nvlink1": NVLINK1,
    "nvlink2": NVLINK2,
    "nvlink3": NVLINK3,
    "nvlink4": NVLINK4,
    "edr": IB_EDR,
    "hdr": IB_HDR,
    "ndr": IB_NDR,
    "25gbe": ETH_25G,
}


@dataclass(frozen=True)
class Cluster:
    """GPUs in nodes: ``intra`` link inside a node, ``inter`` network between nodes, ``gpus_per_node``
    GPUs per node, ``nics_per_node`` network ports per node (each of ``inter``'s bandwidth)."""

    intra: Link
    inter: Link
    gpus_per_node: int = 8
    nics_per_node: int = 1

    def __post_init__(self) -> None:
        if self.gpus_per_node < 1 or self.nics_per_node < 1:
            raise ValueError(f"Cluster: need gpus_per_node, nics_per_node >= 1; got {self}")

    def flat_link(self, p: int) -> tuple[float, float]:
        """``(alpha [s], beta [s/B])`` a flat algorithm over ``p`` GPUs runs at: the intra-node link while
        ``p`` fits in one node, else the network (``nics_per_node`` ports as rails)."""
        if p <= self.gpus_per_node:
            return self.intra.alpha_s, self.intra.beta_s_per_B
        return self.inter.alpha_s, self.inter.beta_s_per_B / self.nics_per_node


# ----------------------------------------------------------------------------------------------------
# All-reduce costs
# ----------------------------------------------------------------------------------------------------


def _check(nbytes: float, p: int) -> None:
    if p < 1 or nbytes < 0:
        raise ValueError(f"all-reduce: need p >= 1 and nbytes >= 0; got p={p}, nbytes={nbytes}")


def ring_allreduce_s(nbytes: float, p: int, alpha_s: float, beta_s_per_B: float) -> float:
    """Ring all-reduce time [s] of ``nbytes`` [B] over ``p`` workers:
    ``2 (p - 1) alpha + 2 (p - 1) / p * n * beta`` (Patarasuk & Yuan 2009). 0 for ``p = 1``."""
    _check(nbytes, p)
    return 2 * (p - 1) * alpha_s + 2 * (p - 1) / p * nbytes * beta_s_per_B


def tree_allreduce_s(nbytes: float, p: int, alpha_s: float, beta_s_per_B: float) -> float:
    """Binary-tree (reduce + broadcast) all-reduce time [s] of ``nbytes`` [B] over ``p`` workers:
    ``2 ceil(log2 p) (alpha + n beta)`` (Thakur, Rabenseifner & Gropp 2005). 0 for ``p = 1``."""
    _check(nbytes, p)
    return 2 * math.ceil(math.log2(p)) * (alpha_s + nbytes * beta_s_per_B)


def hierarchical_allreduce_s(nbytes: float, p: int, cluster: Cluster) -> float:
    """Two-level all-reduce time [s] of ``nbytes`` [B] over ``p`` GPUs of ``cluster``: ring
    reduce-scatter in the node, ring all-reduce of the ``n / g`` shards across the ``m = p / g`` nodes
    (the node's ports shared by its ``g`` shards), ring all-gather in the node (module docstring).

    ``p`` must fill whole nodes when it exceeds ``gpus_per_node``; below that it is one node."""
    _check(nbytes, p)
    g = min(p, cluster.gpus_per_node)
    if p % g:
        raise ValueError(f"hierarchical all-reduce: p={p} is not a multiple of gpus_per_node={g}")
    m = p // g
    intra = 2 * (g - 1) * cluster.intra.alpha_s + 2 * (g - 1) / g * nbytes * cluster.intra.beta_s_per_B
    beta_e = cluster.inter.beta_s_per_B / cluster.nics_per_node
    inter = 2 * (m - 1) * cluster.inter.alpha_s + 2 * (m - 1) / m * nbytes * beta_e
    return intra + inter


def allreduce_s(nbytes: float, p: int, algorithm: str, cluster: Cluster) -> float:
    """All-reduce time [s] of ``nbytes`` [B] over ``p`` GPUs of ``cluster`` by ``algorithm`` (one of
    :data:`ALGORITHMS`); ring and tree run flat, at the pace of :meth:`Cluster.flat_link`."""
    if algorithm == "hierarchical":
        return hierarchical_allreduce_s(nbytes, p, cluster)
    alpha, beta = cluster.flat_link(p)
    if algorithm == "ring":
        return ring_allreduce_s(nbytes, p, alpha, beta)
    if algorithm == "tree":
        return tree_allreduce_s(nbytes, p, alpha, beta)
    raise ValueError(f"unknown algorithm {algorithm!r}; valid: {list(ALGORITHMS)}")


def step_comm_s(messages_B: Sequence[float], p: int, algorithm: str, cluster: Cluster) -> float:
    """Communication time [s] of one training step: the sum of one all-reduce per message, sizes
    ``messages_B`` [B] (the step's all-reduces run one after the other)."""
    return sum(allreduce_s(n, p, algorithm, cluster) for n in messages_B)


def crossover_bytes(p: int, alpha_s: float, beta_s_per_B: float) -> float:
    """Message size [B] at which the ring and the binary tree cost the same over ``p`` workers; the tree
    is cheaper below it, the ring above. ``inf`` where the ring is never dearer (``p <= 3``: the tree
    saves no latency there and moves more bytes)."""
    if p < 1 or beta_s_per_B <= 0:
        raise ValueError(f"crossover_bytes: need p >= 1 and beta > 0; got p={p}, beta={beta_s_per_B}")
    levels = math.ceil(math.log2(p)) if p > 1 else 0
    d_alpha = 2 * (p - 1) - 2 * levels  # extra latencies of the ring
    d_beta = 2 * levels - 2 * (p - 1) / p  # extra volume of the tree
    if d_alpha <= 0 or d_beta <= 0:
        return math.inf
    return d_alpha * alpha_s / (d_beta * beta_s_per_B)


# ----------------------------------------------------------------------------------------------------
# The models' gradients
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GANGradients:
    """What one data-parallel training step of a GAN all-reduces.

    ``g_params``, ``d_params``: trainable parameters of generator and discriminator; ``g_updates``,
    ``d_updates``: optimizer updates per step (each all-reduces that player's float32 gradient once,
    fused into one buffer); ``small_messages_B``: the step's other all-reduces [B] (scalars and BatchNorm
    statistics: latency only); ``batch``: the per-GPU batch [showers] of the paper's training.
    """

    name: str
    g_params: int
    d_params: int
    batch: int
    g_updates: int = 2
    d_updates: int = 2
    small_messages_B: tuple[float, ...] = ()
    bytes_per_param: int = 4

    @property
    def gradient_messages_B(self) -> list[float]:
        """The step's gradient all-reduces [B], in order: ``d_updates`` of D, then ``g_updates`` of G."""
        d = float(self.bytes_per_param * self.d_params)
        g = float(self.bytes_per_param * self.g_params)
        return [d] * self.d_updates + [g] * self.g_updates

    @property
    def messages_B(self) -> list[float]:
        """Every all-reduce of the step [B]: the gradients and the small ones."""
        return self.gradient_messages_B + list(self.small_messages_B)

    @property
    def gradient_bytes_per_step(self) -> int:
        """Gradient bytes all-reduced per step [B] (``scaling.json``'s ``bytes_reduced_per_step``)."""
        return int(sum(self.gradient_messages_B))


# Trainable parameter counts of the paper models (docs/models.md, checked layer by layer by
# tests/test_models.py). The paper schedule makes 2 D and 2 G updates per step; besides the four
# gradient all-reduces (which carry the BatchNorm statistics along) a step all-reduces two scalars' worth
# of metrics (hepgan/train/step.py): 8 and about 256 bytes, taken as latency-only messages.
FIXED25 = GANGradients("fixed25", g_params=872_808, d_params=73_402, batch=128, small_messages_B=(8.0, 256.0))
ANGLE51 = GANGradients(
    "angle51", g_params=1_364_983, d_params=87_354, batch=64, small_messages_B=(8.0, 256.0)
)
PAPER_MODELS: dict[str, GANGradients] = {"fixed25": FIXED25, "angle51": ANGLE51}


# ----------------------------------------------------------------------------------------------------
# Scaling
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingPoint:
    """One worker count of a scaling curve; times per training step [s], efficiency as a fraction."""

    p: int
    batch_per_gpu: float
    compute_s: float
    comm_s: float
    exposed_s: float
    step_s: float
    efficiency: float


def exposed_comm_s(
    comm_s: float, compute_s: float, overlap: float = 0.0, backward_fraction: float = 2.0 / 3.0
) -> float:
    """Communication time [s] not hidden behind compute: ``comm - min(overlap * comm, backward_fraction
    * compute)``; ``overlap`` in [0, 1] (0: nothing overlaps, the default), ``backward_fraction`` the
    share of ``compute_s`` [s] spent in backward passes, during which gradients can already travel."""
    if not 0.0 <= overlap <= 1.0 or not 0.0 <= backward_fraction <= 1.0:
        raise ValueError(f"need overlap and backward_fraction in [0, 1]; got {overlap}, {backward_fraction}")
    return comm_s - min(overlap * comm_s, backward_fraction * compute_s)


def weak_scaling(
    ps: Iterable[int],
    compute_s: float,
    messages_B: Sequence[float],
    algorithm: str,
    cluster: Cluster,
    *,
    overlap: float = 0.0,
    batch_per_gpu: float = math.nan,
) -> list[ScalingPoint]:
    """Weak scaling (per-GPU batch fixed): per ``p``, ``T(p) = compute_s + exposed(p)`` [s] and
    ``E = T(1) / T(p)``, with ``T(1) = compute_s`` (one GPU communicates nothing). ``messages_B``: the
    step's all-reduces [B]; ``batch_per_gpu`` [showers] is only recorded."""
    out = []
    for p in ps:
        comm = step_comm_s(messages_B, p, algorithm, cluster)
        exposed = exposed_comm_s(comm, compute_s, overlap)
        step = compute_s + exposed
        out.append(ScalingPoint(p, batch_per_gpu, compute_s, comm, exposed, step, compute_s / step))
    return out


def strong_compute_s(
    p: int, compute_ref_s: float, ref_batch: float, global_batch: float, min_batch_per_gpu: float = 1.0
) -> float:
    """Per-GPU compute time [s] of a step with ``global_batch`` [showers] split over ``p`` GPUs, from
    ``compute_ref_s`` [s] measured at ``ref_batch`` [showers]: linear in the per-GPU batch, but never below
    the time of ``min_batch_per_gpu`` showers (the GPU stops getting faster with fewer; assumption)."""
    if p < 1 or ref_batch <= 0 or global_batch <= 0 or min_batch_per_gpu < 0:
        raise ValueError("strong_compute_s: need p >= 1, positive batches and min_batch_per_gpu >= 0")
    return compute_ref_s * max(global_batch / p, min_batch_per_gpu) / ref_batch


def strong_scaling(
    ps: Iterable[int],
    compute_ref_s: float,
    ref_batch: float,
    global_batch: float,
    messages_B: Sequence[float],
    algorithm: str,
    cluster: Cluster,
    *,
    overlap: float = 0.0,
    min_batch_per_gpu: float = 1.0,
) -> list[ScalingPoint]:
    """Strong scaling (global batch fixed): per ``p``, ``T(p) = T_compute(p) + exposed(p)`` [s] with
    :func:`strong_compute_s`, and ``E = T(1) / (p T(p))``, ``T(1)`` one GPU on the whole
    ``global_batch`` [showers]. The gradient bytes do not shrink with the batch, so ``E`` falls faster
    than in weak scaling once the per-GPU batch is below ``ref_batch``."""
    t1 = strong_compute_s(1, compute_ref_s, ref_batch, global_batch, min_batch_per_gpu)
    out = []
    for p in ps:
        compute = strong_compute_s(p, compute_ref_s, ref_batch, global_batch, min_batch_per_gpu)
        comm = step_comm_s(messages_B, p, algorithm, cluster)
        exposed = exposed_comm_s(comm, compute, overlap)
        step = compute + exposed
        out.append(ScalingPoint(p, global_batch / p, compute, comm, exposed, step, t1 / (p * step)))
    return out


# ----------------------------------------------------------------------------------------------------
# Fitting alpha and beta to measurements
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """A timed batch of all-reduces: ``calls`` all-reduces over ``p`` workers moving ``nbytes`` [B] in
    all (their sizes may differ: ring and tree are linear in the size), taking ``seconds`` [s] in all."""

    nbytes: float
    p: int
    seconds: float
    calls: int = 1


def design_row(m: Measurement, algorithm: str = "ring") -> tuple[float, float]:
    """Coefficients ``(a, b)`` with ``seconds = a * alpha + b * beta`` for ``m`` under ``algorithm``
    ("ring" or "tree"): ring ``a = 2 (p - 1) calls``, ``b = 2 (p - 1) / p * nbytes``; tree
    ``a = 2 ceil(log2 p) calls``, ``b = 2 ceil(log2 p) * nbytes``. Units: ``a`` [1], ``b`` [B]."""
    if algorithm == "ring":
        return 2.0 * (m.p - 1) * m.calls, 2.0 * (m.p - 1) / m.p * m.nbytes
    if algorithm == "tree":
        levels = math.ceil(math.log2(m.p))
        return 2.0 * levels * m.calls, 2.0 * levels * m.nbytes
    raise ValueError(f"fit: algorithm must be 'ring' or 'tree'; got {algorithm!r}")


def fit_alpha_beta(
    points: Iterable[Measurement | tuple[float, int, float] | tuple[float, int, float, int]],
    algorithm: str = "ring",
    *,
    relative: bool = False,
) -> tuple[float, float]:
    """Least-squares ``(alpha [s], beta [s/B])``, both >= 0, of ``algorithm``'s cost to measured points.

    ``points``: :class:`Measurement` or tuples ``(nbytes [B], p, seconds [s][, calls])``, at least two
    with different ratios of latencies to bytes (else alpha and beta cannot be told apart).
    ``relative``: weight each point by ``1 / seconds`` (fit relative errors) instead of absolute ones.
    Points with ``p = 1`` carry no information and are dropped.
    """
    ms = [m if isinstance(m, Measurement) else Measurement(*m) for m in points]
    ms = [m for m in ms if m.p > 1]
    if len(ms) < 2:
        raise ValueError("fit_alpha_beta: need at least two points with p > 1")
    a = np.array([design_row(m, algorithm) for m in ms], dtype=float)
    y = np.array([m.seconds for m in ms], dtype=float)
    if relative:
        w = 1.0 / y
        a, y = a * w[:, None], y * w
    scale = a.max(axis=0)  # columns of very different size (1 vs 1e7 B): solve in scaled units
    if np.any(scale <= 0):
        raise ValueError("fit_alpha_beta: every point has zero latency or zero bytes; cannot fit both")
    a_s = a / scale
    if np.linalg.matrix_rank(a_s) < 2:
        raise ValueError("fit_alpha_beta: points do not separate alpha from beta (add other sizes or calls)")
    # Non-negative least squares in two unknowns: the unconstrained solution if it is feasible, else the
    # better of the two one-parameter fits on the boundary.
    x, *_ = np.linalg.lstsq(a_s, y, rcond=None)
    if np.all(x >= 0):
        sol = x
    else:
        cands = []
        for j in (0, 1):
            col = a_s[:, j]
            c = np.zeros(2)
            c[j] = max(float(col @ y) / float(col @ col), 0.0)
            cands.append(c)
        sol = min(cands, key=lambda c: float(np.sum((a_s @ c - y) ** 2)))
    alpha, beta = (sol / scale).tolist()
    return float(alpha), float(beta)


def predict_s(m: Measurement, alpha_s: float, beta_s_per_B: float, algorithm: str = "ring") -> float:
    """Modelled time [s] of measurement ``m`` (its ``seconds`` ignored) for ``alpha`` [s], ``beta`` [s/B]."""
    a, b = design_row(m, algorithm) if m.p > 1 else (0.0, 0.0)
    return a * alpha_s + b * beta_s_per_B
