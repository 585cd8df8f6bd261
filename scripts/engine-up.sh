#!/usr/bin/env bash
# engine-up.sh - start the real-engine test bed: a docker 26.1.5 engine
# (BuildKit v0.13, MergeOp/DiffOp) with buildx 0.13.1, and a local registry.
#
# What it sets up (idempotent: whatever is installed and running is reused, a
# warm run takes a second or two):
#   packages  Debian trixie's docker.io (26.1.5) and docker-buildx (0.13.1),
#             installed onto bookworm next to bookworm's containerd (1.6.20),
#             runc (1.1.5), tini and iptables. The trixie source
#             (/etc/apt/sources.list.d/kiln-trixie.sources, same mirror as the
#             host's bookworm one) is pinned to priority 100
#             (/etc/apt/preferences.d/kiln-trixie), so nothing else moves to
#             trixie. Maintainer scripts start no service (policy-rc.d).
#             Also docker-registry (bookworm, 2.8.2).
#   engine    dockerd on /var/run/docker.sock (a plain `docker` reaches it),
#             data root /var/lib/kiln-engine/docker, exec root
#             /run/kiln-engine/docker, pidfile /run/kiln-engine/dockerd.pid,
#             log /var/lib/kiln-engine/dockerd.log, config
#             /var/lib/kiln-engine/daemon.json (/etc/docker/daemon.json is not
#             read). dockerd runs its own managed containerd (socket
#             /run/kiln-engine/docker/containerd/containerd.sock, CRI plugin
#             off), so a system containerd, if any, is left alone.
#             Images live in containerd (features.containerd-snapshotter):
#             only then does BuildKit in dockerd have MergeOp/DiffOp.
#             Storage driver overlay2 (the engine falls back to what the
#             backing filesystem supports), cgroupfs cgroup driver.
#   network   RUN steps of builds use the engine's default bridge network, so
#             pip/apt inside a build reach the package registries with no
#             flag: NAT through iptables (iptables-nft), MTU of the
#             default-route interface. The bridge is our own kiln0
#             (172.18.0.1/16, made here; KILN_ENGINE_BRIDGE,
#             KILN_ENGINE_BRIDGE_CIDR), not docker0: a dockerd started with
#             --bridge=none, as the old engine is, deletes docker0 when it
#             starts, which breaks every bridge container of this engine.
#             KILN_ENGINE_NETWORK=host starts the engine with --bridge=none
#             --iptables=false instead (for a machine where the bridge cannot
#             work); builds then need `--network=host`.
#   registry  docker-registry on 127.0.0.1:5000 only, storage
#             /var/lib/kiln-engine/registry, config
#             /var/lib/kiln-engine/registry.yml. Loopback registries are
#             insecure-trusted by the engine by default (plain http).
#   buildx    /usr/libexec/docker/cli-plugins/docker-buildx, which the docker
#             CLI (/usr/local/bin/docker 28, or trixie's docker-cli when no CLI
#             is on PATH) finds; the default builder (docker driver) is made
#             current, so `docker build` / `docker buildx build` build on this
#             engine.
# Nothing listens on anything but loopback and the unix sockets (checked).
# Timings (2 cores): cold, nothing installed ~20-23s (apt ~16s); engine
# stopped but installed ~3s; warm (all running) ~0.2s.
#
# Usage: scripts/engine-up.sh
# Env:   KILN_ENGINE_NETWORK=bridge|host  (default: as last started, else
#                                        bridge; a change restarts the engine)
#        KILN_DEBIAN_MIRROR=<url>  apt mirror for the trixie source (default:
#                                  the host's bookworm mirror)
# Stop:  scripts/engine-down.sh  (--purge also deletes images and data)
set -euo pipefail

KILN_SCRIPT=engine-up
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for arg in "$@"; do
    case $arg in
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done

NEW_DOCKERD=/usr/sbin/dockerd
REGISTRY_BIN=/usr/bin/docker-registry
NEW_CONF=$KILN_ENGINE_STATE/daemon.json
NETWORK_MODE=${KILN_ENGINE_NETWORK:-}
case $NETWORK_MODE in '' | bridge | host) ;; *) die "KILN_ENGINE_NETWORK must be bridge or host, not '$NETWORK_MODE'" ;; esac
# The mode of the last start (its config), kept when KILN_ENGINE_NETWORK is
# unset; a running engine in another mode than asked for is restarted.
RUNNING_MODE=$(daemon_json_network "$NEW_CONF")
[ -n "$NETWORK_MODE" ] || NETWORK_MODE=${RUNNING_MODE:-bridge}
TRIXIE_SOURCES=/etc/apt/sources.list.d/kiln-trixie.sources
TRIXIE_PREFS=/etc/apt/preferences.d/kiln-trixie

