# gatepass: `make run` serves on the embedded default, `make test` runs everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := chromium postgresql redis-server

.PHONY: install run test test-fast lint system-deps bench bench-quick bench-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/gatepass serve

# Debian packages the tests drive for real: headless Chromium for the browser tests,
# PostgreSQL (initdb, postgres under /usr/lib/postgresql/<version>/bin) for tests/servers.py.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: install system-deps
	$(BIN)/pytest

# The suite without the browser and server-process tests.
test-fast: install
	$(BIN)/pytest -m "not browser and not e2e"

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

BENCH_ENV := bench/.env
BENCH_STAMP := $(BENCH_ENV)/.installed

$(BENCH_STAMP): bench/constraints-peers.txt
	$(PYTHON) -m venv $(BENCH_ENV)
	$(BENCH_ENV)/bin/pip install --quiet --disable-pip-version-check -r bench/constraints-peers.txt
	touch $(BENCH_STAMP)

bench-deps: install $(BENCH_STAMP)
	@command -v wrk >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

# The verifier against PyJWT + PyJWKClient has a harness of its own, when present.
BENCH_VERIFIER := bench/verifier.py

bench: bench-deps
	$(BIN)/python bench/micro.py
	$(BIN)/python bench/run.py
	@if [ -f $(BENCH_VERIFIER) ]; then $(BIN)/python $(BENCH_VERIFIER); \
	else echo "bench: $(BENCH_VERIFIER) not present: no verifier figures"; fi

bench-quick: bench-deps
	$(BIN)/python bench/micro.py --quick
	$(BIN)/python bench/run.py --quick
	@if [ -f $(BENCH_VERIFIER) ]; then $(BIN)/python $(BENCH_VERIFIER) --quick; \
	else echo "bench: $(BENCH_VERIFIER) not present: no verifier figures"; fi

clean:
	rm -rf $(VENV) .gatepass .pytest_cache .mypy_cache .ruff_cache
