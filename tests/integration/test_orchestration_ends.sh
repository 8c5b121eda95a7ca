# A server never waits forever for workers that are not coming (what an orchestrator sees as a
# hung job): with --idle-exit S (LORAPS_IDLE_EXIT) a server with no live worker for S seconds,
# because none came or all are gone, checkpoints what it has and exits with status 3, saying why.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
read -r P1 P2 <<<"$("$B/free_ports" 2)"

# 1. Nobody ever comes.
t0=$(date +%s)
rc=0
"$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$P1" --workers 2 --idle-exit 2 \
    >"$TMP/ps1.out" 2>"$TMP/ps1.err" || rc=$?
[ $rc = 3 ] || fail "exit status $rc, expected 3"
grep -q "no live worker for 2 s (--idle-exit) at version 0" "$TMP/ps1.err" || fail "no clear reason logged"
[ $(($(date +%s) - t0)) -le 10 ] || fail "took $(($(date +%s) - t0)) s"

# 2. The only worker dies mid-job: the server checkpoints the steps done, then exits 3.
LORAPS_IDLE_EXIT=3 bg ps2 "$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$P2" \
    --out "$TMP/out2" --workers 1 --max-steps 100000 --micro-batch 2 --seq-len 32 \
    --heartbeat-ms 100 --heartbeat-timeout-ms 1000
PS=$LAST_PID
bg w2 "$B/loraps-worker" --servers "tcp://127.0.0.1:$P2" --model "$TMP/tiny" --rank 0
W=$LAST_PID
wait_grep "$TMP/ps2.out" "^step 10/" 60
kill -9 "$W"
wait "$W" 2>/dev/null || true
rc=0
wait_for "$PS" 30 || rc=$?
[ $rc = 3 ] || fail "exit status $rc after the last worker died, expected 3"
grep -q "LORAPS_IDLE_EXIT *3 (from the environment)" "$TMP/ps2.err" || fail "LORAPS_IDLE_EXIT not shown"
grep -q "no live worker for 3 s (--idle-exit) at version [1-9]" "$TMP/ps2.err" || fail "no clear reason logged"
find "$TMP/out2" -name adapter_model.safetensors | grep -q . || fail "nothing written before the exit"

# A bad value is refused at once.
"$B/loraps-ps" --model x --idle-exit soon 2>"$TMP/e" >/dev/null && fail "--idle-exit soon accepted"
grep -q "loraps-ps: error: --idle-exit: expected seconds" "$TMP/e" || fail "unclear error: $(cat "$TMP/e")"
echo PASS
