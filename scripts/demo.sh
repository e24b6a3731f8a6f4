#!/usr/bin/env bash
# meta-cni showcase (root, Debian 12, no Kubernetes needed).
#
# Two "nodes" (network namespaces) joined by an underlay, each running meta-cni-agent (the
# VXLAN overlay's node daemon, local mode with a static node list), and three "pods". The
# runtime's call is simulated exactly: the meta-cni binary, CNI_* environment, the pod's
# k8s.v1.cni.cncf.io/networks annotation in runtimeConfig. Every pod gets
#   eth0  the cluster network: the primary VXLAN overlay across nodes
#   net1  "storage": a node-local bridge
#   net2  "uplink":  macvlan on the node's LAN interface (a shared L2 between the nodes)
#   net3  "tenant":  a secondary VXLAN segment with its own VNI (100)
# then shows the network-status, a connectivity matrix per network, CHECK, DEL, and cleans
# up. Everything lives in namespaces this script creates; the machine's own network is
# never touched.
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
echo "== building meta-cni and meta-cni-agent (release)"
cargo build --release --quiet -p meta-cni -p meta-cni-agent
BIN="$CARGO_TARGET_DIR/release/meta-cni"
AGENT="$CARGO_TARGET_DIR/release/meta-cni-agent"

ID=$$
UL=mcd-ul-$ID; LAN=mcd-lan-$ID
NODES=(node-a node-b)
declare -A NS=([node-a]=mcd-a-$ID [node-b]=mcd-b-$ID)
declare -A UIP=([node-a]=192.168.200.1 [node-b]=192.168.200.2)
declare -A SUB=([node-a]=10.244.1.0/24 [node-b]=10.244.2.0/24)
declare -A IDX=([node-a]=1 [node-b]=2)
PODS=(pod-a1 pod-a2 pod-b1)
declare -A PODNODE=([pod-a1]=node-a [pod-a2]=node-a [pod-b1]=node-b)
declare -A PODNS=([pod-a1]=mcd-p1-$ID [pod-a2]=mcd-p2-$ID [pod-b1]=mcd-p3-$ID)
W=$(mktemp -d)
AGENT_PIDS=()
cleanup() {
    for p in "${AGENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in $UL $LAN "${NS[@]}" "${PODNS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

echo "== the world: an underlay (192.168.200.0/24), a LAN for macvlan, two nodes, three pods"
for n in $UL $LAN "${NS[@]}" "${PODNS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
for seg in $UL $LAN; do ip -n $seg link add br0 type bridge; ip -n $seg link set br0 up; done
for node in "${NODES[@]}"; do
    ns=${NS[$node]}; i=${IDX[$node]}
    ip -n $ns link add eth0 type veth peer name ul$i netns $UL
    ip -n $UL link set ul$i master br0 up
    ip -n $ns addr add ${UIP[$node]}/24 dev eth0; ip -n $ns link set eth0 up
    ip -n $ns route add default via 192.168.200.254 dev eth0 onlink
    ip -n $ns link add lan0 type veth peer name lan$i netns $LAN
    ip -n $LAN link set lan$i master br0 up; ip -n $ns link set lan0 up
done

# The agent's node list (local mode; in Kubernetes it watches Node objects instead).
jq -n --arg a "${SUB[node-a]}" --arg b "${SUB[node-b]}" '[
  {name: "node-a", podSubnet: $a, underlayIP: "192.168.200.1"},
  {name: "node-b", podSubnet: $b, underlayIP: "192.168.200.2"}]' > "$W/nodes.json"

for node in "${NODES[@]}"; do
    d="$W/$node"; i=${IDX[$node]}
    mkdir -p "$d/net.d" "$d/nads/demo" "$d/cache" "$d/run"
    nsenter --net=/run/netns/${NS[$node]} "$AGENT" --node-name $node --mode local \
        --nodes-file "$W/nodes.json" --cluster-cidr 10.244.0.0/16 \
        --subnet-file "$d/run/subnet.env" --firewall-lock "$d/run/firewall.lock" \
        --segment-state-dir "$d/vxlan-state" \
        --log-level warn &
    AGENT_PIDS+=($!)
    # eth0: the primary overlay; the node subnet and MTU come from the agent's subnet file.
    jq -n --arg d "$d" '{cniVersion: "1.1.0", name: "overlay", plugins: [
        {type: "vxlan", mode: "primary", subnetFile: ($d + "/run/subnet.env"), clusterCIDR: "10.244.0.0/16",
         ipam: {type: "host-local", dataDir: ($d + "/ipam")}}]}' > "$d/net.d/10-overlay.conflist"
    nad() { jq -n --arg n "$1" --arg c "$2" '{apiVersion: "k8s.cni.cncf.io/v1", kind: "NetworkAttachmentDefinition",
        metadata: {name: $n, namespace: "demo"}, spec: {config: $c}}' > "$d/nads/demo/$1.json"; }
    nad storage "$(jq -nc --arg d "$d" --arg i "$i" '{cniVersion: "1.1.0", type: "bridge", bridge: "storage0",
        ipam: {type: "host-local", ranges: [[{subnet: "192.168.50.0/24", rangeStart: ("192.168.50." + $i + "0"),
               rangeEnd: ("192.168.50." + $i + "9")}]], dataDir: ($d + "/ipam")}}')"
    nad uplink "$(jq -nc --arg d "$d" --arg i "$i" '{cniVersion: "1.1.0", type: "macvlan", master: "lan0", mode: "bridge",
        ipam: {type: "host-local", ranges: [[{subnet: "172.30.0.0/24", rangeStart: ("172.30.0." + $i + "0"),
               rangeEnd: ("172.30.0." + $i + "9")}]], dataDir: ($d + "/ipam")}}')"
    # No static peers: the agents give the segment every node as its flood list.
    nad tenant "$(jq -nc --arg d "$d" --arg i "$i" '{cniVersion: "1.1.0", type: "vxlan", vni: 100,
        stateDir: ($d + "/vxlan-state"),
        ipam: {type: "host-local", ranges: [[{subnet: "10.100.0.0/24", rangeStart: ("10.100.0." + $i + "0"),
               rangeEnd: ("10.100.0." + $i + "9")}]], dataDir: ($d + "/ipam")}}')"
