//! The delegate contract: one suite of CNI-spec cases that every delegate passes,
//! parameterised by a [`Subject`] (how to build a test bed for the delegate, its base
//! configuration, how to run it, what counts as left behind).
//!
//! Each delegate crate has a small `tests/contract.rs` that describes its subject and
//! expands [`contract_tests!`](crate::contract_tests), which makes one `#[test]` per case
//! (so a failure names the case):
//!
//! | test | what must hold |
//! |---|---|
//! | `verbs_<version>` (one per supported version) | VERSION answers; ADD's result is valid for the version (`ips[].version` below 1.0.0 only, no fields the version lacks) and names the interface in the pod, whose addresses are the result's; CHECK passes from 0.4.0 (and needs a `prevResult`: code 7), STATUS and GC pass in 1.1.0, each refused with code 1 below that; DEL with `prevResult`, then twice without, leaves nothing |
//! | `del_three_times` | DEL without `prevResult` leaves nothing, and twice more still succeeds |
//! | `del_netns_gone` | after the pod namespace is gone, DEL (three times) succeeds and leaves nothing |
//! | `del_netns_empty` | DEL with `CNI_NETNS` empty (three times) succeeds and releases IPAM and firewall rules; once the pod goes, nothing is left |
//! | `del_never_added` | DEL of an attachment that never existed succeeds and changes nothing |
//! | `refused_add` | every ADD of the subject's fixture table `refused_add` fails with its code and message (one JSON error document) and leaves nothing |
//! | `del_after_refused_add` | the runtime's DEL after each of those ADDs (same configuration and environment) succeeds — or fails with the entry's `del_code` — and leaves nothing |
//! | `del_with_refused_config` | a live attachment DELed with each of those configurations is removed all the same |
//! | `gc` | GC (1.1.0) releases the IPAM allocations and firewall rules of attachments not in `cni.dev/valid-attachments` and keeps the valid ones; the older key `cni.dev/attachments` works; a malformed list is code 7 and releases nothing |
//! | `bad_input` | every entry of `common.json`'s and the subject's `bad_input` tables (malformed JSON, missing or invalid `CNI_*`, unsupported versions, bad names, a missing netns, ...) fails with its code as exactly one JSON error document, and touches nothing |
//! | `add_ifname_exists` | ADD of an interface name the pod already has fails naming it, changes neither the existing interface nor anything else; so does the same ADD repeated |
//! | `add_ipam_exhausted` | ADD failing in IPAM after the link was made (a one-address range) leaves nothing of its own, and its DEL does not touch the live attachment |
//!
//! "Leaves nothing" is [`residue`]: the bed's links (node links other than the subject's
//! shared infrastructure such as its bridge, pod links other than `lo`, per-pod VXLAN FDB
//! entries), IPAM allocations under the bed's data directory and firewall rules tagged
//! `meta-cni:` — compared with the same listing taken before the case.
//!
//! Error tables live in `meta-tests/fixtures/contract/`: `common.json` for every subject
//! and `<subject>.json` per subject (see [`fixture`]).
//!
//! Subjects are either a delegate binary run in a [`World`](crate::World) ([`kernel`]),
//! or anything implementing [`Subject`] itself (the ipvlan delegate runs in-process on
//! fake namespaces, through [`run_plugin`](crate::run_plugin)).

mod cases;
pub mod fixture;
pub mod kernel;

pub use cases::*;
pub use fixture::{Fixture, merge_patch};
pub use kernel::KernelSubject;

use crate::{Invocation, Run, dir_contents};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every spec version the delegates speak.
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// `CNI_ARGS` of every contract invocation, as a Kubernetes runtime passes them.
pub const CNI_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p";

/// A delegate under contract.
pub trait Subject {
    /// The subject's name; also its fixture file (`fixtures/contract/<name>.json`).
    fn name(&self) -> &str;
    /// A fresh test bed for one case (torn down when dropped).
    fn bed(&self) -> Box<dyn Bed + '_>;
}

