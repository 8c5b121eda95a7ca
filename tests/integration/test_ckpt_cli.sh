# The user's side of checkpoints: loraps run --resume (exact, 2 server shards), Ctrl-C then
# --resume latest, loraps merge, and loraps inspect on every kind of path (and its errors).
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
RUN=("$B/loraps" run --model "$TMP/tiny" --servers 2 --workers 2 --seq-len 32 --micro-batch 2
    --lr 0.01 --lr-scheduler linear --warmup-steps 2 --save-every 4)

# 12 steps in one go, and 4 + (resume from checkpoint-4 in another folder) 8
"${RUN[@]}" --out "$TMP/full" --max-steps 12 >"$TMP/full.out" 2>"$TMP/full.err" || fail "run failed"
"${RUN[@]}" --out "$TMP/part" --max-steps 12 --resume "$TMP/full/checkpoint-4" \
    >"$TMP/part.out" 2>"$TMP/part.err" || fail "run --resume failed"
grep -q "^step 5/12" "$TMP/part.out" || fail "the resumed run did not start at step 5"
grep -q "^step 4/12" "$TMP/part.out" && fail "the resumed run repeated step 4"
cmp "$TMP/full/adapter_model.safetensors" "$TMP/part/adapter_model.safetensors" ||
    fail "loraps run --resume: the adapter differs from the uninterrupted run"
echo "loraps run --resume checkpoint-4: bit-identical after 12 steps"

# Ctrl-C in the middle, then --resume latest in the same folder finishes the job
bg long "${RUN[@]}" --out "$TMP/long" --max-steps 40
wait_grep "$TMP/long.out" "^step 6/" 60
kill -INT "$LAST_PID"
wait_for "$LAST_PID" 30 || fail "loraps run did not stop cleanly"
[ -L "$TMP/long/latest" ] || fail "no checkpoint after Ctrl-C"
STOPPED_AT=$(readlink "$TMP/long/latest")
"${RUN[@]}" --out "$TMP/long" --max-steps 40 --resume latest >"$TMP/long2.out" 2>"$TMP/long2.err" ||
    fail "run --resume latest failed"
grep -q "^step 40/40" "$TMP/long2.out" || fail "the resumed job did not finish"
"${RUN[@]}" --out "$TMP/long_full" --max-steps 40 >/dev/null 2>&1 || fail "run failed"
cmp "$TMP/long/adapter_model.safetensors" "$TMP/long_full/adapter_model.safetensors" ||
    fail "Ctrl-C + resume latest differs from the uninterrupted run"
echo "Ctrl-C, latest was $STOPPED_AT; resume latest: bit-identical"

# merge: a plain HF folder
"$B/loraps" merge --model "$TMP/tiny" --adapter "$TMP/full/latest" --out "$TMP/merged" \
    >"$TMP/merge.out" || fail "merge failed"
[ -f "$TMP/merged/model.safetensors" ] && [ -f "$TMP/merged/config.json" ] || fail "merge wrote no model"
cmp "$TMP/tiny/config.json" "$TMP/merged/config.json" || fail "config.json not copied"
"$B/loraps" merge --model "$TMP/tiny" --adapter "$TMP/full" --out "$TMP/tiny" 2>"$TMP/m.err" &&
    fail "merge into the base model's folder was accepted"
grep -q "another folder" "$TMP/m.err" || fail "unclear error: $(cat "$TMP/m.err")"

# inspect: every kind of path
"$B/loraps" inspect "$TMP/tiny" | grep -q "weights: 1 file(s), .* parameters" || fail "inspect model"
"$B/loraps" inspect "$TMP/full" | grep -q "adapter weights: 8 adapted modules" ||
    fail "inspect adapter: $("$B/loraps" inspect "$TMP/full" | head -30)"
"$B/loraps" inspect "$TMP/full/latest" >"$TMP/i.out" || fail "inspect checkpoint"
grep -q "step .*12 of 12" "$TMP/i.out" && grep -q "optimizer state" "$TMP/i.out" &&
    grep -q "rank 1 .*next step 12 .*next sequence 50" "$TMP/i.out" || fail "inspect checkpoint: $(cat "$TMP/i.out")"
"$B/loraps" inspect "$TMP/full/checkpoint-8/optimizer.safetensors" | grep -q "exp_avg_sq" ||
    fail "inspect file"
