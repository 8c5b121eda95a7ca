#!/usr/bin/env bash
# Tokenizer encode MB/s of this tree against an older one, measured in the same run: this tree's
# bench_tokenizer.c is built against the older tree's libraries too, and the two binaries run
# alternately on the same generated text, best of 5 each.
#
#   tests/bench/bench_tokenizer_vs.sh [REV] [MB]
#
# REV defaults to the last commit with the hand-made NFC tables (common/text/tokenizer_nfc.c),
# so the ratio is utf8proc's NFC over theirs. Runs: qwen2 (NFC normalizer) on the ASCII text and
# on the multilingual one, llama3 (no normalizer) as the control. Needs a build of this tree in
# build/ (or LORAPS_BIN); builds REV in a temporary folder (a few minutes on 2 cores).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REV=${1:-$(git -C "$ROOT" log -1 --format=%H --diff-filter=D -- common/text/tokenizer_nfc.c)^}
MB=${2:-8}
NEW=${LORAPS_BIN:-$ROOT/build/bin}/bench_tokenizer
GOLD=$ROOT/tests/reference/golden/tokenizers
[ -x "$NEW" ] || { echo "bench_tokenizer_vs: $NEW is missing: build this tree first" >&2; exit 1; }

WORK=$(mktemp -d /tmp/loraps_bench_vs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tree"
git -C "$ROOT" archive "$REV" | tar -x -C "$WORK/tree"
cp "$ROOT/tests/bench/bench_tokenizer.c" "$WORK/tree/tests/bench/"
echo "building bench_tokenizer at $(git -C "$ROOT" rev-parse --short "$REV") ..."
cmake -S "$WORK/tree" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLORAPS_TESTS=OFF >"$WORK/cmake.log" 2>&1 ||
    { cat "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$WORK/build" -j2 --target bench_tokenizer >"$WORK/build.log" 2>&1 ||
    { tail -30 "$WORK/build.log" >&2; exit 1; }
OLD=$WORK/build/bin/bench_tokenizer

mbs() { # BINARY RUN: the encode MB/s it prints
    "$1" "$MB" "$GOLD" only "$2" | awk -v n="$2" '$1 == n {print $2}'
}
best() { printf '%s\n' "$@" | sort -g | tail -1; }

printf '%-12s %10s %10s %8s\n' run "before" "after" "after/before"
for run in qwen2 qwen2-multi llama3; do
    old=() new=()
    for rep in 1 2 3 4 5; do
        old+=("$(mbs "$OLD" "$run")")
        new+=("$(mbs "$NEW" "$run")")
    done
    o=$(best "${old[@]}") n=$(best "${new[@]}")
    printf '%-12s %7s MB/s %7s MB/s %8.3f\n' "$run" "$o" "$n" "$(echo "$n / $o" | bc -l)"
done
