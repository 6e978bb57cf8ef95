#!/usr/bin/env bash
# The HTTP server's tests: pytest drives real `tandem serve` processes on SmolLM2-135M through
# the official `openai` Python client (tests/server/). The Python packages live in a virtual
# environment in the cache (made here on first use, from PyPI); the server binary is the one
# `cargo test` builds (target/debug/tandem), built here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TANDEM_VENV:-$HOME/.cache/tandem/venv}"
PACKAGES=(pytest==9.2.0 openai==3.57.0 jsonschema==4.23.0)
if ! "$VENV/bin/python" -c "import pytest, openai, jsonschema" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PACKAGES[@]}"
fi
[ -x target/debug/tandem ] || cargo build --locked
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/server "$@"
