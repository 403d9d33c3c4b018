#!/usr/bin/env bash
# `make image`: build the Dockerfile with podman from a Debian base made here, then check the image by
# running its commands in a chroot of its exported filesystem (`podman run` cannot set rlimits on this kind
# of machine). Needs root (apt-get, mmdebstrap, chroot, mount); not part of `make test`.
#
#   BASE_IMAGE=docker.io/library/debian:bookworm-slim@sha256:...  use a pulled base instead of mmdebstrap
#   IMAGE=localhost/txoutbox:dev                                   the tag to build
set -euo pipefail

cd "$(dirname "$0")/../.."
WORK=build/image
IMAGE=${IMAGE:-localhost/txoutbox:dev}
LOCAL_BASE=localhost/txoutbox-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
    echo "make image needs root (apt-get, mmdebstrap, podman build --isolation=chroot, chroot)" >&2
    exit 1
fi
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install --yes -qq podman mmdebstrap >/dev/null
fi
mkdir -p "$WORK"

# The base: a Debian bookworm root filesystem (minbase, like debian:bookworm-slim), imported once.
if [ -z "${BASE_IMAGE:-}" ]; then
    BASE_IMAGE=$LOCAL_BASE
    if ! podman image exists "$LOCAL_BASE"; then
        start=$(date +%s)
        # like debian:bookworm-slim: no documentation, manual pages or translations
        mmdebstrap --quiet --variant=minbase \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            bookworm "$WORK/base-rootfs.tar" "$MIRROR"
        podman import --quiet "$WORK/base-rootfs.tar" "$LOCAL_BASE" >/dev/null
        rm -f "$WORK/base-rootfs.tar"
        echo "base image $LOCAL_BASE made by mmdebstrap in $(($(date +%s) - start)) s"
    fi
fi

start=$(date +%s)
# The machine's CA bundle is handed to the build as a secret (never stored in the image): it holds the CA of
# the TLS-intercepting proxy that reaches PyPI from here, if there is one.
podman build --isolation=chroot --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --secret "id=build-ca,src=${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" \
    --tag "$IMAGE" --file Dockerfile .
build_seconds=$(($(date +%s) - start))

# The image's filesystem, for the checks.
rm -rf "$WORK/rootfs" && mkdir -p "$WORK/rootfs"
container=$(podman create "$IMAGE")
trap 'podman rm --force "$container" >/dev/null' EXIT
podman export "$container" | tar -x -C "$WORK/rootfs"

user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
.venv/bin/python infra/image/check.py "$WORK/rootfs" --user "$user" --entrypoint "$entrypoint"
echo "image $IMAGE: built in ${build_seconds} s, $((size / 1000000)) MB"
