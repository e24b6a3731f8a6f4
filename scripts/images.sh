#!/usr/bin/env bash
# Builds meta-cni's OCI images locally, offline, with no registry and no container builder:
#
#   localhost/meta-cni:0.1.0          the release binaries, statically linked (glibc
#                                     crt-static), in /usr/local/bin; the node conflist in
#                                     /etc/meta-cni/00-meta-cni.conflist; nothing else
#                                     (FROM scratch: no shell, no libc, no package manager)
#   localhost/busybox-static:1.35     Debian's busybox-static (ping, nc, ip, sh, ...) for
#                                     test pods
#
# Each is one OCI image-layout tarball (one uncompressed layer, config, manifest, index.json
# with io.containerd.image.name) that `ctr -n k8s.io images import` reads; scripts/cluster.sh
# imports them into every node's containerd. Tarballs are deterministic (fixed mtimes, owners,
# order): the same binaries give the same digest.
#
# Usage: scripts/images.sh [--force] [meta-cni|busybox]...   (default: both)
#   Prints the tarballs' paths, one per line, on stdout; progress goes to stderr.
#   The release build uses CARGO_TARGET_DIR_IMAGE (default /var/tmp/meta-cni-image-target),
#   a target dir of its own: RUSTFLAGS differ from the test build's, and sharing one would
#   rebuild everything each time.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$HERE/scripts/images.sh"
CACHE_DIR=/var/cache/meta-cni/images
TARGET_DIR="${CARGO_TARGET_DIR_IMAGE:-/var/tmp/meta-cni-image-target}"
TRIPLE=x86_64-unknown-linux-gnu
META_IMAGE=localhost/meta-cni:0.1.0
BUSYBOX_IMAGE=localhost/busybox-static:1.35
BINARIES=(meta-cni meta-cni-agent meta-cni-webhook meta-bridge meta-macvlan meta-ipvlan meta-vxlan
    meta-host-local meta-static meta-ipam)
PACKAGES=(meta-cni meta-cni-agent meta-cni-webhook meta-bridge meta-macvlan meta-ipvlan meta-vxlan
    meta-ipam meta-ipam-cluster)

log() { echo "images.sh: $*" >&2; }
die() {
    echo "images.sh: ERROR: $*" >&2
    exit 1
}

FORCE=0
WHICH=()
for a in "$@"; do
    case "$a" in
    --force) FORCE=1 ;;
    meta-cni | busybox) WHICH+=("$a") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d'
        exit 0
        ;;
    *) die "unknown argument $a" ;;
    esac
