#!/usr/bin/env bash
# Builds the pod-sandbox ("pause") image for the containerd integration tests, offline:
# a static pause binary compiled from meta-tests/containerd/pause.c with Debian's gcc, packed
# by hand into an OCI image-layout tarball (one uncompressed layer, config, manifest,
# index.json, oci-layout; every blob named by its sha256) that `ctr images import` reads.
# Also installs the Debian packages the tests need: containerd (1.6, with its CRI plugin),
# runc, the reference CNI plugins, and gcc/libc6-dev for the build.
#
# Usage: meta-tests/containerd/build-pause.sh [--force]
#   Prints the tarball's path (and nothing else) on stdout; progress goes to stderr.
#   Idempotent: when the tarball exists and was made from the same pause.c and this same
#   script (a recipe hash kept beside it), only the packages are checked. Needs root.
#   The build is deterministic (fixed mtimes, owners and order), so a rebuild gives the
#   same image digest.
#
# The image is named IMAGE below; meta-tests/src/containerd.rs sets it as the CRI plugin's
# sandbox_image. It is a local name on purpose: containerd never tries to pull it from
# a real registry (there is no network), and a missing import fails fast instead.
set -euo pipefail

IMAGE=localhost/meta-cni/pause:1.0
CACHE_DIR=/var/cache/meta-cni
OUT="$CACHE_DIR/pause.tar"
RECIPE="$OUT.recipe"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PKGS=(containerd runc containernetworking-plugins gcc libc6-dev tar coreutils util-linux)

log() { echo "build-pause.sh: $*" >&2; }
die() {
    echo "build-pause.sh: ERROR: $*" >&2
    exit 1
}

FORCE=0
for a in "$@"; do
    case "$a" in
    --force) FORCE=1 ;;
    *) die "unknown argument $a" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, $CACHE_DIR)"

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
for b in /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/bin/ctr /usr/bin/runc /usr/bin/nsenter; do
    [ -x "$b" ] || die "$b missing after installing ${PKGS[*]}"
done

OCI_LIB="$HERE/../../scripts/lib/oci-image.sh"
# shellcheck source=../../scripts/lib/oci-image.sh
. "$OCI_LIB"
recipe="$(cat "$HERE/pause.c" "$0" "$OCI_LIB" | sha256sum | cut -d' ' -f1) $IMAGE"
if [ "$FORCE" = 0 ] && [ -s "$OUT" ] && [ "$(cat "$RECIPE" 2>/dev/null)" = "$recipe" ]; then
    log "up to date: $OUT"
    echo "$OUT"
    exit 0
fi

work="$(mktemp -d /var/tmp/meta-cni-pause.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs" "$work/layout/blobs/sha256"

log "compiling pause.c (static)"
gcc -static -Os -s -Wall -Werror -o "$work/rootfs/pause" "$HERE/pause.c"
"$work/rootfs/pause" -v >/dev/null || die "the pause binary does not run"
chmod 0755 "$work/rootfs/pause"
# Mount points runc would otherwise create (the sandbox rootfs is read-only after setup).
mkdir -p "$work/rootfs/dev" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/etc" "$work/rootfs/tmp"
chmod 0755 "$work/rootfs/dev" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/etc"
chmod 1777 "$work/rootfs/tmp"

mkdir -p "$CACHE_DIR"
oci_image "$IMAGE" "$work/rootfs" "$OUT" '{"Entrypoint":["/pause"],"WorkingDir":"/"}'
echo "$recipe" >"$RECIPE"
echo "$OUT"
