# shellcheck shell=bash
# Shared helpers for the real-engine test bed scripts (engine-up.sh,
# old-engine-up.sh, fixtures.sh, engine-down.sh). Sourced, never run.
#
# Everything the test bed creates lives in a few well-known places so that
# engine-down.sh (and a human) can find it again:
#   ${KILN_ENGINE_STATE:-/var/lib/kiln-engine}   data roots, logs, registry storage
#   ${KILN_ENGINE_RUN:-/run/kiln-engine}         exec roots, pidfiles (tmpfs-like, short paths)
#   ${KILN_CACHE:-$repo/.cache}                  downloaded/built artifacts (gitignored)

# The KILN_* paths below are used by the scripts that source this file.
# shellcheck disable=SC2034
KILN_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KILN_CACHE=${KILN_CACHE:-$KILN_REPO/.cache}
KILN_ENGINE_STATE=${KILN_ENGINE_STATE:-/var/lib/kiln-engine}
# exec roots hold unix sockets (containerd, shims): keep the path short.
KILN_ENGINE_RUN=${KILN_ENGINE_RUN:-/run/kiln-engine}

# New engine (trixie docker.io 26.1.5) on the default socket, so a plain
# `docker` works without DOCKER_HOST.
KILN_NEW_SOCK=/var/run/docker.sock
KILN_NEW_DATA=$KILN_ENGINE_STATE/docker
KILN_NEW_EXEC=$KILN_ENGINE_RUN/docker
KILN_NEW_PID=$KILN_ENGINE_RUN/dockerd.pid
KILN_NEW_LOG=$KILN_ENGINE_STATE/dockerd.log
# Its default bridge: our own, not docker0, because a dockerd started with
# --bridge=none (the old engine) deletes the docker0 link on startup.
KILN_NEW_BRIDGE=${KILN_ENGINE_BRIDGE:-kiln0}
KILN_NEW_BRIDGE_CIDR=${KILN_ENGINE_BRIDGE_CIDR:-172.18.0.1/16}

# Old engine (bookworm docker.io 20.10, BuildKit 0.8) on its own socket.
KILN_OLD_SOCK=/var/run/kiln-old-docker.sock
KILN_OLD_DATA=$KILN_ENGINE_STATE/old-docker
KILN_OLD_EXEC=$KILN_ENGINE_RUN/old-docker
KILN_OLD_PID=$KILN_ENGINE_RUN/old-dockerd.pid
KILN_OLD_LOG=$KILN_ENGINE_STATE/old-dockerd.log
KILN_OLD_CONF=$KILN_ENGINE_STATE/old-daemon.json
# Only with KILN_OLD_NETWORK=bridge (see old-engine-up.sh): its own bridge,
# NAT rules added by the script (the engine runs with --iptables=false).
KILN_OLD_BRIDGE=${KILN_OLD_BRIDGE:-kiln-old0}
KILN_OLD_BRIDGE_CIDR=${KILN_OLD_BRIDGE_CIDR:-172.19.0.1/16}
KILN_OLD_CONF=$KILN_ENGINE_STATE/old-daemon.json
# Only with KILN_OLD_NETWORK=bridge (see old-engine-up.sh): its own bridge,
# NAT rules added by the script (the engine runs with --iptables=false).
KILN_OLD_BRIDGE=${KILN_OLD_BRIDGE:-kiln-old0}
KILN_OLD_BRIDGE_CIDR=${KILN_OLD_BRIDGE_CIDR:-172.19.0.1/16}

# old_bridge_rules: the iptables rules (table, then rule spec) that give
# containers on the old engine's bridge outbound NAT; added by
# old-engine-up.sh, deleted by engine-down.sh --purge.
old_bridge_rules() {
    local net
    net=$(cidr_network "$KILN_OLD_BRIDGE_CIDR")
    echo "nat POSTROUTING -s $net ! -o $KILN_OLD_BRIDGE -m comment --comment kiln-old -j MASQUERADE"
    echo "filter FORWARD -i $KILN_OLD_BRIDGE -m comment --comment kiln-old -j ACCEPT"
    echo "filter FORWARD -o $KILN_OLD_BRIDGE -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment kiln-old -j ACCEPT"
}

# cidr_network A.B.C.D/N: the network address of an IPv4 CIDR (A.B.0.0/16).
cidr_network() {
    local ip=${1%/*} bits=${1#*/} a b c d n mask
    IFS=. read -r a b c d <<<"$ip"
    n=$(((a << 24) | (b << 16) | (c << 8) | d))
    mask=$(((0xffffffff << (32 - bits)) & 0xffffffff))
    n=$((n & mask))
    echo "$(((n >> 24) & 255)).$(((n >> 16) & 255)).$(((n >> 8) & 255)).$((n & 255))/$bits"
}

