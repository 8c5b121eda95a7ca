#!/usr/bin/env bash
# The CPU worker's speed on this machine, side by side in one run, at bench_train_step's default
# shape (GPT-2 124M, LoRA r=8 on c_attn, B=4, T=256), all on the same thread count:
#   1. OpenBLAS' own choice of kernels   (LORAPS_BLAS_CORE=keep)
#   2. the core loraps selects           (LORAPS_BLAS_CORE=auto, the default)
#   3. bf16 frozen-weight GEMMs          (LORAPS_CPU_GEMM=bf16; where the CPU and build allow)
#   4. the PyTorch peer, bench_gpt2_torch.py (LoRA on qkv, the same shapes)
# One table: tokens/s, the ratio to the peer and to the CPU's theoretical FMA peak (cores x clock
# measured in the run x FMA lanes x 2; the peer's ratio counts the same FLOPs per step). Then two
# bench_train_step processes side by side: each on all cores, with half the threads each, and
# each on its half of the cores (--share), to measure what splitting the cores does. Run it on a
# Release build:
#   tests/bench/cpu_compare.sh [--bin build/bin] [--threads N] [--repeat R] [--peer FILE]
#                              [--no-pair]
# The peer is looked for at --peer, $LORAPS_PEER, .device/bench_gpt2_torch.py and
# ../shared/peer/bench_gpt2_torch.py. Logs go to $OUT (else a temporary folder).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
bin=${LORAPS_BIN:-$ROOT/build/bin} threads=$(nproc) repeat=1 peer=${LORAPS_PEER:-} pair=1
while [ $# -gt 0 ]; do
    case $1 in
    --bin) bin=$2 && shift ;;
    --threads) threads=$2 && shift ;;
    --repeat) repeat=$2 && shift ;;
    --peer) peer=$2 && shift ;;
    --no-pair) pair=0 ;;
    -h | --help)
        sed -n '2,17p' "$0"
        exit 0
        ;;
    *)
        echo "cpu_compare: unknown option $1" >&2
        exit 2
        ;;
    esac
    shift
done
bench=$bin/bench_train_step
[ -x "$bench" ] || {
    echo "cpu_compare: no $bench: build first (Release)" >&2
    exit 2
}
if [ -z "$peer" ]; then
    for p in "$ROOT/.device/bench_gpt2_torch.py" "$ROOT/../shared/peer/bench_gpt2_torch.py"; do
        [ -f "$p" ] && peer=$p && break
    done
fi
# a Python with torch: $PYTHON, python3, or Debian's own (python3-torch) behind a pyenv
python=""
for p in ${PYTHON:-} python3 /usr/bin/python3; do
    if "$p" -c "import torch" 2>/dev/null; then python=$p && break; fi
done
[ -n "$python" ] || peer=""
logs=${OUT:-$(mktemp -d /tmp/cpu_compare.XXXXXX)}
mkdir -p "$logs"
unset OPENBLAS_CORETYPE LORAPS_BLAS_CORE LORAPS_CPU_GEMM # each run says what it uses
# the bench uses every CPU of its affinity mask: give it exactly `threads`
pin=""
if [ "$threads" != "$(nproc)" ]; then pin="taskset -c 0-$((threads - 1))"; fi

field() { sed -n "s/^  $1 *//p" "$2" | head -1; }
num() { field "$1" "$2" | awk '{print $1}'; }
best() { sort -g | tail -1; }

run_bench() { # name env... -- args...: one bench_train_step run, its log in $logs/name.R.log
    local name=$1 log
    shift
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1") && shift; done
    shift
    log=$logs/$name.$r.log
    if ! env "${envs[@]}" $pin "$bench" "$@" >"$log" 2>&1; then
        echo "cpu_compare: $name failed: $(tail -1 "$log")" >&2
        return 1
    fi
}

echo "cpu_compare: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) CPUs," \
    "$threads threads; logs in $logs"
# the demo model is written once, and the first heavy run warms the machine up
$pin "$bench" --steps 1 >"$logs/warmup.log" 2>&1 || {
    echo "cpu_compare: warm-up failed: $(tail -3 "$logs/warmup.log")" >&2
    exit 1
}
bf16_ok=1
for r in $(seq 1 "$repeat"); do
    run_bench own LORAPS_BLAS_CORE=keep --
    run_bench auto LORAPS_BLAS_CORE=auto --
    if [ $bf16_ok = 1 ] && ! run_bench bf16 LORAPS_BLAS_CORE=auto -- --gemm bf16; then bf16_ok=0; fi
    if [ -n "$peer" ]; then
        $pin "$python" "$peer" lora "$threads" >"$logs/peer.$r.log" 2>&1 ||
            echo "cpu_compare: the peer failed: $(tail -1 "$logs/peer.$r.log")" >&2
    fi
