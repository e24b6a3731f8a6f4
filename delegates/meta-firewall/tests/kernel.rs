//! Kernel tests: need root and `nft`; they FAIL (not skip) otherwise.
//!
//! Every test runs on a fresh thread that first unshares its network namespace, and runs
//! all `nft`/`ip` commands from that thread (or from worker threads that unshared their
//! own namespaces), so the host's ruleset and links are never touched. The namespaces
//! disappear when the threads exit.

use std::collections::{BTreeSet, HashSet};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ipnet::IpNet;
use meta_firewall::{Backend, Firewall, Mac, Nftables, Tag};
use nix::sched::{CloneFlags, unshare};
use serde_json::Value;

fn netns_id() -> PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").expect("read /proc/thread-self/ns/net")
}

/// Moves the current thread into a brand-new network namespace, checking that it did.
fn enter_fresh_netns() {
    let before = netns_id();
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) (are we root?)");
    assert_ne!(
        netns_id(),
        before,
        "still in the original network namespace"
    );
}

/// Runs `f` on a new thread inside a new network namespace.
fn in_netns<R: Send + 'static>(f: impl FnOnce(&Nftables) -> R + Send + 'static) -> R {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel tests must run as root (they only touch network namespaces they create)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let fw = Nftables::new().with_lock_path(dir.path().join("lock/firewall.lock"));
    let res = std::thread::spawn(move || {
        enter_fresh_netns();
        let r = f(&fw);
        drop(dir);
        r
    })
    .join();
    match res {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rules of the current thread's ruleset as JSON objects.
fn rules() -> Vec<Value> {
    let v: Value = serde_json::from_str(&run(&["nft", "-j", "list", "ruleset"])).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule").cloned())
        .collect()
}

fn chains() -> Vec<Value> {
    let v: Value = serde_json::from_str(&run(&["nft", "-j", "list", "ruleset"])).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("chain").cloned())
        .collect()
}

fn rules_tagged(tag: &Tag) -> Vec<Value> {
    let t = tag.to_string();
    rules()
        .into_iter()
        .filter(|r| r["comment"].as_str() == Some(&t))
        .collect()
}

fn masq_tag(net: &str, id: &str, ifname: &str) -> Tag {
    Tag::masq(net, id, ifname).unwrap()
}

fn mac_tag(net: &str, id: &str, ifname: &str) -> Tag {
    Tag::mac_spoof_chk(net, id, ifname).unwrap()
}

/// Names of the per-attachment MAC chains present.
fn mac_chains() -> BTreeSet<String> {
    chains()
        .iter()
        .filter_map(|c| c["name"].as_str().filter(|n| n.starts_with("mac_")))
        .map(str::to_owned)
        .collect()
}

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

const MAC1: Mac = [0x02, 0, 0, 0, 0, 0x01];

#[test]
fn masq_setup_is_idempotent_and_has_expected_expressions() {
    in_netns(|fw| {
        let ips = nets(&["10.1.2.5/24", "fd00:1::5/64"]);
        fw.setup_masq("net a", "c1", "eth0", &ips).unwrap();
        fw.setup_masq("net a", "c1", "eth0", &ips).unwrap();
        let tag = masq_tag("net a", "c1", "eth0");
        let ours = rules_tagged(&tag);
        assert_eq!(ours.len(), 2, "{ours:#?}");
        let v4 = ours
            .iter()
            .find(|r| r["expr"][0]["match"]["right"] == "10.1.2.5")
            .expect("v4 rule");
        assert_eq!(v4["family"], "inet");
        assert_eq!(v4["table"], "meta_cni");
        assert_eq!(v4["chain"], "masq_checks");
        assert_eq!(
            v4["expr"][0]["match"]["left"],
            serde_json::json!({"payload": {"protocol": "ip", "field": "saddr"}})
        );
        assert_eq!(
            v4["expr"][1],
            serde_json::json!({"match": {"op": "!=",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": {"prefix": {"addr": "10.1.2.0", "len": 24}}}})
        );
        assert_eq!(v4["expr"][2], serde_json::json!({"masquerade": null}));
        let v6 = ours
            .iter()
            .find(|r| r["expr"][0]["match"]["right"] == "fd00:1::5")
            .expect("v6 rule");
        assert_eq!(
            v6["expr"][1]["match"]["right"],
            serde_json::json!({"prefix": {"addr": "fd00:1::", "len": 64}})
        );

        // the base chain: nat hook postrouting priority srcnat, multicast excluded, 3 rules
        let pr = chains()
            .into_iter()
            .find(|c| c["family"] == "inet" && c["name"] == "postrouting")
            .expect("postrouting chain");
        assert_eq!(pr["type"], "nat");
        assert_eq!(pr["hook"], "postrouting");
        assert_eq!(pr["prio"], 100);
        let base: Vec<Value> = rules()
            .into_iter()
            .filter(|r| r["family"] == "inet" && r["chain"] == "postrouting")
            .collect();
        assert_eq!(base.len(), 3, "{base:#?}");
        assert_eq!(
            base[0]["expr"][0]["match"]["right"],
            serde_json::json!({"prefix": {"addr": "224.0.0.0", "len": 4}})
        );
        assert_eq!(
            base[1]["expr"][0]["match"]["right"],
            serde_json::json!({"prefix": {"addr": "ff00::", "len": 8}})
        );
        assert_eq!(
            base[2]["expr"][0],
            serde_json::json!({"goto": {"target": "masq_checks"}})
        );

        // re-setup with other IPs replaces, other attachments are kept
        fw.setup_masq("net b", "c1", "eth0", &nets(&["10.7.0.2/16"]))
            .unwrap();
        fw.setup_masq("net a", "c1", "eth0", &nets(&["10.1.2.6/24"]))
            .unwrap();
        let ours = rules_tagged(&tag);
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0]["expr"][0]["match"]["right"], "10.1.2.6");
        assert_eq!(rules_tagged(&masq_tag("net b", "c1", "eth0")).len(), 1);
        assert_eq!(
            rules()
                .iter()
                .filter(|r| r["family"] == "inet" && r["chain"] == "postrouting")
                .count(),
            3
        );
    });
}

#[test]
fn teardown_twice_and_without_anything() {
    in_netns(|fw| {
        // nothing at all: no tables
        fw.teardown_masq("n", "c1", "eth0").unwrap();
        fw.teardown_macspoofchk("n", "c1", "eth0").unwrap();
        fw.gc("n", &HashSet::new()).unwrap();
        assert!(fw.list_attachments().unwrap().is_empty());
        assert!(rules().is_empty());

        fw.setup_masq("n", "c1", "eth0", &nets(&["10.0.0.2/24"]))
            .unwrap();
        fw.setup_macspoofchk("n", "c1", "eth0", "veth1", MAC1)
            .unwrap();
        assert_eq!(
            fw.list_attachments().unwrap(),
            BTreeSet::from([masq_tag("n", "c1", "eth0"), mac_tag("n", "c1", "eth0")])
        );
        // teardown of another key (other network, other ifname) leaves ours alone
        fw.teardown_masq("other", "c1", "eth0").unwrap();
        fw.teardown_macspoofchk("other", "c1", "eth0").unwrap();
        fw.teardown_macspoofchk("n", "c1", "eth1").unwrap();
        assert_eq!(fw.list_attachments().unwrap().len(), 2);

        for _ in 0..2 {
            fw.teardown_masq("n", "c1", "eth0").unwrap();
            fw.teardown_macspoofchk("n", "c1", "eth0").unwrap();
        }
        assert!(fw.list_attachments().unwrap().is_empty());
        // only the base rules of the masquerade table remain; per-attachment chain gone
        let left: Vec<Value> = rules();
        assert!(
            left.iter().all(|r| r["comment"] == "meta-cni:base"),
            "{left:#?}"
        );
        assert!(
            chains()
                .iter()
                .all(|c| !c["name"].as_str().unwrap().starts_with("mac_"))
        );
    });
}

#[test]
fn macspoofchk_setup_is_idempotent() {
    in_netns(|fw| {
        fw.setup_macspoofchk("n", "c1", "eth0", "veth1", MAC1)
            .unwrap();
        fw.setup_macspoofchk("n", "c1", "eth0", "veth1", MAC1)
            .unwrap();
        let tag = mac_tag("n", "c1", "eth0");
        let ours = rules_tagged(&tag);
        assert_eq!(ours.len(), 3, "{ours:#?}");
        let jump = ours
            .iter()
            .find(|r| r["chain"] == "prerouting")
            .expect("jump rule");
        assert_eq!(jump["family"], "bridge");
        assert_eq!(
            jump["expr"][0],
            serde_json::json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth1"}})
        );
        let chain = jump["expr"][1]["jump"]["target"]
            .as_str()
            .unwrap()
            .to_owned();
        let inner: Vec<&Value> = ours
            .iter()
            .filter(|r| r["chain"] == chain.as_str())
            .collect();
        assert_eq!(inner.len(), 2);
        assert_eq!(
            inner[0]["expr"],
            serde_json::json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                    "right": "02:00:00:00:00:01"}},
                {"return": null}
            ])
        );
        assert_eq!(inner[1]["expr"], serde_json::json!([{"drop": null}]));
        let pre = chains()
            .into_iter()
            .find(|c| c["family"] == "bridge" && c["name"] == "prerouting")
            .unwrap();
        assert_eq!(pre["type"], "filter");
        assert_eq!(pre["hook"], "prerouting");
        assert_eq!(pre["prio"], -300);

        // new host interface and MAC replace the old ones
        fw.setup_macspoofchk("n", "c1", "eth0", "veth9", [2, 0, 0, 0, 0, 9])
            .unwrap();
        let ours = rules_tagged(&tag);
        assert_eq!(ours.len(), 3);
        assert!(
            ours.iter()
                .any(|r| r["expr"][0]["match"]["right"] == "veth9")
        );
        assert!(
            ours.iter()
                .any(|r| r["expr"][0]["match"]["right"] == "02:00:00:00:00:09")
        );

        // the same container/ifname on another network gets its own rules and chain
        fw.setup_macspoofchk("n2", "c1", "eth0", "veth2", MAC1)
            .unwrap();
        assert_eq!(rules_tagged(&tag).len(), 3);
        assert_eq!(rules_tagged(&mac_tag("n2", "c1", "eth0")).len(), 3);
        assert_eq!(mac_chains().len(), 2);
    });
}

