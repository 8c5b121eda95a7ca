# deploy/k8s validated offline against the official Kubernetes schemas (npm: kubernetes-models,
# installed into tests/k8s from its package-lock.json when missing), with the references between
# the objects and every LORAPS_* variable checked against the programs' options; and
# deploy/Dockerfile checked by construction (no container engine here): its runtime packages
# provide every library the binaries link, its COPYs exist, it ends as a non-root user.
source "$(dirname "$0")/lib.sh"
K8S=$(cd "$(dirname "$0")/../k8s" && pwd)
command -v node >/dev/null || fail "node is missing: run deploy/install-deps.sh (nodejs)"
if [ ! -f "$K8S/node_modules/kubernetes-models/package.json" ] || [ ! -f "$K8S/node_modules/yaml/package.json" ]; then
    command -v npm >/dev/null || fail "npm is missing: install npm (Debian: apt-get install npm) to fetch kubernetes-models"
    (cd "$K8S" && npm ci --no-audit --no-fund --loglevel=error) >"$TMP/npm.out" 2>&1 ||
        { cat "$TMP/npm.out"; fail "npm ci in tests/k8s failed (is the npm registry reachable?)"; }
fi
node "$K8S/validate.mjs" "$K8S/../../deploy/k8s" "$B" || fail "deploy/k8s does not validate"
LORAPS_BIN=$B "$K8S/check_dockerfile.sh" || fail "deploy/Dockerfile check"
# The GPU image, against a build with the CUDA backend (where this machine has the toolkit).
if [ -e "$B/libloraps_cuda.so" ]; then
    DOCKERFILE=$K8S/../../deploy/Dockerfile.cuda LORAPS_BIN=$B "$K8S/check_dockerfile.sh" ||
        fail "deploy/Dockerfile.cuda check"
    sed 's/ cuda-cudart-13-0 / /' "$K8S/../../deploy/Dockerfile.cuda" >"$TMP/Dockerfile.cuda.nort"
    DOCKERFILE=$TMP/Dockerfile.cuda.nort LORAPS_BIN=$B "$K8S/check_dockerfile.sh" 2>"$TMP/e" >/dev/null &&
        fail "check_dockerfile accepts a GPU image without the CUDA runtime"
    grep -q "from cuda-cudart-13-0, which the runtime stage does not install" "$TMP/e" ||
        fail "unclear: $(cat "$TMP/e")"
fi
# ... and it catches a runtime stage that lacks a library, or that runs as root.
sed 's/ libmicrohttpd12 / /; s/^      libmicrohttpd12 \\$/      \\/' "$K8S/../../deploy/Dockerfile" >"$TMP/Dockerfile.nolib"
grep -q libmicrohttpd12 "$TMP/Dockerfile.nolib" && fail "could not make the broken Dockerfile"
DOCKERFILE=$TMP/Dockerfile.nolib LORAPS_BIN=$B "$K8S/check_dockerfile.sh" 2>"$TMP/e" >/dev/null &&
    fail "check_dockerfile accepts a runtime stage without libmicrohttpd"
grep -q "libmicrohttpd12, which the runtime stage does not install" "$TMP/e" || fail "unclear: $(cat "$TMP/e")"
sed 's/^USER .*/USER root/' "$K8S/../../deploy/Dockerfile" >"$TMP/Dockerfile.root"
DOCKERFILE=$TMP/Dockerfile.root LORAPS_BIN=$B "$K8S/check_dockerfile.sh" >/dev/null 2>&1 &&
    fail "check_dockerfile accepts USER root"
echo PASS
