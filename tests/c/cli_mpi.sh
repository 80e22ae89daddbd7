#!/usr/bin/env bash
# `bnlab train` under mpirun (data parallel). One step of 2 ranks x batch 8 with --sync-bn must give
# the weights and running statistics of 1 rank x batch 16 (the same 16 images: rank r takes images
# [8r, 8r+8) of each global batch); without --sync-bn the running statistics must differ (each rank
# normalizes its own half). Also: 2 ranks --epochs 1 then --resume --epochs 2 is bit-identical to
# --epochs 2 straight; a resume with another rank count is refused; a diverging run under
# --sync-bn stops on every rank with one error line instead of hanging in a BatchNorm all-reduce.
# Skips (exit 0) only when mpirun is not installed; fails if bnlab was built without MPI.
# usage: bash tests/c/cli_mpi.sh build/native/bnlab
set -u
BIN=${1:?usage: cli_mpi.sh path/to/bnlab}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! command -v mpirun >/dev/null 2>&1; then
    echo "cli_mpi: SKIPPED: mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev, then rebuild)"
    exit 0
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
source "$HERE/sh_common.sh"   # $T, ok, bad, st
# OpenMPI as root in a container: both flags are needed; shared memory without CMA
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI=(mpirun --allow-run-as-root --oversubscribe --mca btl self,vader -np)
mpi() { timeout 120 "${MPI[@]}" "$@"; }

TINY=(--classes 4 --image-size 16 --train-size 48 --val-size 16 --data-seed 3 --arch resnet18 --width-mult 0.125
    --threads 1 --seed 5 --lr 0.1 --quiet)

# --- a build without MPI (cmake -DBNL_MPI=OFF): check its clear errors, and that is all it can do
if ! "$BIN" train "${TINY[@]}" --batch-size 8 --max-steps 1 --sync-bn --out "$T/probe1" >"$T/out" 2>"$T/err"; then
    if grep -q "built without" "$T/err"; then
        [ "$(wc -l <"$T/err")" -eq 1 ] && ok || bad "--sync-bn without MPI: more than one line: $(cat "$T/err")"
        mpi 2 "$BIN" train "${TINY[@]}" --batch-size 8 --max-steps 1 --out "$T/probe2" >"$T/out" 2>"$T/err"
        rc=$?
        if [ $rc -ne 0 ] && [ "$(grep -c '^bnlab: error: .*built without MPI' "$T/err")" -eq 1 ]; then ok; else
            bad "a 2-rank launch of a build without MPI: rc $rc, $(head -3 "$T/err")"
        fi
        echo "cli_mpi: $pass checks, $fail failed (this bnlab was built without MPI: only its errors were checked)"
        [ $fail -eq 0 ]
        exit
    fi
    bad "1-rank --sync-bn run: $(cat "$T/err")"
fi

# --- two ranks
if ! mpi 2 "$BIN" train "${TINY[@]}" --batch-size 8 --max-steps 1 --sync-bn --out "$T/probe" >"$T/out" 2>"$T/err"; then
    bad "2-rank run failed (rc $?): $(head -5 "$T/err")"
    # --- the step protocol of synchronized BatchNorm when only one rank fails (tests/c/test_train.c --mpi)
TT=$(dirname "$BIN")/test_train
if [ -x "$TT" ]; then
    if mpi 2 "$TT" --mpi >"$T/out" 2>&1; then ok; else
        bad "test_train --mpi (rc $?): $(grep -v '^-\|^ *$' "$T/out" | head -8)"
    fi
    grep 'test_train --mpi' "$T/out" | sed 's/^/  /'
else
    echo "  ($TT not built: the one-rank-fails protocol check is skipped)"
fi

echo "cli_mpi: $pass checks, $fail failed"
    exit 1
fi
ok

