#!/usr/bin/env bash
# Time from `kubectl apply` of a 20-replica Deployment to all 20 pods Ready (the Deployment
# available), on one scripts/cluster.sh cluster, in one run:
#   bridge    the nodes' only CNI configuration is the reference bridge plugin
#             (/usr/lib/cni/bridge + host-local on the node's podCIDR), one network per pod
#   meta-cni  meta-cni installed by `kubectl apply -k deploy/`, pods with three networks:
#             eth0 (overlay), net1 (macvlan + meta-ipam), net2 (secondary VXLAN + meta-ipam),
#             the NADs of meta-tests/cluster/nads.yaml
# Each round applies the Deployment, waits for `kubectl rollout status`, deletes it and waits
# until its pods are gone. Prints one line per round and the medians.
#
# Usage: meta-tests/cluster/bench.sh [ROUNDS]   (default 5; root; builds what is missing)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROUNDS="${1:-5}"
NAME="mcb$$"
NAME="${NAME:0:12}"
CL="$HERE/scripts/cluster.sh"
REPLICAS=20

kc() { bash "$CL" kubectl "$NAME" -- "$@"; }
on() { bash "$CL" exec "$NAME" "$1" -- "${@:2}"; }

cleanup() {
    rc=$?
    if [ $rc != 0 ]; then
        echo "bench.sh: failed (exit $rc); the cluster's state:" >&2
        kc get nodes,pods -A -o wide >&2 || true
        kc get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -20 >&2 || true
    fi
    bash "$CL" down "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
META_CNI_CLUSTER_OWNER_PID=$$ bash "$CL" up "$NAME" >/dev/null

deployment() { # ANNOTATION
    cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench, namespace: default}
spec:
  replicas: $REPLICAS
  selector: {matchLabels: {app: bench}}
  template:
    metadata:
      labels: {app: bench}
      annotations: {$1}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: c
          image: localhost/busybox-static:1.35
          imagePullPolicy: Never
          command: ["/bin/sleep", "2147483647"]
EOF
}

now() { date +%s.%N; }

# round LABEL ANNOTATION: one timed apply -> all Ready, then delete and wait
round() {
    local t0 t1
    t0="$(now)"
    deployment "$2" | kc apply -f - >/dev/null
    kc rollout status deployment/bench --timeout=300s >/dev/null
    t1="$(now)"
    kc delete deployment bench --wait=true >/dev/null
    for _ in $(seq 240); do
        [ -z "$(kc get pods -l app=bench -o name 2>/dev/null)" ] && break
        sleep 0.5
    done
    echo "$t0 $t1" | awk -v l="$1" '{printf "%s %.2f\n", l, $2 - $1}'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

results="$(mktemp)"

# --- the reference bridge plugin alone
for n in node-a node-b; do
    cidr="$(kc get node "$n" -o jsonpath='{.spec.podCIDR}')"
    gw="$(echo "$cidr" | awk -F'[./]' '{print $1"."$2"."$3".1"}')"
    on "$n" sh -c "cat > /etc/cni/net.d/10-bridge.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "bridge", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$cidr", "gateway": "$gw"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
done
kc wait --for=condition=Ready node --all --timeout=120s >/dev/null
round warmup-bridge "" >/dev/null
for r in $(seq "$ROUNDS"); do round bridge "" | tee -a "$results"; done
# the bridge's gateway address is the node subnet's .1, which meta-cni's overlay bridge takes
for n in node-a node-b; do
    on "$n" rm -f /etc/cni/net.d/10-bridge.conflist
    on "$n" ip link del cni0
done

# --- meta-cni, three networks
kc apply -k "$HERE/deploy" >/dev/null
kc -n kube-system rollout status daemonset/meta-cni --timeout=180s >/dev/null
kc wait --for=condition=Ready node --all --timeout=180s >/dev/null
kc -n meta-cni-system rollout status deployment/meta-cni-webhook --timeout=180s >/dev/null
kc apply -f "$HERE/meta-tests/cluster/nads.yaml" >/dev/null
ANN='k8s.v1.cni.cncf.io/networks: "lan,blue"'
round warmup-meta-cni "$ANN" >/dev/null
for r in $(seq "$ROUNDS"); do round meta-cni "$ANN" | tee -a "$results"; done

echo "median seconds, $REPLICAS replicas, $ROUNDS rounds:"
for l in bridge meta-cni; do
    printf '  %-9s %s\n' "$l" "$(awk -v l="$l" '$1 == l {print $2}' "$results" | median)"
done
rm -f "$results"
