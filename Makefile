# course-research: the two commands are `make demo` and `make test`.
# Both create the virtual environment (.venv) and install the project into it when missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# pytest workers: 2 by default (CI has 2 cores); `make test WORKERS=0` runs in one process
WORKERS ?= 2

.PHONY: help venv demo demo-all test test-fast lab bench node clean

help:
	@echo "make demo      simulate a demo cohort, ingest it, run every notebook; open reports/index.html"
	@echo "make demo-all  the same for three successive demo cohorts (a course redesign between them)"
	@echo "make test      run the whole test suite (creates .venv when missing)"
	@echo "make lab       open JupyterLab on the notebooks"
	@echo "make bench     run the speed and memory benchmarks"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,fast]"
	touch $(STAMP)

venv: $(STAMP)

# npm packages for the report's browser tests (axe-core, playwright-core); skipped without npm
node_modules/.package-lock.json: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error; else echo "npm not found: browser tests will be skipped"; fi

node: node_modules/.package-lock.json

demo: $(STAMP)
	$(BIN)/research demo

demo-all: $(STAMP)
	$(BIN)/research demo --cohorts 3

# the tests run on $(WORKERS) workers, one test file per worker; then every notebook runs under
# nbval in one process, in numbered order (a later notebook reads the tables an earlier one wrote)
test: $(STAMP) node
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --durations=15 tests
	$(BIN)/python -m pytest --nbval-lax --durations=5 notebooks

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile -m "not slow and not browser" tests

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,fast,lab]"
	$(BIN)/research lab

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .test-home
