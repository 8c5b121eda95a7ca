# Async (ASP) and bounded staleness. Every push is one update: 2 workers x 15 steps = 30 versions,
# and the loss goes down. With --staleness 2 and one worker slowed down (a straggler), the fast
# worker is held back: no push ever runs more than 2 steps ahead of the slowest worker, and the
# server counts the pulls it held. Also with 2 shards (async clipping uses the pushing worker's
# own global norm, which it sends).
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"

# run NAME SHARDS STALENESS DELAY1
run() {
    local name=$1 shards=$2 k=$3 delay=$4 ports peers="" i pids=()
    ports=$("$B/free_ports" "$shards")
    for p in $ports; do peers="$peers${peers:+,}tcp://127.0.0.1:$p"; done
    for ((i = 0; i < shards; i++)); do
        bg "$name-ps$i" "$B/loraps-ps" --model "$TMP/tiny" --shard $i --peers "$peers" \
            --out "$TMP/$name" --workers 2 --mode async --staleness "$k" --max-steps 15 \
            --seq-len 32 --micro-batch 2 --lr 0.01
        pids+=("$LAST_PID")
    done
    bg "$name-w0" "$B/loraps-worker" --servers "$peers" --model "$TMP/tiny" --rank 0
    pids+=("$LAST_PID")
    bg "$name-w1" "$B/loraps-worker" --servers "$peers" --model "$TMP/tiny" --rank 1 \
        --step-delay-ms "$delay"
    pids+=("$LAST_PID")
    for p in "${pids[@]}"; do wait_for "$p" 120 || fail "$name: process $p failed"; done
    grep -q '"version": 30' "$TMP/$name/ps_stats_0.json" || fail "$name: not 30 versions"
    [ -f "$TMP/$name/adapter_model.safetensors" ] || fail "$name: no adapter"
    local first last
    first=$(grep -m1 "^step" "$TMP/$name-ps0.out" | awk '{print $4}')
    last=$(grep "^step" "$TMP/$name-ps0.out" | tail -n1 | awk '{print $4}')
    echo "$name: loss $first -> $last"
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "$name: loss did not go down"
}

run asp 1 0 0
run ssp 1 2 60
spread=$(grep '"max_spread"' "$TMP/ssp/ps_stats_0.json" | tr -dc 0-9)
held=$(grep '"pulls_held_staleness"' "$TMP/ssp/ps_stats_0.json" | tr -dc 0-9)
echo "staleness 2: max spread $spread, pulls held $held"
[ "$spread" -le 2 ] || fail "a push ran $spread steps ahead with staleness 2"
[ "$held" -ge 1 ] || fail "the straggler never held the fast worker back"
run asp_2shards 2 0 0
echo PASS
