#!/usr/bin/env bash
# Starts a loraps job on plain machines over ssh: the parameter-server shards and the workers
# named in a hosts file, each process's output in a local log, shard 0's progress lines on the
# terminal. It ends when the job ends (every process's exit status is reported); Ctrl-C (or
# SIGTERM) stops every process it started: workers first, then the servers, which checkpoint and
# exit; whatever has not exited after the grace period is killed.
#
#   deploy/launch-ssh.sh --hosts FILE --model DIR [options] [-- job settings for the servers]
#
# The hosts file: one process kind per line, `server HOST` (one line per shard, in shard order)
# or `worker HOST [COUNT]` (COUNT workers on that machine, ranks in file order); # comments.
#   server 10.0.0.1
#   worker gpu-a 2
#   worker gpu-b
# Every machine needs the binaries (--bin, or on PATH) and the base model at the same path.
# Servers are reached at tcp://HOST:PORT; a server whose HOST is a name listens on 0.0.0.0.
#
# options:
#   --hosts FILE        the machines (required)
#   --model DIR         the base model folder on every machine (required)
#   --out DIR           checkpoints and the adapter, on the machine of shard 0
#   --port P            the servers' port (default 5555; shard k uses P+k when several shards
#                       share a machine)
#   --metrics-port P    /healthz, /readyz, /metrics on every process (P, and P+i for the i-th
#                       process on a machine)
#   --bin DIR           where loraps-ps and loraps-worker are on the machines (default: PATH)
#   --logs DIR          local folder for the logs (default loraps-launch-logs)
#   --ssh CMD           the remote shell (default: ssh -o BatchMode=yes); it is called as
#                       CMD HOST COMMAND
#   --grace S           seconds to wait for a clean exit after Ctrl-C (default 30)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() {
    echo "launch-ssh: error: $*" >&2
    exit 2
}

hosts_file="" model="" out="" port=5555 metrics_port="" bin="" logs=loraps-launch-logs
ssh_cmd="ssh -o BatchMode=yes" grace=30
job_args=()
while [ $# -gt 0 ]; do
    case $1 in
    --hosts | --model | --out | --port | --metrics-port | --bin | --logs | --ssh | --grace)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --hosts) hosts_file=$2 ;;
        --model) model=$2 ;;
        --out) out=$2 ;;
        --port) port=$2 ;;
        --metrics-port) metrics_port=$2 ;;
        --bin) bin=${2%/}/ ;;
        --logs) logs=$2 ;;
        --ssh) ssh_cmd=$2 ;;
        --grace) grace=$2 ;;
        esac
        shift 2
        ;;
    --)
        shift
        job_args=("$@")
        break
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$hosts_file" ] || die "--hosts FILE is required"
[ -r "$hosts_file" ] || die "--hosts $hosts_file: cannot read it"
[ -n "$model" ] || die "--model DIR is required (the base model's folder on every machine)"
[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port: expected 1..65535"
[ -z "$metrics_port" ] || [[ $metrics_port =~ ^[0-9]+$ ]] || die "--metrics-port: expected a port"
[[ $grace =~ ^[0-9]+$ ]] || die "--grace: expected seconds"

# ---- the plan -------------------------------------------------------------------------------
servers=() workers=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line=${line%%#*}
    read -r kind host count extra <<<"$line" || true
    [ -n "${kind:-}" ] || continue
    [ -n "${host:-}" ] || die "$hosts_file:$lineno: expected 'server HOST' or 'worker HOST [COUNT]'"
    [ -z "${extra:-}" ] || die "$hosts_file:$lineno: too many fields"
    [[ $host =~ ^[A-Za-z0-9._:-]+$ ]] || die "$hosts_file:$lineno: '$host' is not a host name"
    case $kind in
    server)
        [ -z "${count:-}" ] || die "$hosts_file:$lineno: one line per server shard"
        servers+=("$host")
        ;;
    worker)
        count=${count:-1}
        [[ $count =~ ^[1-9][0-9]*$ ]] || die "$hosts_file:$lineno: COUNT must be a positive number"
        for ((i = 0; i < count; i++)); do workers+=("$host"); done
        ;;
    *) die "$hosts_file:$lineno: '$kind' is neither server nor worker" ;;
    esac