mkdir -p "$TMP/ckpts" && cp -r "$TMP/full/checkpoint-8" "$TMP/full/checkpoint-12" "$TMP/ckpts/"
ln -s checkpoint-12 "$TMP/ckpts/latest"
"$B/loraps" inspect "$TMP/ckpts" | grep -q "checkpoint-12 .*step 12  <- latest" || fail "inspect parent"
# errors: exit 1 and the file's name
head -c 100 "$TMP/full/adapter_model.safetensors" >"$TMP/short.safetensors"
"$B/loraps" inspect "$TMP/short.safetensors" 2>"$TMP/e.err" && fail "inspect accepted a truncated file"
grep -q "short.safetensors" "$TMP/e.err" || fail "unclear: $(cat "$TMP/e.err")"
printf '\377' | dd of="$TMP/ckpts/checkpoint-8/adapter_model.safetensors" bs=1 seek=500 conv=notrunc 2>/dev/null
"$B/loraps" inspect "$TMP/ckpts/checkpoint-8" 2>"$TMP/e2.err" && fail "inspect accepted a corrupt checkpoint"
grep -q "checkpoint-8/adapter_model.safetensors: its content does not match" "$TMP/e2.err" ||
    fail "unclear: $(cat "$TMP/e2.err")"
"$B/loraps" inspect "$TMP/ckpts" >"$TMP/p.out" 2>&1 && fail "inspect of a folder with a corrupt checkpoint exited 0"
grep -q "checkpoint-8 .*CORRUPT" "$TMP/p.out" || fail "$(cat "$TMP/p.out")"
"$B/loraps" inspect "$TMP/nowhere" 2>/dev/null && fail "inspect of a missing path exited 0"

# SHA-256: sha256sum -c accepts every checkpoint; merge, generate and eval refuse a damaged one
# by name before reading it
for d in "$TMP"/full/checkpoint-*; do
    (cd "$d" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c fails in $d"
done
cp -r "$TMP/full/checkpoint-12" "$TMP/damaged"
printf '\377' | dd of="$TMP/damaged/adapter_model.safetensors" bs=1 seek=600 conv=notrunc 2>/dev/null
(cd "$TMP/damaged" && sha256sum --status -c SHA256SUMS) && fail "sha256sum -c missed the damage"
printf 'the quick brown fox jumps over the lazy dog\n' >"$TMP/eval.txt"
for cmd in "merge --out $TMP/m2" "generate --prompt hi --max-new 2" "eval --data $TMP/eval.txt --seq-len 8"; do
    read -r -a args <<<"$cmd"
    "$B/loraps" "${args[0]}" --model "$TMP/tiny" --adapter "$TMP/damaged" "${args[@]:1}" \
        >/dev/null 2>"$TMP/damaged.err" && fail "loraps ${args[0]} accepted a damaged checkpoint"
    grep -q "damaged/adapter_model.safetensors: its content does not match the SHA-256" \
        "$TMP/damaged.err" || fail "loraps ${args[0]}: unclear error: $(cat "$TMP/damaged.err")"
done
[ -e "$TMP/m2/model.safetensors" ] && fail "merge wrote a model from a damaged checkpoint"
echo "damaged checkpoint: refused by merge, generate and eval"

# A checkpoint from before SHA-256 (format_version 1, hash64: the one loraps-ps wrote for
# golden/peft_roundtrip) resumes with a note, and the next checkpoint records SHA-256
GOLD=$LORAPS_TEST_DATA/reference/golden
cp -r "$GOLD/peft_roundtrip/ours_checkpoint" "$TMP/legacy"
"$B/loraps" run --model "$GOLD/gpt2_tiny" --servers 2 --workers 2 --seq-len 32 --micro-batch 2 \
    --lr 0.02 --target-modules c_attn,c_proj,c_fc --rank-pattern h.1.mlp.c_fc=4 \
    --alpha-pattern h.0.attn.c_attn=32 --max-steps 22 --resume "$TMP/legacy" --out "$TMP/relegacy" \
    >"$TMP/legacy.out" 2>"$TMP/legacy.err" || fail "resume from a format_version 1 checkpoint failed"
grep -q "^step 21/22" "$TMP/legacy.out" || fail "the legacy resume did not continue at step 21"
grep -rq "note: .*legacy was written before SHA-256" "$TMP/relegacy/logs" || fail "no legacy note"
grep -q '"format_version": 2' "$TMP/relegacy/latest/trainer_state.json" || fail "not format_version 2"
(cd "$TMP/relegacy/latest" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c after resume"
"$B/loraps" merge --model "$GOLD/gpt2_tiny" --adapter "$TMP/legacy" --out "$TMP/legacy_merged" \
    >/dev/null 2>"$TMP/legacy_merge.err" || fail "merge of a legacy checkpoint failed"
grep -q "note: .*written before SHA-256" "$TMP/legacy_merge.err" || fail "merge printed no note"
echo "format_version 1 checkpoint: resumed and merged with a note"
echo "PASS"
