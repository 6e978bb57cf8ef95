#!/usr/bin/env bash
# Browser tests: builds tests/web.rs for wasm32 and runs it in headless Chromium (WebGPU on
# SwiftShader) through wasm-bindgen-test-runner + chromedriver.
# Needs: Debian chromium + chromium-driver, the wasm32 target, wasm-bindgen-cli matching the
# wasm-bindgen crate version (.ci/run installs all three).
set -euo pipefail
cd "$(dirname "$0")/.."

export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/web/webdriver.json"
# SwiftShader is slow: give each test file time.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-600}"
cargo test --locked --target wasm32-unknown-unknown --test web
