#!/usr/bin/env bash
# The README's second command (and CI's): install what is missing, build with AddressSanitizer
# and UBSan, and run the whole test suite with ctest. Its last lines are ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DLORAPS_SANITIZE=ON >/dev/null
cmake --build build-test -j"$(nproc)"
# Sanitizer reports fail the test that triggered them.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LORAPS_CACHE=${LORAPS_CACHE:-$PWD/build-test/cache}
# ctest runs two tests at once on CI's 2 cores: OpenMP threads that busy-wait would then starve
# each other (a 30 s test took 10 min that way); waiting threads sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
cd build-test
# GPU tests (label gpu) need a GPU: tests/gpu/run.sh runs them on one.
exec ctest --output-on-failure --timeout 900 -j2 -LE gpu
