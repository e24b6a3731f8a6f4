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

recipe="$(cat "$HERE/pause.c" "$0" | sha256sum | cut -d' ' -f1) $IMAGE"
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

# blob NAME-OF-FILE: moves a file into blobs/sha256/<digest>, prints "<digest> <size>".
blob() {
    local d s
    d="$(sha256sum "$1" | cut -d' ' -f1)"
    s="$(stat -c %s "$1")"
    mv "$1" "$work/layout/blobs/sha256/$d"
    echo "$d $s"
}
det_tar() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "$@"; }

det_tar -C "$work/rootfs" -cf "$work/layer.tar" dev etc pause proc sys tmp
read -r layer_digest layer_size < <(blob "$work/layer.tar")

printf '%s' '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"WorkingDir":"/"},'\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$layer_digest"'"]},'\
'"history":[{"created_by":"meta-tests/containerd/build-pause.sh (meta-cni)"}]}' >"$work/config.json"
read -r config_digest config_size < <(blob "$work/config.json")

printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},'\
'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}]}' \
    >"$work/manifest.json"
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")

# io.containerd.image.name gives ctr the full name; ref.name is the OCI-standard tag.
printf '%s' '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"','\
'"platform":{"architecture":"amd64","os":"linux"},'\
'"annotations":{"io.containerd.image.name":"'"$IMAGE"'","org.opencontainers.image.ref.name":"'"${IMAGE##*:}"'"}}]}' \
    >"$work/layout/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$CACHE_DIR"
det_tar -C "$work/layout" -cf "$work/pause.tar" blobs index.json oci-layout
mv "$work/pause.tar" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$recipe" >"$RECIPE"
log "built $OUT: $IMAGE, manifest sha256:$manifest_digest"
echo "$OUT"
