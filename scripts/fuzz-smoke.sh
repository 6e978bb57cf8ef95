#!/usr/bin/env bash
# The fuzz smoke: builds the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer, no sanitizer: the
# code under test is safe Rust, and fuzz/src/lib.rs's allocator guards memory) and runs each
# for a fixed number of executions from its seed corpus, under the same time and memory
# bounds as the long runs. Any crash, timeout or out-of-memory fails the script and leaves
# the input in fuzz/artifacts/<target>/ (see RELIABILITY.md for turning it into a test).
#   scripts/fuzz-smoke.sh                 # what CI runs (scripts/test.sh calls it)
#   TANDEM_FUZZ_RUNS=1000000 scripts/fuzz-smoke.sh tokenizer_gguf   # a long run of one target
# New corpus entries go to a temporary directory, never into the checked-in seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz-smoke: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install -q cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf safetensors hf_config tokenizer_gguf tokenizer_json chat_template grammar server_request)

start=$(date +%s)
# Stable toolchain: with --sanitizer none cargo-fuzz passes only stable rustc flags.
cargo fuzz build --sanitizer none --fuzz-dir fuzz
built=$(date +%s)
echo "fuzz-smoke: built the targets in $((built - start)) s"

# Executions per target in the smoke (about 10-40 s each on one core of a 2-core machine).
declare -A smoke_runs=(
  [gguf]=20000 [safetensors]=20000 [hf_config]=20000
  [tokenizer_gguf]=3000 [tokenizer_json]=3000 [chat_template]=10000 [grammar]=2000
  [server_request]=10000
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  runs="${TANDEM_FUZZ_RUNS:-${smoke_runs[$t]:-10000}}"
  mkdir -p "$work/$t"
  t0=$(date +%s)
  # -timeout: seconds per input (a hang is a failure); -rss_limit_mb: memory; -max_len: the
  # largest seed is under 64 KB, inputs may grow to 256 KB.
  cargo fuzz run --sanitizer none --fuzz-dir fuzz "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -runs="$runs" -timeout=10 -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 \
    2> "$work/$t.log" || { tail -n 60 "$work/$t.log"; echo "fuzz-smoke: $t FAILED"; exit 1; }
  stats=$(grep -E '^stat::(number_of_executed_units|peak_rss_mb)|cov: ' "$work/$t.log" | tail -n 3 | tr -s ' \n' ' ')
  echo "fuzz-smoke: $t ok, $runs runs in $(( $(date +%s) - t0 )) s ($stats)"
done
echo "fuzz-smoke: ${#targets[@]} targets passed in $(( $(date +%s) - start )) s in all"
