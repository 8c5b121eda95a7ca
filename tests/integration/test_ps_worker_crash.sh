# kill -9 one of 3 workers mid-run: the server drops it after the heartbeat timeout and the sync
# steps complete with the 2 live workers; the killed worker, restarted, joins again at the
# current version and trains again; the job finishes and every process exits 0.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
PORT=$("$B/free_ports" 1)
EP=tcp://127.0.0.1:$PORT
bg ps "$B/loraps-ps" --model "$TMP/tiny" --bind "$EP" --out "$TMP/out" --workers 3 \
    --max-steps 300 --micro-batch 2 --seq-len 32 --heartbeat-ms 100 --heartbeat-timeout-ms 1500
PS=$LAST_PID
for k in 0 1 2; do
    bg "w$k" "$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank $k
    W[$k]=$LAST_PID
done
wait_grep "$TMP/ps.out" "step 20/300" 60
kill -9 "${W[2]}"
wait "${W[2]}" 2>/dev/null || true
wait_grep "$TMP/ps.err" "rank 2.*left: silent" 30
# Steps go on with two workers.
before=$(grep -c "^step" "$TMP/ps.out")
sleep 1
after=$(grep -c "^step" "$TMP/ps.out")
[ "$after" -gt "$before" ] || fail "no step completed after the drop ($before -> $after)"
grep -q "step 300/300" "$TMP/ps.out" && fail "the job ended before the restart; make it longer"
# The restarted worker joins at the current version and trains.
bg w2b "$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank 2
W2B=$LAST_PID
wait_grep "$TMP/ps.err" "joined (rank 2.*first step [1-9]" 30
wait_grep "$TMP/w2b.err" "step [0-9]* loss" 30
for p in "${W[0]}" "${W[1]}" "$W2B" "$PS"; do wait_for "$p" 180 || fail "process $p exited non-zero"; done
grep -q "step 300/300" "$TMP/ps.out" || fail "the job did not finish"
[ -f "$TMP/out/adapter_model.safetensors" ] || fail "no adapter written"
n=$(grep -c "step [0-9]* loss" "$TMP/w2b.err")
echo "restarted worker trained $n steps"
[ "$n" -ge 1 ] || fail "the restarted worker did not train"
echo PASS
