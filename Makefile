# `make test` is the project's one test command (README, CI). It leaves the active Python
# environment alone: the extension is built as an editable install into a virtual environment
# of its own, $(VENV) (created from $(PYTHON) on first use), where the Rust and Python suites run.
# `make test VENV=$$VIRTUAL_ENV` tests in the active environment instead (replacing any reprkit
# installed there with the editable build). TORCH_INDEX=https://download.pytorch.org/whl/cpu
# installs the CPU-only torch (~200 MB instead of the CUDA build's several GB).
PYTHON ?= python3
VENV ?= .venv-test
TORCH_INDEX ?=
VPY = $(VENV)/bin/python

.PHONY: test install dev bench wheel

test:
	@test -x $(VPY) || { echo "creating the test environment $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(VPY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(VPY) -m pip install torch --index-url $(TORCH_INDEX))
	$(VPY) -m pip install -e ".[test]"
	cargo test -p reprkit-core
	$(VPY) -m pytest

install:
	$(PYTHON) -m pip install ".[torch,plot]"

# Fast rebuild of the extension for development (no LTO); use with PYTHONPATH=python.
dev:
	./scripts/dev-build

# The release wheel (manylinux2014, abi3, stripped) into dist/; see scripts/build-wheel.
wheel:
	./scripts/build-wheel dist

bench:
	$(PYTHON) benches/bench_distances.py
