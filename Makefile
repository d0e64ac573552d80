# iommulab — every target creates the virtual environment it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PKGS   := kernel drivers hw iommulab

.PHONY: venv headers demo test lint typecheck contracts warm unit bench sweep clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The UAPI layout tests compile Linux 6.12's own headers (iommufd.h): Debian ships them in
# linux-headers-6.12.*-common under /usr/src. Installed here when missing (CI runs as root).
UAPI_HEADER := /usr/src/linux-headers-6.12*-common/include/uapi/linux/iommufd.h
headers:
	@if ! ls $(UAPI_HEADER) >/dev/null 2>&1; then \
	  echo "installing Debian's linux-headers-6.12.*-common for the UAPI layout tests"; \
	  apt-get update -qq && \
	  pkg=$$(apt-cache search --names-only '^linux-headers-6\.12\.[0-9]+\+deb[0-9]+-common$$' \
	    | awk '{print $$1}' | sort -V | tail -1) && \
	  test -n "$$pkg" && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$$pkg" >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/iommulab demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

# Write the bytecode of every module the tests import (product modules compiled, test
# modules assertion-rewritten by pytest) once, without coverage. Otherwise, on a fresh
# clone (or with PYTHONDONTWRITEBYTECODE set), each xdist worker compiles and rewrites
# all of it again under the coverage tracer, which makes pytest's pure-Python assertion
# rewriting about three times slower: ~20 s of CPU per worker before the first test.
# A collection error is left for `unit` to report.
warm: $(STAMP)
	-PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null

# pytest-cov parses every measured file once for the total it checks and once more for
# each report it prints (~4 s each, after the last test): the per-file table is printed
# only when the run fails (`coverage report` reads the .coverage file the run left).
unit: $(STAMP) headers
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider --cov --cov-branch --cov-report= --cov-fail-under=90 \
		|| { $(BIN)/coverage report; exit 1; }

# The linters are single-threaded: `warm` runs beside them on the second core.
test: $(STAMP) headers
	@$(MAKE) --no-print-directory warm & warm=$$!; \
	$(MAKE) --no-print-directory lint typecheck contracts; rc=$$?; \
	wait $$warm; test $$rc -eq 0 && $(MAKE) --no-print-directory unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The whole sweep matrix on this host (docs/sweeps.md splits it across hosts).
SWEEP_WORKERS ?= auto
sweep: $(STAMP)
	$(BIN)/python -m pytest -n $(SWEEP_WORKERS) -p no:cacheprovider -q \
		-m "sweep or not sweep" tests/sweep $(SWEEP_ARGS)

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .ruff_cache .pytest_cache
