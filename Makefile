# `make test` is the project's one test command (README, CI): it builds the Rust
# extension into the current Python environment, then runs the Rust and Python suites.
PYTHON ?= python3

.PHONY: test install dev bench

test:
	$(PYTHON) -m pip install -e ".[test]"
	cargo test -p reprkit-core
	$(PYTHON) -m pytest

install:
	$(PYTHON) -m pip install ".[torch,plot]"

# Fast rebuild of the extension for development (no LTO); use with PYTHONPATH=python.
dev:
	./scripts/dev-build

bench:
	$(PYTHON) benches/bench_distances.py
