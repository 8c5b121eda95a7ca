# Per-step durability: a server with --durable-every 1 is killed with -9 in the middle of a sync
# run (twice), restarted with --resume latest on the same port; the workers notice, join again by
# themselves and continue from the last durable step. No version that was served is lost (the
# checkpoint on disk is at least the newest version any progress line or worker saw), and the
# final adapter and moments are BIT-IDENTICAL to an uninterrupted run's. Also: --durable-every K
# (every K-th version), and its cost per step.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
export OMP_WAIT_POLICY=PASSIVE
JOB=(--max-steps 40 --seq-len 32 --micro-batch 2 --workers 2 --lr 0.01 --max-grad-norm 0.5
    --lr-scheduler cosine --warmup-steps 3 --lora-dropout 0.1 --heartbeat-ms 100
    --heartbeat-timeout-ms 5000)

start_ps() { # NAME EP [args...]
    local name=$1 ep=$2
    shift 2
    bg "$name" "$B/loraps-ps" --model "$TMP/tiny" --bind "$ep" "${JOB[@]}" "$@"
    PS=$LAST_PID
}
start_workers() { # NAME EP DELAY
    W_PIDS=()
    for k in 0 1; do
        bg "$1-w$k" "$B/loraps-worker" --servers "$2" --model "$TMP/tiny" --rank $k --quiet \
            --step-delay-ms "$3"
        W_PIDS+=("$LAST_PID")
    done
}
latest_step() {
    sed -n 's/^  "step": \([0-9]*\),/\1/p' "$1/latest/trainer_state.json"
}

# the uninterrupted run
EP=tcp://127.0.0.1:$("$B/free_ports" 1)
start_ps full "$EP" --out "$TMP/full"
start_workers full "$EP" 0
for p in "${W_PIDS[@]}" "$PS"; do wait_for "$p" 120 || fail "uninterrupted run: $p failed"; done

# the same with --durable-every 1, the server killed -9 twice
EP=tcp://127.0.0.1:$("$B/free_ports" 1)
start_ps cut1 "$EP" --out "$TMP/cut" --durable-every 1
start_workers cut "$EP" 40
resumes=0
for kill_at in 9 23; do
    wait_grep "$TMP/cut$((resumes + 1)).out" "^step $kill_at/" 60
    kill -9 "$PS"
    wait "$PS" 2>/dev/null || true
    # every version a worker may have been served is on disk: the newest progress line's
    served=$(sed -n 's/^step \([0-9]*\)\/.*/\1/p' "$TMP/cut$((resumes + 1)).out" | tail -1)
    durable=$(latest_step "$TMP/cut")
    echo "killed -9 after step $served was reported; latest checkpoint is step $durable"
    [ "$durable" -ge "$served" ] || fail "version $served was served but only $durable is durable"
    resumes=$((resumes + 1))
    sleep 0.5
    start_ps "cut$((resumes + 1))" "$EP" --out "$TMP/cut" --durable-every 1 --resume latest
    wait_grep "$TMP/cut$((resumes + 1)).err" "resumed from .*step $durable" 30
done
for p in "${W_PIDS[@]}" "$PS"; do wait_for "$p" 120 || fail "resumed run: $p failed"; done
for k in 0 1; do
    grep -q "joining again" "$TMP/cut-w$k.err" || fail "worker $k did not rejoin by itself"
done
cmp "$TMP/full/adapter_model.safetensors" "$TMP/cut/adapter_model.safetensors" ||
    fail "the adapter after two kill -9 differs from the uninterrupted run's"
cmp "$TMP/full/latest/optimizer.safetensors" "$TMP/cut/latest/optimizer.safetensors" ||
    fail "the optimizer state after two kill -9 differs"
grep -h "durable: " "$TMP"/cut*.err | sed 's/^loraps-ps\[0\]: /  /'
n=$(ls "$TMP/cut" | grep -c '^checkpoint-')
[ "$n" -le 3 ] || fail "--durable-every kept $n checkpoint folders (expected at most 3)"
echo "kill -9 twice with --durable-every 1: nothing served was lost; adapter and moments bit-identical"

# --durable-every 4: only every 4th version is written before being served
EP=tcp://127.0.0.1:$("$B/free_ports" 1)
start_ps k4 "$EP" --out "$TMP/k4" --durable-every 4 --max-steps 10 --keep-checkpoints 0
start_workers k4 "$EP" 0
for p in "${W_PIDS[@]}" "$PS"; do wait_for "$p" 120 || fail "--durable-every 4: $p failed"; done
ls "$TMP/k4" | grep -q '^checkpoint-4$' || fail "no checkpoint-4 with --durable-every 4"
ls "$TMP/k4" | grep -q '^checkpoint-3$' && fail "checkpoint-3 written with --durable-every 4"
grep -q "durable: 2 versions written" "$TMP/k4.err" || fail "expected 2 durable writes (4 and 8)"

# refused: no --out; several shards
"$B/loraps-ps" --model "$TMP/tiny" --bind "$EP" "${JOB[@]}" --durable-every 1 2>"$TMP/noout.err" &&
    fail "--durable-every without --out was accepted"
grep -q "needs --out" "$TMP/noout.err" || fail "no clear error without --out"
echo PASS
