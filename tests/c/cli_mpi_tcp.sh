#!/usr/bin/env bash
# `bnlab train` across two hosts over TCP only: two network namespaces joined by a veth pair
# (tests/c/mpi_hosts.sh), mpirun in the first starting the second's rank through an rsh agent, as
# ssh would on a second machine. Checks:
# - the data went over the veth (its byte counter), with --mca btl tcp,self (no shared memory);
# - after one step, 2 ranks x 16 with --sync-bn match 1 rank x 32 within the float32 floor (the
#   largest relative difference in any tensor below 1e-5), and after 20 steps they differ by no
#   more than 3x (or 1e-4) what the 1-rank run differs from itself perturbed in float32: started
#   from weights one ulp away, and with every input value one ulp up (--nudge-input). At this small
#   lr rounding stays rounding for 20 steps; at larger ones a perturbation departs abruptly at the
#   step where a ReLU input within rounding of zero flips (tests/mpi_tcp_experiment.sh, README);
# - rank 1 killed (SIGKILL) mid-run ends the whole run within 30 s with one `bnlab: error:` line
#   naming the ranks and the checkpoint; --resume then finishes the run, bit-identical to a run
#   that was never interrupted;
# - rank 1 stopped (SIGSTOP) mid-run: with BNLAB_MPI_TIMEOUT=3 rank 0 gives up waiting after 3 s with
#   one error line and ends every rank (no hang, nothing left running).
# Skips (exit 0, with the reason) where mpirun is missing, bnlab has no MPI, or namespaces cannot be
# made (not root, no iproute2, a container without CAP_NET_ADMIN). The namespaces are deleted on
# every exit. usage: bash tests/c/cli_mpi_tcp.sh build/native/bnlab
set -u
BIN=${1:?usage: cli_mpi_tcp.sh path/to/bnlab}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
if ! command -v mpirun >/dev/null 2>&1; then
    echo "cli_mpi_tcp: SKIPPED: mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev, then rebuild)"
    exit 0
fi
source "$HERE/sh_common.sh"   # $T, ok, bad, st
source "$HERE/mpi_hosts.sh"
trap 'hosts_down; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM HUP   # through the EXIT trap: the namespaces go in every case
if ! hosts_up "$T"; then
    echo "cli_mpi_tcp: SKIPPED: cannot make two test hosts (network namespaces): $HOSTS_WHY"
    exit 0
fi
tcp() { timeout 120 "${MPI_TCP[@]}" "$BIN" "$@"; }

ARCH=(--arch resnet18 --width-mult 0.125)
C=(--image-size 16 --classes 4 --train-size 256 --val-size 0 --data-seed 3 --seed 5 --lr 0.0005 --threads 1 --epochs 4
    --quiet)
"$BIN" train "${ARCH[@]}" "${C[@]}" --batch-size 32 --lr 0 --bn-momentum 1 --max-steps 1 --out "$T/w" 2>"$T/err" ||
    bad "making the initial weights: $(cat "$T/err")"
W=$T/w/model.safetensors
st nudge "$W" "$T/wn.safetensors"
if ! tcp train "${C[@]}" --init "$W" --batch-size 16 --sync-bn --max-steps 1 --out "$T/probe" >"$T/out" 2>"$T/err"; then
    if grep -q "built without" "$T/err"; then
        echo "cli_mpi_tcp: SKIPPED: this bnlab was built without MPI"
        exit 0
    fi
    bad "a 2-rank run over TCP failed: $(grep -v '^--\|^ *$' "$T/err" | head -5)"
fi

# --- one step, and 20 steps, against 1 rank x 32 and its one-ulp perturbation
declare -A D
for k in 1 20; do
    "$BIN" train "${C[@]}" --init "$W" --batch-size 32 --max-steps $k --out "$T/one$k" 2>"$T/err" || bad "1 rank: $(cat "$T/err")"
    "$BIN" train "${C[@]}" --init "$T/wn.safetensors" --batch-size 32 --max-steps $k --out "$T/nud$k.w" 2>"$T/err" ||
        bad "1 rank, nudged weights: $(cat "$T/err")"
    "$BIN" train "${C[@]}" --init "$W" --nudge-input --batch-size 32 --max-steps $k --out "$T/nud$k.x" 2>"$T/err" ||
        bad "1 rank, nudged input: $(cat "$T/err")"
    tx0=$(hosts_tx_bytes)
    tcp train "${C[@]}" --init "$W" --batch-size 16 --sync-bn --max-steps $k --out "$T/sync$k" 2>"$T/err" ||
        bad "2 ranks over TCP: $(grep -v '^--\|^ *$' "$T/err" | head -5)"
    tx=$(($(hosts_tx_bytes) - tx0))
    D[sync$k]=$(st reldiff "$T/sync$k/model.safetensors" "$T/one$k/model.safetensors")
    D[nud$k]=0
    for v in w x; do
        d=$(st reldiff "$T/nud$k.$v/model.safetensors" "$T/one$k/model.safetensors")
        D[nud$k]=$(python3 -c "import sys; a, b = sys.argv[1:]; print(b if float(b.split()[0]) > float(a.split()[0]) else a)" \
            "${D[nud$k]}" "$d")
    done
    echo "  after $k step(s): 2x16 --sync-bn over TCP vs 1x32: ${D[sync$k]}; 1x32 perturbed by one ulp (weights, input: the larger): ${D[nud$k]};" \
        "$tx bytes sent over the veth"
    # a step sums the gradients (~180 KB here) and gathers BatchNorm statistics: well over 100 KB per step
    [ "$tx" -gt $((100000 * k)) ] && ok || bad "only $tx bytes went over the veth in $k steps: not over TCP?"
