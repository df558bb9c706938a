#!/usr/bin/env bash
# Make a local Debian 12 + python3 base image for the service image, for machines that reach the Debian
# mirror but no image registry (so `FROM python:3.11-slim` cannot be pulled).
#
#   docker/build-local-base.sh [--force]      # prints the tag; skips the work when the tag exists
#
# The rootfs comes from debootstrap with the Debian mirror apt already uses on this host (read from apt's
# own configuration, never written into the repository). The host's extra CA certificates
# (/usr/local/share/ca-certificates) go into the image's bundle, so that pip in a build trusts what the
# host trusts. Needs root, debootstrap and a running Docker engine (docker/ensure-engine.sh).
set -euo pipefail

TAG=${LAYERFREEZE_BASE_TAG:-layerfreeze-base:bookworm}
LOG=${LAYERFREEZE_BASE_LOG:-/var/tmp/layerfreeze-base.log}
SUITE=bookworm
PACKAGES="python3 python3-venv python3-pip ca-certificates"

if [ "${1:-}" != "--force" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG"
    exit 0
fi
previous=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)

fail() { echo "build-local-base: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap and chroot)"
command -v debootstrap >/dev/null || fail "debootstrap is not installed (Debian: apt-get install debootstrap)"

# The mirrors apt uses here, as apt itself resolves them from its sources: "<uri> <suite>" per index.
targets=$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | sort -u)
mirror_for() { awk -v s="$1" '$2 == s { print $1; exit }' <<<"$targets"; }
# On a host of another Debian release, the same mirrors serve bookworm too.
HOST_SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
MIRROR=$(mirror_for "$SUITE"); MIRROR=${MIRROR:-$(mirror_for "$HOST_SUITE")}
SECURITY=$(mirror_for "$SUITE-security"); SECURITY=${SECURITY:-$(mirror_for "$HOST_SUITE-security")}
UPDATES=$(mirror_for "$SUITE-updates"); UPDATES=${UPDATES:-$MIRROR}
[ -n "$MIRROR" ] || fail "apt has no Debian source here to take $SUITE from (see /etc/apt/sources.list*)"

# The long output of debootstrap and apt goes to $LOG; its end is shown when a step fails.
run() {
    "$@" >>"$LOG" 2>&1 && return 0
    tail -n 30 "$LOG" >&2
    fail "failed: $* (log: $LOG)"
}

start=$SECONDS
: >"$LOG"
ROOTFS=$(mktemp -d /var/tmp/layerfreeze-rootfs.XXXXXX)
cleanup() {
    umount "$ROOTFS/proc" 2>/dev/null || true
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

echo "build-local-base: debootstrap $SUITE into $ROOTFS (log: $LOG)" >&2
run debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR"

{
    echo "deb $MIRROR $SUITE main"
    [ -z "$UPDATES" ] || echo "deb $UPDATES $SUITE-updates main"
    [ -z "$SECURITY" ] || echo "deb $SECURITY $SUITE-security main"
} >"$ROOTFS/etc/apt/sources.list"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
run chroot "$ROOTFS" apt-get update
# shellcheck disable=SC2086  # the package list splits into words
run env DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y --no-install-recommends $PACKAGES

# The host's extra certificate authorities, into the image's bundle.
shopt -s nullglob
extra=(/usr/local/share/ca-certificates/*.crt)
if [ ${#extra[@]} -gt 0 ]; then
    cp "${extra[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
fi
run chroot "$ROOTFS" update-ca-certificates
run chroot "$ROOTFS" apt-get clean
# Slim like Debian's own container images: no manuals or translations (copyright files stay), now and in
# packages installed later.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/*
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
umount "$ROOTFS/proc"
# The engine supplies resolv.conf and hosts at run time; leave no host state in the image.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/* "$ROOTFS/etc/resolv.conf"

BUNDLE=/etc/ssl/certs/ca-certificates.crt
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "ENV SSL_CERT_FILE=$BUNDLE" \
    --change "ENV PIP_CERT=$BUNDLE" \
    --change 'CMD ["python3"]' \
    --message "Debian $SUITE minbase + $PACKAGES" \
    - "$TAG" >/dev/null
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$TAG")" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true  # the one replaced, unless something uses it
fi
echo "build-local-base: $TAG made in $((SECONDS - start)) s," \
    "$(docker image inspect --format '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }')" >&2
echo "$TAG"
