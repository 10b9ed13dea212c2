# hepgan: one tooling story, the same locally and in CI.
#   make demo   create .venv, install, run the default demo
#   make test   the test suite (8 simulated CPU devices, mpirun tests included)
#   make lint   ruff + mypy
#   make bench  benchmarks; JSON results under experiments/bench/
#   make paper  the studies' tables and figures from committed results, then paper/paper.md and .html
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hepgan-installed
# mpi4jax compiles against the venv's MPI. A CUDA toolchain on PATH without CUDA headers makes its
# build try (and fail) the CUDA extension, so the build sees only the venv and the system compilers.
MPI_BUILD_ENV := env -u CUDA_HOME -u CUDA_PATH PATH=$(abspath $(VENV))/bin:/usr/bin:/bin \
	MPI4JAX_BUILD_MPICC=$(abspath $(VENV))/bin/mpicc

.PHONY: venv demo test test-all lint format bench paper clean

venv: $(STAMP)

# constraints.txt: the exact versions the test suite last passed with (make reinstalls them; pyproject
# keeps ranges). HEPGAN_CONSTRAINTS= (empty) installs the newest versions the ranges allow.
HEPGAN_CONSTRAINTS ?= constraints.txt
CONSTRAINTS := $(if $(HEPGAN_CONSTRAINTS),-c $(HEPGAN_CONSTRAINTS))

$(STAMP): pyproject.toml $(HEPGAN_CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# jax (from the package's own dependencies) must be installed before mpi4jax is built: its build
	# asks the installed jax for the FFI headers. So: hepgan and its extras first, then mpi4jax.
	$(PY) -m pip install -q $(CONSTRAINTS) -e ".[hpo,dev,export]" "mpi4py>=4.0" "mpich>=4.2" nanobind cython
	$(PY) -c "import mpi4jax" 2>/dev/null || $(MPI_BUILD_ENV) $(PY) -m pip install -q $(CONSTRAINTS) --no-build-isolation "mpi4jax>=0.5"
	$(PY) -m pip install -q $(CONSTRAINTS) -e ".[mpi,hpo,dev,export]" && $(PY) -m pip install -q $(CONSTRAINTS) --no-deps "jax2onnx>=0.17"
	touch $(STAMP)

# The default training: a small 3DGAN on the built-in simulated showers (about 9.5 min on 2 CPU cores).
# It writes checkpoints, logs, the manifest and the validation report under runs/demo and prints where.
# Running it again resumes the finished run; `rm -rf runs/demo` starts afresh.
demo: $(STAMP)
	$(VENV)/bin/hepgan-train out=runs/demo

# PYTEST_ARGS: extra pytest options, e.g. make test PYTEST_ARGS="--durations=30" or PYTEST_ARGS="-k export"
PYTEST_ARGS ?=
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS) tests

lint: $(STAMP)
	$(VENV)/bin/ruff check hepgan hydra_plugins tests experiments paper
	$(VENV)/bin/ruff format --check hepgan hydra_plugins tests experiments paper
	$(VENV)/bin/mypy hepgan hydra_plugins

format: $(STAMP)
	$(VENV)/bin/ruff format hepgan hydra_plugins tests experiments paper
	$(VENV)/bin/ruff check --fix hepgan hydra_plugins tests experiments paper

bench: $(STAMP)
	$(VENV)/bin/hepgan-bench all --out experiments/bench

# The paper (paper/paper.md, paper/paper.html): every study's regenerate command on its committed results
# (no training; about a minute), then the Markdown and a self-contained HTML page (paper/build.py).
paper: $(STAMP)
	$(PY) paper/build.py

# The Keras/TensorFlow peer of `hepgan-bench peers` runs in its own environment: TensorFlow's protobuf
# and numpy pins would conflict with the package's. The worker needs only TensorFlow and numpy.
PEERS_VENV ?= .venv-peers
.PHONY: peers-venv
peers-venv:
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q tensorflow numpy

clean:
	rm -rf $(VENV) runs .pytest_cache
