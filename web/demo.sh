#!/usr/bin/env bash
# The README's demo command: installs what is missing, builds, then runs the BatchNorm
# demonstration natively and in WebAssembly (Node), batch vs running statistics per batch size.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh
echo
echo "== native"
build/native/bnlab demo "$@"
echo
echo "== wasm (same C core, through web/bnlab.mjs)"
node web/demo-node.mjs "$@"
