# Two commands on a fresh machine: `make demo` (the demo) and `make test` (every test).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_PREFIX := .cache/npm
# Pinned: the third-party MCP server and the TypeScript SDK client the end-to-end tests drive.
NPM_PACKAGES := @modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/sdk@1.32.2
# The stamp names the package list, so changing a pin reinstalls.
NPM_STAMP := $(NPM_PREFIX)/.installed-$(shell echo '$(NPM_PACKAGES)' | cksum | cut -d' ' -f1)
# FastMCP 2.14 needs mcp<2 (this project runs mcp 2.x): its own venv, run as a subprocess by
# tests/e2e/test_fastmcp.py and test_fastmcp_templates.py.
FASTMCP_VENV := .cache/fastmcp
FASTMCP_VERSION := 2.14.7
FASTMCP_STAMP := $(FASTMCP_VENV)/.installed-fastmcp-$(FASTMCP_VERSION)

.PHONY: demo demo-once test lint unit e2e bench deps system-deps clean

$(BIN)/extauthz: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Debian packages (Node.js/npm, Chromium, Redis): installed only when missing; `.ci/run` runs the same.
system-deps:
	scripts/install-system-deps.sh

$(NPM_STAMP): | system-deps
	npm install --silent --no-audit --no-fund --prefix $(NPM_PREFIX) $(NPM_PACKAGES)
	@touch $@

$(FASTMCP_STAMP):
	$(PY) -m venv $(FASTMCP_VENV)
	$(FASTMCP_VENV)/bin/pip install -q --disable-pip-version-check fastmcp==$(FASTMCP_VERSION)
	@touch $@

deps: system-deps $(BIN)/extauthz $(NPM_STAMP) $(FASTMCP_STAMP)

demo: $(BIN)/extauthz          ## runs `extauthz demo`: Envoy + demo MCP server + this service + a scripted agent
	$(BIN)/extauthz demo

demo-once: $(BIN)/extauthz
	$(BIN)/extauthz demo --once

test: deps lint                ## every test: lint and types, then unit and end to end (real Envoy, real MCP servers and clients)
	$(BIN)/python -m pytest -q

lint: $(BIN)/extauthz          ## ruff (lint only, no formatting) and mypy, configured in pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(BIN)/extauthz
	$(BIN)/python -m pytest -q tests/unit

e2e: deps
	$(BIN)/python -m pytest -q tests/e2e

bench: $(BIN)/extauthz
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .cache build *.egg-info
