#!/usr/bin/env bash
# old-engine-up.sh - start the "old engine" of the test bed: bookworm's own
# docker.io 20.10.24 (BuildKit v0.8: no MergeOp/DiffOp, `# syntax=` only as a
# `#` comment, API 1.41) on a second socket, for kiln's fallback paths.
#
# The package is not installed: `apt-get download docker.io/bookworm` +
# `dpkg -x` into ${KILN_CACHE:-repo/.cache}/old-docker (its usr/sbin/dockerd
# and the 20.10 client usr/bin/docker). It needs bookworm's containerd, runc
# and tini, installed when missing (the same ones engine-up.sh installs; never
# up- or downgraded here).
#
#   socket    /var/run/kiln-old-docker.sock
#   data      /var/lib/kiln-engine/old-docker, exec root /run/kiln-engine/old-docker
#   pidfile   /run/kiln-engine/old-dockerd.pid, log /var/lib/kiln-engine/old-dockerd.log
#   config    /var/lib/kiln-engine/old-daemon.json
#   containerd  its own managed containerd (same bookworm binary as the new
#             engine's, separate instance, socket under its exec root)
#   network   default (KILN_OLD_NETWORK=none): --bridge=none --iptables=false
#             --ip-forward=false --ip-masq=false; it leaves the host's network
#             and the new engine's iptables alone. There is no bridge network,
#             so a build RUN step fails with "network bridge not found" unless
#             the build runs with `--network=host` (all clients below; buildx
#             then also passes the frontend option force-network-mode=host and
#             the network.host entitlement, which this engine grants). A
#             gateway frontend (`# syntax=IMAGE`) fails to start the same way
#             ("failed to solve with frontend gateway.v0: network bridge not
#             found"), --network=host or not, unless its image carries the
#             label moby.buildkit.frontend.network.none=true.
#             Note: a dockerd with --bridge=none deletes the docker0 link when
#             it starts; that is why engine-up.sh's engine uses its own kiln0.
#             KILN_OLD_NETWORK=bridge: like a stock 20.10 instead, a default
#             bridge network (kiln-old0, 172.19.0.1/16, made here) so RUN
#             steps and frontends need no flag or label; still
#             --iptables=false: this script adds the MASQUERADE/FORWARD rules
#             (comment "kiln-old") and sets net.ipv4.ip_forward=1, so the two
#             engines never edit each other's chains. Switching modes
#             restarts the old engine; with KILN_OLD_NETWORK unset, a running
#             old engine is reused in whatever mode it runs.
#
# Building against it, all verified with a RUN step (Dockerfile built-in
# frontend; python:3.11-slim etc. come from `DOCKER_HOST=... scripts/fixtures.sh`):
#   DOCKER_HOST=unix:///var/run/kiln-old-docker.sock docker build --network=host .
#       (docker 28 CLI: `docker build` is buildx with the docker driver; the
#        API version is negotiated down to 1.41, no DOCKER_API_VERSION needed)
#   DOCKER_HOST=unix:///var/run/kiln-old-docker.sock docker buildx build --network=host .
#   docker --context kiln-old buildx build --network=host .
#   docker buildx build --builder kiln-old --network=host .
#       (docker context "kiln-old", created here, appears as a buildx builder)
#   DOCKER_BUILDKIT=1 DOCKER_HOST=unix:///var/run/kiln-old-docker.sock \
#       .cache/old-docker/usr/bin/docker build --network=host .
#       (the 20.10 client's own BuildKit path, no buildx)
#   `--secret id=...,src=...` with `RUN --mount=type=secret` and
#   `--progress=plain|rawjson` work on all of them.
#
# Timings: cold (download + unpack + start) ~4s, warm ~0.1s.
#
# Usage: scripts/old-engine-up.sh
# Env:   KILN_OLD_NETWORK=none|bridge  (see network above)
# Stop:  scripts/engine-down.sh old   (--purge also deletes its data)
set -euo pipefail

KILN_SCRIPT=old-engine-up
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for arg in "$@"; do
    case $arg in
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done

OD=$KILN_CACHE/old-docker
OLD_DOCKERD=$OD/usr/sbin/dockerd
OLD_CLI=$OD/usr/bin/docker
OLD_CONF=$KILN_OLD_CONF
OLD_CONTEXT=kiln-old
NETWORK_MODE=${KILN_OLD_NETWORK:-}
case $NETWORK_MODE in '' | none | bridge) ;; *) die "KILN_OLD_NETWORK must be none or bridge, not '$NETWORK_MODE'" ;; esac