require_root
engine_lock
T0=$(date +%s)
CODENAME=$(host_codename)

# ---------------------------------------------------------------- packages

# write_if_changed FILE: stdin into FILE unless FILE already holds exactly
# that; status 0 when it wrote.
write_if_changed() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        return 1
    fi
    mkdir -p "$(dirname "$1")"
    mv "$tmp" "$1"
    chmod 644 "$1"
}

add_trixie_source() {
    local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg changed=
    mirror=$(debian_mirror)
    [ -s "$keyring" ] || apt_install debian-archive-keyring
    if write_if_changed "$TRIXIE_SOURCES" <<EOF; then changed=1; fi
# kiln scripts/engine-up.sh: docker.io 26 and docker-buildx come from trixie.
# Pinned low in $TRIXIE_PREFS: nothing else is taken from here.
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: $keyring
EOF
    if write_if_changed "$TRIXIE_PREFS" <<'EOF'; then changed=1; fi
# kiln scripts/engine-up.sh: trixie only for packages asked for by name
# (docker.io/trixie docker-buildx/trixie); bookworm (500) wins everywhere else.
Package: *
Pin: release n=trixie
Pin-Priority: 100
EOF
    if [ -n "$changed" ]; then
        log "added the trixie apt source ($TRIXIE_SOURCES, pinned to priority 100)"
        apt_update_once
    elif ! apt-cache show docker.io/trixie >/dev/null 2>&1; then
        apt_update_once
    fi
    apt-cache show docker.io/trixie >/dev/null 2>&1 ||
        die "no docker.io in trixie after apt-get update (mirror $mirror)"
}

install_packages() {
    local v
    v=$(pkg_version docker.io)
    local -a want=()
    case $v in 26.*) ;; *) want+=(docker.io/trixie) ;; esac
    [ -n "$(pkg_version docker-buildx)" ] || want+=(docker-buildx/trixie)
    if [ "${#want[@]}" -gt 0 ]; then
        add_trixie_source
        # containerd, runc, tini (docker.io's dependencies) and iptables from
        # the host release: without naming them apt takes trixie's
        # containerd 1.7 along with docker.io/trixie. Installed ones stay.
        # shellcheck disable=SC2207
        want+=($(pinned_if_missing "$CODENAME" containerd runc tini iptables))
    fi
    [ -n "$(pkg_version docker-registry)" ] || want+=(docker-registry)
    command -v curl >/dev/null || want+=(curl)
    command -v docker >/dev/null || { add_trixie_source; want+=(docker-cli/trixie); }
    if [ "${#want[@]}" -gt 0 ]; then
        local t=$SECONDS
        apt_install "${want[@]}"
        log "installed ${want[*]} in $((SECONDS - t))s"
    fi
    [ -x "$NEW_DOCKERD" ] || die "$NEW_DOCKERD missing after installing docker.io"
    [ -x "$REGISTRY_BIN" ] || die "$REGISTRY_BIN missing after installing docker-registry"
    if [ "$NETWORK_MODE" = bridge ] && ! command -v iptables >/dev/null; then
        apt_install iptables
    fi
}

# ---------------------------------------------------------------- engine

# ensure_bridge: the engine's default bridge (see the header), up, with its
# address. dockerd takes the subnet from the address and adds the NAT rules.
ensure_bridge() {
    local mtu
    command -v ip >/dev/null || apt_install iproute2
    if ! ip link show dev "$KILN_NEW_BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $KILN_NEW_BRIDGE ($KILN_NEW_BRIDGE_CIDR)"
        ip link add name "$KILN_NEW_BRIDGE" type bridge ||
            die "cannot create bridge $KILN_NEW_BRIDGE (KILN_ENGINE_NETWORK=host avoids the bridge)"
    fi
    if ! ip -4 -o addr show dev "$KILN_NEW_BRIDGE" | grep -q " inet $KILN_NEW_BRIDGE_CIDR "; then
        ip addr add "$KILN_NEW_BRIDGE_CIDR" dev "$KILN_NEW_BRIDGE" ||
            die "cannot give $KILN_NEW_BRIDGE the address $KILN_NEW_BRIDGE_CIDR (in use? set KILN_ENGINE_BRIDGE_CIDR)"
    fi
    mtu=$(default_route_mtu)
    if [ -n "$mtu" ] && [ "$mtu" -lt 1500 ]; then ip link set dev "$KILN_NEW_BRIDGE" mtu "$mtu"; fi
    ip link set dev "$KILN_NEW_BRIDGE" up
}

