#!/usr/bin/env bash
# fixtures.sh - fixture base images for the real-engine tests.
#
# No public registry is reachable from the test machines, so the base images
# kiln recipes name (python:3.11-slim, nvidia/cuda:..., busybox, alpine) are
# built locally from Debian packages and `docker import`ed under those names:
#
#   python  debootstrap --variant=minbase bookworm + python3, python3-venv,
#           python3-pip, ca-certificates, netbase, tzdata; /usr/local/bin/python,
#           python3, pip... symlinks and the env of the official python image.
#   cuda    the same rootfs with the env/labels/entrypoint of the official
#           nvidia/cuda runtime image (no CUDA libraries: a look-alike).
#   conda   the python rootfs plus scripts/fixture-conda.sh as
#           /opt/conda/bin/conda: a stand-in for conda (no conda channel is
#           reachable here) that does what kiln's conda step asks of it, with
#           pip (see the script); the env of the official
#           continuumio/miniconda3 image.
#   busybox busybox-static only: no glibc, no dynamic loader (for the
#           "base image has no glibc" error tests). The package is
#           `apt-get download`ed and unpacked, not installed on the host.
#
# The python/cuda rootfs also carries this machine's extra CAs
# (/usr/local/share/ca-certificates: an egress TLS proxy's root), so pip and
# urllib inside containers and build RUN steps trust the proxy even without
# `--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt` +
# PIP_CERT=/run/secrets/ca-bundle (which works too); KILN_FIXTURE_HOST_CAS=0
# leaves them out. Timings here: cold ~40-80s (debootstrap), warm <1s;
# importing into a second engine ~5s.
#
# Rootfs tarballs are cached in ${KILN_CACHE:-$repo/.cache}/fixtures and only
# rebuilt when missing (delete the .tar to force). An image is only
# re-imported when its kiln.fixture.sha label (tarball sha + kind + changes)
# differs from what is wanted, so a warm run takes seconds.
#
# Targets whatever engine the `docker` CLI reaches: set DOCKER_HOST to import
# into the old engine, e.g.
#   DOCKER_HOST=unix:///var/run/kiln-old-docker.sock scripts/fixtures.sh
#
# Usage: scripts/fixtures.sh [--rebuild]   (--rebuild: rebuild the tarballs)
# Env:   KILN_FIXTURES_EXTRA="name=kind name=kind"  more tags (kind: python|cuda|conda|busybox)
#        KILN_DEBIAN_MIRROR=<url>  debootstrap mirror (default: this machine's apt mirror)
set -euo pipefail

# ---------------------------------------------------------------------------
# All fixture image names, NAME=KIND. Tests add names here (or through
# KILN_FIXTURES_EXTRA). Names of the same kind share one image id.
FIXTURES=(
    "python:3.11-slim=python"
    "python:3.11-slim-bookworm=python"
    "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04=cuda"
    "continuumio/miniconda3:24.7.1-0=conda"
    "busybox:latest=busybox"
    "alpine:3.19=busybox"
)
# ---------------------------------------------------------------------------

KILN_SCRIPT=fixtures
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REBUILD=
for arg in "$@"; do
    case $arg in
        --rebuild) REBUILD=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done
# shellcheck disable=SC2206
[ -n "${KILN_FIXTURES_EXTRA:-}" ] && FIXTURES+=(${KILN_FIXTURES_EXTRA})

FIX=$KILN_CACHE/fixtures
PY_TAR=$FIX/python-bookworm-rootfs.tar
CONDA_TAR=$FIX/conda-lookalike-rootfs.tar
BB_TAR=$FIX/busybox-rootfs.tar
mkdir -p "$FIX"

# One run at a time per cache (CI may start several jobs on one machine).
exec 9>"$FIX/.lock"
flock 9

T0=$(date +%s)

