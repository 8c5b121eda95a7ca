# Bad input against a running server: a real worker (rank 0) trains while bad_client (rank 1)
# sends every kind of bad message at each of its steps. Each gets its Error, the adapter served
# before and after is byte-identical, good pushes still count, and after bad_client leaves the
# real worker trains on to the end. The server counts what it rejected.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
PORT=$("$B/free_ports" 1)
EP=tcp://127.0.0.1:$PORT
bg ps "$B/loraps-ps" --model "$TMP/tiny" --bind "$EP" --out "$TMP/out" --workers 2 --max-steps 12 \
    --seq-len 16 --micro-batch 2 --eval-every 2
PS=$LAST_PID
bg w0 "$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank 0
W0=$LAST_PID
# A worker with another base model is refused with a clear error and exits non-zero.
"$B/loraps" init-model --arch gpt2 --preset tiny --seed 8 --out "$TMP/other" >/dev/null
rc=0
"$B/loraps-worker" --servers "$EP" --model "$TMP/other" --rank 1 >"$TMP/other.out" 2>"$TMP/other.err" || rc=$?
[ $rc -ne 0 ] || fail "a worker with the wrong model was not refused"
grep -q "loraps-worker: error: .*refused us: base model fingerprint .* is not the job's" "$TMP/other.err" ||
    fail "no clear fingerprint error: $(tail -n 1 "$TMP/other.err")"
tail -n 1 "$TMP/other.err"
bg bad "$B/bad_client" --server "$EP" --model "$TMP/tiny" --rank 1 --steps 3
BAD=$LAST_PID
wait_for "$BAD" 120 || { cat "$TMP/bad.out" "$TMP/bad.err"; fail "bad_client found a problem"; }
cat "$TMP/bad.out"
wait_for "$W0" 120 || fail "the real worker failed"
wait_for "$PS" 60 || fail "the server failed"
grep -q "step 12/12" "$TMP/ps.out" || fail "the job did not finish"
grep -q "val_loss .* (at step 10)" "$TMP/ps.out" || fail "no validation in the progress lines"
grep -q '"rejected": [1-9]' "$TMP/out/ps_stats_0.json" || fail "no rejections counted"
grep -q '"pushes_duplicate": [1-9]' "$TMP/out/ps_stats_0.json" || fail "no duplicates counted"
grep -q "rejected Push: ERR_NONFINITE" "$TMP/ps.err" || fail "no log line for a rejection"
cat "$TMP/out/ps_stats_0.json"
echo PASS