done <"$hosts_file"
[ ${#servers[@]} -ge 1 ] || die "$hosts_file: no server line"
[ ${#workers[@]} -ge 1 ] || die "$hosts_file: no worker line"

# Endpoints: shards on the same machine get consecutive ports.
declare -A next_port next_mport
peers=""
for ((k = 0; k < ${#servers[@]}; k++)); do
    h=${servers[$k]}
    p=${next_port[$h]:-$port}
    next_port[$h]=$((p + 1))
    ep="tcp://$h:$p"
    [[ $h == *:* ]] && ep="tcp://[$h]:$p"
    peers="$peers${peers:+,}$ep"
done
mport() { # HOST: sets MPORT to the next metrics port on that machine (no subshell: it counts)
    MPORT=${next_mport[$1]:-$metrics_port}
    next_mport[$1]=$((MPORT + 1))
}

# POSIX-shell quoting of one word, for the remote command line.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

run_id="$(date +%s)-$$"
mkdir -p "$logs"
names=() pids=() hosts_of=() pidfiles=()

# start NAME HOST LOG ARGV...: runs ARGV on HOST; the remote shell records its pid (exec keeps it)
# so the process can be stopped by id later.
start() {
    local name=$1 host=$2 log=$3
    shift 3
    local pidfile="/tmp/loraps-launch-$run_id-$name.pid" cmd="" a
    for a in "$@"; do cmd="$cmd $(q "$a")"; done
    # shellcheck disable=SC2086
    $ssh_cmd "$host" "echo \$\$ > $pidfile && exec$cmd" </dev/null >"$log" 2>&1 &
    names+=("$name") pids+=($!) hosts_of+=("$host") pidfiles+=("$pidfile")
}

report() {
    local i st rc=0
    for i in "${!pids[@]}"; do
        st=0
        wait "${pids[$i]}" 2>/dev/null || st=$?
        if [ $st = 255 ]; then
            echo "launch-ssh: ${names[$i]}: ssh to ${hosts_of[$i]} failed (see $logs/${names[$i]}.log)" >&2
            rc=1
        elif [ $st != 0 ]; then
            echo "launch-ssh: ${names[$i]} on ${hosts_of[$i]} exited with status $st (see $logs/${names[$i]}.log)" >&2
            rc=1
        fi
    done
    return $rc
}

# signal_kind KIND SIGNAL: sends SIGNAL to every running process whose name starts with KIND.
signal_kind() {
    local i
    for i in "${!names[@]}"; do
        [[ ${names[$i]} == "$1"* ]] || continue
        kill -0 "${pids[$i]}" 2>/dev/null || continue
        # shellcheck disable=SC2086
        $ssh_cmd "${hosts_of[$i]}" "kill -$2 \$(cat ${pidfiles[$i]}) 2>/dev/null; true" \
            </dev/null >/dev/null 2>&1 || true
    done
}
# wait_kind KIND SECONDS: until every process whose name starts with KIND has exited.
wait_kind() {
    local i t alive
    for ((t = 0; t < $2 * 10; t++)); do
        alive=0
        for i in "${!names[@]}"; do
            [[ ${names[$i]} == "$1"* ]] && kill -0 "${pids[$i]}" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

stopping=0
stop_all() {
    [ $stopping = 0 ] || return 0
    stopping=1
    echo "launch-ssh: stopping every process (workers, then servers; ${grace} s grace)" >&2
    # Workers first, so they say Bye to servers that are still there; then the servers, which
    # write a checkpoint on SIGTERM.
    signal_kind worker- TERM
    wait_kind worker- $((grace < 10 ? grace : 10)) || true
    signal_kind "" TERM
    wait_kind "" "$grace" || true
    local i
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || continue
        echo "launch-ssh: ${names[$i]} on ${hosts_of[$i]} did not stop; killing it" >&2
        # shellcheck disable=SC2086
        $ssh_cmd "${hosts_of[$i]}" "kill -KILL \$(cat ${pidfiles[$i]}) 2>/dev/null; true" </dev/null >/dev/null 2>&1 || true
        kill "${pids[$i]}" 2>/dev/null || true
    done
}
# The pid files, once every process has ended: one remote call per machine.
remove_pidfiles() {
    local h
    for h in $(printf '%s\n' "${hosts_of[@]}" | sort -u); do
        # shellcheck disable=SC2086
        $ssh_cmd "$h" "rm -f /tmp/loraps-launch-$run_id-*.pid" </dev/null >/dev/null 2>&1 || true
    done
}
on_signal() {
    echo >&2
    stop_all
    local rc=0
    report || rc=$?
    remove_pidfiles
    exit 130
}
trap on_signal INT TERM

for ((k = 0; k < ${#servers[@]}; k++)); do
    h=${servers[$k]}
    argv=("${bin}loraps-ps" --model "$model" --shard "$k" --peers "$peers" --workers "${#workers[@]}")
    [ -z "$out" ] || [ "$k" != 0 ] || argv+=(--out "$out")
    [ -z "$metrics_port" ] || { mport "$h" && argv+=(--metrics-port "$MPORT"); }
    start "ps-$k" "$h" "$logs/ps-$k.log" "${argv[@]}" "${job_args[@]}"
done
for ((r = 0; r < ${#workers[@]}; r++)); do
    h=${workers[$r]}
    argv=("${bin}loraps-worker" --servers "$peers" --model "$model" --rank "$r")
    [ -z "$metrics_port" ] || { mport "$h" && argv+=(--metrics-port "$MPORT"); }
    start "worker-$r" "$h" "$logs/worker-$r.log" "${argv[@]}"
done
echo "launch-ssh: ${#servers[@]} server shard(s) at $peers, ${#workers[@]} worker(s); logs in $logs/"


# Shard 0's progress lines on the terminal, until it exits.
tail -n +1 -F --pid=$$ "$logs/ps-0.log" 2>/dev/null | grep --line-buffered -E '^step |error|done|exit' &
tail_pid=$!
trap 'kill $tail_pid 2>/dev/null || true; on_signal' INT TERM
# The job ends when every server has exited; then the workers get a moment to finish.
while :; do
    alive=0
    for ((k = 0; k < ${#servers[@]}; k++)); do kill -0 "${pids[$k]}" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.5
done
for ((t = 0; t < 100; t++)); do
    alive=0
    for i in "${!pids[@]}"; do kill -0 "${pids[$i]}" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
done
[ $alive = 0 ] || stop_all
sleep 0.3
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
rc=0
report || rc=$?
remove_pidfiles
[ $rc = 0 ] || exit 1
echo "launch-ssh: the job finished; every process exited 0"
