# Test hosts in network namespaces, for multi-host tests and benchmarks (sourced after lib.sh).
# Each host is a namespace with one interface, eth0, cabled to a bridge that lives in a namespace
# of its own, so nothing of the machine's own network is touched. Addresses are in 198.18.0.0/15
# (the benchmarking range) only. Host names resolve through /etc/netns/<ns>/hosts, which
# `ip netns exec` mounts over /etc/hosts, so processes reach each other by name as on a cluster.
# Everything is removed when the script exits, however it exits.

NETNS_PREFIX=lpt$$
NETNS_HOSTS=()

netns_require_root() { # exits 0 with a clear SKIP when this cannot run
    if [ "$(id -u)" != 0 ]; then
        echo "SKIP: $(basename "$0") needs root for network namespaces (ip netns); CI runs it as root"
        exit 0
    fi
    command -v ip >/dev/null || fail "ip (iproute2) is missing: run deploy/install-deps.sh"
}

netns_cleanup() {
    local h
    for h in "${NETNS_HOSTS[@]}" br; do
        ip netns del "$NETNS_PREFIX-$h" 2>/dev/null || true
        rm -rf "/etc/netns/$NETNS_PREFIX-$h"
    done
}

# Removes what an earlier run of these tests left behind when it was killed before its trap ran
# (its shell's pid, in the name, is gone).
netns_remove_stale() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^lpt[0-9]+-' || true); do
        pid=${ns#lpt}
        pid=${pid%%-*}
        kill -0 "$pid" 2>/dev/null && continue
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
}

netns_init() {
    netns_remove_stale
    # lib.sh's cleanup kills the processes; then the namespaces go.
    trap 'rc=$?; (exit $rc); cleanup; netns_cleanup; exit $rc' EXIT
    ip netns add "$NETNS_PREFIX-br"
    ip -n "$NETNS_PREFIX-br" link add br0 type bridge
    ip -n "$NETNS_PREFIX-br" link set br0 up
}

# netns_host NAME ADDRESS: a host on the bridge, eth0 = ADDRESS/24.
netns_host() {
    local name=$1 addr=$2 ns=$NETNS_PREFIX-$1
    case $addr in 198.18.* | 198.19.*) ;; *) fail "test hosts use 198.18.0.0/15 only, not $addr" ;; esac
    NETNS_HOSTS+=("$name")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "v-$name" netns "$NETNS_PREFIX-br" type veth peer name eth0 netns "$ns"
    ip -n "$NETNS_PREFIX-br" link set "v-$name" master br0
    ip -n "$NETNS_PREFIX-br" link set "v-$name" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
}

# netns_hosts_file LINES: the /etc/hosts every test host sees ("ADDRESS NAME" lines).
netns_hosts_file() {
    local h
    for h in "${NETNS_HOSTS[@]}"; do
        mkdir -p "/etc/netns/$NETNS_PREFIX-$h"
        printf '127.0.0.1 localhost\n%s\n' "$1" >"/etc/netns/$NETNS_PREFIX-$h/hosts"
    done
}

# on HOST cmd...: runs cmd in the host's namespace.
on() {
    local h=$1
    shift
    ip netns exec "$NETNS_PREFIX-$h" "$@"
}

# netns_link HOST up|down: plugs or unplugs the host's cable (at the bridge side too).
netns_link() {
    ip -n "$NETNS_PREFIX-$1" link set eth0 "$2"
}

# netns_shape HOST RATE DELAY: caps the host's egress (e.g. 100mbit 20ms). Uses netem when the
# kernel has it (rate and delay); else tbf (rate only) and says so. Prints what it applied.
netns_shape() {
    local ns=$NETNS_PREFIX-$1 rate=$2 delay=$3
    if ip netns exec "$ns" tc qdisc replace dev eth0 root netem delay "$delay" rate "$rate" \
        limit 10000 2>/dev/null; then
        echo "netem rate $rate delay $delay"
    elif ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$rate" burst 64kb \
        latency 200ms 2>/dev/null; then
        echo "tbf rate $rate (no delay: this kernel lacks sch_netem)"
    else
        echo "none (this kernel has neither sch_netem nor sch_tbf)"
        return 1
    fi
}

netns_unshape() {
    ip netns exec "$NETNS_PREFIX-$1" tc qdisc del dev eth0 root 2>/dev/null || true
}
