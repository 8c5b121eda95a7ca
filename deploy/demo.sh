#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run the main job, a local
# LoRA fine-tuning job on the embedded demo (no download needed). Extra arguments go to the job.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLORAPS_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"
exec build/bin/loraps run "$@"