# daemon_json: the engine config this script wants, on stdout.
# containerd-snapshotter: the image store in containerd. BuildKit in dockerd
# has MergeOp and DiffOp only with it (on the overlay2 graph driver it
# reports neither, and kiln falls back to copying the venv), and merged
# layers are exported as the layers they are, so adding one package exports
# one small layer instead of re-exporting the whole environment.
daemon_json() {
    local mtu net
    mtu=$(default_route_mtu)
    if [ "$NETWORK_MODE" = bridge ]; then
        net="\"bridge\": \"$KILN_NEW_BRIDGE\",
  \"iptables\": true,"
        if [ -n "$mtu" ] && [ "$mtu" -lt 1500 ]; then
            net="$net
  \"mtu\": $mtu,"
        fi
    else
        net='"bridge": "none",
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,'
    fi
    cat <<EOF
{
  "data-root": "$KILN_NEW_DATA",
  "exec-root": "$KILN_NEW_EXEC",
  "pidfile": "$KILN_NEW_PID",
  "hosts": ["unix://$KILN_NEW_SOCK"],
  $net
  "features": { "buildkit": true, "containerd-snapshotter": true }
}
EOF
}

write_daemon_json() {
    daemon_json | write_if_changed "$NEW_CONF" || true
}

start_engine() {
    local v
    if pid_alive "$KILN_NEW_PID" "$NEW_DOCKERD" && [ "${RUNNING_MODE:-bridge}" != "$NETWORK_MODE" ]; then
        log "engine runs with network '$RUNNING_MODE', KILN_ENGINE_NETWORK=$NETWORK_MODE: restarting it"
        stop_pidfile "$KILN_NEW_PID" "$NEW_DOCKERD" dockerd
    fi
    if pid_alive "$KILN_NEW_PID" "$NEW_DOCKERD" && ! daemon_json | cmp -s - "$NEW_CONF"; then
        log "the running engine's config differs from the wanted one: restarting it"
        stop_pidfile "$KILN_NEW_PID" "$NEW_DOCKERD" dockerd
    fi
    if pid_alive "$KILN_NEW_PID" "$NEW_DOCKERD" && [ "$NETWORK_MODE" = bridge ] &&
        ! ip link show dev "$KILN_NEW_BRIDGE" >/dev/null 2>&1; then
        # Someone deleted the bridge under the running engine: containers
        # cannot attach any more ("adding interface vethX to bridge ... failed").
        log "bridge $KILN_NEW_BRIDGE is gone under the running engine: restarting dockerd"
        stop_pidfile "$KILN_NEW_PID" "$NEW_DOCKERD" dockerd
    fi
    if pid_alive "$KILN_NEW_PID" "$NEW_DOCKERD"; then
        if ! docker_answers "$KILN_NEW_SOCK"; then
            log "dockerd (pid $(cat "$KILN_NEW_PID")) runs but does not answer yet; waiting"
            wait_docker "$KILN_NEW_SOCK" "$KILN_NEW_LOG" 60 "$KILN_NEW_PID" ||
                die "dockerd (pid $(cat "$KILN_NEW_PID")) does not answer on $KILN_NEW_SOCK; run scripts/engine-down.sh and retry"
        fi
        log "engine already running (pid $(cat "$KILN_NEW_PID"), $KILN_NEW_SOCK)"
        return
    fi
    if docker_answers "$KILN_NEW_SOCK"; then
        # A daemon we did not start (no/other pidfile) owns the socket.
        v=$(DOCKER_HOST=unix://$KILN_NEW_SOCK docker version --format '{{.Server.Version}}' 2>/dev/null || true)
        case $v in
            26.*) log "WARNING: reusing a docker $v engine on $KILN_NEW_SOCK not started by this script"; return ;;
            *) die "another docker engine ($v) answers on $KILN_NEW_SOCK; stop it first" ;;
        esac
    fi
    [ "$NETWORK_MODE" = bridge ] && ensure_bridge
    write_daemon_json
    mkdir -p "$KILN_NEW_DATA" "$KILN_NEW_EXEC"
    chmod 711 "$KILN_NEW_DATA"
    log "starting dockerd $(dockerd --version | sed 's/^Docker version //') on $KILN_NEW_SOCK (network: $NETWORK_MODE, log $KILN_NEW_LOG)"
    daemonize - "$KILN_NEW_LOG" "$NEW_DOCKERD" --config-file "$NEW_CONF"
    wait_docker "$KILN_NEW_SOCK" "$KILN_NEW_LOG" 60 "$KILN_NEW_PID" ||
        die "dockerd did not come up (log: $KILN_NEW_LOG)"
    log "engine answers (pid $(cat "$KILN_NEW_PID"))"
}

