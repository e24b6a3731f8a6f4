#!/usr/bin/env bash
# A real two-node Kubernetes v1.20.2 cluster on this one machine, in network namespaces.
#
#   scripts/cluster.sh up [NAME]        build what is missing, start the cluster, print the
#                                       admin kubeconfig's path (last line of stdout)
#   scripts/cluster.sh down [NAME]      stop everything, remove every namespace, cgroup,
#                                       directory and file it made
#   scripts/cluster.sh status [NAME]    what runs, and the nodes
#   scripts/cluster.sh kubectl [NAME] -- ARGS...
#                                       kubectl v1.20.2 with the admin kubeconfig, from the
#                                       control plane's namespace (the API server is not
#                                       reachable from the root namespace, by design)
#   scripts/cluster.sh exec [NAME] NODE -- CMD...
#                                       CMD in NODE's (node-a, node-b, cp) network and mount
#                                       namespaces: what the node sees (/etc/cni/net.d, ...)
#   scripts/cluster.sh restart [NAME] NODE kubelet|containerd
#                                       stop and start one node daemon (pods keep running)
#
# NAME defaults to $META_CNI_CLUSTER or "mcc" (at most 12 characters: [a-z0-9-]).
#
# The world it builds (nothing is created, addressed or routed in the root namespace):
#   NAME-sw      two bridges: "ul" (the underlay, 10.250.0.0/24) and "lan" (a LAN segment
#                without addresses, for macvlan)
#   NAME-cp      the control plane, eth0 10.250.0.1: etcd (loopback), kube-apiserver
#                (:6443), kube-controller-manager (--allocate-node-cidrs, 10.244.0.0/16,
#                /24 per node), kube-scheduler
#   NAME-node-a  a node "node-a", eth0 10.250.0.11 (default route via the control plane),
#   NAME-node-b  lan0 on the LAN; its own containerd 1.6 and kubelet v1.20.2, in a mount
#                namespace of its own where /etc/cni, /opt, /var/lib/cni, /run and /var/log
#                are the node's private directories (what hostPath volumes see), and a UTS
#                namespace whose host name is the node's name
# State (certificates, kubeconfigs, logs, containerd's and kubelet's data) is under
# /var/tmp/mcc-NAME; etcd's data under /dev/shm. There is no kube-proxy: each node maps the
# "kubernetes" Service 10.96.0.1:443 to the API server with one nftables DNAT rule in its
# own namespace, and the control plane routes each node's pod CIDR to the node (the API
# server calls the webhook at its pod's address: --enable-aggregator-routing).
#
# Fixtures (built once per machine, cached under /var/cache/meta-cni): kube-apiserver,
# kubelet, kube-controller-manager, kube-scheduler (meta-tests/apiserver/build.sh), the pause
# image (meta-tests/containerd/build-pause.sh), kubectl (meta-tests/kubectl/fetch.sh), the
# meta-cni and busybox images (scripts/images.sh). `up` runs whichever is missing.
# Needs root, Debian packages etcd-server containerd runc iproute2 nftables openssl
# util-linux containernetworking-plugins (installed by `up` when missing).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE=/var/cache/meta-cni
V=1.20.2
KUBECTL="$CACHE/kubectl-$V/usr/bin/kubectl"
NODES=(node-a node-b)
declare -A NODE_IP=([cp]=10.250.0.1 [node-a]=10.250.0.11 [node-b]=10.250.0.12)
CP_IP=10.250.0.1
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
SERVICE_IP=10.96.0.1
HOSTDIRS_DB=/var/tmp/meta-cni-cluster-hostdirs
PKGS=(etcd-server containerd runc iproute2 nftables openssl util-linux containernetworking-plugins curl)

