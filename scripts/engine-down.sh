#!/usr/bin/env bash
# engine-down.sh - stop the real-engine test bed started by engine-up.sh and
# old-engine-up.sh: the old engine (docker 20.10), the new engine (docker 26)
# and the local registry, each through its pidfile under /run/kiln-engine
# (SIGTERM, then SIGKILL after 30s). dockerd stops its running containers and
# its managed containerd itself.
#
# Images, build cache and registry storage under /var/lib/kiln-engine are kept
# unless --purge, which also deletes those (and the exec roots, configs and
# logs). Installed packages, the trixie apt source, the unpacked old engine in
# ${KILN_CACHE:-repo/.cache}/old-docker and the fixture tarballs stay; the
# engine's iptables chains stay as dockerd leaves them (--purge deletes the
# kiln0 / kiln-old0 bridges and the old engine's "kiln-old" NAT rules).
#
# Usage: scripts/engine-down.sh [--purge] [new|old|registry]...
#        (no component named: all three)
set -euo pipefail

KILN_SCRIPT=engine-down
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PURGE=
DO_NEW='' DO_OLD='' DO_REG=''
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        new) DO_NEW=1 ;;
        old) DO_OLD=1 ;;
        registry) DO_REG=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) die "unknown argument: $arg (want --purge, new, old, registry)" ;;
    esac
done
if [ -z "$DO_NEW$DO_OLD$DO_REG" ]; then DO_NEW=1 DO_OLD=1 DO_REG=1; fi

require_root
engine_lock

# purge_dir DIR: unmount whatever is still mounted below DIR (deepest
# first; overlay mounts of a daemon that was SIGKILLed), then delete it.
purge_dir() {
    local d=$1 m
    [ -e "$d" ] || return 0
    case $d in /var/lib/kiln-engine* | /run/kiln-engine* | "$KILN_ENGINE_STATE"* | "$KILN_ENGINE_RUN"*) ;;
        *) die "refusing to purge $d (outside the engine state dirs)" ;; esac
    while read -r m; do
        if [ -n "$m" ]; then umount -l "$m" 2>/dev/null || true; fi
    done < <(awk -v d="$d" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    rm -rf "$d"
    log "deleted $d"
}

if [ -n "$DO_OLD" ]; then
    # by basename: it may run from another checkout's KILN_CACHE
    stop_pidfile "$KILN_OLD_PID" dockerd "old dockerd"
    rm -f "$KILN_OLD_SOCK"
    if [ -n "$PURGE" ]; then
        purge_dir "$KILN_OLD_DATA"
        purge_dir "$KILN_OLD_EXEC"
        rm -f "$KILN_OLD_CONF" "$KILN_OLD_LOG"
        # KILN_OLD_NETWORK=bridge leftovers: NAT rules, bridge.
        if command -v iptables >/dev/null; then
            while read -r table spec; do
                # shellcheck disable=SC2086
                while iptables -w -t "$table" -C $spec 2>/dev/null; do
                    iptables -w -t "$table" -D $spec || break
                done
            done < <(old_bridge_rules)
        fi
        if ip link show dev "$KILN_OLD_BRIDGE" >/dev/null 2>&1; then
            ip link del dev "$KILN_OLD_BRIDGE" && log "deleted bridge $KILN_OLD_BRIDGE"
        fi
    fi
fi
if [ -n "$DO_NEW" ]; then
    stop_pidfile "$KILN_NEW_PID" /usr/sbin/dockerd "dockerd"
    if [ -n "$PURGE" ]; then
        purge_dir "$KILN_NEW_DATA"
        purge_dir "$KILN_NEW_EXEC"
        rm -f "$KILN_ENGINE_STATE/daemon.json" "$KILN_NEW_LOG"
        if ip link show dev "$KILN_NEW_BRIDGE" >/dev/null 2>&1; then
            ip link del dev "$KILN_NEW_BRIDGE" && log "deleted bridge $KILN_NEW_BRIDGE"
        fi
    fi
fi
if [ -n "$DO_REG" ]; then
    stop_pidfile "$KILN_REGISTRY_PID" /usr/bin/docker-registry "registry" 10
    if [ -n "$PURGE" ]; then
        purge_dir "$KILN_REGISTRY_DATA"
        rm -f "$KILN_REGISTRY_CONF" "$KILN_REGISTRY_LOG"
    fi
fi
log "done${PURGE:+ (purged)}"
