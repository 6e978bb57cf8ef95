#!/usr/bin/env bash
# The npm package and demo page in headless Chromium: builds the engine for wasm32 (dev
# profile: quick to build, and the GPU does the work), runs wasm-bindgen --target web into
# web/dist/, installs the node test dependencies (playwright-core, driving Debian's
# /usr/bin/chromium: playwright cannot download browsers here) and runs web/test/ with
# `node --test`. The tests also run `cargo run --bin tandem -- run … --json` for the native
# greedy tokens they compare against. Saves a screenshot of the demo
# mid-answer to web/test-results/demo.png (README's web/screenshots/demo.png is a copy).
# Needs: node 18+, chromium, the wasm32 target, wasm-bindgen-cli 0.2.130 (.ci/run installs them)
# and SmolLM2-135M in the model cache (the tests print SKIP without it).
set -euo pipefail
cd "$(dirname "$0")/../web"

node scripts/build.mjs "--${TANDEM_WASM_PROFILE:-dev}"
npm ci --no-audit --no-fund --prefer-offline >/dev/null
node --test test/browser.test.mjs
