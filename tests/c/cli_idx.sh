#!/usr/bin/env bash
# `bnlab train --data mnist:DIR` and `--data fashion-mnist[:DIR]` on IDX files written here (plain and
# gzip'd): a run writes a model whose __metadata__ has the class names, the data's mean/std,
# input_size and train.data; --image-size 32 pads, 40 resizes; bad files (truncated, wrong magic,
# counts that disagree, corrupt gzip, missing) give one `bnlab: error:` line naming the file and
# leave no output behind.
# usage: bash tests/c/cli_idx.sh build/native/bnlab
set -u
BIN=${1:?usage: cli_idx.sh path/to/bnlab}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/sh_common.sh"   # $T, ok, bad, st, error_verdict

# expect_error WHAT SUBSTRING ARGS...: non-zero exit, exactly one stderr line "bnlab: error: ...SUBSTRING...", no model
expect_error() {
    local what=$1 sub=$2
    shift 2
    rm -rf "$T/out"
    "$BIN" train --out "$T/out" --epochs 1 --batch-size 4 --width-mult 0.125 --threads 1 --quiet "$@" >"$T/so" 2>"$T/err"
    error_verdict "$what" "$sub" $? || return
    if [ -e "$T/out/model.safetensors" ] || [ -e "$T/out/last.safetensors" ]; then
        bad "$what: a model was written"
    else
        ok
    fi
}

