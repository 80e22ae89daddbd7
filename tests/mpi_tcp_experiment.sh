#!/usr/bin/env bash
# Is the 2-rank --sync-bn run's departure from the 1-rank run (issue 16: 3e-6 through step 8, then
# 1.8e-3 at step 9) a defect or float32 rounding amplified? Step by step, for k = 1..STEPS, the
# largest relative difference in any tensor (st_check.py reldiff) after k steps between
#   one:    1 rank x 32 images from init W
#   nudged: the same from W with every parameter moved by one ulp (a float32 perturbation)
#   input:  the same from W with every input value one ulp up at every step (--nudge-input)
#   sync:   2 ranks x 16 with --sync-bn over TCP between two test hosts (tests/c/mpi_hosts.sh)
# If sync-vs-one grows like nudged-vs-one (same step, same size), the jump is the network's own
# sensitivity to rounding (a ReLU input within rounding of zero flips), not a defect of the 2-rank
# path. Writes CSV to stdout. Root (namespaces); about 3 minutes.
# usage: bash tests/mpi_tcp_experiment.sh build/native/bnlab [STEPS]
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
STEPS=${2:-24}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T=$(mktemp -d)
source "$HERE/c/mpi_hosts.sh"
trap 'hosts_down; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM HUP   # through the EXIT trap: the namespaces go in every case
hosts_up "$T" || { echo "cannot make the test hosts: $HOSTS_WHY" >&2; exit 1; }
st() { python3 "$HERE/c/st_check.py" "$@"; }

# the issue's run: lr 0.002, seed 3, 512 training images, 16 x 2 against 32
ARCH=(--arch resnet18 --width-mult 0.25)
C=(--image-size 32 --classes 10 --train-size 512 --val-size 0 --seed 3
    --lr 0.002 --threads 1 --epochs 2 --quiet)
# W: the run's own initialization (one step at lr 0 and BatchNorm momentum 1 changes nothing but
# num_batches_tracked), then the nudged copy
"$BIN" train "${ARCH[@]}" "${C[@]}" --batch-size 32 --lr 0 --bn-momentum 1 --max-steps 1 --out "$T/w" || exit 1
st nudge "$T/w/model.safetensors" "$T/wn.safetensors"
echo "step,sync_vs_one,sync_tensor,nudged_vs_one,nudged_tensor,input_vs_one,input_tensor"
for k in $(seq 1 "$STEPS"); do
    rm -rf "$T/one" "$T/nud" "$T/sync" "$T/inp"
    "$BIN" train "${C[@]}" --init "$T/w/model.safetensors" --batch-size 32 --nudge-input --max-steps "$k" \
        --out "$T/inp" || exit 1
    "$BIN" train "${C[@]}" --init "$T/w/model.safetensors" --batch-size 32 --max-steps "$k" --out "$T/one" || exit 1
    "$BIN" train "${C[@]}" --init "$T/wn.safetensors" --batch-size 32 --max-steps "$k" --out "$T/nud" || exit 1
    timeout 120 "${MPI_TCP[@]}" "$BIN" train "${C[@]}" --init "$T/w/model.safetensors" --batch-size 16 --sync-bn \
        --max-steps "$k" --out "$T/sync" 2>"$T/err" || { cat "$T/err" >&2; exit 1; }
    read -r ds ts < <(st reldiff "$T/sync/model.safetensors" "$T/one/model.safetensors")
    read -r dn tn < <(st reldiff "$T/nud/model.safetensors" "$T/one/model.safetensors")
    read -r di ti < <(st reldiff "$T/inp/model.safetensors" "$T/one/model.safetensors")
    echo "$k,$ds,$ts,$dn,$tn,$di,$ti"
done
