# Exact resume: in sync mode with the same workers, K steps + stop + resume for the rest gives a
# BIT-IDENTICAL adapter to the uninterrupted run (cmp of adapter_model.safetensors), with 1 and
# with 2 server shards (the 2-shard checkpoint is one PEFT folder collected by shard 0, moments
# included). The stop is a real SIGTERM in the middle of training (slowed-down workers); the
# resume continues from `latest`, whichever checkpoint that is (periodic or the stop's own). LoRA
# dropout is on, so the dropout RNG positions must be restored too; the LR schedule has warm-up
# and cosine decay, so must AdamW's step. A PEFT adapter without trainer state resumes with
# fresh moments and a warning.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
JOB=(--max-steps 16 --seq-len 32 --micro-batch 2 --workers 2 --lr 0.01 --max-grad-norm 0.5
    --lr-scheduler cosine --warmup-steps 3 --lora-dropout 0.1 --save-every 3 --quiet)

# start NAME SHARDS [ps args...]: servers and 2 workers; PS_PIDS, W_PIDS, PEERS
start() {
    local name=$1 shards=$2 k ports
    shift 2
    ports=$("$B/free_ports" "$shards")
    PEERS=""
    for p in $ports; do PEERS="$PEERS${PEERS:+,}tcp://127.0.0.1:$p"; done
    PS_PIDS=()
    W_PIDS=()
    for ((k = 0; k < shards; k++)); do
        bg "$name-ps$k" "$B/loraps-ps" --model "$TMP/tiny" --shard $k --peers "$PEERS" "${JOB[@]}" "$@"
        PS_PIDS+=("$LAST_PID")
    done
    for k in 0 1; do
        bg "$name-w$k" "$B/loraps-worker" --servers "$PEERS" --model "$TMP/tiny" --rank $k --quiet \
            ${DELAY:+--step-delay-ms $DELAY}
        W_PIDS+=("$LAST_PID")
    done
}

finish() { # waits for all of the last start's processes
    local p
    for p in "${W_PIDS[@]}" "${PS_PIDS[@]}"; do wait_for "$p" 60 || fail "process $p failed"; done
}

for shards in 1 2; do
    # the uninterrupted run
    DELAY= start full$shards $shards --out "$TMP/full$shards"
    finish
    # stopped by SIGTERM after a few steps...
    DELAY=60 start cut$shards $shards --out "$TMP/cut$shards"
    wait_grep "$TMP/cut$shards-ps0.err" "checkpoint .*checkpoint-6 " 40
    kill -TERM "${PS_PIDS[@]}"
    for p in "${PS_PIDS[@]}"; do wait_for "$p" 30 || fail "server $p failed on SIGTERM"; done
    kill -TERM "${W_PIDS[@]}"
    for p in "${W_PIDS[@]}"; do wait_for "$p" 30 || true; done
    grep -q "stopped by signal" "$TMP/cut$shards-ps0.err" || fail "no stop line"
    [ -L "$TMP/cut$shards/latest" ] || fail "no latest link"
    step=$(sed -n 's/^  "step": \([0-9]*\),/\1/p' "$TMP/cut$shards/latest/trainer_state.json")
    [ "$step" -ge 6 ] && [ "$step" -lt 16 ] || fail "latest is at step '$step'"
    echo "$shards shard(s): stopped; latest is step $step"
    # ... and resumed from latest, with fresh workers
    DELAY= start resume$shards $shards --out "$TMP/cut$shards" --resume latest
    finish
    grep -q "resumed from .*step $step" "$TMP/resume$shards-ps0.err" || fail "no resume line"
    grep -q "data continues at sequence $((step * 4 + 2))" "$TMP/resume$shards-w1.err" ||
        fail "worker 1 did not continue the data at sequence $((step * 4 + 2))"
    cmp "$TMP/full$shards/adapter_model.safetensors" "$TMP/cut$shards/adapter_model.safetensors" ||
        fail "$shards shard(s): resumed adapter differs from the uninterrupted one"
    cmp "$TMP/full$shards/latest/optimizer.safetensors" "$TMP/cut$shards/latest/optimizer.safetensors" ||
        fail "$shards shard(s): final optimizer state differs"
    echo "$shards shard(s): resumed from step $step; final adapter and moments bit-identical"
done

# The 2-shard checkpoint is one PEFT folder, complete, with the moments of both shards.
"$B/loraps" inspect "$TMP/full2/checkpoint-15" >"$TMP/inspect.out" || fail "inspect failed"
grep -q "optimizer.safetensors" "$TMP/inspect.out" || fail "inspect shows no optimizer state"
ls "$TMP/full2" | grep -c '^checkpoint-' | grep -qx 3 || fail "keep_checkpoints 3 not honoured"

