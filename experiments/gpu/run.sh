#!/usr/bin/env bash
# The GPU check of the paper models in one go (experiments/gpu/README.md): install what the image lacks
# from experiments/gpu/wheels (made by prepare_wheels.sh; no network needed), describe the machine, then
# run run.py's stages. Run from anywhere; results go to $OUT (default runs/gpu-check).
#   bash experiments/gpu/run.sh                              # about 8 minutes in all
#   bash experiments/gpu/run.sh --budget-minutes 45          # with the full 30-minute convergence run
#   bash experiments/gpu/run.sh --convergence-minutes 5      # any run.py option (run.py --help)
# HEPGAN_GPU_INSTALL=0 skips the installation (an environment that has hepgan's dependencies already).
set -uo pipefail
export HEPGAN_GPU_T0="${HEPGAN_GPU_T0:-$(date +%s)}"  # run.py's budget counts from here
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
OUT="${OUT:-$repo/runs/gpu-check}"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
exec > >(tee -a "$OUT/log.txt") 2>&1

# ---- install: only what is missing, into a folder of its own, so the image's packages (jax) stay ---------
site="${HEPGAN_GPU_SITE:-/tmp/hepgan-gpu-site}"
if [ "${HEPGAN_GPU_INSTALL:-1}" != 0 ]; then
  if [ -d "$here/wheels" ]; then
    # a wheel whose distribution the image already has is left out, except hepgan's own
    mapfile -t missing < <("$py" - "$here/wheels" <<'EOF'
import sys
from importlib import metadata
from pathlib import Path

for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    name = whl.name.split("-")[0]
    try:
        metadata.version(name)
        if name != "hepgan":
            continue
    except metadata.PackageNotFoundError:
        pass
    print(whl)
EOF
    )
    echo "== installing into $site: ${missing[*]##*/}"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "${missing[@]}" || echo "run.sh: the installation failed; carrying on"
  else
    echo "run.sh: no $here/wheels (run prepare_wheels.sh where the package index is reachable)"
  fi
  # the sources of this tree first (a wheel older than them never runs), then the installed wheels
  export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---- the machine ------------------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "cpus: $(nproc)"
  free -g 2>/dev/null | head -2
  echo
  nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  echo
  "$py" - <<'EOF' 2>&1
import importlib
import jax

print("python", __import__("sys").version.split()[0])
print("jax", jax.__version__, "backend", jax.default_backend())
print("devices", jax.devices())
for name in ("jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "hydra", "omegaconf", "optuna",
             "tensorboardX", "hepgan"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')} from {getattr(mod, '__file__', '?')}")
    except Exception as exc:
        print(f"{name}: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
EOF
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# ---- the stages ---------------------------------------------------------------------------------------
"$py" "$here/run.py" --out "$OUT" "$@"
rc=$?
echo "run.sh: run.py exited with $rc after $(( $(date +%s) - HEPGAN_GPU_T0 )) s; files in $OUT:"
ls -l "$OUT"
exit $rc
