# iommulab — every target creates the virtual environment it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PKGS   := kernel drivers hw iommulab

.PHONY: venv demo test lint typecheck contracts unit bench sweep clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/iommulab demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider --cov --cov-branch --cov-report=term --cov-fail-under=90

test: lint typecheck contracts unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The whole sweep matrix on this host (docs/sweeps.md splits it across hosts).
SWEEP_WORKERS ?= auto
sweep: $(STAMP)
	$(BIN)/python -m pytest -n $(SWEEP_WORKERS) -p no:cacheprovider -q \
		-m "sweep or not sweep" tests/sweep $(SWEEP_ARGS)

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .ruff_cache .pytest_cache