require_root
engine_lock
T0=$(date +%s)
CODENAME=$(host_codename)
# The mode of the last start (its config), sticky when KILN_OLD_NETWORK is unset.
RUNNING_MODE=$(daemon_json_network "$OLD_CONF")
case $RUNNING_MODE in host) RUNNING_MODE=none ;; '') RUNNING_MODE=none ;; esac
[ -n "$NETWORK_MODE" ] || NETWORK_MODE=$RUNNING_MODE

old_unpacked() {
    [ -x "$OLD_DOCKERD" ] && [ -x "$OLD_CLI" ] &&
        "$OLD_DOCKERD" --version 2>/dev/null | grep -q '^Docker version 20\.10\.'
}

unpack_old_engine() {
    old_unpacked && return 0
    local tmp deb
    mkdir -p "$KILN_CACHE"
    tmp=$(mktemp -d "$KILN_CACHE/old-docker.tmp.XXXXXX")
    log "apt-get download docker.io/$CODENAME (unpacked into $OD, not installed)"
    # APT::Sandbox::User=root: the download dir is root's, not _apt's.
    if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "docker.io/$CODENAME" >/dev/null 2>&1); then
        apt_update_once
        (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "docker.io/$CODENAME" >/dev/null) ||
            { rm -rf "$tmp"; die "apt-get download docker.io/$CODENAME failed"; }
    fi
    deb=$(ls "$tmp"/docker.io_*.deb)
    dpkg -x "$deb" "$tmp/root" || { rm -rf "$tmp"; die "dpkg -x $deb failed"; }
    # usr/bin/docker-init -> tini-static (relative, dangles here): the host's
    # tini package has it.
    ln -sfn /usr/bin/tini-static "$tmp/root/usr/bin/docker-init"
    basename "$deb" >"$tmp/root/PACKAGE"
    rm -rf "$OD"
    mv "$tmp/root" "$OD"
    rm -rf "$tmp"
    old_unpacked || die "unpacked $OLD_DOCKERD does not run"
    log "unpacked $(cat "$OD/PACKAGE")"
}

install_deps() {
    local -a want=()
    # shellcheck disable=SC2207
    want=($(pinned_if_missing "$CODENAME" containerd runc tini))
    if [ "$NETWORK_MODE" = bridge ]; then
        command -v iptables >/dev/null || want+=("iptables/$CODENAME")
        command -v ip >/dev/null || want+=(iproute2)
    fi
    [ "${#want[@]}" -eq 0 ] || apt_install "${want[@]}"
}

