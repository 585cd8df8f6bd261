#!/usr/bin/env bash
# engine-check.sh - smoke tests of the real-engine test bed (after
# engine-up.sh, old-engine-up.sh and fixtures.sh on each engine). Each check
# prints PASS/FAIL with its time; the last line is "N passed, N failed" and
# the exit status is non-zero when a check failed.
#
# New engine (/var/run/docker.sock, docker 26.1.5, buildx 0.13.1):
#   run       docker run --rm python:3.11-slim python -c 'import venv, ssl'
#   no-glibc  busybox:latest has no dynamic loader
#   cuda      the nvidia/cuda look-alike prints its banner and runs the command
#   pip       docker buildx build --no-cache --secret id=ca-bundle,src=<host CA bundle>
#             of FROM python:3.11-slim + RUN --mount=type=secret,id=ca-bundle
#             PIP_CERT=/run/secrets/ca-bundle pip install six (bridge network)
#   rawjson   --progress=rawjson gives JSON SolveStatus objects on stderr
#   registry  push to 127.0.0.1:5000, build FROM it and push the result
# Old engine (/var/run/kiln-old-docker.sock, docker 20.10; skipped when down):
#   old-pip   the pip build above with --network=host (docker 28 CLI/buildx)
#   old-cli   DOCKER_BUILDKIT=1 with the 20.10 client, --network=host
#   old-bridge  (KILN_OLD_NETWORK=bridge only) the pip build, no --network
#
# Usage: scripts/engine-check.sh [new|old]...   (default: both)
set -euo pipefail

KILN_SCRIPT=engine-check
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DO_NEW='' DO_OLD=''
for arg in "$@"; do
    case $arg in
        new) DO_NEW=1 ;;
        old) DO_OLD=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done
if [ -z "$DO_NEW$DO_OLD" ]; then DO_NEW=1 DO_OLD=1; fi

