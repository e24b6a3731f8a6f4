//! A multi-node cluster on one machine, for the vxlan tests and the benchmark.
//!
//! ```text
//!   underlay netns: bridge "ulbr" 192.168.77.1/24
//!        |  ul0        |  ul1        |  ul2          (veth pairs)
//!   node0 netns    node1 netns    node2 netns       eth0 192.168.77.{2,3,4}/24,
//!   pods...        pods...        pods...           default route via .1
//! ```
//!
//! Every namespace has a unique name (pid + counter) and goes away with the [`Cluster`]
//! (RAII, also on panic); the underlay addresses exist only inside these namespaces.
#![allow(dead_code)]

use meta_netlink::{LinkKind, LinkRequest, NamedNetns, NetlinkOps, Netns, RouteSpec};
use meta_overlay::{NodeRecord, OverlayConfig, Underlay};
pub use meta_tests::*;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The plugin binary.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meta-vxlan"))
}

/// The cluster CIDR of the tests.
pub const CLUSTER: &str = "10.244.0.0/16";

/// One node.
pub struct Node {
    /// Node name.
    pub name: String,
    /// The node's namespace.
    pub ns: NamedNetns,
    /// Underlay address.
    pub ip: IpAddr,
    /// Pod subnet.
    pub subnet: ipnet::IpNet,
    /// Scratch directory of the node (subnet file, IPAM data, state).
    pub dir: PathBuf,
}

impl Node {
    /// A handle bound to the node's namespace.
    pub fn nl(&self) -> meta_netlink::Netlink {
        meta_netlink::Netlink::open(Some(self.ns.netns())).expect("netlink in node")
    }

    /// The subnet file of this node.
    pub fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }

    /// The node's overlay configuration (underlay detected from the default route).
    pub fn overlay(&self) -> OverlayConfig {
        let mut nl = self.nl();
        let u = Underlay::detect(&mut nl, None, None).expect("detect underlay");
        OverlayConfig::new(u, CLUSTER.parse().unwrap(), self.subnet)
    }

    /// This node's record (as the agent would publish it).
    pub fn record(&self) -> NodeRecord {
        self.overlay().record(&self.name)
    }
}

/// The underlay and its nodes.
pub struct Cluster {
    /// Pods (dropped first).
    pub pods: Vec<NamedNetns>,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The underlay namespace with the bridge.
    pub underlay: NamedNetns,
    /// Scratch directory.
    pub dir: tempfile::TempDir,
}

fn up(nl: &mut meta_netlink::Netlink, name: &str) -> u32 {
    let l = nl
        .link_by_name(name)
        .expect("link")
        .unwrap_or_else(|| panic!("{name} missing"));
    nl.link_set_up(l.index, true).expect("up");
    l.index
}

