//! meta-cni the way its users run it: a real two-node Kubernetes v1.20.2 cluster
//! (`scripts/cluster.sh`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and
//! per node its own containerd 1.6 and kubelet, all in network namespaces), meta-cni
//! installed by `kubectl apply -k deploy/` (the DaemonSet's `meta-cni install`, the agent, the
//! webhook), and pods as users write them (a Deployment with the networks annotation, NADs
//! applied with kubectl, `kubectl exec`). One test, one cluster, in order:
//!
//! 1. both nodes Ready with meta-cni's conflist as their only CNI configuration;
//! 2. a Deployment of 4 pods over both nodes with eth0 (overlay), net1 (macvlan on the LAN),
//!    net2 (secondary VXLAN): every pod reaches every other on each network, and each pod's
//!    network-status matches its interfaces (addresses and MACs, read in the pod);
//! 3. a bad NAD is refused by `kubectl apply` with the webhook's message;
//! 4. node-b's kubelet and then its containerd restart: the pods keep their sandboxes,
//!    addresses and reachability;
//! 5. `kubectl rollout restart` of the DaemonSet while pings run between the nodes on eth0
//!    and net2: at most one packet lost on each;
//! 6. scale to 0: on both nodes no veth, IP reservation (host-local, meta-ipam), journal
//!    entry or nftables rule of those pods is left (the overlay bridge and the VXLAN
//!    segment's device and bridge stay by design, like the reference bridge plugin's
//!    bridge, and so do host-local's `lock` and `last_reserved_ip.N`);
//! 7. deleting node-b's Node removes its overlay entries (FDB, route) on node-a;
//! 8. `kubectl delete -k deploy/ --ignore-not-found` removes the conflist and node-a turns
//!    NotReady.
//!
//! The cluster is torn down (`cluster.sh down`) when the test ends, however it ends; a
//! cluster left by a killed test is swept by the next `cluster.sh up` (its owner pid is gone).
//! Set META_CNI_CLUSTER_KEEP=1 to keep it on failure (then `scripts/cluster.sh down NAME`).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A cluster of `scripts/cluster.sh`, down on drop.
struct Cluster {
    name: String,
    keep: bool,
}

