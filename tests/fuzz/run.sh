#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) into their own build folder and runs
# each for a fixed time on a copy of its committed seed corpus. Prints executions per target;
# exits non-zero if any target crashed, leaked, timed out or broke a harness check. Crash inputs
# are kept in BUILD/crashes/, logs in BUILD/logs/, the grown corpora in BUILD/corpus/.
#
#   tests/fuzz/run.sh                    every target, 10 s each (what CI runs, shorter)
#   tests/fuzz/run.sh -t 600 fuzz_wire   one target for 10 minutes
#   tests/fuzz/run.sh -t 0               each seed and crashes-found input once (regression)
#   options: -t SECONDS per target, -j N targets at once (default 1), -b BUILD folder
#            (default build-fuzz at the top of the tree), -k keep the grown corpus between runs
#            (default: start from the seeds each run, so counts are comparable)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_EACH=10
JOBS=1
BUILD=$SRC/build-fuzz
KEEP=0
while getopts "t:j:b:kh" opt; do
    case $opt in
    t) SECONDS_EACH=$OPTARG ;;
    j) JOBS=$OPTARG ;;
    b) BUILD=$OPTARG ;;
    k) KEEP=1 ;;
    *)
        sed -n '2,14p' "$0"
        exit 2
        ;;
    esac
done
shift $((OPTIND - 1))

CLANG=${CC:-clang}
case $(basename "$CLANG") in clang*) ;; *) CLANG=clang ;; esac
command -v "$CLANG" >/dev/null || {
    echo "fuzz: clang not found (install clang and libclang-rt-14-dev: deploy/install-deps.sh)" >&2
    exit 2
}

# ---- build ------------------------------------------------------------------------------------
t0=$(date +%s)
mkdir -p "$BUILD"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    # -O1 -g without NDEBUG: asserts stay on, stacks stay readable, the build stays quick.
    CC=$CLANG cmake -S "$SRC" -B "$BUILD" -DLORAPS_FUZZ=ON -DLORAPS_TESTS=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >"$BUILD/configure.log" 2>&1 ||
        {
            cat "$BUILD/configure.log" >&2
            exit 2
        }
fi
cmake --build "$BUILD" --target fuzz -j "$(nproc)" >"$BUILD/build.log" 2>&1 || {
    tail -n 40 "$BUILD/build.log" >&2
    echo "fuzz: build failed (log: $BUILD/build.log)" >&2
    exit 2
}
echo "fuzz: built in $(($(date +%s) - t0)) s ($BUILD/fuzz)"

# ---- run --------------------------------------------------------------------------------------
if [ $# -eq 0 ]; then
    set -- $(cd "$BUILD/fuzz" && ls fuzz_* | sort)
fi
mkdir -p "$BUILD/crashes" "$BUILD/logs" "$BUILD/corpus"
# The targets write each input to a file: on tmpfs that is ~50x faster than on disk.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    TMPDIR=$(mktemp -d /dev/shm/loraps-fuzz-run.XXXXXX)
else
    TMPDIR=$(mktemp -d "$BUILD/tmp.XXXXXX")
fi
export TMPDIR # the targets' scratch folders, under this one
trap 'rm -rf "$TMPDIR"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$SRC/tests/fuzz/ubsan.supp}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

run_one() { # target -> writes logs/<target>.log and logs/<target>.rc
    local t=$1 seeds=$SRC/tests/fuzz/corpus/$1 work=$BUILD/corpus/$1 log=$BUILD/logs/$1.log
    local found=$SRC/tests/fuzz/crashes-found/$1
    local dirs=() dict=()
    [ -f "$SRC/tests/fuzz/dict/$1.dict" ] && dict=(-dict="$SRC/tests/fuzz/dict/$1.dict")
    [ -d "$seeds" ] && dirs+=("$seeds")
    [ -d "$found" ] && dirs+=("$found")
    local rc=0
    if [ "$SECONDS_EACH" = 0 ]; then
        local files=()
        for d in "${dirs[@]}"; do for f in "$d"/*; do [ -f "$f" ] && files+=("$f"); done; done
        "$BUILD/fuzz/$t" -timeout=30 -rss_limit_mb=2048 "${files[@]}" >"$log" 2>&1 || rc=$?
    else
        [ $KEEP = 1 ] || rm -rf "$work"
        mkdir -p "$work"
        # New inputs go to the first folder (the working copy); the seeds are only read.
        "$BUILD/fuzz/$t" -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$BUILD/crashes/$t-" "${dict[@]}" "$work" "${dirs[@]}" \
            >"$log" 2>&1 || rc=$?
    fi
    echo $rc >"$BUILD/logs/$t.rc"
}

t1=$(date +%s)
running=0
for t in "$@"; do
    [ -x "$BUILD/fuzz/$t" ] || {
        echo "fuzz: no target $t in $BUILD/fuzz" >&2
        exit 2
    }
    rm -f "$BUILD/logs/$t.rc"
    run_one "$t" &
    running=$((running + 1))
    if [ $running -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

bad=0
printf "%-24s %12s %10s %8s  %s\n" target executions exec/s corpus result
for t in "$@"; do
    log=$BUILD/logs/$t.log
    rc=$(cat "$BUILD/logs/$t.rc" 2>/dev/null || echo 99)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(grep -c '^Executed ' "$log" || true)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    corpus=$(ls "$BUILD/corpus/$t" 2>/dev/null | wc -l)
    if [ "$rc" = 0 ]; then
        result=ok
    else
        bad=1
        result="FAILED (rc $rc): $(grep -m1 -E '^==[0-9]+==ERROR|runtime error|fuzz: check failed|ERROR: libFuzzer' "$log" || echo "see $log")"
    fi
    printf "%-24s %12s %10s %8s  %s\n" "$t" "${execs:-?}" "${speed:--}" "$corpus" "$result"
done
echo "fuzz: ran $# targets (${SECONDS_EACH} s each) in $(($(date +%s) - t1)) s; logs in $BUILD/logs"
if [ $bad = 1 ]; then
    echo "fuzz: FAILED; inputs that crashed: $(ls "$BUILD/crashes" | tr '\n' ' ')" >&2
    exit 1
fi