# mkidx DIR NTRAIN NTEST H W CLASSES GZIP [BREAK]: the four IDX files; BREAK damages one of them
mkidx() {
    python3 - "$@" <<'PY'
import gzip, os, struct, sys
d, ntr, nte, h, w, k, gz = sys.argv[1], *map(int, sys.argv[2:8])
brk = sys.argv[8] if len(sys.argv) > 8 else ""
os.makedirs(d, exist_ok=True)
def write(name, b):
    if brk == "truncate" and name.startswith("t10k-images"): b = b[:-7]
    if brk == "magic" and name.startswith("train-labels"): b = b"\x12\x34\x56\x78" + b[4:]
    if brk == "count" and name.startswith("t10k-labels"): b = struct.pack(">II", 0x801, nte - 1) + b[8:-1]
    p = os.path.join(d, name + (".gz" if gz else ""))
    if gz:
        b = gzip.compress(b)
        if brk == "gzcut" and name.startswith("train-images"): b = b[: len(b) // 2]
    open(p, "wb").write(b)
for split, n in (("train", ntr), ("t10k", nte)):
    # class c: a bright square at a class-dependent place, so a tiny net can learn it
    pix = bytearray()
    for i in range(n):
        c = (i * 7 + 1) % k
        img = bytearray(h * w)
        y0, x0 = (c * 3) % (h - 3), (c * 5) % (w - 3)
        for y in range(y0, y0 + 3):
            for x in range(x0, x0 + 3): img[y * w + x] = 250
        pix += img
    write(f"{split}-images-idx3-ubyte", struct.pack(">IIII", 0x803, n, h, w) + bytes(pix))
    write(f"{split}-labels-idx1-ubyte", struct.pack(">II", 0x801, n) + bytes((i * 7 + 1) % k for i in range(n)))
PY
}

# --- a run on plain files, and the same on gzip'd files: the same model
mkidx "$T/plain" 64 16 12 12 4 0
mkidx "$T/gz" 64 16 12 12 4 1
RUN=(--epochs 1 --batch-size 8 --arch resnet18 --width-mult 0.125 --threads 1 --seed 3 --quiet)
if "$BIN" train --data "mnist:$T/plain" --out "$T/r1" "${RUN[@]}" 2>"$T/err" &&
    "$BIN" train --data "mnist:$T/gz" --out "$T/r2" "${RUN[@]}" 2>>"$T/err"; then
    ok
    n=$(st eq "$T/r1/model.safetensors" "$T/r2/model.safetensors" 2>&1) && ok || bad "plain and gzip'd runs differ: $n"
    labels=$(st meta "$T/r1/model.safetensors" labels)
    [ "$labels" = '["0","1","2","3"]' ] && ok || bad "labels: $labels"
    size=$(st meta "$T/r1/model.safetensors" input_size)
    [ "$size" = '[3,12,12]' ] && ok || bad "input_size: $size"
    data=$(st meta "$T/r1/model.safetensors" train.data)
    [ "$data" = "mnist:$T/plain" ] && ok || bad "train.data: $data"
    # mean/std: 9 pixels of 250 in 144 per image
    python3 - "$(st meta "$T/r1/model.safetensors" mean)" "$(st meta "$T/r1/model.safetensors" std)" <<'PY' && ok || bad "mean/std"
import json, math, sys
m, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
p, v = 9 / 144, 250 / 255
mean = p * v
std = math.sqrt(p * v * v - mean * mean)
assert len(m) == 3 and len(s) == 3 and m[0] == m[1] == m[2] and s[0] == s[1] == s[2], (m, s)
assert abs(m[0] - mean) < 1e-6 and abs(s[0] - std) < 1e-6, (m, s, mean, std)
PY
else
    bad "runs on IDX files: $(cat "$T/err")"
fi

# --- --image-size: 16 pads (12 + 4), 40 resizes
for S in 16 40; do
    if "$BIN" train --data "mnist:$T/gz" --out "$T/s$S" --image-size $S --max-steps 2 "${RUN[@]}" 2>"$T/err"; then
        size=$(st meta "$T/s$S/model.safetensors" input_size)
        [ "$size" = "[3,$S,$S]" ] && ok || bad "--image-size $S: input_size $size"
    else
        bad "--image-size $S: $(cat "$T/err")"
    fi
done

# --- fashion-mnist:DIR gets the Fashion-MNIST class names
mkidx "$T/fm" 40 10 28 28 10 1
if "$BIN" train --data "fashion-mnist:$T/fm" --out "$T/fm-out" --max-steps 1 "${RUN[@]}" 2>"$T/err"; then
    labels=$(st meta "$T/fm-out/model.safetensors" labels)
    [ "$labels" = '["T-shirt/top","Trouser","Pullover","Dress","Coat","Sandal","Shirt","Sneaker","Bag","Ankle boot"]' ] &&
        ok || bad "fashion labels: $labels"
    [ "$(st meta "$T/fm-out/model.safetensors" train.data)" = "fashion-mnist:$T/fm" ] && ok || bad "fashion train.data"
else
    bad "fashion-mnist:DIR: $(cat "$T/err")"
fi

# --- bad files: one error line naming the file and the problem
mkidx "$T/b1" 16 8 12 12 4 0 truncate
expect_error "truncated images" "$T/b1/t10k-images-idx3-ubyte: truncated" --data "mnist:$T/b1"
mkidx "$T/b2" 16 8 12 12 4 1 magic
expect_error "wrong magic" "$T/b2/train-labels-idx1-ubyte.gz: wrong magic number" --data "mnist:$T/b2"
mkidx "$T/b3" 16 8 12 12 4 0 count
expect_error "count mismatch" "$T/b3/t10k-images-idx3-ubyte holds 8 images but $T/b3/t10k-labels-idx1-ubyte holds 7 labels" \
    --data "mnist:$T/b3"
mkidx "$T/b4" 16 8 12 12 4 1 gzcut
expect_error "truncated gzip" "$T/b4/train-images-idx3-ubyte.gz: truncated gzip" --data "mnist:$T/b4"
expect_error "missing directory" "$T/nothing/train-images-idx3-ubyte[.gz]: not found" --data "mnist:$T/nothing"
expect_error "bad spec" "--data: expected" --data "mnist:"
rm -f "$T/gz/t10k-labels-idx1-ubyte.gz"
expect_error "missing labels" "$T/gz/t10k-labels-idx1-ubyte: cannot open" --data "mnist:$T/gz"
mkidx "$T/k16" 16 8 12 12 16 0
expect_error "fashion labels beyond 9" "$T/k16/train-labels-idx1-ubyte: label 15 at image 2, Fashion-MNIST has classes 0..9" \
    --data "fashion-mnist:$T/k16"

echo "cli_idx: $pass passed, $fail failed"
[ $fail -eq 0 ]
