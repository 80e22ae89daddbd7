#!/usr/bin/env bash
# Installs what is missing (Debian packages, npm packages from package-lock.json), then builds
# the native binary (build/native) and the WebAssembly modules (web/bnlab.wasm, single thread, and
# web/threads/bnlab-threads.*, the same core on pthreads).
# Used by both README commands; safe to run again (incremental).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
command -v emcc >/dev/null || need_apt+=(emscripten)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v python3 >/dev/null || need_apt+=(python3)
command -v clang >/dev/null || need_apt+=(clang)   # the fuzz targets (tests/fuzz, libFuzzer)
command -v ip >/dev/null || need_apt+=(iproute2)   # two test hosts in network namespaces (tests/c/cli_mpi_tcp.sh)
# libclang-rt-14-dev: libFuzzer and the sanitizer runtimes for clang 14 (Debian 12's clang)
# zlib1g-dev: gzip'd IDX files; dataset-fashion-mnist: the real files some tests and the README use
for pkg in libopenmpi-dev openmpi-bin libjpeg-dev libpng-dev chromium libclang-rt-14-dev zlib1g-dev dataset-fashion-mnist; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if [ -f package-lock.json ]; then
  # reinstall only when the lock file changed since the last install
  stamp=node_modules/.bnlab-lock-stamp
  if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    echo "== npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json "$stamp"
  fi
fi

jobs=$(nproc 2>/dev/null || echo 2)
echo "== native build (build/native)"
cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/native -j"$jobs"

echo "== wasm build (web/bnlab.wasm)"
# Debian's Emscripten 3.1.6 optimizer needs acorn from Debian's node modules
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
# wasm_build DIR [CMAKE OPTIONS...]: configure once, then build incrementally
wasm_build() {
  local dir=$1
  shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    emcmake cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  fi
  cmake --build "$dir" -j"$jobs"
}
wasm_build build/wasm
ls -l web/bnlab.wasm

echo "== wasm threads build (web/threads/bnlab-threads.{js,wasm,worker.js})"
wasm_build build/wasm-threads -DBNL_WASM_THREADS=ON
ls -l web/threads/bnlab-threads.wasm

# The same two with the GEMM kernel's multiply-add as relaxed-SIMD FMA (README: relaxed SIMD):
# web/bnlab-relaxed.wasm and web/threads/bnlab-threads-relaxed.*, loaded where the engine runs it.
echo "== wasm relaxed-SIMD builds (web/bnlab-relaxed.wasm, web/threads/bnlab-threads-relaxed.*)"
wasm_build build/wasm-relaxed -DBNL_WASM_RELAXED=ON
wasm_build build/wasm-threads-relaxed -DBNL_WASM_THREADS=ON -DBNL_WASM_RELAXED=ON
ls -l web/bnlab-relaxed.wasm web/threads/bnlab-threads-relaxed.wasm
