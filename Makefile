# Two commands on a fresh machine: `make demo` (the demo) and `make test` (every test).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_PREFIX := .cache/npm
EVERYTHING := $(NPM_PREFIX)/node_modules/.bin/mcp-server-everything

.PHONY: demo demo-once test unit e2e bench deps clean

$(BIN)/extauthz: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(EVERYTHING):
	npm install --silent --no-audit --no-fund --prefix $(NPM_PREFIX) @modelcontextprotocol/server-everything

deps: $(BIN)/extauthz $(EVERYTHING)
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

demo: $(BIN)/extauthz          ## runs `extauthz demo`: Envoy + demo MCP server + this service + a scripted agent
	$(BIN)/extauthz demo

demo-once: $(BIN)/extauthz
	$(BIN)/extauthz demo --once

test: deps                     ## every test: unit and end to end (real Envoy, real MCP servers and clients)
	$(BIN)/python -m pytest -q

unit: $(BIN)/extauthz
	$(BIN)/python -m pytest -q tests/unit

e2e: deps
	$(BIN)/python -m pytest -q tests/e2e

bench: $(BIN)/extauthz
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .cache build *.egg-info
