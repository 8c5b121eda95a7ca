# CURVE authentication with real processes: `loraps keygen` keys; a server with --curve-dir (and
# one with LORAPS_CURVE_DIR); an intruder with a key that is not in authorized_clients and one
# with no key at all are refused and logged and never join (they give up at --connect-timeout);
# the authorised worker trains, and the adapter is bit-identical to a run without intruders.
# Two shards with keys reach each other (the norm exchange, the final ShardState). A server
# without keys warns that traffic is unauthenticated. Bad key folders are clear errors.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
JOB=(--max-steps 6 --seq-len 16 --micro-batch 2 --workers 1 --lr 0.01 --quiet)

"$B/loraps" keygen --out "$TMP/keys" --clients 2 >/dev/null || fail "keygen failed"
for f in server.pub server.key client-0.pub client-0.key client-1.key authorized_clients; do
    [ -f "$TMP/keys/$f" ] || fail "keygen wrote no $f"
done
[ "$(stat -c %a "$TMP/keys/server.key")" = 600 ] || fail "server.key is not mode 600"
[ "$(stat -c %a "$TMP/keys/client-1.key")" = 600 ] || fail "client-1.key is not mode 600"
[ "$(grep -vc '^#' "$TMP/keys/authorized_clients")" = 2 ] || fail "authorized_clients: not 2 keys"
[ "$(head -c 40 "$TMP/keys/server.pub" | wc -c)" = 40 ] || fail "server.pub is not a Z85 key"
"$B/loraps" keygen --out "$TMP/keys" >/dev/null 2>"$TMP/keygen2.err" && fail "keygen overwrote keys"
grep -q "keys exist already" "$TMP/keygen2.err" || fail "no clear error on existing keys"
# the intruder: the job's server.pub, but its own client key pair
"$B/loraps" keygen --out "$TMP/evil" >/dev/null
cp "$TMP/keys/server.pub" "$TMP/evil/server.pub"

run() { # NAME INTRUDERS(0|1): one server, intruders first, then the authorised worker
    local name=$1 intruders=$2 port ep
    port=$("$B/free_ports" 1)
    ep=tcp://127.0.0.1:$port
    bg "$name-ps" env LORAPS_CURVE_DIR="$TMP/keys" "$B/loraps-ps" --model "$TMP/tiny" --bind "$ep" \
        "${JOB[@]}" --out "$TMP/$name" --metrics-port 0
    local ps=$LAST_PID
    if [ "$intruders" = 1 ]; then
        bg "$name-wrongkey" "$B/loraps-worker" --servers "$ep" --model "$TMP/tiny" --rank 0 \
            --curve-dir "$TMP/evil" --connect-timeout 4
        local bad1=$LAST_PID
        bg "$name-nokey" "$B/loraps-worker" --servers "$ep" --model "$TMP/tiny" --rank 0 \
            --connect-timeout 4
        local bad2=$LAST_PID
        wait_for "$bad1" 30 && fail "the worker with a wrong key was let in"
        wait_for "$bad2" 30 && fail "the worker without a key was let in"
        grep -q "joined" "$TMP/$name-wrongkey.err" && fail "wrong-key worker joined"
        grep -q "joined" "$TMP/$name-nokey.err" && fail "key-less worker joined"
        grep -q "WARNING: no CURVE keys" "$TMP/$name-nokey.err" || fail "no warning in the key-less worker"
        wait_grep "$TMP/$name-ps.err" "auth: refused a client from .*is not in authorized_clients" 5
        wait_grep "$TMP/$name-ps.err" "auth: a connection failed its handshake" 5
        grep -q "worker .* joined" "$TMP/$name-ps.err" && fail "the server let an intruder join"
    fi
    bg "$name-w0" "$B/loraps-worker" --servers "$ep" --model "$TMP/tiny" --rank 0 --quiet \
        --curve-dir "$TMP/keys"
    local w=$LAST_PID
    wait_for "$w" 60 || fail "$name: the authorised worker failed"
    wait_for "$ps" 60 || fail "$name: the server failed"
    grep -q "CURVE: authenticating with .*client-0.key" "$TMP/$name-w0.err" || fail "no key line"
    grep -q "authentication   CURVE" "$TMP/$name-ps.err" || fail "config does not show CURVE"
    grep -q "WARNING: no CURVE" "$TMP/$name-ps.err" && fail "warning although keys are set"
    [ -f "$TMP/$name/adapter_model.safetensors" ] || fail "$name: no adapter"
}
run clean 0
run attacked 1
cmp "$TMP/clean/adapter_model.safetensors" "$TMP/attacked/adapter_model.safetensors" ||
    fail "the intruders changed the adapter"
