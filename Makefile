# `make demo` and `make test` work on a fresh clone: each creates .venv as needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck pytest pytest-integrations typecheck-integrations bench bench-quick clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[redis,sqlite]'
	touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(PY) examples/quickstart.py

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.dev
	$(PY) -m mypy

# Two pytest-xdist workers (the CI machine has 2 cores); PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

pytest: $(VENV)/.dev
	$(PY) -m pytest -n $(PYTEST_WORKERS) --cov --cov-report=term $(PYTEST_ARGS)

# The LangGraph/LangChain suites (tests_integrations/, its own pytest.ini) in a
# venv of their own: langchain-tests brings pytest plugins the main suite must not load.
# PYTEST_INTEGRATIONS_ARGS passes options to that pytest (e.g. -k cluster).
VENV_INTEGRATIONS ?= .venv-integrations
PYI := $(VENV_INTEGRATIONS)/bin/python

$(VENV_INTEGRATIONS)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_INTEGRATIONS)
	$(PYI) -m pip --disable-pip-version-check -q install -e '.[integration-tests]'
	touch $@

typecheck-integrations: $(VENV_INTEGRATIONS)/.installed
	$(PYI) -m mypy --config-file tests_integrations/mypy.ini

pytest-integrations: typecheck-integrations
	$(PYI) -m pytest -c tests_integrations/pytest.ini tests_integrations -n $(PYTEST_WORKERS) \
		--cov --cov-config=tests_integrations/coveragerc --cov-report=term $(PYTEST_INTEGRATIONS_ARGS)

test: lint typecheck pytest pytest-integrations

$(VENV)/.bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev,bench]'
	touch $@ $(VENV)/.dev $(VENV)/.core

# The http_sessions part drives the server with wrk (Debian's package): installed
# here when missing and we are root; otherwise that part is skipped, never the target.
WRK_MISSING := wrk is missing and could not be installed (apt-get install wrk, as root): python -m bench skips its http_sessions part
INSTALL_WRK = command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }; }; } || echo "$(WRK_MISSING)"

bench: $(VENV)/.bench
	@$(INSTALL_WRK)
	$(PY) -m bench

bench-quick: $(VENV)/.bench
	@$(INSTALL_WRK)
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) $(VENV_INTEGRATIONS) .pytest_cache .mypy_cache .ruff_cache .coverage
