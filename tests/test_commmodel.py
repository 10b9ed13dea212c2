"""The alpha-beta communication model (``hepgan.bench.commmodel``): formulas against hand-computed
values, the fit against synthetic points, and the shape of the scaling curves."""

from __future__ import annotations

import itertools
import math

import pytest

from hepgan.bench import commmodel as cm

ALPHA = 5e-6  # s
BETA = 1.0 / 25e9  # s/B (25 GB/s)
POWERS = [2**k for k in range(11)]  # 1 .. 1024


def _cluster(gpus_per_node: int = 4) -> cm.Cluster:
    return cm.Cluster(intra=cm.NVLINK3, inter=cm.IB_HDR, gpus_per_node=gpus_per_node)


def test_one_worker_communicates_nothing():
    for algorithm in cm.ALGORITHMS:
        assert cm.allreduce_s(1e7, 1, algorithm, _cluster()) == 0.0
    assert cm.ring_allreduce_s(1e7, 1, ALPHA, BETA) == 0.0
    assert cm.tree_allreduce_s(1e7, 1, ALPHA, BETA) == 0.0


def test_ring_and_tree_against_hand_computed_values():
    n = 4e6
    # p = 2: the ring is two rounds (reduce-scatter, all-gather) of one message of n/2 bytes each
    assert cm.ring_allreduce_s(n, 2, ALPHA, BETA) == pytest.approx(2 * (ALPHA + n / 2 * BETA))
    # p = 8: 14 latencies, 2 * 7/8 of the message
    assert cm.ring_allreduce_s(n, 8, ALPHA, BETA) == pytest.approx(14 * ALPHA + 1.75 * n * BETA)
    # tree, p = 8: 3 rounds up, 3 down, the whole message each; p = 5 rounds up to 3 levels too
    assert cm.tree_allreduce_s(n, 8, ALPHA, BETA) == pytest.approx(6 * (ALPHA + n * BETA))
    assert cm.tree_allreduce_s(n, 5, ALPHA, BETA) == pytest.approx(6 * (ALPHA + n * BETA))
    assert cm.tree_allreduce_s(n, 2, ALPHA, BETA) == pytest.approx(2 * (ALPHA + n * BETA))


def test_hierarchical_against_hand_computed_value_and_its_limits():
    c = cm.Cluster(intra=cm.NVLINK2, inter=cm.IB_EDR, gpus_per_node=4, nics_per_node=2)
    n, p = 8e6, 16  # 4 nodes of 4
    a_in, b_in = cm.NVLINK2.alpha_s, 1 / 150e9
    a_ex, b_ex = cm.IB_EDR.alpha_s, 1 / (2 * 12.5e9)
    hand = 2 * 3 * a_in + 2 * 3 / 4 * n * b_in + 2 * 3 * a_ex + 2 * 3 / 4 * n * b_ex
    assert cm.hierarchical_allreduce_s(n, p, c) == pytest.approx(hand)
    # within one node it is the ring over NVLink; with one GPU per node, the ring over the network
    assert cm.hierarchical_allreduce_s(n, 4, c) == pytest.approx(cm.ring_allreduce_s(n, 4, a_in, b_in))
    one = cm.Cluster(intra=cm.NVLINK2, inter=cm.IB_EDR, gpus_per_node=1)
    assert cm.hierarchical_allreduce_s(n, 16, one) == pytest.approx(
        cm.ring_allreduce_s(n, 16, a_ex, 1 / 12.5e9)
    )
    with pytest.raises(ValueError, match="multiple"):
        cm.hierarchical_allreduce_s(n, 6, c)


def test_flat_algorithms_switch_to_the_network_beyond_one_node():
    c = _cluster(gpus_per_node=4)
    n = 1e6
    assert cm.allreduce_s(n, 4, "ring", c) == pytest.approx(
        cm.ring_allreduce_s(n, 4, cm.NVLINK3.alpha_s, cm.NVLINK3.beta_s_per_B)
    )
    assert cm.allreduce_s(n, 8, "ring", c) == pytest.approx(
        cm.ring_allreduce_s(n, 8, cm.IB_HDR.alpha_s, cm.IB_HDR.beta_s_per_B)
    )


def test_tree_wins_small_messages_ring_wins_large_ones():
    p = 64
    assert cm.tree_allreduce_s(64, p, ALPHA, BETA) < cm.ring_allreduce_s(64, p, ALPHA, BETA)
    assert cm.ring_allreduce_s(1e8, p, ALPHA, BETA) < cm.tree_allreduce_s(1e8, p, ALPHA, BETA)
    x = cm.crossover_bytes(p, ALPHA, BETA)
    assert cm.tree_allreduce_s(x, p, ALPHA, BETA) == pytest.approx(cm.ring_allreduce_s(x, p, ALPHA, BETA))
    assert cm.tree_allreduce_s(0.5 * x, p, ALPHA, BETA) < cm.ring_allreduce_s(0.5 * x, p, ALPHA, BETA)
    assert cm.tree_allreduce_s(2 * x, p, ALPHA, BETA) > cm.ring_allreduce_s(2 * x, p, ALPHA, BETA)
    # at p <= 3 the tree saves no latency, so the ring is never dearer
    assert math.isinf(cm.crossover_bytes(3, ALPHA, BETA))