command -v docker >/dev/null || die "no docker CLI on PATH (run scripts/engine-up.sh first)"
timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "no engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock} (run scripts/engine-up.sh or scripts/old-engine-up.sh)"
ENGINE_VERSION=$(docker version --format '{{.Server.Version}}')

# ----------------------------------------------------------------- rootfs builds

# Write "$1.sha256" next to a finished tarball; the sidecar saves hashing a
# few hundred MB on every warm run.
finish_tar() {
    local tmp=$1 out=$2
    sha256sum "$tmp" | cut -d' ' -f1 >"$out.sha256.tmp"
    mv "$tmp" "$out"
    mv "$out.sha256.tmp" "$out.sha256"
}

# Extra CA certificates this machine trusts locally (an egress TLS proxy's
# root, a company CA): without them pip inside a build cannot reach the
# package index here. Copied into the python/cuda rootfs; the tarball is
# rebuilt when this set changes. KILN_FIXTURE_HOST_CAS=0 leaves them out.
HOST_CA_DIR=/usr/local/share/ca-certificates
host_cas_id() {
    if [ "${KILN_FIXTURE_HOST_CAS:-1}" = 0 ] || [ ! -d "$HOST_CA_DIR" ]; then
        echo none
        return
    fi
    (cd "$HOST_CA_DIR" && find . -name '*.crt' -type f | LC_ALL=C sort | xargs -r cat) | sha256sum | cut -c1-16
}

# Bump when the python rootfs recipe below changes: the cached tarball is
# rebuilt when this (or the host CA set) differs.
PY_ROOTFS_VERSION=2