# Resume from a plain PEFT adapter (no trainer state): fresh moments, a warning, step 0.
mkdir -p "$TMP/peft_only"
cp "$TMP/full1/checkpoint-15/adapter_config.json" "$TMP/full1/checkpoint-15/adapter_model.safetensors" \
    "$TMP/peft_only/"
DELAY= start peft 1 --out "$TMP/from_peft" --resume "$TMP/peft_only" --max-steps 4
finish
grep -q "warning: .*without trainer state" "$TMP/peft-ps0.err" || fail "no warning for a bare adapter"
[ -f "$TMP/from_peft/adapter_model.safetensors" ] || fail "no adapter after resuming a bare adapter"

# Another data split: a 1-worker checkpoint (micro-batch 4) resumed with 2 workers of 2 continues
# after the sequences it consumed, so it matches the 1-worker run (sync: 1 x 2b == 2 x b, 1e-5).
JOB1=(--max-steps 10 --seq-len 32 --lr 0.01 --save-every 5 --quiet)
p1=$("$B/free_ports" 1)
bg one-ps "$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$p1" --out "$TMP/one" \
    --workers 1 --micro-batch 4 "${JOB1[@]}"
PS1=$LAST_PID
bg one-w "$B/loraps-worker" --servers "tcp://127.0.0.1:$p1" --model "$TMP/tiny" --rank 0 --quiet
wait_for "$LAST_PID" 60 && wait_for "$PS1" 60 || fail "the 1-worker run failed"
p2=$("$B/free_ports" 1)
bg split-ps "$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$p2" --out "$TMP/split" \
    --workers 2 --micro-batch 2 "${JOB1[@]}" --resume "$TMP/one/checkpoint-5"
PS2=$LAST_PID
for k in 0 1; do
    bg split-w$k "$B/loraps-worker" --servers "tcp://127.0.0.1:$p2" --model "$TMP/tiny" --rank $k --quiet
    WS[$k]=$LAST_PID
done
for p in "${WS[@]}" "$PS2"; do wait_for "$p" 60 || fail "the 2-worker resume failed"; done
grep -q "warning: the data split changed" "$TMP/split-ps.err" || fail "no data split warning"
grep -q "data continues at sequence 22 (step 5)" "$TMP/split-w1.err" ||
    fail "rank 1 of 2 does not continue at sequence 22: $(grep data "$TMP/split-w1.err")"
"$B/adapter_diff" "$TMP/one/adapter_model.safetensors" "$TMP/split/adapter_model.safetensors" 1e-5 ||
    fail "1 worker resumed as 2 differs from 1 worker throughout"

# async: checkpoints count updates (one per push); a resume restores each rank's own next step
# and finishes the job (exactness is not claimed: the order of pushes is not reproducible).
JOBA=(--mode async --workers 2 --max-steps 8 --seq-len 16 --micro-batch 2 --save-every 4 --quiet)
pa=$("$B/free_ports" 1)
bg async-ps "$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$pa" --out "$TMP/async" "${JOBA[@]}"
PSA=$LAST_PID
for k in 0 1; do
    bg async-w$k "$B/loraps-worker" --servers "tcp://127.0.0.1:$pa" --model "$TMP/tiny" --rank $k --quiet
    WS[$k]=$LAST_PID
done
for p in "${WS[@]}" "$PSA"; do wait_for "$p" 60 || fail "the async run failed"; done
"$B/loraps" inspect "$TMP/async/checkpoint-8" | grep -q "rank 1 .*next step [0-9]" || fail "async ranks"
pa=$("$B/free_ports" 1)
bg async2-ps "$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$pa" --out "$TMP/async2" \
    "${JOBA[@]}" --resume "$TMP/async/checkpoint-8"
PSA=$LAST_PID
for k in 0 1; do
    bg async2-w$k "$B/loraps-worker" --servers "tcp://127.0.0.1:$pa" --model "$TMP/tiny" --rank $k --quiet
    WS[$k]=$LAST_PID
done
for p in "${WS[@]}" "$PSA"; do wait_for "$p" 60 || fail "the async resume failed"; done
grep -q "finished at version 16" "$TMP/async2-ps.err" || fail "async resume did not run to 16 updates"
grep -q "pushes 8 accepted" "$TMP/async2-ps.err" || fail "async resume: not 8 more pushes: $(grep exit "$TMP/async2-ps.err")"

# A job whose LoRA shape differs from the checkpoint's is refused, naming the tensor.
if "$B/loraps-ps" --model "$TMP/tiny" "${JOB[@]}" --r 4 --resume "$TMP/full1/latest" \
    --bind "tcp://127.0.0.1:$("$B/free_ports" 1)" 2>"$TMP/shape.err"; then
    fail "a resume with another r was accepted"
fi
grep -q "error: start-up: --resume .*tensor 0 is .*lora_A.weight \[8,64\], the job gives .*\[4,64\]" \
    "$TMP/shape.err" || fail "unclear shape error: $(cat "$TMP/shape.err")"
echo "PASS"