@pytest.mark.parametrize("algorithm", ["ring", "tree"])
def test_fit_recovers_known_alpha_and_beta(algorithm):
    alpha, beta = 12e-6, 1 / 3e9
    pts = []
    for p in (2, 4, 16):
        for nbytes, calls in ((4e3, 1), (7.5e6, 4), (7.5e6, 62), (3e7, 8)):
            m = cm.Measurement(nbytes, p, 0.0, calls)
            pts.append(cm.Measurement(nbytes, p, cm.predict_s(m, alpha, beta, algorithm), calls))
    for relative in (False, True):
        a, b = cm.fit_alpha_beta(pts, algorithm, relative=relative)
        assert a == pytest.approx(alpha, rel=1e-6)
        assert b == pytest.approx(beta, rel=1e-6)
    # tuples work too, and points at p = 1 are ignored
    tup = [(m.nbytes, m.p, m.seconds, m.calls) for m in pts] + [(1e6, 1, 5.0, 1)]
    assert cm.fit_alpha_beta(tup, algorithm) == pytest.approx((alpha, beta), rel=1e-6)


def test_fit_keeps_alpha_and_beta_non_negative_and_refuses_degenerate_points():
    # pure bandwidth data with a little noise that would push alpha below zero
    pts = [(1e6, 2, 1e6 / 1e9 - 1e-7, 1), (1e7, 2, 1e7 / 1e9, 1), (1e5, 2, 1e5 / 1e9 - 1e-7, 4)]
    a, b = cm.fit_alpha_beta(pts)
    assert a >= 0 and b > 0
    assert b == pytest.approx(1e-9, rel=0.05)
    with pytest.raises(ValueError, match="separate"):  # same bytes per latency everywhere
        cm.fit_alpha_beta([(1e6, 2, 1e-3, 1), (2e6, 2, 2e-3, 2)])


def test_paper_gradients_match_the_measured_bytes_per_step():
    # experiments/scaling/scaling.json: bytes_reduced_per_step 7,569,680 for fixed25, 4 gradient calls
    assert cm.FIXED25.gradient_bytes_per_step == 7_569_680
    assert len(cm.FIXED25.gradient_messages_B) == 4
    assert cm.ANGLE51.gradient_bytes_per_step == 2 * 4 * (1_364_983 + 87_354)


@pytest.mark.parametrize("algorithm", cm.ALGORITHMS)
def test_weak_efficiency_is_one_at_one_gpu_and_never_rises(algorithm):
    for cluster in (_cluster(4), cm.Cluster(cm.NVLINK2, cm.ETH_25G, gpus_per_node=8)):
        pts = cm.weak_scaling(POWERS, 0.23, cm.FIXED25.messages_B, algorithm, cluster)
        effs = [q.efficiency for q in pts]
        assert effs[0] == 1.0
        assert all(0 < e <= 1 for e in effs)
        assert all(b <= a for a, b in itertools.pairwise(effs)), effs
        assert effs[-1] < 1.0


def test_overlap_hides_communication_up_to_the_backward_pass():
    assert cm.exposed_comm_s(0.01, 1.0, overlap=0.0) == pytest.approx(0.01)
    assert cm.exposed_comm_s(0.01, 1.0, overlap=0.5) == pytest.approx(0.005)
    # no more than the backward pass (2/3 of compute) can be hidden
    assert cm.exposed_comm_s(1.0, 0.3, overlap=1.0) == pytest.approx(1.0 - 0.2)
    c = _cluster()
    lo = cm.weak_scaling([256], 0.01, cm.FIXED25.messages_B, "ring", c)[0].efficiency
    hi = cm.weak_scaling([256], 0.01, cm.FIXED25.messages_B, "ring", c, overlap=0.5)[0].efficiency
    assert lo < hi < 1.0


@pytest.mark.parametrize("algorithm", cm.ALGORITHMS)
def test_strong_efficiency_is_below_weak(algorithm):
    c = _cluster()
    msgs = cm.FIXED25.messages_B
    weak = cm.weak_scaling(POWERS, 0.23, msgs, algorithm, c)
    strong = cm.strong_scaling(POWERS, 0.23, 128, 128, msgs, algorithm, c, min_batch_per_gpu=8)
    assert strong[0].efficiency == pytest.approx(1.0)
    for w, s in zip(weak[1:], strong[1:], strict=True):
        assert s.efficiency < w.efficiency
    # the floor: below 8 showers per GPU the compute time stops shrinking
    assert strong[-1].compute_s == pytest.approx(0.23 * 8 / 128)
    assert cm.strong_compute_s(4, 0.23, 128, 128) == pytest.approx(0.23 / 4)
