# loraps run's progress: on a terminal (a pty made by script(1)) one line that updates in place
# with a bar, the validation passes as lines of their own; off a terminal (a file) the line per
# step that logs and CI keep, with no bar and no carriage returns.
source "$(dirname "$0")/lib.sh"
RUN=("$B/loraps" run --workers 2 --preset tiny --max-steps 6 --eval-every 3 --seq-len 32)

# script -c runs the command on a pty; 100 columns, UTF-8 blocks
script -qfec "stty cols 100; LANG=C.UTF-8 ${RUN[*]} --out $TMP/tty" "$TMP/tty.typescript" \
    </dev/null >/dev/null 2>&1 || fail "loraps run on a terminal failed"
T=$TMP/tty.typescript
grep -q $'\r''step 6/6 |█*| 100%  loss ' "$T" &&
    ! grep -q $'\r''step [0-9]/6 |[^|]*| 100%' <(grep -v 'step 6/6' "$T") ||
    { cat -v "$T" | tail -n 5; fail "no full bar at step 6, or a full bar before it"; }
bar4=$(tr '\r' '\n' <"$T" | grep -o '^step 4/6 |[^|]*|  66%  loss [0-9.]*  val [0-9.]* ' |
    sed 's/^step 4\/6 |\([^|]*\)|.*/\1/') || fail "no bar at step 4 with the last validation loss"
full=$(grep -o '█' <<<"$bar4" | wc -l)
width=$(python3 -c 'import sys; print(len(sys.argv[1]))' "$bar4")
python3 -c "import sys; sys.exit(0 if abs($full / $width - 4 / 6) < 1.5 / $width else 1)" ||
    fail "step 4's bar has $full of $width cells full, not two-thirds"
[ "$(tr '\r' '\n' <"$T" | sed 's/\x1b\[K//g' | grep -ac '^step [0-9]/6  val_loss [0-9.]* ppl [0-9.]* (at step [0-9])$')" = 2 ] ||
    { cat -v "$T"; fail "expected the validation passes before step 1 and after step 3 as two lines"; }
grep -qE '^step [0-9]/6  loss' "$T" && fail "a raw step line reached the terminal"
lines=$(tr '\r' '\n' <"$T" | grep -c "^step [0-9]/6 |")
[ "$lines" -ge 5 ] || fail "the bar was drawn $lines times, expected one per step"
# 40 columns: no room for a bar, the figures alone, never wider than the terminal
script -qfec "stty cols 40; ${RUN[*]} --out $TMP/narrow" "$TMP/narrow.typescript" \
    </dev/null >/dev/null 2>&1 || fail "loraps run on a narrow terminal failed"
tr '\r' '\n' <"$TMP/narrow.typescript" | sed 's/\x1b\[K//g' | grep "^step [0-9]/6 " >"$TMP/narrow.lines"
[ -s "$TMP/narrow.lines" ] && ! grep -q '|' "$TMP/narrow.lines" || fail "a bar on a 40-column terminal"
grep -v val_loss "$TMP/narrow.lines" | awk 'length($0) > 39 { exit 1 }' || fail "a progress line wider than 40 columns"

# Not a terminal: one plain line per step.
"${RUN[@]}" --out "$TMP/file" >"$TMP/file.out" 2>"$TMP/file.err" || fail "loraps run to a file"
for s in 1 2 3 4 5 6; do grep -q "^step $s/6  loss" "$TMP/file.out" || fail "no line for step $s"; done
grep -q $'\r' "$TMP/file.out" && fail "carriage returns in the output to a file"
grep -q '|' "$TMP/file.out" && fail "a bar in the output to a file"
echo "PASS: test_progress_bar"
