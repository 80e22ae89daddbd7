#!/usr/bin/env bash
# The README's test command: installs what is missing, builds native + wasm, runs every test
# (C tests through ctest, the wasm build through node:test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh

echo "== C tests (ctest)"
ctest --test-dir build/native --output-on-failure -j2

echo "== wasm tests (node --test)"
node --test tests/node/

echo "== browser tests (node --test tests/browser/, headless chromium)"
node --test tests/browser/
