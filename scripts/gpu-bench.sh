#!/usr/bin/env bash
# Real-GPU figures without shipping the weights (issue: "speed where it is lost", part 6).
# A lent GPU machine has no network, a 10-minute command limit and a 64 MiB working tree, so
# the 1 GB model files cannot go there; their GGUF headers (metadata, tokenizer, tensor
# infos: ~6 MB each) and a release binary can. Two steps:
#
#   scripts/gpu-bench.sh prepare [DIR]       # here: writes DIR (default .gpu/, git-ignored):
#                                            #   the release binary and the header of every
#                                            #   reference model in the model cache
#   scripts/gpu-bench.sh run [DIR] OUT       # there: bench-kernels, bench-cost (synthetic
#                                            #   weights; the Qwen 1.5B with the 0.5B as its
#                                            #   drafter) and bench-decode (plain) into OUT
#
# `run` uses DIR/tandem, else target/release/tandem, else builds with cargo (offline). Each
# benchmark runs under `timeout` so that the whole run stays inside one device command
# (TANDEM_GPU_BENCH_SECONDS, default 480 s in all). Outputs: OUT/devices.txt,
# OUT/kernels.md, OUT/cost-NAME.md + OUT/costs-NAME.json per model, OUT/decode.md.
# TANDEM_GPU_BENCH_QUICK=1 shrinks every benchmark (a smoke run: lavapipe finishes it in a
# few minutes). `tandem bench --project OUT/costs-NAME.json specbench.json` then projects a
# benchmark run here onto that device.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
case "$mode" in
prepare)
  dir="${2:-.gpu}"
  mkdir -p "$dir"
  cargo build --release --quiet
  cp target/release/tandem "$dir/tandem"
  strip "$dir/tandem" 2>/dev/null || true
  # The machine there may lack the Vulkan loader: its package travels too (unpacked by run).
  if command -v apt-get >/dev/null; then
    (cd "$dir" && apt-get download libvulkan1 >/dev/null 2>&1) || echo "gpu-bench: could not download libvulkan1 (run brings none)"
  fi
  n=0
  for name in smollm2 gemma-3-270m qwen-0.5b qwen-1.5b; do
    if "$dir/tandem" header-only "$name" "$dir/$name.gguf" 2>/dev/null; then
      gzip -f -9 "$dir/$name.gguf"
      n=$((n + 1))
    else
      echo "gpu-bench: $name is not in the model cache (tandem fetch $name): skipped"
    fi
  done
  [ "$n" -gt 0 ] || { echo "gpu-bench: no reference model in the cache: run tandem fetch" >&2; exit 1; }
  du -sh "$dir"
  echo "gpu-bench: carry $dir (and run: scripts/gpu-bench.sh run $dir OUT)"
  ;;
run)
  dir="${2:-.gpu}"
  out="${3:?usage: scripts/gpu-bench.sh run [DIR] OUT}"
  mkdir -p "$out"
  if [ -x "$dir/tandem" ]; then
    bin="$dir/tandem"
  elif [ -x target/release/tandem ]; then
    bin=target/release/tandem
  else
    cargo build --release --offline --quiet
    bin=target/release/tandem
  fi
  if ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
    for f in "$dir"/libvulkan1_*.deb; do [ -f "$f" ] && dpkg -x "$f" / && ldconfig; done
  fi
  # Headers travel gzipped (their tokenizers compress about 3×).
  for z in "$dir"/*.gguf.gz; do
    [ -f "$z" ] && gunzip -c "$z" > "${z%.gz}"
  done
  budget="${TANDEM_GPU_BENCH_SECONDS:-480}"
  start=$(date +%s)
  # Runs a benchmark with what is left of the budget (at most its own share), output to a
  # file; a benchmark that fails or runs out of time is reported, and the others still run.
  bench() {
    local file="$1" share="$2"
    shift 2
    local left=$((budget - ($(date +%s) - start)))
    [ "$left" -gt 10 ] || { echo "gpu-bench: out of time before $file" | tee -a "$out/errors.txt"; return 0; }
    [ "$share" -lt "$left" ] || share="$left"
    echo "gpu-bench: $* > $file (up to ${share} s)"
    if ! timeout "$share" "$bin" "$@" > "$out/$file" 2>> "$out/errors.txt"; then
      echo "gpu-bench: '$*' failed or ran past ${share} s" | tee -a "$out/errors.txt"
    fi
  }
  kernels=() cost=() decode=()
  if [ "${TANDEM_GPU_BENCH_QUICK:-0}" = 1 ]; then
    kernels=(--types q8_0,q4_k --shapes 896x1024 --t 1,8)
    cost=(--context-tokens 32 --max-t 4 --reps 1)
    decode=(--prompt-tokens 16 -n 4)
  fi
  "$bin" devices > "$out/devices.txt" 2>&1 || { cat "$out/devices.txt"; exit 1; }
  cat "$out/devices.txt"
  bench kernels.md 90 bench-kernels "${kernels[@]}"
  headers=()
  for name in smollm2 gemma-3-270m qwen-0.5b qwen-1.5b; do
    [ -f "$dir/$name.gguf" ] || continue
    headers+=("$dir/$name.gguf")
    drafter=()
    if [ "$name" = qwen-1.5b ] && [ -f "$dir/qwen-0.5b.gguf" ]; then
      drafter=(-d "$dir/qwen-0.5b.gguf")
    fi
    bench "cost-$name.md" 90 bench-cost -m "$dir/$name.gguf" "${drafter[@]}" \
      --synthetic-weights "${cost[@]}" --out "$out/costs-$name.json"
  done
  [ ${#headers[@]} -gt 0 ] || { echo "gpu-bench: no headers in $dir (run prepare first)" >&2; exit 1; }
  bench decode.md 120 bench-decode --synthetic-weights "${decode[@]}" "${headers[@]}"
  echo "gpu-bench: done in $(($(date +%s) - start)) s; tables in $out"
  ls -l "$out"
  ;;
*)
  sed -n '2,21p' "$0"
  exit 2
  ;;
esac
