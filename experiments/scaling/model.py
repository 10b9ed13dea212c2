"""Alpha-beta model of data-parallel 3DGAN training from 1 to 1024 GPUs, checked against the 2-worker CPU
measurements of this folder and set beside the published scaling figures of the 3DGAN family.

    python experiments/scaling/model.py --out experiments/scaling [--compute-fixed25 0.23]
        [--compute-angle51 1.9] [--gpus-per-node 8] [--nics-per-node 1] [--overlap 0]
        [--min-batch-per-gpu 8] [--strong-batch-factor 8] [--no-models]

writes ``model.json`` (every number, input and assumption), ``model.md`` (the tables) and the figures
``model_weak.png`` and ``model_strong.png`` into ``--out``. Nothing is timed: the inputs are
``scaling.json`` and ``batch16/scaling.json`` beside this script (measured), the link presets of
:mod:`hepgan.bench.commmodel` (vendor figures and assumed latencies) and a per-GPU compute time per step
(a parameter; its default is derived in ``compute_defaults`` below and in README.md). The parameter
counts come from the paper models themselves (built abstractly, nothing computed; ``--no-models``
uses the counts of docs/models.md instead and skips the FLOP estimate).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from hepgan.bench import commmodel as cm
from hepgan.fileio import write_json, write_text

HERE = Path(__file__).resolve().parent


def read_json(path: Path) -> Any:
    """The JSON document at ``path``."""
    return json.loads(Path(path).read_text())


PS = [2**k for k in range(11)]  # 1 .. 1024 GPUs
SENSITIVITY = (0.1, 1.0, 10.0)  # compute time factors for the efficiency at 1024 GPUs

# Networks across nodes, each with the NVLink of its generation inside the node. The compute time is the
# same in all of them (a V100 figure): the rows isolate the network, and a newer GPU, which computes
# faster, moves towards the 0.1x column of the sensitivity table.
NETWORKS: dict[str, tuple[cm.Link, cm.Link]] = {
    "25GbE": (cm.NVLINK2, cm.ETH_25G),
    "EDR": (cm.NVLINK2, cm.IB_EDR),
    "HDR": (cm.NVLINK3, cm.IB_HDR),
    "NDR": (cm.NVLINK4, cm.IB_NDR),
}
COLORS = {"25GbE": "tab:red", "EDR": "tab:orange", "HDR": "tab:blue", "NDR": "tab:green"}
STYLES = {"ring": "-", "tree": ":", "hierarchical": "--"}


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def model_facts(build: bool) -> dict[str, Any]:
    """Trainable parameters (and, with ``build``, gradient leaves and forward GFLOP per shower of the
    convolutions) of the paper models; the counts must equal those of :data:`cm.PAPER_MODELS`."""
    out: dict[str, Any] = {}
    for name, grads in cm.PAPER_MODELS.items():
        out[name] = {"g_params": grads.g_params, "d_params": grads.d_params, "source": "docs/models.md"}
    if not build:
        return out
    import jax
    from flax import nnx

    from hepgan.models import ModelConfig
    from hepgan.models import build as build_models
    from hepgan.models.base import conv_specs
    from hepgan.models.conv import conv_flops

    for name, grads in cm.PAPER_MODELS.items():
        g, d = nnx.eval_shape(lambda n=name: build_models(ModelConfig(arch=n, size="paper"), nnx.Rngs(0)))
        g_leaves = [int(x.size) for x in jax.tree.leaves(nnx.state(g, nnx.Param))]
        d_leaves = [int(x.size) for x in jax.tree.leaves(nnx.state(d, nnx.Param))]
        if (sum(g_leaves), sum(d_leaves)) != (grads.g_params, grads.d_params):
            raise SystemExit(
                f"{name}: the built model has {sum(g_leaves)} + {sum(d_leaves)} trainable parameters, "
                f"hepgan.bench.commmodel says {grads.g_params} + {grads.d_params}"
            )
        flops = {"G": 0.0, "D": 0.0}
        for s in conv_specs(g, d, 1):
            x, k = s.x_shape, s.kernel_shape
            flops[s.name[0]] += conv_flops(x[0], x[1:4], k[:3], k[3], k[4], s.padding, s.upsample)["direct"]
        out[name] = {
            "g_params": sum(g_leaves),
            "d_params": sum(d_leaves),
            "g_leaves": len(g_leaves),
            "d_leaves": len(d_leaves),
            "source": "hepgan.models.build(size=paper), built abstractly",
            "forward_gflop_per_shower": {"G": flops["G"] / 1e9, "D": flops["D"] / 1e9},
        }
    return out


def compute_defaults(facts: dict[str, Any], fixed25_s: float, angle51_s: float) -> dict[str, Any]:
    """Per-GPU compute time per step [s] at the paper batch, with the arithmetic behind the defaults and
    the FLOP rate each implies (where the FLOPs are known)."""
    steps = 30 * 200_000 / 128  # fixed25: 30 epochs of 200k showers at batch 128
    out: dict[str, Any] = {
        "fixed25": {
            "compute_s": fixed25_s,
            "batch": 128,
            "derivation": (
                "the papers' 'about 30 epochs of 200k showers in a few hours on one V100' at batch 128 "
                f"(hepgan/conf/experiment/paper_fixed25.yaml): 30 * 200000 / 128 = {steps:.0f} steps; "
                f"'a few hours' taken as 3 h: 10800 s / {steps:.0f} = {10800 / steps:.3f} s per step "
                f"(2 h: {7200 / steps:.3f} s, 5 h: {18000 / steps:.3f} s)"
            ),
            "default_s": round(10800 / steps, 2),
        },
        "angle51": {
            "compute_s": angle51_s,
            "batch": 64,
            "derivation": (
                "'~32-35 showers/s per V100' for AngleGAN training (hepgan/conf/experiment/"
                f"paper_angle51.yaml, from the papers): 64 / 33.5 = {64 / 33.5:.2f} s per step at batch 64"
            ),
            "default_s": round(64 / 33.5, 1),
        },
        "caveat": (
            "no GPU step time is measured in this repository (experiments/gpu/run.sh would measure one); "
            "both defaults are second-hand figures for a V100 and are not verified here"
        ),
    }
    v100_fp32_tflops = 15.7  # NVIDIA Tesla V100 SXM2 datasheet, FP32 peak
    for name in ("fixed25", "angle51"):
        f = facts[name].get("forward_gflop_per_shower")
        if not f:
            continue
        # per shower and step, in forward-pass equivalents (backward ~ 2 forward): D on real (3 D),
        # G forward + D on fake (G + 3 D), two G updates (each G + D forward, D backward to the input,
        # G backward: 3 G + 2 D): 10 D + 7 G
        gflop = 10 * f["D"] + 7 * f["G"]
        step_tflop = gflop * out[name]["batch"] / 1e3
        rate = step_tflop / out[name]["compute_s"]
        out[name]["flop_estimate"] = {
            "convolution_gflop_per_shower_and_step": gflop,
            "tflop_per_step": step_tflop,
            "implied_tflops": rate,
            "implied_fraction_of_v100_fp32_peak": rate / v100_fp32_tflops,
            "counting": "convolutions only, direct algorithm; step = 10 D + 7 G forward equivalents",
        }
    return out


# ----------------------------------------------------------------------------------------------------
# The CPU measurements
# ----------------------------------------------------------------------------------------------------


def cpu_runs(path: Path) -> list[dict[str, Any]]:
    """The 2-worker mpi runs of one ``scaling.json`` with their baseline and the repeat's independent
    pair (the machine's ceiling)."""
    res = read_json(path)
    indep = {r["repeat"]: r["efficiency"] for r in res["runs"] if r["backend"] == "independent"}
    out = []
    for r in res["runs"]:
        if r["backend"] != "mpi" or r["workers"] != 2:
            continue
        out.append(
            {
                "file": str(path.relative_to(HERE)),
                "mode": r["mode"],
                "reduce": "flat" if r["mpi_reduce"] == "flat" else "per-array",
                "repeat": r["repeat"],
                "per_device_batch": r["per_device_batch"],
                "calls": r["allreduce_calls_per_step"],
                "bytes": r["bytes_reduced_per_step"],
                "reduce_s": r["reduce_s"],
                "step_s": r["step_s"],
                "baseline_step_s": r["baseline_step_s"],
                "efficiency": r["efficiency"],
                "independent_efficiency": indep.get(r["repeat"]) if r["mode"] == "weak" else None,
            }
        )
    return out


def cpu_check(files: list[Path]) -> dict[str, Any]:
    """Fit alpha and beta of the ring to the first file's mpi reductions, predict the others', and set the
    modelled against the measured reduction times and efficiencies."""
    runs = {str(f.relative_to(HERE)): cpu_runs(f) for f in files}
    first = next(iter(runs))

    def points(rs: list[dict[str, Any]]) -> list[cm.Measurement]:
        return [cm.Measurement(r["bytes"], 2, r["reduce_s"], r["calls"]) for r in rs]

    alpha, beta = cm.fit_alpha_beta(points(runs[first]), "ring")
    alpha_all, beta_all = cm.fit_alpha_beta(points([r for rs in runs.values() for r in rs]), "ring")
    per_file = {
        name: dict(zip(("alpha_s", "beta_s_per_B"), cm.fit_alpha_beta(points(rs)), strict=True))
        for name, rs in runs.items()
    }
    rows = []
    for name, rs in runs.items():
        for r in rs:
            model = cm.predict_s(cm.Measurement(r["bytes"], 2, 0.0, r["calls"]), alpha, beta, "ring")
            t1 = r["baseline_step_s"]
            # weak: both workers compute what the baseline computes, plus the reduction;
            # strong: each computes half (ideal halving) plus the reduction
            e_model = t1 / (t1 + model) if r["mode"] == "weak" else t1 / (2 * (t1 / 2 + model))
            rows.append(
                {
                    **r,
                    "fitted_on_this_file": name == first,
                    "reduce_model_s": model,
                    "reduce_share_of_step": r["reduce_s"] / r["step_s"],
                    "efficiency_model": e_model,
                }
            )
    shares: dict[str, Any] = {}
    for name in runs:
        shares[name] = {}
        for mode in ("weak", "strong"):
            sh = [x["reduce_share_of_step"] for x in rows if x["file"] == name and x["mode"] == mode]
            shares[name][mode] = {"min": min(sh), "median": statistics.median(sh), "max": max(sh)}
    indep = {}
    for f in files:
        effs = [r["efficiency"] for r in read_json(f)["runs"] if r["backend"] == "independent"]
        indep[str(f.relative_to(HERE))] = {"min": min(effs), "max": max(effs), "all": effs}
    resid = [x["reduce_model_s"] - x["reduce_s"] for x in rows if not x["fitted_on_this_file"]]
    return {
        "algorithm": "ring (at p = 2 a reduce-scatter + all-gather: 2 alpha + n beta per call)",
        "fit_on": first,
        "alpha_s": alpha,
        "beta_s_per_B": beta,
        "bandwidth_Bps": 1 / beta if beta > 0 else math.inf,
        "fit_on_all": {"alpha_s": alpha_all, "beta_s_per_B": beta_all},
        "fit_per_file": per_file,
        "held_out_residual_s": {
            "median_abs": statistics.median(abs(x) for x in resid) if resid else None,
            "all": resid,
        },
        "rows": rows,
        "reduce_share_of_step": shares,
        "independent_pair_efficiency": indep,
        "note": (
            "alpha here is the cost of one mpi4jax all-reduce call on a 2-core VM (MPICH shared memory, "
            "dispatch, buffer copies), beta includes the summation and the ravel/unravel copies; at p = 2 "
            "ring and tree cannot be told apart (the tree's fit gives the same alpha and half the beta)"
        ),
    }


# ----------------------------------------------------------------------------------------------------
# GPU model
# ----------------------------------------------------------------------------------------------------


def _points(pts: list[cm.ScalingPoint]) -> list[dict[str, float]]:
    return [
        {
            "p": q.p,
            "batch_per_gpu": q.batch_per_gpu,
            "compute_s": q.compute_s,
            "comm_s": q.comm_s,
            "exposed_s": q.exposed_s,
            "step_s": q.step_s,
            "efficiency": q.efficiency,
        }
        for q in pts
    ]


def gpu_model(a: argparse.Namespace, compute: dict[str, Any]) -> dict[str, Any]:
    """Weak and strong scaling per paper model, network and algorithm; the compute-time sensitivity at
    1024 GPUs."""
    weak: dict[str, Any] = {}
    strong: dict[str, Any] = {}
    sens: dict[str, Any] = {}
    for name, grads in cm.PAPER_MODELS.items():
        t = compute[name]["compute_s"]
        gb = a.strong_batch_factor * grads.batch
        for net, (intra, inter) in NETWORKS.items():
            cl = cm.Cluster(intra, inter, a.gpus_per_node, a.nics_per_node)
            for alg in cm.ALGORITHMS:
                key = f"{name}|{net}|{alg}"
                w = cm.weak_scaling(
                    PS, t, grads.messages_B, alg, cl, overlap=a.overlap, batch_per_gpu=grads.batch
                )
                weak[key] = _points(w)
                s = cm.strong_scaling(
                    PS,
                    t,
                    grads.batch,
                    gb,
                    grads.messages_B,
                    alg,
                    cl,
                    overlap=a.overlap,
                    min_batch_per_gpu=a.min_batch_per_gpu,
                )
                strong[key] = _points(s)
                sens[key] = {
                    f"{f:g}x": cm.weak_scaling([PS[-1]], f * t, grads.messages_B, alg, cl, overlap=a.overlap)[
                        0
                    ].efficiency
                    for f in SENSITIVITY
                }
    return {"weak": weak, "strong": strong, "sensitivity_1024": sens}


def anchors(a: argparse.Namespace, compute: dict[str, Any]) -> list[dict[str, Any]]:
    """The published scaling figures of the 3DGAN family with the model's efficiency for the closest
    configuration we can state."""
    t = compute["fixed25"]["compute_s"]
    msgs = cm.FIXED25.messages_B
    specs: list[dict[str, Any]] = [
        {
            "label": "12 P100 (2018)",
            "published": [(12, 0.989)],
            "source": (
                "Hesam et al., 'Evaluating POWER Architecture for Distributed Training of Generative "
                "Adversarial Networks', ISC 2019 workshops, LNCS 11887, doi:10.1007/978-3-030-34356-9_32: "
                "3DGAN on an IBM "
                "POWER8 cluster with 12 P100; 1 -> 12 GPUs 98.9 % (training only); full training 20 h 16 min "
                "on one GPU, 2 h 14 min on 12"
            ),
            "network": "not stated in the abstract read here; POWER8 'Minsky' nodes hold 4 P100 on NVLink 1",
            "cluster": cm.Cluster(cm.NVLINK1, cm.IB_EDR, gpus_per_node=4),
            "model_config": "3 nodes x 4 P100, NVLink 1 inside, EDR assumed across",
        },
        {
            "label": "128 Xeon nodes (Intel, 2018-19)",
            "published": [(128, 0.94)],
            "lower_bound": True,
            "source": (
                "Vallecorsa et al., 'Distributed Training of Generative Adversarial Networks for Fast "
                "Detector Simulation', ISC 2018 workshops, LNCS 11203, doi:10.1007/978-3-030-02465-9_35: "
                "TACC Stampede2, Intel Xeon Scalable "
                "nodes, > 94 % from 1 to 128 nodes"
            ),
            "network": "Stampede2's Intel Omni-Path, 100 Gb/s (TACC documentation; not re-checked here)",
            "cluster": cm.Cluster(cm.NVLINK2, cm.IB_EDR, gpus_per_node=1),
            "model_config": "one worker per node on an EDR-class 100 Gb/s network (Omni-Path: same rate)",
        },
        {
            "label": "cloud V100 (2020/21)",
            "published": [(64, 0.94), (128, 0.80)],
            "source": (
                "3DGAN with Horovod on a cloud GPU cluster, 2020/21 reports (figures quoted without a "
                "source checked here; a related report: Cardoso et al., 'Accelerating GAN training using "
                "highly "
                "parallel hardware on public cloud', EPJ Web Conf. 251 (2021) 02073)"
            ),
            "network": "not known from what was read here; taken as 25 GbE class (typical cloud V100 nodes)",
            "cluster": cm.Cluster(cm.NVLINK2, cm.ETH_25G, gpus_per_node=8),
            "model_config": "8 V100 per node, NVLink 2 inside, 25 GbE across",
        },
    ]
    out = []
    for s in specs:
        cl = s.pop("cluster")
        rows = []
        for p, e in s["published"]:
            model = {
                alg: cm.weak_scaling([p], t, msgs, alg, cl, overlap=a.overlap)[0].efficiency
                for alg in cm.ALGORITHMS
            }
            comm = {alg: cm.step_comm_s(msgs, p, alg, cl) for alg in cm.ALGORITHMS}
            diff = model["ring"] - e
            if s.get("lower_bound") and diff >= 0:
                verdict = f"consistent: the published figure is a lower bound (> {100 * e:.0f} %)"
            elif abs(diff) <= 0.02:
                verdict = "agrees (ring within 2 points)"
            elif diff > 0:
                verdict = f"model more optimistic by {100 * diff:.1f} points (ring)"
            else:
                verdict = f"model more pessimistic by {100 * -diff:.1f} points (ring)"
            rows.append({"p": p, "published": e, "model": model, "comm_s": comm, "verdict": verdict})
        entry = {
            **s,
            "published": [{"p": p, "efficiency": e} for p, e in s["published"]],
            "rows": rows,
            "cluster": {
                "intra": cl.intra.name,
                "inter": cl.inter.name,
                "gpus_per_node": cl.gpus_per_node,
                "nics_per_node": cl.nics_per_node,
            },
            "compute_s": t,
        }
        out.append(entry)
    # The cloud pair: the overhead the published figures imply, T_comm / T_compute = 1/E - 1, grows by
    # (1/0.80 - 1) / (1/0.94 - 1) = 3.9x from 64 to 128 GPUs; an alpha-beta cost can at most double.
    cloud = out[-1]
    r64, r128 = cloud["rows"]
    implied = (1 / r128["published"] - 1) / (1 / r64["published"] - 1)
    cloud["overhead_growth_64_to_128"] = {
        "published": implied,
        "model": {alg: r128["comm_s"][alg] / r64["comm_s"][alg] for alg in cm.ALGORITHMS},
        "compute_s_for_ring_to_give_80_at_128": 4 * r128["comm_s"]["ring"],
    }
    return out


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(res: dict[str, Any]) -> str:
    """The tables of ``model.md``."""
    inp, cpu, gpu = res["inputs"], res["cpu_check"], res["gpu"]
    out = [
        "# Alpha-beta model of data-parallel 3DGAN training: tables",
        "",
        "Written by `python experiments/scaling/model.py`; all numbers, inputs and assumptions are in "
        "`model.json`, the discussion in README.md. Efficiencies in %.",
        "",
        "## Inputs",
        "",
    ]
    rows = []
    for name, m in inp["models"].items():
        c = inp["compute"][name]
        rows.append(
            [
                name,
                f"{m['g_params']:,} + {m['d_params']:,}",
                f"{m['gradient_bytes_per_step']:,}",
                str(m["allreduces_per_step"]),
                str(m["batch_per_gpu"]),
                f"{c['compute_s']:.3g}",
            ]
        )
    out.append(
        _table(
            [
                "model",
                "trainable params G + D",
                "gradient bytes / step",
                "all-reduces / step",
                "batch / GPU",
                "compute s / step (V100)",
            ],
            rows,
        )
    )
    out += ["", "Links (nominal bandwidth per direction; latencies are assumptions):", ""]
    out.append(
        _table(
            ["link", "alpha [us]", "bandwidth [GB/s]", "source"],
            [
                [v["name"], f"{1e6 * v['alpha_s']:g}", f"{v['bandwidth_Bps'] / 1e9:g}", v["source"]]
                for v in inp["links"].values()
            ],
        )
    )
    cl = inp["cluster"]
    out += [
        "",
        f"Nodes of {cl['gpus_per_node']} GPUs with {cl['nics_per_node']} network port(s); overlap "
        f"{cl['overlap']:g}; strong scaling: global batch {cl['strong_batch_factor']} x the paper batch, "
        f"compute floor at {cl['min_batch_per_gpu']:g} showers per GPU.",
        "",
        "## Check against the 2-worker CPU measurements (mpi backend)",
        "",
        f"Ring fitted to `{cpu['fit_on']}`: alpha = {1e6 * cpu['alpha_s']:.1f} us per call, beta = "
        f"{1e9 * cpu['beta_s_per_B']:.3f} ns/B ({cpu['bandwidth_Bps'] / 1e9:.2f} GB/s); fitted to both "
        f"files: alpha = {1e6 * cpu['fit_on_all']['alpha_s']:.1f} us, beta = "
        f"{1e9 * cpu['fit_on_all']['beta_s_per_B']:.3f} ns/B; to each file alone: "
        + ", ".join(
            f"`{k}` {1e6 * v['alpha_s']:.1f} us, {1e9 * v['beta_s_per_B']:.3f} ns/B"
            for k, v in cpu["fit_per_file"].items()
        )
        + ". Rows of the other file are predictions; E model = T_1 / (T_1 + modelled reduction) (weak), "
        "T_1 / (2 (T_1 / 2 + modelled reduction)) (strong, ideal halving of the compute).",
        "",
    ]
    rows = []
    for r in cpu["rows"]:
        rows.append(
            [
                r["file"].replace("/scaling.json", "").replace("scaling.json", "batch 8"),
                r["mode"],
                r["reduce"],
                str(r["repeat"]),
                str(r["calls"]),
                f"{1e3 * r['reduce_s']:.2f}",
                f"{1e3 * r['reduce_model_s']:.2f}",
                f"{100 * r['reduce_share_of_step']:.2f}",
                _pct(r["efficiency"]),
                _pct(r["independent_efficiency"]) if r["independent_efficiency"] is not None else "",
                _pct(r["efficiency_model"]),
            ]
        )
    out.append(
        _table(
            [
                "run",
                "mode",
                "reduction",
                "repeat",
                "calls",
                "reduce ms measured",
                "reduce ms model",
                "reduce % of step",
                "E measured",
                "E of the never-communicating pair",
                "E model",
            ],
            rows,
        )
    )
    out += ["", "## Weak scaling (per-GPU batch fixed at the paper batch)", ""]
    out.append(_curve_table(gpu["weak"]))
    out += [
        "",
        "## Strong scaling (global batch fixed)",
        "",
        f"Global batch {cl['strong_batch_factor']} x the paper batch (fixed25: "
        f"{cl['strong_batch_factor'] * 128}, angle51: {cl['strong_batch_factor'] * 64}). Below "
        f"{cl['strong_batch_factor']} GPUs the per-GPU batch is larger than the paper batch, so strong "
        "efficiency can exceed weak there; from there on it is smaller. Once the per-GPU batch falls "
        f"below the floor of {cl['min_batch_per_gpu']:g} showers the compute time stops shrinking and "
        "the efficiency halves with every doubling (fixed25 beyond 128 GPUs, angle51 beyond 64): that "
        "part of the table is the floor assumption, not communication.",
        "",
    ]
    out.append(_curve_table(gpu["strong"]))
    out += [
        "",
        "## Sensitivity: weak efficiency at 1024 GPUs for compute times 0.1x, 1x, 10x the default",
        "",
    ]
    rows = []
    for key, v in gpu["sensitivity_1024"].items():
        rows.append([*key.split("|"), *(_pct(v[f"{f:g}x"]) for f in SENSITIVITY)])
    out.append(_table(["model", "network", "algorithm", "0.1x", "1x", "10x"], rows))
    out += ["", "## Published anchors", ""]
    rows = []
    for anc in res["anchors"]:
        for r in anc["rows"]:
            rows.append(
                [
                    anc["label"],
                    str(r["p"]),
                    ("> " if anc.get("lower_bound") else "") + _pct(r["published"]),
                    anc["network"],
                    anc["model_config"],
                    " / ".join(_pct(r["model"][alg]) for alg in cm.ALGORITHMS),
                    r["verdict"],
                ]
            )
    out.append(
        _table(
            [
                "anchor",
                "workers",
                "published E",
                "network used",
                "model configuration",
                "model E ring / tree / hier.",
                "verdict",
            ],
            rows,
        )
    )
    g = res["anchors"][-1]["overhead_growth_64_to_128"]
    out += [
        "",
        f"Cloud pair: the published 94 % -> 80 % means the overhead per unit of compute grew "
        f"{g['published']:.1f}x from 64 to 128 GPUs; the model's communication time grows "
        + ", ".join(f"{v:.2f}x ({k})" for k, v in g["model"].items())
        + ". Ring 25 GbE reaches 80 % at 128 only with a compute time of "
        f"{1e3 * g['compute_s_for_ring_to_give_80_at_128']:.0f} ms per step.",
        "",
    ]
    return "\n".join(out)


def _curve_table(curves: dict[str, list[dict[str, float]]]) -> str:
    rows = []
    for key, pts in curves.items():
        rows.append([*key.split("|"), *(_pct(q["efficiency"]) for q in pts[1:])])
    return _table(["model", "network", "algorithm", *(str(p) for p in PS[1:])], rows)


def figure(res: dict[str, Any], kind: str, path: Path) -> Path:
    """Efficiency against GPUs: one panel per model (row) and all-reduce algorithm (column), one line per
    network (colour). On the weak fixed25 panels the published anchors (open black markers) and the
    model's value for each anchor's own configuration and that panel's algorithm (filled grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = res["gpu"][kind]
    names = list(cm.PAPER_MODELS)
    fig, axes = plt.subplots(len(names), len(cm.ALGORITHMS), figsize=(15, 8.5), sharex=True, sharey=True)
    cl = res["inputs"]["cluster"]
    for i, name in enumerate(names):
        c = res["inputs"]["compute"][name]
        for j, alg in enumerate(cm.ALGORITHMS):
            ax = axes[i, j]
            for net in NETWORKS:
                pts = curves[f"{name}|{net}|{alg}"]
                ax.plot(
                    [q["p"] for q in pts],
                    [100 * q["efficiency"] for q in pts],
                    "-",
                    marker=".",
                    color=COLORS[net],
                    label=f"NVLink + {net}",
                    lw=1.4,
                )
            if kind == "weak" and name == "fixed25":
                for anc, mk in zip(res["anchors"], "os^", strict=True):
                    ps = [r["p"] for r in anc["rows"]]
                    pub = [100 * r["published"] for r in anc["rows"]]
                    mod = [100 * r["model"][alg] for r in anc["rows"]]
                    bound = " (lower bound)" if anc.get("lower_bound") else ""
                    ax.plot(
                        ps,
                        pub,
                        mk,
                        color="k",
                        ms=9,
                        mfc="none",
                        mew=1.5,
                        ls="none",
                        label=anc["label"] + bound,
                    )
                    ax.plot(ps, mod, mk, color="0.45", ms=6, ls="none", label="model, " + anc["label"])
            if kind == "strong":
                floor = cl["strong_batch_factor"] * c["batch"] / cl["min_batch_per_gpu"]
                ax.axvline(floor, color="0.5", ls=":", lw=1, label="compute floor reached")
            if kind == "weak":
                title = f"{name}, {alg}: {c['compute_s']:.3g} s per step at batch {c['batch']} per GPU"
            else:
                title = f"{name}, {alg}: global batch {cl['strong_batch_factor'] * c['batch']}"
            ax.set_title(title, fontsize=9)
            ax.set_xscale("log", base=2)
            ax.set_xticks(PS, [str(p) for p in PS], fontsize=7)
            ax.grid(alpha=0.3)
            if i == len(names) - 1:
                ax.set_xlabel("GPUs")
            if j == 0:
                ax.set_ylabel(f"{kind} scaling efficiency [%]")
    axes[0, 0].set_ylim(0 if kind == "strong" else 35, 101.5)
    axes[0, 0].legend(fontsize=6.5, loc="lower left", ncol=2)
    axes[1, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Alpha-beta model, {kind} scaling: nodes of {cl['gpus_per_node']} GPUs on NVLink, network across "
        f"(colour); overlap {cl['overlap']:g}; compute per GPU a V100 estimate"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Build the model, write ``model.json``, ``model.md``, ``model_weak.png``, ``model_strong.png``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--compute-fixed25", type=float, default=0.23, help="s per step per GPU at batch 128")
    p.add_argument("--compute-angle51", type=float, default=1.9, help="s per step per GPU at batch 64")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nics-per-node", type=int, default=1)
    p.add_argument("--overlap", type=float, default=0.0, help="fraction of communication hidden (0..1)")
    p.add_argument("--min-batch-per-gpu", type=float, default=8.0, help="strong scaling compute floor")
    p.add_argument("--strong-batch-factor", type=int, default=8, help="global batch / paper batch")
    p.add_argument("--no-models", action="store_true", help="do not build the models (no JAX)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    facts = model_facts(build=not a.no_models)
    compute = compute_defaults(facts, a.compute_fixed25, a.compute_angle51)
    files = [HERE / "scaling.json", HERE / "batch16" / "scaling.json"]
    measured_bytes = {read_json(f)["runs"][1]["bytes_reduced_per_step"] for f in files}
    models = {}
    for name, grads in cm.PAPER_MODELS.items():
        models[name] = {
            **facts[name],
            "batch_per_gpu": grads.batch,
            "gradient_messages_B": grads.gradient_messages_B,
            "small_messages_B": list(grads.small_messages_B),
            "allreduces_per_step": len(grads.messages_B),
            "gradient_bytes_per_step": grads.gradient_bytes_per_step,
            "bytes_of_both_players_once": 4 * (grads.g_params + grads.d_params),
        }
    fixed = models["fixed25"]
    if measured_bytes != {fixed["gradient_bytes_per_step"]}:
        raise SystemExit(f"fixed25: model {fixed['gradient_bytes_per_step']} B, measured {measured_bytes}")
    fixed["check_against_scaling_json"] = (
        f"4 B x (G + D) = {fixed['bytes_of_both_players_once']:,} B is half of the measured "
        f"bytes_reduced_per_step {fixed['gradient_bytes_per_step']:,} B: the paper schedule reduces each "
        "player's gradient twice per step (2 D + 2 G updates); the model uses the measured accounting"
    )

    res: dict[str, Any] = {
        "what": "alpha-beta model of data-parallel 3DGAN training on 1-1024 GPUs (model.py beside this file)",
        "inputs": {
            "models": models,
            "compute": compute,
            "links": {
                k: {
                    "name": v.name,
                    "alpha_s": v.alpha_s,
                    "bandwidth_Bps": v.bandwidth_Bps,
                    "source": v.source,
                }
                for k, v in cm.LINKS.items()
            },
            "networks": {k: {"intra": i.name, "inter": e.name} for k, (i, e) in NETWORKS.items()},
            "cluster": {
                "gpus_per_node": a.gpus_per_node,
                "nics_per_node": a.nics_per_node,
                "overlap": a.overlap,
                "min_batch_per_gpu": a.min_batch_per_gpu,
                "strong_batch_factor": a.strong_batch_factor,
            },
            "assumptions": [
                "link bandwidths are nominal vendor figures per direction; real collectives reach less",
                "latencies (alpha) are typical figures, not measured: NVLink 3 us, InfiniBand 5 us, 25 GbE "
                "(TCP between cloud VMs) 25 us",
                "each gradient all-reduce is one fused buffer per player and update (Horovod tensor fusion, "
                "the mpi backend's flat reduction); the step's all-reduces run one after another",
                "flat ring and tree over more than one node run at the network's alpha and bandwidth",
                "hierarchical: ring reduce-scatter in the node, ring across nodes, all-gather in the node; "
                "the node's network ports are shared by its GPUs",
                "binary tree without pipelining (2 ceil(log2 p) rounds of the whole message)",
                "the compute time per step is the same on every network (a V100 figure) and on every GPU",
                "overlap = 0: no communication hides behind the backward pass (conservative)",
                "strong scaling: compute linear in the per-GPU batch down to min_batch_per_gpu showers, "
                "constant below (assumed floor)",
                "stragglers, input pipelines, framework overheads and stalls are not modelled",
            ],
        },
        "cpu_check": cpu_check(files),
    }
    res["gpu"] = gpu_model(a, compute)
    res["anchors"] = anchors(a, compute)
    write_json(out / "model.json", res)
    write_text(out / "model.md", markdown(res))
    figure(res, "weak", out / "model_weak.png")
    figure(res, "strong", out / "model_strong.png")

    cpu = res["cpu_check"]
    print(
        f"CPU fit (ring, {cpu['fit_on']}): alpha {1e6 * cpu['alpha_s']:.1f} us, beta "
        f"{1e9 * cpu['beta_s_per_B']:.3f} ns/B; held-out median |error| "
        f"{1e3 * cpu['held_out_residual_s']['median_abs']:.2f} ms"
    )
    for key in (
        "fixed25|HDR|ring",
        "fixed25|25GbE|ring",
        "fixed25|HDR|hierarchical",
        "fixed25|25GbE|hierarchical",
    ):
        e = {q["p"]: q["efficiency"] for q in res["gpu"]["weak"][key]}
        print(f"weak {key:28s} E(64) {_pct(e[64])} %  E(128) {_pct(e[128])} %  E(1024) {_pct(e[1024])} %")
    for anc in res["anchors"]:
        for r in anc["rows"]:
            print(
                f"anchor {anc['label']:32s} p={r['p']:4d} published {_pct(r['published'])} %  "
                f"model ring {_pct(r['model']['ring'])} %: {r['verdict']}"
            )
    print(f"wrote {out / 'model.json'}, model.md, model_weak.png, model_strong.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
