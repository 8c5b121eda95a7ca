#!/usr/bin/env bash
# Step time on a slow network: one server and three workers, each on its own host (a network
# namespace, tests/integration/netns.sh), trained once on an unshaped link and once with every
# host's link capped (tc netem: rate and delay; tbf, rate only, where the kernel lacks netem).
# Prints the median step time of both runs and their ratio, and the bytes per step each worker
# moves against the adapter's size. Needs root; run it on a Release build:
#   LORAPS_BIN=build-rel/bin tests/bench/bench_netem.sh [--preset small] [--rate 100mbit]
#       [--delay 20ms] [--steps 40] [--targets c_attn] [--wire-dtype f32]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export LORAPS_BIN=${LORAPS_BIN:-$HERE/../../build/bin}
preset=small rate=100mbit delay=20ms steps=40 targets=c_attn,c_proj,c_fc dtype=f32 r=8
while [ $# -gt 0 ]; do
    case $1 in
    --preset) preset=$2 ;;
    --rate) rate=$2 ;;
    --delay) delay=$2 ;;
    --steps) steps=$2 ;;
    --targets) targets=$2 ;;
    --wire-dtype) dtype=$2 ;;
    --r) r=$2 ;;
    -h | --help)
        sed -n '2,8p' "$0"
        exit 0
        ;;
    *)
        echo "bench_netem: unknown option $1" >&2
        exit 2
        ;;
    esac
    shift 2
done
source "$HERE/../integration/lib.sh"
source "$HERE/../integration/netns.sh"
netns_require_root
command -v python3 >/dev/null || fail "python3 is missing: run deploy/install-deps.sh"
unset LORAPS_THREADS # lib.sh's test setting; a benchmark uses the cores
make_model "$preset" "$TMP/model"
netns_init
netns_host ps 198.18.0.1
for i in 0 1 2; do netns_host "w$i" "198.18.0.1$i"; done
netns_hosts_file "198.18.0.1 loraps-ps-0"
EP=tcp://loraps-ps-0:5555
cores=$(nproc)
threads=$((cores / 3 > 0 ? cores / 3 : 1))

# run NAME: one job; its metrics in $TMP/NAME.jsonl, the workers' stats in $TMP/NAME-w*.json.
run() {
    local name=$1 p pids=()
    bg "$name-ps" ip netns exec "$NETNS_PREFIX-ps" "$B/loraps-ps" --model "$TMP/model" --peers "$EP" \
        --workers 3 --max-steps "$steps" --micro-batch 2 --seq-len 64 --r "$r" \
        --target-modules "$targets" --wire-dtype "$dtype" --threads "$threads" \
        --metrics "$TMP/$name.jsonl" --quiet
    pids+=("$LAST_PID")
    for i in 0 1 2; do
        bg "$name-w$i" ip netns exec "$NETNS_PREFIX-w$i" "$B/loraps-worker" --servers "$EP" \
            --model "$TMP/model" --rank "$i" --stats "$TMP/$name-w$i.json" --quiet
        pids+=("$LAST_PID")
    done
    for p in "${pids[@]}"; do wait_for "$p" 1200 || fail "$name: process $p failed"; done
}

run plain
for h in ps w0 w1 w2; do shaped=$(netns_shape "$h" "$rate" "$delay"); done
run shaped
for h in ps w0 w1 w2; do netns_unshape "$h"; done

python3 - "$TMP" "$preset" "$targets" "$r" "$dtype" "$shaped" "$rate" <<'EOF'
import json, re, statistics, sys
tmp, preset, targets, r, dtype, shaped, rate = sys.argv[1:]
def load(name):
    steps = [json.loads(l) for l in open(f"{tmp}/{name}.jsonl")]
    ms = [s["step_ms"] for s in steps[3:]] or [s["step_ms"] for s in steps]  # skip the warm-up
    w = [json.load(open(f"{tmp}/{name}-w{i}.json")) for i in range(3)]
    per_step = statistics.median(b for x in w for b in x["step_bytes"][1:] or x["step_bytes"])
    compute = sum(x["compute_seconds"] for x in w) / sum(x["steps"] for x in w) * 1000
    return statistics.median(ms), per_step, compute, w[0]["adapter_bytes_f32"]
p_ms, p_bytes, p_comp, adapter = load("plain")
s_ms, s_bytes, s_comp, _ = load("shaped")
m = re.match(r"([0-9.]+)([kmg]?)bit", rate)
bps = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] if m else 0
print(f"bench_netem: GPT-2 {preset}, LoRA r={r} on {targets}, wire {dtype}; 1 server + 3 workers on 4 hosts")
print(f"  adapter                    {adapter} bytes (f32)")
print(f"  shaped link                {shaped}")
print(f"  {'link':<26} {'step ms':>9} {'compute ms':>11} {'bytes/step/worker':>18}")
print(f"  {'unshaped veth':<26} {p_ms:9.1f} {p_comp:11.1f} {p_bytes:18.0f}")
print(f"  {'shaped (every host)':<26} {s_ms:9.1f} {s_comp:11.1f} {s_bytes:18.0f}")
print(f"  step time shaped / unshaped          {s_ms / p_ms:.2f}x")
wire = {"f32": 4, "bf16": 2, "f16": 2}.get(dtype, 4)
print(f"  bytes per step / adapter bytes       {p_bytes / adapter:.2f} "
      f"(a pull and a push in {dtype}: ~{2 * wire / 4:.0f})")
if bps:
    # Each direction of a link is capped on its own; the busiest is the server's way out, which
    # carries every worker's pull (half of a worker's bytes per step).
    wire_ms = 3 * (s_bytes / 2) * 8 / bps * 1000
    print(f"  server egress per step at {rate}: {wire_ms:.1f} ms "
          f"({wire_ms / s_ms * 100:.0f}% of the shaped step)")
EOF
