#!/usr/bin/env bash
# `bnlab train` killed with SIGKILL at random moments, then resumed, until it finishes: a tiny run
# (resnet18 at width 0.125, procedural 16x16 images, 64 train images, 12 epochs) is killed KILLS
# times, half of them after a random delay and half of them the moment a file of this process's
# (`*.tmp.<pid>`: a checkpoint, best model, final model or metrics.csv being written) appears,
# i.e. in the middle of an atomic write; a quarter of them early (start-up, first checkpoint). After every kill: DIR/last.safetensors is loadable
# (`bnlab info` succeeds), or absent when the kill came before the first checkpoint ("no
# checkpoint yet": the next start is a fresh one, not --resume). Every restart must succeed with
# the temp files of killed processes still lying around. At the end the run's final, best and last
# weights must equal those of an uninterrupted run tensor for tensor (resume is exact), be finite,
# and metrics.csv must hold the same rows (epochs 1..E once each): nothing lost.
# When a run finishes before all kills have landed, a new run directory starts (a new round).
# usage: bash tests/c/cli_kill.sh build/native/bnlab   (BNL_KILL_SEED=N repeats a sequence; KILLS=N)
set -u
BIN=${1:?usage: cli_kill.sh path/to/bnlab}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KILLS=${KILLS:-16}
SEED=${BNL_KILL_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$SEED
T=$(mktemp -d)
pid=0
cleanup() {
    if [ "$pid" -gt 0 ]; then kill -9 "$pid" 2>/dev/null; fi
    rm -rf "$T"
}
trap cleanup EXIT
fail=0
bad() {
    echo "FAIL: $*" >&2
    fail=$((fail + 1))
}

st() { python3 "$HERE/st_check.py" "$@"; }

ARGS=(train --arch resnet18 --width-mult 0.125 --data procedural --image-size 16 --classes 4 --train-size 64
      --val-size 16 --batch-size 8 --epochs 12 --threads 1 --seed 5 --lr 0.05 --quiet)

# the uninterrupted run, timed: kill delays are drawn from [0, its duration / 3]
t0=$(date +%s%N)
if ! "$BIN" "${ARGS[@]}" --out "$T/ref" >"$T/ref.log" 2>&1; then
    echo "FAIL: the uninterrupted run failed: $(tail -3 "$T/ref.log")" >&2
    exit 1
fi
dur_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
max_delay_ms=$(( dur_ms / 3 > 5 ? dur_ms / 3 : 5 ))
st rows "$T/ref/metrics.csv" >"$T/ref.rows"

kills=0 during_write=0 before_first=0 restarts=0 rounds=0 completed=0 leftovers=0
check_round() {   # the run in $1 finished: compare it with the uninterrupted one
    local d=$1 f
    for f in model best last; do
        if [ ! -f "$d/$f.safetensors" ]; then
            bad "round $rounds: no $f.safetensors"
        elif ! out=$(st eq "$d/$f.safetensors" "$T/ref/$f.safetensors" 2>&1); then
            bad "round $rounds: $f.safetensors differs from the uninterrupted run's: $out"
        fi
    done
    if ! out=$(st finite "$d/model.safetensors" 2>&1); then bad "round $rounds: final weights: $out"; fi
    st rows "$d/metrics.csv" >"$T/rows"
    if ! cmp -s "$T/rows" "$T/ref.rows"; then
        bad "round $rounds: metrics.csv differs from the uninterrupted run's:
$(diff "$T/ref.rows" "$T/rows" | head -8)"
    fi
    leftovers=$((leftovers + $(find "$d" -name '*.tmp.*' | wc -l)))
    completed=$((completed + 1))
}

attempt=0 round_done=1
while [ "$kills" -lt "$KILLS" ] && [ "$attempt" -lt $((KILLS * 4)) ] && [ "$fail" -eq 0 ]; do
    attempt=$((attempt + 1))
    if [ "$round_done" -eq 1 ]; then
        rounds=$((rounds + 1)) round_done=0
        D=$T/run$rounds
    fi
    if [ -f "$D/last.safetensors" ]; then resume=(--resume); else resume=(); fi
    "$BIN" "${ARGS[@]}" --out "$D" "${resume[@]}" >"$T/log" 2>&1 &
    pid=$!
    restarts=$((restarts + 1))
    # every 4th kill, and every other start of a fresh run, comes early (start-up, first checkpoint);
    # the others anywhere in a third of a run
    early=$(( kills % 4 == 0 || (${#resume[@]} == 0 && RANDOM % 2 == 0) ))
    span=$(( early ? max_delay_ms / 12 + 1 : max_delay_ms + 1 ))
    delay_ms=$(( (RANDOM * 32768 + RANDOM) % span ))
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    if [ $((kills % 2)) -eq 1 ]; then
        # then kill in the middle of the next atomic write of this process: of any file, or of the
        # checkpoint, or of metrics.csv (written after the checkpoint: the checkpoint is then newer)
        case $((kills / 2 % 3)) in
            0) watch="*" ;;
            1) watch="last.safetensors" ;;
            *) watch="metrics.csv" ;;
        esac
        while kill -0 "$pid" 2>/dev/null; do
            set -- "$D"/$watch.tmp."$pid"
            [ -e "$1" ] && break
        done
    fi
    kill -9 "$pid" 2>/dev/null
    { wait "$pid"; } 2>/dev/null
    rc=$?
    killed_pid=$pid
    pid=0
    if [ "$rc" -eq 0 ]; then   # finished before the kill
        check_round "$D"
        round_done=1
        continue
    fi
    if [ "$rc" -ne 137 ]; then
        bad "restart $restarts (${resume[*]:-fresh}) exited with $rc instead of being killed: $(tail -3 "$T/log")"
        break
    fi
    kills=$((kills + 1))
    if compgen -G "$D/*.tmp.$killed_pid" >/dev/null; then during_write=$((during_write + 1)); fi
    if [ -f "$D/last.safetensors" ]; then
        if ! "$BIN" info "$D/last.safetensors" >"$T/info" 2>&1; then
            bad "kill $kills: last.safetensors does not load: $(cat "$T/info")"
        fi
    else
        before_first=$((before_first + 1))   # no checkpoint yet: the next start is a fresh run
    fi
done
# the last round runs to completion without a kill
if [ "$fail" -eq 0 ] && [ "$round_done" -eq 0 ]; then
    if [ -f "$D/last.safetensors" ]; then resume=(--resume); else resume=(); fi
    restarts=$((restarts + 1))
    if "$BIN" "${ARGS[@]}" --out "$D" "${resume[@]}" >"$T/log" 2>&1; then
        check_round "$D"
    else
        bad "the final restart failed: $(tail -3 "$T/log")"
    fi
fi
[ "$kills" -ge "$KILLS" ] || bad "only $kills of $KILLS kills landed in $attempt attempts"

echo "cli_kill: $kills SIGKILLs survived ($during_write in the middle of a file write, $before_first before the first" \
    "checkpoint), $restarts restarts, $completed runs completed in $rounds rounds, $leftovers temp files of killed" \
    "processes left behind and ignored; final/best/last weights and metrics.csv equal to an uninterrupted run" \
    "(seed $SEED, delays 0..${max_delay_ms} ms)"
if [ "$fail" -ne 0 ]; then
    echo "cli_kill: $fail failed (BNL_KILL_SEED=$SEED repeats the sequence)" >&2
    exit 1
fi
