#!/usr/bin/env bash
# build-image.sh - build the kiln frontend image.
#
# Builds kiln-frontend as a statically linked x86_64 binary, stages it next to
# frontend/Dockerfile in an otherwise empty directory, and builds that with
# the docker engine's own builder. The image is FROM scratch: no base image is
# pulled, so this works with no registry.
#
# Usage: frontend/build-image.sh [TAG]      (default TAG: kiln/frontend:dev)
# Env:   CARGO_TARGET_DIR  where cargo builds (default: <repo>/target)
#        DOCKER            the docker CLI to use (default: docker)
set -euo pipefail

tag=${1:-kiln/frontend:dev}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$repo/target}
docker=${DOCKER:-docker}

# --target keeps RUSTFLAGS off build scripts and proc macros, and puts the
# static build in target/$triple, apart from the ordinary dynamic one.
echo "build-image: cargo build --release -p kiln-frontend --target $triple (static)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p kiln-frontend --target "$triple" \
    --manifest-path "$repo/Cargo.toml" --target-dir "$target_dir"

bin=$target_dir/$triple/release/kiln-frontend
# A scratch image has no dynamic loader: refuse a binary that needs one.
if readelf -l "$bin" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    echo "build-image: $bin is dynamically linked; it cannot run FROM scratch" >&2
    exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/kiln-frontend"
cp "$here/Dockerfile" "$stage/Dockerfile"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
revision=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "build-image: docker build -t $tag ($version, $revision)" >&2
"$docker" build -t "$tag" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    "$stage"
echo "build-image: built $tag; use it with '// syntax=$tag' as a recipe's first line" >&2
