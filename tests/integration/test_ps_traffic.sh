# Traffic scales with the adapter: the bytes a worker sends and receives per step (Pull, Params,
# Push, Ack: headers and tensor frames) are within 2% of 2 x the adapter's f32 bytes, and half
# that with wire_dtype bf16. Two workers, two shards, so both exchanges are parallel.
source "$(dirname "$0")/lib.sh"
make_model tiny "$TMP/tiny"

# run NAME WIRE_DTYPE
run() {
    local name=$1 dt=$2 ports peers="" k
    ports=$("$B/free_ports" 2)
    for p in $ports; do peers="$peers${peers:+,}tcp://127.0.0.1:$p"; done
    local pids=()
    for k in 0 1; do
        bg "$name-ps$k" "$B/loraps-ps" --model "$TMP/tiny" --shard $k --peers "$peers" \
            --workers 2 --max-steps 10 --seq-len 16 --micro-batch 2 --wire-dtype "$dt"
        pids+=("$LAST_PID")
    done
    for k in 0 1; do
        bg "$name-w$k" "$B/loraps-worker" --servers "$peers" --model "$TMP/tiny" --rank $k \
            --stats "$TMP/$name-w$k.json"
        pids+=("$LAST_PID")
    done
    for p in "${pids[@]}"; do wait_for "$p" 120 || fail "$name: process $p failed"; done
}

# check NAME FACTOR: every step of every worker within 2% of FACTOR x adapter f32 bytes
check() {
    local name=$1 factor=$2 k
    for k in 0 1; do
        awk -v factor="$factor" -v who="$name rank $k" '
            /"adapter_bytes_f32"/ { split($0, kv, ":"); gsub(/[^0-9]/, "", kv[2]); adapter = kv[2] + 0 }
            /"step_bytes"/ { inside = 1; next }
            inside && /\]/ { inside = 0 }
            inside { gsub(/[^0-9]/, ""); n++; b = $0 + 0; sum += b
                     target = factor * adapter; r = b / target
                     if (r < 0.98 || r > 1.02) { bad++ } }
            END {
                if (n < 5) { print who ": only " n " steps recorded"; exit 1 }
                printf "%s: adapter %d B f32, mean %.1f B per step = %.4f x adapter (target %.1f x)\n",
                       who, adapter, sum / n, sum / n / adapter, factor
                exit bad ? 1 : 0
            }' "$TMP/$name-w$k.json" || fail "$name rank $k: bytes per step off by more than 2%"
    done
}

run f32 f32
run bf16 bf16
check f32 2
check bf16 1
echo PASS