#[test]
fn gc_is_per_network() {
    in_netns(|fw| {
        // network A ("n1"): c1/eth0 valid; c2/eth0 and c1/net1 (masq), c3/eth0 (mac) stale
        fw.setup_masq("n1", "c1", "eth0", &nets(&["10.0.0.2/24"]))
            .unwrap();
        fw.setup_masq("n1", "c2", "eth0", &nets(&["10.0.0.3/24"]))
            .unwrap();
        fw.setup_masq("n1", "c1", "net1", &nets(&["10.0.0.4/24"]))
            .unwrap();
        fw.setup_macspoofchk("n1", "c1", "eth0", "veth1", MAC1)
            .unwrap();
        fw.setup_macspoofchk("n1", "c3", "eth0", "veth3", MAC1)
            .unwrap();
        // network B ("n2"): the same c1/eth0 plus attachments absent from A's valid set
        fw.setup_masq("n2", "c1", "eth0", &nets(&["10.0.1.2/24"]))
            .unwrap();
        fw.setup_masq("n2", "c9", "eth0", &nets(&["10.0.1.9/24"]))
            .unwrap();
        fw.setup_macspoofchk("n2", "c1", "eth0", "veth1b", MAC1)
            .unwrap();
        fw.setup_macspoofchk("n2", "c4", "eth0", "veth4", MAC1)
            .unwrap();
        assert_eq!(fw.list_attachments().unwrap().len(), 9);
        assert_eq!(mac_chains().len(), 4);
        let b_tags = BTreeSet::from([
            masq_tag("n2", "c1", "eth0"),
            masq_tag("n2", "c9", "eth0"),
            mac_tag("n2", "c1", "eth0"),
            mac_tag("n2", "c4", "eth0"),
        ]);
        let b_rules = || {
            let mut r: Vec<Value> = b_tags.iter().flat_map(rules_tagged).collect();
            for v in &mut r {
                // handles are stable, but compare without them to be safe
                v.as_object_mut().unwrap().remove("handle");
            }
            r
        };
        let b_before = b_rules();
        assert_eq!(b_before.len(), 2 + 2 * 3);

        let valid_a = HashSet::from([("c1".to_owned(), "eth0".to_owned())]);
        for _ in 0..2 {
            fw.gc("n1", &valid_a).unwrap();
            let mut want = b_tags.clone();
            want.extend([masq_tag("n1", "c1", "eth0"), mac_tag("n1", "c1", "eth0")]);
            assert_eq!(fw.list_attachments().unwrap(), want);
            // B's masquerade and MAC rules are untouched, its chains still there
            assert_eq!(b_rules(), b_before);
            assert_eq!(mac_chains().len(), 3, "{:?}", mac_chains());
            for t in &b_tags {
                if let Tag::MacSpoofChk { .. } = t {
                    let jump = rules_tagged(t)
                        .into_iter()
                        .find(|r| r["chain"] == "prerouting")
                        .unwrap();
                    let target = jump["expr"][1]["jump"]["target"].as_str().unwrap();
                    assert!(mac_chains().contains(target), "{target}");
                }
            }
        }

        // GC of B with nothing valid removes exactly B's rules
        fw.gc("n2", &HashSet::new()).unwrap();
        assert_eq!(
            fw.list_attachments().unwrap(),
            BTreeSet::from([masq_tag("n1", "c1", "eth0"), mac_tag("n1", "c1", "eth0")])
        );
        assert_eq!(mac_chains().len(), 1);
        // GC of a network that has no rules here removes nothing
        fw.gc("n3", &HashSet::new()).unwrap();
        assert_eq!(fw.list_attachments().unwrap().len(), 2);
        fw.gc("n1", &HashSet::new()).unwrap();
        assert!(fw.list_attachments().unwrap().is_empty());
        assert!(mac_chains().is_empty());
    });
}