/// The state of one interface in a pod, for before/after comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIface {
    /// Link kind.
    pub kind: Option<String>,
    /// MAC, formatted.
    pub mac: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Admin up.
    pub up: bool,
    /// Addresses other than IPv6 link-local, sorted.
    pub addrs: Vec<String>,
}

/// One test bed: a node, its pods, the subject's state directories.
pub trait Bed {
    /// A valid base configuration in `version`, with IPAM (host-local with its data
    /// directory at [`Bed::ipam_dir`]) and, where the delegate has them, firewall rules.
    fn conf(&self, version: &str) -> Value;
    /// Number of pods (at least 1).
    fn pods(&self) -> usize;
    /// `CNI_NETNS` of pod `pod` (the path stays the same after [`Bed::drop_pod`]).
    fn netns(&self, pod: usize) -> String;
    /// Runs one invocation of the subject.
    fn run(&self, inv: &Invocation, stdin: &[u8]) -> Run;
    /// The pod's namespace goes away, with its links (as the kernel does).
    fn drop_pod(&mut self, pod: usize);
    /// Interface `ifname` of pod `pod`; None when the pod has no such link.
    fn pod_iface(&self, pod: usize, ifname: &str) -> Option<PodIface>;
    /// The IPAM data directory of [`Bed::conf`].
    fn ipam_dir(&self) -> PathBuf;
    /// The link state, rendered and sorted: node links other than the subject's shared
    /// infrastructure, pod links other than `lo`, VXLAN FDB entries other than the flood
    /// list.
    fn links(&self) -> Vec<String>;
    /// Whether the base configuration makes firewall rules (so that their absence after
    /// ADD fails the case instead of passing it vacuously).
    fn has_firewall(&self) -> bool {
        false
    }
    /// Comments of the firewall rules of attachments, tagged
    /// `meta-cni:<kind>:<network>:<ifname>:<container-id>` (none by default).
    fn firewall_tags(&self) -> Vec<String> {
        Vec::new()
    }
    /// How many mutating requests reached the (fake) kernel so far, where the bed can
    /// tell; invalid input must not add any.
    fn mutations(&self) -> Option<usize> {
        None
    }
    /// Makes the next matching operation fail (fixture field `fault`), where the bed can.
    fn inject(&self, fault: &str) {
        panic!("fault {fault:?}: this subject cannot inject faults");
    }
}

/// One IPAM reservation under a data directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allocation {
    /// `<network>/<ip>`.
    pub file: String,
    /// Owner's container ID.
    pub container_id: String,
    /// Owner's interface name.
    pub ifname: String,
}

/// The host-local reservations under `bed`'s IPAM directory.
pub fn allocations(bed: &dyn Bed) -> Vec<Allocation> {
    dir_contents(&bed.ipam_dir())
        .into_iter()
        .filter(|(k, _)| !k.ends_with("lock") && !k.contains("last_reserved_ip"))
        .map(|(file, body)| {
            let mut l = body.lines();
            Allocation {
                file,
                container_id: l.next().unwrap_or_default().trim().to_string(),
                ifname: l.next().unwrap_or_default().trim().to_string(),
            }
        })
        .collect()
}

/// (container ID, ifname) of a firewall tag `meta-cni:<kind>:<network>:<ifname>:<cid>`.
pub fn tag_owner(tag: &str) -> (String, String) {
    let parts: Vec<&str> = tag.splitn(5, ':').collect();
    match parts.as_slice() {
        [_, _, _, ifname, cid] => (cid.to_string(), ifname.to_string()),
        _ => panic!("malformed firewall tag {tag:?}"),
    }
}

/// Everything an attachment can leave behind, rendered and sorted: [`Bed::links`], IPAM
/// reservations, firewall tags.
pub fn residue(bed: &dyn Bed) -> Vec<String> {
    let mut v = bed.links();
    v.extend(
        allocations(bed)
            .into_iter()
            .map(|a| format!("ipam {} {}/{}", a.file, a.container_id, a.ifname)),
    );
    v.extend(bed.firewall_tags().into_iter().map(|t| format!("nft {t}")));
    v.sort();
    v
}

