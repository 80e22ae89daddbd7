#!/usr/bin/env bash
# Small demo models, one per normalization kind, for the page (demo-models/norms/<kind>.safetensors):
# ResNet-18 at width 1/8 (8..64 channels, 0.7 MB), the procedural data (4 classes, 32x32), batch 8, 8 epochs.
# frozen: the BatchNorm model with "bnlab.norm" set to "frozen", fine-tuned 2 epochs at batch 2 with its
# running statistics fixed (--init keeps the file's kind) -- what frozen BatchNorm is for.
#   bash tests/make_norm_demo_models.sh [path/to/bnlab]       (about 5 minutes of one core)
#   ONLY=frozen bash tests/make_norm_demo_models.sh            (one kind; frozen needs batch.safetensors)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/native/bnlab}
RUNS=build/demo_norms
OUT=demo-models/norms
mkdir -p "$RUNS" "$OUT"
COMMON=(--data procedural --classes 4 --image-size 32 --train-size 4000 --val-size 1000 --data-seed 1
    --schedule cosine --warmup-epochs 1 --seed 0 --threads 1 --quiet)
ARCH=(--arch resnet18 --width-mult 0.125)   # --init takes it from the file
train() {   # name, then bnlab train options
    local name=$1
    shift
    rm -rf "${RUNS:?}/$name"
    "$BIN" train --out "$RUNS/$name" "${COMMON[@]}" "$@"
    cp "$RUNS/$name/model.safetensors" "$OUT/$name.safetensors"
    cp "$RUNS/$name/metrics.csv" "$OUT/$name.metrics.csv"
    echo "$name: eval top-1 $(tail -1 "$OUT/$name.metrics.csv" | cut -d, -f7)"
}
for k in batch group:4 renorm ghost:4 none; do
    [ -n "${ONLY:-}" ] && [ "$ONLY" != "${k%%:*}" ] && continue
    train "${k%%:*}" "${ARCH[@]}" --norm "$k" --epochs 8 --batch-size 8 --lr 0.0125
done
python3 - "$OUT/batch.safetensors" "$RUNS/frozen-init.safetensors" <<'PY'
# the same tensors, "bnlab.norm": "frozen" in the header (standard library only)
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h.setdefault("__metadata__", {})["bnlab.norm"] = "frozen"
hb = json.dumps(h, separators=(",", ":")).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
train frozen --init "$RUNS/frozen-init.safetensors" --epochs 2 --batch-size 2 --lr 0.001
