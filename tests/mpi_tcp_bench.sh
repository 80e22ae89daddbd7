#!/usr/bin/env bash
# Data-parallel training speed: one host with 1 rank (the whole batch), one host with 2 ranks
# (shared memory), and two test hosts over TCP (tests/c/mpi_hosts.sh), each with and without
# --sync-bn; ROUNDS interleaved rounds, medians. Prints the CPU model, images/s, time per step,
# communication time per step (rank 0's comm_ms: time waiting in collectives, which includes
# waiting for the slower rank) and the --sync-bn / no-sync ratio of time per step.
# Root (namespaces). usage: bash tests/mpi_tcp_bench.sh build/native/bnlab [ROUNDS]
set -u
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
ROUNDS=${2:-3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T=$(mktemp -d)
source "$HERE/c/mpi_hosts.sh"
trap 'hosts_down; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM HUP   # through the EXIT trap: the namespaces go in every case
hosts_up "$T" || { echo "cannot make the test hosts: $HOSTS_WHY" >&2; exit 1; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none
SHM=(mpirun --allow-run-as-root --oversubscribe --mca btl self,vader -np 2)

# the issue's run: resnet18 at width 1/4, 32x32, one thread per rank, global batch 32, 40 steps
C=(--arch resnet18 --width-mult 0.25 --image-size 32 --classes 10 --train-size 1280 --val-size 0 --epochs 1
    --threads 1 --seed 3 --quiet)
echo "# CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
run() {   # name, then the command; appends "name images/s comm_ms" to $T/res
    local name=$1
    shift
    rm -rf "$T/o"
    if ! timeout 300 "$@" --out "$T/o" >/dev/null 2>"$T/err"; then
        echo "$name failed: $(head -3 "$T/err")" >&2
        return
    fi
    echo "$name $(tail -1 "$T/o/metrics.csv" | cut -d, -f9,11 | tr , ' ')" >>"$T/res"
}
for r in $(seq 1 "$ROUNDS"); do
    run "1host-1rank-B32" "$BIN" train "${C[@]}" --batch-size 32
    run "1host-2ranks-shm" "${SHM[@]}" "$BIN" train "${C[@]}" --batch-size 16
    run "1host-2ranks-shm-syncbn" "${SHM[@]}" "$BIN" train "${C[@]}" --batch-size 16 --sync-bn
    run "2hosts-tcp" "${MPI_TCP[@]}" "$BIN" train "${C[@]}" --batch-size 16
    run "2hosts-tcp-syncbn" "${MPI_TCP[@]}" "$BIN" train "${C[@]}" --batch-size 16 --sync-bn
done
python3 - "$T/res" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, ips, comm = line.split()
    rows.setdefault(name, []).append((float(ips), float(comm)))
med = {k: (statistics.median(a for a, _ in v), statistics.median(c for _, c in v), len(v)) for k, v in rows.items()}
print('| run | images/s | ms per step (32 images) | comm ms per step | rounds |')
print('| --- | ---: | ---: | ---: | ---: |')
for k, (ips, comm, n) in med.items():
    print('| %s | %.0f | %.1f | %.1f | %d |' % (k, ips, 32e3 / ips, comm, n))
for a, b in (('1host-2ranks-shm-syncbn', '1host-2ranks-shm'), ('2hosts-tcp-syncbn', '2hosts-tcp')):
    if a in med and b in med:
        print('%s / %s time per step: %.2fx' % (a, b, med[b][0] / med[a][0]))
EOF
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