# daemon_json_network CONF: "host" when the daemon config has no bridge
# ("bridge": "none"), "bridge" when it has one, empty without CONF.
daemon_json_network() {
    [ -s "$1" ] || return 0
    if grep -q '"bridge": *"none"' "$1"; then echo host; else echo bridge; fi
}

# Local distribution registry (Debian's docker-registry), loopback only.
KILN_REGISTRY_ADDR=${KILN_REGISTRY_ADDR:-127.0.0.1:5000}
KILN_REGISTRY_DATA=$KILN_ENGINE_STATE/registry
KILN_REGISTRY_CONF=$KILN_ENGINE_STATE/registry.yml
KILN_REGISTRY_PID=$KILN_ENGINE_RUN/registry.pid
KILN_REGISTRY_LOG=$KILN_ENGINE_STATE/registry.log

log() { printf '[%s] %s\n' "${KILN_SCRIPT:-kiln}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${KILN_SCRIPT:-kiln}" "$*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons)"
}

# pid_alive PIDFILE [EXE]: true when the pid in PIDFILE names a live
# process, and (with EXE) that process runs EXE (a path, or a bare name that
# the executable's basename must equal). /run is not a tmpfs on every
# machine, so a pidfile can survive a reboot and name an unrelated process:
# the EXE check keeps us from reusing or killing that one.
pid_alive() {
    local pid exe
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    [ -z "${2:-}" ] && return 0
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    case $2 in
        */*) [ "$exe" = "$(readlink -f "$2")" ] ;;
        *) [ "${exe##*/}" = "$2" ] ;;
    esac
}

# daemonize PIDFILE LOG CMD...: run CMD detached from this shell (own
# session, cwd /, stdin from /dev/null, output appended to LOG, no inherited
# lock fd), and record its pid in PIDFILE ("-": none, for daemons that write
# their own, like dockerd --pidfile, which refuses to start when the file
# names a live process, itself included). The pid is written by the child
# itself right before it execs CMD, so it is the daemon's pid.
daemonize() {
    local pidf=$1 logf=$2
    shift 2
    mkdir -p "$(dirname "$logf")"
    printf '==== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$logf"
    # shellcheck disable=SC2016
    (cd / && exec setsid bash -c '[ "$0" = - ] || echo $$ >"$0"; exec "$@"' "$pidf" "$@" \
        </dev/null >>"$logf" 2>&1 9>&-) &
}

# stop_pidfile PIDFILE EXE NAME [SECONDS]: SIGTERM the daemon named by
# PIDFILE (when it runs EXE), wait for it to exit, SIGKILL after SECONDS
# (default 30). Removes the pidfile.
stop_pidfile() {
    local pidf=$1 exe=$2 name=$3 secs=${4:-30} pid i=0
    if ! pid_alive "$pidf" "$exe"; then
        log "$name: not running"
        rm -f "$pidf"
        return 0
    fi
    pid=$(cat "$pidf")
    log "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -ge $((secs * 5)) ]; then
            log "$name: still running after ${secs}s, SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.2
    done
    rm -f "$pidf"
}

# engine_lock: serialize engine-up / old-engine-up / engine-down (two CI jobs
# or two engineers starting the test bed at once). fd 9, closed for daemons.
engine_lock() {
    mkdir -p "$KILN_ENGINE_RUN"
    exec 9>"$KILN_ENGINE_RUN/.lock"
    if ! flock -n 9; then
        log "waiting for another engine script (lock $KILN_ENGINE_RUN/.lock)"
        flock -w 600 9 || die "timed out waiting for $KILN_ENGINE_RUN/.lock"
    fi
}

# host_codename: the Debian release this machine runs (bookworm).
host_codename() {
    (. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
}

# pinned_if_missing CODENAME PKG...: "PKG/CODENAME" for each PKG that is not
# installed, nothing for installed ones (never up- or downgrade what is there).
pinned_if_missing() {
    local rel=$1 p
    shift
    for p in "$@"; do
        [ -n "$(pkg_version "$p")" ] || echo "$p/$rel"
    done
}

# default_route_mtu: MTU of the interface holding the default route (empty
# when unknown). Containers on a bridge with a bigger MTU than the uplink see
# stalled TLS handshakes where path-MTU discovery is filtered.
default_route_mtu() {
    local dev
    dev=$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null)
    [ -n "$dev" ] && [ -r "/sys/class/net/$dev/mtu" ] && cat "/sys/class/net/$dev/mtu"
    return 0
}

