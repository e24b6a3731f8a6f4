#!/bin/sh
# Build the libcni-driver test helper against Debian's libcni
# (golang-github-appc-cni-dev, GOPATH layout under /usr/share/gocode).
#
#   meta-tests/libcni-driver/build.sh [OUTPUT_PATH]
#
# OUTPUT_PATH defaults to $CARGO_TARGET_DIR/libcni-driver, else
# /tmp/libcni-driver.  Builds in GOPATH mode (GO111MODULE=off): no module
# proxy or network is used; all imports resolve from $LIBCNI_GOPATH
# (default /usr/share/gocode).  Prints the output path on success.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
gopath=${LIBCNI_GOPATH:-/usr/share/gocode}

if [ $# -ge 1 ] && [ -n "$1" ]; then
    out=$1
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    out=$CARGO_TARGET_DIR/libcni-driver
else
    out=/tmp/libcni-driver
fi

die() { echo "libcni-driver/build.sh: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 ||
    die "'go' not found in PATH (Debian: apt-get install golang-go)"
[ -f "$gopath/src/github.com/containernetworking/cni/libcni/api.go" ] ||
    die "libcni not found under $gopath/src/github.com/containernetworking/cni (Debian: apt-get install golang-github-appc-cni-dev, or set LIBCNI_GOPATH)"

# Go needs a writable build cache; HOME may be unset/read-only under test runners.
if [ -z "${GOCACHE:-}" ]; then
    if [ -z "${HOME:-}" ] || [ ! -w "${HOME:-/nonexistent}" ]; then
        GOCACHE=${TMPDIR:-/tmp}/libcni-driver-gocache
        export GOCACHE
    fi
fi

mkdir -p "$(dirname "$out")"
case $out in /*) ;; *) out=$(pwd)/$out ;; esac

# GOPATH mode: the package dir is outside GOPATH and is built as a local
# package; imports come only from $gopath.  Clear GOFLAGS so a user's
# module flags (-mod=...) cannot break GOPATH mode.
cd "$here"
GO111MODULE=off GOPATH="$gopath" GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
    go build -trimpath -o "$out" . ||
    die "go build failed"
echo "$out"
