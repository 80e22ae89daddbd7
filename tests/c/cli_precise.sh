#!/usr/bin/env bash
# bnlab precise-bn: --help; the parameters stay byte for byte, only running statistics change; the same
# command twice gives the same bytes; 2 batches of 8 and 1 batch of 16 (the same 16 images) give the
# stem's bn1 the same statistics (its input does not depend on normalization: the pooled variance
# of the two batches must equal the 16-image batch variance); bad calls are one 'bnlab: error:'
# line, exit non-zero, and leave no output file behind.
set -u
BIN=${1:-build/native/bnlab}
W=demo-models/norms/batch.safetensors
NONE=demo-models/norms/none.safetensors
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

"$BIN" precise-bn --help | grep -q '^usage: bnlab precise-bn' && ok || bad "--help"

run() { "$BIN" precise-bn --weights "$W" --data procedural --threads 1 "$@" >"$T/log" 2>&1 || { bad "precise-bn $*: $(cat "$T/log")"; return 1; }; }
run --batches 2 --batch-size 8 --output "$T/a.safetensors" && grep -q '^wrote ' "$T/log" && ok || bad "first run"
run --batches 2 --batch-size 8 --output "$T/b.safetensors" && ok
python3 tests/c/st_check.py eq "$T/a.safetensors" "$T/b.safetensors" >/dev/null && ok || bad "not deterministic"
python3 tests/c/st_check.py close "$T/a.safetensors" "$W" params 0 0 >/dev/null && ok || bad "parameters changed"
d=$(python3 tests/c/st_check.py maxdiff "$T/a.safetensors" "$W" stats)
python3 -c "import sys; sys.exit(0 if float('$d') > 1e-3 else 1)" && ok || bad "running statistics did not change ($d)"
run --batches 1 --batch-size 16 --output "$T/c.safetensors" && ok
python3 - "$T/a.safetensors" "$T/c.safetensors" <<'PY' && ok || bad "bn1: 2x8 pooled != 1x16"
import struct, sys
sys.path.insert(0, 'tests/c')
from st_check import load
a, b = load(sys.argv[1])[0], load(sys.argv[2])[0]
for k in ('bn1.running_mean', 'bn1.running_var'):
    x = struct.unpack('<%df' % (len(a[k][2]) // 4), a[k][2])
    y = struct.unpack('<%df' % (len(b[k][2]) // 4), b[k][2])
    worst = max(abs(p - q) / (1e-6 + abs(q)) for p, q in zip(x, y))
    if worst > 1e-4:
        sys.exit('%s: relative difference %.3g' % (k, worst))
PY

expect_error() {   # expect_error PHRASE ARGS...
    local phrase=$1; shift
    rm -rf "$T/out"; mkdir -p "$T/out"
    "$BIN" precise-bn "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$?
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then bad "exit code $rc: $*"; return; fi
    if [ "$(wc -l <"$T/stderr")" -ne 1 ] || ! grep -q '^bnlab: error: ' "$T/stderr"; then bad "stderr: $(cat "$T/stderr")"; return; fi
    grep -qF -- "$phrase" "$T/stderr" || { bad "message lacks '$phrase': $(cat "$T/stderr")"; return; }
    [ -z "$(ls -A "$T/out")" ] || { bad "left files behind: $(ls -A "$T/out")"; return; }
    ok
}
O=$T/out/w.safetensors
expect_error "missing required option --weights" --output "$O"
expect_error "missing required option --output" --weights "$W"
expect_error "no running statistics" --weights "$NONE" --output "$O"
expect_error "--data: expected" --weights "$W" --data nonsense --output "$O"
expect_error "--batches" --weights "$W" --batches 0 --output "$O"
expect_error "the training split has" --weights "$W" --batches 100000 --batch-size 64 --output "$O"
expect_error "cannot create temporary file" --weights "$W" --batches 1 --batch-size 4 --output "$T/no/such/dir/w.safetensors"
expect_error "$T/missing.safetensors" --weights "$T/missing.safetensors" --output "$O"
echo "cli_precise: $pass passed, $fail failed"
[ $fail -eq 0 ]
