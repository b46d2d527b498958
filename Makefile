# sandq: `make run` (demo through the queue) and `make test` (the suite).
# Both install what is missing first. Debian/Ubuntu, as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := redis-server runsc python3-matplotlib python3-numpy procps

.PHONY: install system-deps venv sandbox-env run test lint typecheck bench clean

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

# The libraries local sandboxes import (sandbox-requirements.lock, plus SANDQ_SANDBOX_EXTRA_REQUIREMENTS):
# built once per lock into SANDQ_SANDBOX_ENV_DIR, then only checked.
sandbox-env: venv
	$(BIN)/python -m sandq.sandbox_env

run: install
	$(BIN)/python scripts/demo.py

lint: venv
	$(BIN)/ruff check sandq tests benchmarks examples scripts
	$(BIN)/mypy --strict sandq

test: install lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python benchmarks/local.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
