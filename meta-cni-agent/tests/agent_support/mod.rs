//! Fixtures of the agent tests (`tests/agent_*.rs`) and the agent benchmark
//! (`benches/agent_scale.rs`).
//!
//! ```text
//!   underlay netns: bridge "ulbr" 192.168.88.1/24
//!        |  ul0        |  ul1        |  ul2          (veth pairs)
//!   node0 netns    node1 netns    node2 netns       eth0 192.168.88.{2,3,4}/24,
//!   agent, pods    agent, pods    agent, pods       default route via .1
//! ```
//!
//! Every namespace has a unique name and goes away with the [`Cluster`] (RAII, also on
//! panic); the 192.168.88.0/24 addresses exist only inside them. The agent runs as the
//! real `meta-cni-agent` binary inside a node namespace ([`Agent`], started with
//! [`meta_tests::spawn_in`], configured through its environment variables).
//!
//! The API server fixture listens on 127.0.0.1 of the machine's namespace; each node
//! namespace gets a [`Forwarder`]: a listener on 127.0.0.1:<the API server's port> inside
//! the node namespace (opened by a thread that `setns()`'d there; the socket keeps its
//! namespace) relaying to the API server. So the kubeconfig of
//! [`ApiServer::kubeconfig_for_token`] works unchanged inside the node (the serving
//! certificate covers 127.0.0.1), and no network object is created outside the test's
//! namespaces.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use meta_netlink::{
    LinkKind, LinkRequest, NamedNetns, Netlink, NetlinkOps, Netns, RouteSpec, format_mac,
};
use meta_tests::apiserver::ApiServer;
use meta_tests::{Invocation, require_root, spawn_in, unique};
#[allow(unused_imports)] // each test binary uses a different subset
pub use meta_tests::{assert_reaches, assert_unreachable, kernel_snapshot, ping};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use meta_tests::kube::*;

/// The cluster CIDR of the tests.
pub const CLUSTER: &str = "10.244.0.0/16";
/// The underlay's first three octets.
pub const UNDERLAY: &str = "192.168.88";

/// The agent binary under test.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meta-cni-agent"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `meta-vxlan` plugin binary of this workspace, built (once per test process, with
/// the cargo and target directory of this build) when needed: integration tests only get
/// the binaries of their own package from cargo.
pub fn meta_vxlan_bin() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    // <target>/<profile>/deps/<this test> → <target>/<profile>/meta-vxlan
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "meta-vxlan",
        "--bin",
        "meta-vxlan",
    ])
    .env("CARGO_TARGET_DIR", &target_dir)
    .current_dir(repo_root());
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build -p meta-vxlan");
    assert!(
        out.status.success(),
        "cargo build -p meta-vxlan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join("meta-vxlan");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    *built = Some(bin.clone());
    bin
}

// ---------------------------------------------------------------------------------------
// Underlay and nodes.

/// One node namespace.
pub struct NodeNs {
    /// Node name (`node<i>`).
    pub name: String,
    /// The namespace.
    pub ns: NamedNetns,
    /// Underlay address.
    pub ip: IpAddr,
    /// Pod subnet it is meant to get.
    pub subnet: ipnet::IpNet,
    /// Scratch directory (subnet file, IPAM data, firewall lock).
    pub dir: PathBuf,
}

impl NodeNs {
    /// A netlink handle bound to the node's namespace.
    pub fn nl(&self) -> Netlink {
        Netlink::open(Some(self.ns.netns())).expect("netlink in node")
    }

    /// The subnet file the node's agent writes.
    pub fn subnet_file(&self) -> PathBuf {
        self.dir.join("run/subnet.env")
    }

    /// The local API socket of the node's agent.
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent/agent.sock")
    }

    /// The VTEP MAC the agent derives from the underlay IP.
    pub fn vtep_mac(&self) -> String {
        format_mac(&meta_overlay::vtep_mac_for(self.ip))
    }
}

/// The underlay, its nodes and the pods.
pub struct Cluster {
    /// Pods (dropped first).
    pub pods: Vec<NamedNetns>,
    /// The nodes.
    pub nodes: Vec<NodeNs>,
    /// The underlay namespace with the bridge.
    pub underlay: NamedNetns,
    /// Scratch directory.
    pub dir: tempfile::TempDir,
}

fn up(nl: &mut Netlink, name: &str) -> u32 {
    let l = nl
        .link_by_name(name)
        .expect("link")
        .unwrap_or_else(|| panic!("{name} missing"));
    nl.link_set_up(l.index, true).expect("up");
    l.index
}