build_python_rootfs() {
    local cas_id
    cas_id="v$PY_ROOTFS_VERSION-$(host_cas_id)"
    [ -z "$REBUILD" ] && [ -s "$PY_TAR" ] && [ -s "$PY_TAR.sha256" ] &&
        [ "$(cat "$PY_TAR.cas" 2>/dev/null)" = "$cas_id" ] && return 0
    require_root
    command -v debootstrap >/dev/null || apt_install debootstrap
    local mirror root=$FIX/python-rootfs.tmp
    mirror=$(debian_mirror)
    log "debootstrap --variant=minbase bookworm from $mirror (about a minute)"
    rm -rf "$root"
    # tzdata/netbase/ca-certificates: what the official slim image carries
    # (time zones, /etc/services+protocols, TLS roots for pip).
    # python3-venv pulls python3-pip-whl/setuptools-whl so `python3 -m venv`
    # can bootstrap pip (ensurepip) without network.
    # --cache-dir keeps the downloaded .debs: a rebuild (--rebuild, a new
    # host CA) then only unpacks.
    mkdir -p "$FIX/debootstrap-debs"
    if ! debootstrap --variant=minbase --cache-dir="$FIX/debootstrap-debs" \
        --include=python3,python3-venv,python3-pip,ca-certificates,netbase,tzdata \
        bookworm "$root" "$mirror" >"$FIX/debootstrap.log" 2>&1; then
        tail -n 30 "$FIX/debootstrap.log" >&2
        die "debootstrap failed (log: $FIX/debootstrap.log)"
    fi
    # Look like the official image: python/pip resolve from /usr/local/bin.
    local n
    for n in python python3 python3.11; do ln -sf /usr/bin/python3 "$root/usr/local/bin/$n"; done
    for n in pip pip3 pip3.11; do ln -sf /usr/bin/pip3 "$root/usr/local/bin/$n"; done
    # Debian marks its Python "externally managed" (PEP 668); the official
    # image does not, and a plain `pip install` must behave the same.
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    # The nvidia/cuda images run /opt/nvidia/nvidia_entrypoint.sh (banner on
    # stdout, then exec "$@"); only the cuda look-alike sets it as ENTRYPOINT.
    mkdir -p "$root/opt/nvidia"
    cat >"$root/opt/nvidia/nvidia_entrypoint.sh" <<'EOF'
#!/bin/bash
# kiln fixture: stand-in for the nvidia/cuda image entrypoint (banner, then exec).
set -e
cat <<BANNER

==========
== CUDA ==
==========

CUDA Version ${CUDA_VERSION:-unknown}

WARNING: The NVIDIA Driver was not detected.  GPU functionality will not be available.
   (kiln fixture look-alike image: no CUDA libraries inside)

BANNER
if [ $# -eq 0 ]; then exec /bin/bash; else exec "$@"; fi
EOF
    chmod 755 "$root/opt/nvidia/nvidia_entrypoint.sh"
    if [ "$cas_id" != none ]; then
        (cd "$HOST_CA_DIR" && find . -name '*.crt' -type f -exec cp --parents {} "$root/usr/local/share/ca-certificates/" \;)
        chroot "$root" update-ca-certificates >/dev/null 2>&1 ||
            die "update-ca-certificates in the fixture rootfs failed"
        log "added the host's local CA certificates ($HOST_CA_DIR) to the rootfs"
    fi
    # The official Debian-based images ship apt's docker-clean hook: apt
    # deletes downloaded .debs and its binary caches after every run, so a
    # hand-written `RUN apt-get install` leaves no archives in its layer.
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
// kiln fixture: as in the official Debian images.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    # Smaller and closer to the official image: no apt lists/caches, no
    # debootstrap leftovers.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/log/* "$root/debootstrap"
    # Engines bind-mount their own /etc/hosts, /etc/resolv.conf, /etc/hostname.
    : >"$root/etc/resolv.conf"
    echo "kiln-fixture" >"$root/etc/hostname"
    # Sanity: venv + pip work inside the rootfs before we ship it.
    chroot "$root" /usr/local/bin/python -c 'import ssl, venv, ensurepip, sys; print(sys.version)' >/dev/null ||
        die "python in the fixture rootfs does not work"
    tar --numeric-owner -C "$root" -cf "$PY_TAR.tmp" .
    rm -rf "$root"
    finish_tar "$PY_TAR.tmp" "$PY_TAR"
    echo "$cas_id" >"$PY_TAR.cas"
    log "built $PY_TAR ($(du -h "$PY_TAR" | cut -f1))"
}

# The python rootfs plus the conda stand-in; rebuilt when either changes.
build_conda_rootfs() {
    local from standin stage=$FIX/conda-stage.tmp
    standin="$(dirname "${BASH_SOURCE[0]}")/fixture-conda.sh"
    from="$(cat "$PY_TAR.sha256")-$(sha256sum "$standin" | cut -c1-16)"
    [ -z "$REBUILD" ] && [ -s "$CONDA_TAR" ] && [ -s "$CONDA_TAR.sha256" ] &&
        [ "$(cat "$CONDA_TAR.from" 2>/dev/null)" = "$from" ] && return 0
    rm -rf "$stage"
    mkdir -p "$stage/opt/conda/bin" "$stage/opt/conda/pkgs"
    install -m 755 "$standin" "$stage/opt/conda/bin/conda"
    cp "$PY_TAR" "$CONDA_TAR.tmp"
    tar --numeric-owner --owner=0 --group=0 -C "$stage" -rf "$CONDA_TAR.tmp" ./opt/conda
    rm -rf "$stage"
    finish_tar "$CONDA_TAR.tmp" "$CONDA_TAR"
    echo "$from" >"$CONDA_TAR.from"
    log "built $CONDA_TAR"
}

build_busybox_rootfs() {
    [ -z "$REBUILD" ] && [ -s "$BB_TAR" ] && [ -s "$BB_TAR.sha256" ] && return 0
    local bb=$FIX/busybox-static/bin/busybox root=$FIX/busybox-rootfs.tmp
    # Debian's busybox-static: a statically linked busybox (no glibc needed).
    # Downloaded and unpacked, not installed: installing it would replace a
    # host's `busybox` package (they conflict).
    if ! file_is_static "$bb"; then
        local dl codename
        codename=$(host_codename)
        dl=$(mktemp -d "$FIX/busybox-dl.XXXXXX")
        log "apt-get download busybox-static/$codename (unpacked, not installed)"
        if ! (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "busybox-static/$codename" >/dev/null 2>&1); then
            apt_update_once
            (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "busybox-static/$codename" >/dev/null) ||
                { rm -rf "$dl"; die "apt-get download busybox-static failed"; }
        fi
        rm -rf "$FIX/busybox-static"
        dpkg -x "$dl"/busybox-static_*.deb "$FIX/busybox-static" || { rm -rf "$dl"; die "dpkg -x busybox-static failed"; }
        rm -rf "$dl"
    fi
    file_is_static "$bb" || die "$bb is not a statically linked busybox"
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,var/tmp}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    cp "$bb" "$root/bin/busybox"
    # Same as `busybox --install -s`, but into the tarball root: one symlink
    # per applet at its canonical place (bin/sh, usr/bin/env, ...).
    local applet
    "$bb" --list-full | while read -r applet; do
        [ "$applet" = bin/busybox ] && continue
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar --numeric-owner -C "$root" -cf "$BB_TAR.tmp" .
    rm -rf "$root"
    finish_tar "$BB_TAR.tmp" "$BB_TAR"
    log "built $BB_TAR ($(du -h "$BB_TAR" | cut -f1))"
}