CA_BUNDLE=${KILN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (set KILN_CA_BUNDLE)"
OLD_CLI=$KILN_CACHE/old-docker/usr/bin/docker
unset DOCKER_CONTEXT

CTX=$(mktemp -d)
# The images the checks tag, removed at exit (rebuilt with --no-cache on
# every run: left behind they pile up as dangling images).
CHECK_TAGS=(kiln-check/pip-six kiln-check/tiny "$KILN_REGISTRY_ADDR/kiln-check/busybox:latest"
    "$KILN_REGISTRY_ADDR/kiln-check/pushed:latest")
cleanup() {
    local sock
    for sock in "$KILN_NEW_SOCK" "$KILN_OLD_SOCK"; do
        [ -S "$sock" ] || continue
        DOCKER_HOST=unix://$sock timeout 30 docker rmi -f "${CHECK_TAGS[@]}" >/dev/null 2>&1 || true
    done
    rm -rf "$CTX"
}
trap cleanup EXIT
cat >"$CTX/Dockerfile.pip" <<'EOF'
FROM python:3.11-slim
RUN --mount=type=secret,id=ca-bundle PIP_CERT=/run/secrets/ca-bundle pip install --no-cache-dir six && python -c 'import six; print("six", six.__version__)'
EOF
cat >"$CTX/Dockerfile.tiny" <<'EOF'
FROM busybox:latest
RUN echo hello-from-run >/hello && cat /hello
EOF
printf 'FROM %s/kiln-check/busybox:latest\nRUN echo pushed >/pushed\n' "$KILN_REGISTRY_ADDR" >"$CTX/Dockerfile.reg"

PASSED=0 FAILED=0
# check NAME CMD...: run CMD (output in $CTX/NAME.log), PASS/FAIL with time.
check() {
    local name=$1 t0=$SECONDS
    shift
    if "$@" >"$CTX/$name.log" 2>&1; then
        PASSED=$((PASSED + 1))
        log "PASS $name ($((SECONDS - t0))s)"
    else
        FAILED=$((FAILED + 1))
        log "FAIL $name ($((SECONDS - t0))s); last lines:"
        tail -n 15 "$CTX/$name.log" >&2
    fi
}

new_run() { docker run --rm python:3.11-slim python -c 'import venv, ssl, sys; print(sys.version)'; }
new_noglibc() { docker run --rm busybox:latest sh -c 'for f in /lib/ld-linux* /lib64/ld-linux*; do [ -e "$f" ] && exit 1; done; exit 0'; }
new_cuda() {
    local out
    out=$(docker run --rm nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 echo cuda-ok)
    echo "$out"
    grep -q '== CUDA ==' <<<"$out" && grep -q '^cuda-ok$' <<<"$out"
}
new_pip() {
    docker buildx build --progress=plain --no-cache -f "$CTX/Dockerfile.pip" \
        --secret "id=ca-bundle,src=$CA_BUNDLE" -t kiln-check/pip-six "$CTX" &&
        docker run --rm kiln-check/pip-six python -c 'import six'
}
new_rawjson() {
    docker buildx build --progress=rawjson -f "$CTX/Dockerfile.tiny" "$CTX" 2>"$CTX/rawjson.err" >/dev/null
    python3 - "$CTX/rawjson.err" <<'EOF'
import json, sys
s = open(sys.argv[1]).read()
dec, i, n, vertexes = json.JSONDecoder(), 0, 0, 0
while True:
    while i < len(s) and s[i].isspace():
        i += 1
    if i >= len(s):
        break
    obj, i = dec.raw_decode(s, i)
    n += 1
    vertexes += len(obj.get("vertexes") or [])
print(f"{n} JSON status objects, {vertexes} vertex updates")
sys.exit(0 if n and vertexes else 1)
EOF
}
new_registry() {
    docker tag busybox:latest "$KILN_REGISTRY_ADDR/kiln-check/busybox:latest" &&
        docker push "$KILN_REGISTRY_ADDR/kiln-check/busybox:latest" &&
        docker buildx build --progress=plain --no-cache -f "$CTX/Dockerfile.reg" \
            --output "type=image,name=$KILN_REGISTRY_ADDR/kiln-check/pushed:latest,push=true" "$CTX" &&
        curl -fsS "http://$KILN_REGISTRY_ADDR/v2/kiln-check/pushed/tags/list"
}
old_pip() {
    DOCKER_HOST=unix://$KILN_OLD_SOCK docker buildx build --progress=plain --no-cache --network=host \
        -f "$CTX/Dockerfile.pip" --secret "id=ca-bundle,src=$CA_BUNDLE" -t kiln-check/pip-six "$CTX"
}
old_bridge() {
    DOCKER_HOST=unix://$KILN_OLD_SOCK docker buildx build --progress=plain --no-cache \
        -f "$CTX/Dockerfile.pip" --secret "id=ca-bundle,src=$CA_BUNDLE" -t kiln-check/pip-six "$CTX"
}
old_cli() {
    DOCKER_BUILDKIT=1 DOCKER_HOST=unix://$KILN_OLD_SOCK "$OLD_CLI" build --progress=plain --no-cache \
        --network=host -f "$CTX/Dockerfile.tiny" -t kiln-check/tiny "$CTX"
}

if [ -n "$DO_NEW" ]; then
    if docker_answers "$KILN_NEW_SOCK"; then
        export DOCKER_HOST=unix://$KILN_NEW_SOCK
        log "new engine: docker $(docker version --format '{{.Server.Version}}'), $(docker buildx version | cut -d' ' -f1-2)"
        check run new_run
        check no-glibc new_noglibc
        check cuda new_cuda
        check pip new_pip
        check rawjson new_rawjson
        check registry new_registry
        unset DOCKER_HOST
    else
        FAILED=$((FAILED + 1))
        log "FAIL new engine: nothing answers on $KILN_NEW_SOCK (scripts/engine-up.sh)"
    fi
fi
if [ -n "$DO_OLD" ]; then
    if docker_answers "$KILN_OLD_SOCK"; then
        log "old engine: docker $(DOCKER_HOST=unix://$KILN_OLD_SOCK docker version --format '{{.Server.Version}}')"
        check old-pip old_pip
        if DOCKER_HOST=unix://$KILN_OLD_SOCK docker network inspect bridge >/dev/null 2>&1; then
            check old-bridge old_bridge
        else
            log "SKIP old-bridge: the old engine has no bridge (KILN_OLD_NETWORK=none)"
        fi
        if [ -x "$OLD_CLI" ]; then
            check old-cli old_cli
        else
            log "SKIP old-cli: no $OLD_CLI (scripts/old-engine-up.sh unpacks it)"
        fi
    else
        log "SKIP old engine: nothing answers on $KILN_OLD_SOCK (scripts/old-engine-up.sh)"
    fi
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
