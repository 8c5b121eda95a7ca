# Real data in distributed jobs: a .jsonl of prompt/completion pairs (loss on the completion
# only, padded layout, a held-out validation split) trains to the same adapter with 1 worker x 2b,
# 2 workers x b (1 and 2 server shards) and the one-process loraps train; the validation loss is
# reported in the progress line and the metrics and agrees across worker counts; a resumed job
# continues the data exactly (bit-identical adapter), across an epoch boundary.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
# 40 records: "after <day>:" -> the next 1..5 days (long ones split into several sequences of
# 16). About 60 train sequences: 12 steps of 8 cross into the second epoch (shuffled anew).
awk 'BEGIN {
    split("monday tuesday wednesday thursday friday saturday sunday", d, " ");
    for (i = 0; i < 40; i++) {
        k = i % 7; n = 1 + (i * 3) % 5;
        c = "";
        for (j = 1; j <= n; j++) c = c " " d[(k + j) % 7 + 1];
        printf("{\"prompt\": \"after %s:\", \"completion\": \"%s\"}\n", d[k + 1], c);
    }
}' >"$TMP/days.jsonl"
DATA=(--data "$TMP/days.jsonl")
JOB=(--max-steps 12 --seq-len 16 --lr 0.01 --max-grad-norm 0.5 --warmup-steps 2 --layout pad
    --val-fraction 0.1 --eval-every 4 --save-every 4)

# run NAME SHARDS WORKERS MICRO [more]
run() {
    local name=$1 shards=$2 workers=$3 micro=$4
    shift 4
    "$B/loraps" run --model "$TMP/tiny" --servers "$shards" --workers "$workers" \
        --micro-batch "$micro" --out "$TMP/$name" "${DATA[@]}" "${JOB[@]}" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" || fail "$name: loraps run failed"
    [ -f "$TMP/$name/adapter_model.safetensors" ] || fail "$name wrote no adapter"
}
run one 1 1 8
run two 1 2 4
run two_2shards 2 2 4
"$B/loraps" train --model "$TMP/tiny" --out "$TMP/train" --micro-batch 8 "${DATA[@]}" "${JOB[@]}" \
    >"$TMP/train.out" 2>"$TMP/train.err" || fail "loraps train failed"
grep -q "data .*days.jsonl: 40 documents, .* padded" "$TMP/two/logs/worker-1.log" ||
    fail "worker 1 did not read the file: $(grep data "$TMP/two/logs/worker-1.log")"
for x in two two_2shards train; do
    "$B/adapter_diff" "$TMP/one/adapter_model.safetensors" "$TMP/$x/adapter_model.safetensors" 1e-5 ||
        fail "1 worker x 2b vs $x differ"
done
echo "file data: 1 x 2b = 2 x b (1 and 2 shards) = loraps train"

# Validation every 4 steps: in the progress line and the metrics, the same for 1 and 2 workers
val_at() { # FILE STEP -> the val_loss of the pass at that step
    sed -n "s/.*val_loss \([0-9.]*\) .*(at step $2).*/\1/p" "$1" | head -1
}
for s in 0 4 8; do
    a=$(val_at "$TMP/one.out" $s) b=$(val_at "$TMP/two.out" $s) c=$(val_at "$TMP/train.out" $s)
    [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] || fail "no validation at step $s: '$a' '$b' '$c'"
    awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { d1 = a - b; d2 = a - c; if (d1 < 0) d1 = -d1;
        if (d2 < 0) d2 = -d2; exit !(d1 <= 2e-4 && d2 <= 2e-4) }' ||
        fail "validation at step $s: 1 worker $a, 2 workers $b, loraps train $c"
done
grep -q '"val_loss":' "$TMP/two/metrics.jsonl" && grep -q '"val_ppl":' "$TMP/two/metrics.jsonl" ||
    fail "no validation in the metrics"
[ "$(grep -c '"val_loss":' "$TMP/two/metrics.jsonl")" = 3 ] || fail "expected 3 validation passes"
first=$(val_at "$TMP/two.out" 0) last=$(val_at "$TMP/two.out" 8)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "validation loss did not fall: $first -> $last"
grep -q "^final | val_loss" "$TMP/train.out" || fail "loraps train: no final validation"
# the final adapter's validation loss: loraps run computes it after the job, as loraps train does
a=$(sed -n 's/^loraps run: after: validation loss \([0-9.]*\) .*/\1/p' "$TMP/two.out")
b=$(sed -n 's/^final | val_loss \([0-9.]*\) .*/\1/p' "$TMP/train.out")
[ -n "$a" ] && [ -n "$b" ] || fail "no final validation loss: run '$a', train '$b'"
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-3) }' ||
    fail "final validation: loraps run $a, loraps train $b"
