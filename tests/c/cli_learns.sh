#!/usr/bin/env bash
# Training learns: `bnlab train` on 2,000 real Fashion-MNIST training images (3 epochs, resnet18 at
# 1/8 width, 28x28) must lower its training loss to below 3/4 of the first epoch's and reach a
# held-out top-1 of at least 50 % on 1,000 test images (chance: 10 %). The negative control trains
# the same way on the same images with their labels shuffled and must stay near chance (< 25 %):
# so a mix-up of images and labels anywhere between the files and the loss fails this test.
# Skipped (exit 77) when Debian's dataset-fashion-mnist is not installed.
# usage: bash tests/c/cli_learns.sh build/native/bnlab
set -u
BIN=${1:?usage: cli_learns.sh path/to/bnlab}
SRC=${BNL_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$SRC/train-images-idx3-ubyte.gz" ] || [ ! -f "$SRC/t10k-labels-idx1-ubyte.gz" ]; then
    echo "cli_learns: SKIPPED: $SRC has no Fashion-MNIST (apt-get install dataset-fashion-mnist)"
    exit 77
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
bad() {
    echo "FAIL: $*" >&2
    fail=$((fail + 1))
}

# DIR SHUFFLE: the first 2000 training and 1000 test images as plain IDX files; SHUFFLE=1 permutes
# the training labels (the test labels stay true)
subset() {
    python3 - "$SRC" "$1" "$2" <<'PY'
import gzip, os, random, struct, sys
src, dst, shuffle = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
os.makedirs(dst, exist_ok=True)
for split, n in (("train", 2000), ("t10k", 1000)):
    im = gzip.open(f"{src}/{split}-images-idx3-ubyte.gz").read()
    lb = gzip.open(f"{src}/{split}-labels-idx1-ubyte.gz").read()
    labels = bytearray(lb[8:8 + n])
    if shuffle and split == "train":
        random.Random(5).shuffle(labels)
    open(f"{dst}/{split}-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, n, 28, 28) + im[16:16 + n * 784])
    open(f"{dst}/{split}-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, n) + bytes(labels))
PY
}

RUN=(--arch resnet18 --width-mult 0.125 --epochs 3 --batch-size 32 --lr 0.05 --warmup-epochs 0.5 --threads 1 --seed 1 --quiet)
# prints "first_loss last_loss val_top1" from metrics.csv
summary() {
    python3 - "$1" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(rows[0]["train_loss"], rows[-1]["train_loss"], rows[-1]["val_top1"])
PY
}

subset "$T/true" 0
subset "$T/shuffled" 1
if "$BIN" train --data "mnist:$T/true" --out "$T/r-true" "${RUN[@]}" 2>"$T/err"; then
    read -r first last top1 <<<"$(summary "$T/r-true/metrics.csv")"
    echo "true labels: train loss $first -> $last, val top-1 $top1"
    python3 -c "import sys; sys.exit(0 if float('$last') < 0.75 * float('$first') else 1)" ||
        bad "training loss did not fall: $first -> $last"
    python3 -c "import sys; sys.exit(0 if float('$top1') >= 0.5 else 1)" || bad "val top-1 $top1 < 0.5 (chance 0.1)"
else
    bad "training run: $(cat "$T/err")"
fi
if "$BIN" train --data "mnist:$T/shuffled" --out "$T/r-shuf" "${RUN[@]}" 2>"$T/err"; then
    read -r first last top1 <<<"$(summary "$T/r-shuf/metrics.csv")"
    echo "shuffled labels (control): train loss $first -> $last, val top-1 $top1"
    python3 -c "import sys; sys.exit(0 if float('$top1') < 0.25 else 1)" ||
        bad "control: a model trained on shuffled labels reached $top1 (>= 0.25): the check could not tell"
else
    bad "control run: $(cat "$T/err")"
fi
[ $fail -eq 0 ] && echo "cli_learns: passed" || echo "cli_learns: $fail failed"
[ $fail -eq 0 ]
