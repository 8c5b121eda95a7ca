# loraps report on a finished run: report.md with the run's figures and report.png, 1200x800,
# with the three curves' colours drawn; a metrics file with a cut-short last line or a malformed
# line is reported from the lines that can be read, naming the others; nothing readable, no
# metrics file or no gnuplot are clear errors (report.md is still written without gnuplot).
# And the model cards: loraps train's adapter records its steps and final loss.
source "$(dirname "$0")/lib.sh"
PNG="python3 $(dirname "$0")/png_pixels.py"
TRAIN='#1f77b4' VAL='#d62728' RATE='#2ca02c' # report_plot.c's colours

"$B/loraps" run --workers 2 --preset tiny --out "$TMP/run" --max-steps 12 --eval-every 4 \
    --save-every 6 --seq-len 32 >"$TMP/run.out" 2>"$TMP/run.err" || fail "loraps run failed"
"$B/loraps" report "$TMP/run" >"$TMP/report.out" 2>"$TMP/report.err" || fail "loraps report failed"
grep -q "12 steps from .*metrics.jsonl (12 of 12 lines read)" "$TMP/report.out" ||
    fail "report did not read 12 lines"
MD=$TMP/run/report.md
[ -s "$MD" ] && [ -s "$TMP/run/report.png" ] && [ -s "$TMP/run/report.gp" ] || fail "no report files"
# the figures are the metrics file's: the last loss, the validation passes, the job
last_loss=$(tail -n 1 "$TMP/run/metrics.jsonl" | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["loss"])')
grep -q "| final training loss | $last_loss at step 12;" "$MD" || fail "final loss is not $last_loss"
grep -q "| steps | 12 of 12 (12 in the metrics) |" "$MD" || fail "steps"
[ "$(grep -cE '^\| (0|4|8) \| [0-9.]+ \| [0-9.]+ \| [0-9]+ \|$' "$MD")" = 3 ] ||
    fail "expected validation rows after steps 0, 4 and 8"
grep -q "^max_steps 12$" "$MD" && grep -q "checkpoint-12/trainer_state.json" "$MD" ||
    fail "the job's settings are missing"
grep -q "| adapter | LoRA r 8, alpha 16" "$MD" && grep -q "| worker 1 on the wire |" "$MD" ||
    fail "adapter or wire figures missing"
grep -q "12 lines read, all of them" "$MD" || fail "metrics file section"
grep -qF "| TensorBoard | \`tensorboard --logdir $TMP/run/runs\`" "$MD" || fail "no TensorBoard line"
grep -q "| wall time | .* (first to last step) |" "$MD" || fail "wall time not from the lines' times"
# the picture: its size, not blank, each curve drawn
read -r w h colours drawn < <($PNG "$TMP/run/report.png")
[ "$w" = 1200 ] && [ "$h" = 800 ] || fail "report.png is ${w}x$h, expected 1200x800"
python3 -c "import sys; sys.exit(0 if $drawn > 0.01 and $colours > 50 else 1)" ||
    fail "report.png looks blank ($drawn drawn, $colours colours)"
$PNG "$TMP/run/report.png" "$TRAIN" "$VAL" "$RATE" | tail -n 3 >"$TMP/colours"
while read -r c n; do
    [ "$n" -gt 200 ] || fail "curve colour $c has only $n pixels"
done <"$TMP/colours"
# report.gp redraws it alone
(cd "$TMP/run" && gnuplot report.gp) || fail "report.gp does not redraw"

# A cut-short last line (a run killed mid-write): the 11 good lines are reported, line 12 named.
cp -r "$TMP/run" "$TMP/cut"
size=$(stat -c %s "$TMP/cut/metrics.jsonl")
truncate -s $((size - 25)) "$TMP/cut/metrics.jsonl"
"$B/loraps" report "$TMP/cut" >"$TMP/cut.out" 2>"$TMP/cut.err" || fail "report of a cut file failed"
grep -q "metrics.jsonl:12: cut short: the last line has no end" "$TMP/cut.err" ||
    fail "no warning naming line 12"
