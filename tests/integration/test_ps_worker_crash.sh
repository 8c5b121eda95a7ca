# kill -9 one of 3 workers mid-run: the servers drop it after the heartbeat timeout and the sync
# steps complete with the 2 live workers; the killed worker, restarted, joins again at the
# current version and trains again; the job finishes and every process exits 0. With 1 and with
# 2 server shards.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"

scenario() {
    local S=$1 n=$2 wait_drop=$3 ports peers="" k pids=()
    ports=$("$B/free_ports" "$S")
    for p in $ports; do peers="$peers${peers:+,}tcp://127.0.0.1:$p"; done
    for ((k = 0; k < S; k++)); do
        bg "s$S$wait_drop-ps$k" "$B/loraps-ps" --model "$TMP/tiny" --shard $k --peers "$peers" \
            --out "$TMP/out$S$wait_drop" --workers 3 --max-steps "$n" --micro-batch 2 --seq-len 32 \
            --heartbeat-ms 100 --heartbeat-timeout-ms 1500
        pids+=("$LAST_PID")
    done
    local PSOUT=$TMP/s$S$wait_drop-ps0.out PSERR=$TMP/s$S$wait_drop-ps0.err
    for k in 0 1 2; do
        bg "s$S$wait_drop-w$k" "$B/loraps-worker" --servers "$peers" --model "$TMP/tiny" --rank $k
        W[$k]=$LAST_PID
    done
    wait_grep "$PSOUT" "step 20/$n" 60
    kill -9 "${W[2]}"
    wait "${W[2]}" 2>/dev/null || true
    if [ "$wait_drop" = 1 ]; then
        wait_grep "$PSERR" "rank 2.*left: silent" 30
        # Steps go on with two workers.
        local before after
        before=$(grep -c "^step" "$PSOUT")
        sleep 1
        after=$(grep -c "^step" "$PSOUT")
        [ "$after" -gt "$before" ] || fail "$S shards: no step completed after the drop"
    fi
    grep -q "step $n/$n" "$PSOUT" && fail "$S shards: the job ended before the restart"
    # The restarted worker joins at the current version and trains.
    bg "s$S$wait_drop-w2b" "$B/loraps-worker" --servers "$peers" --model "$TMP/tiny" --rank 2
    local W2B=$LAST_PID
    wait_grep "$PSERR" "joined (rank 2.*first step [1-9]" 30
    # Restarted before the timeout, the new membership replaces the old one.
    [ "$wait_drop" = 1 ] || wait_grep "$PSERR" "rank 2.*left: replaced" 30
    wait_grep "$TMP/s$S$wait_drop-w2b.err" "step [0-9]* loss" 30
    for p in "${W[0]}" "${W[1]}" "$W2B" "${pids[@]}"; do
        wait_for "$p" 180 || fail "$S shards: process $p exited non-zero"
    done
    grep -q "step $n/$n" "$PSOUT" || fail "$S shards: the job did not finish"
    [ -f "$TMP/out$S$wait_drop/adapter_model.safetensors" ] || fail "$S shards: no adapter written"
    local trained
    trained=$(grep -c "step [0-9]* loss" "$TMP/s$S$wait_drop-w2b.err")
    echo "$S shard(s): the restarted worker trained $trained steps"
    [ "$trained" -ge 1 ] || fail "$S shards: the restarted worker did not train"
}

scenario 1 300 1
scenario 2 300 1
# Restarted at once (before the heartbeat timeout), with 2 shards: the shards may disagree on
# whether the rank already pushed the open step; the worker takes the later first step and its
# Pull tells the other shard not to wait for it.
scenario 2 300 0
echo PASS
