PY ?= .venv/bin/python

.PHONY: install lint format test test-fast test-slow bench

install:
	python3 -m venv .venv && $(PY) -m pip install -e ".[dev]"

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

test:            ## everything, as CI runs it
	$(PY) -m pytest

test-fast:       ## unit tests only
	$(PY) -m pytest -m "not slow and not integration"

test-slow:       ## slow and integration tests only
	$(PY) -m pytest -m "slow or integration"

bench:
	$(PY) -m benchmarks