log() { echo "cluster.sh: $*" >&2; }
die() {
    echo "cluster.sh: ERROR: $*" >&2
    exit 1
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

# ---- arguments ----------------------------------------------------------------------------
[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
CMD="$1"
shift
NAME="${META_CNI_CLUSTER:-mcc}"
if [ $# -gt 0 ] && [ "$1" != "--" ] && [[ "$1" =~ ^[a-z0-9][a-z0-9-]{0,11}$ ]] &&
    ! [[ "$1" =~ ^(node-a|node-b|cp)$ ]]; then
    NAME="$1"
    shift
fi
[[ "$NAME" =~ ^[a-z0-9][a-z0-9-]{0,11}$ ]] || die "bad cluster name '$NAME' (at most 12 of [a-z0-9-])"
S="/var/tmp/mcc-$NAME"
ETCD_DIR="/dev/shm/mcc-$NAME-etcd"
NS_SW="$NAME-sw"
NS_CP="$NAME-cp"
ns_of() { # node -> netns
    case "$1" in
    cp) echo "$NS_CP" ;;
    node-a | node-b) echo "$NAME-$1" ;;
    *) die "no node '$1' (node-a, node-b, cp)" ;;
    esac
}
cgroup_root() { echo "/meta-cni-$NAME-$1"; }

[ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces)"

# ---- helpers ------------------------------------------------------------------------------
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pidfile_alive() { [ -s "$1" ] && pid_alive "$(cat "$1")"; }

# kill_wait PID...: TERM, then KILL after 10 s
kill_wait() {
    local p left
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 100); do
        left=0
        for p in "$@"; do pid_alive "$p" && left=1; done
        [ $left = 0 ] && return 0
        sleep 0.1
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
    sleep 0.2
}

# The node's holder: a process that owns the node's mount namespace.
holder_pid() { [ -s "$S/$1/holder.pid" ] && cat "$S/$1/holder.pid"; }

# in_node NODE CMD...: CMD in the node's network and mount namespaces
in_node() {
    local node="$1" h
    shift
    if [ "$node" = cp ]; then
        nsenter --net="/run/netns/$NS_CP" -- "$@"
        return
    fi
    h="$(holder_pid "$node")" || die "$node is not up"
    pid_alive "$h" || die "$node's mount namespace holder ($h) is gone"
    nsenter -t "$h" -m -n -u -- "$@"
}

# daemon NODE NAME CMD...: starts CMD detached (own session) in NODE, pid in $S/NODE/NAME.pid,
# output in $S/NODE/NAME.log
daemon() {
    local node="$1" name="$2" h
    shift 2
    mkdir -p "$S/$node"
    if [ "$node" = cp ]; then
        nsenter --net="/run/netns/$NS_CP" -- setsid "$@" </dev/null >>"$S/$node/$name.log" 2>&1 &
    else
        h="$(holder_pid "$node")"
        nsenter -t "$h" -m -n -u -- setsid "$@" </dev/null >>"$S/$node/$name.log" 2>&1 &
    fi
    echo $! >"$S/$node/$name.pid"
}

stop_daemon() { # NODE NAME
    local f="$S/$1/$2.pid"
    if pidfile_alive "$f"; then kill_wait "$(cat "$f")"; fi
    rm -f "$f"
}

wait_for() { # SECONDS DESCRIPTION CMD...
    local t="$1" what="$2"
    shift 2
    local end=$((SECONDS + t))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.5
    done
    log "ready: $what"
}

kc() { nsenter --net="/run/netns/$NS_CP" -- "$KUBECTL" --kubeconfig "$S/admin.kubeconfig" "$@"; }

