#!/usr/bin/env bash
# The README's test command: installs what is missing, builds native + wasm, runs every test
# (C tests through ctest, the wasm build through node:test, tests/c/wasm_parallel.sh and
# tests/c/wasm_fused.sh, the browser tests through node:test and headless chromium), then the C
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer (build/asan) and the fuzz targets
# (build/fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh

echo "== C tests (ctest)"
ctest --test-dir build/native --output-on-failure -j2

echo "== wasm tests (node --test): the plain simd128 builds (Node 20 runs no relaxed SIMD by default)"
node --test tests/node/

echo "== wasm tests again on the relaxed-SIMD builds (node --experimental-wasm-relaxed-simd --test)"
BNL_EXPECT_RELAXED=1 node --experimental-wasm-relaxed-simd --test tests/node/

echo "== the parallel-for in the threaded wasm build (tests/c/wasm_parallel.sh)"
bash tests/c/wasm_parallel.sh

echo "== the fused residual output pass in the wasm build, fused vs unfused (tests/c/wasm_fused.sh)"
bash tests/c/wasm_fused.sh

echo "== browser tests (node --test tests/browser/, headless chromium)"
node --test tests/browser/

echo "== C tests under AddressSanitizer + UndefinedBehaviorSanitizer, leak checks on (build/asan)"
t0=$SECONDS
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNL_SANITIZE=ON >/dev/null
cmake --build build/asan -j"$(nproc 2>/dev/null || echo 2)" >build/asan.log 2>&1 || { tail -30 build/asan.log; exit 1; }
# fast_unwind_on_malloc=0: complete stacks, so that tests/lsan.supp can name Open MPI's own leaks
ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 OMP_NUM_THREADS=2 \
  ctest --test-dir build/asan --output-on-failure -j2
echo "== sanitized C tests: $((SECONDS - t0)) s"

echo "== fuzzing (tests/fuzz/run.sh: libFuzzer, ASan + UBSan, 15 s per target, kept crashes replayed)"
t0=$SECONDS
bash tests/fuzz/run.sh
echo "== fuzzing: $((SECONDS - t0)) s"

# the kill/resume figures (ctest keeps the output of passing tests in its log)
echo "== SIGKILL + resume (tests/c/cli_kill.sh), native and under ASan:"
grep -h '^cli_kill:' build/native/Testing/Temporary/LastTest.log build/asan/Testing/Temporary/LastTest.log | sed 's/^/  /' || true
