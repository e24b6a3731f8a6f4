#!/usr/bin/env bash
# The whole meta-cni test suite, on a fresh Debian 12 machine, as root.
# Installs the Debian packages it needs (reference CNI plugins, Go + libcni, nftables, ...),
# then runs formatting, lints and every test. Exits non-zero if anything cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: must run as root (tests create network namespaces)" >&2
    exit 1
fi

PKGS=(containernetworking-plugins golang-go golang-github-appc-cni-dev nftables iptables iproute2 util-linux iputils-ping iperf3 jq containerd runc gcc libc6-dev strace busybox-static)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for f in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/static /usr/lib/cni/tuning; do
    [ -x "$f" ] || { echo "missing reference plugin $f" >&2; exit 1; }
done
command -v nft >/dev/null || { echo "nft missing" >&2; exit 1; }
command -v go >/dev/null || { echo "go missing" >&2; exit 1; }

# Reuse a target dir outside the clone (CI runs in fresh clones).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/meta-cni-target}"
export CARGO_TERM_COLOR=never

# Test fixtures built from Debian packages, cached outside the clone (once per machine):
# a real kube-apiserver v1.20.2 with kubelet, kube-controller-manager and kube-scheduler from the
# same source for scripts/cluster.sh (meta-tests/apiserver/build.sh all, ~12 min the first time), the
# pause image for containerd (meta-tests/containerd/build-pause.sh) and kubectl v1.20.2, Debian's
# kubernetes-client unpacked into the cache (meta-tests/kubectl/fetch.sh), and the OCI images
# the cluster test (meta-tests/tests/cluster.rs, scripts/cluster.sh) loads into its nodes:
# meta-cni's (a static release build of this checkout, in its own target dir; rebuilt when
# the sources change) and busybox-static (scripts/images.sh).
echo "== fixtures: kube-apiserver, kubelet, kube-controller-manager, kube-scheduler, pause image, kubectl, images"
bash meta-tests/apiserver/build.sh all >/dev/null
bash meta-tests/containerd/build-pause.sh >/dev/null
bash meta-tests/kubectl/fetch.sh >/dev/null
bash scripts/images.sh >/dev/null

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/meta-cni-test.log
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' /tmp/meta-cni-test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' /tmp/meta-cni-test.log | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
exit "$status"