# ---- host mount points --------------------------------------------------------------------
# /etc/cni (and /opt/cni) may be missing on the host; a bind mount needs its mount point.
# Made ones are recorded with the clusters using them (flock), and removed by the last down.
hostdir_acquire() { # DIR
    local d="$1"
    exec 9>>"$HOSTDIRS_DB.lock"
    flock 9
    if [ ! -e "$d" ]; then
        mkdir -p "$d"
        echo "made $d" >>"$HOSTDIRS_DB"
    fi
    grep -qx "made $d" "$HOSTDIRS_DB" 2>/dev/null && echo "use $d $NAME" >>"$HOSTDIRS_DB"
    flock -u 9
    exec 9>&-
}
hostdir_release_all() {
    [ -e "$HOSTDIRS_DB" ] || return 0
    exec 9>>"$HOSTDIRS_DB.lock"
    flock 9
    local tmp d
    tmp="$(mktemp "$HOSTDIRS_DB.XXXXXX")"
    grep -vE "^use .* $NAME\$" "$HOSTDIRS_DB" >"$tmp" || true
    mv "$tmp" "$HOSTDIRS_DB"
    for d in $(sed -n 's/^made //p' "$HOSTDIRS_DB"); do
        if ! grep -q "^use $d " "$HOSTDIRS_DB"; then
            rmdir "$d" 2>/dev/null || log "left $d (not empty)"
            tmp="$(mktemp "$HOSTDIRS_DB.XXXXXX")"
            grep -vx "made $d" "$HOSTDIRS_DB" >"$tmp" || true
            mv "$tmp" "$HOSTDIRS_DB"
        fi
    done
    if [ ! -s "$HOSTDIRS_DB" ]; then rm -f "$HOSTDIRS_DB" "$HOSTDIRS_DB.lock"; fi
    flock -u 9 2>/dev/null || true
    exec 9>&-
}

# ---- fixtures -----------------------------------------------------------------------------
ensure_fixtures() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    local c
    for c in kube-apiserver kubelet kube-controller-manager kube-scheduler; do
        if [ ! -x "$CACHE/$c-$V" ]; then
            log "building $c v$V (minutes; once per machine)"
            bash "$HERE/meta-tests/apiserver/build.sh" "$c" >/dev/null
        fi
    done
    [ -s "$CACHE/pause.tar" ] || bash "$HERE/meta-tests/containerd/build-pause.sh" >/dev/null
    [ -x "$KUBECTL" ] || bash "$HERE/meta-tests/kubectl/fetch.sh" >/dev/null
    # images.sh rebuilds the meta-cni image only when its sources (by content) changed
    bash "$HERE/scripts/images.sh" meta-cni busybox >/dev/null
}

# ---- PKI ----------------------------------------------------------------------------------
OPENSSL_CNF='[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:10.96.0.1, IP:10.250.0.1, IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid'

cert() { # NAME SUBJECT EXTENSIONS
    local p="$S/pki"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$p/$1.key" -out "$p/$1.csr" \
        -subj "$2" -config "$p/openssl.cnf" 2>/dev/null
    openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
        -out "$p/$1.crt" -days 365 -extfile "$p/openssl.cnf" -extensions "$3" 2>/dev/null
    rm -f "$p/$1.csr"
}

kubeconfig() { # FILE USER CERTNAME SERVER
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $NAME
  cluster:
    server: $4
    certificate-authority-data: $(base64 -w0 "$S/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$S/pki/$3.crt")
    client-key-data: $(base64 -w0 "$S/pki/$3.key")
contexts:
- name: $NAME
  context: {cluster: $NAME, user: $2}
current-context: $NAME
EOF
    chmod 600 "$1"
}

make_pki() {
    local p="$S/pki" n
    mkdir -p "$p"
    printf '%s\n' "$OPENSSL_CNF" >"$p/openssl.cnf"
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$p/ca.key" -out "$p/ca.crt" \
        -days 3650 -subj "/CN=meta-cni-cluster-$NAME-ca" -config "$p/openssl.cnf" \
        -extensions v3_ca 2>/dev/null
    cert apiserver /CN=kube-apiserver v3_server
    cert admin "/O=system:masters/CN=meta-cni-admin" v3_client
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" v3_client
    cert kcm /CN=system:kube-controller-manager v3_client
    cert scheduler /CN=system:kube-scheduler v3_client
    for n in "${NODES[@]}"; do cert "kubelet-$n" "/O=system:nodes/CN=system:node:$n" v3_client; done
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$p/sa.key" 2>/dev/null
    openssl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
    local api="https://$CP_IP:6443"
    kubeconfig "$S/admin.kubeconfig" meta-cni-admin admin "$api"
    kubeconfig "$S/cp/kcm.kubeconfig" system:kube-controller-manager kcm "$api"
    kubeconfig "$S/cp/scheduler.kubeconfig" system:kube-scheduler scheduler "$api"
    for n in "${NODES[@]}"; do kubeconfig "$S/$n/kubelet.kubeconfig" "system:node:$n" "kubelet-$n" "$api"; done
}