# ---------------------------------------------------------------- registry

registry_answers() {
    curl -fsS -m 3 -o /dev/null "http://$KILN_REGISTRY_ADDR/v2/" 2>/dev/null
}

start_registry() {
    if pid_alive "$KILN_REGISTRY_PID" "$REGISTRY_BIN" && registry_answers; then
        log "registry already running (pid $(cat "$KILN_REGISTRY_PID"), $KILN_REGISTRY_ADDR)"
        return
    fi
    if registry_answers; then
        log "WARNING: reusing a registry on $KILN_REGISTRY_ADDR not started by this script"
        return
    fi
    case $KILN_REGISTRY_ADDR in
        127.* | localhost:*) ;;
        *) die "KILN_REGISTRY_ADDR=$KILN_REGISTRY_ADDR: the registry listens on loopback only" ;;
    esac
    mkdir -p "$KILN_REGISTRY_DATA"
    write_if_changed "$KILN_REGISTRY_CONF" <<EOF || true
# kiln scripts/engine-up.sh: local registry, loopback only, no auth.
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $KILN_REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $KILN_REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    log "starting docker-registry on $KILN_REGISTRY_ADDR (log $KILN_REGISTRY_LOG)"
    daemonize "$KILN_REGISTRY_PID" "$KILN_REGISTRY_LOG" "$REGISTRY_BIN" serve "$KILN_REGISTRY_CONF"
    local i
    for i in $(seq 1 50); do
        registry_answers && break
        if [ "$i" -gt 5 ] && ! pid_alive "$KILN_REGISTRY_PID" "$REGISTRY_BIN"; then
            tail -n 20 "$KILN_REGISTRY_LOG" >&2 || true
            die "docker-registry exited during startup (log: $KILN_REGISTRY_LOG)"
        fi
        sleep 0.2
    done
    registry_answers || { tail -n 20 "$KILN_REGISTRY_LOG" >&2 || true; die "registry does not answer on $KILN_REGISTRY_ADDR"; }
    log "registry answers (pid $(cat "$KILN_REGISTRY_PID"))"
}

# ---------------------------------------------------------------- checks

check_buildx() {
    local bx driver
    bx=$(env -u DOCKER_CONTEXT DOCKER_HOST="unix://$KILN_NEW_SOCK" docker buildx version 2>&1) ||
        die "\`docker buildx version\` fails ($bx); is /usr/libexec/docker/cli-plugins/docker-buildx there?"
    driver=$(env -u DOCKER_CONTEXT DOCKER_HOST="unix://$KILN_NEW_SOCK" docker buildx inspect 2>/dev/null |
        awk '/^Driver:/ { print $2; exit }')
    if [ "$driver" != docker ]; then
        log "current buildx builder uses driver '${driver:-?}': switching to the default builder (docker driver)"
        env -u DOCKER_CONTEXT DOCKER_HOST="unix://$KILN_NEW_SOCK" docker buildx use default ||
            die "cannot select the default buildx builder"
    fi
    echo "$bx"
}

# Every TCP/UDP listener of a process we started must be on loopback.
check_listeners() {
    local bad
    command -v ss >/dev/null || return 0
    bad=$(ss -Hlntup 2>/dev/null |
        awk '/"(dockerd|containerd|containerd-shim[^"]*|docker-proxy|docker-registry|buildkitd)"/ {
                 addr = $5; sub(/:[^:]*$/, "", addr)
                 if (addr !~ /^(127\.[0-9.]+|\[::1\]|::1)$/) print
             }')
    [ -z "$bad" ] || die "engine processes listen on non-loopback addresses:
$bad"
}

install_packages
start_engine
start_registry
BX=$(check_buildx)
check_listeners
SERVER=$(DOCKER_HOST=unix://$KILN_NEW_SOCK docker version --format '{{.Server.Version}}')
log "ready in $(($(date +%s) - T0))s: docker $SERVER on $KILN_NEW_SOCK, ${BX#github.com/docker/}, registry $KILN_REGISTRY_ADDR"
[ "$NETWORK_MODE" = host ] && log "network mode host: pass --network=host to builds"
exit 0
