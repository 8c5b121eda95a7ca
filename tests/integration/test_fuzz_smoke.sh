# Fuzz smoke: builds the libFuzzer targets with clang (their own build folder beside this
# build's bin/, kept between runs so a re-run only rebuilds what changed) and runs every target
# for a few seconds on its committed seed corpus, two at a time. Fails on any crash, leak, UBSan
# report or broken harness check; the log names the input (kept in that folder's crashes/).
# Skipped, with a message, only when clang or its fuzzer runtime is missing.
set -euo pipefail
B=${LORAPS_BIN:?set LORAPS_BIN to the bin folder of the build}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v clang >/dev/null; then
    echo "SKIP: clang is not installed (deploy/install-deps.sh installs it); fuzz targets not run"
    exit 0
fi
probe=$(mktemp -d /tmp/loraps-fuzz-probe.XXXXXX)
trap 'rm -rf "$probe"' EXIT
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
if ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
    echo "SKIP: clang cannot link libFuzzer programs (libclang-rt-14-dev missing?): $(head -n 1 "$probe/err")"
    exit 0
fi
start=$(date +%s)
bash "$SRC/tests/fuzz/run.sh" -t "${LORAPS_FUZZ_SECONDS:-8}" -j 2 -b "$B/../build-fuzz"
echo "fuzz smoke: $(($(date +%s) - start)) s in all"