# ---- network ------------------------------------------------------------------------------
veth() { # NS_A NAME_A NS_B NAME_B (created inside NS_A, never in the root namespace)
    ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
}

make_network() {
    local ns n i=0
    for ns in "$NS_SW" "$NS_CP" "$NAME-node-a" "$NAME-node-b"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip -n "$NS_SW" link add ul type bridge
    ip -n "$NS_SW" link add lan type bridge
    ip -n "$NS_SW" link set ul up
    ip -n "$NS_SW" link set lan up
    veth "$NS_SW" cp-ul "$NS_CP" eth0
    ip -n "$NS_SW" link set cp-ul master ul
    ip -n "$NS_CP" addr add "$CP_IP/24" dev eth0
    for n in "${NODES[@]}"; do
        i=$((i + 1))
        ns="$(ns_of "$n")"
        veth "$NS_SW" "$n-ul" "$ns" eth0
        veth "$NS_SW" "$n-lan" "$ns" lan0
        ip -n "$NS_SW" link set "$n-ul" master ul
        ip -n "$NS_SW" link set "$n-lan" master lan
        ip -n "$ns" addr add "${NODE_IP[$n]}/24" dev eth0
        ip -n "$ns" route add default via "$CP_IP"
        # a node routes for its pods (per-namespace sysctl; the root namespace is untouched)
        ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
        # no kube-proxy: the "kubernetes" Service, for pods and host-network pods
        ip netns exec "$ns" nft -f - <<EOF
table ip meta-cni-cluster {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $SERVICE_IP tcp dport 443 dnat to $CP_IP:6443
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr $SERVICE_IP tcp dport 443 dnat to $CP_IP:6443
  }
}
EOF
    done
}

# ---- control plane ------------------------------------------------------------------------
start_control_plane() {
    local p="$S/pki"
    mkdir -p "$ETCD_DIR"
    daemon cp etcd /usr/bin/etcd --name "$NAME" --data-dir "$ETCD_DIR/data" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster "$NAME=http://127.0.0.1:2380" --listen-metrics-urls "" \
        --log-level warn --logger zap
    wait_for 60 etcd in_node cp curl -sf http://127.0.0.1:2379/health ||
        die "etcd did not start: $(tail -20 "$S/cp/etcd.log")"
    daemon cp kube-apiserver "$CACHE/kube-apiserver-$V" \
        --advertise-address="$CP_IP" --bind-address=0.0.0.0 --secure-port=6443 \
        --etcd-servers=http://127.0.0.1:2379 \
        --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
        --client-ca-file="$p/ca.crt" --cert-dir="$S/cp/apiserver-certs" \
        --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$p/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP \
        --authorization-mode=Node,RBAC --anonymous-auth=false \
        --enable-admission-plugins=NodeRestriction \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
        --enable-aggregator-routing=true --profiling=false --v=1
    wait_for 180 kube-apiserver kc get --raw /readyz ||
        die "kube-apiserver did not become ready: $(tail -30 "$S/cp/kube-apiserver.log")"
    wait_for 60 "namespace kube-system" kc get namespace kube-system ||
        die "kube-system did not appear"
    daemon cp kube-controller-manager "$CACHE/kube-controller-manager-$V" \
        --kubeconfig="$S/cp/kcm.kubeconfig" \
        --authentication-kubeconfig="$S/cp/kcm.kubeconfig" \
        --authorization-kubeconfig="$S/cp/kcm.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10257 --port=0 \
        --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
        --use-service-account-credentials=true --leader-elect=false \
        --cert-dir="$S/cp/kcm-certs" --v=1
    daemon cp kube-scheduler "$CACHE/kube-scheduler-$V" \
        --kubeconfig="$S/cp/scheduler.kubeconfig" \
        --authentication-kubeconfig="$S/cp/scheduler.kubeconfig" \
        --authorization-kubeconfig="$S/cp/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port=10259 --port=0 --leader-elect=false \
        --cert-dir="$S/cp/scheduler-certs" --v=1
    # Kubernetes 1.20 does not label namespaces with their name (1.21+ does); the webhook's
    # namespaceSelector needs it
    kc label --overwrite namespace kube-system kubernetes.io/metadata.name=kube-system >/dev/null
}

