# Health, readiness and Prometheus metrics answered over real HTTP (curl) by a running server and
# worker, configured through LORAPS_* variables and Kubernetes' JOB_COMPLETION_INDEX the way the
# manifests in deploy/k8s configure them; start-up that cannot reach a server ends with a clear
# error after --connect-timeout; an endpoint a worker could never bind is refused at once.
# The job runs until step 4 stops it with SIGTERM: a job that could end on its own would race
# the metrics checks of its running processes.
source "$(dirname "$0")/lib.sh"
command -v curl >/dev/null || fail "curl is missing: run deploy/install-deps.sh"
make_model tiny "$TMP/tiny"
read -r PORT MP_PS MP_W <<<"$("$B/free_ports" 3)"
EP=tcp://127.0.0.1:$PORT

http() { # URL -> prints "<status> <body first line>"
    curl -s -m 5 -o "$TMP/body" -w "%{http_code}" "$1" || true
}
expect() { # URL status [body-pattern]
    local code
    code=$(http "$1")
    [ "$code" = "$2" ] || fail "$1: HTTP $code, expected $2 ($(head -c 200 "$TMP/body"))"
    [ -z "${3:-}" ] || grep -q -- "$3" "$TMP/body" || fail "$1: body lacks '$3': $(head -c 300 "$TMP/body")"
}

# 1. A worker started before its server: it says whom it waits for, it is alive but not ready.
#    Its rank comes from JOB_COMPLETION_INDEX, its options from LORAPS_* variables.
JOB_COMPLETION_INDEX=1 LORAPS_SERVERS=$EP LORAPS_MODEL=$TMP/tiny LORAPS_METRICS_PORT=$MP_W \
    LORAPS_CONNECT_TIMEOUT=120 bg w1 "$B/loraps-worker"
