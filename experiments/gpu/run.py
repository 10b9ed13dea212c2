"""The GPU check of the paper models in one go: training throughput per convolution implementation and
matmul precision, whether a lower precision leaves the physics alone, and a paper_fixed25 convergence run.

    bash experiments/gpu/run.sh [options]                 # on the GPU machine: installs the wheels first
    python experiments/gpu/run.py --out DIR [options]      # where hepgan and its dependencies are installed
    JAX_PLATFORMS=cpu python experiments/gpu/run.py --out /tmp/gpu-smoke --quick --budget-minutes 6
                                                           # smoke test of the script on a CPU (tiny models)

Stages, in this order, each isolated (one that fails or runs out of time leaves the others' results):

``throughput``
    For the paper fixed25 3DGAN and AngleGAN (each at its experiment's batch: 128 and 64) x
    ``model.conv_impl`` in {xla, fft} x precision in {default, highest, bf16} (not fft with bf16: see
    ``ALGORITHM_PRECISIONS``): showers/s of the full
    training update (the paper schedule, two discriminator and two generator updates, as
    ``hepgan.train.fit`` builds it from ``experiment=paper_<arch>``) on one simulated batch kept on the
    device, timed for ``--seconds`` after compilation and warm-up. The precision is JAX's
    ``jax_default_matmul_precision`` (see ``PRECISIONS``); the model code is unchanged. Cases run in
    order of interest (XLA's convolution first, the default precision first), so that a budget cut
    loses the least. Besides, for each case, from the same initial state and batch: the generator's
    showers before any update and the losses and gradient norms of the first update, compared with
    float32 ("highest") and written to ``precision.jsonl`` (kind ``init``).
``convergence``
    ``hepgan-train experiment=paper_fixed25`` on showers simulated in memory, for
    ``--convergence-minutes`` (default 30, cut to what the budget leaves): ``train.max_steps`` from the
    measured throughput, ``data.n_events`` so that the run sees about a dozen epochs, a validation
    every few epochs, and SIGTERM at the deadline as a backstop (hepgan-train then checkpoints and exits
    75; ``val.csv`` keeps the validations so far).
``inference``
    The trained generator's physics_score on fresh showers at each precision (same reference events
    and noise), and at float32 with another seed: the sampling noise the precision effect is judged
    against (``precision.jsonl``, kind ``trained``).

Files under ``--out``, flat and at most eight (so that a job system that returns few files loses
none): ``machine.txt`` and
``log.txt`` (written by run.sh), ``summary.json`` (rewritten after every stage), ``throughput.jsonl`` and
``precision.jsonl`` (one JSON object per line, appended as soon as measured), ``val.csv``,
``train.csv`` and ``convergence.tar.gz`` (the run's result.json, manifest.json and report).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# label -> value of jax_default_matmul_precision (None: JAX's default). On NVIDIA GPUs the legacy
# levels map as jax.lax.Precision documents: DEFAULT (also spelt "bfloat16") and HIGH ("tensorfloat32")
# run float32 convolutions and matmuls as TF32 on Ampere and later; HIGHEST is true float32. A
# DotAlgorithmPreset such as BF16_BF16_F32 (bf16 operands, f32 accumulation) reaches dots and einsums
# only: jax lowers convolutions with an algorithm preset at Precision.DEFAULT, so "bf16" here means
# bf16 dense layers and FFT channel contractions, TF32 cuDNN convolutions.
PRECISIONS: dict[str, str | None] = {
    "default": None,
    "highest": "highest",
    "tf32": "tensorfloat32",
    "bf16": "BF16_BF16_F32",
}
REFERENCE_PRECISION = "highest"
# Under a DotAlgorithmPreset jax converts a dot's operands to the algorithm's input type, and a complex64
# operand converted to bf16 loses its imaginary part: the FFT convolution's channel contraction is then
# wrong, not merely less precise (seen with jax 0.10 on CPU: the lowered dot_general takes
# convert(complex64 -> bf16)). Those combinations are not measured.
ALGORITHM_PRECISIONS = {k for k, v in PRECISIONS.items() if v is not None and v.isupper()}
FFT_PRESET_REASON = "the FFT convolution's complex operands lose their imaginary part under a dot algorithm"
ARCHS = ("fixed25", "angle51")
IMPLS = ("xla", "fft")
# the files each stage writes under --out (run.sh adds machine.txt and log.txt, run.py summary.json)
OUT_FILES = {
    "throughput": ("throughput.jsonl", "precision.jsonl"),
    "convergence": ("val.csv", "train.csv", "convergence.tar.gz"),
}
# a precision is called "plausibly unchanged" when, against float32, the untrained generator's shower
# sums move by at most SUM_TOL (max over the batch), the first update's losses and gradient norms by at
# most LOSS_TOL, and the
# trained generator's physics_score by no more than the float32 seed-to-seed difference (or SCORE_TOL)
SUM_TOL, LOSS_TOL, SCORE_TOL = 0.01, 0.01, 0.005
# the first update's metrics compared between precisions (relative differences <= LOSS_TOL)
FIRST_STEP = ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm")


# ---- small helpers ---------------------------------------------------------------------------------


class Clock:
    """Seconds left of the whole check's budget, counted from ``t0`` (run.sh's start when it set one)."""

    def __init__(self, budget_s: float, t0: float | None = None) -> None:
        self.t0 = time.time() if t0 is None else t0
        self.budget_s = budget_s

    def left(self) -> float:
        """Seconds until the budget is spent (negative once over)."""
        return self.t0 + self.budget_s - time.time()

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.time() - self.t0


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON object as a line and flush it to disk, so a killed run keeps every line so far."""
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (none if it is missing; a torn last line is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def case_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """``(arch, conv_impl, precision)`` of a throughput case or result row."""
    return row["arch"], row["conv_impl"], row["precision"]


_ACTIVE: list[subprocess.Popen[bytes]] = []  # the child process running now, ended with us


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a process group of its own (in this session, so that whoever ends the session
    ends it too); :func:`on_signal` ends the group if this process is stopped first."""
    proc = subprocess.Popen(cmd, env=env, process_group=0)
    _ACTIVE[:] = [proc]
    return proc


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (it and any processes it started) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def on_signal(signum: int, frame: Any) -> None:
    """SIGTERM/SIGINT: end the running child's group with this process, so none outlives the check."""
    for proc in _ACTIVE:
        if proc.poll() is None:
            kill_group(proc)
    raise SystemExit(128 + signum)


def run_child(kind: str, spec: dict[str, Any], timeout: float, tmp: Path) -> int | str:
    """Run ``run.py _child <kind> <spec>``; its exit code, or "timeout" after killing its process group
    when it outlives ``timeout`` seconds. Its output goes to this process's stdout."""
    spec_path = tmp / f"{kind}.json"
    spec_path.write_text(json.dumps(spec))
    proc = spawn([sys.executable, str(Path(__file__).resolve()), "_child", kind, str(spec_path)])
    try:
        return proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return "timeout"


# ---- throughput and the precision check of one update (child process) ------------------------------


def build_case(arch: str, size: str, impl: str, batch: int) -> dict[str, Any]:
    """State, jitted update, one preprocessed batch and the players of ``experiment=paper_<arch>``, built
    as ``hepgan.train.fit`` builds them (single device; no data pipeline: the batch stays on the device).

    Returns ``{"state", "players", "step", "batch" ({"ecal": [B, X, Y, Z], "energy": [B] E/100,
    "theta": [B] rad}), "showers" (the batch in GeV), "preprocess"}``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hepgan.train.config import compose
    from hepgan.train.run import build_run

    cfg = compose(
        [
            f"experiment=paper_{arch}",
            f"model.size={size}",
            f"model.conv_impl={impl}",
            f"train.batch_size={batch}",
            f"data.n_events={batch}",
            "data.n_reference=1",
        ]
    )
    # assembled as training assembles it; the run length only shapes a cosine decay, not used here
    run = build_run(cfg, parallel=False, total_steps=1000)
    assert run.sources is not None
    showers = run.sources.train.read(np.arange(batch))
    host = run.preprocess.apply(showers)
    state, players, preprocess = run.state, run.players, run.preprocess
    return {
        "state": state,
        "players": players,
        "step": run.update,
        "batch": {k: jnp.asarray(v) for k, v in host.items()},
        "showers": showers,
        "preprocess": preprocess,
        "device": str(jax.devices()[0].device_kind),
    }


def measure_case(
    arch: str, size: str, impl: str, precision: str, batch: int, seconds: float, warmup: int = 2
) -> tuple[dict, dict]:
    """Compile and time the update of one case under ``precision`` (a key of ``PRECISIONS``): one
    update, ``warmup`` more, then as many as fit in ``seconds`` (at least one), timed.

    Returns the result row (showers/s, step ms, compile s, model FLOPs, first-step metrics) and what
    the precision check compares: ``gen`` the untrained EMA generator's showers at the batch's
    conditions ``[B, X, Y, Z]`` GeV and ``first_step`` the first update's losses and gradient norms.
    (Not the parameter updates: RMSprop's first update is about ``lr * sign(gradient)``, so gradients
    near zero flip it under any rounding, float32 implementations against each other included.)
    """
    import jax
    import numpy as np

    from hepgan.train.state import generate

    with jax.default_matmul_precision(PRECISIONS[precision]):
        c = build_case(arch, size, impl, batch)
        state, batch_d, showers = c["state"], c["batch"], c["showers"]
        theta = showers.theta_or_normal()
        gen = generate(c["players"], state, showers.energy, theta, batch=batch, seed=0)
        gen = np.asarray(c["preprocess"].invert_cells(gen), np.float32)

        jitted = jax.jit(c["step"], donate_argnums=0)
        t0 = time.perf_counter()
        lowered = jitted.lower(state, batch_d)
        try:
            cost = lowered.cost_analysis()
            cost = cost[0] if isinstance(cost, list | tuple) else cost
            flops = float(cost.get("flops", math.nan)) if cost else math.nan
        except Exception:  # not every backend reports a cost analysis
            flops = math.nan
        compiled = lowered.compile()
        compile_s = time.perf_counter() - t0

        state, m = compiled(state, batch_d)  # the first update: also the precision check's step
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        m_ = m
        for _ in range(warmup):  # past first-call effects (allocator, autotuned kernels loaded)
            state, m_ = compiled(state, batch_d)
        jax.block_until_ready(m_)

        steps, chunk = 0, 1
        t0 = time.perf_counter()
        while True:  # dispatch in growing chunks, synchronising once per chunk as the trainer does
            for _ in range(chunk):
                state, m_ = compiled(state, batch_d)
            jax.block_until_ready(m_)
            steps += chunk
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
            if elapsed < 0.25 * seconds:
                chunk *= 2
        finite = bool(jax.device_get(m_["finite"]) >= 1.0)
    row = {
        "arch": arch,
        "size": size,
        "conv_impl": impl,
        "precision": precision,
        "jax_default_matmul_precision": PRECISIONS[precision],
        "batch": batch,
        "status": "ok",
        "device": c["device"],
        "compile_s": compile_s,
        "steps": steps,
        "seconds": elapsed,
        "step_ms": 1e3 * elapsed / steps,
        "train_showers_per_s": steps * batch / elapsed,
        "model_flops_per_step": flops,
        "achieved_tflops_per_s": flops * steps / elapsed / 1e12,
        "first_step": {k: m[k] for k in FIRST_STEP},
        "finite_after_timing": finite,
    }
    arrays = {"gen": gen, "first_step": row["first_step"]}
    return row, arrays


def compare(arrays: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """Differences of one case's precision-check arrays from the reference case's (see measure_case):
    the generated cells (relative L2), the showers' energy sums (relative, mean and max over the batch)
    and each first-step metric (relative)."""
    import numpy as np

    x, r = arrays["gen"].astype(np.float64), ref["gen"].astype(np.float64)
    axes = tuple(range(1, x.ndim))
    sx, sr = x.sum(axis=axes), r.sum(axis=axes)
    sum_rel = np.abs(sx - sr) / np.maximum(np.abs(sr), 1e-12)
    out = {
        "gen_cells_rel_l2": float(np.linalg.norm(x - r) / max(float(np.linalg.norm(r)), 1e-30)),
        "gen_sum_rel_diff_mean": float(sum_rel.mean()),
        "gen_sum_rel_diff_max": float(sum_rel.max()),
    }
    for k in FIRST_STEP:
        a, b = arrays["first_step"][k], ref["first_step"][k]
        out[f"{k}_rel_diff"] = abs(a - b) / max(abs(b), 1e-12)
    return out


def child_throughput(spec: dict[str, Any]) -> None:
    """Measure ``spec["cases"]`` in order, appending one line per case to ``throughput.jsonl`` and one per
    comparison to ``precision.jsonl``; cases that cannot finish before ``spec["stop_at"]`` are skipped."""
    import jax

    out = Path(spec["out"])
    kept: dict[tuple[str, str, str], dict[str, Any]] = {}
    compared: set[tuple[tuple[str, str, str], tuple[str, str, str]]] = set()

    def reference_of(key: tuple[str, str, str]) -> tuple[str, str, str] | None:
        """What a case is compared with: float32 with the same implementation; at float32, the other
        implementations with xla (a scale for what "the same result" means)."""
        arch, impl, precision = key
        if precision != REFERENCE_PRECISION:
            return arch, impl, REFERENCE_PRECISION
        return (arch, "xla", REFERENCE_PRECISION) if impl != "xla" else None

    def compare_ready() -> None:
        for key in list(kept):
            ref = reference_of(key)
            if ref is None or ref not in kept or (key, ref) in compared:
                continue
            compared.add((key, ref))
            diffs = compare(kept[key], kept[ref])
            row = {
                "kind": "init",
                "arch": key[0],
                "conv_impl": key[1],
                "precision": key[2],
                "reference": {"conv_impl": ref[1], "precision": ref[2]},
                **diffs,
            }
            append_jsonl(out / "precision.jsonl", row)
            shown = ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
            print(f"   {key[1]}/{key[2]} against {ref[1]}/{ref[2]}: {shown}", flush=True)

    for case in spec["cases"]:
        arch, impl, precision = case_key(case)
        base = {"arch": arch, "size": spec["size"], "conv_impl": impl, "precision": precision}
        base["batch"] = case["batch"]
        if time.time() + spec["min_case_s"] > spec["stop_at"]:
            append_jsonl(
                out / "throughput.jsonl", {**base, "status": "skipped", "reason": "stage time spent"}
            )
            continue
        print(
            f"== throughput {arch} conv_impl={impl} precision={precision} batch {case['batch']}", flush=True
        )
        try:
            row, arrays = measure_case(
                arch, spec["size"], impl, precision, case["batch"], spec["seconds"], spec["warmup"]
            )
        except Exception as exc:
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
            append_jsonl(out / "throughput.jsonl", {**base, "status": "error", "error": error})
            continue
        finally:
            jax.clear_caches()
        append_jsonl(out / "throughput.jsonl", row)
        print(
            f"   {row['train_showers_per_s']:.1f} showers/s ({row['step_ms']:.1f} ms/step, "
            f"{row['steps']} steps), compile {row['compile_s']:.1f} s, "
            f"{row['achieved_tflops_per_s']:.2f} TFLOP/s",
            flush=True,
        )
        kept[(arch, impl, precision)] = arrays
        compare_ready()


# ---- throughput stage (parent) -----------------------------------------------------------------------


def plan_cases(
    archs: list[str], impls: list[str], precisions: list[str], batch: int | None, quick: bool
) -> list[dict[str, Any]]:
    """The cases in order of interest: per implementation, per precision (as given), every model."""
    paper_batch = {"fixed25": 128, "angle51": 64}  # experiment=paper_fixed25 / paper_angle51
    cases = []
    for impl in impls:
        for precision in precisions:
            for arch in archs:
                b = batch or (2 if quick else paper_batch[arch])  # quick: XLA's CPU convolution is slow
                case = {"arch": arch, "conv_impl": impl, "precision": precision, "batch": b}
                if impl == "fft" and precision in ALGORITHM_PRECISIONS:
                    case["not_measured"] = FFT_PRESET_REASON
                cases.append(case)
    return cases


def stage_throughput(args: argparse.Namespace, clock: Clock, out: Path, tmp: Path) -> dict[str, Any]:
    """Run the throughput cases in child processes until done or the stage's time is spent; a child that
    dies costs only the case it was measuring (the next child resumes after it)."""
    cases = plan_cases(args.archs, args.impls, args.precisions, args.batch, args.quick)
    share = (
        args.throughput_minutes * 60
        if args.throughput_minutes is not None
        else min(0.4 * args.budget_minutes * 60, 720)
    )
    stop_at = time.time() + min(share, clock.left() - 30)
    path = out / "throughput.jsonl"
    for c in cases:
        if "not_measured" in c:
            append_jsonl(path, {**c, "status": "not measured", "reason": c.pop("not_measured")})
    pending, deaths = [c for c in cases if case_key(c) not in {case_key(r) for r in read_jsonl(path)}], []
    while pending and time.time() < stop_at - args.min_case_s:
        spec = {
            "out": str(out),
            "cases": pending,
            "size": "tiny" if args.quick else "paper",
            "seconds": args.seconds,
            "warmup": 0 if args.quick else 2,
            "stop_at": stop_at,
            "min_case_s": args.min_case_s,
        }
        rc = run_child("throughput", spec, stop_at - time.time() + 30, tmp)
        done = {case_key(r) for r in read_jsonl(path)}
        left = [c for c in pending if case_key(c) not in done]
        if left and rc != 0:
            why = (
                "killed at the stage deadline" if rc == "timeout" else f"the worker process exited with {rc}"
            )
            append_jsonl(path, {**left[0], "size": spec["size"], "status": "error", "error": why})
            deaths.append(why)
            left = left[1:]
            if rc == "timeout":
                break
        elif left and rc == 0:  # cannot happen unless the worker breaks its contract: do not spin
            for c in left:
                append_jsonl(path, {**c, "status": "error", "error": "the worker ended without a result"})
            left = []
        pending = left
    done = {case_key(r) for r in read_jsonl(path)}
    for c in pending:
        if case_key(c) not in done:
            append_jsonl(path, {**c, "status": "skipped", "reason": "stage time spent"})
    rows = read_jsonl(path)
    ok = [r for r in rows if r.get("status") == "ok"]
    wanted = [r for r in rows if r.get("status") != "not measured"]
    return {
        "status": "ok" if len(ok) == len(wanted) else ("partial" if ok else "failed"),
        "planned": len(cases),
        "measured": len(ok),
        "worker_deaths": deaths,
        "cases": rows,
    }


# ---- convergence stage -------------------------------------------------------------------------------


def convergence_plan(args: argparse.Namespace, wall_s: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overrides for the convergence run: conv_impl and step count from the measured fixed25 throughput
    at the run's precision, events and validation cadence from the steps (see the module docstring)."""
    measured = [r for r in rows if r.get("status") == "ok" and r["arch"] == "fixed25"]
    measured = [r for r in measured if r["precision"] == args.convergence_precision]
    best = max(measured, key=lambda r: r["train_showers_per_s"], default=None)
    impl = best["conv_impl"] if best else "auto"
    if args.quick:  # a handful of steps of the tiny model: the plumbing, not the physics
        batch, steps, n_events, n_ref, val_every = 16, 24, 256, 128, 1
        extra = ["model.size=tiny", "train.val_metrics=[sf]", "train.report=false", "data.workers=1"]
    else:
        batch = 128
        # fixed costs: start, simulation, compilation, the first validation; the final validation and report
        overhead_s, final_s = 75.0, 60.0 if wall_s >= 600 else 30.0
        avail = max(0.0, wall_s - overhead_s - final_s)
        n_ref = 5000 if wall_s >= 600 else 2000  # the paper's 5000 when there is time for it
        # one validation (generate, "fast" metrics on host cores): a guess, the deadline is the backstop
        val_s = 2.0 + 1e-3 * n_ref
        n_val = min(12, max(3, int(0.25 * avail / val_s)))
        train_s = 0.95 * (avail - n_val * val_s)  # 5 %: checkpoints
        # the data pipeline and logging cost ~15 % against the bare update measured above
        rate = 0.85 * best["train_showers_per_s"] if best else None
        steps = max(10, int(rate * train_s / batch)) if rate else 10**7  # no rate: the deadline stops it
        # an epoch between validations, up to the paper's 200k showers; then several epochs between them
        if rate:
            n_events = int(min(200_000, max(6_400, steps * batch / n_val)) // 1280 * 1280)
            val_every = max(1, round(steps * batch / n_events / n_val))
        else:
            n_events, val_every = 51_200, 1
        extra = [
            f"data.workers={min(16, os.cpu_count() or 1)}",
            f"logging.every_steps={max(10, min(100, steps // 200))}",
        ]
        if wall_s < 600:
            extra.append("train.report_metrics=[fast]")  # the full report's classifiers take a minute
    overrides = [
        "experiment=paper_fixed25",
        f"model.conv_impl={impl}",
        f"train.batch_size={batch}",
        f"train.max_steps={steps}",
        f"train.val_every_epochs={val_every}",
        f"data.n_events={n_events}",
        f"data.n_reference={n_ref}",
        "data.in_memory_max_gb=16",  # 200k fixed25 showers are 12.5 GB: keep them in memory
        "logging.progress=false",
        "logging.tensorboard=false",
        *extra,
    ]
    return {
        "conv_impl": impl,
        "measured": best,
        "max_steps": steps,
        "batch": batch,
        "n_events": n_events,
        "overrides": overrides,
    }


def _val_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's val.csv with numbers parsed."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        parsed: dict[str, Any] = {}
        for k, v in r.items():
            try:
                parsed[k] = float(v)
            except (TypeError, ValueError):
                parsed[k] = v
        out.append(parsed)
    return out


def stage_convergence(
    args: argparse.Namespace, clock: Clock, out: Path, work: Path, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Run hepgan-train for the convergence check and collect its logs (see the module docstring)."""
    reserve = (40.0 if args.quick else 90.0) if "inference" in args.stages else 10.0
    wall = min(args.convergence_minutes * 60, clock.left() - reserve)
    if wall < (20 if args.quick else 120):
        return {"status": "skipped", "reason": f"{max(wall, 0):.0f} s left of the budget"}
    plan = convergence_plan(args, wall, rows)
    run_dir = work / "convergence"
    cmd = [sys.executable, "-m", "hepgan.cli.train", *plan["overrides"], f"out={run_dir}"]
    env = dict(os.environ)
    if PRECISIONS[args.convergence_precision] is not None:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = str(PRECISIONS[args.convergence_precision])
    print("== convergence: " + " ".join(cmd[2:]), flush=True)
    grace = 20.0 if args.quick else 60.0  # time to save the checkpoint after SIGTERM
    t0 = time.time()
    proc = spawn(cmd, env)
    stopped = None
    try:
        rc: int | str = proc.wait(timeout=max(wall - grace, 1.0))
    except subprocess.TimeoutExpired:
        stopped = "SIGTERM at the deadline"
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            rc, stopped = "killed", "SIGKILL after SIGTERM"
    wall_used = time.time() - t0
    for name in ("val.csv", "train.csv"):
        if (run_dir / name).exists():
            (out / name).write_bytes((run_dir / name).read_bytes())
    with tarfile.open(out / "convergence.tar.gz", "w:gz") as tar:
        for name in (
            "result.json",
            "manifest.json",
            "fit_result.json",
            "report/metrics.json",
            "report/report.html",
        ):
            if (run_dir / name).exists():
                tar.add(run_dir / name, arcname=f"convergence/{name}")
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
    val = _val_rows(run_dir / "val.csv")
    scored = [v for v in val if isinstance(v.get("physics_score"), float)]
    best = min(scored, key=lambda v: v["physics_score"], default=None)
    train = _val_rows(run_dir / "train.csv")
    rates = [
        t["showers_per_s"] for t in train[len(train) // 2 :] if isinstance(t.get("showers_per_s"), float)
    ]
    return {
        "status": "ok" if rc == 0 else ("stopped" if stopped else "failed"),
        "exit_code": rc,
        "stopped": stopped,
        "wall_s": wall_used,
        "requested_minutes": args.convergence_minutes,
        "allotted_s": wall,
        "precision": args.convergence_precision,
        "plan": plan,
        "run_dir": str(run_dir),
        "result_status": result.get("status"),
        "steps": int(max((v["step"] for v in val), default=0)),
        "validations": [
            {
                "step": v.get("step"),
                "epoch": v["step"] * plan["batch"] / plan["n_events"] if "step" in v else None,
                "physics_score": v.get("physics_score"),
                "sf_rel_error": v.get("sf_rel_error"),
            }
            for v in val
        ],
        "initial_physics_score": scored[0]["physics_score"] if scored else None,
        "best": None if best is None else {"step": best["step"], "physics_score": best["physics_score"]},
        "final_physics_score": scored[-1]["physics_score"] if scored else None,
        "train_showers_per_s_second_half": sum(rates) / len(rates) if rates else None,
    }


# ---- inference precision on the trained generator ---------------------------------------------------


def child_inference(spec: dict[str, Any]) -> None:
    """Score the convergence run's latest checkpoint at each precision (seed 0) and at float32 with seed 1;
    one ``precision.jsonl`` line (kind ``trained``) per evaluation."""
    import jax

    from hepgan.train.api import evaluate_checkpoint

    out = Path(spec["out"])
    # the run's convolutions: "auto" is the FFT on CPU and XLA's (cuDNN's) on GPUs (hepgan.models.conv)
    impl = spec["conv_impl"]
    fft = impl == "fft" or (impl == "auto" and jax.default_backend() == "cpu")
    plan = [(REFERENCE_PRECISION, 0), (REFERENCE_PRECISION, 1)]
    plan += [(p, 0) for p in spec["precisions"] if p != REFERENCE_PRECISION]
    for precision, seed in plan:
        if fft and precision in ALGORITHM_PRECISIONS:
            row = {"kind": "trained", "precision": precision, "seed": seed, "status": "not measured"}
            append_jsonl(out / "precision.jsonl", {**row, "reason": FFT_PRESET_REASON})
            continue
        if time.time() + spec["min_s"] > spec["stop_at"]:
            append_jsonl(
                out / "precision.jsonl",
                {"kind": "trained", "precision": precision, "seed": seed, "status": "skipped"},
            )
            continue
        t0 = time.perf_counter()
        try:
            with jax.default_matmul_precision(PRECISIONS[precision]):
                m = evaluate_checkpoint(
                    spec["run_dir"], "latest", n_events=spec["n_events"], seed=seed, metrics=spec["metrics"]
                )
            row = {"kind": "trained", "precision": precision, "seed": seed, "status": "ok", **m}
        except Exception as exc:
            traceback.print_exc()
            row = {
                "kind": "trained",
                "precision": precision,
                "seed": seed,
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
            }
        row["seconds"] = time.perf_counter() - t0
        append_jsonl(out / "precision.jsonl", row)
        print(
            f"   trained generator, {precision}, seed {seed}: physics_score {row.get('physics_score')}",
            flush=True,
        )
        jax.clear_caches()


def stage_inference(
    args: argparse.Namespace, clock: Clock, out: Path, tmp: Path, convergence: dict[str, Any]
) -> dict[str, Any]:
    """Run :func:`child_inference` on the convergence run, if it left a checkpoint."""
    run_dir = Path(convergence.get("run_dir", ""))
    if not (run_dir / "checkpoints").is_dir():
        return {"status": "skipped", "reason": "no convergence checkpoint"}
    stop_at = time.time() + clock.left() - 5
    if stop_at - time.time() < 20:
        return {"status": "skipped", "reason": "budget spent"}
    spec = {
        "out": str(out),
        "run_dir": str(run_dir),
        "conv_impl": convergence.get("plan", {}).get("conv_impl", "auto"),
        "precisions": args.precisions,
        "n_events": 128 if args.quick else 2000,
        "metrics": ["sf"] if args.quick else ["fast"],
        "stop_at": stop_at,
        "min_s": 5 if args.quick else 15,
    }
    print("== inference precision on the trained generator", flush=True)
    rc = run_child("inference", spec, stop_at - time.time(), tmp)
    rows = [r for r in read_jsonl(out / "precision.jsonl") if r.get("kind") == "trained"]
    return {"status": "ok" if rc == 0 else f"failed ({rc})", "rows": rows}


# ---- summary -----------------------------------------------------------------------------------------


def precision_verdict(rows: list[dict[str, Any]], precisions: Iterable[str]) -> dict[str, Any]:
    """Per precision: the largest differences from float32 and whether physics is plausibly unchanged
    (thresholds ``SUM_TOL``, ``LOSS_TOL``, ``SCORE_TOL`` and the float32 seed-to-seed spread)."""
    trained = {
        (r["precision"], r["seed"]): r for r in rows if r.get("kind") == "trained" and r.get("status") == "ok"
    }
    ref0, ref1 = trained.get((REFERENCE_PRECISION, 0)), trained.get((REFERENCE_PRECISION, 1))
    noise = abs(ref1["physics_score"] - ref0["physics_score"]) if ref0 and ref1 else None
    verdict: dict[str, Any] = {"physics_score_seed_spread_fp32": noise}
    for p in precisions:
        if p == REFERENCE_PRECISION:
            continue
        init = [
            r
            for r in rows
            if r.get("kind") == "init"
            and r["precision"] == p
            and r["reference"]["precision"] == REFERENCE_PRECISION
        ]
        v: dict[str, Any] = {
            "init_cases": len(init),
            "gen_sum_rel_diff_max": max((r["gen_sum_rel_diff_max"] for r in init), default=None),
            "first_step_rel_diff_max": max(
                (max(r[f"{k}_rel_diff"] for k in FIRST_STEP) for r in init), default=None
            ),
        }
        t = trained.get((p, 0))
        v["trained_physics_score_diff"] = (
            abs(t["physics_score"] - ref0["physics_score"]) if t and ref0 else None
        )
        checks = []
        if init:
            checks += [v["gen_sum_rel_diff_max"] <= SUM_TOL, v["first_step_rel_diff_max"] <= LOSS_TOL]
        if v["trained_physics_score_diff"] is not None:
            checks.append(v["trained_physics_score_diff"] <= max(noise or 0.0, SCORE_TOL))
        v["plausibly_unchanged"] = all(checks) if checks else None
        verdict[p] = v
    return verdict


def table(summary: dict[str, Any]) -> str:
    """The results as a printed table."""
    lines = [
        "",
        "throughput (training showers/s; step ms)",
        f"{'model':<10}{'conv':<6}" + "".join(f"{p:>22}" for p in summary["precisions"]),
    ]
    rows = summary.get("throughput", {}).get("cases", [])
    for arch in summary["archs"]:
        for impl in summary["impls"]:
            cells = []
            for p in summary["precisions"]:
                r = next((r for r in rows if case_key(r) == (arch, impl, p)), None)
                if r is None:
                    cells.append("-")
                elif r.get("status") == "ok":
                    cells.append(f"{r['train_showers_per_s']:.1f}; {r['step_ms']:.1f}")
                else:
                    cells.append(r.get("status", "?"))
            lines.append(f"{arch:<10}{impl:<6}" + "".join(f"{c:>22}" for c in cells))
    lines.append("")
    lines.append("precision against float32: " + json.dumps(summary.get("precision_verdict"), default=str))
    conv = summary.get("convergence", {})
    if conv.get("validations"):
        lines.append("")
        lines.append(
            f"convergence ({conv.get('status')}, {conv.get('wall_s', 0):.0f} s, "
            f"conv_impl {conv['plan']['conv_impl']}):"
        )
        lines.append(f"{'step':>8}{'epoch':>8}{'physics_score':>15}{'sf_rel_error':>14}")
        for v in conv["validations"]:
            lines.append(
                f"{v['step']:>8.0f}{v.get('epoch') or 0:>8.2f}{v.get('physics_score') or math.nan:>15.4f}"
                f"{v.get('sf_rel_error') or math.nan:>14.4f}"
            )
    elif conv:
        lines.append(f"convergence: {conv.get('status')} {conv.get('reason', '')}")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--help``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", default=os.environ.get("OUT", "runs/gpu-check"), help="results folder (default $OUT)"
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=8.0,
        help="the whole check, run.sh's install included (default %(default)s: fits a 15-minute GPU slot)",
    )
    p.add_argument(
        "--convergence-minutes",
        type=float,
        default=float(os.environ.get("HEPGAN_GPU_CONVERGENCE_MINUTES", 30)),
        help="paper_fixed25 convergence run, cut to what the budget leaves "
        "(default 30, or $HEPGAN_GPU_CONVERGENCE_MINUTES)",
    )
    p.add_argument(
        "--convergence-precision",
        default="default",
        choices=list(PRECISIONS),
        help="matmul precision of the convergence run",
    )
    p.add_argument(
        "--throughput-minutes",
        type=float,
        default=None,
        help="time for the throughput stage (default 40 %% of the budget, at most 12 min)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="timed window per throughput case (default 8; 1 with --quick)",
    )
    p.add_argument(
        "--min-case-s",
        type=float,
        default=None,
        help="do not start a throughput case with less left than this (default 45; 5 with --quick)",
    )
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    p.add_argument(
        "--impls", nargs="+", default=None, choices=IMPLS, help="default: xla fft (fft xla with --quick)"
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        choices=list(PRECISIONS),
        help="default: default highest bf16 (highest bf16 with --quick)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="throughput batch (default: the experiment's, 128 fixed25 / 64 angle51)",
    )
    p.add_argument(
        "--stages",
        nargs="+",
        default=["throughput", "convergence", "inference"],
        choices=["throughput", "convergence", "inference"],
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny models, a few seconds per stage: a smoke test of the script",
    )
    args = p.parse_args(argv)
    if args.precisions is None:
        args.precisions = ["highest", "bf16"] if args.quick else ["default", "highest", "bf16"]
    if args.impls is None:  # quick: the FFT first, XLA's direct convolution is slow on a CPU
        args.impls = ["fft", "xla"] if args.quick else list(IMPLS)
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 8.0
    if args.min_case_s is None:
        args.min_case_s = 5.0 if args.quick else 45.0
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the stages; returns 0 when every requested stage produced results, else 1."""
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "_child":
        spec = json.loads(Path(sys.argv[3]).read_text())
        {"throughput": child_throughput, "inference": child_inference}[sys.argv[2]](spec)
        return 0
    args = parse(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t0 = float(os.environ["HEPGAN_GPU_T0"]) if os.environ.get("HEPGAN_GPU_T0") else None
    clock = Clock(args.budget_minutes * 60, t0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stage, names in OUT_FILES.items():  # the files of the stages run now, not an earlier run's lines
        if stage in args.stages:
            for name in names:
                (out / name).unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hepgan-gpu-check-"))
    summary: dict[str, Any] = {
        "args": vars(args),
        "precision_map": PRECISIONS,
        "archs": args.archs,
        "impls": args.impls,
        "precisions": args.precisions,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.t0)),
    }
    write_json(out / "summary.json", summary)
    failed = False
    for stage in args.stages:
        print(f"\n##### {stage} ({clock.left():.0f} s of the budget left)", flush=True)
        try:
            if stage == "throughput":
                summary["throughput"] = stage_throughput(args, clock, out, work)
            elif stage == "convergence":
                rows = summary.get("throughput", {}).get("cases", read_jsonl(out / "throughput.jsonl"))
                summary["convergence"] = stage_convergence(args, clock, out, work, rows)
            elif stage == "inference":
                summary["inference"] = stage_inference(args, clock, out, work, summary.get("convergence", {}))
        except Exception as exc:
            traceback.print_exc()
            summary[stage] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        failed |= summary[stage].get("status") in ("error", "failed")
        summary["precision_rows"] = read_jsonl(out / "precision.jsonl")
        summary["precision_verdict"] = precision_verdict(summary["precision_rows"], args.precisions)
        summary["elapsed_s"] = clock.elapsed()
        write_json(out / "summary.json", summary)
    print(table(summary), flush=True)
    print(f"\nresults in {out} ({clock.elapsed():.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