echo "validation: $first -> $last, the same with 1 and 2 workers and loraps train"

# Resume from checkpoint-4 (2 workers): the data continues exactly, into the second epoch
run part 1 2 4 --resume "$TMP/two/checkpoint-4"
grep -q "^step 5/12" "$TMP/part.out" || fail "the resumed run did not start at step 5"
cmp "$TMP/two/adapter_model.safetensors" "$TMP/part/adapter_model.safetensors" ||
    fail "resume with file data: the adapter differs from the uninterrupted run"
echo "resume from checkpoint-4 with file data: bit-identical"
# ... and resuming it on other data is refused (the saved positions would mean other sequences)
head -n 30 "$TMP/days.jsonl" >"$TMP/other.jsonl"
"$B/loraps" run --model "$TMP/tiny" --workers 2 --micro-batch 4 --out "$TMP/part2" \
    --data "$TMP/other.jsonl" "${JOB[@]}" --resume "$TMP/two/checkpoint-4" >"$TMP/part2.out" \
    2>"$TMP/part2.err" && fail "resume on other data accepted"
grep -q "trains on other data than the checkpoint's" "$TMP/part2.err" ||
    fail "unclear: $(cat "$TMP/part2.err")"

# Bad settings are refused with a clear message before anything trains
"$B/loraps" run --model "$TMP/tiny" --out "$TMP/bad" --layout packed "${DATA[@]}" 2>"$TMP/bad.err" &&
    fail "layout packed accepted"
grep -q "layout" "$TMP/bad.err" || fail "unclear: $(cat "$TMP/bad.err")"
"$B/loraps" run --model "$TMP/tiny" --out "$TMP/bad2" --workers 1 --max-steps 2 --eval-every 1 \
    "${DATA[@]}" >"$TMP/bad2.out" 2>"$TMP/bad2.err" && fail "eval_every without validation data accepted"
grep -q "eval_every: needs validation data" "$TMP/bad2.err" || fail "unclear: $(cat "$TMP/bad2.err")"
# bad data: the worker's error (file and line) reaches the terminal
printf '{"text": "fine"}\n{"text": broken\n' >"$TMP/broken.jsonl"
"$B/loraps" run --model "$TMP/tiny" --out "$TMP/bad3" --workers 1 --max-steps 2 \
    --data "$TMP/broken.jsonl" >"$TMP/bad3.out" 2>"$TMP/bad3.err" && fail "broken data accepted"
grep -q "worker-0 exited with status 1 .*broken.jsonl:2" "$TMP/bad3.err" ||
    fail "unclear: $(cat "$TMP/bad3.err")"

# A worker with other data is refused: the ranks' shares would not partition one dataset
EP=tcp://127.0.0.1:$("$B/free_ports" 1)
bg dps "$B/loraps-ps" --model "$TMP/tiny" --bind "$EP" --out "$TMP/diff" --workers 2 \
    --max-steps 50 --seq-len 16 --layout pad
bg dw0 "$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank 0 --data "$TMP/days.jsonl"
bg dw1 "$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank 1 --data "$TMP/other.jsonl"
wait_grep "$TMP/dps.err" "ERR_JOB: rank . trains on other data than rank ." 60
for ((i = 0; i < 100; i++)); do
    grep -q "loraps-worker: error: .*trains on other data" "$TMP/dw0.err" "$TMP/dw1.err" && break
    sleep 0.1
done
grep -q "loraps-worker: error: .*trains on other data" "$TMP/dw0.err" "$TMP/dw1.err" ||
    fail "the worker with other data did not stop with a clear error"
echo "a worker with other data: refused"

# The main demo's text task (on tiny here, for time): the data written into the output folder,
# validation passes, and greedy samples before and after
"$B/loraps" run --task text --preset tiny --workers 1 --out "$TMP/text" --max-steps 4 \
    --eval-every 2 >"$TMP/text.out" 2>"$TMP/text.err" || fail "loraps run --task text failed"
[ -s "$TMP/text/demo-text.txt" ] && [ -s "$TMP/text/demo-job.json" ] || fail "no task files"
for p in "before: the base model" "thursday friday |" "val_loss .* (at step 2)" \
    "after: validation loss" "before: validation loss" "after: the adapter"; do
    grep -q "$p" "$TMP/text.out" || fail "loraps run --task text: no '$p' in $(cat "$TMP/text.out")"
done
grep -q '"max_steps": 4' "$TMP/text/demo-job.json" && fail "a flag was written into the job file"
grep -q "^step 4/4" "$TMP/text.out" || fail "the flags did not override the task's settings"
echo "PASS"