# ldd (libc-bin, always there) fails on a static executable.
file_is_static() {
    [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1
}

# ------------------------------------------------------------ image definitions

# changes_for KIND: the `docker import --change` lines, one per line.
changes_for() {
    case $1 in
        python)
            # The official python:3.11-slim image config (PATH really lists
            # /usr/local/bin twice there). PYTHON_VERSION is Debian's python3.
            cat <<'EOF'
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LANG=C.UTF-8
ENV PYTHON_VERSION=3.11.2
CMD ["python3"]
EOF
            ;;
        cuda)
            # Env and labels of nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04.
            cat <<'EOF'
ENV PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV NVARCH=x86_64
ENV NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471 brand=nvidia,driver>=470,driver<471 brand=nvidiartx,driver>=470,driver<471 brand=geforce,driver>=470,driver<471 brand=geforcertx,driver>=470,driver<471 brand=quadro,driver>=470,driver<471 brand=quadrortx,driver>=470,driver<471 brand=titan,driver>=470,driver<471 brand=titanrtx,driver>=470,driver<471 brand=tesla,driver>=525,driver<526 brand=unknown,driver>=525,driver<526 brand=nvidia,driver>=525,driver<526 brand=nvidiartx,driver>=525,driver<526 brand=geforce,driver>=525,driver<526 brand=geforcertx,driver>=525,driver<526 brand=quadro,driver>=525,driver<526 brand=quadrortx,driver>=525,driver<526 brand=titan,driver>=525,driver<526 brand=titanrtx,driver>=525,driver<526 brand=tesla,driver>=535,driver<536 brand=unknown,driver>=535,driver<536 brand=nvidia,driver>=535,driver<536 brand=nvidiartx,driver>=535,driver<536 brand=geforce,driver>=535,driver<536 brand=geforcertx,driver>=535,driver<536 brand=quadro,driver>=535,driver<536 brand=quadrortx,driver>=535,driver<536 brand=titan,driver>=535,driver<536 brand=titanrtx,driver>=535,driver<536
ENV NV_CUDA_CUDART_VERSION=12.4.127-1
ENV NV_CUDA_COMPAT_PACKAGE=cuda-compat-12-4
ENV CUDA_VERSION=12.4.1
ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64
ENV NVIDIA_VISIBLE_DEVICES=all
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
ENV NV_CUDA_LIB_VERSION=12.4.1-1
ENV NVIDIA_PRODUCT_NAME=CUDA
ENV NV_CUDNN_VERSION=9.1.0.70-1
ENV NV_CUDNN_PACKAGE_NAME=libcudnn9-cuda-12
ENV NV_CUDNN_PACKAGE=libcudnn9-cuda-12=9.1.0.70-1
LABEL maintainer="NVIDIA CORPORATION <cudatools@nvidia.com>"
LABEL com.nvidia.cudnn.version=9.1.0.70-1
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]
EOF
            ;;
        busybox)
            cat <<'EOF'
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
EOF
            ;;
        conda)
            # The official continuumio/miniconda3 image config.
            cat <<'EOF'
ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LANG=C.UTF-8
ENV LC_ALL=C.UTF-8
CMD ["/bin/bash"]
EOF
            ;;
        *) die "unknown fixture kind: $1" ;;
    esac
}