impl Cluster {
    /// An underlay with `n` nodes (no overlay yet). `mtu` is the underlay MTU.
    pub fn new(n: usize, mtu: u32) -> Cluster {
        require_root();
        let underlay = NamedNetns::create(&unique("mvx-ul-")).expect("underlay netns");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ul = meta_netlink::Netlink::open(Some(underlay.netns())).expect("netlink");
        up(&mut ul, "lo");
        ul.link_add(&LinkRequest {
            name: "ulbr".into(),
            kind: LinkKind::Bridge {
                vlan_filtering: false,
            },
            mtu: Some(mtu),
            mac: None,
            netns: None,
            up: true,
        })
        .expect("underlay bridge");
        let br = up(&mut ul, "ulbr");
        ul.addr_add(br, "192.168.77.1/24".parse().unwrap())
            .expect("underlay address");
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = NamedNetns::create(&unique("mvx-n-")).expect("node netns");
            ul.link_add(&LinkRequest {
                name: format!("ul{i}"),
                kind: LinkKind::Veth {
                    peer_name: "eth0".into(),
                    peer_netns: Some(ns.netns().clone()),
                    peer_mac: None,
                    peer_mtu: Some(mtu),
                },
                mtu: Some(mtu),
                mac: None,
                netns: None,
                up: false,
            })
            .expect("node veth");
            let port = up(&mut ul, &format!("ul{i}"));
            ul.link_set_master(port, Some(br)).expect("enslave");
            let mut nl = meta_netlink::Netlink::open(Some(ns.netns())).expect("netlink");
            up(&mut nl, "lo");
            let eth = up(&mut nl, "eth0");
            let ip: IpAddr = format!("192.168.77.{}", i + 2).parse().unwrap();
            nl.addr_add(eth, ipnet::IpNet::new(ip, 24).unwrap())
                .expect("node address");
            nl.route_add(&RouteSpec {
                gw: Some("192.168.77.1".parse().unwrap()),
                ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
            })
            .expect("default route");
            let ndir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&ndir).expect("node dir");
            nodes.push(Node {
                name: format!("node{i}"),
                ns,
                ip,
                subnet: format!("10.244.{}.0/24", i + 1).parse().unwrap(),
                dir: ndir,
            });
        }
        Cluster {
            pods: Vec::new(),
            nodes,
            underlay,
            dir,
        }
    }

    /// Every node's record.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.nodes.iter().map(Node::record).collect()
    }

    /// Sets up the primary overlay everywhere, as the agent would: device, subnet file,
    /// and the other nodes' entries.
    pub fn overlay_up(&self) {
        let all = self.records();
        for n in &self.nodes {
            let cfg = n.overlay();
            let mut nl = n.nl();
            let r = meta_overlay::reconcile(&mut nl, &cfg, &all).expect("reconcile");
            assert!(r.is_ok(), "{}: {r}", n.name);
            assert_eq!(r.programmed, self.nodes.len() - 1, "{}: {r}", n.name);
            meta_overlay::write_subnet_file(
                &n.subnet_file(),
                cfg.pod_subnet,
                cfg.mtu(),
                cfg.cluster_cidr,
            )
            .expect("subnet file");
        }
    }

    /// A fresh pod namespace (lo up); returns its index in `pods`.
    pub fn new_pod(&mut self) -> usize {
        let p = NamedNetns::create(&unique("mvx-p-")).expect("pod netns");
        let mut nl = meta_netlink::Netlink::open(Some(p.netns())).expect("netlink");
        up(&mut nl, "lo");
        self.pods.push(p);
        self.pods.len() - 1
    }

    /// Path of pod `i`'s namespace.
    pub fn pod_path(&self, i: usize) -> String {
        self.pods[i].path().display().to_string()
    }
}

/// The primary configuration of node `n`.
pub fn primary_conf(n: &Node) -> Value {
    json!({"cniVersion": "1.1.0", "name": "cluster", "type": "meta-vxlan",
           "subnetFile": n.subnet_file(),
           "ipam": {"dataDir": n.dir.join("ipam")}})
}

/// A secondary configuration of node `n`: `vni`, the given peers, host-local on `subnet`
/// with a per-node range starting at `start`.
pub fn secondary_conf(
    n: &Node,
    name: &str,
    vni: u32,
    peers: &[IpAddr],
    subnet: &str,
    start: u8,
) -> Value {
    let base = subnet.rsplit_once('.').map(|(a, _)| a).unwrap_or(subnet);
    json!({"cniVersion": "1.1.0", "name": name, "type": "meta-vxlan", "vni": vni,
           "peers": peers, "stateDir": n.dir.join("state"),
           "ipam": {"type": "host-local", "dataDir": n.dir.join("ipam"),
                    "ranges": [[{"subnet": subnet,
                                 "rangeStart": format!("{base}.{start}"),
                                 "rangeEnd": format!("{base}.{}", start + 9)}]]}})
}

/// Runs one verb of the plugin in `node` for pod path `netns`.
pub fn invoke(node: &Netns, verb: &str, cid: &str, netns: &str, ifname: &str, conf: &Value) -> Run {
    let inv = Invocation {
        verb,
        container_id: cid,
        netns,
        ifname,
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
        path: REFERENCE_DIR,
        ..Default::default()
    };
    run_in(node, &ours(), &inv, conf.to_string().as_bytes())
}

/// The first address of a result, without prefix.
pub fn result_ip(v: &Value) -> IpAddr {
    let a = v["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {v}"));
    a.split('/').next().unwrap().parse().expect("address")
}

