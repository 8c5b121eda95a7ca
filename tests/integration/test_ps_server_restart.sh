# A worker reconnects and joins again by itself when its server goes away and comes back: the
# server is killed with -9 mid-run and restarted on the same port; the worker notices (no
# heartbeat answers within the timeout), joins the new server instance and the job finishes.
# (The restarted server starts from its initial state: resuming from a checkpoint comes later.)
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
PORT=$("$B/free_ports" 1)
EP=tcp://127.0.0.1:$PORT
ARGS=(--model "$TMP/tiny" --bind "$EP" --workers 1 --seq-len 16 --micro-batch 2
      --heartbeat-ms 100 --heartbeat-timeout-ms 1000 --max-steps 300)
bg ps1 "$B/loraps-ps" "${ARGS[@]}"
PS1=$LAST_PID
bg w0 "$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank 0
W0=$LAST_PID
wait_grep "$TMP/ps1.out" "^step 10/" 60
grep -q "^step 300/" "$TMP/ps1.out" && fail "the first server finished before the kill"
kill -9 "$PS1"
wait "$PS1" 2>/dev/null || true
sleep 1.5
bg ps2 "$B/loraps-ps" "${ARGS[@]}" --out "$TMP/out"
PS2=$LAST_PID
wait_grep "$TMP/w0.err" "joining again" 30
wait_grep "$TMP/w0.err" "restarted" 30
wait_for "$PS2" 120 || fail "the restarted server failed"
wait_for "$W0" 60 || fail "the worker failed"
grep -q "^step 300/300" "$TMP/ps2.out" || fail "the job did not finish on the restarted server"
[ -f "$TMP/out/adapter_model.safetensors" ] || fail "no adapter"
echo PASS
