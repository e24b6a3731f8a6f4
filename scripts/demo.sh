#!/usr/bin/env bash
# meta-cni demo (root, Debian 12, no Kubernetes): a "node" network namespace with two
# "pods". Each pod gets three networks through the meta plugin, exactly as a runtime
# would call it: eth0 on the cluster network (bridge), net1 on a second bridge network and
# net2 on a macvlan network, from NetworkAttachmentDefinitions in a local directory named
# by the pod's k8s.v1.cni.cncf.io/networks annotation. Shows the result, the
# network-status, connectivity per network, CHECK, DEL, and cleans up. Everything happens in
# namespaces this script creates; the machine's own network is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root" >&2; exit 1; }
need=()
for p in iproute2 nftables iputils-ping jq; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/meta-cni-target}"
echo "== building meta-cni"
cargo build --release --quiet -p meta-cni
BIN="$CARGO_TARGET_DIR/release/meta-cni"

ID=$$
NODE=mcdemo-node-$ID; PODS=(mcdemo-a-$ID mcdemo-b-$ID)
W=$(mktemp -d)
cleanup() {
    for n in $NODE "${PODS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
for n in $NODE "${PODS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
# The macvlan parent: a veth end inside the node (never a real interface).
ip -n $NODE link add demo-uplink type veth peer name demo-peer
ip -n $NODE link set demo-uplink up; ip -n $NODE link set demo-peer up

mkdir -p "$W/net.d" "$W/nads/demo" "$W/cache"
cat > "$W/net.d/10-cluster.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "cluster", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "subnet": "10.244.0.0/24", "dataDir": "$W/ipam"}}]}
JSON
nad() { # name config-json
    jq -n --arg n "$1" --arg c "$2" '{apiVersion: "k8s.cni.cncf.io/v1", kind: "NetworkAttachmentDefinition",
        metadata: {name: $n, namespace: "demo"}, spec: {config: $c}}' > "$W/nads/demo/$1.json"
}
nad storage '{"cniVersion": "1.0.0", "type": "bridge", "bridge": "storage0", "mtu": 9000,
  "ipam": {"type": "host-local", "subnet": "192.168.50.0/24", "dataDir": "'"$W"'/ipam"}}'
nad uplink '{"cniVersion": "1.0.0", "type": "macvlan", "master": "demo-uplink", "mode": "bridge",
  "ipam": {"type": "host-local", "subnet": "172.30.0.0/24", "dataDir": "'"$W"'/ipam"}}'
echo "== NetworkAttachmentDefinitions (local directory)"; cat "$W/nads/demo/"*.json | jq -c .

conf() { # annotation
    jq -n --arg w "$W" --arg a "$1" '{cniVersion: "1.0.0", name: "meta", type: "meta-cni",
      clusterNetwork: "cluster", confDir: ($w + "/net.d"), cniDir: ($w + "/cache"), localNadDir: ($w + "/nads"),
      capabilities: {"io.kubernetes.cri.pod-annotations": true},
      runtimeConfig: {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": $a}}}'
}
ANN='[{"name": "storage", "interface": "storage0"}, {"name": "uplink"}]'
cni() { # verb pod-index
    local pod=${PODS[$2]}
    conf "$ANN" | nsenter --net=/run/netns/$NODE env CNI_COMMAND=$1 CNI_CONTAINERID=demo-$2 \
        CNI_NETNS=/run/netns/$pod CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=pod-$2" "$BIN"
}
echo "== pod annotation: k8s.v1.cni.cncf.io/networks: $ANN"
for i in 0 1; do
    echo "== ADD pod-$i (result for the runtime: the cluster network's)"; cni ADD $i | jq -c .
done
echo "== pod-0 interfaces"; ip -n ${PODS[0]} -br addr
echo "== pod-0 routes"; ip -n ${PODS[0]} route
echo "== network-status of pod-0 (what Kubernetes would see on the pod)"
jq . "$W/cache/status/demo/pod-0.json"
ipof() { jq -r --arg i "$2" '.[] | select(.interface == $i) | .ips[0]' "$W/cache/status/demo/pod-$1.json"; }
echo "== connectivity pod-0 -> pod-1, per network"
for ifc in eth0 storage0 net2; do
    dst=$(ipof 1 $ifc)
    if ip netns exec ${PODS[0]} ping -c 1 -W 1 -I $ifc "$dst" >/dev/null; then r=ok; else r=FAIL; fi
    printf '  %-9s -> %-15s %s\n' "$ifc" "$dst" "$r"
done
echo "== CHECK pod-0"; cni CHECK 0 && echo "CHECK ok"
echo "== DEL both pods (twice: DEL is idempotent)"
for i in 0 1; do cni DEL $i; cni DEL $i; done
echo "== after DEL: pod-0 has: $(ip -n ${PODS[0]} -br link | awk '{print $1}' | tr '\n' ' ')"
echo "   IPs still reserved: $(find "$W/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)"
echo "   journal entries left: $(find "$W/cache" -type f | wc -l)"
echo "== demo done; namespaces removed"