done

tok() { for r in $(seq 1 "$repeat"); do num "tokens\/s" "$logs/$1.$r.log"; done | best; }
peer_tok=""
if [ -n "$peer" ]; then
    peer_tok=$(for r in $(seq 1 "$repeat"); do
        sed -n 's/.*tok_per_s=\([0-9.]*\).*/\1/p' "$logs/peer.$r.log"
    done | best)
fi
auto1=$logs/auto.1.log
gflop=$(num "matmul GFLOP" "$auto1")
tokens=$((4 * 256))
row() { # label tokens/s log
    local fma ratio_peer
    fma=$(awk -v t="$2" -v g="$gflop" -v n=$tokens -v p="$(num "FMA peak" "$3")" \
        'BEGIN {printf "%.2f", g * t / n / p}')
    ratio_peer=$([ -n "$peer_tok" ] && awk -v a="$2" -v b="$peer_tok" 'BEGIN {printf "%.2f", a / b}' || echo "-")
    printf "| %-44s | %8.0f | %7s | %8s |\n" "$1" "$2" "$ratio_peer" "$fma"
}
echo
echo "FMA peak $(field "FMA peak" "$auto1"); sgemm: $(field "sgemm peak" "$auto1")"
echo
printf "| %-44s | %8s | %7s | %8s |\n" configuration "tokens/s" "vs peer" "of FMA"
printf "|%s|%s|%s|%s|\n" "----------------------------------------------" "----------" \
    "---------" "----------"
row "OpenBLAS' own choice ($(num "OpenBLAS core" "$logs/own.1.log"))" "$(tok own)" "$logs/own.1.log"
row "auto-selected core ($(num "OpenBLAS core" "$auto1"))" "$(tok auto)" "$auto1"
if [ $bf16_ok = 1 ]; then
    row "bf16 GEMMs ($(field GEMMs "$logs/bf16.1.log" | sed 's/^bf16 (//; s/)$//'))" "$(tok bf16)" \
        "$logs/bf16.1.log"
else
    printf "| %-44s | %8s | %7s | %8s |\n" "bf16 GEMMs: $(tail -1 "$logs/bf16.1.log" |
        sed 's/.*LORAPS_CPU_GEMM=bf16: //' | cut -c1-60)" - - -
fi
if [ -n "$peer_tok" ]; then
    row "PyTorch peer ($(sed -n 's/^torch \([^ ]*\).*/torch \1/p' "$logs/peer.1.log"))" \
        "$peer_tok" "$auto1"
else
    printf "| %-44s | %8s | %7s | %8s |\n" "PyTorch peer: no script, torch or result" - - -
fi

[ $pair = 1 ] || exit 0
# Two processes side by side: each on all cores (2x oversubscribed); half the threads each,
# unpinned and waiting passively (what loraps run does without shares); each on its half.
pair_run() { # name args-0 args-1 [env...]: the two processes' summed tokens/s
    local name=$1 args0=$2 args1=$3 a b
    shift 3
    env "$@" $pin "$bench" --steps 5 $args0 >"$logs/$name.0.log" 2>&1 &
    a=$!
    env "$@" $pin "$bench" --steps 5 $args1 >"$logs/$name.1.log" 2>&1 &
    b=$!
    wait $a && wait $b || {
        echo "cpu_compare: $name failed" >&2
        return 1
    }
    awk -v x="$(num "tokens\/s" "$logs/$name.0.log")" -v y="$(num "tokens\/s" "$logs/$name.1.log")" \
        'BEGIN {printf "%.0f", x + y}'
}
both=$(pair_run pair-all "" "")
halved=$(pair_run pair-halved "--threads $((threads / 2))" "--threads $((threads / 2))" \
    OMP_WAIT_POLICY=PASSIVE)
half=$(pair_run pair-half "--share 0/2" "--share 1/2")
echo
echo "Two bench_train_step processes side by side (summed tokens/s; one alone: $(tok auto)):"
printf "| %-44s | %8s |\n" "placement" "tokens/s"
printf "|%s|%s|\n" "----------------------------------------------" "----------"
printf "| %-44s | %8s |\n" "each on all $threads CPUs ($((2 * threads)) threads)" "$both"
printf "| %-44s | %8s |\n" "$((threads / 2)) threads each, unpinned, passive wait" "$halved"
printf "| %-44s | %8s |\n" "each on its half (--share I/2)" "$half"
awk -v h="$half" -v b="$both" -v m="$halved" \
    'BEGIN {printf "split / all cores: %.2f; split / half the threads unpinned: %.2f\n", h / b, h / m}'
