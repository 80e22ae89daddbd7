#!/usr/bin/env bash
# Bad input through the command line: every malformed weights file, bad input/labels files and bad
# options must exit non-zero with exactly one line `bnlab: error: ...` naming the problem, never
# crash, and never leave an output file (or a temp file) behind.
set -u
BIN=${1:-build/native/bnlab}
FIX=tests/fixtures/resnet
W=$FIX/resnet18.weights.safetensors
X=$FIX/resnet18.input.safetensors
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0

expect_error() {   # expect_error PHRASE CMD...  (run in $T/out so leftovers are visible)
    local phrase=$1; shift
    rm -rf "$T/out"; mkdir -p "$T/out"
    "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$? lines
    lines=$(wc -l <"$T/stderr")
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then
        echo "FAIL: exit code $rc (want 1 or 2, no crash): $*"; fail=$((fail + 1)); return
    fi
    if [ "$lines" -ne 1 ] || ! grep -q '^bnlab: error: ' "$T/stderr"; then
        echo "FAIL: stderr must be one 'bnlab: error:' line, got:"; cat "$T/stderr"; fail=$((fail + 1)); return
    fi
    if ! grep -qF -- "$phrase" "$T/stderr"; then
        echo "FAIL: message lacks '$phrase': $(cat "$T/stderr")"; fail=$((fail + 1)); return
    fi
    if [ -n "$(ls -A "$T/out")" ]; then
        echo "FAIL: left files behind: $(ls -A "$T/out")"; fail=$((fail + 1)); return
    fi
    pass=$((pass + 1))
}

python3 tests/make_malformed.py "$W" "$T/bad" >/dev/null || { echo "FAIL: make_malformed.py"; exit 1; }
n=0
while IFS=$'\t' read -r name phrase; do
    f="$T/bad/$name.safetensors"
    expect_error "$phrase" "$BIN" info "$f"
    expect_error "$phrase" "$BIN" infer --weights "$f" --input "$X" --output "$T/out/y.safetensors"
    expect_error "$phrase" "$BIN" step --weights "$f" --input "$X" --labels "$X" --lr 0.1 --output "$T/out/w2.safetensors"
    n=$((n + 1))
done <"$T/bad/manifest.tsv"

# malformed input and labels files
expect_error "too short" "$BIN" infer --weights "$W" --input "$T/bad/too_short.safetensors" --output "$T/out/y.safetensors"
expect_error "no tensor named 'input'" "$BIN" infer --weights "$W" --input "$W" --output "$T/out/y.safetensors"
expect_error "no tensor named 'labels'" "$BIN" step --weights "$W" --input "$X" --labels "$W" --lr 0.1 --output "$T/out/w.safetensors"
python3 - "$X" "$T" <<'PY'
import json, struct, sys
src, t = sys.argv[1], sys.argv[2]
buf = open(src, "rb").read(); (n,) = struct.unpack("<Q", buf[:8]); h = json.loads(buf[8:8 + n]); data = buf[8 + n:]
def pack(h, d):
    s = json.dumps(h).encode(); s += b" " * ((8 - len(s) % 8) % 8); return struct.pack("<Q", len(s)) + s + d
# 4-channel input
N, H, W, C = h["input"]["shape"]; b, e = h["input"]["data_offsets"]
h2 = json.loads(json.dumps(h)); h2["input"]["shape"] = [N, H, W * 3 // 4, 4]
open(t + "/x4.safetensors", "wb").write(pack(h2, data))
# labels out of range
lb, le = h["labels"]["data_offsets"]
bad = bytearray(data); bad[lb:lb + 8] = struct.pack("<q", 99)
open(t + "/badlabel.safetensors", "wb").write(pack(h, bytes(bad)))
PY
expect_error "channels" "$BIN" infer --weights "$W" --input "$T/x4.safetensors" --output "$T/out/y.safetensors"
expect_error "outside [0, 7)" "$BIN" step --weights "$W" --input "$X" --labels "$T/badlabel.safetensors" --lr 0.1 --output "$T/out/w.safetensors"

# files and options
expect_error "cannot open" "$BIN" info "$T/does-not-exist.safetensors"
expect_error "is a directory" "$BIN" info "$T"
expect_error "unknown option '--wieghts'" "$BIN" infer --wieghts "$W" --input "$X" --output "$T/out/y.safetensors"
expect_error "missing required option --output" "$BIN" infer --weights "$W" --input "$X"
expect_error "--mode" "$BIN" infer --weights "$W" --input "$X" --output "$T/out/y.safetensors" --mode test
expect_error "--bn-momentum" "$BIN" infer --weights "$W" --input "$X" --output "$T/out/y.safetensors" --bn-momentum 1.5
expect_error "--running-var" "$BIN" infer --weights "$W" --input "$X" --output "$T/out/y.safetensors" --running-var maybe
expect_error "--lr" "$BIN" step --weights "$W" --input "$X" --labels "$X" --lr abc --output "$T/out/w.safetensors"
expect_error "unknown command" "$BIN" frobnicate
expect_error "cannot create temporary file" "$BIN" infer --weights "$W" --input "$X" --output "$T/no/such/dir/y.safetensors"

# and the good path still works, writing exactly the requested file
rm -rf "$T/out"; mkdir -p "$T/out"
if "$BIN" infer --weights "$W" --input "$X" --output "$T/out/y.safetensors" 2>"$T/stderr" && [ "$(ls -A "$T/out")" = "y.safetensors" ]; then
    pass=$((pass + 1))
else
    echo "FAIL: valid infer: $(cat "$T/stderr") / $(ls -A "$T/out")"; fail=$((fail + 1))
fi
echo "cli_errors: $n malformed weight files x 3 commands + input/label/option cases"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