#[test]
fn foreign_rules_in_our_table_survive() {
    in_netns(|fw| {
        fw.setup_macspoofchk("n", "c1", "eth0", "veth1", MAC1)
            .unwrap();
        run(&[
            "nft",
            "add",
            "rule",
            "bridge",
            "meta_cni",
            "prerouting",
            "counter",
            "comment",
            "\"admin\"",
        ]);
        fw.gc("n", &HashSet::new()).unwrap();
        let left = rules();
        assert_eq!(left.len(), 1, "{left:#?}");
        assert_eq!(left[0]["comment"], "admin");
    });
}

#[test]
fn concurrent_setup_and_teardown_in_one_namespace() {
    in_netns(|fw| {
        // worker threads join this thread's namespace with setns()
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let handles: Vec<JoinHandle<()>> = (0..8)
            .map(|i| {
                let fw = fw.clone();
                let ns = ns.try_clone().unwrap();
                std::thread::spawn(move || {
                    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                    let id = format!("c{i}");
                    let ip = nets(&[&format!("10.0.0.{}/24", i + 2)]);
                    for _ in 0..3 {
                        fw.setup_masq("n", &id, "eth0", &ip).unwrap();
                        fw.setup_macspoofchk("n", &id, "eth0", &format!("veth{i}"), MAC1)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(fw.list_attachments().unwrap().len(), 16);
        assert_eq!(rules().len(), 3 + 8 + 8 * 3);
        let handles: Vec<JoinHandle<()>> = (0..8)
            .map(|i| {
                let fw = fw.clone();
                let ns = ns.try_clone().unwrap();
                std::thread::spawn(move || {
                    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                    let id = format!("c{i}");
                    fw.teardown_masq("n", &id, "eth0").unwrap();
                    fw.teardown_macspoofchk("n", &id, "eth0").unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(fw.list_attachments().unwrap().is_empty());
    });
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in its own fresh network namespace, running jobs on request.
struct NsWorker {
    tx: Option<mpsc::Sender<Job>>,
    tid: i32,
    handle: Option<JoinHandle<()>>,
}

impl NsWorker {
    fn new() -> NsWorker {
        let (tx, rx) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            enter_fresh_netns();
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            for job in rx {
                job();
            }
        });
        let tid = tid_rx.recv().expect("worker failed to start");
        NsWorker {
            tx: Some(tx),
            tid,
            handle: Some(handle),
        }
    }

    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = rtx.send(f());
            }))
            .unwrap();
        rrx.recv().expect("job panicked in worker namespace")
    }

    fn sh(&self, args: &'static [&'static str]) {
        self.run(move || {
            run(args);
        })
    }
}

impl Drop for NsWorker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sends a few datagrams from `from` to `to`; returns the source address seen by the
/// receiver, or `None` if nothing arrived.
fn udp_probe(
    from: &NsWorker,
    src: &'static str,
    to: &NsWorker,
    dst: &'static str,
) -> Option<std::net::IpAddr> {
    let rx = to.run(move || UdpSocket::bind(dst).unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let tx = from.run(move || UdpSocket::bind(src).unwrap());
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        // errors (e.g. EHOSTUNREACH after failed ARP) just mean "did not arrive"
        let _ = tx.send_to(b"probe", dst);
        if let Ok((_, peer)) = rx.recv_from(&mut buf) {
            return Some(peer.ip());
        }
    }
    None
}

/// Bridge `br0` in the test namespace, two "containers" on it, plus an "outside" host
/// reached through a routed veth:
///
/// ```text
///  c1 10.9.0.1 ─ h1 ┐
///                   br0 10.9.0.254 (test ns, forwarding) ── out0 192.168.50.1 ── out1 192.168.50.2 (outside)
///  c2 10.9.0.2 ─ h2 ┘
/// ```
struct Topology {
    c1: NsWorker,
    c2: NsWorker,
    outside: NsWorker,
}

fn topology() -> Topology {
    let c1 = NsWorker::new();
    let c2 = NsWorker::new();
    let outside = NsWorker::new();
    run(&["ip", "link", "add", "br0", "type", "bridge"]);
    run(&["ip", "addr", "add", "10.9.0.254/24", "dev", "br0"]);
    run(&["ip", "link", "set", "br0", "up"]);
    for (host, peer, mac, w) in [
        ("h1", "c1", "02:00:00:00:00:01", &c1),
        ("h2", "c2", "02:00:00:00:00:02", &c2),
    ] {
        run(&[
            "ip", "link", "add", host, "type", "veth", "peer", "name", peer,
        ]);
        run(&["ip", "link", "set", peer, "address", mac]);
        run(&["ip", "link", "set", host, "master", "br0", "up"]);
        run(&["ip", "link", "set", peer, "netns", &w.tid.to_string()]);
    }
    run(&[
        "ip", "link", "add", "out0", "type", "veth", "peer", "name", "out1",
    ]);
    run(&["ip", "addr", "add", "192.168.50.1/24", "dev", "out0"]);
    run(&["ip", "link", "set", "out0", "up"]);
    run(&[
        "ip",
        "link",
        "set",
        "out1",
        "netns",
        &outside.tid.to_string(),
    ]);
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    c1.sh(&["ip", "addr", "add", "10.9.0.1/24", "dev", "c1"]);
    c1.sh(&["ip", "link", "set", "c1", "up"]);
    c1.sh(&["ip", "route", "add", "default", "via", "10.9.0.254"]);
    c2.sh(&["ip", "addr", "add", "10.9.0.2/24", "dev", "c2"]);
    c2.sh(&["ip", "link", "set", "c2", "up"]);
    outside.sh(&["ip", "addr", "add", "192.168.50.2/24", "dev", "out1"]);
    outside.sh(&["ip", "link", "set", "out1", "up"]);
    Topology { c1, c2, outside }
}

#[test]
fn macspoofchk_drops_spoofed_frames() {
    in_netns(|fw| {
        let t = topology();
        let probe = |t: &Topology| udp_probe(&t.c1, "10.9.0.1:0", &t.c2, "10.9.0.2:4000");
        assert!(probe(&t).is_some(), "no connectivity without rules");

        fw.setup_macspoofchk("net", "ctr1", "eth0", "h1", [2, 0, 0, 0, 0, 1])
            .unwrap();
        fw.setup_macspoofchk("net", "ctr1", "eth0", "h1", [2, 0, 0, 0, 0, 1])
            .unwrap();
        assert!(probe(&t).is_some(), "right MAC must pass");

        t.c1.sh(&["ip", "link", "set", "c1", "address", "02:00:00:00:00:66"]);
        assert!(probe(&t).is_none(), "spoofed MAC must be dropped");

        // GC of another network (which does not list ctr1) keeps the check in force
        fw.gc("other net", &HashSet::new()).unwrap();
        assert!(
            probe(&t).is_none(),
            "GC of another network must keep the check"
        );

        fw.teardown_macspoofchk("net", "ctr1", "eth0").unwrap();
        assert!(probe(&t).is_some(), "teardown must lift the check");
    });
}

#[test]
fn masquerade_rewrites_source_leaving_the_subnet() {
    in_netns(|fw| {
        let t = topology();
        let probe = |t: &Topology| udp_probe(&t.c1, "10.9.0.1:0", &t.outside, "192.168.50.2:4000");
        let plain: std::net::IpAddr = "10.9.0.1".parse().unwrap();
        let masq: std::net::IpAddr = "192.168.50.1".parse().unwrap();
        assert_eq!(probe(&t), Some(plain));

        fw.setup_masq("net", "ctr1", "eth0", &nets(&["10.9.0.1/24"]))
            .unwrap();
        assert_eq!(probe(&t), Some(masq));
        // inside the subnet: not masqueraded (bridged to c2, source unchanged)
        assert_eq!(
            udp_probe(&t.c1, "10.9.0.1:0", &t.c2, "10.9.0.2:4001"),
            Some(plain)
        );

        fw.teardown_masq("net", "ctr1", "eth0").unwrap();
        // new flow (new source port) after teardown is not masqueraded
        assert_eq!(probe(&t), Some(plain));
    });
}

#[test]
fn node_masq_is_idempotent_and_survives_attachment_gc() {
    in_netns(|fw| {
        let subnet: IpNet = "10.244.1.0/24".parse().unwrap();
        let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
        let node_rules = || -> Vec<Value> {
            rules()
                .into_iter()
                .filter(|r| {
                    r["comment"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("meta-cni:node-masq:"))
                })
                .collect()
        };
        assert!(fw.ensure_node_masq(subnet, cluster).unwrap());
        let before = run(&["nft", "-j", "list", "ruleset"]);
        assert!(!fw.ensure_node_masq(subnet, cluster).unwrap());
        assert_eq!(before, run(&["nft", "-j", "list", "ruleset"]));
        let r = node_rules();
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(r[0]["chain"], "masq_checks");
        assert_eq!(
            r[0]["expr"][0]["match"]["right"],
            serde_json::json!({"prefix": {"addr": "10.244.1.0", "len": 24}})
        );
        assert_eq!(
            r[0]["expr"][1],
            serde_json::json!({"match": {"op": "!=",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}})
        );
        assert_eq!(r[0]["expr"][2], serde_json::json!({"masquerade": null}));

        // Attachment rules come and go around it; GC of every network leaves it.
        fw.setup_masq("cluster", "c1", "eth0", &nets(&["10.244.1.2/16"]))
            .unwrap();
        fw.teardown_masq("cluster", "c1", "eth0").unwrap();
        fw.gc("cluster", &HashSet::new()).unwrap();
        assert_eq!(node_rules().len(), 1);
        assert!(fw.list_attachments().unwrap().is_empty());
        assert!(!fw.ensure_node_masq(subnet, cluster).unwrap());

        // Another subnet replaces it; removal removes it (twice is fine).
        assert!(
            fw.ensure_node_masq("10.244.7.0/24".parse().unwrap(), cluster)
                .unwrap()
        );
        let r = node_rules();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0]["comment"],
            "meta-cni:node-masq:10.244.7.0/24:10.244.0.0/16"
        );
        assert!(fw.remove_node_masq().unwrap());
        assert!(!fw.remove_node_masq().unwrap());
        assert!(node_rules().is_empty());
        assert!(
            fw.ensure_node_masq(subnet, "fd00::/16".parse().unwrap())
                .is_err()
        );
    });
}

/// The default backend speaks netlink itself; `META_CNI_NFT` and the builder select the
/// others. On this machine kind (Debian's nftables, hence libnftables1) the library
/// loads; a machine without it would fall back to `nft`, which this test refuses to pass
/// silently.
#[test]
fn backends_are_selectable() {
    assert_eq!(
        Backend::from_env(),
        Backend::Netlink,
        "META_CNI_NFT is set in the test environment"
    );
    assert_eq!(Nftables::new().backend(), "netlink");
    assert_eq!(
        Nftables::new().with_backend(Backend::Library).backend(),
        "libnftables",
        "{} not loadable: install Debian's libnftables1 (a dependency of nftables)",
        meta_firewall::libnft::SONAME
    );
    assert_eq!(
        Nftables::new().with_backend(Backend::Binary).backend(),
        "nft"
    );
    assert_eq!(
        Nftables::new().with_nft_binary("/usr/sbin/nft").backend(),
        "nft"
    );
}

/// What one backend writes, the others read and remove: netlink messages, the library
/// and the binary apply the same documents to the same tables, in the calling thread's
/// namespace, and `nft`'s own listing (the oracle) decodes what the netlink backend wrote
/// into the rules the documents describe.
#[test]
fn all_backends_agree() {
    in_netns(|fw| {
        let net = fw.clone().with_backend(Backend::Netlink);
        assert_eq!(net.backend(), "netlink");
        let lib = fw.clone().with_backend(Backend::Library);
        assert_eq!(lib.backend(), "libnftables");
        let nft = which::which("nft").expect("nft in PATH");
        let bin = fw.clone().with_nft_binary(nft);
        net.setup_masq("n", "c1", "eth0", &nets(&["10.0.0.2/24", "fd00::2/64"]))
            .unwrap();
        net.setup_macspoofchk("n", "c1", "eth0", "veth1", MAC1)
            .unwrap();
        lib.setup_masq("n", "c2", "eth0", &nets(&["10.0.0.3/24"]))
            .unwrap();
        bin.setup_macspoofchk("n", "c3", "eth0", "veth3", MAC1)
            .unwrap();
        let want = BTreeSet::from([
            masq_tag("n", "c1", "eth0"),
            mac_tag("n", "c1", "eth0"),
            masq_tag("n", "c2", "eth0"),
            mac_tag("n", "c3", "eth0"),
        ]);
        for b in [&net, &lib, &bin] {
            assert_eq!(b.list_attachments().unwrap(), want, "{}", b.backend());
        }
        // nft's listing of what each backend wrote is the same rule for the same input
        let strip = |mut r: Value| {
            let o = r.as_object_mut().unwrap();
            o.remove("handle");
            o.remove("comment");
            r
        };
        lib.setup_masq("n", "c4", "eth0", &nets(&["10.0.0.2/24", "fd00::2/64"]))
            .unwrap();
        let by_net: Vec<Value> = rules_tagged(&masq_tag("n", "c1", "eth0"))
            .into_iter()
            .map(strip)
            .collect();
        let by_lib: Vec<Value> = rules_tagged(&masq_tag("n", "c4", "eth0"))
            .into_iter()
            .map(strip)
            .collect();
        assert_eq!(by_net.len(), 2);
        assert_eq!(by_net, by_lib);
        lib.teardown_masq("n", "c4", "eth0").unwrap();
        // removal across backends
        bin.teardown_masq("n", "c1", "eth0").unwrap();
        lib.teardown_macspoofchk("n", "c1", "eth0").unwrap();
        net.teardown_masq("n", "c2", "eth0").unwrap();
        net.teardown_macspoofchk("n", "c3", "eth0").unwrap();
        for b in [&net, &lib, &bin] {
            assert!(b.list_attachments().unwrap().is_empty(), "{}", b.backend());
        }
        assert!(mac_chains().is_empty(), "{:?}", mac_chains());
        // The library's errors are nft's: the kernel's answer in the error buffer.
        let lib = meta_firewall::libnft::get().expect("libnftables");
        let e = lib
            .run("list table inet meta_cni_no_such_table", true)
            .unwrap_err();
        assert!(e.stderr.contains("No such file or directory"), "{e:?}");
        let e = lib
            .run(r#"{"nftables": [{"add": {"rule": {"family": "inet", "table": "nope", "chain": "c", "expr": []}}}]}"#, true)
            .unwrap_err();
        assert!(e.rc != 0 && !e.stderr.is_empty(), "{e:?}");
        // The library acts in the calling thread's namespace: the tables made above are here.
        assert!(lib.run("list tables", false).unwrap().contains("meta_cni"));
    });
}

/// The kernel's refusal of a netlink batch reaches the caller with the command that failed
/// and the reason, and nothing of the refused transaction is applied.
#[test]
fn netlink_errors_name_the_command() {
    in_netns(|fw| {
        fw.setup_masq("n", "c1", "eth0", &nets(&["10.0.0.2/24"]))
            .unwrap();
        // a base chain of another type under our chain's name: the kernel refuses the update
        run(&["nft", "delete", "table", "inet", "meta_cni"]);
        run(&["nft", "add", "table", "inet", "meta_cni"]);
        run(&[
            "nft",
            "add",
            "chain",
            "inet",
            "meta_cni",
            "postrouting",
            "{ type filter hook input priority 0 ; }",
        ]);
        let e = fw
            .setup_masq("n", "c1", "eth0", &nets(&["10.0.0.2/24"]))
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, meta_firewall::Error::Netlink { .. }), "{e:?}");
        assert!(text.contains("inet meta_cni postrouting"), "{text}");
        // nothing of the failed transaction is left (it was one batch)
        assert!(fw.list_attachments().unwrap().is_empty());
        assert!(rules().is_empty(), "{:#?}", rules());
    });
}

