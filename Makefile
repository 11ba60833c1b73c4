# Two entry points: `make run` (set up, then run the default benchmark job) and `make test`.
# Both create or reuse a local virtual environment in .venv from the system python3 (>= 3.11).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("dlbench needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/dlbench run smoke

# One pytest worker per core (pytest-xdist): most of a test's time is a single-threaded XLA compile.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n auto

bench: $(BIN)/.installed
	$(BIN)/python -m pytest tests/benchmarks --benchmark-only

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
