#!/usr/bin/env bash
# Demo of what meta-cni can do so far (root, Debian 12): a "node" network namespace with
# two "pods", both attached by the meta-bridge delegate (host-local IPAM, gateway, ipMasq
# via nftables), the CNI results, a ping between the pods, CHECK, DEL, and clean-up.
# Everything happens in namespaces this script creates; the machine's own network is
# never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root" >&2; exit 1; }
for p in iproute2 nftables iputils-ping; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq "$p" >/dev/null; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/meta-cni-target}"
echo "== building meta-bridge"
cargo build --release --quiet -p meta-bridge
BIN="$CARGO_TARGET_DIR/release/meta-bridge"

ID=$$
NODE=mcdemo-node-$ID; PODA=mcdemo-a-$ID; PODB=mcdemo-b-$ID
WORK=$(mktemp -d)
cleanup() {
    for n in $NODE $PODA $PODB; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
for n in $NODE $PODA $PODB; do ip netns add "$n"; ip -n "$n" link set lo up; done

CONF=$(cat <<JSON
{"cniVersion": "1.1.0", "name": "demo-net", "type": "bridge", "bridge": "demobr0",
 "isGateway": true, "isDefaultGateway": true, "ipMasq": true, "mtu": 1450,
 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]], "dataDir": "$WORK/ipam"}}
JSON
)
cni() { # verb container pod
    echo "$CONF" | nsenter --net=/run/netns/$NODE env CNI_COMMAND=$1 CNI_CONTAINERID=$2 \
        CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3" "$BIN"
}
echo "== network config"; echo "$CONF"
echo "== ADD pod A"; RA=$(cni ADD demo-a $PODA); echo "$RA"
echo "== ADD pod B"; RB=$(cni ADD demo-b $PODB); echo "$RB"
IPB=$(echo "$RB" | sed -E 's/.*"address":"([0-9.]+)\/.*/\1/')
echo "== pod A: ip addr / ip route"; ip -n $PODA -br addr; ip -n $PODA route
echo "== node: bridge and nftables masquerade"; ip -n $NODE -br addr show demobr0
ip netns exec $NODE nft list table inet meta_cni | sed -n '1,20p'
echo "== ping pod A -> pod B ($IPB)"; ip netns exec $PODA ping -c 2 -W 1 "$IPB"
echo "== CHECK pod A"
echo "$CONF" | sed "s|}$|, \"prevResult\": $RA}|" | nsenter --net=/run/netns/$NODE env CNI_COMMAND=CHECK \
    CNI_CONTAINERID=demo-a CNI_NETNS=/run/netns/$PODA CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$BIN" && echo "CHECK ok"
echo "== DEL both (twice: DEL is idempotent)"
for i in 1 2; do cni DEL demo-a $PODA; cni DEL demo-b $PODB; done
echo "IPs still reserved: $(ls "$WORK/ipam/demo-net" | grep -vc -e lock -e last_reserved || true)"
echo "== demo done; namespaces removed"
