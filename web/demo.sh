#!/usr/bin/env bash
# The README's demo command: installs what is missing, builds (native + web/bnlab.wasm), then serves
# the demo page on 127.0.0.1 and prints its URL. Arguments go to web/serve.mjs (--port N, --log).
# The command-line demo is still there: build/native/bnlab demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh
echo
exec node web/serve.mjs "$@"