done
[ ${#WHICH[@]} -gt 0 ] || WHICH=(meta-cni busybox)

# shellcheck source=lib/oci-image.sh
. "$HERE/scripts/lib/oci-image.sh"

# skeleton ROOTFS: the mount points runc expects.
skeleton() {
    mkdir -p "$1"/{dev,proc,sys,etc,tmp,run,var/run}
    chmod 1777 "$1/tmp"
    # numeric users only (runAsUser); /etc/passwd for tools that print names
    printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$1/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$1/etc/group"
}

# The sha256 of everything the release build reads: the workspace's sources, manifests and
# lock file (not docs, tests, benches, scripts, deploy/'s manifests or fuzz/, its own
# workspace; `cargo build --bins` reads no crate's tests/, benches/ or examples/),
# the image's conflist, this script, the toolchain and the flags, every path relative to
# the checkout (sha256sum prints the paths it is given: an absolute one differs per clone).
source_key() {
    (
        cd "$HERE"
        if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git ls-files -co --exclude-standard
        else
            find . -path ./target -prune -o -path ./.git -prune -o -type f -print | sed 's|^\./||'
        fi | grep -Ev '^(docs/|meta-tests/|scripts/|deploy/|fuzz/|\.ci/)|^(delegates/)?[^/]+/(tests|benches|examples)/|\.md$' | LC_ALL=C sort |
            while IFS= read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done | xargs -r -d '\n' sha256sum
        sha256sum deploy/meta-cni.conflist scripts/images.sh scripts/lib/oci-image.sh
        rustc -vV
        echo "$TRIPLE -C target-feature=+crt-static release"
    ) | sha256sum | cut -d' ' -f1
}

build_meta() {
    local out="$CACHE_DIR/meta-cni.tar"
    command -v cargo >/dev/null || die "cargo missing"
    # The build's inputs by content: a fresh clone elsewhere (CI) has new paths and mtimes,
    # which cargo fingerprints, and would rebuild all of it in release for the same sources.
    local src
    src="$(source_key)"
    if [ "$FORCE" = 0 ] && [ -s "$out" ] && [ "$(cat "$out.src" 2>/dev/null)" = "$src" ]; then
        log "up to date (same sources, toolchain and recipe): $out"
        echo "$out"
        return
    fi
    log "release build (static) of ${PACKAGES[*]} into $TARGET_DIR"
    local pkgs=()
    for p in "${PACKAGES[@]}"; do pkgs+=(-p "$p"); done
    # A fixed environment: run from a shell, from cargo test (scripts/cluster.sh in
    # meta-tests/tests/cluster.rs) or from CI, cargo sees the same variables, so the target
    # dir's fingerprints hold and nothing is rebuilt for a mere change of caller.
    local keep=(PATH="$PATH" HOME="$HOME")
    local v
    for v in CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN; do
        [ -z "${!v:-}" ] || keep+=("$v=${!v}")
    done
    (cd "$HERE" && env -i "${keep[@]}" RUSTFLAGS="-C target-feature=+crt-static" \
        CARGO_TARGET_DIR="$TARGET_DIR" CARGO_TERM_COLOR=never \
        cargo build --quiet --release --target "$TRIPLE" --bins "${pkgs[@]}" >&2)
    local bin="$TARGET_DIR/$TRIPLE/release" rootfs
    rootfs="$(mktemp -d /var/tmp/meta-cni-rootfs.XXXXXX)"
    skeleton "$rootfs"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/meta-cni"
    for b in "${BINARIES[@]}"; do
        [ -x "$bin/$b" ] || die "$bin/$b missing after the build"
        # static: no interpreter, so it runs in a scratch image
        if readelf -l "$bin/$b" 2>/dev/null | grep -q 'Requesting program interpreter'; then
            die "$b is dynamically linked"
        fi
        install -m 0755 "$bin/$b" "$rootfs/usr/local/bin/$b"
    done
    install -m 0644 "$HERE/deploy/meta-cni.conflist" "$rootfs/etc/meta-cni/00-meta-cni.conflist"
    local recipe
    recipe="$( (cd "$rootfs" && find . -type f | sort | xargs sha256sum; cat "$SELF" "$HERE/scripts/lib/oci-image.sh") | sha256sum | cut -d' ' -f1) $META_IMAGE"
    if [ "$FORCE" = 0 ] && [ -s "$out" ] && [ "$(cat "$out.recipe" 2>/dev/null)" = "$recipe" ]; then
        log "up to date: $out"
    else
        oci_image "$META_IMAGE" "$rootfs" "$out" \
            '{"Entrypoint":["/usr/local/bin/meta-cni-agent"],"WorkingDir":"/","Env":["PATH=/usr/local/bin"]}'
        echo "$recipe" >"$out.recipe"
    fi
    echo "$src" >"$out.src"
    rm -rf "$rootfs"
    echo "$out"
}

build_busybox() {
    local out="$CACHE_DIR/busybox-static.tar" bb=/bin/busybox
    if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
        log "installing Debian's busybox-static"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2
    fi
    [ -x "$bb" ] || die "$bb missing"
    local recipe
    recipe="$( (sha256sum "$bb"; cat "$SELF" "$HERE/scripts/lib/oci-image.sh") | sha256sum | cut -d' ' -f1) $BUSYBOX_IMAGE"
    if [ "$FORCE" = 0 ] && [ -s "$out" ] && [ "$(cat "$out.recipe" 2>/dev/null)" = "$recipe" ]; then
        log "up to date: $out"
        echo "$out"
        return
    fi
    local rootfs
    rootfs="$(mktemp -d /var/tmp/meta-cni-rootfs.XXXXXX)"
    skeleton "$rootfs"
    mkdir -p "$rootfs/bin"
    install -m 0755 "$bb" "$rootfs/bin/busybox"
    local applet
    for applet in $("$bb" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    oci_image "$BUSYBOX_IMAGE" "$rootfs" "$out" \
        '{"Entrypoint":["/bin/sh"],"WorkingDir":"/","Env":["PATH=/bin"]}'
    echo "$recipe" >"$out.recipe"
    rm -rf "$rootfs"
    echo "$out"
}

for w in "${WHICH[@]}"; do
    case "$w" in
    meta-cni) build_meta ;;
    busybox) build_busybox ;;
    esac
done