# ---- nodes --------------------------------------------------------------------------------
make_cgroups() { # NODE
    local root h d
    root="$(cgroup_root "$1")"
    for h in /sys/fs/cgroup/*/; do
        [ -e "$h/cgroup.procs" ] || continue
        d="${h%/}$root"
        mkdir -p "$d"
        if [ -e "$d/cpuset.cpus" ]; then
            cat "${h%/}/cpuset.cpus" >"$d/cpuset.cpus"
            cat "${h%/}/cpuset.mems" >"$d/cpuset.mems"
        fi
    done
}

# kill_cgroup NODE: kills every process of the node's cgroups (containers), removes them
kill_cgroups() {
    local root h d pids
    root="$(cgroup_root "$1")"
    for _ in 1 2 3 4 5; do
        pids=""
        for h in /sys/fs/cgroup/*/; do
            d="${h%/}$root"
            [ -d "$d" ] || continue
            pids="$pids $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' ')"
        done
        [ -n "${pids// /}" ] || break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.3
    done
    for h in /sys/fs/cgroup/*/; do
        d="${h%/}$root"
        [ -d "$d" ] || continue
        # deepest first; freezer-thawed, nothing left in them
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$d" ] && log "could not remove cgroup $d"
    done
    return 0
}

containerd_config() { # NODE
    local d="$S/$1/containerd"
    cat <<EOF
# meta-cni cluster node $1 (scripts/cluster.sh)
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/meta-cni/pause:1.0"
  restrict_oom_score_adj = true
  # /run/netns is the node's own (its mount namespace): where the agent finds pods' netns
  netns_mounts_under_state_dir = false
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
        Root = "$d/runc"
        SystemdCgroup = false
EOF
}

kubelet_config() { # NODE
    cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP[$1]}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $S/pki/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: $(cgroup_root "$1")
cgroupsPerQOS: true
failSwapOn: false
makeIPTablesUtilChains: false
resolvConf: $S/$1/resolv.conf
clusterDomain: cluster.local
# a shared machine: never evict or garbage-collect images because its disk is full
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
maxPods: 60
EOF
}

start_containerd() { # NODE
    local n="$1" sock="$S/$1/containerd/containerd.sock"
    daemon "$n" containerd /usr/bin/containerd --config "$S/$n/containerd/config.toml"
    wait_for 60 "containerd on $n" in_node "$n" ctr -a "$sock" version ||
        die "containerd on $n did not start: $(tail -20 "$S/$n/containerd.log")"
}

start_kubelet() { # NODE
    local n="$1"
    daemon "$n" kubelet env \
        KUBELET_POD_LOGS_DIR="$S/$n/log/pods" \
        KUBELET_CONTAINER_LOGS_DIR="$S/$n/log/containers" \
        KUBELET_DEVICE_PLUGINS_DIR="$S/$n/kubelet/device-plugins" \
        "$CACHE/kubelet-$V" \
        --config="$S/$n/kubelet.yaml" --kubeconfig="$S/$n/kubelet.kubeconfig" \
        --root-dir="$S/$n/kubelet" --cert-dir="$S/$n/kubelet/pki" \
        --volume-plugin-dir="$S/$n/kubelet/volume-plugins" \
        --container-runtime=remote \
        --container-runtime-endpoint="unix://$S/$n/containerd/containerd.sock" \
        --hostname-override="$n" --node-ip="${NODE_IP[$n]}" --v=1
}

start_node() { # NODE
    local n="$1" ns d
    ns="$(ns_of "$n")"
    d="$S/$n"
    mkdir -p "$d"/{etc-cni,opt/cni/bin,var-lib-cni,run,log/pods,log/containers,kubelet,containerd}
    cp -a /usr/lib/cni/. "$d/opt/cni/bin/" # loopback (containerd needs it) and the reference plugins
    echo "nameserver $CP_IP" >"$d/resolv.conf"
    containerd_config "$n" >"$d/containerd/config.toml"
    kubelet_config "$n" >"$d/kubelet.yaml"
    hostdir_acquire /etc/cni
    # The holder owns the node's mount namespace: a slave of the root one (nothing mounted in
    # it propagates out), with the node's private directories bound over the host paths
    # that hostPath volumes and the CNI use, then made shared inside (HostToContainer mounts).
    nsenter --net="/run/netns/$ns" -- setsid unshare -m -u --propagation slave -- sh -c '
        set -e
        d="$1"
        hostname "$2"
        mount --bind "$d/etc-cni" /etc/cni
        mkdir -p /etc/cni/net.d
        mount --bind "$d/opt" /opt
        mount --bind "$d/var-lib-cni" /var/lib/cni
        mount --bind "$d/run" /run
        mkdir -p /run/netns /run/meta-cni
        mount --bind "$d/log" /var/log
        mount --make-rshared /
        touch "$d/holder.ready"
        exec sleep infinity' holder "$d" "$n" </dev/null >>"$d/holder.log" 2>&1 &
    echo $! >"$d/holder.pid"
    wait_for 20 "$n mount namespace" test -e "$d/holder.ready" ||
        die "$n's mount namespace: $(cat "$d/holder.log")"
    make_cgroups "$n"
    start_containerd "$n"
    local img
    for img in "$CACHE/pause.tar" "$CACHE/images/meta-cni.tar" "$CACHE/images/busybox-static.tar"; do
        in_node "$n" ctr -a "$d/containerd/containerd.sock" -n k8s.io images import "$img" >/dev/null ||
            die "importing $img into $n's containerd failed"
    done
    start_kubelet "$n"
}

route_pod_cidrs() {
    local n cidr
    for n in "${NODES[@]}"; do
        cidr="$(kc get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)"
        [ -n "$cidr" ] || return 1
        ip -n "$NS_CP" route replace "$cidr" via "${NODE_IP[$n]}"
    done
}

# ---- verbs --------------------------------------------------------------------------------
sweep_stale() {
    local d name owner
    for d in /var/tmp/mcc-*/; do
        [ -e "$d/owner.pid" ] || continue
        owner="$(cat "$d/owner.pid")"
        pid_alive "$owner" && continue
        name="$(basename "$d")"
        name="${name#mcc-}"
        log "removing stale cluster $name (its owner $owner is gone)"
        META_CNI_CLUSTER_OWNER_PID= bash "$0" down "$name" || true
    done
}

