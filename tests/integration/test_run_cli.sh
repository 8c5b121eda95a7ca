# loraps run end to end (demo model made by itself, progress lines, the adapter), Ctrl-C stops
# every process cleanly, and both daemons: --help, clear errors for bad flags, SIGTERM -> exit 0.
source "$(dirname "$0")/lib.sh"

# --help and bad flags
# (to a file: help longer than a stdio buffer would meet grep -q's closed pipe under pipefail)
"$B/loraps-ps" --help >"$TMP/h1" && grep -q "usage: loraps-ps" "$TMP/h1" || fail "loraps-ps --help"
"$B/loraps-worker" --help >"$TMP/h2" && grep -q "usage: loraps-worker" "$TMP/h2" ||
    fail "loraps-worker --help"
"$B/loraps" run --help >"$TMP/h3" && grep -q "usage: loraps run" "$TMP/h3" || fail "loraps run --help"
expect_error() { # expected-message command...
    local want=$1 rc=0
    shift
    "$@" >"$TMP/cli.out" 2>"$TMP/cli.err" || rc=$?
    [ $rc -ne 0 ] || fail "'$*' succeeded"
    grep -q -- "$want" "$TMP/cli.err" || { cat "$TMP/cli.err"; fail "'$*': expected '$want'"; }
}
expect_error "loraps-ps: error: --bogus: unknown option" "$B/loraps-ps" --bogus
expect_error "loraps-ps: error: --lr: " "$B/loraps-ps" --model x --lr abc
expect_error "loraps-ps: error: --model: required" "$B/loraps-ps"
expect_error "loraps-ps: error: job: mode must be sync or async" "$B/loraps-ps" --model x --mode bsp
expect_error "loraps-ps: error: job: wire_dtype must be" "$B/loraps-ps" --model x --wire-dtype f8
expect_error "loraps-ps: error: start-up: " "$B/loraps-ps" --model "$TMP/nonexistent"
expect_error "loraps-worker: error: --servers: required" "$B/loraps-worker" --model x --rank 0
expect_error "loraps-worker: error: --rank: expected" "$B/loraps-worker" --servers tcp://127.0.0.1:1 --model x --rank -3
expect_error "loraps run: error: --bogus: unknown option" "$B/loraps" run --bogus
expect_error "loraps run: error: --max-steps: " "$B/loraps" run --max-steps many

# A whole job: the demo model is made, one progress line per step, the adapter is written.
"$B/loraps" run --workers 2 --preset tiny --out "$TMP/run" --max-steps 6 --seq-len 32 \
    >"$TMP/run.out" 2>"$TMP/run.err" || fail "loraps run failed"
for s in 1 2 3 4 5 6; do grep -q "^step $s/6  loss" "$TMP/run.out" || fail "no progress line $s"; done
grep -q "tok/s" "$TMP/run.out" && grep -q "w1 " "$TMP/run.out" && grep -q "eta" "$TMP/run.out" ||
    fail "progress lines lack tokens/s, per-worker bytes or ETA"
[ -f "$TMP/run/adapter_model.safetensors" ] && [ -f "$TMP/run/adapter_config.json" ] || fail "no PEFT adapter"
[ -f "$TMP/run/worker_stats_1.json" ] || fail "no worker stats"
[ "$(grep -c '"loss":' "$TMP/run/metrics.jsonl")" = 6 ] || fail "metrics.jsonl lacks a line per step"

# Ctrl-C: the launcher stops every process it started, and exits 0.
bg runlong "$B/loraps" run --workers 2 --preset tiny --out "$TMP/run2" --max-steps 100000 --seq-len 32
RUN=$LAST_PID
wait_grep "$TMP/runlong.out" "^step 3/" 60
children=$(cat /proc/$RUN/task/*/children)
[ -n "$children" ] || fail "no child processes found"
kill -INT "$RUN"
wait_for "$RUN" 30 || fail "loraps run did not exit 0 after Ctrl-C"
for c in $children; do
    kill -0 "$c" 2>/dev/null && fail "process $c still running after Ctrl-C"
done
grep -q "stopping" "$TMP/runlong.err" || fail "no stop message"

# SIGTERM to a lone server and to a worker waiting to join: both exit 0.
make_model tiny "$TMP/tiny"
PORT=$("$B/free_ports" 1)
bg lone "$B/loraps-ps" --model "$TMP/tiny" --bind tcp://127.0.0.1:$PORT --workers 2 --out "$TMP/lone"
LONE=$LAST_PID
wait_grep "$TMP/lone.err" "listening" 30
bg w0 "$B/loraps-worker" --servers tcp://127.0.0.1:$PORT --model "$TMP/tiny" --rank 0
W0=$LAST_PID
wait_grep "$TMP/lone.err" "joined (rank 0" 30
kill -TERM "$W0"
wait_for "$W0" 20 || fail "worker did not exit 0 on SIGTERM"
kill -TERM "$LONE"
wait_for "$LONE" 20 || fail "loraps-ps did not exit 0 on SIGTERM"
grep -q "stopped by signal 15" "$TMP/lone.err" || fail "no clean-stop line"
echo PASS
