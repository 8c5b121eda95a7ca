#!/usr/bin/env bash
# Installs the Debian 12 packages loraps needs, only those missing. Idempotent.
#   deploy/install-deps.sh              build + test dependencies
#   deploy/install-deps.sh --reference  also python3-torch, for regenerating golden vectors
set -euo pipefail

packages=(build-essential cmake pkg-config git
  libzmq3-dev libsodium-dev libprotobuf-c-dev protobuf-c-compiler
  libopenblas-openmp-dev libdnnl-dev libcmocka-dev libjansson-dev libpcre2-dev libmicrohttpd-dev
  libutf8proc-dev libxxhash-dev libisal-dev gnuplot-nox fonts-dejavu-core
  python3 curl iproute2 nodejs
  clang libclang-rt-14-dev libomp-14-dev)
# Debian's nodejs comes without npm (NodeSource's build includes it, and conflicts with Debian's
# npm package): ask for npm only where the command is missing.
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ "${1:-}" = "--reference" ]; then packages+=(python3-torch python3-numpy); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
