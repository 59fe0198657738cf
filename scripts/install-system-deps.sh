#!/usr/bin/env bash
# The Debian packages the tests need, installed only when their command is missing (idempotent:
# a machine that has them all runs no apt-get at all; otherwise `apt-get update` runs once).
# Called by `make deps` (so `make test` sets up a fresh machine) and by `.ci/run`.
#   node, npm       the npm MCP servers and the TypeScript SDK client (tests/e2e)
#   chromium        headless screenshots of the admin HTML page (tests/e2e/test_inventory.py)
#   redis-server    shared state across service replicas, one server per test
#   make            the README's two commands
set -euo pipefail

# command -> Debian package ("a|b" = either command will do)
NEEDS=(
  "node nodejs"
  "npm npm"
  "chromium|chromium-browser chromium"
  "redis-server redis-server"
  "make make"
)

have() {
  local alt
  IFS='|' read -ra alts <<<"$1"
  for alt in "${alts[@]}"; do command -v "$alt" >/dev/null 2>&1 && return 0; done
  return 1
}

missing=()
for need in "${NEEDS[@]}"; do
  read -r cmds pkg <<<"$need"
  have "$cmds" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "install-system-deps: missing ${missing[*]}; run as root or install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${missing[*]} and no apt-get here: install them with your package manager" >&2
  exit 1
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq "${missing[@]}"