/// Asserts that [`residue`] is `want`, waiting up to 10 s for the kernel's asynchronous
/// teardown of deleted namespaces (their veth peers go a moment later); anything still
/// different then is a leak (or a loss), reported line by line.
pub fn assert_residue(bed: &dyn Bed, want: &[String], ctx: &str) {
    let t0 = Instant::now();
    let mut now = residue(bed);
    while now != want && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        now = residue(bed);
    }
    if now != want {
        let w: BTreeSet<&String> = want.iter().collect();
        let n: BTreeSet<&String> = now.iter().collect();
        let left: Vec<&&String> = n.difference(&w).collect();
        let lost: Vec<&&String> = w.difference(&n).collect();
        panic!(
            "{ctx}: state differs from what it should be\n  left behind: {left:#?}\n  lost: {lost:#?}"
        );
    }
}

/// Asserts that `r` is a failure reported as the spec says: non-zero exit, stdout exactly
/// one JSON error document `{cniVersion, code, msg[, details]}` (`cniVersion` = `version`
/// when given), with `code` (when given) and a message (or details) containing `msg`.
pub fn assert_error(r: &Run, code: Option<u64>, msg: &str, version: Option<&str>, ctx: &str) {
    assert_ne!(r.code, 0, "{ctx}: expected a failure, got {}", r.stdout);
    let doc: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{ctx}: stdout is not exactly one JSON document ({e}): {:?} (stderr {})",
            r.stdout, r.stderr
        )
    });
    let obj = doc
        .as_object()
        .unwrap_or_else(|| panic!("{ctx}: error is not an object: {doc}"));
    for k in obj.keys() {
        assert!(
            ["cniVersion", "code", "msg", "details"].contains(&k.as_str()),
            "{ctx}: unexpected key {k:?} in the error document {doc}"
        );
    }
    let got = doc["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("{ctx}: error without a numeric code: {doc}"));
    let m = doc["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: error without msg: {doc}"));
    assert!(!m.is_empty(), "{ctx}: empty error message: {doc}");
    let ver = doc["cniVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: error without cniVersion: {doc}"));
    if let Some(v) = version {
        assert_eq!(ver, v, "{ctx}: cniVersion of the error document: {doc}");
    }
    if let Some(c) = code {
        assert_eq!(got, c, "{ctx}: error code: {doc}");
    }
    let full = format!("{m} {}", doc["details"].as_str().unwrap_or_default());
    assert!(
        full.contains(msg),
        "{ctx}: error message should contain {msg:?}: {doc}"
    );
}

/// Asserts that `r` succeeded with an empty stdout (DEL, CHECK, STATUS, GC).
pub fn assert_silent_ok(r: &Run, ctx: &str) {
    assert_eq!(
        r.code, 0,
        "{ctx}: failed: stdout={} stderr={}",
        r.stdout, r.stderr
    );
    assert!(
        r.stdout.trim().is_empty(),
        "{ctx}: must print nothing on success, printed {:?}",
        r.stdout
    );
}

fn is_v0(version: &str) -> bool {
    version.starts_with("0.")
}