done
for node in "${NODES[@]}"; do
    for _ in $(seq 50); do [ -s "$W/$node/run/subnet.env" ] && break; sleep 0.1; done
    echo "-- $node: agent up; $(tr '\n' ' ' < "$W/$node/run/subnet.env")"
done

ANN='[{"name": "storage"}, {"name": "uplink"}, {"name": "tenant"}]'
cni() { # verb pod
    local pod=$1 verb=$2 node=${PODNODE[$1]} d="$W/${PODNODE[$1]}"
    jq -n --arg d "$d" --arg a "$ANN" '{cniVersion: "1.1.0", name: "meta", type: "meta-cni",
        clusterNetwork: "overlay", confDir: ($d + "/net.d"), cniDir: ($d + "/cache"), localNadDir: ($d + "/nads"),
        capabilities: {"io.kubernetes.cri.pod-annotations": true},
        runtimeConfig: {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": $a}}}' |
    nsenter --net=/run/netns/${NS[$node]} env CNI_COMMAND=$verb CNI_CONTAINERID=c-$pod \
        CNI_NETNS=/run/netns/${PODNS[$pod]} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$pod" "$BIN"
}
echo "== pod annotation k8s.v1.cni.cncf.io/networks: $ANN"
for pod in "${PODS[@]}"; do
    echo "== ADD $pod on ${PODNODE[$pod]} -> the runtime gets the cluster network's result:"
    cni $pod ADD | jq -c '{ips: [.ips[].address], routes: [.routes[]? | .dst]}'
done
echo "== pod-a1: interfaces"; ip -n ${PODNS[pod-a1]} -br addr | grep -v '^lo'
echo "== pod-a1: network-status (what Kubernetes shows on the pod)"
jq -c '.[] | {name, interface, ips, default: (.default // false)}' "$W/node-a/cache/status/demo/pod-a1.json"
ipof() { jq -r --arg i "$2" '.[] | select(.interface == $i) | .ips[0]' "$W/${PODNODE[$1]}/cache/status/demo/$1.json"; }
sleep 2.5   # the agents look for new segments every 2 s
echo "== connectivity from pod-a1, per network (storage is node-local by design)"
printf '  %-6s %-22s %-22s\n' iface "pod-a2 (same node)" "pod-b1 (other node)"
for ifc in eth0 net1 net2 net3; do
    row=""
    for dst in pod-a2 pod-b1; do
        ip=$(ipof $dst $ifc)
        if ip netns exec ${PODNS[pod-a1]} ping -c 1 -W 1 -I $ifc "$ip" >/dev/null 2>&1; then r="ok"; else r="--"; fi
        row+=$(printf '%-22s ' "$ip $r")
    done
    echo "  $(printf '%-6s' $ifc) $row"
done
ip=$(ipof pod-b1 eth0)
echo "== overlay MTU: pod-a1 -> pod-b1 with a 1422-byte DF payload (1450-byte packet inside a 1500-byte underlay)"
ip netns exec ${PODNS[pod-a1]} ping -c 1 -W 1 -M do -s 1422 "$ip" | sed -n 2p
echo "== node-a: what the agent programmed for node-b (overlay route + neighbour, VNI 100 flood list)"
ip -n ${NS[node-a]} route show dev meta.1; ip -n ${NS[node-a]} neigh show dev meta.1
bridge -n ${NS[node-a]} fdb show dev mvx100 | grep 00:00:00:00:00:00
echo "== CHECK pod-a1"; cni pod-a1 CHECK && echo "CHECK ok"
echo "== DEL every pod (twice: DEL is idempotent)"
for pod in "${PODS[@]}"; do cni $pod DEL; cni $pod DEL; done
left=$(find "$W"/node-*/ipam -type f ! -name lock ! -name 'last_reserved_ip*' 2>/dev/null | wc -l)
echo "   IPs still reserved: $left; journal entries left: $(find "$W"/node-*/cache -name '*.json' | wc -l)"
echo "== demo done; namespaces and agents removed"