W1=$LAST_PID
wait_grep "$TMP/w1.err" "connecting to server $EP (giving up after 120 s" 20
for _ in $(seq 50); do [ "$(http "http://127.0.0.1:$MP_W/healthz")" = 200 ] && break; sleep 0.2; done
expect "http://127.0.0.1:$MP_W/healthz" 200 "ok"
expect "http://127.0.0.1:$MP_W/readyz" 503 "not ready"
wait_grep "$TMP/w1.err" "still waiting for $EP" 20

# 2. The server, configured only by variables; rank 0 comes from LORAPS_RANK.
LORAPS_MODEL=$TMP/tiny LORAPS_BIND=$EP LORAPS_METRICS_PORT=$MP_PS LORAPS_OUT=$TMP/out \
    LORAPS_WORKERS=2 LORAPS_SAVE_EVERY=50 LORAPS_MAX_STEPS=100000 LORAPS_MICRO_BATCH=2 LORAPS_SEQ_LEN=32 \
    LORAPS_HEARTBEAT_MS=100 bg ps "$B/loraps-ps"
PS=$LAST_PID
wait_grep "$TMP/ps.err" "listening on $EP" 30
grep -q "LORAPS_METRICS_PORT *$MP_PS (from the environment)" "$TMP/ps.err" ||
    fail "the server's configuration does not name the variables it used"
expect "http://127.0.0.1:$MP_PS/healthz" 200 "ok"
expect "http://127.0.0.1:$MP_PS/readyz" 200 "ready"
expect "http://127.0.0.1:$MP_PS/metrics" 200 'loraps_workers_expected{role="ps",shard="0"} 2'
grep -q '^loraps_phase{role="ps",shard="0"} 0$' "$TMP/body" || fail "phase is not 'waiting'"
wait_grep "$TMP/ps.err" "still waiting for 1 of 2 workers (ranks 0) on $EP" 30

LORAPS_RANK=0 LORAPS_SERVERS=$EP LORAPS_MODEL=$TMP/tiny bg w0 "$B/loraps-worker"
W0=$LAST_PID
wait_grep "$TMP/w1.err" "joined 1 server shard" 30
wait_grep "$TMP/ps.out" "^step 20/100000" 60
grep -q "joined (rank 1" "$TMP/ps.err" || fail "JOB_COMPLETION_INDEX did not make the worker rank 1"
expect "http://127.0.0.1:$MP_W/readyz" 200 "ready"

# 3. The metrics of a running job, in Prometheus' text format.
expect "http://127.0.0.1:$MP_PS/metrics" 200 "# TYPE loraps_step gauge"
M=$TMP/ps_metrics
cp "$TMP/body" "$M"
val() { grep "^$1{" "$2" | awk '{print $2}'; }
for k in loraps_step loraps_loss loraps_tokens_total loraps_bytes_received_total loraps_bytes_sent_total \
    loraps_workers_live loraps_rejected_messages_total loraps_tokens_per_second loraps_up; do
    [ -n "$(val $k "$M")" ] || fail "the server's /metrics lacks $k"
done
grep -q "^# TYPE loraps_bytes_sent_total counter" "$M" || fail "bytes_sent is not a counter"
[ "$(val loraps_workers_live "$M")" = 2 ] || fail "live workers: $(val loraps_workers_live "$M")"
[ "$(val loraps_step "$M")" -ge 20 ] || fail "step: $(val loraps_step "$M")"
[ "$(val loraps_bytes_received_total "$M")" -gt 0 ] || fail "no bytes received"
awk -v l="$(val loraps_loss "$M")" 'BEGIN{exit !(l > 0 && l < 20)}' || fail "loss: $(val loraps_loss "$M")"
# Every sample line is NAME{LABELS} VALUE, every metric has HELP and TYPE.
grep -v '^#' "$M" | grep -qvE '^[a-z_:]+\{role="ps",shard="0"\} (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$' &&
    fail "a malformed sample line: $(grep -v '^#' "$M" | grep -vE '^[a-z_:]+\{[^}]*\} ' | head -1)"
[ "$(grep -c '^# HELP' "$M")" = "$(grep -c '^# TYPE' "$M")" ] || fail "HELP and TYPE lines differ"
sleep 2.5
expect "http://127.0.0.1:$MP_PS/metrics" 200
awk -v t="$(val loraps_tokens_per_second "$TMP/body")" 'BEGIN{exit !(t > 0)}' || fail "tokens/s is 0"
expect "http://127.0.0.1:$MP_W/metrics" 200 'loraps_worker_steps_total{role="worker",rank="1"}'
[ "$(val loraps_step_bytes "$TMP/body")" -gt 0 ] || fail "the worker's step bytes are 0"
# Checkpoint age, once the first checkpoint (save_every 50) is written.
wait_grep "$TMP/ps.err" "checkpoint .*step 50" 60
sleep 1.2
expect "http://127.0.0.1:$MP_PS/metrics" 200 "loraps_checkpoint_age_seconds"
awk -v a="$(val loraps_checkpoint_age_seconds "$TMP/body")" 'BEGIN{exit !(a >= 0 && a < 60)}' ||
    fail "checkpoint age: $(val loraps_checkpoint_age_seconds "$TMP/body")"

# A rejected message is counted: a worker with the wrong rank is refused.
before=$(curl -s "http://127.0.0.1:$MP_PS/metrics" | grep '^loraps_rejected_messages_total' | awk '{print $2}')
"$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank 7 >/dev/null 2>"$TMP/bad.err" &&
    fail "a worker with rank 7 of 2 was accepted"
after=$(curl -s "http://127.0.0.1:$MP_PS/metrics" | grep '^loraps_rejected_messages_total' | awk '{print $2}')
[ "$after" -gt "$before" ] || fail "the refused Hello was not counted ($before -> $after)"

# HTTP details: an unknown path is 404, a POST is 405, HEAD works.
expect "http://127.0.0.1:$MP_PS/nope" 404 "try /healthz"
code=$(curl -s -m 5 -o /dev/null -w "%{http_code}" -X POST -d x "http://127.0.0.1:$MP_PS/metrics")
[ "$code" = 405 ] || fail "POST /metrics: HTTP $code"
code=$(curl -s -m 5 -o /dev/null -w "%{http_code}" -I "http://127.0.0.1:$MP_PS/readyz")
[ "$code" = 200 ] || fail "HEAD /readyz: HTTP $code"

# 4. SIGTERM to everything: each process exits 0; the single shard writes its adapter first.
kill -TERM "$W0" "$W1"
wait_for "$W0" 30 || fail "worker 0 exited non-zero after SIGTERM"
wait_for "$W1" 30 || fail "worker 1 exited non-zero after SIGTERM"
kill -TERM "$PS"
wait_for "$PS" 30 || fail "the server exited non-zero after SIGTERM"
find "$TMP/out" -name adapter_model.safetensors | grep -q . ||
    fail "no adapter written on SIGTERM: $(ls "$TMP/out")"
curl -s -m 2 "http://127.0.0.1:$MP_PS/healthz" >/dev/null && fail "the endpoint outlived the server"

# 5. Nothing to connect to: a clear error naming the endpoint, within the timeout.
t0=$(date +%s)
rc=0
"$B/loraps-worker" --servers "tcp://127.0.0.1:$PORT" --model "$TMP/tiny" --rank 0 \
    --connect-timeout 2 >/dev/null 2>"$TMP/timeout.err" || rc=$?
[ $rc -ne 0 ] || fail "a worker with no server exited 0"
grep -q "loraps-worker: error: tcp://127.0.0.1:$PORT: no Welcome in 2 s" "$TMP/timeout.err" ||
    fail "no clear connect-timeout error: $(tail -2 "$TMP/timeout.err")"
[ $(($(date +%s) - t0)) -le 15 ] || fail "the connect timeout took $(($(date +%s) - t0)) s"

# 6. Bad orchestration input is refused at once, naming what is wrong.
rc=0
LORAPS_QUIET=maybe "$B/loraps-worker" >/dev/null 2>"$TMP/e.err" || rc=$?
[ $rc -ne 0 ] && grep -q "LORAPS_QUIET=maybe" "$TMP/e.err" || fail "a bad LORAPS_QUIET was accepted"
"$B/loraps-worker" --servers "127.0.0.1:5555" --model x --rank 0 2>"$TMP/e.err" >/dev/null &&
    fail "an endpoint without tcp:// was accepted"
grep -q "expected tcp://HOST:PORT" "$TMP/e.err" || fail "no clear endpoint error: $(cat "$TMP/e.err")"
"$B/loraps-ps" --model x --metrics-port 99999 2>"$TMP/e.err" >/dev/null && fail "port 99999 accepted"
grep -q "metrics-port" "$TMP/e.err" || fail "no clear metrics-port error"

# 7. loraps run --metrics-port P: shard 0 on P, worker i on P+1+i.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 20); do
    RP=$("$B/free_ports" 1)
    port_free $((RP + 1)) && port_free $((RP + 2)) && break
done
bg run "$B/loraps" run --workers 2 --preset tiny --out "$TMP/run" --max-steps 100000 --seq-len 32 \
    --metrics-port "$RP" --eval-every 2
RUN=$LAST_PID
wait_grep "$TMP/run.out" "metrics on http://127.0.0.1:$RP-$((RP + 2))/metrics" 30
wait_grep "$TMP/run.out" "^step 3/" 60
expect "http://127.0.0.1:$RP/metrics" 200 'loraps_workers_live{role="ps",shard="0"} 2'
expect "http://127.0.0.1:$RP/metrics" 200 'loraps_validation_loss{role="ps",shard="0"} '
expect "http://127.0.0.1:$((RP + 1))/readyz" 200 "ready"
expect "http://127.0.0.1:$((RP + 2))/metrics" 200 'loraps_worker_steps_total{role="worker",rank="1"}'
kill -TERM "$RUN"
wait_for "$RUN" 60 || fail "loraps run exited non-zero after SIGTERM"
echo PASS
