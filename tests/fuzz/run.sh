#!/usr/bin/env bash
# Builds the libFuzzer targets (build/fuzz, clang, ASan + UBSan), replays every kept crash input in
# tests/fuzz/regressions/<target>/, then fuzzes each target for a bounded time starting from the
# committed seeds (tests/fuzz/corpus/<target>/) plus what earlier local runs found
# (build/fuzz/corpus/<target>/). Fails on any crash, leak, sanitizer report or timeout; prints the
# figures (executions, inputs, coverage) per target.
#
# usage: bash tests/fuzz/run.sh [--seconds S] [TARGET...]   (default: 15 s each, every target)
#        bash tests/fuzz/run.sh --make-corpus                 (rewrites the generated seeds)
# A crash leaves its input in build/fuzz/crashes/<target>/: fix the bug, then copy the input to
# tests/fuzz/regressions/<target>/ so that every later run replays it.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${BNL_FUZZ_SECONDS:-15}
make_corpus=0
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --make-corpus) make_corpus=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_dataset fuzz_image fuzz_cli fuzz_idx)

B=build/fuzz
if [ ! -f "$B/CMakeCache.txt" ]; then
    cmake -S . -B "$B" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBNL_FUZZ=ON -DBNL_OPENMP=OFF \
        -DBNL_MPI=OFF >/dev/null
fi
cmake --build "$B" --target fuzz -j"$(nproc 2>/dev/null || echo 2)" >"$B/build.log" 2>&1 || {
    tail -30 "$B/build.log"
    exit 1
}

if [ "$make_corpus" = 1 ]; then
    C=tests/fuzz/corpus
    "$B/make_corpus" "$C"
    tmp=$(mktemp -d)
    python3 tests/make_malformed.py "$C/fuzz_safetensors/resnet_basic_1stage.safetensors" "$tmp" >/dev/null
    for f in "$tmp"/*.safetensors; do cp "$f" "$C/fuzz_safetensors/malformed_$(basename "$f")"; done
    rm -rf "$tmp"
    for d in "$C"/*/; do echo "$(ls "$d" | wc -l) seeds, $(du -sk "$d" | cut -f1) KB in $d"; done
    exit 0
fi

# The sanitizers' settings for this run only (the suite's ASan stage sets its own).
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TMPDIR=$PWD/$B/tmp   # the targets' scratch files (a crash skips their clean-up)
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

fail=0
summary=()
total_execs=0
for t in "${targets[@]}"; do
    flags=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    [ "$t" = fuzz_cli ] && flags+=(-close_fd_mask=3)   # help and error lines on every input
    log=$B/$t.log
    # 1. kept crash inputs: each must now run clean
    replayed=0
    reg=tests/fuzz/regressions/$t
    if compgen -G "$reg/*" >/dev/null; then
        replayed=$(find "$reg" -maxdepth 1 -type f ! -name '.*' | wc -l)
        if ! "$B/$t" "${flags[@]}" $(find "$reg" -maxdepth 1 -type f ! -name '.*' | sort) >"$log" 2>&1; then
            echo "FAIL: $t: a kept crash input crashes again:" >&2
            grep -E 'Running:|ERROR|SUMMARY|check failed' "$log" | tail -8 >&2
            fail=1
            continue
        fi
    fi
    # 2. fuzzing, seeds + local corpus; new inputs go to the local corpus
    work=$B/corpus/$t crashes=$B/crashes/$t
    mkdir -p "$work" "$crashes"
    seeds=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
    before=$(find "$work" -type f | wc -l)
    rc=0
    "$B/$t" "${flags[@]}" -max_total_time="$seconds" -artifact_prefix="$crashes/" "$work" "tests/fuzz/corpus/$t" \
        >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | awk '{print $2 " edges, " $4 " features"}')
    after=$(find "$work" -type f | wc -l)
    total_execs=$((total_execs + ${execs:-0}))
    line=$(printf '%-17s %9s execs %6s/s  %3d seeds + %4d found earlier -> %4d inputs kept  %s  %d regressions replayed' \
        "$t" "${execs:-?}" "${rate:-?}" "$seeds" "$before" "$((seeds + after))" "${cov:-?}" "$replayed")
    summary+=("$line")
    if [ "$rc" -ne 0 ]; then
        echo "FAIL: $t crashed (exit $rc); input kept in $crashes/:" >&2
        grep -E 'ERROR|SUMMARY|check failed|^    #[0-9] ' "$log" | head -14 >&2
        ls -t "$crashes" | head -3 | sed "s|^|  $crashes/|" >&2
        fail=1
    fi
done
rm -rf "$TMPDIR"
echo "== fuzzing: ${seconds} s per target, ASan + UBSan + leak checks"
printf '  %s\n' "${summary[@]}"
echo "  $total_execs executions in all"
if [ "$fail" -ne 0 ]; then
    echo "fuzz: FAILED (logs in $B/*.log)" >&2
    exit 1
fi
