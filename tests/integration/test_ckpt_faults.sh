# Faults around checkpoints.
# 1. kill -9 of the server while it writes a checkpoint (slowed down between files by the
#    test-only LORAPS_TEST_CHECKPOINT_SLEEP_MS): once in the partial folder, once between the
#    folder's rename and the `latest` update, then at random moments. Every time `latest` points
#    to a complete checkpoint that loads (loraps inspect checks every file's size and hash), and
#    the job resumes from it and finishes.
# 2. corrupt or truncated checkpoint files: --resume fails at start-up with a clear error naming
#    the file (exit 1, no crash, no sanitizer report), and no file of the checkpoint is changed.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
OUT=$TMP/out
JOB=(--max-steps 400 --seq-len 16 --micro-batch 2 --save-every 2 --keep-checkpoints 2 --quiet)
export LORAPS_TEST_CHECKPOINT_SLEEP_MS=250

# start NAME [ps args]: one server and one worker; PS and W are their pids
start() {
    local name=$1 port
    shift
    port=$("$B/free_ports" 1)
    bg "$name-ps" "$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$port" --out "$OUT" \
        "${JOB[@]}" "$@"
    PS=$LAST_PID
    bg "$name-w" "$B/loraps-worker" --servers "tcp://127.0.0.1:$port" --model "$TMP/tiny" --rank 0 \
        --quiet --connect-timeout 20
    W=$LAST_PID
}

stop_all() {
    kill -9 "$PS" 2>/dev/null || true
    kill -9 "$W" 2>/dev/null || true
    wait "$PS" 2>/dev/null || true
    wait "$W" 2>/dev/null || true
}

latest_step() { sed -n 's/^  "step": \([0-9]*\),/\1/p' "$OUT/latest/trainer_state.json"; }

check_latest() { # the checkpoint `latest` names is complete and loads
    [ -L "$OUT/latest" ] || fail "$1: no latest link"
    "$B/loraps" inspect "$OUT/latest" >"$TMP/inspect.out" 2>&1 || {
        cat "$TMP/inspect.out"
        fail "$1: latest does not load"
    }
    echo "$1: latest = $(readlink "$OUT/latest"), loads"
}

# -- a kill inside the partial folder
start a
wait_grep "$TMP/a-ps.err" "checkpoint .*checkpoint-2 " 30
for ((i = 0; i < 400; i++)); do
    ls -d "$OUT"/.checkpoint-4.partial >/dev/null 2>&1 && break
    sleep 0.05
done
[ -d "$OUT/.checkpoint-4.partial" ] || fail "the partial folder of checkpoint 4 never appeared"
kill -9 "$PS"
stop_all
[ "$(readlink "$OUT/latest")" = checkpoint-2 ] || fail "latest moved to $(readlink "$OUT/latest")"
[ ! -e "$OUT/checkpoint-4" ] || fail "checkpoint-4 exists although its write was killed"
check_latest "killed while writing checkpoint-4"

# -- a kill after the rename, before `latest` moves (the new folder is complete; latest is the old)
LORAPS_TEST_CHECKPOINT_SLEEP_MS=600 start b --resume latest
wait_grep "$TMP/b-ps.err" "resumed from .*checkpoint-2" 20
caught=0
for ((i = 0; i < 1000; i++)); do
    if [ -d "$OUT/checkpoint-4" ] && [ "$(readlink "$OUT/latest")" = checkpoint-2 ]; then
        kill -9 "$PS"
        caught=1
        break
    fi
    sleep 0.02
done
stop_all
[ -d "$OUT/checkpoint-4" ] || fail "checkpoint-4 was never completed"
[ $caught = 1 ] || echo "note: the window between rename and latest was missed (a loaded machine)"
check_latest "killed between rename and latest"
"$B/loraps" inspect "$OUT/checkpoint-4" >/dev/null || fail "the renamed checkpoint-4 is not complete"

# -- kills at random moments; each time the job resumes from latest
for round in 1 2 3 4; do
    start r$round --resume latest
    wait_grep "$TMP/r$round-ps.err" "all 1 workers joined" 20
    sleep "$((RANDOM % 3)).$((RANDOM % 10))$((RANDOM % 10))"
    stop_all
    check_latest "random kill $round"
done

# -- the job finishes from the last of them, without the sleeps; leftovers are cleaned
LORAPS_TEST_CHECKPOINT_SLEEP_MS=0 start final --resume latest --max-steps "$(($(latest_step) + 6))"
wait_for "$W" 60 || fail "worker failed"
wait_for "$PS" 60 || fail "server failed"
check_latest "after the finishing run"
ls -A "$OUT" | grep -q '^\.checkpoint-' && fail "partial folders left: $(ls -A "$OUT")"
[ "$(ls "$OUT" | grep -c '^checkpoint-')" -le 2 ] || fail "keep_checkpoints 2 not honoured"