grep -q "(11 of 12 lines read)" "$TMP/cut.out" || fail "expected 11 of 12 lines read"
grep -q "11 lines read, 1 could not be read and are left out" "$TMP/cut/report.md" &&
    grep -q "^- line 12: cut short" "$TMP/cut/report.md" || fail "report.md does not name line 12"
line11=$(sed -n 11p "$TMP/run/metrics.jsonl" | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["loss"])')
grep -q "| final training loss | $line11 at step 11;" "$TMP/cut/report.md" ||
    fail "the cut report's final loss is not line 11's"
[ "$($PNG "$TMP/cut/report.png" | cut -d' ' -f1,2)" = "1200 800" ] || fail "cut report.png"

# A malformed line in the middle: named, the others read.
sed -i '5s/.*/{"step": 5, "loss": oops}/' "$TMP/cut/metrics.jsonl"
"$B/loraps" report "$TMP/cut" --to "$TMP/elsewhere" >"$TMP/mid.out" 2>"$TMP/mid.err" ||
    fail "report with a bad middle line failed"
grep -q "metrics.jsonl:5: malformed JSON" "$TMP/mid.err" || fail "line 5 not named"
grep -q "(10 of 12 lines read)" "$TMP/mid.out" && [ -s "$TMP/elsewhere/report.png" ] ||
    fail "--to: expected 10 of 12 lines and the files in the other folder"

# Errors: nothing readable, no metrics, no gnuplot.
mkdir -p "$TMP/junk"
printf 'not json\n{"loss": 1}\n' >"$TMP/junk/metrics.jsonl"
expect_fail() { # message command...
    local want=$1 rc=0
    shift
    "$@" >"$TMP/e.out" 2>"$TMP/e.err" || rc=$?
    [ $rc -ne 0 ] || fail "'$*' succeeded"
    grep -q -- "$want" "$TMP/e.err" || { cat "$TMP/e.err"; fail "'$*': expected '$want'"; }
}
expect_fail "no line of it can be read" "$B/loraps" report "$TMP/junk"
grep -q "junk/metrics.jsonl:2: no \"step\"" "$TMP/e.err" || fail "line 2's reason"
expect_fail "loraps report: error: metrics: $TMP/none/metrics.jsonl: No such file" \
    "$B/loraps" report "$TMP/none"
expect_fail "gnuplot is not installed" env PATH=/nonexistent "$B/loraps" report "$TMP/run"
grep -q "(No curves: gnuplot is not installed" "$TMP/run/report.md" ||
    fail "without gnuplot report.md should say why it has no curves"

# Model cards: loraps train's adapter records the steps and the final loss it printed.
"$B/loraps" train --preset tiny --max-steps 3 --seq-len 32 --out "$TMP/trained" >"$TMP/train.out" ||
    fail "loraps train failed"
loss3=$(grep "^step    3/3" "$TMP/train.out" | sed 's/.*| loss \([0-9.]*\) .*/\1/')
CARD=$TMP/trained/README.md
grep -q "^library_name: peft$" "$CARD" && grep -q "| steps | 3 of 3 |" "$CARD" &&
    grep -q "| final training loss | $loss3 |" "$CARD" && grep -q "PeftModel.from_pretrained" "$CARD" ||
    fail "loraps train's model card lacks its steps, final loss $loss3 or how to load it"
[ -s "$TMP/run/README.md" ] && [ -s "$TMP/run/checkpoint-6/README.md" ] ||
    fail "no model card in the run's adapter or checkpoint folder"
grep -q "from_pretrained(base, \"$TMP/run/checkpoint-6\")" "$TMP/run/checkpoint-6/README.md" ||
    fail "the checkpoint's card does not name its folder"
echo "PASS: test_report"
