# Set-up and entry points.  `make demo` and `make test` each do all set-up
# (system packages, virtualenv, Python packages) on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make test` installed everything the tests need: a skip there is a failure (tests/conftest.py)
NO_SKIP := NINJA_TESTS_NO_SKIP=1

.PHONY: setup system-deps demo test test-fast typecheck bench soak clean

setup: system-deps $(STAMP)   # everything the tests need

system-deps:
	@bash scripts/install-system-deps.sh

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)                # no browser needed
	$(PY) demo.py

test: setup typecheck          # everything: unit, integration (real processes), browsers
	$(NO_SKIP) $(PY) -m pytest

test-fast: $(STAMP) typecheck  # for iterating: the unit tests only (about a minute)
	$(PY) -m pytest tests/unit

typecheck: $(STAMP)
	$(PY) -m mypy

BENCH_ARGS ?= --preset 720p-h264 --sweep 1,4 --seconds 10
bench: $(STAMP)                # short by default (about 3 min); e.g. make bench BENCH_ARGS="--sweep 1,4,8,16 --plot cost.png"
	$(PY) bench/record_cost.py $(BENCH_ARGS)

soak: $(STAMP)                 # 3 publishers, one recorder, 10 min: RSS growth, loop stalls, frames lost, lip sync
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) demo-output *.egg-info
