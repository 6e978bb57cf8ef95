#!/usr/bin/env bash
# Fetch tandem's reference models into the model cache: a thin wrapper over `tandem fetch`
# (crates/cli/src/fetch.rs holds the packages, the sha256 of every file and the assembly of
# split files). Builds the binary first (debug profile, so CI's `cargo test` reuses it).
#
#   scripts/fetch-models.sh [smollm2|qwen-0.5b|qwen-1.5b|gemma-3-270m|all]...   (default: smollm2)
#
# Cache: $TANDEM_MODELS (default $HOME/.cache/tandem/models). Idempotent: a model whose file
# is present with the right checksum is not downloaded again; a file only gets its final name
# after its checksum matched.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --locked --bin tandem -- fetch "$@"
