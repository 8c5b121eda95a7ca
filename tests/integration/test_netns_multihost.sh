# Several hosts: one parameter server (then two shards) and three workers, each in its own network namespace on a
# bridge (198.18.0.0/15), reaching the server by DNS name (loraps-ps-0) as on Kubernetes; the
# server listens on 0.0.0.0 because its name cannot be bound. First a job trains to the end and
# every process exits 0; then one worker's cable is pulled mid-job: the server drops it and the
# steps go on with two, the cable goes back in and the worker joins again and trains, and the job
# still finishes. Health and metrics are read across hosts. Needs root (skips otherwise).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/netns.sh"
netns_require_root
command -v curl >/dev/null || fail "curl is missing: run deploy/install-deps.sh"
make_model tiny "$TMP/tiny"
netns_init
netns_host ps 198.18.0.1
netns_host ps1 198.18.0.2
for i in 0 1 2; do netns_host "w$i" "198.18.0.1$i"; done
netns_hosts_file "198.18.0.1 loraps-ps-0
198.18.0.2 loraps-ps-1
198.18.0.10 worker-0
198.18.0.11 worker-1
198.18.0.12 worker-2"
on w0 getent hosts loraps-ps-0 | grep -q 198.18.0.1 || fail "loraps-ps-0 does not resolve in the worker hosts"
EP=tcp://loraps-ps-0:5555

# run NAME STEPS [worker options...]: the server and three workers, each on its host.
run() {
    local name=$1 steps=$2
    shift 2
    bg "$name-ps" ip netns exec "$NETNS_PREFIX-ps" "$B/loraps-ps" --model "$TMP/tiny" --peers "$EP" \
        --out "$TMP/$name" --workers 3 --max-steps "$steps" --micro-batch 2 --seq-len 32 \
        --heartbeat-ms 100 --heartbeat-timeout-ms 1500 --metrics-port 9100
    PS=$LAST_PID
    for i in 0 1 2; do
        bg "$name-w$i" ip netns exec "$NETNS_PREFIX-w$i" "$B/loraps-worker" --servers "$EP" \
            --model "$TMP/tiny" --rank "$i" --metrics-port 9101 --connect-timeout 60 "$@"
        W[$i]=$LAST_PID
    done
}

finish() { # NAME STEPS
    local p
    for p in "${W[@]}" "$PS"; do wait_for "$p" 240 || fail "$1: process $p exited non-zero"; done
    grep -q "^step $2/$2 " "$TMP/$1-ps.out" || fail "$1: the job did not reach step $2"
    [ -f "$TMP/$1/adapter_model.safetensors" ] || fail "$1: no adapter written"
}

# 1. Train to the end across four hosts.
run full 30
wait_grep "$TMP/full-ps.err" "bind *tcp://0.0.0.0:5555" 30
finish full 30
for i in 0 1 2; do grep -q "joined (rank $i, " "$TMP/full-ps.err" || fail "rank $i never joined"; done
echo "4 hosts: trained 30 steps, every process exited 0"

# 2. Pull one worker's cable mid-job, then plug it back in.
N=500
run cut $N --step-delay-ms 25
wait_grep "$TMP/cut-ps.out" "^step 20/$N " 60
# Probes and metrics of the server, answered to another host by name.
on w0 curl -sf -m 5 http://loraps-ps-0:9100/readyz | grep -q ready || fail "/readyz across hosts"
on w0 curl -sf -m 5 http://loraps-ps-0:9100/metrics >"$TMP/m1" || fail "/metrics across hosts"
grep -q '^loraps_workers_live{role="ps",shard="0"} 3$' "$TMP/m1" || fail "3 live workers expected: $(grep workers_live "$TMP/m1")"
on ps curl -sf -m 5 http://worker-2:9101/readyz | grep -q ready || fail "worker-2 is not ready"

netns_link w2 down
t_cut=$(date +%s)
wait_grep "$TMP/cut-ps.err" "(rank 2, .*left: silent" 30
before=$(grep -c "^step" "$TMP/cut-ps.out")
sleep 1.5
after=$(grep -c "^step" "$TMP/cut-ps.out")
[ "$after" -gt "$before" ] || fail "no step completed with worker 2 cut off"
echo "cable of worker 2 out: dropped after $(($(date +%s) - t_cut)) s; $((after - before)) steps in 1.5 s with 2 workers"
on w0 curl -sf -m 5 http://loraps-ps-0:9100/metrics >"$TMP/m2" || fail "/metrics across hosts"
grep -q '^loraps_workers_live{role="ps",shard="0"} 2$' "$TMP/m2" || fail "2 live workers expected"
grep -q '^loraps_worker_drops_total{role="ps",shard="0"} 1$' "$TMP/m2" || fail "the drop is not counted"

netns_link w2 up
t_up=$(date +%s)
for ((k = 0; k < 600; k++)); do
    [ "$(grep -c "joined (rank 2, " "$TMP/cut-ps.err")" -ge 2 ] && break
    grep -q "^step $N/$N " "$TMP/cut-ps.out" && fail "the job ended before worker 2 joined again"
    sleep 0.1
done
[ "$(grep -c "joined (rank 2, " "$TMP/cut-ps.err")" -ge 2 ] || fail "worker 2 did not join again"
steps_before=$(grep -c "step [0-9]* loss" "$TMP/cut-w2.err")
for ((k = 0; k < 300; k++)); do
    [ "$(grep -c "step [0-9]* loss" "$TMP/cut-w2.err")" -gt "$steps_before" ] && break
    sleep 0.1
done
[ "$(grep -c "step [0-9]* loss" "$TMP/cut-w2.err")" -gt "$steps_before" ] ||
    fail "worker 2 joined again but does not train"
echo "cable back in: worker 2 joined again after $(($(date +%s) - t_up)) s and trains"
grep -q "^step $N/$N " "$TMP/cut-ps.out" && fail "the job ended before worker 2 trained again"
finish cut $N
echo "the job finished: $N steps, every process exited 0"

# 3. Two server shards on two hosts, named; each binds 0.0.0.0 and reaches the other by name.
PEERS=tcp://loraps-ps-0:5555,tcp://loraps-ps-1:5555
pids=()
for k in 0 1; do
    h=ps; [ $k = 1 ] && h=ps1
    bg "two-ps$k" ip netns exec "$NETNS_PREFIX-$h" "$B/loraps-ps" --model "$TMP/tiny" --shard $k \
        --peers "$PEERS" --out "$TMP/two" --workers 3 --max-steps 30 --micro-batch 2 --seq-len 32 \
        --heartbeat-ms 100
    pids+=("$LAST_PID")
done
for i in 0 1 2; do
    bg "two-w$i" ip netns exec "$NETNS_PREFIX-w$i" "$B/loraps-worker" --servers "$PEERS" \
        --model "$TMP/tiny" --rank "$i"
    pids+=("$LAST_PID")
done
for p in "${pids[@]}"; do wait_for "$p" 240 || fail "2 shards: process $p exited non-zero"; done
grep -q "^step 30/30 " "$TMP/two-ps0.out" || fail "2 shards: the job did not finish"
grep -q "bind *tcp://0.0.0.0:5555" "$TMP/two-ps1.err" || fail "shard 1 did not listen on 0.0.0.0"
[ -f "$TMP/two/adapter_model.safetensors" ] || fail "2 shards: no adapter written"
echo "2 shards on 2 hosts + 3 workers: trained to the end"
echo PASS
