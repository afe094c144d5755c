#!/usr/bin/env bash
# Rebuilds packages/data/wasm/rank.wasm from native/wasm/rank.c. The .wasm is committed so that
# installing gm needs no C toolchain; the test suite checks the committed file matches a fresh
# build whenever clang is available (Debian: apt-get install clang-14 lld-14).
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG=${CLANG:-$(command -v clang-14 || command -v clang)}
"$CLANG" --target=wasm32 -O3 -nostdlib -fno-builtin -Wall -Wextra \
  -Wl,--no-entry -Wl,--strip-all -Wl,--initial-memory=8388608 \
  -o "${1:-packages/data/wasm/rank.wasm}" native/wasm/rank.c
