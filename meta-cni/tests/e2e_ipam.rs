//! meta-ipam under a real runtime: two node namespaces, each with its own containerd 1.6
//! (CRI) running meta-cni, joined by a LAN (a veth pair `e2elan0`, one end in each node);
//! a NAD `e2e/lan`, macvlan on `e2elan0` with `"ipam": {"type": "meta-ipam", ...}` on one
//! range. Pods on both nodes get distinct addresses of that range (each node from its own
//! block), reach each other across the nodes, and StopPodSandbox + RemovePodSandbox free
//! every address on the API server.
//!
//! The NAD is the same for both nodes, as in a cluster: its `dataDir` and
//! `kubernetes.kubeconfig` name one path, whose content is node-local. Here both "nodes"
//! share the machine's file system, so each node's meta-cni wrapper runs it in a private
//! mount namespace (`unshare -m`) where that path is a bind mount of the node's own
//! directory, and sets `NODE_NAME` (the nodes share a host name).

mod e2e_support;

use e2e_support::*;
use kube::api::{Api, ListParams};
use meta_netlink::NamedNetns;
use meta_tests::containerd::Containerd;
use meta_tests::cri::PodSandboxConfig;
use meta_tests::iface_state;
use serde_json::json;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LAN: &str = "e2elan0";
const LAN_RANGE: &str = "10.73.0.0/24";

/// One node: its namespace (node-a is the E2e world's), CNI bin and conf dirs, journal.
struct Node {
    name: &'static str,
    bin: PathBuf,
    ctd_conf: PathBuf,
    cache: PathBuf,
    ipam_data: PathBuf,
    log: PathBuf,
}

fn node_dirs(e: &E2e, name: &'static str, kubeconfig: &Path, shared: &Shared) -> Node {
    let d = |s: &str| e.w.path(&format!("{name}-{s}"));
    let n = Node {
        name,
        bin: d("cni-bin"),
        ctd_conf: d("ctd-net.d"),
        cache: d("meta-cache"),
        ipam_data: d("meta-ipam"),
        log: d("meta-cni.log"),
    };
    let kc_dir = d("kube");
    for p in [&n.bin, &n.ctd_conf, &n.ipam_data, &kc_dir] {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::copy(kubeconfig, kc_dir.join("kubeconfig")).unwrap();
    for p in ["bridge", "macvlan", "host-local", "loopback"] {
        std::os::unix::fs::symlink(meta_tests::reference(p), n.bin.join(p)).unwrap();
    }
    // The node's view of the shared paths, then meta-cni (logged like e2e's wrapper).
    let wrapper = format!(
        "#!/bin/sh\n\
         echo \"START $CNI_COMMAND netns=$CNI_NETNS id=$CNI_CONTAINERID\" >> '{calls}'\n\
         NODE_NAME={name} unshare -m sh -c \"mount --bind '{data}' '{sdata}' && mount --bind '{kc}' '{skc}' && exec '{real}'\"\n\
         rc=$?\n\
         echo \"END $CNI_COMMAND netns=$CNI_NETNS id=$CNI_CONTAINERID rc=$rc\" >> '{calls}'\n\
         exit $rc\n",
        calls = d("calls.log").display(),
        data = n.ipam_data.display(),
        sdata = shared.ipam_data.display(),
        kc = kc_dir.display(),
        skc = shared.kube_dir.display(),
        real = meta_bin().display()
    );
    let wp = n.bin.join("meta-cni");
    std::fs::write(&wp, wrapper).unwrap();
    std::fs::set_permissions(&wp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        n.ctd_conf.join("00-meta-cni.conflist"),
        json!({"cniVersion": "1.0.0", "name": "meta-e2e", "plugins": [{
            "type": "meta-cni",
            "kubeconfig": kc_dir.join("kubeconfig"),
            "clusterNetwork": "cluster",
            "confDir": e.conf_dir,
            "cniDir": n.cache,
            "binDir": n.bin,
            "apiTimeoutSeconds": 5,
            "logFile": n.log,
            "logLevel": "debug",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true}
        }]})
        .to_string(),
    )
    .unwrap();
    n
}

/// The paths the NAD names (empty here; each node bind-mounts its own over them).
struct Shared {
    ipam_data: PathBuf,
    kube_dir: PathBuf,
}

