#!/usr/bin/env bash
# deploy/Dockerfile cannot be built where no container engine runs, so its correctness is
# checked by construction against this machine (Debian 12, as the image):
#  - every path the build stage COPYs exists, and the build needs nothing else: the stage's
#    cmake commands are run on a copy holding only those paths (with --build; minutes);
#  - every shared library the binaries link directly comes from a package the final stage
#    installs (or from the base image), and every package named exists in Debian 12;
#  - the final stage runs as a non-root user and puts loraps-ps, loraps-worker and loraps on
#    PATH.
# The GPU image (deploy/Dockerfile.cuda: -DLORAPS_CUDA=ON) takes nvcc, the CUDA runtime and cuBLAS
# from NVIDIA's Debian 12 repository: those packages (cuda-*, libcublas*) are not in Debian's
# archive, and the libraries the toolkit provides must come from the matching ones.
# usage: LORAPS_BIN=build/bin tests/k8s/check_dockerfile.sh [--build]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DF=${DOCKERFILE:-$ROOT/deploy/Dockerfile}
B=${LORAPS_BIN:?set LORAPS_BIN to the bin folder of a build}
fail() {
    echo "FAIL: check_dockerfile: $*" >&2
    exit 1
}

stages=$(grep -c '^FROM ' "$DF")
[ "$stages" = 2 ] || fail "expected 2 stages (build, runtime), found $stages"
grep '^FROM ' "$DF" | grep -qv '^FROM debian:12-slim' && fail "every stage must be FROM debian:12-slim"
runtime=$(awk '/^FROM /{n++} n==2' "$DF")
build=$(awk '/^FROM /{n++} n==1' "$DF")

# The packages a stage installs: the words after "install -y --no-install-recommends" up to "&&".
packages() {
    tr '\n' ' ' | sed 's/\\ //g' | grep -o 'install -y --no-install-recommends [^&]*' |
        sed 's/install -y --no-install-recommends//' | tr ' ' '\n' | grep -v '^$' || true
}
rt_pkgs=$(packages <<<"$runtime")
bd_pkgs=$(packages <<<"$build")
[ -n "$rt_pkgs" ] && [ -n "$bd_pkgs" ] || fail "cannot read the stages' package lists"
nvidia_pkg() { [[ $1 == cuda-* || $1 == libcublas* ]]; }
debian_pkgs=$(for p in $rt_pkgs $bd_pkgs; do nvidia_pkg "$p" || echo "$p"; done)
if ! apt-cache show $debian_pkgs >/dev/null 2>&1; then
    for p in $debian_pkgs; do
        apt-cache show "$p" >/dev/null 2>&1 || fail "package $p does not exist in this Debian"
    done
fi
grep -q -- '-dev' <<<"$rt_pkgs" && fail "the runtime stage installs a -dev package"
grep -qE '^(build-essential|cmake|gcc)$' <<<"$rt_pkgs" && fail "the runtime stage installs a compiler"

# Every directly linked library must come from the runtime packages or the base image: the
# programs', and in the GPU image (-DLORAPS_CUDA=ON) the CUDA backend module's too.
base="libc6 libgcc-s1 libpcre2-8-0"
objects="loraps-ps loraps-worker loraps"
if grep -q -- '-DLORAPS_CUDA=ON' <<<"$build"; then
    objects="$objects libloraps_cuda.so"
    grep -q 'libloraps_cuda.so' <<<"$build" || fail "the build stage does not install libloraps_cuda.so"
fi
declare -A checked
for bin in $objects; do
    [ -e "$B/$bin" ] || fail "$B/$bin is missing (build first)"
    grep -q "$bin" <<<"$build" || fail "the build stage does not install $bin"
    for lib in $(readelf -d "$B/$bin" | awk '/NEEDED/{gsub(/[\[\]]/, "", $5); print $5}'); do
        [ -z "${checked[$lib]:-}" ] || continue
        checked[$lib]=1
        case $lib in libasan.so* | libubsan.so*) continue ;; esac # a sanitizer (test) build
        path=$(ldd "$B/$bin" | awk -v l="$lib" '$1 == l {print $3}')
        [ -n "$path" ] || fail "$bin: $lib is not found here"
        case $path in /usr/local/cuda*) # the toolkit's libraries, from NVIDIA's packages
            case $lib in
                libcudart.so*) pkg=cuda-cudart-13-0 ;;
                libcublas.so* | libcublasLt.so*) pkg=libcublas-13-0 ;;
                *) fail "$bin links $lib from the CUDA toolkit, which no known package provides" ;;
            esac
            grep -qx "$pkg" <<<"$rt_pkgs" || fail "$bin links $lib from $pkg, which the runtime stage does not install"
            continue
            ;;
        esac
        real=$(readlink -f "$path")
        pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "$path" 2>/dev/null ||
            dpkg -S "${path/#\/lib\//\/usr\/lib\/}" 2>/dev/null || true)
        pkg=${pkg%%:*}
        [ -n "$pkg" ] || fail "$bin: no Debian package owns $path"
        grep -qx "$pkg" <<<"$rt_pkgs" || grep -qw "$pkg" <<<"$base" ||
            fail "$bin links $lib from $pkg, which the runtime stage does not install"
    done
done
echo "check_dockerfile: every library the binaries link comes from the runtime stage's packages: $(echo $rt_pkgs)"

grep -qE '^USER [1-9][0-9]*(:[1-9][0-9]*)?$' <<<"$runtime" || fail "the runtime stage must end as a numeric non-root USER"
grep -q 'COPY --from=build /out/ /usr/local/bin/' <<<"$runtime" || fail "the binaries are not put on PATH"

# COPY sources of the build stage exist; with --build, build from exactly those.
srcs=$(grep '^COPY ' <<<"$build" | grep -v -- '--from' | sed 's/^COPY //' | awk '{$NF=""; print}')
for s in $srcs; do [ -e "$ROOT/$s" ] || fail "COPY $s: no such path"; done
if [ "${1:-}" = "--build" ]; then
    ctx=$(mktemp -d /tmp/loraps-docker-ctx.XXXXXX)
    trap 'rm -rf "$ctx"' EXIT
    for s in $srcs; do mkdir -p "$ctx/$(dirname "$s")" && cp -r "$ROOT/$s" "$ctx/$(dirname "$s")/"; done
    # The stage's RUN cmake ... line, as the container would run it, in the copied context.
    cmd=$(grep -v '^#' <<<"$build" | tr '\n' ' ' | sed 's/\\ //g' | grep -o 'RUN cmake .*' | sed 's/^RUN //')
    cmd=${cmd//\/out/$ctx\/out}
    echo "check_dockerfile: building a copy of the build context: $cmd"
    (cd "$ctx" && sh -c "$cmd") >"$ctx.log" 2>&1 || {
        tail -20 "$ctx.log"
        fail "the build stage fails on a copy of its context (log: $ctx.log)"
    }
    for bin in loraps-ps loraps-worker loraps; do [ -x "$ctx/out/$bin" ] || fail "no $bin built"; done
    readelf -h "$ctx/out/loraps-ps" >/dev/null
    echo "check_dockerfile: the build stage builds from its COPYs alone"
fi
echo "check_dockerfile: OK"