# -- corrupt checkpoints: refused by name, nothing changed
GOOD=$OUT/latest/
corrupt() { # NAME FILE COMMAND...: copy the good checkpoint, damage it, resume, expect an error
    local name=$1 file=$2 dir=$TMP/bad_$1
    shift 2
    rm -rf "$dir"
    cp -r "$GOOD" "$dir"
    (cd "$dir" && "$@")
    local before after
    before=$(cd "$dir" && stat -c '%n %s %Y' -- * && cat -- * | md5sum)
    local rc=0
    "$B/loraps-ps" --model "$TMP/tiny" --bind "tcp://127.0.0.1:$("$B/free_ports" 1)" \
        --out "$TMP/out_$name" "${JOB[@]}" --resume "$dir" 2>"$TMP/$name.err" || rc=$?
    [ $rc -eq 1 ] || fail "$name: exit status $rc (expected 1): $(cat "$TMP/$name.err")"
    grep -q "loraps-ps: error: start-up: --resume.*$file" "$TMP/$name.err" ||
        fail "$name: the error does not name $file: $(cat "$TMP/$name.err")"
    grep -q "Sanitizer" "$TMP/$name.err" && fail "$name: sanitizer report"
    after=$(cd "$dir" && stat -c '%n %s %Y' -- * && cat -- * | md5sum)
    [ "$before" = "$after" ] || fail "$name: the checkpoint was changed"
    ls "$TMP/out_$name" 2>/dev/null | grep -q checkpoint && fail "$name: a checkpoint was written"
    "$B/loraps" inspect "$dir" >/dev/null 2>"$TMP/$name.inspect" && fail "$name: inspect accepted it"
    echo "$name: $(grep -o 'error: .*' "$TMP/$name.err" | head -c 220)"
}
corrupt truncated_adapter adapter_model.safetensors truncate -s 700 adapter_model.safetensors
corrupt flipped_optimizer optimizer.safetensors \
    sh -c 'printf "\377" | dd of=optimizer.safetensors bs=1 seek=3000 conv=notrunc 2>/dev/null'
corrupt garbage_state trainer_state.json sh -c 'echo "{not json" > trainer_state.json'
corrupt missing_optimizer optimizer.safetensors rm optimizer.safetensors
corrupt edited_config adapter_config.json sed -i 's/"r": 8/"r": 4/' adapter_config.json
corrupt empty_adapter adapter_model.safetensors truncate -s 0 adapter_model.safetensors
# a folder where no checkpoint was ever completed
mkdir -p "$TMP/nothing/.checkpoint-2.partial"
if "$B/loraps-ps" --model "$TMP/tiny" --out "$TMP/nothing" "${JOB[@]}" --resume latest \
    --bind "tcp://127.0.0.1:$("$B/free_ports" 1)" 2>"$TMP/nothing.err"; then
    fail "resume from a folder without a complete checkpoint was accepted"
fi
grep -q "no checkpoint has been completed" "$TMP/nothing.err" || fail "$(cat "$TMP/nothing.err")"
# A client that is not a shard cannot hand shard 0 a shard's state (it would land in the
# checkpoint): refused, and the job's final checkpoint is still made of the real shards' states.
ports=$("$B/free_ports" 2)
PEERS=""
for p in $ports; do PEERS="$PEERS${PEERS:+,}tcp://127.0.0.1:$p"; done
for k in 0 1; do
    bg spoof-ps$k "$B/loraps-ps" --model "$TMP/tiny" --shard $k --peers "$PEERS" --out "$TMP/spoof" \
        --max-steps 6 --seq-len 16 --micro-batch 2 --quiet
    SP[$k]=$LAST_PID
done
"$B/shard_state_spoof" "${PEERS%%,*}" >"$TMP/spoof.out" || fail "spoofed state: $(cat "$TMP/spoof.out")"
bg spoof-w "$B/loraps-worker" --servers "$PEERS" --model "$TMP/tiny" --rank 0 --quiet
for p in "$LAST_PID" "${SP[@]}"; do wait_for "$p" 60 || fail "the spoofed job failed"; done
check_latest_of() { "$B/loraps" inspect "$1/latest" | grep -q "step .*6 of 6" || fail "no final checkpoint in $1"; }
check_latest_of "$TMP/spoof"
echo "spoofed ShardState: $(cat "$TMP/spoof.out")"
echo "PASS"