/// Pings `dst` from the namespace at `netns` (nsenter, which keeps the cgroup mounts);
/// up to 3 tries, as the first packet may race neighbour resolution.
fn assert_ping(netns: &Path, dst: IpAddr, what: &str) {
    let mut last = String::new();
    for _ in 0..3 {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1"])
            .arg(dst.to_string())
            .output()
            .expect("run nsenter ping");
        if out.status.success() {
            return;
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    panic!("{what}: no reply from {dst}: {last}");
}

fn net1_addr(netns: &Path) -> IpAddr {
    let ns = meta_netlink::Netns::open(netns).unwrap();
    let st = iface_state(&ns, "net1").expect("net1");
    assert_eq!(st.kind.as_deref(), Some("macvlan"));
    assert_eq!(st.addrs.len(), 1, "{:?}", st.addrs);
    let (ip, len) = st.addrs[0].split_once('/').unwrap();
    assert_eq!(len, "24", "{}", st.addrs[0]);
    ip.parse().unwrap()
}

#[test]
fn meta_ipam_macvlan_across_two_containerd_nodes() {
    let e = E2e::setup(0);
    e.rt.block_on(meta_tests::kube::apply_crds(
        &e.admin,
        meta_ipam_cluster::crd::crds(),
    ));
    // node-b, and the LAN between the nodes.
    let node_b = NamedNetns::create(&meta_tests::unique("mcn-nodeb-")).expect("node-b netns");
    meta_tests::veth_pair_between(e.w.node.netns(), LAN, node_b.netns(), LAN);
    // node-b reaches the API server through its own relay.
    let upstream = e
        .api
        .as_ref()
        .unwrap()
        .url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let fwd_b = Forwarder::start(node_b.netns(), "127.0.0.1:0".parse().unwrap(), upstream);
    let kc_b = e.w.path("node-b.kubeconfig");
    kubeconfig_with_server(&e.kubeconfig, &kc_b, fwd_b.addr());

    let shared = Shared {
        ipam_data: e.w.path("shared-meta-ipam"),
        kube_dir: e.w.path("shared-kube"),
    };
    std::fs::create_dir_all(&shared.ipam_data).unwrap();
    std::fs::create_dir_all(&shared.kube_dir).unwrap();
    let a = node_dirs(&e, "node-a", &e.kubeconfig, &shared);
    let b = node_dirs(&e, "node-b", &kc_b, &shared);
    e.create_nad(
        NS,
        "lan",
        &json!({"cniVersion": "1.0.0", "name": "lan", "type": "macvlan", "master": LAN,
                "mode": "bridge",
                "ipam": {"type": "meta-ipam", "range": LAN_RANGE, "blockSize": 28,
                         "dataDir": shared.ipam_data,
                         "kubernetes": {"kubeconfig": shared.kube_dir.join("kubeconfig")}}}),
    );

    // Declared after `e`: dropped first.
    let ctd_a = Containerd::start(e.w.node.netns(), &a.bin, &a.ctd_conf);
    let ctd_b = Containerd::start(node_b.netns(), &b.bin, &b.ctd_conf);
    for c in [&ctd_a, &ctd_b] {
        c.wait_network_ready(Duration::from_secs(10)).unwrap();
    }
    let log = |n: &Node| std::fs::read_to_string(&n.log).unwrap_or_default();

    // Two pods per node, each with net1 on the LAN.
    let mut pods = Vec::new();
    for (node, ctd) in [(&a, &ctd_a), (&b, &ctd_b)] {
        for k in 0..2 {
            let name = format!("lan-{}-{k}", node.name);
            let uid = e.create_pod(&name, Some("lan"));
            let config = PodSandboxConfig::pod(&name, NS, &uid)
                .annotation(meta_crd::NETWORKS_ANNOTATION, "lan");
            let id = ctd.cri().run_pod_sandbox(&config).unwrap_or_else(|s| {
                panic!(
                    "RunPodSandbox {name} on {}: {s}\n--- meta-cni log ---\n{}",
                    node.name,
                    log(node)
                )
            });
            let (_, info) = ctd.cri().sandbox(&id).unwrap();
            let netns = info.netns_path().expect("sandbox netns");
            let ip = net1_addr(&netns);
            let st = e.network_status(&name).expect("network-status");
            assert_eq!(st.len(), 2, "{st:?}");
            assert_eq!(st[1].name, "e2e/lan");
            assert_eq!(st[1].ips, vec![ip.to_string()], "{st:?}");
            pods.push((node.name, ctd, name, uid, id, netns, ip));
        }
    }
    let ips: BTreeSet<IpAddr> = pods.iter().map(|p| p.6).collect();
    assert_eq!(ips.len(), 4, "distinct addresses: {pods:?}");
    let range: ipnet::IpNet = LAN_RANGE.parse().unwrap();
    assert!(ips.iter().all(|ip| range.contains(ip)), "{ips:?}");
    // Each node allocated from its own block; the server holds the four, with their pods.
    let blocks =
        e.rt.block_on(
            Api::<meta_ipam_cluster::crd::IpBlock>::all(e.admin.clone())
                .list(&ListParams::default()),
        )
        .unwrap()
        .items;
    let mut held = BTreeSet::new();
    for blk in &blocks {
        let cidr: ipnet::IpNet = blk.spec.cidr.parse().unwrap();
        for a in blk.spec.allocations.values() {
            assert_eq!(a.node, blk.spec.node, "{a:?} borrowed");
            let p = pods.iter().find(|p| p.3 == a.pod_uid).expect("a pod's");
            assert_eq!(p.0, a.node, "{} recorded on {}", p.2, a.node);
            assert!(cidr.contains(&p.6), "{} not in {cidr}", p.6);
            held.insert(p.2.clone());
        }
    }
    assert_eq!(held.len(), 4, "{blocks:?}");
    let nodes: BTreeSet<&str> = blocks.iter().map(|b| b.spec.node.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["node-a", "node-b"]));
    // Every pod reaches every other on the LAN, across the nodes too.
    for p in &pods {
        for q in &pods {
            if p.2 != q.2 {
                assert_ping(
                    &p.5,
                    q.6,
                    &format!("{} ({}) -> {} ({})", p.2, p.0, q.2, q.0),
                );
            }
        }
    }
    eprintln!(
        "meta-ipam on {LAN_RANGE}: {:?}, {} blocks",
        pods.iter()
            .map(|p| format!("{}@{}={}", p.2, p.0, p.6))
            .collect::<Vec<_>>(),
        blocks.len()
    );

    // Teardown as kubelet does it: every address freed on the server, nothing left.
    for (node, ctd, name, _, id, _, _) in &pods {
        ctd.cri()
            .stop_pod_sandbox(id)
            .unwrap_or_else(|s| panic!("StopPodSandbox {name} on {node}: {s}"));
        ctd.cri()
            .remove_pod_sandbox(id)
            .unwrap_or_else(|s| panic!("RemovePodSandbox {name} on {node}: {s}"));
    }
    let blocks =
        e.rt.block_on(
            Api::<meta_ipam_cluster::crd::IpBlock>::all(e.admin.clone())
                .list(&ListParams::default()),
        )
        .unwrap()
        .items;
    assert!(
        blocks.iter().all(|b| b.spec.allocations.is_empty()),
        "addresses left: {blocks:?}"
    );
    for (n, ns) in [(&a, e.w.node.netns()), (&b, node_b.netns())] {
        let left: Vec<String> = leftover_links(ns)
            .into_iter()
            .filter(|l| !l.starts_with(&format!("{LAN} ")))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "{}: links left", n.name);
        assert_eq!(
            meta_tests::dir_contents(&n.cache)
                .into_keys()
                .filter(|k| {
                    let k = k.trim_end_matches('/');
                    k != meta_cni::handoff::SPOOL
                        && !k.starts_with(&format!("{}/", meta_cni::handoff::SPOOL))
                })
                .collect::<Vec<_>>(),
            Vec::<String>::new(),
            "{}: journal left\n{}",
            n.name,
            log(n)
        );
        // Nothing was written to the shared path itself: only the node's own dir.
        assert!(
            std::fs::read_dir(&shared.ipam_data)
                .unwrap()
                .next()
                .is_none(),
            "the shared dataDir path was written outside a node's view"
        );
        assert!(
            std::fs::read_dir(&n.ipam_data).unwrap().next().is_some(),
            "{}: meta-ipam kept no state in its dataDir",
            n.name
        );
    }
    drop(fwd_b);
}