impl Cluster {
    fn up() -> Cluster {
        meta_tests::require_root();
        let name = format!("mt{}", std::process::id() % 1_000_000);
        let mut c = Cluster { name, keep: false };
        let o = c
            .script(&["up", &c.name.clone()])
            .env("META_CNI_CLUSTER_OWNER_PID", std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/cluster.sh up");
        assert!(o.status.success(), "cluster.sh up failed: {}", text(&o));
        c.keep = std::env::var_os("META_CNI_CLUSTER_KEEP").is_some();
        c
    }

    fn script(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/cluster.sh")).args(args);
        cmd.env_remove("META_CNI_CLUSTER_KEEP");
        cmd
    }

    /// kubectl with the admin kubeconfig; Output whatever the exit status.
    fn kubectl_out(&self, args: &[&str]) -> Output {
        let mut a = vec!["kubectl", &self.name, "--"];
        a.extend_from_slice(args);
        self.script(&a).output().expect("run kubectl")
    }

    /// kubectl that must succeed; its stdout.
    fn kubectl(&self, args: &[&str]) -> String {
        let o = self.kubectl_out(args);
        assert!(o.status.success(), "kubectl {args:?} failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl -o json")
    }

    /// CMD in the node's namespaces (what the node sees); Output whatever the status.
    fn on_node_out(&self, node: &str, cmd: &[&str]) -> Output {
        let mut a = vec!["exec", &self.name, node, "--"];
        a.extend_from_slice(cmd);
        self.script(&a).output().expect("run cluster.sh exec")
    }

    fn on_node(&self, node: &str, cmd: &[&str]) -> String {
        let o = self.on_node_out(node, cmd);
        assert!(o.status.success(), "{cmd:?} on {node} failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `sh -c SCRIPT` in a pod, through the API server and the pod's kubelet.
    fn in_pod(&self, pod: &str, script: &str) -> String {
        self.kubectl(&["exec", pod, "--", "sh", "-c", script])
    }

    fn restart(&self, node: &str, what: &str) {
        let o = self
            .script(&["restart", &self.name, node, what])
            .output()
            .expect("cluster.sh restart");
        assert!(o.status.success(), "restart {what} on {node}: {}", text(&o));
    }

    fn wait(&self, what: &str, secs: u64, mut f: impl FnMut() -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match f() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("{what}: not so after {secs} s: {e}\n{}", self.diagnostics())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    fn diagnostics(&self) -> String {
        let pods = self.kubectl_out(&["get", "pods", "-A", "-o", "wide"]);
        let events = self.kubectl_out(&["get", "events", "-A", "--sort-by=.lastTimestamp"]);
        let ev = String::from_utf8_lossy(&events.stdout);
        let ev: Vec<&str> = ev.lines().collect();
        format!(
            "--- pods\n{}\n--- last events\n{}",
            String::from_utf8_lossy(&pods.stdout),
            ev[ev.len().saturating_sub(25)..].join("\n")
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep && std::thread::panicking() {
            eprintln!(
                "kept cluster {} (META_CNI_CLUSTER_KEEP): scripts/cluster.sh down {}",
                self.name, self.name
            );
            return;
        }
        let o = self.script(&["down", &self.name]).output();
        match o {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("cluster.sh down {} failed: {}", self.name, text(&o)),
            Err(e) => eprintln!("cluster.sh down {}: {e}", self.name),
        }
    }
}

/// A pod of the Deployment as the API shows it.
#[derive(Debug, Clone)]
struct PodInfo {
    name: String,
    uid: String,
    node: String,
    restarts: u64,
    /// interface -> (network name, IPs, MAC) from network-status
    status: BTreeMap<String, (String, Vec<String>, String)>,
}

fn pods(c: &Cluster) -> Vec<PodInfo> {
    let v = c.json(&["get", "pods", "-l", "app=multi"]);
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ns = p["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
                .as_str()
                .unwrap_or("[]");
            let list: Value = serde_json::from_str(ns).expect("network-status is JSON");
            let status = list
                .as_array()
                .expect("network-status is a list")
                .iter()
                .map(|e| {
                    let ips = e["ips"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|i| i.as_str().unwrap_or_default().to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        e["interface"].as_str().unwrap_or_default().to_string(),
                        (
                            e["name"].as_str().unwrap_or_default().to_string(),
                            ips,
                            e["mac"].as_str().unwrap_or_default().to_string(),
                        ),
                    )
                })
                .collect();
            PodInfo {
                name: p["metadata"]["name"].as_str().unwrap().to_string(),
                uid: p["metadata"]["uid"].as_str().unwrap().to_string(),
                node: p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                restarts: p["status"]["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(0),
                status,
            }
        })
        .collect()
}

const NETWORKS: [(&str, &str); 3] = [
    ("eth0", "meta-overlay"),
    ("net1", "default/lan"),
    ("net2", "default/blue"),
];

/// Every pod's network-status names the three networks on eth0, net1, net2 with one IPv4
/// address each, and the pod's own view of those interfaces agrees (address and MAC).
fn check_network_status(c: &Cluster, pods: &[PodInfo]) {
    for p in pods {
        let got: Vec<(&str, &str)> = p
            .status
            .iter()
            .map(|(i, (n, _, _))| (i.as_str(), n.as_str()))
            .collect();
        assert_eq!(got, NETWORKS.to_vec(), "network-status of {}", p.name);
        let seen = c.in_pod(
            &p.name,
            "for i in eth0 net1 net2; do echo \"$i $(cat /sys/class/net/$i/address) $(ip -o -4 addr show dev $i | awk '{print $4}')\"; done",
        );
        for line in seen.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 3, "pod {} interface line {line:?}", p.name);
            let (_, ips, mac) = &p.status[f[0]];
            assert_eq!(mac, f[1], "MAC of {} in {}", f[0], p.name);
            let addr = f[2].split('/').next().unwrap();
            assert_eq!(
                ips,
                &vec![addr.to_string()],
                "IPs of {} in {}",
                f[0],
                p.name
            );
        }
    }
}

/// Every pod pings every other pod on each of the three networks; returns the failures.
fn ping_matrix(c: &Cluster, pods: &[PodInfo]) -> Vec<String> {
    let mut failures = vec![];
    for from in pods {
        let targets: Vec<String> = pods
            .iter()
            .filter(|p| p.name != from.name)
            .flat_map(|p| p.status.values().map(|(_, ips, _)| ips[0].clone()))
            .collect();
        let script = format!(
            "for ip in {}; do ping -c 1 -W 2 $ip >/dev/null 2>&1 || ping -c 1 -W 2 $ip >/dev/null 2>&1 || echo FAIL $ip; done; true",
            targets.join(" ")
        );
        for l in c.in_pod(&from.name, &script).lines() {
            failures.push(format!("{} ({}) -> {l}", from.name, from.node));
        }
    }
    failures
}

/// What a node holds for its pods: veths, host-local and meta-ipam reservations, journal
/// entries, nftables rules, links.
#[derive(Debug, PartialEq, Eq)]
struct NodeState {
    links: BTreeSet<String>,
    files: BTreeSet<String>,
    nft: String,
}

fn node_state(c: &Cluster, node: &str) -> NodeState {
    let links = c
        .on_node(node, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    // host-local reservations, the journal (cniDir) and libcni's result cache; meta-ipam's
    // node journal is checked through the API (IpBlock allocations)
    let files = c
        .on_node(
            node,
            &[
                "sh",
                "-c",
                // a directory appears with its first pod (none yet, before the Deployment)
                "for d in /var/lib/cni/networks /var/lib/cni/meta-cni /var/lib/cni/results; \
                 do if [ -d $d ]; then find $d -type f || exit 1; fi; done",
            ],
        )
        .lines()
        .map(str::to_string)
        .collect();
    let nft = c.on_node(node, &["nft", "-s", "list", "ruleset"]);
    NodeState { links, files, nft }
}

/// The allocations of meta-ipam's IpBlocks (pool/cidr -> allocations).
fn ipam_allocations(c: &Cluster) -> BTreeMap<String, Value> {
    let v = c.json(&["get", "ipblocks.ipam.meta-cni.io", "-A"]);
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|b| {
                    b["spec"]["allocations"]
                        .as_object()
                        .is_some_and(|m| !m.is_empty())
                })
                .map(|b| {
                    (
                        b["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        b["spec"]["allocations"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `ping -i 0.2` from `pod` to `dst` inside the pod, in the background; its pid.
fn start_ping(c: &Cluster, pod: &str, dst: &str, tag: &str) -> String {
    c.in_pod(
        pod,
        &format!("ping -i 0.2 {dst} > /tmp/ping-{tag}.log 2>&1 & echo $!"),
    )
    .trim()
    .to_string()
}

/// Stops a ping of [`start_ping`]; (transmitted, received).
fn stop_ping(c: &Cluster, pod: &str, pid: &str, tag: &str) -> (u64, u64, String) {
    let out = c.in_pod(
        pod,
        &format!("kill -INT {pid}; sleep 1; cat /tmp/ping-{tag}.log"),
    );
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out}"))
        .to_string();
    let nums: Vec<u64> = line
        .split(|ch: char| !ch.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    (nums[0], nums[1], line)
}

#[test]
fn cluster_two_nodes_deploy_pods_restart_rollout_scale_delete_node() {
    let c = Cluster::up();
    let deploy = repo().join("deploy");
    let fixtures = repo().join("meta-tests/cluster");
    let f = |n: &str| fixtures.join(n).display().to_string();

    // 1. meta-cni installed the way users do; both nodes Ready with it as their CNI
    c.kubectl(&["apply", "-k", &deploy.display().to_string()]);
    c.wait("both nodes Ready", 180, || {
        let v = c.json(&["get", "nodes"]);
        let ready = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["type"] == "Ready" && k["status"] == "True")
            })
            .count();
        if ready == 2 {
            Ok(())
        } else {
            Err(format!("{ready} of 2 Ready"))
        }
    });
    for node in ["node-a", "node-b"] {
        let confs = c.on_node(node, &["ls", "/etc/cni/net.d"]);
        let confs: Vec<&str> = confs
            .lines()
            .filter(|l| l.ends_with("conf") || l.ends_with("conflist"))
            .collect();
        assert_eq!(
            confs,
            ["00-meta-cni.conflist"],
            "CNI configuration of {node}"
        );
    }
    c.kubectl(&[
        "-n",
        "meta-cni-system",
        "rollout",
        "status",
        "deployment/meta-cni-webhook",
        "--timeout=180s",
    ]);
    let before: BTreeMap<&str, NodeState> = ["node-a", "node-b"]
        .into_iter()
        .map(|n| (n, node_state(&c, n)))
        .collect();

    // 2. the Deployment: 4 pods, two per node, three networks each
    c.kubectl(&["apply", "-f", &f("nads.yaml")]);
    c.kubectl(&["apply", "-f", &f("deployment.yaml")]);
    c.kubectl(&["rollout", "status", "deployment/multi", "--timeout=180s"]);
    let ps = pods(&c);
    assert_eq!(ps.len(), 4, "{ps:?}");
    for node in ["node-a", "node-b"] {
        assert_eq!(
            ps.iter().filter(|p| p.node == node).count(),
            2,
            "pods on {node}: {ps:?}"
        );
    }
    check_network_status(&c, &ps);
    let failures = ping_matrix(&c, &ps);
    assert!(failures.is_empty(), "unreachable: {failures:#?}");

    // 3. the webhook refuses a bad NAD, with its own message
    let o = c.kubectl_out(&["apply", "-f", &f("bad-nad.yaml")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "bad NAD accepted: {}", text(&o));
    assert!(
        err.contains("admission webhook \"nads.meta-cni.k8s.cni.cncf.io\" denied the request")
            && err.contains("unknown macvlan mode \"sideways\""),
        "{err}"
    );

    // 4. node-b's kubelet, then its containerd, restart: same sandboxes, same addresses
    let sandboxes_b = c.on_node("node-b", &["ls", "/var/lib/cni/meta-cni"]);
    c.restart("node-b", "kubelet");
    c.restart("node-b", "containerd");
    c.wait("node-b Ready after the restarts", 120, || {
        let v = c.json(&["get", "node", "node-b"]);
        let hb = v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["type"] == "Ready" && k["status"] == "True");
        if hb { Ok(()) } else { Err("NotReady".into()) }
    });
    // a few seconds of the restarted kubelet's pod syncs, which would recreate a sandbox
    std::thread::sleep(Duration::from_secs(10));
    let after = pods(&c);
    let key = |v: &[PodInfo]| -> BTreeMap<String, (String, u64, String)> {
        v.iter()
            .map(|p| {
                (
                    p.uid.clone(),
                    (p.node.clone(), p.restarts, format!("{:?}", p.status)),
                )
            })
            .collect()
    };
    assert_eq!(
        key(&after),
        key(&ps),
        "pods changed across node-b's restarts"
    );
    assert_eq!(
        c.on_node("node-b", &["ls", "/var/lib/cni/meta-cni"]),
        sandboxes_b,
        "journal of node-b changed across the restarts (a sandbox was recreated)"
    );
    let failures = ping_matrix(&c, &after);
    assert!(
        failures.is_empty(),
        "unreachable after node-b's restarts: {failures:#?}"
    );

    // 5. a rollout restart of the DaemonSet does not disturb running pods' traffic
    let a = ps.iter().find(|p| p.node == "node-a").unwrap();
    let b = ps.iter().find(|p| p.node == "node-b").unwrap();
    let pings = [
        (
            "eth0",
            start_ping(&c, &a.name, &b.status["eth0"].1[0], "eth0"),
        ),
        (
            "net2",
            start_ping(&c, &a.name, &b.status["net2"].1[0], "net2"),
        ),
    ];
    std::thread::sleep(Duration::from_secs(2));
    c.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "restart",
        "daemonset/meta-cni",
    ]);
    c.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "daemonset/meta-cni",
        "--timeout=180s",
    ]);
    // the new agents have resynced the overlay by now; a few more seconds of traffic
    std::thread::sleep(Duration::from_secs(5));
    for (tag, pid) in &pings {
        let (sent, received, line) = stop_ping(&c, &a.name, pid, tag);
        assert!(sent > 20, "{tag}: ping ran only {sent} packets: {line}");
        assert!(
            sent - received <= 1,
            "{tag}: {} packets lost during the DaemonSet's rollout: {line}",
            sent - received
        );
    }

    // 6. scale to 0: nothing of the pods left on either node
    c.kubectl(&["scale", "deployment/multi", "--replicas=0"]);
    c.wait("the Deployment's pods gone", 120, || {
        let n = c.json(&["get", "pods", "-l", "app=multi"])["items"]
            .as_array()
            .map_or(0, Vec::len);
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} pods left"))
        }
    });
    // what a node's first pod makes stays, like the reference plugins' state: the overlay
    // bridge, the segment of VNI 4242 (like the reference bridge's bridge), host-local's
    // `lock` and `last_reserved_ip.N` (as the reference host-local leaves them)
    let segment: BTreeSet<String> = ["meta0", "mvx4242", "mbr4242"].map(String::from).into();
    let kept = |f: &String| {
        let base = f.rsplit('/').next().unwrap_or_default();
        f.starts_with("/var/lib/cni/networks/")
            && (base == "lock" || base.starts_with("last_reserved_ip."))
    };
    for (node, was) in &before {
        let now = node_state(&c, node);
        let extra: Vec<&String> = now
            .links
            .difference(&was.links)
            .filter(|l| !segment.contains(*l))
            .collect();
        let gone: Vec<&String> = was.links.difference(&now.links).collect();
        assert!(
            extra.is_empty() && gone.is_empty(),
            "{node}: links left {extra:?}, lost {gone:?}"
        );
        let files: BTreeSet<&String> = now.files.iter().filter(|f| !kept(f)).collect();
        assert_eq!(
            files,
            was.files.iter().collect::<BTreeSet<_>>(),
            "{node}: reservations, journal entries or cached results left"
        );
        assert_eq!(now.nft, was.nft, "{node}: nftables rules left");
    }
    let left = ipam_allocations(&c);
    assert!(left.is_empty(), "meta-ipam allocations left: {left:#?}");
    let o = c.kubectl(&["get", "ipreservations.ipam.meta-cni.io", "-A", "-o", "name"]);
    assert!(o.trim().is_empty(), "IpReservations left: {o}");

    // 7. deleting node-b's Node removes its overlay entries from node-a
    let b_ip = "10.250.0.12";
    let b_cidr = c.json(&["get", "node", "node-b"])["spec"]["podCIDR"]
        .as_str()
        .expect("node-b podCIDR")
        .to_string();
    let overlay_of_b = || -> Vec<String> {
        let fdb = c.on_node("node-a", &["bridge", "fdb", "show", "dev", "meta.1"]);
        let routes = c.on_node("node-a", &["ip", "route", "show"]);
        fdb.lines()
            .filter(|l| l.contains(b_ip))
            .chain(routes.lines().filter(|l| l.starts_with(&b_cidr)))
            .map(str::to_string)
            .collect()
    };
    assert!(
        !overlay_of_b().is_empty(),
        "node-a has no overlay entry for node-b to begin with"
    );
    c.kubectl(&["delete", "node", "node-b"]);
    c.wait("node-b's overlay entries gone from node-a", 60, || {
        let left = overlay_of_b();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });

    // 8. uninstall: the conflist goes, node-a reports NotReady (no pods without networks)
    c.kubectl(&[
        "delete",
        "-k",
        &deploy.display().to_string(),
        // the token controller deletes meta-cni-token with its ServiceAccount first
        "--ignore-not-found",
        "--timeout=180s",
    ]);
    c.wait("node-a's conflist removed and node-a NotReady", 120, || {
        let confs = c.on_node("node-a", &["ls", "/etc/cni/net.d"]);
        let v = c.json(&["get", "node", "node-a"]);
        let ready = v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["type"] == "Ready")
            .cloned()
            .unwrap_or_default();
        if !confs.contains("00-meta-cni.conflist") && ready["status"] == "False" {
            Ok(())
        } else {
            Err(format!("conf dir {confs:?}, Ready {ready}"))
        }
    });
}
