#!/usr/bin/env bash
# The GPU check, run ON THE DEVICE MACHINE (one NVIDIA GPU, no registry): builds loraps with the
# CUDA backend, runs the GPU tests (ctest -L gpu), then the benchmarks side by side with the
# HF + PEFT peer on the same GPU, and writes what it saw to $OUT/RESULTS.md (commit it as
# tests/gpu/RESULTS.md). The Debian libraries travel as .deb files in .device/ (see
# ../shared/device/README.md), the peer script as .device/gpu_peft_bench.py.
#
#   tests/gpu/run.sh [tests|bench|all] [peers|no-peers]
set -uo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
peers=${2:-peers}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
log=$OUT/run.log
results=$OUT/RESULTS.md
exec > >(tee -a "$log") 2>&1

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%T)"; }

step "set-up"
bash .device/unpack.sh .device/debs >/dev/null && . .device/env.sh
B=/tmp/loraps-gpu-build
cmake -S . -B $B -DCMAKE_BUILD_TYPE=Release -DLORAPS_CUDA=ON >$OUT/cmake.log 2>&1 ||
    { tail -30 $OUT/cmake.log; exit 1; }
if ! cmake --build $B -j"$(nproc)" >$OUT/build.log 2>&1; then
    grep -E "error|Error" $OUT/build.log | head -30
    exit 1
fi
echo "built $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"

{
    echo "# GPU check: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    echo "nvcc $(nvcc --version | grep -o 'release [0-9.]*')"
    python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' 2>&1
    echo '```'
} >$results

if [ "$what" != bench ]; then
    step "GPU tests"
    export LORAPS_TEST_HAS_GPU=1
    (cd $B && timeout 600 ctest -L gpu --output-on-failure -V >$OUT/gpu_tests.log 2>&1)
    rc=$?
    grep -q "SKIPPED: " $OUT/gpu_tests.log && rc=1 # here a GPU test that did not run is a failure
    (cd $B && timeout 60 ./bin/test_device >>$OUT/gpu_tests.log 2>&1) || rc=1
    {
        echo
        echo "## Tests (ctest -L gpu, and test_device with a GPU): $([ $rc = 0 ] && echo passed || echo FAILED)"
        echo
        echo '```'
        grep -E "^\s+(matmul|layernorm|rmsnorm|attention|gelu|swiglu|residual|rope|encoder|embedding|head|lora|dropout|sums)|^golden|gpu vs cpu|30 steps|peak GPU|\[  (PASSED|FAILED)|\[ +(OK|FAILED|ERROR) +\]|tests passed|FAIL" $OUT/gpu_tests.log
        echo '```'
    } >>$results
    tail -40 $OUT/gpu_tests.log
fi

if [ "$what" != tests ]; then
    step "benchmarks"
    {
        echo
        echo "## Benchmarks: loraps (bench_gpu_step) and HF + PEFT (gpu_peft_bench.py) in this run"
        echo
        echo '```'
    } >>$results
    run_pair() { # model B T: ours, then the peer (eager, and compiled where asked)
        timeout 300 $B/bin/bench_gpu_step "$1" "$2" "$3" 2>&1 | tee -a $OUT/bench.log | grep -E "RESULT|error|cuda:" >>$results
        if [ "$peers" = peers ]; then
            timeout 300 python3 .device/gpu_peft_bench.py "$1" "$2" "$3" 2>&1 | tee -a $OUT/bench.log | grep RESULT >>$results
            if [ "${4:-}" = compile ]; then
                timeout 400 python3 .device/gpu_peft_bench.py "$1" "$2" "$3" compile 2>&1 | tee -a $OUT/bench.log | grep RESULT >>$results
            fi
        fi
    }
    run_pair gpt2-124m 16 1024 ${COMPILE_PEER:-}
    run_pair llama-1b 8 2048
    run_pair llama-8b 2 2048
    echo '```' >>$results
fi
step "done"
cat $results
