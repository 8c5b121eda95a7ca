# A job's TensorBoard events (OUT/runs, written by shard 0): every step's scalars equal the
# metrics file's (loss, learning rate, gradient norm, live workers, each worker's bytes), the
# validation passes at the steps they saw, the gradient norm the one-process run prints; a
# resumed job adds a second file whose steps replace the first's from its start (one value per
# step, as TensorBoard shows them), and the folders' model cards say what trained them.
source "$(dirname "$0")/lib.sh"
JOB=(--preset tiny --max-steps 8 --eval-every 2 --save-every 2 --seq-len 32)

"$B/loraps" run --workers 2 --servers 2 "${JOB[@]}" --out "$TMP/run" >"$TMP/run.out" \
    2>"$TMP/run.err" || fail "loraps run failed"
[ "$(ls "$TMP/run/runs" | grep -c tfevents)" = 1 ] || fail "expected one event file"
"$B/tb_dump" "$TMP/run/runs" >"$TMP/tb1" || fail "tb_dump: $(cat "$TMP/tb1")"
grep -q "TensorBoard events in $TMP/run/runs/events.out.tfevents." "$TMP/run/logs/ps-0.log" ||
    fail "shard 0 does not log its event file"

# Each scalar against the metrics file, as float32: python reads both.
compare() { # tb_dump-output metrics.jsonl first-step
    python3 - "$@" <<'PY'
import json, struct, sys
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
tb = {}
for line in open(sys.argv[1]):
    if line.startswith("scalar "):
        _, tag, step, value = line.split()
        tb.setdefault((tag, int(step)), []).append(float(value))
bad, n = [], 0
def want(tag, step, value):
    global n
    n += 1
    got = tb.get((tag, step))
    if got is None or len(got) != 1 or abs(got[0] - f32(value)) > 1e-7 * max(1, abs(value)):
        bad.append(f"{tag} at step {step}: events {got}, metrics {value}")
for line in open(sys.argv[2]):
    m = json.loads(line)
    s = m["step"]
    if s < int(sys.argv[3]):
        continue
    want("train/loss", s, m["loss"])
    want("train/learning_rate", s, m["lr"])
    want("train/grad_norm", s, m["grad_norm"])
    want("train/live_workers", s, m["workers"])
    want("train/step_time_ms", s, m["step_ms"])
    want("train/tokens_per_second", s, m["tokens"] / (m["step_ms"] / 1000))
    for rank, b in m["bytes"].items():
        want(f"net/worker_{rank}/bytes_sent", s, b["sent"])
        want(f"net/worker_{rank}/bytes_received", s, b["received"])
    if "val_loss" in m and m["val_step"] >= int(sys.argv[3]) - 1:
        want("eval/loss", m["val_step"], m["val_loss"])
        want("eval/perplexity", m["val_step"], m["val_ppl"])
steps = sorted({k[1] for k in tb if k[0] == "train/loss"})
print(f"{n} values compared, {len(bad)} differ; train/loss at steps {steps}")
for b in bad:
    print("DIFFERS:", b)
sys.exit(1 if bad else 0)
PY
}
compare "$TMP/tb1" "$TMP/run/metrics.jsonl" 1 >"$TMP/cmp1" || fail "events differ: $(cat "$TMP/cmp1")"
grep -q "train/loss at steps \[1, 2, 3, 4, 5, 6, 7, 8\]" "$TMP/cmp1" || fail "$(cat "$TMP/cmp1")"
[ "$(grep -c '^scalar eval/loss ' "$TMP/tb1")" = 4 ] || fail "expected validation at steps 0 2 4 6"
grep -q "^description train/grad_norm: " "$TMP/tb1" || fail "tags carry no description"
grep -q "^scalar train/compute_share 8 0\.[0-9]" "$TMP/tb1" || fail "no compute share in (0, 1)"

# The gradient norm is the one-process run's on the union of the batches (2 workers x 4
# sequences), which loraps train prints to 3 decimals.
"$B/loraps" train "${JOB[@]}" --micro-batch 8 >"$TMP/train.out" || fail "loraps train failed"
for s in 1 4 8; do
    want=$(grep "^step *$s/8 " "$TMP/train.out" | sed 's/.*grad norm \([0-9.]*\) .*/\1/')
    got=$(awk -v s=$s '$1 == "scalar" && $2 == "train/grad_norm" && $3 == s { printf "%.3f", $4 }' "$TMP/tb1")
    [ "$want" = "$got" ] || fail "grad norm at step $s: events $got, loraps train $want"
done

# Resume from the checkpoint at step 4: a second file; steps 5-8 once each, the new run's.
cp "$TMP/run/metrics.jsonl" "$TMP/metrics-first.jsonl"
"$B/loraps" run --workers 2 --servers 2 "${JOB[@]}" --out "$TMP/run" --resume "$TMP/run/checkpoint-4" \
    >"$TMP/resume.out" 2>"$TMP/resume.err" || fail "the resumed run failed"
[ "$(ls "$TMP/run/runs" | grep -c tfevents)" = 2 ] || fail "expected a second event file"
"$B/tb_dump" "$TMP/run/runs" >"$TMP/tb2" || fail "tb_dump after resume"
compare "$TMP/tb2" "$TMP/run/metrics.jsonl" 5 >"$TMP/cmp2" || fail "resumed events: $(cat "$TMP/cmp2")"
grep -q "train/loss at steps \[1, 2, 3, 4, 5, 6, 7, 8\]" "$TMP/cmp2" || fail "$(cat "$TMP/cmp2")"
head -n 4 "$TMP/metrics-first.jsonl" >"$TMP/first4.jsonl"
compare "$TMP/tb2" "$TMP/first4.jsonl" 1 >"$TMP/cmp3" || fail "steps 1-4 lost: $(cat "$TMP/cmp3")"
# the step times say whose step 5 is shown: the resumed run's
new5=$(sed -n 1p "$TMP/run/metrics.jsonl" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["step"], m["step_ms"])')
[ "${new5%% *}" = 5 ] || fail "the resumed metrics do not start at step 5"
awk -v t="${new5#* }" '$2 == "train/step_time_ms" && $3 == 5 { found = 1; if ($4 != t + 0) exit 1 }
    END { exit !found }' "$TMP/tb2" || fail "step 5 is not the resumed run's (step_ms ${new5#* })"

# Model cards: the final adapter and a checkpoint say the steps, workers and losses.
for d in "$TMP/run" "$TMP/run/checkpoint-6"; do
    grep -q "| workers | 2, sync mode" "$d/README.md" && grep -q "| final training loss | " "$d/README.md" ||
        fail "$d/README.md lacks workers or the final loss"
done
grep -q "| steps | 8 of 8 |" "$TMP/run/README.md" && grep -q "| steps | 6 of 8 |" "$TMP/run/checkpoint-6/README.md" ||
    fail "the cards' steps"
last=$(tail -n 1 "$TMP/run/metrics.jsonl" | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["loss"])')
grep -q "| final training loss | $last |" "$TMP/run/README.md" || fail "the card's final loss is not $last"
echo "PASS: test_tensorboard_job"