done
# communication time per step in metrics.csv: > 0 with 2 ranks, 0 with one
c2=$(tail -1 "$T/sync20/metrics.csv" | cut -d, -f11)
c1=$(tail -1 "$T/one20/metrics.csv" | cut -d, -f11)
echo "  comm_ms per step: 2 ranks $c2, 1 rank $c1"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 and float(sys.argv[2]) == 0 else 1)" "$c2" "$c1" && ok ||
    bad "metrics.csv comm_ms: 2 ranks '$c2', 1 rank '$c1'"
python3 - "${D[sync1]% *}" "${D[sync20]% *}" "${D[nud20]% *}" <<'EOF' && ok || bad "2 ranks over TCP left the 1-rank run"
import sys
s1, s20, n20 = map(float, sys.argv[1:])
if not s1 <= 1e-5:
    sys.exit('after one step the 2-rank run differs by %.3g (float32 floor: 1e-5)' % s1)
if not s20 <= max(3 * n20, 1e-4):
    sys.exit('after 20 steps: %.3g, more than 3x the one-ulp perturbations of the 1-rank run (%.3g) and 1e-4'
             % (s20, n20))
EOF

# --- rank 1 dies mid-run: the run ends within 30 s with one error line; --resume finishes it
CONST=(--schedule step --step-epochs 100 --batch-size 16 --sync-bn)
tcp train "${C[@]}" --init "$W" "${CONST[@]}" --out "$T/straight" 2>"$T/err" || bad "uninterrupted run: $(head -3 "$T/err")"
tcp train "${C[@]}" --init "$W" "${CONST[@]}" --epochs 400 --out "$T/kill" >"$T/out" 2>"$T/err" &
mpid=$!
for _ in $(seq 1 600); do   # until the first epoch's checkpoint is on disk (a row in metrics.csv)
    [ -s "$T/kill/metrics.csv" ] && [ "$(wc -l <"$T/kill/metrics.csv")" -ge 2 ] && break
    sleep 0.05
done
victim=
for p in $(ip netns pids "$HOSTS_NS_B"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = bnlab ] && victim=$p; done
if [ -z "$victim" ]; then
    bad "no bnlab process in the second host to kill"
    wait $mpid
else
    t0=$(date +%s%N)
    kill -9 "$victim"
    wait $mpid
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    lines=$(grep -c '^bnlab: error: ' "$T/err")
    echo "  rank 1 killed: the run ended after $ms ms, exit $rc; $(grep '^bnlab: error: ' "$T/err")"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$ms" -lt 30000 ] && ok || bad "after the kill: exit $rc after $ms ms"
    if [ "$lines" -eq 1 ] && grep -q '^bnlab: error: rank 0 of 2 .*rank 1 died.*--resume' "$T/err"; then ok; else
        bad "expected one error line naming rank 1 and --resume, got $lines: $(grep -v '^--\|^ *$' "$T/err" | head -12)"
    fi
    step=$(st meta "$T/kill/last.safetensors" train.step)
    [ "${step:-0}" -gt 0 ] && ok || bad "no checkpoint past step 0 before the kill (step '$step')"
    tcp train "${C[@]}" --init "$W" "${CONST[@]}" --resume --out "$T/kill" >"$T/out" 2>"$T/err" ||
        bad "--resume after the kill: $(grep -v '^--\|^ *$' "$T/err" | head -5)"
    if msg=$(st eq "$T/kill/last.safetensors" "$T/straight/last.safetensors" 2>&1); then ok; else
        bad "killed at step $step and resumed: differs from the uninterrupted run: $msg"
    fi
fi

# --- rank 1 stops (SIGSTOP): rank 0 gives up after BNLAB_MPI_TIMEOUT seconds, every rank ends
timeout 120 "${MPI_TCP[@]}" -x BNLAB_MPI_TIMEOUT=3 "$BIN" train "${C[@]}" --init "$W" "${CONST[@]}" --epochs 400 \
    --out "$T/stop" >"$T/out" 2>"$T/err" &
mpid=$!
for _ in $(seq 1 600); do
    [ -s "$T/stop/metrics.csv" ] && [ "$(wc -l <"$T/stop/metrics.csv")" -ge 2 ] && break
    sleep 0.05
done
victim=
for p in $(ip netns pids "$HOSTS_NS_B"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = bnlab ] && victim=$p; done
if [ -z "$victim" ]; then
    bad "no bnlab process in the second host to stop"
    wait $mpid
else
    t0=$(date +%s%N)
    kill -STOP "$victim"
    wait $mpid
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    echo "  rank 1 stopped: the run ended after $ms ms, exit $rc; $(grep '^bnlab: error: ' "$T/err")"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$ms" -lt 30000 ] && ok || bad "after SIGSTOP: exit $rc after $ms ms"
    if [ "$(grep -c '^bnlab: error: ' "$T/err")" -eq 1 ] &&
        grep -q '^bnlab: error: epoch .*: no answer from the other ranks for 3 s .*(ending all 2 ranks)' "$T/err"; then ok; else
        bad "after SIGSTOP: expected one 'no answer' error line: $(grep -v '^--\|^ *$' "$T/err" | head -12)"
    fi
    for _ in $(seq 1 100); do kill -0 "$victim" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$victim" 2>/dev/null && bad "the stopped rank $victim is still there 10 s after the run ended" || ok
fi

echo "cli_mpi_tcp: $pass checks, $fail failed"
[ $fail -eq 0 ]
