#!/usr/bin/env bash
# Fetches kubectl v1.20.2 for the deploy tests: Debian bookworm's `kubernetes-client`
# package (1.20.5+really1.20.2, i.e. upstream v1.20.2, the same source as the API server
# fixture of meta-tests/apiserver/build.sh). The package is not installed (it would
# conflict with another `kubectl` on the machine, e.g. a `kubectl` package): it is
# downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into the cache.
#
# Usage: meta-tests/kubectl/fetch.sh [--force]
#   Prints the binary's path (and nothing else) on stdout; progress goes to stderr.
#   Idempotent: when the binary is in the cache and says v1.20.2, nothing else happens.
#   --force fetches again. Needs root for apt-get update and the cache.
set -euo pipefail

VERSION=1.20.2
CACHE_DIR=/var/cache/meta-cni
DEST="$CACHE_DIR/kubectl-$VERSION"
BIN="$DEST/usr/bin/kubectl"

log() { echo "fetch.sh: $*" >&2; }
die() {
    echo "fetch.sh: ERROR: $*" >&2
    exit 1
}
trap 'rc=$?; [ $rc -eq 0 ] || echo "fetch.sh: FAILED (exit $rc) at line $LINENO: $BASH_COMMAND" >&2' EXIT

FORCE=0
for a in "$@"; do
    case "$a" in
    --force) FORCE=1 ;;
    -h | --help)
        sed -n '2,12p' "$0" >&2
        exit 0
        ;;
    *) die "unknown argument: $a" ;;
    esac
done

binary_ok() {
    [ -x "$BIN" ] && "$BIN" version --client --short 2>/dev/null | grep -qx "Client Version: v$VERSION"
}

mkdir -p "$CACHE_DIR" 2>/dev/null || die "cannot create $CACHE_DIR (run as root)"
exec 9>"$CACHE_DIR/.kubectl-$VERSION.lock" || die "cannot open lock in $CACHE_DIR"
flock 9 # another test process may be fetching: wait for it

if [ "$FORCE" = 0 ] && binary_ok; then
    echo "$BIN"
    exit 0
fi

command -v dpkg-deb >/dev/null || die "dpkg-deb missing (this script needs a Debian system)"
candidate() { apt-cache policy kubernetes-client 2>/dev/null | sed -n 's/^ *Candidate: //p'; }
CAND="$(candidate)"
case "$CAND" in
*really$VERSION*) ;;
*)
    [ "$(id -u)" = 0 ] || die "apt lists lack kubernetes-client …really$VERSION and not root: run as root"
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || die "apt-get update failed"
    CAND="$(candidate)"
    case "$CAND" in
    *really$VERSION*) ;;
    *) die "kubernetes-client candidate is '$CAND', expected Debian bookworm's …really$VERSION" ;;
    esac
    ;;
esac

# The unpacked tree is moved into place from the cache's file system; the download goes
# to a directory that apt's sandbox user (_apt) can write.
WORK="$(mktemp -d "$CACHE_DIR/.kubectl-fetch.XXXXXX")"
DL="$(mktemp -d)"
chmod 755 "$DL"
chown _apt "$DL" 2>/dev/null || true
trap 'rc=$?; rm -rf "$WORK" "$DL"; [ $rc -eq 0 ] || echo "fetch.sh: FAILED (exit $rc)" >&2' EXIT
log "apt-get download kubernetes-client=$CAND"
(cd "$DL" && apt-get download -qq "kubernetes-client=$CAND" >&2) || die "apt-get download kubernetes-client failed"
DEB="$(ls "$DL"/kubernetes-client_*.deb 2>/dev/null | head -n1 || true)"
[ -n "$DEB" ] || die "apt-get download left no kubernetes-client_*.deb"
dpkg-deb -x "$DEB" "$WORK/root" || die "dpkg-deb -x $DEB failed"
[ -x "$WORK/root/usr/bin/kubectl" ] || die "$DEB has no usr/bin/kubectl"
"$WORK/root/usr/bin/kubectl" version --client --short 2>/dev/null | grep -qx "Client Version: v$VERSION" ||
    die "unpacked kubectl says '$("$WORK/root/usr/bin/kubectl" version --client --short 2>&1)'"
{
    echo "kubectl v$VERSION"
    echo "package: $(basename "$DEB")"
    echo "sha256: $(sha256sum "$WORK/root/usr/bin/kubectl" | cut -d' ' -f1)"
    echo "fetched: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$WORK/root/BUILDINFO"
rm -rf "$DEST"
mv "$WORK/root" "$DEST"
binary_ok || die "installed $BIN does not run"
log "unpacked $(basename "$DEB") into $DEST"
echo "$BIN"
