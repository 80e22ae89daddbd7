#!/usr/bin/env bash
# `bnlab info`'s model card: input size, mean/std, labels and training data, each read from
# __metadata__ or assumed (and why). Read: the demo-style keys; assumed: a 1000-class file without
# them is ImageNet (224x224, ImageNet mean/std and names), another class count falls back to
# train.image-size or 64x64; malformed: the key is ignored with a "warning:" line naming it, and
# info still succeeds (the weights are fine).
set -u
BIN=${1:-build/native/bnlab}
R50=tests/fixtures/resnet/resnet50.weights.safetensors              # 10 classes
IN1K=tests/fixtures/imagenet/resnet50-narrow-1000.safetensors       # 1000 classes, no metadata
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0

# meta SRC DST KEY=VALUE... : copy SRC with __metadata__ replaced by the given keys (none: no metadata)
meta() {
    python3 - "$@" <<'PY'
import json, struct, sys
src, dst, kv = sys.argv[1], sys.argv[2], sys.argv[3:]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h.pop("__metadata__", None)
if kv:
    h["__metadata__"] = dict(x.split("=", 1) for x in kv)
j = json.dumps(h).encode()
j += b" " * ((8 - len(j) % 8) % 8)
open(dst, "wb").write(struct.pack("<Q", len(j)) + j + b[8 + n:])
PY
}

# expect FILE LINE-REGEX... : info succeeds and prints a line matching each regex
expect() {
    local f=$1; shift
    if ! "$BIN" info "$f" >"$T/out" 2>"$T/err"; then
        echo "FAIL: info $f exited non-zero: $(cat "$T/err")"; fail=$((fail + 1)); return
    fi
    for re in "$@"; do
        if grep -qE -- "$re" "$T/out"; then pass=$((pass + 1)); else
            echo "FAIL: $f: no line matching '$re' in:"; sed 's/^/    /' "$T/out"; fail=$((fail + 1))
        fi
    done
}
# absent FILE REGEX : no line matches
absent() {
    "$BIN" info "$1" >"$T/out" 2>&1
    if grep -qE -- "$2" "$T/out"; then echo "FAIL: $1: unexpected '$2'"; fail=$((fail + 1)); else pass=$((pass + 1)); fi
}

# ---- read from the file
meta "$R50" "$T/read.safetensors" 'input_size=[3, 96, 80]' 'mean=[0.5,0.25,0.125]' 'std=[0.2, 0.3, 0.4]' \
    'labels=["a","b","c","d","e","f","g","h","i","j"]' 'train.data=fashion-mnist'
expect "$T/read.safetensors" '^input size: 96x80 \(from the file: __metadata__ input_size\)$' \
    '^mean: 0.5 0.25 0.125 \(from the file' '^std: 0.2 0.3 0.4 \(from the file' \
    '^labels: 10 names \(from the file' '^trained on: fashion-mnist \(from the file'
absent "$T/read.safetensors" '^warning:'
# an older converter's bare integer
meta "$R50" "$T/int.safetensors" 'input_size=128'
expect "$T/int.safetensors" '^input size: 128x128 \(from the file'

# ---- assumed: a 1000-class model without metadata is ImageNet
expect "$IN1K" '^classes: 1000$' '^input size: 224x224 \(assumed: .*ImageNet' \
    '^mean: 0.485 0.456 0.406 \(assumed' '^std: 0.229 0.224 0.225 \(assumed' \
    '^labels: the 1000 ImageNet class names \(assumed' '^trained on: imagenet \(assumed'
absent "$IN1K" '^warning:'
# ... and a 10-class one is not: 64x64 default, or the size it was trained at
meta "$R50" "$T/none.safetensors"
expect "$T/none.safetensors" '^input size: 64x64 \(assumed: .*not a 1000-class' '^labels: none \(class 0 .. class 9\) \(assumed' \
    '^trained on: unknown \(assumed'
meta "$R50" "$T/trained.safetensors" 'train.image-size=48x40' 'train.data=procedural'
expect "$T/trained.safetensors" '^input size: 48x40 \(assumed: no input_size; train.image-size' '^trained on: procedural \(from the file'
# an ImageNet model's own keys win over the assumptions
meta "$IN1K" "$T/in1k-meta.safetensors" 'input_size=[3,160,160]' 'mean=[0.5,0.5,0.5]'
expect "$T/in1k-meta.safetensors" '^input size: 160x160 \(from the file' '^mean: 0.5 0.5 0.5 \(from the file' \
    '^std: 0.229 0.224 0.225 \(assumed' '^labels: the 1000 ImageNet class names \(assumed'

# ---- malformed: ignored with a warning naming the key and the value; info still succeeds
meta "$IN1K" "$T/bad.safetensors" 'input_size=[3,224' 'mean=[0.5, "x", 0.5]' 'std=[0.2,0,0.2]' 'labels=["only","three","names"]'
expect "$T/bad.safetensors" '^input size: 224x224 \(assumed: unusable input_size' \
    "^warning: input size: input_size '\[3,224' is not \[3, H, W\]" \
    "^warning: mean: mean '\[0.5, \"x\", 0.5\]' is not a JSON array of 3 numbers" \
    "^warning: std: std '\[0.2,0,0.2\]' is not a JSON array of 3 positive numbers" \
    '^warning: labels: labels has 3 names for 1000 classes' '^labels: the 1000 ImageNet class names \(assumed: unusable labels'
for v in '[3,0,224]' '[1,224,224]' '[3,224.5,224]' '[3,1e999,2]' '224x224' '[3,224,224] x' ''; do
    meta "$R50" "$T/bad-size.safetensors" "input_size=$v"
    expect "$T/bad-size.safetensors" '^input size: 64x64 \(assumed: unusable input_size' '^warning: input size: '
done
for v in 'tench' '["a",1]' '["a\u00zz"]' '["a" "b"]' '[]'; do
    meta "$R50" "$T/bad-labels.safetensors" "labels=$v"
    expect "$T/bad-labels.safetensors" '^labels: none .*\(assumed: unusable labels' '^warning: labels: '
done

echo "cli_card: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
