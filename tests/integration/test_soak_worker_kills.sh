# Soak, bounded in time (LORAPS_SOAK_SECONDS, default 40): workers are killed with -9 at random
# moments (mid-compute, mid-push, mid-pull, right after joining) and restarted, in a loop, with
# 2 server shards in sync mode, and for a shorter while in async mode. The servers never crash,
# every rank rejoins, the job finishes, and the adapter is finite.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"
export OMP_WAIT_POLICY=PASSIVE
SOAK=${LORAPS_SOAK_SECONDS:-40}
RANDOM=${LORAPS_SOAK_SEED:-12345}

soak() { # MODE SECONDS STEPS
    local mode=$1 secs=$2 steps=$3 k
    local ports PEERS="" PS=() W=() WNAME=() kills=0 restarts=0
    ports=$("$B/free_ports" 2)
    for p in $ports; do PEERS="$PEERS${PEERS:+,}tcp://127.0.0.1:$p"; done
    for k in 0 1; do
        bg "$mode-ps$k" "$B/loraps-ps" --model "$TMP/tiny" --shard $k --peers "$PEERS" --workers 3 \
            --max-steps "$steps" --seq-len 16 --micro-batch 2 --lr 0.01 --mode "$mode" \
            --heartbeat-ms 100 --heartbeat-timeout-ms 800 --out "$TMP/$mode" --quiet
        PS+=("$LAST_PID")
    done
    start_worker() { # RANK
        bg "$mode-w$1-$restarts" "$B/loraps-worker" --servers "$PEERS" --model "$TMP/tiny" --rank "$1" \
            --quiet --step-delay-ms $((RANDOM % 40)) --connect-timeout 15
        W[$1]=$LAST_PID
        WNAME[$1]=$mode-w$1-$restarts
    }
    for k in 0 1 2; do start_worker $k; done
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ] && ! grep -q "finished at version" "$TMP/$mode-ps0.err"; do
        sleep "0.$((RANDOM % 9 + 1))"
        for k in 0 1; do kill -0 "${PS[$k]}" 2>/dev/null || break 2; done
        k=$((RANDOM % 3))
        kill -9 "${W[$k]}" 2>/dev/null && kills=$((kills + 1))
        wait "${W[$k]}" 2>/dev/null || true
        # sometimes back at once (same rank replaces its old membership), sometimes after the
        # servers dropped it (a sync step then completes with the live workers)
        [ $((RANDOM % 3)) = 0 ] && sleep 1
        restarts=$((restarts + 1))
        start_worker $k
    done
    local took=$((SECONDS - end + secs))
    grep -q "finished at version" "$TMP/$mode-ps0.err" && echo "$mode: the job ended within the soak"
    for k in 0 1; do
        if ! kill -0 "${PS[$k]}" 2>/dev/null && ! grep -q "finished at version" "$TMP/$mode-ps$k.err"; then
            wait "${PS[$k]}" && true
            fail "$mode: server $k died during the soak (status $?)"
        fi
    done
    for k in 0 1 2; do
        wait_for "${W[$k]}" 180 && continue
        # a worker restarted just as the job ended finds no server left, or a finished job
        grep -q "no Welcome\|finished" "$TMP/${WNAME[$k]}.err" &&
            grep -q "finished at version" "$TMP/$mode-ps0.err" && continue
        fail "$mode: worker $k failed after the soak"
    done
    for k in 0 1; do wait_for "${PS[$k]}" 60 || fail "$mode: server $k failed"; done
    local versions=$steps # async: a version per push, max_steps per rank
    [ "$mode" = async ] && versions=$((steps * 3))
    grep -q "finished at version $versions" "$TMP/$mode-ps0.err" || fail "$mode: the job did not finish"
    "$B/loraps" inspect "$TMP/$mode/adapter_model.safetensors" >"$TMP/$mode-inspect.out" ||
        fail "$mode: the adapter does not read back"
    grep -q "NON-FINITE" "$TMP/$mode-inspect.out" && fail "$mode: non-finite values in the adapter"
    grep -q "AddressSanitizer\|runtime error" "$TMP"/$mode-ps*.err && fail "$mode: sanitizer report in a server"
    echo "$mode: $kills workers killed -9 and restarted in ${took} s; servers up throughout; finished at version $versions; adapter finite"
}
# about 35 steps/s undisturbed here: the kills end before the job does
soak sync "$SOAK" $((SOAK * 25))
soak async $((SOAK / 2)) $((SOAK * 10))
echo PASS
