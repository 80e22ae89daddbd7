# Sourced by the tests/c/cli_*.sh scripts (not a test itself: CMake runs only tests/c/cli_*.sh), after they set
# HERE to tests/c: a temporary folder $T removed on exit, the check counters with ok and bad, st (safetensors
# checks, tests/c/st_check.py, Python standard library only) and error_verdict for the one-error-line rule.
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    echo "FAIL: $*" >&2
    fail=$((fail + 1))
}
st() { python3 "$HERE/st_check.py" "$@"; }

# error_verdict WHAT SUBSTRING RC: a command that exited with RC and wrote its stderr to $T/err must have failed
# (non-zero, not a crash) with exactly one line "bnlab: error: ...SUBSTRING...". Returns 0 if so; else counts
# the failure (bad) and returns 1.
error_verdict() {
    local what=$1 sub=$2 rc=$3
    local lines
    lines=$(wc -l <"$T/err")
    if [ "$rc" -eq 0 ]; then
        bad "$what: exit 0"
    elif [ "$rc" -ge 128 ]; then
        bad "$what: crashed (exit $rc)"
    elif [ "$lines" -ne 1 ] || ! grep -q '^bnlab: error: ' "$T/err"; then
        bad "$what: expected one 'bnlab: error:' line, got $lines:"
        cat "$T/err" >&2
    elif ! grep -qF -- "$sub" "$T/err"; then
        bad "$what: message lacks '$sub': $(cat "$T/err")"
    else
        return 0
    fi
    return 1
}