/// A TCP echo across namespaces: a listener in `server` on `ip:port`, a client in
/// `client` sending `len` bytes; returns the bytes echoed back.
pub fn tcp_echo(server: &Netns, client: &Netns, ip: IpAddr, port: u16, len: usize) -> usize {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let addr = SocketAddr::new(ip, port);
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = server.clone();
    let h = std::thread::spawn(move || {
        srv.run(move || {
            let l = TcpListener::bind(addr).expect("bind");
            tx.send(()).expect("ready");
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            loop {
                let n = s.read(&mut buf).expect("server read");
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).expect("server write");
                total += n;
            }
            total
        })
        .expect("server ns")
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("server ready");
    let got = client
        .run(move || {
            let mut s = TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
                .expect("connect");
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .expect("timeout");
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut w = s.try_clone().expect("clone");
            let writer = std::thread::spawn(move || {
                w.write_all(&data).expect("client write");
                w.shutdown(std::net::Shutdown::Write).expect("shutdown");
            });
            let mut back = Vec::with_capacity(len);
            s.read_to_end(&mut back).expect("client read");
            writer.join().expect("writer");
            assert!(
                back.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
                "echo corrupted"
            );
            back.len()
        })
        .expect("client ns");
    let served = h.join().expect("server thread");
    assert_eq!(served, got);
    got
}

/// The overlay-relevant kernel state of a node: links, addresses, neighbours, FDBs of
/// VXLAN devices, IPv4 main routes — rendered for comparison.
pub fn snapshot(n: &Node) -> Vec<String> {
    kernel_snapshot(n.ns.netns())
}

/// Reads a file, for messages.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A [`NetlinkOps`] that passes everything to `inner` and records each mutating call: to
/// assert that a reconciliation against the real kernel sends no mutating request.
pub struct Recorder<'a, N: NetlinkOps> {
    /// The real handle.
    pub inner: &'a mut N,
    /// The mutating calls, in order.
    pub mutations: Vec<String>,
}

impl<'a, N: NetlinkOps> Recorder<'a, N> {
    /// Wraps a handle.
    pub fn new(inner: &'a mut N) -> Self {
        Recorder {
            inner,
            mutations: Vec::new(),
        }
    }
}

macro_rules! mutating {
    ($self:ident, $name:literal, $($arg:expr),*) => {{
        $self.mutations.push(format!("{} {:?}", $name, ($(&$arg,)*)));
    }};
}

