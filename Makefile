# sandq: `make run` (demo through the queue) and `make test` (the suite).
# Both install what is missing first. Debian/Ubuntu, as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := redis-server runsc procps

.PHONY: install system-deps venv sandbox-env run test test-fast lint typecheck docs bench clean check-adk-min

install: system-deps venv sandbox-env

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(VENV)/.installed

# Reinstalled whenever the lock file or the project's dependencies change.
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.lock -e ".[dev]"
	touch $@

# The libraries local sandboxes import (sandq/sandbox/sandbox-requirements.lock, plus
# SANDQ_SANDBOX_EXTRA_REQUIREMENTS): built once per lock into SANDQ_SANDBOX_ENV_DIR, then only checked.
sandbox-env: venv
	$(BIN)/python -m sandq.sandbox.environment

run: install
	$(BIN)/python scripts/demo.py

lint: venv
	$(BIN)/ruff check sandq tests benchmarks examples scripts
	$(BIN)/mypy --strict sandq

# The documentation site, into site/; --strict fails on a broken link, anchor or API reference.
docs: venv
	$(BIN)/mkdocs build --strict --quiet --site-dir site

# Three test processes (pytest-xdist), a test file each at a time: most tests wait on sandboxes,
# workers and Redis, so three share the two cores well (8.5 min here against about 17 in one).
test: install lint docs check-adk-min
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadfile

# The ADK adapter against the oldest google-adk that the `adk` extra allows: that release's own
# code (installed without dependencies beside the locked ones, so it takes seconds), ahead of the
# locked google-adk on the path. The test fails with the release before the bound.
ADK_MIN := $(shell sed -n 's/^adk = \["google-adk>=\([0-9.]*\),.*/\1/p' pyproject.toml)
ADK_MIN_DIR := $(VENV)/adk-min-$(ADK_MIN)

$(ADK_MIN_DIR)/.installed: | venv
	@test -n "$(ADK_MIN)" || { echo "no google-adk>=X lower bound in the adk extra of pyproject.toml"; exit 1; }
	$(BIN)/pip install -q --no-deps --target $(ADK_MIN_DIR) "google-adk==$(ADK_MIN)"
	touch $@

check-adk-min: $(ADK_MIN_DIR)/.installed
	PYTHONPATH=$(ADK_MIN_DIR) $(BIN)/python -c "import google.adk as a; from packaging.version import Version as V; assert V(a.__version__) == V('$(ADK_MIN)'), a.__version__"
	PYTHONPATH=$(ADK_MIN_DIR) $(BIN)/pytest -q -p no:cacheprovider tests/integration/adk/test_adk_lower_bound.py

# The fast tier: pure code, documents and manifests, no services (tests/conftest.py marks the rest slow).
test-fast: venv
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow" tests/unit tests/docs tests/integration/deploy

bench: install
	$(BIN)/python benchmarks/local.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