impl Cluster {
    /// An underlay with `n` nodes (192.168.88.2..), pod subnets 10.244.<i+1>.0/24.
    pub fn new(n: usize) -> Cluster {
        require_root();
        let underlay = NamedNetns::create(&unique("mag-ul-")).expect("underlay netns");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ul = Netlink::open(Some(underlay.netns())).expect("netlink");
        up(&mut ul, "lo");
        ul.link_add(&LinkRequest {
            name: "ulbr".into(),
            kind: LinkKind::Bridge {
                vlan_filtering: false,
            },
            mtu: None,
            mac: None,
            netns: None,
            up: true,
        })
        .expect("underlay bridge");
        let br = up(&mut ul, "ulbr");
        ul.addr_add(br, format!("{UNDERLAY}.1/24").parse().unwrap())
            .expect("underlay address");
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = NamedNetns::create(&unique("mag-n-")).expect("node netns");
            ul.link_add(&LinkRequest {
                name: format!("ul{i}"),
                kind: LinkKind::Veth {
                    peer_name: "eth0".into(),
                    peer_netns: Some(ns.netns().clone()),
                    peer_mac: None,
                    peer_mtu: None,
                },
                mtu: None,
                mac: None,
                netns: None,
                up: false,
            })
            .expect("node veth");
            let port = up(&mut ul, &format!("ul{i}"));
            ul.link_set_master(port, Some(br)).expect("enslave");
            let mut nl = Netlink::open(Some(ns.netns())).expect("netlink");
            up(&mut nl, "lo");
            let eth = up(&mut nl, "eth0");
            let ip: IpAddr = format!("{UNDERLAY}.{}", i + 2).parse().unwrap();
            nl.addr_add(eth, ipnet::IpNet::new(ip, 24).unwrap())
                .expect("node address");
            nl.route_add(&RouteSpec {
                gw: Some(format!("{UNDERLAY}.1").parse().unwrap()),
                ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
            })
            .expect("default route");
            let ndir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&ndir).expect("node dir");
            nodes.push(NodeNs {
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

    /// A fresh pod namespace (lo up); returns its index in `pods`.
    pub fn new_pod(&mut self) -> usize {
        let p = NamedNetns::create(&unique("mag-p-")).expect("pod netns");
        let mut nl = Netlink::open(Some(p.netns())).expect("netlink");
        up(&mut nl, "lo");
        self.pods.push(p);
        self.pods.len() - 1
    }

    /// Adds a primary pod on node `n` through the `meta-vxlan` binary (subnet file of the
    /// agent, no per-pod masquerade: the agent's node rule does it). Returns (pod, IP).
    pub fn primary_pod(&mut self, n: usize, cid: &str) -> (usize, IpAddr) {
        let p = self.new_pod();
        let node = &self.nodes[n];
        let conf = json!({"cniVersion": "1.1.0", "name": "cluster", "type": "meta-vxlan",
            "subnetFile": node.subnet_file(), "ipMasq": false,
            "ipam": {"dataDir": node.dir.join("ipam")}});
        let path = self.pods[p].path().display().to_string();
        let inv = Invocation {
            verb: "ADD",
            container_id: cid,
            netns: &path,
            ifname: "eth0",
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
            path: meta_tests::REFERENCE_DIR,
            ..Default::default()
        };
        let r = meta_tests::run_in(
            node.ns.netns(),
            &meta_vxlan_bin(),
            &inv,
            conf.to_string().as_bytes(),
        )
        .ok();
        let a = r.value()["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {}", r.stdout))
            .to_string();
        let ip = a
            .split('/')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("address");
        (p, ip)
    }
}

/// The overlay entries of a node for the other nodes: (neighbours, FDB, routes) on
/// `meta.1`, rendered and sorted; empty when the device does not exist.
pub fn entries(ns: &Netns) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let Some(dev) = nl.link_by_name("meta.1").expect("links") else {
        return Default::default();
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let neighs = nl
        .neighs(Some(dev.index))
        .expect("neighs")
        .into_iter()
        .filter(|x| x.permanent)
        .map(|x| format!("{} {}", x.ip, format_mac(&x.mac)))
        .collect();
    let fdbs = nl
        .fdbs(dev.index)
        .expect("fdbs")
        .into_iter()
        .map(|f| {
            format!(
                "{} dst {} permanent={}",
                format_mac(&f.mac),
                f.dst.map(|d| d.to_string()).unwrap_or_default(),
                f.permanent
            )
        })
        .collect();
    let routes = nl
        .routes(false, None)
        .expect("routes")
        .into_iter()
        .filter(|r| r.oif == Some(dev.index))
        .map(|r| {
            format!(
                "{} via {} onlink={}",
                r.dst,
                r.gw.map(|g| g.to_string()).unwrap_or_default(),
                r.onlink
            )
        })
        .collect();
    (sorted(neighs), sorted(fdbs), sorted(routes))
}

/// The expected entries on a node for the `others`: (subnet, underlay IP, MAC).
pub fn expected_entries(
    others: &[(ipnet::IpNet, IpAddr, String)],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut n: Vec<String> = others
        .iter()
        .map(|(s, _, m)| format!("{} {m}", s.network()))
        .collect();
    let mut f: Vec<String> = others
        .iter()
        .map(|(_, ip, m)| format!("{m} dst {ip} permanent=true"))
        .collect();
    let mut r: Vec<String> = others
        .iter()
        .map(|(s, _, _)| format!("{s} via {} onlink=true", s.network()))
        .collect();
    n.sort();
    f.sort();
    r.sort();
    (n, f, r)
}

/// Number of routes on `meta.1` in `ns` (0 without the device).
pub fn overlay_routes(ns: &Netns) -> usize {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let Some(dev) = nl.link_by_name("meta.1").expect("links") else {
        return 0;
    };
    nl.routes(false, None)
        .expect("routes")
        .into_iter()
        .filter(|r| r.oif == Some(dev.index))
        .count()
}

/// The overlay-relevant kernel state of a namespace: links, addresses, permanent
/// neighbours, FDBs of VXLAN devices, IPv4 routes, and the nftables ruleset — rendered for
/// comparison.
pub fn snapshot(ns: &NamedNetns) -> Vec<String> {
    let mut out = kernel_snapshot(ns.netns());
    out.push(format!("nft {}", nft_ruleset(ns)));
    out
}

/// `nft -j list ruleset` inside `ns`.
pub fn nft_ruleset(ns: &NamedNetns) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-j", "list", "ruleset"])
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node masquerade rules in `ns`: (comment, saddr prefix, daddr prefix).
pub fn node_masq_rules(ns: &NamedNetns) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(&nft_ruleset(ns)).expect("nft JSON");
    let pfx = |e: &Value| {
        let p = &e["match"]["right"]["prefix"];
        format!("{}/{}", p["addr"].as_str().unwrap_or(""), p["len"])
    };
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("rule"))
        .filter(|r| {
            r["comment"]
                .as_str()
                .is_some_and(|c| c.starts_with("meta-cni:node-masq:"))
        })
        .map(|r| {
            (
                r["comment"].as_str().unwrap_or_default().to_string(),
                pfx(&r["expr"][0]),
                pfx(&r["expr"][1]),
            )
        })
        .collect()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`; panics with
/// `what()` otherwise.
pub fn wait_for<T>(
    timeout: Duration,
    what: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {}", what());
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// The agent process.

/// A running `meta-cni-agent` in a node namespace. Its stderr (the log) is collected;
/// dropping it kills the process (SIGKILL) when it is still running.
pub struct Agent {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    /// The environment it was started with.
    pub env: Vec<(String, String)>,
}

impl Agent {
    /// Starts the binary in `ns` with `env` (its configuration) and `RUST_LOG` unset.
    pub fn start(ns: &Netns, env: &[(String, String)]) -> Agent {
        let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let inv = Invocation {
            extra_env: extra,
            ..Default::default()
        };
        let mut child = spawn_in(ns, &agent_bin(), &inv, b"");
        let log = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let echo = std::env::var_os("META_CNI_AGENT_TEST_ECHO").is_some();
        if let Some(e) = child.stderr.take() {
            let l = log.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(e).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("agent: {line}");
                    }
                    let mut g = l.lock().unwrap_or_else(|e| e.into_inner());
                    g.push_str(&line);
                    g.push('\n');
                }
            }));
        }
        if let Some(o) = child.stdout.take() {
            readers.push(std::thread::spawn(move || {
                let mut o = o;
                let _ = std::io::copy(&mut o, &mut std::io::sink());
            }));
        }
        Agent {
            child: Some(child),
            log,
            readers,
            env: env.to_vec(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until at least `n` log lines contain `needle`.
    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) {
        wait_for(
            timeout,
            || format!("{n} log lines with {needle:?}; log:\n{}", self.log()),
            || (self.count(needle) >= n).then_some(()),
        );
        self.assert_running();
    }

    /// Panics (with the log) when the process has exited.
    pub fn assert_running(&self) {
        if let Some(c) = self.child.as_ref() {
            // try_wait needs &mut; a zero-signal kill tells whether the pid is alive.
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), None)
                .is_ok()
                && !std::fs::read_to_string(format!("/proc/{}/stat", c.id()))
                    .unwrap_or_default()
                    .contains(") Z ");
            assert!(alive, "the agent exited; log:\n{}", self.log());
        }
    }

    /// Peak RSS (VmHWM) in KiB, from /proc.
    pub fn vm_hwm_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends `sig` and waits for the exit; returns the exit code (128 + signal when
    /// killed by one).
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) -> i32 {
        let mut child = self.child.take().expect("agent already stopped");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    }

    /// SIGTERM, and the exit code.
    pub fn terminate(&mut self) -> i32 {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The agent environment common to both modes for node `n`.
pub fn base_env(n: &NodeNs) -> Vec<(String, String)> {
    [
        ("NODE_NAME", n.name.clone()),
        ("META_CNI_AGENT_CLUSTER_CIDR", CLUSTER.to_string()),
        (
            "META_CNI_AGENT_SUBNET_FILE",
            n.subnet_file().display().to_string(),
        ),
        (
            "META_CNI_AGENT_FIREWALL_LOCK",
            n.dir.join("firewall.lock").display().to_string(),
        ),
        // never the host's /run/meta-cni/agent.sock
        (
            "META_CNI_AGENT_SOCKET",
            n.agent_socket().display().to_string(),
        ),
        // never the host's /var/lib/cni/meta-ipam
        (
            "META_CNI_AGENT_IPAM_DATA_DIR",
            n.dir.join("ipam").display().to_string(),
        ),
        ("META_CNI_AGENT_DEBOUNCE", "50ms".to_string()),
        ("META_CNI_AGENT_POLL", "100ms".to_string()),
        (
            "META_CNI_AGENT_LOG",
            "info,meta_cni_agent=debug".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

// ---------------------------------------------------------------------------------------
// The API server side.

/// A Node object: `name`, `spec.podCIDR` (when given), annotations.
pub fn node_object(name: &str, pod_cidr: Option<&str>, annotations: &[(&str, String)]) -> Node {
    let ann: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut v = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": ann}, "spec": {}});
    if let Some(c) = pod_cidr {
        v["spec"]["podCIDR"] = json!(c);
        v["spec"]["podCIDRs"] = json!([c]);
    }
    serde_json::from_value(v).expect("Node")
}

/// The API server with the RBAC of `deploy/` loaded, an admin client and the agent's
/// kubeconfig (ServiceAccount token). Drop order: clients and runtime, then the server.
pub struct ApiFixture {
    /// The admin client.
    pub admin: kube::Client,
    /// The runtime the admin client lives on.
    pub rt: tokio::runtime::Runtime,
    /// The agent's kubeconfig (token of kube-system/meta-cni; server 127.0.0.1:<port>).
    pub kubeconfig: PathBuf,
    /// The API server's address.
    pub addr: SocketAddr,
    /// The server.
    pub server: ApiServer,
}

impl ApiFixture {
    /// Starts everything.
    pub fn start() -> ApiFixture {
        let server = ApiServer::start();
        let addr: SocketAddr = server
            .url()
            .trim_start_matches("https://")
            .parse()
            .expect("API server address");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let admin = rt.block_on(client_for(&server.admin_kubeconfig()));
        let rbac = rt.block_on(apply_rbac(&admin));
        assert!(
            rbac.contains(&"ClusterRole/meta-cni-agent".to_string()),
            "{rbac:?}"
        );
        // The DaemonSet's ServiceAccount, bound to exactly the agent's ClusterRole.
        let token = rt.block_on(meta_tests::kube::service_account_token(
            &admin,
            "kube-system",
            "meta-cni-agent",
        ));
        let kubeconfig = server.kubeconfig_for_token(&token);
        ApiFixture {
            admin,
            rt,
            kubeconfig,
            addr,
            server,
        }
    }

    /// The Node API of the admin.
    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.admin.clone())
    }

    /// Creates a Node.
    pub fn create_node(&self, node: &Node) {
        self.rt
            .block_on(self.nodes().create(&PostParams::default(), node))
            .expect("create Node");
    }

    /// Deletes a Node.
    pub fn delete_node(&self, name: &str) {
        self.rt
            .block_on(self.nodes().delete(name, &Default::default()))
            .expect("delete Node");
    }

    /// Gets a Node.
    pub fn node(&self, name: &str) -> Node {
        self.rt
            .block_on(self.nodes().get(name))
            .unwrap_or_else(|e| panic!("get Node {name}: {e}"))
    }

    /// Merge-patches a Node.
    pub fn patch_node(&self, name: &str, patch: Value) {
        self.rt
            .block_on(self.nodes().patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            ))
            .unwrap_or_else(|e| panic!("patch Node {name}: {e}"));
    }
}
