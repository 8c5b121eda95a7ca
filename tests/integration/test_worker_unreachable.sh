# A worker whose server goes away for good stops by itself: it notices (the connection drops, or
# no answer comes within the heartbeat timeout), tries to join again for --connect-timeout, then exits non-zero with an
# error naming the server and how long it went unanswered. Three ways a server stays unreachable:
# killed (connections refused), stopped with SIGSTOP (connections accepted, nothing answered),
# and one shard of two killed (the error names that shard, not the other).
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
CONNECT_TIMEOUT=3
JOB=(--seq-len 16 --micro-batch 2 --heartbeat-ms 100 --heartbeat-timeout-ms 3000 --max-steps 1000000)
HEARTBEAT_TIMEOUT=3 # generous: a loaded machine must not make the servers drop a live worker

# start NAME SHARDS: servers and one worker; sets PEERS, SERVER_PIDS and WORKER.
start() {
    local name=$1 shards=$2 k p
    PEERS="" SERVER_PIDS=()
    for p in $("$B/free_ports" "$shards"); do PEERS="$PEERS${PEERS:+,}tcp://127.0.0.1:$p"; done
    for ((k = 0; k < shards; k++)); do
        bg "$name-ps$k" "$B/loraps-ps" --model "$TMP/tiny" --shard $k --peers "$PEERS" \
            --workers 1 "${JOB[@]}"
        SERVER_PIDS+=("$LAST_PID")
    done
    bg "$name-w0" "$B/loraps-worker" --servers "$PEERS" --model "$TMP/tiny" --rank 0 \
        --connect-timeout $CONNECT_TIMEOUT
    WORKER=$LAST_PID
    wait_grep "$TMP/$name-ps0.out" "^step 5/" 60
}

# gone NAME ENDPOINT: the worker exited non-zero in time, with the error about ENDPOINT.
gone() {
    local name=$1 ep=$2 rc=0 line secs
    wait_for "$WORKER" $((HEARTBEAT_TIMEOUT + CONNECT_TIMEOUT + 20)) || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: the worker exited 0 although its server is gone"
    line=$(grep "loraps-worker: error:" "$TMP/$name-w0.err" | tail -1)
    [[ "$line" == "loraps-worker: error: $ep: server unreachable: no answer for "* ]] ||
        fail "$name: not the error naming $ep: '$line'"
    secs=$(sed -E 's/.*no answer for ([0-9]+) s.*/\1/' <<<"$line")
    [ "$secs" -ge "$CONNECT_TIMEOUT" ] || fail "$name: says it waited $secs s, less than the timeout"
    [[ "$line" == *"no Welcome in $CONNECT_TIMEOUT s"* ]] || fail "$name: the timeout is not named"
    grep -q "joining again" "$TMP/$name-w0.err" || fail "$name: the worker did not try to join again"
    if grep -q "Sanitizer" "$TMP/$name-w0.err"; then fail "$name: the worker's exit was not clean"; fi
}

start killed 1
kill -9 "${SERVER_PIDS[0]}"
gone killed "$PEERS"

start stopped 1
kill -STOP "${SERVER_PIDS[0]}"
gone stopped "$PEERS"
kill -CONT "${SERVER_PIDS[0]}"
kill "${SERVER_PIDS[0]}"

start one_of_two 2
kill -9 "${SERVER_PIDS[1]}"
gone one_of_two "${PEERS#*,}"
echo PASS