# --- one step: 2 ranks x 8 with synchronized BatchNorm == 1 rank x 16
"$BIN" train "${TINY[@]}" --batch-size 16 --max-steps 1 --out "$T/one" 2>"$T/err" || bad "1-rank run: $(cat "$T/err")"
mpi 2 "$BIN" train "${TINY[@]}" --batch-size 8 --max-steps 1 --sync-bn --out "$T/sync" 2>"$T/err" ||
    bad "2-rank --sync-bn run: $(head -5 "$T/err")"
[ "$(st meta "$T/sync/last.safetensors" train.world-size)" = "2" ] && ok || bad "the 2-rank checkpoint does not say world-size 2"
for kind in params stats; do
    if msg=$(st close "$T/sync/model.safetensors" "$T/one/model.safetensors" $kind 1e-5 1e-4); then ok; else
        bad "sync-bn 2x8 vs 1x16 after one step: $msg"
    fi
    echo "  sync-bn 2x8 vs 1x16, $msg"
done
# momentum too (the averaged gradient after one step)
if msg=$(st close "$T/sync/last.safetensors" "$T/one/last.safetensors" params 1e-5 1e-4); then ok; else
    bad "sync-bn 2x8 vs 1x16 checkpoint (momentum included): $msg"
fi

# --- without synchronization each rank normalizes its half batch: other running statistics
mpi 2 "$BIN" train "${TINY[@]}" --batch-size 8 --max-steps 1 --out "$T/local" 2>"$T/err" ||
    bad "2-rank run without --sync-bn: $(head -5 "$T/err")"
d=$(st maxdiff "$T/local/model.safetensors" "$T/one/model.safetensors" stats)
echo "  no sync-bn 2x8 vs 1x16: running statistics differ by up to $d"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 1e-3 else 1)" "$d" && ok ||
    bad "without --sync-bn the running statistics should differ from the 1-rank run (max diff $d)"

# --- 2 ranks: --epochs 1 then --resume --epochs 2 == --epochs 2 straight, bit for bit
CONST=(--schedule step --step-epochs 10 --batch-size 8)
mpi 2 "$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 2 --out "$T/s2" 2>"$T/err" || bad "2-rank straight: $(head -3 "$T/err")"
mpi 2 "$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 1 --out "$T/r2" 2>"$T/err" || bad "2-rank part 1: $(head -3 "$T/err")"
mpi 2 "$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 2 --resume --out "$T/r2" 2>"$T/err" ||
    bad "2-rank resume: $(head -3 "$T/err")"
if msg=$(st eq "$T/s2/last.safetensors" "$T/r2/last.safetensors" 2>&1); then ok; else
    bad "2-rank resume differs from the straight run: $msg"
fi
# a resume with another number of ranks is refused (one line)
"$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 3 --resume --out "$T/r2" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "MPI ranks '2'" "$T/err"; then ok; else
    bad "1-rank resume of a 2-rank run: rc $rc, $(cat "$T/err")"
fi

# --- divergence under --sync-bn: every rank stops, one error line, no hang
mpi 2 "$BIN" train "${TINY[@]}" --batch-size 8 --lr 1e6 --epochs 2 --sync-bn --out "$T/nan" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 124 ]; then
    bad "a diverging --sync-bn run hung (killed after 120 s)"
elif [ $rc -eq 0 ]; then
    bad "a diverging --sync-bn run exited 0"
elif [ "$(grep -c '^bnlab: error: ' "$T/err")" -ne 1 ] || ! grep -q "training diverged" "$T/err"; then
    bad "diverging --sync-bn run: expected one 'training diverged' error line: $(head -5 "$T/err")"
else
    ok
fi
[ "$(st meta "$T/nan/last.safetensors" train.step)" = "0" ] && ok || bad "the step-0 checkpoint of the diverged run is gone"

