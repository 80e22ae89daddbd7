#!/usr/bin/env bash
# tests/c/test_fused.c in the WebAssembly build: the fused residual output pass on the wasmsimd
# kernels (and wasm's scalar reference), fused against unfused bit for bit, run by Node. Needs
# build/wasm (tests/build.sh). Exits with the test's status.
set -euo pipefail
cd "$(dirname "$0")/../.."
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
emcc -O2 -msimd128 -sEXIT_RUNTIME=1 -sMODULARIZE=1 -sEXPORT_NAME=testFused -sALLOW_MEMORY_GROWTH=1 \
  -sINITIAL_MEMORY=67108864 -Isrc -Itests/c \
  tests/c/test_fused.c build/wasm/libbnlab_core.a -o "$out/test_fused.cjs"
# Node 20's fetch cannot read a file path: the module gets its bytes (as tests/c/wasm_parallel.sh)
timeout 300 node -e "require(process.argv[1])({ wasmBinary: require('fs').readFileSync(process.argv[2]) })" \
  "$out/test_fused.cjs" "$out/test_fused.wasm"
