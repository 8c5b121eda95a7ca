# Shared by the integration tests: a scratch folder, free ports, a tiny model, and processes
# that are always cleaned up (by their ids) when the test ends, however it ends.
set -euo pipefail
B=${LORAPS_BIN:?set LORAPS_BIN to the bin folder of the build}
TMP=$(mktemp -d /tmp/loraps-test.XXXXXX)
PIDS=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LORAPS_THREADS=1
export LORAPS_CACHE=$TMP/cache # the demo model of loraps run/train

cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ $rc -ne 0 ]; then
        echo "--- test failed (rc $rc); logs in $TMP:"
        for f in "$TMP"/*.err "$TMP"/*.out; do
            [ -f "$f" ] || continue
            echo "--- $f"
            grep -v "^  " "$f" | tail -n 15
        done
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

make_model() { # preset dir
    "$B/loraps" init-model --arch gpt2 --preset "$1" --seed 7 --out "$2" >/dev/null
}

# bg NAME cmd...: starts cmd in the background with NAME.out/.err logs; sets LAST_PID.
bg() {
    local name=$1
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_for PID SECONDS: waits for a process to exit (returns its status), or fails the test.
wait_for() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            return $?
        fi
        sleep 0.1
    done
    fail "process $pid still running after $secs s"
}

# wait_grep FILE PATTERN SECONDS
wait_grep() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "'$2' not in $1 after $3 s"
}