# docker_answers SOCK: the daemon on SOCK answers the API (bounded time so a
# wedged daemon does not hang the caller).
docker_answers() {
    env -u DOCKER_CONTEXT DOCKER_HOST="unix://$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# wait_docker SOCK LOG SECONDS PIDFILE: poll until the daemon answers; on
# timeout or when the process died, print the log tail and fail.
wait_docker() {
    local sock=$1 logf=$2 secs=$3 pidf=$4 i=0
    while ! docker_answers "$sock"; do
        if [ -n "$pidf" ] && [ "$i" -gt 2 ] && ! pid_alive "$pidf"; then
            log "daemon for $sock exited during startup; last lines of $logf:"
            tail -n 40 "$logf" >&2 || true
            return 1
        fi
        i=$((i + 1))
        if [ "$i" -ge "$secs" ]; then
            log "daemon for $sock did not answer within ${secs}s; last lines of $logf:"
            tail -n 40 "$logf" >&2 || true
            return 1
        fi
        sleep 1
    done
}

# The Debian mirror this machine already uses (for the trixie source and for
# debootstrap), read from the apt configuration instead of hard-coding a host.
# Override with KILN_DEBIAN_MIRROR=<url>.
debian_mirror() {
    if [ -n "${KILN_DEBIAN_MIRROR:-}" ]; then
        echo "$KILN_DEBIAN_MIRROR"
        return
    fi
    local codename m
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    # deb822 (*.sources): first "deb" stanza whose Suites include the host
    # codename (not -security / -updates, those are other archives).
    m=$(awk -v want="$codename" '
        function flush() {
            if (!done && types ~ /(^|[ \t])deb([ \t]|$)/ &&
                (" " suites " ") ~ ("[ \t]" want "[ \t]") && uri != "") {
                print uri; done = 1
            }
            types = ""; suites = ""; uri = ""
        }
        FNR == 1 { flush() }
        /^[ \t]*$/ { flush(); next }
        /^Types:/  { types = $0;  sub(/^Types:[ \t]*/, "", types) }
        /^URIs:/   { uri = $2 }
        /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
        END { flush() }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$m" ]; then
        # one-line format: deb [opts] URI SUITE COMPONENTS...
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -e 's/\[[^]]*\]//' |
            awk -v want="$codename" '$1 == "deb" && $3 == want { print $2; exit }' || true)
    fi
    [ -n "$m" ] || die "cannot find the Debian mirror for '$codename' in /etc/apt; set KILN_DEBIAN_MIRROR=<url>"
    echo "${m%/}"
}

# Keep package maintainer scripts from starting services (the docker.io,
# containerd and docker-registry postinsts would start dockerd on
# /var/lib/docker, containerd on /run/containerd and a registry on *:5000 on a
# machine with an init system). We start our own instances with our own paths.
# Installs a temporary /usr/sbin/policy-rc.d when none exists.
_KILN_POLICY_RCD_ADDED=
policy_rcd_on() {
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, from kiln scripts/lib.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        _KILN_POLICY_RCD_ADDED=1
    fi
}
policy_rcd_off() {
    if [ -n "$_KILN_POLICY_RCD_ADDED" ]; then
        rm -f /usr/sbin/policy-rc.d
        _KILN_POLICY_RCD_ADDED=
    fi
}

# apt_update_once: at most one `apt-get update` per script run.
_KILN_APT_UPDATED=
apt_update_once() {
    [ -n "$_KILN_APT_UPDATED" ] && return 0
    log "apt-get update"
    apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null || die "apt-get update failed"
    _KILN_APT_UPDATED=1
}

# apt_install SPEC...: install package specs (name or name/release) without
# recommends and without starting services. Updates the lists first when a
# spec has no candidate (lists missing), and retries once after an update when
# the download fails (lists stale: 404 on a superseded .deb).
apt_install() {
    local spec missing=
    for spec in "$@"; do
        if ! apt-cache show "$spec" >/dev/null 2>&1; then missing=1; fi
    done
    [ -n "$missing" ] && apt_update_once
    policy_rcd_on
    log "apt-get install $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null; then
        if [ -z "$_KILN_APT_UPDATED" ]; then
            apt_update_once
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null ||
                { policy_rcd_off; die "apt-get install $* failed"; }
        else
            policy_rcd_off
            die "apt-get install $* failed"
        fi
    fi
    policy_rcd_off
}

# pkg_version NAME: installed version, empty when not installed.
pkg_version() {
    { dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null || true; } |
        awk '$1 == "ii" { print $2 }'
}
