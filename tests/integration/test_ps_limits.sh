# The limits that protect a server, each configurable and counted in /metrics:
# - --reject-limit: a peer flooding garbage gets Errors for its first N messages, then is cut off
#   (its messages dropped unanswered) for --ban-seconds, while a real worker trains on normally;
#   after the ban (the same connection) it is answered again.
# - --max-msg-bytes: a frame over it closes the sender's connection (libzmq) and nothing of it
#   reaches the server's state; the worker still trains.
# - --max-workers: a Hello past it is refused ("server full").
# The final adapter equals a run without any of this.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
export OMP_WAIT_POLICY=PASSIVE
JOB=(--max-steps 30 --seq-len 16 --micro-batch 2 --workers 1 --lr 0.01 --quiet)

run() { # NAME ATTACK(0|1)
    local port ep mport
    port=$("$B/free_ports" 1)
    ep=tcp://127.0.0.1:$port
    bg "$1-ps" "$B/loraps-ps" --model "$TMP/tiny" --bind "$ep" "${JOB[@]}" --out "$TMP/$1" \
        --reject-limit 20 --reject-window 30 --ban-seconds 4 --max-msg-bytes 200000 --metrics-port 0
    local ps=$LAST_PID
    wait_grep "$TMP/$1-ps.err" "metrics .*http" 20
    mport=$(sed -n 's/.*metrics .*http:\/\/[^:]*:\([0-9]*\)\/metrics.*/\1/p' "$TMP/$1-ps.err" | head -1)
    if [ "$2" = 1 ]; then
        "$B/flood_client" --server "$ep" --count 200 --again-after 2500 >"$TMP/flood1.out" ||
            fail "flood_client"
        errors=$(sed -n 's/errors //p' "$TMP/flood1.out")
        echo "flood of 200: $errors Error replies"
        [ "$errors" -ge 19 ] && [ "$errors" -le 21 ] || fail "expected about 20 Errors before the cut-off, got $errors"
        grep -q "cut off for 4 s: 20 refused messages" "$TMP/$1-ps.err" || fail "no cut-off line"
        grep -q "again answered" "$TMP/flood1.out" || fail "the peer was not answered after its ban"
        curl -s "http://127.0.0.1:$mport/metrics" >"$TMP/m1.txt"
        grep -q '^loraps_peers_cut_off_total{[^}]*} 1$' "$TMP/m1.txt" || fail "cut-off not in /metrics"
        grep -q '^loraps_messages_dropped_cut_off_total{[^}]*} 1[0-9][0-9]$' "$TMP/m1.txt" ||
            fail "dropped messages not in /metrics"
        grep -q '^loraps_limit_max_msg_bytes{[^}]*} 200000$' "$TMP/m1.txt" || fail "limit not in /metrics"
        # over --max-msg-bytes: the connection is closed, nothing answered
        "$B/flood_client" --server "$ep" --count 0 --big 300000 >"$TMP/flood2.out" || fail "flood_client"
        grep -q "errors 0" "$TMP/flood2.out" || fail "an oversized frame was answered"
        curl -s "http://127.0.0.1:$mport/metrics" >"$TMP/m2.txt"
        grep -q '^loraps_connections_closed_total{[^}]*} [1-9]' "$TMP/m2.txt" || fail "closed connection not counted"
    fi
    bg "$1-w0" "$B/loraps-worker" --servers "$ep" --model "$TMP/tiny" --rank 0 --quiet --step-delay-ms 30
    local w=$LAST_PID
    if [ "$2" = 1 ]; then
        # a second worker of rank 0 REPLACES the first (a restart); max-workers counts live ones:
        # with --workers 1 nothing else fits, shown by /metrics' limit
        grep -q '^loraps_limit_max_workers{[^}]*} 1$' "$TMP/m2.txt" || fail "max workers not in /metrics"
    fi
    wait_for "$w" 60 || fail "$1: the worker failed"
    wait_for "$ps" 60 || fail "$1: the server failed"
}
run quiet 0
run attacked 1
cmp "$TMP/quiet/adapter_model.safetensors" "$TMP/attacked/adapter_model.safetensors" ||
    fail "the attacks changed the adapter"
echo "reject limit, message size: the worker trained; adapter identical to a quiet run"

# --max-workers 1 with a job of 2 workers: the second rank's Hello is refused
port=$("$B/free_ports" 1)
bg full-ps "$B/loraps-ps" --model "$TMP/tiny" --bind tcp://127.0.0.1:$port "${JOB[@]}" --workers 2 \
    --max-workers 1
PS=$LAST_PID
bg full-w0 "$B/loraps-worker" --servers tcp://127.0.0.1:$port --model "$TMP/tiny" --rank 0
wait_grep "$TMP/full-ps.err" "worker 1 joined" 30
"$B/loraps-worker" --servers tcp://127.0.0.1:$port --model "$TMP/tiny" --rank 1 --connect-timeout 5 \
    >/dev/null 2>"$TMP/full-w1.err" && fail "a worker past --max-workers joined"
grep -q "server full" "$TMP/full-w1.err" || fail "the refused worker was not told why"
grep -q "rejected Hello: ERR_TOO_LARGE: server full" "$TMP/full-ps.err" || fail "no log line for the refusal"
kill -TERM "$PS"
wait_for "$PS" 30 || true
grep -q "1 Hellos refused at --max-workers" "$TMP/full-ps.err" || fail "refusal not counted"
# bad values are clear errors
for bad in "--max-msg-bytes 10" "--reject-limit -1" "--durable-every x" "--max-workers 1e3"; do
    "$B/loraps-ps" --model "$TMP/tiny" "${JOB[@]}" $bad >/dev/null 2>"$TMP/bad.err" && fail "$bad accepted"
    grep -q "error: ${bad%% *}: expected an integer" "$TMP/bad.err" || fail "$bad: no clear error"
done
echo PASS