/// Asserts that `res` is a valid ADD result of `version` that names `ifname` in
/// `sandbox`, and returns that interface's index. Valid: only the spec's keys; every
/// interface named; at least one IP, each a CIDR pointing at the pod interface, with
/// `version` ("4"/"6", matching the address) below 1.0.0 and without it from 1.0.0;
/// routes with a CIDR `dst`; no field the version lacks (interface `mtu`/`socketPath`/
/// `pciID`, route `mtu`/`advmss`/`priority`/`table`/`scope` are 1.1.0); and it parses as
/// a result.
pub fn assert_result(res: &Value, version: &str, ifname: &str, sandbox: &str) -> usize {
    let ctx = format!("{version} result {res}");
    let obj = res
        .as_object()
        .unwrap_or_else(|| panic!("{ctx}: not an object"));
    for k in obj.keys() {
        assert!(
            ["cniVersion", "interfaces", "ips", "routes", "dns"].contains(&k.as_str()),
            "{ctx}: unexpected key {k:?}"
        );
    }
    assert_eq!(res["cniVersion"], version, "{ctx}: cniVersion");
    let v11 = version == "1.1.0";
    let ifs = res["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: no interfaces"));
    for i in ifs {
        assert!(
            i["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{ctx}: unnamed interface {i}"
        );
        if !v11 {
            for k in ["mtu", "socketPath", "pciID"] {
                assert!(i.get(k).is_none(), "{ctx}: interface {k} below 1.1.0");
            }
        }
    }
    let idx = ifs
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"] == sandbox)
        .unwrap_or_else(|| panic!("{ctx}: no interface {ifname} with sandbox {sandbox}"));
    let ips = res["ips"]
        .as_array()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| panic!("{ctx}: no ips"));
    for ip in ips {
        let a: ipnet::IpNet = ip["address"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{ctx}: bad address in {ip}"));
        if is_v0(version) {
            let want = if a.addr().is_ipv4() { "4" } else { "6" };
            assert_eq!(ip["version"], want, "{ctx}: ips[].version of {a}");
        } else {
            assert!(ip.get("version").is_none(), "{ctx}: ips[].version in 1.x");
        }
        assert_eq!(
            ip["interface"].as_u64(),
            Some(idx as u64),
            "{ctx}: ips[].interface of {a} must name the pod interface"
        );
        if let Some(g) = ip.get("gateway") {
            assert!(
                g.as_str()
                    .is_some_and(|g| g.parse::<std::net::IpAddr>().is_ok()),
                "{ctx}: bad gateway {g}"
            );
        }
    }
    for r in res["routes"].as_array().into_iter().flatten() {
        assert!(
            r["dst"]
                .as_str()
                .is_some_and(|d| d.parse::<ipnet::IpNet>().is_ok()),
            "{ctx}: bad route {r}"
        );
        if !v11 {
            for k in ["mtu", "advmss", "priority", "table", "scope"] {
                assert!(r.get(k).is_none(), "{ctx}: route {k} below 1.1.0");
            }
        }
    }
    if let Some(d) = res.get("dns") {
        assert!(d.is_object(), "{ctx}: dns is not an object");
    }
    cni_core::CniResult::from_value(res).unwrap_or_else(|e| panic!("{ctx}: does not parse: {e}"));
    idx
}

/// Expands to one `#[test]` per contract case, in a module `$m`, for the subject `$s`
/// (an expression evaluated in every test):
///
/// ```ignore
/// meta_tests::contract_tests!(bridge: subject());
/// ```
#[macro_export]
macro_rules! contract_tests {
    ($m:ident : $s:expr) => {
        mod $m {
            #[allow(unused_imports)]
            use super::*;
            use $crate::contract as c;
            #[test]
            fn verbs_0_3_0() {
                c::verbs(&$s, "0.3.0")
            }
            #[test]
            fn verbs_0_3_1() {
                c::verbs(&$s, "0.3.1")
            }
            #[test]
            fn verbs_0_4_0() {
                c::verbs(&$s, "0.4.0")
            }
            #[test]
            fn verbs_1_0_0() {
                c::verbs(&$s, "1.0.0")
            }
            #[test]
            fn verbs_1_1_0() {
                c::verbs(&$s, "1.1.0")
            }
            #[test]
            fn del_three_times() {
                c::del_three_times(&$s)
            }
            #[test]
            fn del_netns_gone() {
                c::del_netns_gone(&$s)
            }
            #[test]
            fn del_netns_empty() {
                c::del_netns_empty(&$s)
            }
            #[test]
            fn del_never_added() {
                c::del_never_added(&$s)
            }
            #[test]
            fn refused_add() {
                c::refused_add(&$s)
            }
            #[test]
            fn del_after_refused_add() {
                c::del_after_refused_add(&$s)
            }
            #[test]
            fn del_with_refused_config() {
                c::del_with_refused_config(&$s)
            }
            #[test]
            fn gc() {
                c::gc(&$s)
            }
            #[test]
            fn bad_input() {
                c::bad_input(&$s)
            }
            #[test]
            fn add_ifname_exists() {
                c::add_ifname_exists(&$s)
            }
            #[test]
            fn add_ipam_exhausted() {
                c::add_ipam_exhausted(&$s)
            }
        }
    };
}
