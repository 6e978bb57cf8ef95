#!/usr/bin/env bash
# tandem's test suite: native tests on the first Vulkan adapter (lavapipe in CI), the HTTP
# server through the openai client (pytest), then the
# browser tests in headless Chromium's WebGPU (SwiftShader): the kernels through
# wasm-bindgen-test, then the npm package and demo page through playwright-core, and last the
# fuzz smoke (every fuzz target for a fixed number of executions from its seed corpus).
#   scripts/test.sh            # everything CI runs
#   TANDEM_SLOW=1 scripts/test.sh   # plus the slower set (the Qwen models on lavapipe)
set -euo pipefail
cd "$(dirname "$0")/.."

# CI has lavapipe, so a missing adapter is a failure there, not a skip.
export TANDEM_REQUIRE_GPU="${TANDEM_REQUIRE_GPU:-1}"
export TANDEM_BACKEND="${TANDEM_BACKEND:-vulkan}"
# Mesa's Vulkan drivers probe Wayland and print "error: XDG_RUNTIME_DIR is invalid or not set"
# on a headless machine; as the CLI does (crates/cli/src/quiet.rs), the tests get an empty
# private runtime directory where the session has none, so their logs show no false errors.
if [ -z "${XDG_RUNTIME_DIR:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  export XDG_RUNTIME_DIR="$HOME/.cache/tandem/runtime"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi

echo "== test model: SmolLM2-135M in the model cache (tandem fetch; kept when its sha256 matches)"
scripts/fetch-models.sh smollm2

echo "== native tests"
cargo test --locked

echo "== HTTP server (pytest drives tandem serve through the openai client)"
scripts/test-server.sh

echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
scripts/test-browser.sh

echo "== npm package and demo page (headless Chromium, playwright-core)"
scripts/test-web.sh

echo "== fuzz smoke (cargo-fuzz / libFuzzer, seed corpora in fuzz/corpus)"
scripts/fuzz-smoke.sh