impl<N: NetlinkOps> NetlinkOps for Recorder<'_, N> {
    fn links(&mut self) -> meta_netlink::Result<Vec<meta_netlink::LinkInfo>> {
        self.inner.links()
    }
    fn link_by_name(&mut self, name: &str) -> meta_netlink::Result<Option<meta_netlink::LinkInfo>> {
        self.inner.link_by_name(name)
    }
    fn link_by_index(
        &mut self,
        index: u32,
    ) -> meta_netlink::Result<Option<meta_netlink::LinkInfo>> {
        self.inner.link_by_index(index)
    }
    fn link_add(&mut self, req: &LinkRequest) -> meta_netlink::Result<()> {
        mutating!(self, "link_add", req);
        self.inner.link_add(req)
    }
    fn link_del(&mut self, index: u32) -> meta_netlink::Result<()> {
        mutating!(self, "link_del", index);
        self.inner.link_del(index)
    }
    fn link_set_up(&mut self, index: u32, up: bool) -> meta_netlink::Result<()> {
        mutating!(self, "link_set_up", index, up);
        self.inner.link_set_up(index, up)
    }
    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> meta_netlink::Result<()> {
        mutating!(self, "link_set_mtu", index, mtu);
        self.inner.link_set_mtu(index, mtu)
    }
    fn link_set_mac(&mut self, index: u32, mac: meta_netlink::Mac) -> meta_netlink::Result<()> {
        mutating!(self, "link_set_mac", index, mac);
        self.inner.link_set_mac(index, mac)
    }
    fn link_set_name(&mut self, index: u32, name: &str) -> meta_netlink::Result<()> {
        mutating!(self, "link_set_name", index, name);
        self.inner.link_set_name(index, name)
    }
    fn link_set_master(&mut self, index: u32, master: Option<u32>) -> meta_netlink::Result<()> {
        mutating!(self, "link_set_master", index, master);
        self.inner.link_set_master(index, master)
    }
    fn link_set_promisc(&mut self, index: u32, on: bool) -> meta_netlink::Result<()> {
        mutating!(self, "link_set_promisc", index, on);
        self.inner.link_set_promisc(index, on)
    }
    fn link_set_netns(&mut self, index: u32, ns: &Netns) -> meta_netlink::Result<()> {
        mutating!(self, "link_set_netns", index, ns);
        self.inner.link_set_netns(index, ns)
    }
    fn bridge_port_set_hairpin(&mut self, index: u32, on: bool) -> meta_netlink::Result<()> {
        mutating!(self, "bridge_port_set_hairpin", index, on);
        self.inner.bridge_port_set_hairpin(index, on)
    }
    fn bridge_port_hairpin(&mut self, index: u32) -> meta_netlink::Result<bool> {
        self.inner.bridge_port_hairpin(index)
    }
    fn bridge_vlan_add(
        &mut self,
        index: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
    ) -> meta_netlink::Result<()> {
        mutating!(self, "bridge_vlan_add", index, vid, pvid, untagged);
        self.inner.bridge_vlan_add(index, vid, pvid, untagged)
    }
    fn bridge_vlans(&mut self, index: u32) -> meta_netlink::Result<Vec<(u16, bool, bool)>> {
        self.inner.bridge_vlans(index)
    }
    fn addrs(&mut self, index: Option<u32>) -> meta_netlink::Result<Vec<meta_netlink::AddrInfo>> {
        self.inner.addrs(index)
    }
    fn addr_add(&mut self, index: u32, addr: ipnet::IpNet) -> meta_netlink::Result<()> {
        mutating!(self, "addr_add", index, addr);
        self.inner.addr_add(index, addr)
    }
    fn addr_del(&mut self, index: u32, addr: ipnet::IpNet) -> meta_netlink::Result<()> {
        mutating!(self, "addr_del", index, addr);
        self.inner.addr_del(index, addr)
    }
    fn routes(
        &mut self,
        v6: bool,
        table: Option<u32>,
    ) -> meta_netlink::Result<Vec<meta_netlink::RouteInfo>> {
        self.inner.routes(v6, table)
    }
    fn route_add(&mut self, r: &RouteSpec) -> meta_netlink::Result<()> {
        mutating!(self, "route_add", r);
        self.inner.route_add(r)
    }
    fn route_replace(&mut self, r: &RouteSpec) -> meta_netlink::Result<()> {
        mutating!(self, "route_replace", r);
        self.inner.route_replace(r)
    }
    fn route_del(&mut self, r: &RouteSpec) -> meta_netlink::Result<()> {
        mutating!(self, "route_del", r);
        self.inner.route_del(r)
    }
    fn neigh_add(&mut self, n: &meta_netlink::NeighSpec) -> meta_netlink::Result<()> {
        mutating!(self, "neigh_add", n);
        self.inner.neigh_add(n)
    }
    fn neigh_del(&mut self, n: &meta_netlink::NeighSpec) -> meta_netlink::Result<()> {
        mutating!(self, "neigh_del", n);
        self.inner.neigh_del(n)
    }
    fn neighs(&mut self, index: Option<u32>) -> meta_netlink::Result<Vec<meta_netlink::NeighSpec>> {
        self.inner.neighs(index)
    }
    fn fdb_add(&mut self, f: &meta_netlink::FdbSpec) -> meta_netlink::Result<()> {
        mutating!(self, "fdb_add", f);
        self.inner.fdb_add(f)
    }
    fn fdb_del(&mut self, f: &meta_netlink::FdbSpec) -> meta_netlink::Result<()> {
        mutating!(self, "fdb_del", f);
        self.inner.fdb_del(f)
    }
    fn fdbs(&mut self, index: u32) -> meta_netlink::Result<Vec<meta_netlink::FdbSpec>> {
        self.inner.fdbs(index)
    }
}
