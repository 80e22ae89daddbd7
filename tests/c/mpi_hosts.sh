# Two test hosts on this machine for MPI over TCP, sourced by tests/c/cli_mpi_tcp.sh and
# tests/mpi_tcp_bench.sh: network namespaces bnlA<pid> (10.77.0.1) and bnlB<pid> (10.77.0.2) joined
# by a veth pair. mpirun runs in the first; it starts the rank of the second through an rsh agent
# (written to $HOSTS_DIR/agent) that runs the command in that namespace, as ssh would on a real
# second machine. Needs root and iproute2.
#   hosts_up DIR     makes the hosts, writes DIR/agent and DIR/hostfile, sets MPI_TCP (the mpirun
#                    command line); returns non-zero with the reason in HOSTS_WHY when it cannot
#   hosts_down       kills what still runs in the namespaces and deletes them (safe to call twice)
# MPI_TCP: TCP only (btl tcp,self: no shared memory), both the launcher's channel (oob) and MPI's
# (btl) on the veth subnet, --bind-to none: each namespace believes it has the machine's cores to
# itself, and binding would put rank 0 and rank 1 both on core 0 (their collectives then take a
# scheduler time slice each, about 4 ms); mpi_yield_when_idle: a waiting rank yields its core to
# the other host's rank (both hosts share this machine's cores).

HOSTS_NS_A=bnlA$$
HOSTS_NS_B=bnlB$$
HOSTS_MADE=0
HOSTS_WHY=

hosts_down() {
    [ "$HOSTS_MADE" = 1 ] || return 0
    local ns p
    for ns in "$HOSTS_NS_A" "$HOSTS_NS_B"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    done
    for ns in "$HOSTS_NS_A" "$HOSTS_NS_B"; do
        ip netns del "$ns" 2>/dev/null   # deletes its end of the veth pair, and with it the pair
    done
    HOSTS_MADE=0
}

hosts_up() {
    local dir=$1 a=$HOSTS_NS_A b=$HOSTS_NS_B va=bva$$ vb=bvb$$
    if ! command -v ip >/dev/null 2>&1; then
        HOSTS_WHY="the ip command is missing (apt-get install iproute2)"
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        HOSTS_WHY="not root: network namespaces need root"
        return 1
    fi
    if ! ip netns add "$a" 2>"$dir/ns.err"; then
        HOSTS_WHY="ip netns add failed: $(head -1 "$dir/ns.err")"
        return 1
    fi
    HOSTS_MADE=1
    if ! { ip netns add "$b" && ip link add "$va" type veth peer name "$vb" && ip link set "$va" netns "$a" &&
        ip link set "$vb" netns "$b" && ip -n "$a" addr add 10.77.0.1/24 dev "$va" &&
        ip -n "$b" addr add 10.77.0.2/24 dev "$vb" && ip -n "$a" link set lo up && ip -n "$b" link set lo up &&
        ip -n "$a" link set "$va" up && ip -n "$b" link set "$vb" up; } 2>"$dir/ns.err"; then
        HOSTS_WHY="could not join the namespaces by a veth pair: $(head -1 "$dir/ns.err")"
        ip link del "$va" 2>/dev/null
        hosts_down
        return 1
    fi
    HOSTS_VETH_A=$va
    cat >"$dir/agent" <<EOF
#!/bin/sh
# mpirun's rsh agent: "agent HOST COMMAND..." runs COMMAND on HOST, here in HOST's namespace
host=\$1
shift
case \$host in
    10.77.0.1) ns=$a ;;
    10.77.0.2) ns=$b ;;
    *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec \$ns sh -c "\$*"
EOF
    chmod +x "$dir/agent"
    printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' >"$dir/hostfile"
    MPI_TCP=(ip netns exec "$a" mpirun --allow-run-as-root --hostfile "$dir/hostfile" -np 2 --bind-to none
        --mca plm_rsh_agent "$dir/agent" --mca btl tcp,self --mca oob_tcp_if_include 10.77.0.0/24
        --mca btl_tcp_if_include 10.77.0.0/24 --mca mpi_yield_when_idle 1)
    return 0
}

# bytes sent through host A's end of the veth pair so far
hosts_tx_bytes() { ip netns exec "$HOSTS_NS_A" cat "/sys/class/net/$HOSTS_VETH_A/statistics/tx_bytes"; }