tar_for() {
    case $1 in
        python | cuda) echo "$PY_TAR" ;;
        conda) echo "$CONDA_TAR" ;;
        busybox) echo "$BB_TAR" ;;
        *) die "unknown fixture kind: $1" ;;
    esac
}

# Identity of what an image of KIND should be: tarball + kind + config.
want_sha() {
    { cat "$(tar_for "$1").sha256"; echo "$1"; changes_for "$1"; } | sha256sum | cut -c1-32
}

# identity IMAGE: the kiln.fixture.sha label of IMAGE when it is an imported
# fixture itself (one layer); images built FROM a fixture inherit its labels
# but have more layers, and must never be taken for it. Nothing (and
# success) when the engine has no such image, as on a fresh engine.
identity() {
    local out
    out=$(docker image inspect --format '{{len .RootFS.Layers}} {{with .Config.Labels}}{{index . "kiln.fixture.sha"}}{{end}}' "$1" 2>/dev/null) || return 0
    awk '$1 == 1 { print $2 }' <<<"$out"
}

# ensure_image NAME KIND: make NAME point at an imported image carrying the
# wanted kiln.fixture.sha label: nothing to do when it already does; re-tag
# an image of the same identity when there is one (other names of the
# kind); import otherwise.
ensure_image() {
    local name=$1 kind=$2 want have id tarf candidate
    want=$(want_sha "$kind")
    have=$(identity "$name")
    if [ "$have" = "$want" ]; then
        log "ok        $name"
        return
    fi
    id=
    for candidate in $(docker images -q --no-trunc --filter "label=kiln.fixture.sha=$want" | sort -u); do
        if [ "$(identity "$candidate")" = "$want" ]; then
            id=$candidate
            break
        fi
    done
    if [ -n "$id" ]; then
        docker tag "$id" "$name"
        log "tagged    $name"
        return
    fi
    tarf=$(tar_for "$kind")
    local -a args=()
    local line
    while IFS= read -r line; do args+=(--change "$line"); done < <(changes_for "$kind")
    args+=(--change "LABEL kiln.fixture=lookalike" --change "LABEL kiln.fixture.kind=$kind"
        --change "LABEL kiln.fixture.sha=$want")
    docker import "${args[@]}" --message "kiln fixture ($kind)" "$tarf" "$name" >/dev/null
    log "imported  $name"
}

# ---------------------------------------------------------------------- main

need_py='' need_conda='' need_bb=''
for entry in "${FIXTURES[@]}"; do
    case ${entry#*=} in
        python | cuda) need_py=1 ;;
        conda) need_py=1 need_conda=1 ;;
        busybox) need_bb=1 ;;
        *) die "bad fixture entry '$entry' (want NAME=python|cuda|conda|busybox)" ;;
    esac
done
[ -n "$need_py" ] && build_python_rootfs
[ -n "$need_conda" ] && build_conda_rootfs
[ -n "$need_bb" ] && build_busybox_rootfs

log "engine ${DOCKER_HOST:-unix:///var/run/docker.sock} (docker $ENGINE_VERSION)"
for entry in "${FIXTURES[@]}"; do
    ensure_image "${entry%%=*}" "${entry#*=}"
done
log "done in $(($(date +%s) - T0))s"
