# deploy/launch-ssh.sh across test hosts (network namespaces, 198.18.0.0/15): its remote shell is
# `ip netns exec` into the host named (the same contract as ssh: HOST, then one command line for
# a POSIX shell). A job of 1 server and 3 workers on 3 hosts trains to the end and the launcher
# exits 0; a second, long job is stopped with SIGTERM (what Ctrl-C sends it too): every process
# on every host stops, the server checkpoints first, and the launcher exits 130. Needs root.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/netns.sh"
netns_require_root
L=$(cd "$(dirname "$0")/../.." && pwd)/deploy/launch-ssh.sh
make_model tiny "$TMP/tiny"
netns_init
netns_host a 198.18.1.1
netns_host b 198.18.1.2
netns_host c 198.18.1.3

# The "ssh": HOST COMMAND... -> the command line, run by sh in that host's namespace.
cat >"$TMP/netns-ssh" <<EOF
#!/bin/sh
case \$1 in
198.18.1.1) ns=$NETNS_PREFIX-a ;; 198.18.1.2) ns=$NETNS_PREFIX-b ;; 198.18.1.3) ns=$NETNS_PREFIX-c ;;
*) echo "netns-ssh: unknown host \$1" >&2; exit 255 ;;
esac
shift
exec ip netns exec "\$ns" sh -c "\$*"
EOF
chmod +x "$TMP/netns-ssh"
cat >"$TMP/hosts" <<EOF
# the server shares host a with a worker
server 198.18.1.1
worker 198.18.1.1
worker 198.18.1.2 2   # two workers on b
EOF

# Bad input is refused before anything starts.
rc=0
"$L" --hosts "$TMP/hosts" >/dev/null 2>"$TMP/e" || rc=$?
[ $rc = 2 ] && grep -q "launch-ssh: error: --model DIR is required" "$TMP/e" || fail "no clear error without --model"
printf 'server 198.18.1.1\nwroker 198.18.1.2\n' >"$TMP/badhosts"
"$L" --hosts "$TMP/badhosts" --model x 2>"$TMP/e" >/dev/null && fail "a misspelt hosts line was accepted"
grep -q "badhosts:2: 'wroker' is neither server nor worker" "$TMP/e" || fail "no clear hosts-file error: $(cat "$TMP/e")"

# 1. A job to the end.
bg launch1 "$L" --hosts "$TMP/hosts" --model "$TMP/tiny" --out "$TMP/out1" --bin "$B" \
    --ssh "$TMP/netns-ssh" --logs "$TMP/logs1" --metrics-port 9300 -- \
    --max-steps 30 --micro-batch 2 --seq-len 32 --heartbeat-ms 100
wait_for "$LAST_PID" 240 || fail "the launcher exited non-zero: $(tail -5 "$TMP/launch1.err")"
grep -q "^step 30/30 " "$TMP/launch1.out" || fail "the launcher did not show shard 0's progress"
grep -q "every process exited 0" "$TMP/launch1.out" || fail "no clean end reported"
[ -f "$TMP/out1/adapter_model.safetensors" ] || fail "no adapter written"
for r in 0 1 2; do grep -q "joined (rank $r, " "$TMP/logs1/ps-0.log" || fail "rank $r did not join"; done
grep -q "metrics *http://0.0.0.0:9300/" "$TMP/logs1/worker-1.log" &&
    grep -q "metrics *http://0.0.0.0:9301/" "$TMP/logs1/worker-2.log" ||
    fail "two workers on one host did not get distinct metrics ports"
echo "launch-ssh: 1 server + 3 workers on 2 hosts trained to the end"

# 2. A long job, stopped with SIGTERM.
bg launch2 "$L" --hosts "$TMP/hosts" --model "$TMP/tiny" --out "$TMP/out2" --bin "$B" \
    --ssh "$TMP/netns-ssh" --logs "$TMP/logs2" --grace 20 -- \
    --max-steps 100000 --micro-batch 2 --seq-len 32 --heartbeat-ms 100
LP=$LAST_PID
wait_grep "$TMP/launch2.out" "^step 10/" 120
ls /tmp/loraps-launch-*.pid 2>/dev/null | grep -q . || fail "no pid files"
remote_pids=$(cat /tmp/loraps-launch-*.pid | sort -u)
[ "$(echo "$remote_pids" | wc -w)" -ge 4 ] || fail "the launcher's processes did not record their ids"
kill -TERM "$LP"
rc=0
wait_for "$LP" 60 || rc=$?
[ $rc = 130 ] || fail "the launcher exited with $rc after SIGTERM, expected 130"
for p in $remote_pids; do
    if kill -0 "$p" 2>/dev/null && grep -q loraps "/proc/$p/cmdline" 2>/dev/null; then
        fail "process $p still runs after the launcher stopped"
    fi
done
grep -q "stopping every process" "$TMP/launch2.err" || fail "the launcher did not say it stops"
grep -q "stopped by signal 15" "$TMP/logs2/ps-0.log" || fail "the server was not stopped by SIGTERM"
find "$TMP/out2" -name adapter_model.safetensors | grep -q . || fail "the server wrote nothing on SIGTERM"
for r in 0 1 2; do
    grep -q "stopped by signal 15" "$TMP/logs2/worker-$r.log" || fail "worker $r was not stopped cleanly"
done
grep -q "exited with status" "$TMP/launch2.err" && fail "a process exited non-zero: $(cat "$TMP/launch2.err")"
ls /tmp/loraps-launch-*.pid 2>/dev/null | grep -q . && fail "the launcher left its pid files behind"
echo "launch-ssh: SIGTERM stopped every process on every host (workers, then the checkpointing server)"
echo PASS