# ensure_old_bridge: KILN_OLD_NETWORK=bridge's bridge, address, forwarding
# and NAT rules (idempotent: iptables -C before -A).
ensure_old_bridge() {
    local mtu table spec
    if ! ip link show dev "$KILN_OLD_BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $KILN_OLD_BRIDGE ($KILN_OLD_BRIDGE_CIDR)"
        ip link add name "$KILN_OLD_BRIDGE" type bridge || die "cannot create bridge $KILN_OLD_BRIDGE"
    fi
    if ! ip -4 -o addr show dev "$KILN_OLD_BRIDGE" | grep -q " inet $KILN_OLD_BRIDGE_CIDR "; then
        ip addr add "$KILN_OLD_BRIDGE_CIDR" dev "$KILN_OLD_BRIDGE" ||
            die "cannot give $KILN_OLD_BRIDGE the address $KILN_OLD_BRIDGE_CIDR (in use? set KILN_OLD_BRIDGE_CIDR)"
    fi
    mtu=$(default_route_mtu)
    if [ -n "$mtu" ] && [ "$mtu" -lt 1500 ]; then ip link set dev "$KILN_OLD_BRIDGE" mtu "$mtu"; fi
    ip link set dev "$KILN_OLD_BRIDGE" up
    [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || echo 1 >/proc/sys/net/ipv4/ip_forward
    while read -r table spec; do
        # shellcheck disable=SC2086
        iptables -w -t "$table" -C $spec 2>/dev/null || iptables -w -t "$table" -A $spec ||
            die "iptables -t $table -A $spec failed"
    done < <(old_bridge_rules)
}

start_old_engine() {
    # Any dockerd under our pidfile counts: another checkout (another
    # KILN_CACHE, CI's fresh clone) may have started it from its own copy.
    if pid_alive "$KILN_OLD_PID" dockerd && [ "$RUNNING_MODE" != "$NETWORK_MODE" ]; then
        log "old engine runs with network '$RUNNING_MODE', KILN_OLD_NETWORK=$NETWORK_MODE: restarting it"
        stop_pidfile "$KILN_OLD_PID" dockerd "old dockerd"
    fi
    if pid_alive "$KILN_OLD_PID" dockerd && [ "$NETWORK_MODE" = bridge ]; then
        if ! ip link show dev "$KILN_OLD_BRIDGE" >/dev/null 2>&1; then
            log "bridge $KILN_OLD_BRIDGE is gone under the running old engine: restarting it"
            stop_pidfile "$KILN_OLD_PID" dockerd "old dockerd"
        else
            ensure_old_bridge # NAT rules back after an iptables flush
        fi
    fi
    if pid_alive "$KILN_OLD_PID" dockerd; then
        if ! docker_answers "$KILN_OLD_SOCK"; then
            log "old dockerd (pid $(cat "$KILN_OLD_PID")) runs but does not answer yet; waiting"
            wait_docker "$KILN_OLD_SOCK" "$KILN_OLD_LOG" 60 "$KILN_OLD_PID" ||
                die "old dockerd does not answer on $KILN_OLD_SOCK; run scripts/engine-down.sh old and retry"
        fi
        log "old engine already running (pid $(cat "$KILN_OLD_PID"), $KILN_OLD_SOCK)"
        return
    fi
    docker_answers "$KILN_OLD_SOCK" &&
        die "a docker engine not started by this script answers on $KILN_OLD_SOCK; stop it first"
    mkdir -p "$KILN_OLD_DATA" "$KILN_OLD_EXEC" "$KILN_ENGINE_STATE"
    chmod 711 "$KILN_OLD_DATA"
    local net mtu what
    if [ "$NETWORK_MODE" = bridge ]; then
        ensure_old_bridge
        net="\"bridge\": \"$KILN_OLD_BRIDGE\","
        mtu=$(default_route_mtu)
        if [ -n "$mtu" ] && [ "$mtu" -lt 1500 ]; then net="$net \"mtu\": $mtu,"; fi
        what="bridge $KILN_OLD_BRIDGE"
    else
        net='"bridge": "none",'
        what="no bridge: builds need --network=host"
    fi
    cat >"$OLD_CONF" <<EOF
{
  "data-root": "$KILN_OLD_DATA",
  "exec-root": "$KILN_OLD_EXEC",
  "pidfile": "$KILN_OLD_PID",
  "hosts": ["unix://$KILN_OLD_SOCK"],
  $net
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "features": { "buildkit": true }
}
EOF
    log "starting dockerd 20.10 on $KILN_OLD_SOCK ($what; log $KILN_OLD_LOG)"
    # PATH: its own docker-proxy/docker-init first, then the host's
    # containerd, containerd-shim-runc-v2 and runc.
    daemonize - "$KILN_OLD_LOG" env "PATH=$OD/usr/sbin:$OD/usr/bin:$PATH" \
        "$OLD_DOCKERD" --config-file "$OLD_CONF"
    wait_docker "$KILN_OLD_SOCK" "$KILN_OLD_LOG" 60 "$KILN_OLD_PID" ||
        die "old dockerd did not come up (log: $KILN_OLD_LOG)"
    log "old engine answers (pid $(cat "$KILN_OLD_PID"))"
}

# docker context "kiln-old" (root's ~/.docker): `docker --context kiln-old`,
# and buildx lists it as a docker-driver builder of the same name.
ensure_context() {
    command -v docker >/dev/null || { log "no docker CLI on PATH: skipped the '$OLD_CONTEXT' context"; return 0; }
    if docker context inspect "$OLD_CONTEXT" >/dev/null 2>&1; then
        local h
        h=$(docker context inspect --format '{{.Endpoints.docker.Host}}' "$OLD_CONTEXT" 2>/dev/null || true)
        [ "$h" = "unix://$KILN_OLD_SOCK" ] && return 0
        docker context rm -f "$OLD_CONTEXT" >/dev/null
    fi
    docker context create "$OLD_CONTEXT" --description "kiln old engine (docker 20.10, BuildKit 0.8)" \
        --docker "host=unix://$KILN_OLD_SOCK" >/dev/null
    log "created docker context '$OLD_CONTEXT' (unix://$KILN_OLD_SOCK)"
}

unpack_old_engine
install_deps
start_old_engine
ensure_context
SERVER=$(DOCKER_HOST=unix://$KILN_OLD_SOCK docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null ||
    DOCKER_HOST=unix://$KILN_OLD_SOCK "$OLD_CLI" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')
if [ "$NETWORK_MODE" = bridge ]; then
    log "ready in $(($(date +%s) - T0))s: docker $SERVER on $KILN_OLD_SOCK (bridge $KILN_OLD_BRIDGE)"
else
    log "ready in $(($(date +%s) - T0))s: docker $SERVER on $KILN_OLD_SOCK; build with --network=host"
fi