/// One transaction per verb: `setup_attachment` makes exactly the rules that the two
/// separate setups make, `teardown_attachment` removes both features' rules (and only
/// that attachment's), and either feature alone works.
#[test]
fn attachment_setup_and_teardown_in_one_transaction() {
    in_netns(|fw| {
        let ips = nets(&["10.3.0.5/24", "fd00:3::5/64"]);
        // the reference shape: the two separate calls
        fw.setup_masq("n", "sep", "eth0", &ips).unwrap();
        fw.setup_macspoofchk("n", "sep", "eth0", "vethsep", MAC1)
            .unwrap();
        fw.setup_attachment("n", "one", "eth0", Some(&ips), Some(("vethone", MAC1)))
            .unwrap();
        // twice: replaced, not doubled
        fw.setup_attachment("n", "one", "eth0", Some(&ips), Some(("vethone", MAC1)))
            .unwrap();
        let shape = |id: &str| -> Vec<Value> {
            let mut v: Vec<Value> = [masq_tag("n", id, "eth0"), mac_tag("n", id, "eth0")]
                .iter()
                .flat_map(rules_tagged)
                .map(|mut r| {
                    let o = r.as_object_mut().unwrap();
                    o.remove("handle");
                    o.remove("comment");
                    // the per-attachment chain and host interface differ by design
                    o.remove("chain");
                    r.to_string()
                        .replace("vethsep", "vethX")
                        .replace("vethone", "vethX")
                        .replace(
                            &meta_firewall::doc::mac_chain_name(
                                &meta_firewall::network_hash("n"),
                                id,
                                "eth0",
                            ),
                            "mac_X",
                        )
                })
                .map(|s| serde_json::from_str(&s).unwrap())
                .collect();
            v.sort_by_key(|r| r.to_string());
            v
        };
        assert_eq!(shape("one").len(), 5, "{:#?}", shape("one"));
        assert_eq!(shape("one"), shape("sep"));
        assert_eq!(mac_chains().len(), 2);
        // teardown of one attachment removes both of its features only
        fw.teardown_attachment("n", "one", "eth0").unwrap();
        fw.teardown_attachment("n", "one", "eth0").unwrap();
        assert!(shape("one").is_empty());
        assert_eq!(shape("sep").len(), 5);
        assert_eq!(mac_chains().len(), 1);
        // one feature alone
        fw.setup_attachment("n", "m", "eth0", Some(&ips), None)
            .unwrap();
        fw.setup_attachment("n", "s", "eth0", None, Some(("veths", MAC1)))
            .unwrap();
        fw.setup_attachment("n", "none", "eth0", None, None)
            .unwrap();
        assert_eq!(rules_tagged(&masq_tag("n", "m", "eth0")).len(), 2);
        assert!(rules_tagged(&mac_tag("n", "m", "eth0")).is_empty());
        assert_eq!(rules_tagged(&mac_tag("n", "s", "eth0")).len(), 3);
        assert!(rules_tagged(&masq_tag("n", "s", "eth0")).is_empty());
        assert!(
            fw.setup_attachment("n", "bad", "eth0", None, Some(("bad name", MAC1)))
                .is_err()
        );
        fw.teardown_attachment("n", "sep", "eth0").unwrap();
        fw.teardown_attachment("n", "m", "eth0").unwrap();
        fw.teardown_attachment("n", "s", "eth0").unwrap();
        assert!(fw.list_attachments().unwrap().is_empty());
        assert!(mac_chains().is_empty());
    });
}

/// A container ID one byte too long for a masquerade tag still fits a spoof-check tag:
/// the spoof check alone is set up and torn down with it (no masquerade tag is made).
#[test]
fn spoof_check_alone_takes_the_longer_container_id() {
    in_netns(|fw| {
        let ifname = "eth0123456789ab";
        let id = "c".repeat(82);
        assert!(Tag::masq("n", &id, ifname).is_err());
        fw.setup_attachment("n", &id, ifname, None, Some(("vethlong", MAC1)))
            .unwrap();
        assert_eq!(rules_tagged(&mac_tag("n", &id, ifname)).len(), 3);
        fw.teardown_attachment("n", &id, ifname).unwrap();
        assert!(fw.list_attachments().unwrap().is_empty());
        assert!(
            fw.setup_attachment("n", &id, ifname, Some(&nets(&["10.0.0.2/24"])), None)
                .is_err()
        );
    });
}
