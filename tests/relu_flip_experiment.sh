#!/usr/bin/env bash
# The step-9 question of issue 16, looked at directly: the issue's run (resnet18 at width 1/4, 32x32,
# lr 0.002, seed 3, 512 images, 1 rank x 32 against 2 x 16 --sync-bn) from one initialization W.
# Saves the states after k = 0..K steps of three runs (A: 1 rank; N: 1 rank from W moved one ulp;
# S: 2 ranks --sync-bn, shared memory: the same arithmetic as over TCP) and the batches of A
# (--dump-batches), then tests/relu_flip_probe.py compares the ReLU inputs of A with those of N and
# of S at every step, in float64 (PyTorch, /usr/bin/python3). About 3 minutes.
# usage: bash tests/relu_flip_experiment.sh build/native/bnlab [K]
set -eu
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
K=${2:-10}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMPI_MCA_btl_vader_single_copy_mechanism=none
C=(--image-size 32 --classes 10 --train-size 512 --val-size 0 --seed 3 --lr 0.002 --threads 1 --epochs 2 --quiet)
cd "$T"
"$BIN" train --arch resnet18 --width-mult 0.25 "${C[@]}" --batch-size 32 --lr 0 --bn-momentum 1 --max-steps 1 --out w
python3 "$HERE/c/st_check.py" nudge w/model.safetensors wn.safetensors
mkdir A N S batches
cp w/model.safetensors A/0.safetensors
cp wn.safetensors N/0.safetensors
cp w/model.safetensors S/0.safetensors
"$BIN" train "${C[@]}" --batch-size 32 --init w/model.safetensors --max-steps "$K" --dump-batches batches --out dump
for k in $(seq 1 $((K - 1))); do
    rm -rf a n s
    "$BIN" train "${C[@]}" --batch-size 32 --init w/model.safetensors --max-steps "$k" --out a
    "$BIN" train "${C[@]}" --batch-size 32 --init wn.safetensors --max-steps "$k" --out n
    mpirun --allow-run-as-root --oversubscribe --mca btl self,vader -np 2 "$BIN" train "${C[@]}" --batch-size 16 \
        --sync-bn --init w/model.safetensors --max-steps "$k" --out s
    cp a/model.safetensors "A/$k.safetensors"
    cp n/model.safetensors "N/$k.safetensors"
    cp s/model.safetensors "S/$k.safetensors"
done
echo "# A = 1 rank x 32; B = the same from weights one ulp away"
/usr/bin/python3 "$HERE/relu_flip_probe.py" A N batches "$K"
echo "# A = 1 rank x 32; B = 2 ranks x 16 --sync-bn"
/usr/bin/python3 "$HERE/relu_flip_probe.py" A S batches "$K"
