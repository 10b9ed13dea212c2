#!/usr/bin/env bash
# Download the wheels the GPU image lacks into experiments/gpu/wheels/ (git-ignored), so that run.sh can
# install them there without network access.
#   bash experiments/gpu/prepare_wheels.sh        # about 8 MiB; needs the package index, no GPU
#
# The GPU image (Python 3.12, x86_64) has jax with CUDA, flax, optax, orbax-checkpoint, numpy, scipy,
# h5py, matplotlib, tensorboard (hence protobuf), rich and tqdm, but not Hydra, OmegaConf, Optuna or
# tensorboardX. Downloaded here: those, their dependencies that are not part of the image, and a few
# small ones it probably has (packaging, typing_extensions, protobuf, tqdm) in case its versions are
# too old; pip installs a wheel only where the installed version does not satisfy the requirement.
# numpy (16 MiB) is left out: jax needs it, so the image has it. Versions are the ones constraints.txt
# pins (the versions the test suite passed with).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
wheels="$here/wheels"
py="${PYTHON:-$repo/.venv/bin/python}"
pip=("$py" -m pip --disable-pip-version-check)
constraints=(-c "$repo/constraints.txt")

# the GPU image: CPython 3.12 on x86_64 Linux (glibc >= 2.28)
target=(--only-binary=:all: --implementation cp --python-version 3.12
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64)

# hepgan's dependencies and the hpo extra (pyproject.toml) that the image lacks, and theirs
packages=(
  hydra-core omegaconf tensorboardX                        # hepgan
  optuna alembic SQLAlchemy Mako MarkupSafe colorlog PyYAML  # hepgan[hpo]: Optuna
  submitit hydra-submitit-launcher cloudpickle             # hepgan[hpo]: Slurm launcher
  packaging typing_extensions protobuf tqdm                # probably in the image already
)

rm -rf "$wheels"
mkdir -p "$wheels"
echo "== binary and pure-Python wheels for CPython 3.12 / manylinux x86_64"
"${pip[@]}" download --no-deps "${constraints[@]}" "${target[@]}" -d "$wheels" "${packages[@]}"

# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 / hydra 1.3 require) is published only as an sdist;
# it is pure Python, so a wheel built here installs on any Python 3.
echo "== antlr4-python3-runtime (sdist only): building a wheel"
"${pip[@]}" wheel --no-deps "${constraints[@]}" -w "$wheels" antlr4-python3-runtime

# hepgan itself, built from a copy of the sources so that no build/ or egg-info appears in the tree.
# run.sh installs it with --no-deps (the image's jax stays) for its entry points and metadata, and puts
# the working tree first on PYTHONPATH, so a wheel older than the sources is never what runs.
echo "== hepgan"
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -r "$repo/pyproject.toml" "$repo/README.md" "$src/"
[ -f "$repo/LICENSE" ] && cp "$repo/LICENSE" "$src/"
cp -r "$repo/hepgan" "$src/hepgan"
find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
"${pip[@]}" wheel --no-deps -w "$wheels" "$src"

ls -l "$wheels"
echo "total: $(du -sh "$wheels" | cut -f1) in $(ls "$wheels" | wc -l) wheels"
