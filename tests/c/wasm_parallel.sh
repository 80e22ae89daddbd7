#!/usr/bin/env bash
# tests/c/test_parallel.c in the threaded WebAssembly build: the parallel-for on src/core/parallel.c's
# pthread pool (Emscripten -pthread, 4 pooled workers), run by Node. Needs build/wasm-threads
# (tests/build.sh). Exits with the test's status.
set -euo pipefail
cd "$(dirname "$0")/../.."
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
emcc -O2 -msimd128 -pthread -sPTHREAD_POOL_SIZE=4 -sEXIT_RUNTIME=1 -sMODULARIZE=1 -sEXPORT_NAME=testParallel \
  -sALLOW_MEMORY_GROWTH=1 -Wno-pthreads-mem-growth -sINITIAL_MEMORY=67108864 -Isrc -Itests/c \
  tests/c/test_parallel.c build/wasm-threads/libbnlab_core.a -o "$out/test_parallel.cjs"
timeout 120 node -e "require(process.argv[1])({ wasmBinary: require('fs').readFileSync(process.argv[2]) })" \
  "$out/test_parallel.cjs" "$out/test_parallel.wasm"