# --- the testing options of the issue-16 experiments: --dump-batches writes the batch a step trained
# on (`bnlab step` on it from the same weights gives the same weights, bit for bit); --nudge-input
# moves every input value one ulp (a different but close result)
T0=(--classes 4 --image-size 16 --train-size 48 --val-size 0 --threads 1 --seed 5 --quiet --batch-size 8)
mkdir -p "$T/dumps"
"$BIN" train --arch resnet18 --width-mult 0.125 "${T0[@]}" --lr 0 --bn-momentum 1 --max-steps 1 --out "$T/d0" &&
    "$BIN" train "${T0[@]}" --init "$T/d0/model.safetensors" --lr 0.1 --max-steps 1 --dump-batches "$T/dumps" \
        --out "$T/d1" &&
    "$BIN" train "${T0[@]}" --init "$T/d0/model.safetensors" --lr 0.1 --max-steps 1 --nudge-input --out "$T/d2" &&
    "$BIN" step --weights "$T/d0/model.safetensors" --input "$T/dumps/step-000001.rank0.safetensors" \
        --labels "$T/dumps/step-000001.rank0.safetensors" --lr 0.1 --sgd-momentum 0.9 --weight-decay 5e-4 \
        --output "$T/s1.safetensors" >/dev/null 2>"$T/err" || bad "--dump-batches/--nudge-input runs: $(cat "$T/err")"
for kind in params stats; do
    msg=$(st close "$T/s1.safetensors" "$T/d1/model.safetensors" $kind 0 0) && ok ||
        bad "bnlab step on the dumped batch differs from the run's step: $msg"
done
d=$(st reldiff "$T/d2/model.safetensors" "$T/d1/model.safetensors")
echo "  --nudge-input after one step: $d"
python3 -c "import sys; d = float(sys.argv[1]); sys.exit(0 if 0 < d < 1e-4 else 1)" "${d% *}" && ok ||
    bad "--nudge-input: relative difference $d (want > 0 and < 1e-4)"

# --- only rank 1's batch cannot be read (a truncated PNG, at step 2 with seed 3): it runs the step on
# zeros so that rank 0 is not left in a collective; both stop cleanly (no MPI_Abort), one error line
python3 - "$T/fold" <<'EOF'
import os, random, struct, sys, zlib
def png(path, w, h, rgb):
    raw = b''.join(b'\x00' + bytes(rgb) * w for _ in range(h))
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) +
                           chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
random.seed(1)
for split, n in (('train', 8), ('val', 2)):
    for c in ('a', 'b'):
        os.makedirs(os.path.join(sys.argv[1], split, c), exist_ok=True)
        for i in range(n):
            png(os.path.join(sys.argv[1], split, c, '%d.png' % i), 20, 20, [random.randrange(256) for _ in range(3)])
bad = os.path.join(sys.argv[1], 'train', 'b', '3.png')
head = open(bad, 'rb').read()[:40]
open(bad, 'wb').write(head)
EOF
mpi 2 "$BIN" train --data "folder:$T/fold" --image-size 16 --arch resnet18 --width-mult 0.125 --batch-size 4 \
    --epochs 2 --threads 1 --sync-bn --quiet --seed 3 --out "$T/corrupt" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(grep -c '^bnlab: error: ' "$T/err")" -eq 1 ] &&
    grep -q '^bnlab: error: rank 1: epoch 1 step 2: .*3.png: corrupt or truncated' "$T/err" &&
    ! grep -q 'MPI_ABORT' "$T/err"; then ok; else
    bad "rank 1's unreadable batch: rc $rc: $(grep -v '^--\|^ *$' "$T/err" | head -8)"
fi
echo "  rank 1's batch unreadable: $(grep '^bnlab: error: ' "$T/err")"

# --- the step protocol of synchronized BatchNorm when only one rank fails (tests/c/test_train.c --mpi)
TT=$(dirname "$BIN")/test_train
if [ -x "$TT" ]; then
    if mpi 2 "$TT" --mpi >"$T/out" 2>&1; then ok; else
        bad "test_train --mpi (rc $?): $(grep -v '^-\|^ *$' "$T/out" | head -8)"
    fi
    grep 'test_train --mpi' "$T/out" | sed 's/^/  /'
else
    echo "  ($TT not built: the one-rank-fails protocol check is skipped)"
fi

echo "cli_mpi: $pass checks, $fail failed"
[ $fail -eq 0 ]
