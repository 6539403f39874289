# The handful of commands a newcomer needs. Each one installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache

.PHONY: run test test-unit install services tools lint bench clean

run: install             ## the whole pipeline in one process (in-memory bus, SQLite, simulated market)
	$(BIN)/candlebus up

test: install services tools  ## every test: unit, integration (real Redis + Postgres), end-to-end
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

test-unit: install       ## the fast layer only: no sockets
	$(BIN)/pytest -q tests/unit

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

services:                ## make sure Redis and Postgres answer (starts them where it can)
	@scripts/ensure-services.sh

tools:                   ## Chromium and Prometheus for the browser and monitoring tests (Debian packages)
	@scripts/ensure-tools.sh

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

bench: install services  ## performance runs; figures go to BENCHMARKS.md
	$(BIN)/python benchmarks/indicators.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/gateway.py

clean:
	rm -rf $(VENV) .numba-cache data
