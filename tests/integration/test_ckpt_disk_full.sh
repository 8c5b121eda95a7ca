# A checkpoint folder that fills up or turns read-only, for real: a small tmpfs (needs root;
# skipped otherwise) that the test fills with a file, then remounts read-only.
# - save_every checkpoints (no durability asked): each failed write is a clear error naming the
#   cause, training continues with its state in memory, `latest` and the previous checkpoint stay
#   untouched (same bytes), and once there is room again the next checkpoint is written.
# - --durable-every 1 (the user asked for durability): a version that cannot be written is NOT
#   served; the server holds the workers (state in memory), retries every second, and serves it
#   once the disk takes it; the job then finishes with the same adapter as an undisturbed run.
source "$(dirname "$0")/lib.sh"
MNT=$TMP/mnt
mkdir -p "$MNT"
if [ "$(id -u)" != 0 ] || ! mount -t tmpfs -o size=4m tmpfs "$MNT" 2>/dev/null; then
    echo "SKIP: $(basename "$0") needs root to mount a small tmpfs (CI runs it as root)"
    exit 0
fi
umount_mnt() { umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; }
on_exit() { # the processes first (they hold files on the tmpfs), then unmount, then lib's cleanup
    local rc=$? p
    set +e
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    umount_mnt
    (exit $rc)
    cleanup
}
trap on_exit EXIT
make_model tiny "$TMP/tiny"
export OMP_WAIT_POLICY=PASSIVE
JOB=(--max-steps 40 --seq-len 32 --micro-batch 2 --workers 2 --lr 0.01 --heartbeat-ms 100
    --heartbeat-timeout-ms 3000)

run() { # NAME OUT DELAY [ps args]
    local name=$1 out=$2 delay=$3 k
    shift 3
    EP=tcp://127.0.0.1:$("$B/free_ports" 1)
    bg "$name" "$B/loraps-ps" --model "$TMP/tiny" --bind "$EP" "${JOB[@]}" --out "$out" "$@"
    PS=$LAST_PID
    W_PIDS=()
    for k in 0 1; do
        bg "$name-w$k" "$B/loraps-worker" --servers "$EP" --model "$TMP/tiny" --rank $k --quiet \
            --step-delay-ms "$delay"
        W_PIDS+=("$LAST_PID")
    done
}
fill() { dd if=/dev/zero of="$MNT/filler" bs=64k 2>/dev/null || true; }
latest_sums() { (cd "$MNT/$1/latest/" && sha256sum ./*); }

# ---- no durability asked: errors, training goes on, the previous checkpoint untouched
run plain "$MNT/plain" 60 --save-every 5
wait_grep "$TMP/plain.err" "checkpoint .*checkpoint-5 " 60
fill
before=$(latest_sums plain)
wait_grep "$TMP/plain.err" "checkpoint at step 10 failed: .*No space left on device" 60
[ "$(latest_sums plain)" = "$before" ] || fail "the previous checkpoint changed on a full disk"
[ "$(readlink "$MNT/plain/latest")" = checkpoint-5 ] || fail "latest moved on a full disk"
ls -a "$MNT/plain" | grep -q partial && fail "a partial checkpoint folder was left behind"
echo "disk full: clear error, latest still checkpoint-5 with the same bytes"
# read-only
rm -f "$MNT/filler"
mount -o remount,ro "$MNT" || fail "remount ro"
wait_grep "$TMP/plain.err" "checkpoint at step 15 failed: .*Read-only file system" 60
[ "$(latest_sums plain)" = "$before" ] || fail "the previous checkpoint changed on a read-only disk"
echo "read-only: clear error, latest untouched"
mount -o remount,rw "$MNT" || fail "remount rw"
wait_grep "$TMP/plain.err" "checkpoint .*checkpoint-20 " 60
for p in "${W_PIDS[@]}" "$PS"; do wait_for "$p" 120 || fail "plain: $p failed"; done
grep -q "^step 40/40" "$TMP/plain.out" || fail "training did not continue to the end"
[ "$(readlink "$MNT/plain/latest")" = checkpoint-40 ] || fail "no final checkpoint once writable"
echo "room again: checkpoint-20 and the final one written; the job finished"

# ---- --durable-every 1: nothing unwritten is served
run ref "$TMP/ref" 0
for p in "${W_PIDS[@]}" "$PS"; do wait_for "$p" 120 || fail "reference: $p failed"; done
run dur "$MNT/dur" 60 --durable-every 1 --metrics-port 0
wait_grep "$TMP/dur.err" "checkpoint .*checkpoint-8 " 60
fill
wait_grep "$TMP/dur.err" "DURABILITY: version [0-9]* could not be written" 30
held=$(sed -n 's/.*DURABILITY: version \([0-9]*\) could not.*/\1/p' "$TMP/dur.err" | head -1)
sleep 3
last=$(sed -n 's/^step \([0-9]*\)\/.*/\1/p' "$TMP/dur.out" | tail -1)
[ "${last:-0}" -le "$held" ] || fail "training went past version $held, which is not on disk"
grep -q "^step $((held + 1))/" "$TMP/dur.out" && fail "version $((held + 1)) was computed while $held was not durable"
[ "$(readlink "$MNT/dur/latest")" = "checkpoint-$((held - 1))" ] || fail "latest is not the previous durable version"
echo "durable, disk full: version $held held in memory, not served for 3 s; latest stays at $((held - 1))"
rm -f "$MNT/filler"
wait_grep "$TMP/dur.err" "DURABILITY: version $held written on retry" 30
for p in "${W_PIDS[@]}" "$PS"; do wait_for "$p" 120 || fail "durable: $p failed"; done
cmp "$TMP/ref/adapter_model.safetensors" "$MNT/dur/adapter_model.safetensors" ||
    fail "the adapter after the held version differs from an undisturbed run"
grep -q "durable: .*[1-9][0-9]* failed writes" "$TMP/dur.err" || fail "failed writes not counted"
echo "room again: version $held written and served; final adapter identical to the undisturbed run"

# ---- async with --durable-every 1: the other workers' pushes go on a little, but every version
# made meanwhile must reach the disk before anything is served again
run adur "$MNT/adur" 60 --durable-every 1 --mode async
wait_grep "$TMP/adur.err" "checkpoint .*checkpoint-8 " 60
fill
wait_grep "$TMP/adur.err" "DURABILITY: version [0-9]* could not be written" 30
sleep 3
v1=$(grep -c "checkpoint at step .* failed" "$TMP/adur.err")
sleep 2
v2=$(grep -c "checkpoint at step .* failed" "$TMP/adur.err")
grep -q "written; serving\|written on retry" "$TMP/adur.err" && fail "async: served while the disk was full"
latest=$(readlink "$MNT/adur/latest")
rm -f "$MNT/filler"
wait_grep "$TMP/adur.err" "DURABILITY: version [0-9]* written" 30
for p in "${W_PIDS[@]}" "$PS"; do wait_for "$p" 120 || fail "async durable: $p failed"; done
grep -q "finished at version 80" "$TMP/adur.err" || fail "async durable: the job did not finish"
echo "async, disk full: held at $latest (failed writes $v1 -> $v2, retried), then written and finished"
echo PASS