# up_failed RC: the logs' tails on stderr, then down (unless META_CNI_CLUSTER_KEEP is set)
up_failed() {
    local f
    log "up failed (exit $1)"
    for f in "$S"/*/*.log; do
        [ -s "$f" ] || continue
        echo "--- ${f#"$S"/} (last 15 lines)" >&2
        tail -15 "$f" >&2
    done
    if [ -n "${META_CNI_CLUSTER_KEEP:-}" ]; then
        log "kept $S (META_CNI_CLUSTER_KEEP); remove it with: scripts/cluster.sh down $NAME"
    else
        bash "$0" down "$NAME" >&2 || true
    fi
}

up() {
    sweep_stale
    [ ! -e "$S" ] || die "cluster $NAME exists ($S); run: scripts/cluster.sh down $NAME"
    for ns in "$NS_SW" "$NS_CP" "$NAME-node-a" "$NAME-node-b"; do
        [ ! -e "/run/netns/$ns" ] || die "network namespace $ns exists; run: scripts/cluster.sh down $NAME"
    done
    ensure_fixtures
    mkdir -p "$S/cp" "$S/node-a" "$S/node-b"
    [ -z "${META_CNI_CLUSTER_OWNER_PID:-}" ] || echo "$META_CNI_CLUSTER_OWNER_PID" >"$S/owner.pid"
    trap 'rc=$?; if [ $rc != 0 ]; then up_failed $rc; fi' EXIT
    log "network namespaces $NS_SW $NS_CP $NAME-node-a $NAME-node-b"
    make_network
    make_pki
    start_control_plane
    local n
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in "${NODES[@]}"; do
        wait_for 120 "node $n registered" kc get node "$n" ||
            die "$n did not register: $(tail -20 "$S/$n/kubelet.log")"
    done
    wait_for 60 "pod CIDRs routed" route_pod_cidrs || die "nodes got no podCIDR: $(tail -20 "$S/cp/kube-controller-manager.log")"
    trap - EXIT
    log "cluster $NAME is up (nodes are NotReady until a CNI is installed: kubectl apply -k deploy/)"
    log "kubectl: scripts/cluster.sh kubectl $NAME -- get nodes"
    log "     or: nsenter --net=/run/netns/$NS_CP $KUBECTL --kubeconfig $S/admin.kubeconfig get nodes"
    echo "$S/admin.kubeconfig"
}

down() {
    local n h pids p
    for n in "${NODES[@]}"; do
        stop_daemon "$n" kubelet 2>/dev/null || true
    done
    for n in "${NODES[@]}"; do
        kill_cgroups "$n"
        h="$(holder_pid "$n" 2>/dev/null || true)"
        if pid_alive "$h"; then
            # everything in the node's mount namespace: containerd, shims, the plugins
            local mnt
            mnt="$(readlink "/proc/$h/ns/mnt")"
            pids=""
            for p in /proc/[0-9]*; do
                [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$mnt" ] && pids="$pids ${p#/proc/}"
            done
            # shellcheck disable=SC2086
            kill_wait $pids
        fi
        kill_cgroups "$n"
    done
    for n in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_daemon cp "$n"; done
    local ns
    for ns in "$NAME-node-a" "$NAME-node-b" "$NS_CP" "$NS_SW"; do
        if [ -e "/run/netns/$ns" ]; then
            pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
            # shellcheck disable=SC2086
            [ -z "${pids// /}" ] || kill_wait $pids
            ip netns del "$ns" 2>/dev/null || log "could not delete netns $ns"
        fi
    done
    hostdir_release_all
    if grep -q " $S/" /proc/self/mountinfo; then
        die "mounts under $S remain in the root mount namespace; not removing it"
    fi
    rm -rf "$S" "$ETCD_DIR"
    log "cluster $NAME is down"
}

status() {
    [ -d "$S" ] || {
        echo "cluster $NAME: down"
        return 0
    }
    echo "cluster $NAME: $S"
    local n d f
    for n in cp "${NODES[@]}"; do
        for f in "$S/$n"/*.pid; do
            [ -e "$f" ] || continue
            d="$(basename "$f" .pid)"
            if pidfile_alive "$f"; then echo "  $n $d: running ($(cat "$f"))"; else echo "  $n $d: not running"; fi
        done
    done
    kc get nodes -o wide 2>&1 | sed 's/^/  /' || true
}

case "$CMD" in
up) up ;;
down) down ;;
status) status ;;
kubectl)
    [ "${1:-}" != "--" ] || shift
    kc "$@"
    ;;
exec)
    node="${1:?exec: NODE}"
    shift
    [ "${1:-}" != "--" ] || shift
    in_node "$node" "$@"
    ;;
restart)
    node="${1:?restart: NODE}" what="${2:?restart: kubelet|containerd}"
    case "$what" in
    kubelet)
        stop_daemon "$node" kubelet
        start_kubelet "$node"
        ;;
    containerd)
        stop_daemon "$node" containerd
        start_containerd "$node"
        ;;
    *) die "restart: kubelet or containerd, not $what" ;;
    esac
    ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
