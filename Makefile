# `make demo` and `make test` work on a fresh clone: each creates .venv as needed.
PYTHON ?= python3
, := ,
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test checks lint typecheck pytest pytest-integrations typecheck-integrations \
	pytest-integrations-only bench bench-quick clean

# The venvs are installed by uv (from PyPI, into $(UV_DIR): seconds, where pip takes a minute
# or more per venv). Where uv cannot be had (no wheel for this platform, say), pip installs
# them as before; USE_UV=0 asks for pip.
USE_UV ?= 1
UV_DIR ?= .tools
UV := $(UV_DIR)/bin/uv
UV_IF_USED := $(if $(filter 0,$(USE_UV)),,$(UV))

$(UV):
	$(PYTHON) -m pip --disable-pip-version-check -q install --root-user-action=ignore \
		--target $(UV_DIR) 'uv>=0.13,<0.14' || echo "uv is not available: installing with pip"

# $(call install,VENV,EXTRAS): create VENV (or keep it) and install the project into it,
# editable, with EXTRAS. uv compiles the bytecode, as pip does; pip takes over if uv fails
# (an index that only pip's configuration knows, say).
install = @if [ "$(USE_UV)" != 0 ] && [ -x $(UV) ] && { \
		echo "uv: $(1) with .[$(2)]"; \
		$(UV) --no-python-downloads venv -q --seed --allow-existing --python $(PYTHON) $(1) && \
		$(UV) --no-python-downloads pip install -q --compile-bytecode --python $(1)/bin/python \
			-e '.[$(2)]'; }; then :; \
	else \
		echo "pip: $(1) with .[$(2)]"; \
		$(PYTHON) -m venv $(1) && \
		$(1)/bin/python -m pip --disable-pip-version-check -q install -e '.[$(2)]'; \
	fi

$(VENV)/.core: pyproject.toml | $(UV_IF_USED)
	$(call install,$(VENV),redis$(,)sqlite)
	touch $@

$(VENV)/.dev: pyproject.toml | $(UV_IF_USED)
	$(call install,$(VENV),dev)
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(PY) examples/quickstart.py

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.dev
	$(PY) -m mypy

# Three pytest-xdist workers on the 2-core CI machine: a third of the main suite's time is
# spent waiting (servers in subprocesses starting and stopping, Redis Cluster start-up and
# failover, timeouts that a test lets expire), and a third worker runs tests meanwhile.
# Work stealing: a worker that runs out of tests takes some from another's queue, so no
# worker idles at the end while another still has a queue of slow tests.
# PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 3
PYTEST_DIST ?= worksteal
XDIST = -n $(PYTEST_WORKERS) $(if $(filter 0,$(PYTEST_WORKERS)),,--dist $(PYTEST_DIST))

# pytest caches the modules whose asserts it rewrites (the tests, conftest.py, the plugins;
# the integration suite auto-loads its plugins, so every module of their packages) beside
# their bytecode, unless PYTHONDONTWRITEBYTECODE is set, as on the CI machine: then every
# pytest process, each xdist worker, rewrites them all again on every run. The cache
# (__pycache__, ignored by git) is written.
PYTEST_ENV := PYTHONDONTWRITEBYTECODE=

pytest: $(VENV)/.dev
	$(PYTEST_ENV) $(PY) -m pytest $(XDIST) --cov --cov-report=term $(PYTEST_ARGS)

# The LangGraph/LangChain suites (tests_integrations/, its own pytest.ini) in a
# venv of their own: langchain-tests brings pytest plugins the main suite must not load.
# PYTEST_INTEGRATIONS_ARGS passes options to that pytest (e.g. -k cluster).
VENV_INTEGRATIONS ?= .venv-integrations
PYI := $(VENV_INTEGRATIONS)/bin/python

$(VENV_INTEGRATIONS)/.installed: pyproject.toml | $(UV_IF_USED)
	$(call install,$(VENV_INTEGRATIONS),integration-tests)
	touch $@

typecheck-integrations: $(VENV_INTEGRATIONS)/.installed
	$(PYI) -m mypy --config-file tests_integrations/mypy.ini

pytest-integrations: typecheck-integrations pytest-integrations-only

pytest-integrations-only: $(VENV_INTEGRATIONS)/.installed
	$(PYTEST_ENV) $(PYI) -m pytest -c tests_integrations/pytest.ini tests_integrations \
		$(XDIST) --cov --cov-config=tests_integrations/coveragerc --cov-report=term \
		$(PYTEST_INTEGRATIONS_ARGS)

# The checks before the suites run side by side (-j3), the integration venv's install with
# them; each one's output is printed in one piece when it ends (--output-sync). Then the
# suites, one after the other.
checks:
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck typecheck-integrations

test: checks pytest pytest-integrations-only

$(VENV)/.bench: pyproject.toml | $(UV_IF_USED)
	$(call install,$(VENV),dev$(,)bench)
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
	rm -rf $(VENV) $(VENV_INTEGRATIONS) $(UV_DIR) .pytest_cache .mypy_cache .ruff_cache .coverage