grep -q "security: [1-9][0-9]* clients refused, [1-9][0-9]* failed handshakes" "$TMP/attacked-ps.err" ||
    fail "refusals not counted"
echo "intruders refused and logged; adapter identical to the run without them"

# two shards with keys: the shard-to-shard sockets authenticate too
ports=$("$B/free_ports" 2)
PEERS=""
for p in $ports; do PEERS="$PEERS${PEERS:+,}tcp://127.0.0.1:$p"; done
for k in 0 1; do
    bg "s2-ps$k" "$B/loraps-ps" --model "$TMP/tiny" --shard $k --peers "$PEERS" "${JOB[@]}" \
        --workers 2 --curve-dir "$TMP/keys" --out "$TMP/s2"
done
P0=${PIDS[-2]} P1=${PIDS[-1]}
bg s2-w0 "$B/loraps-worker" --servers "$PEERS" --model "$TMP/tiny" --rank 0 --quiet --curve-dir "$TMP/keys"
W0=$LAST_PID
bg s2-w1 "$B/loraps-worker" --servers "$PEERS" --model "$TMP/tiny" --rank 1 --quiet --curve-dir "$TMP/keys"
W1=$LAST_PID
for p in $W0 $W1 $P0 $P1; do wait_for "$p" 90 || fail "2 shards with CURVE: process $p failed"; done
grep -q "CURVE: authenticating with .*client-1.key" "$TMP/s2-w1.err" || fail "rank 1 did not use client-1"
[ -f "$TMP/s2/adapter_model.safetensors" ] || fail "2 shards: no adapter"
grep -q "auth: refused" "$TMP/s2-ps0.err" "$TMP/s2-ps1.err" && fail "2 shards: a shard was refused"
echo "2 shards with CURVE: trained to the end"

# without keys: a warning; bad folders: clear errors
port=$("$B/free_ports" 1)
"$B/loraps-ps" --model "$TMP/tiny" --bind tcp://127.0.0.1:$port "${JOB[@]}" --idle-exit 1 \
    >/dev/null 2>"$TMP/nokeys.err" || true
grep -q "WARNING: no CURVE keys .*unauthenticated" "$TMP/nokeys.err" || fail "no unauthenticated warning"
mkdir -p "$TMP/partial" && cp "$TMP/keys/server.key" "$TMP/partial/"
"$B/loraps-ps" --model "$TMP/tiny" --bind tcp://127.0.0.1:$port "${JOB[@]}" --curve-dir "$TMP/partial" \
    >/dev/null 2>"$TMP/partial.err" && fail "a server without authorized_clients started"
grep -q "authorized_clients" "$TMP/partial.err" || fail "no clear error for a missing list"
mkdir -p "$TMP/open" && cp "$TMP/keys/"* "$TMP/open/" && chmod 644 "$TMP/open/server.key"
"$B/loraps-ps" --model "$TMP/tiny" --bind tcp://127.0.0.1:$port "${JOB[@]}" --curve-dir "$TMP/open" \
    >/dev/null 2>"$TMP/open.err" && fail "a world-readable secret key was accepted"
grep -q "readable by everyone" "$TMP/open.err" || fail "no clear error for a world-readable key"
echo "ok" > "$TMP/bogus.key"
mkdir -p "$TMP/bogus" && cp "$TMP/keys/"* "$TMP/bogus/" && echo "not-a-key" >"$TMP/bogus/client-0.key"
"$B/loraps-worker" --servers tcp://127.0.0.1:$port --model "$TMP/tiny" --rank 0 \
    --curve-dir "$TMP/bogus" >/dev/null 2>"$TMP/bogus.err" && fail "a bogus client key was accepted"
grep -q "not a Z85 CURVE key" "$TMP/bogus.err" || fail "no clear error for a bogus key"
echo PASS
