//! Differential tests: the same configurations through the reference macvlan (+ host-local
//! / static; Debian containernetworking-plugins 1.1.1) and through meta-macvlan give the
//! same result shape, the same kernel state in the pod (link kind, macvlan mode, MTU,
//! addresses, routes, MAC when requested) and on the node master, the same host-local
//! files, and the same end state after DEL; bad configurations fail on both sides.

mod common;
use common::*;
use meta_netlink::{MacvlanMode, Netlink, NetlinkOps};
use serde_json::{Value, json};
use std::path::Path;

struct Side {
    world: World,
    result: Value,
}

/// One differential case.
struct Case {
    name: &'static str,
    conf: Value,
    /// CNI_ARGS.
    args: &'static str,
    /// MTU of the node master.
    master_mtu: u32,
    /// The mode the pod's link must have.
    mode: MacvlanMode,
    /// A MAC the pod's link must have.
    mac: Option<&'static str>,
    /// The MTU the pod's link must have.
    pod_mtu: u32,
}

impl Case {
    fn new(name: &'static str, conf: Value) -> Case {
        Case {
            name,
            conf,
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
            master_mtu: 1500,
            mode: MacvlanMode::Bridge,
            mac: None,
            pod_mtu: 1500,
        }
    }
}

fn full_conf(version: &str, case: &Value, data: &Path) -> Value {
    let mut c = conf(version, "difftest", case.clone());
    if let Some(ipam) = c.get_mut("ipam")
        && ipam.get("type").and_then(Value::as_str) == Some("host-local")
    {
        ipam["dataDir"] = json!(data);
    }
    c
}

fn add(bin: &Path, version: &str, case: &Case, cid: &str) -> Side {
    let w = World::new(1);
    add_master(&w, MASTER, case.master_mtu, true);
    let c = full_conf(version, &case.conf, &w.path("ipam"));
    let r = invoke_args(&w, bin, "ADD", cid, 0, "eth0", &c, case.args).ok();
    let result = r.value().clone();
    Side { world: w, result }
}

/// Node master state: (mtu, up, promisc, addresses).
fn master_state(w: &World) -> (Option<IfaceState>, bool) {
    let mut nl = Netlink::open(Some(w.node.netns())).expect("netlink");
    let promisc = nl
        .link_by_name(MASTER)
        .expect("links")
        .is_some_and(|l| l.promisc);
    (iface_state(w.node.netns(), MASTER), promisc)
}

/// Compares both plugins on every shared version; returns our last ADD result.
fn compare(case: &Case) -> Value {
    let mut last = Value::Null;
    for version in SHARED_VERSIONS {
        let cid = format!("diff-{}-{}", case.name, version.replace('.', ""));
        let ctx = format!("case {} version {version}", case.name);
        let refs = add(&reference("macvlan"), version, case, &cid);
        let ours = add(&common::ours(), version, case, &cid);
        for side in [&ours, &refs] {
            assert_eq!(
                side.result["interfaces"][0]["sandbox"],
                side.world.pod(0),
                "{ctx}: sandbox"
            );
            assert_eq!(
                side.result["interfaces"][0]["mac"].as_str(),
                mac_of(side.world.pods[0].netns(), "eth0").as_deref(),
                "{ctx}: result MAC is the link's"
            );
        }
        last = ours.result.clone();
        let strip = |v: &Value| {
            let mut v = normalize_result(v);
            v["interfaces"][0]["sandbox"] = json!("<sandbox>");
            v
        };
        assert_eq!(
            strip(&ours.result),
            strip(&refs.result),
            "{ctx}: result differs"
        );
        if let Some(mac) = case.mac {
            assert_eq!(ours.result["interfaces"][0]["mac"], mac, "{ctx}: our MAC");
            assert_eq!(
                refs.result["interfaces"][0]["mac"], mac,
                "{ctx}: reference MAC"
            );
        }
        for ifname in ["eth0", "lo"] {
            assert_eq!(
                iface_state(ours.world.pods[0].netns(), ifname),
                iface_state(refs.world.pods[0].netns(), ifname),
                "{ctx}: pod {ifname} differs"
            );
        }
        assert_eq!(
            iface_state(ours.world.pods[0].netns(), "eth0")
                .and_then(|s| s.kind)
                .as_deref(),
            Some("macvlan"),
            "{ctx}"
        );
        assert_eq!(
            iface_state(ours.world.pods[0].netns(), "eth0").map(|s| (s.mtu, s.up)),
            Some((case.pod_mtu, true)),
            "{ctx}: our MTU / up"
        );
        assert_eq!(
            macvlan_mode(ours.world.pods[0].netns(), "eth0"),
            Some(case.mode),
            "{ctx}: our mode"
        );
        assert_eq!(
            macvlan_mode(refs.world.pods[0].netns(), "eth0"),
            Some(case.mode),
            "{ctx}: reference mode"
        );
        assert_eq!(
            link_names(ours.world.pods[0].netns()),
            link_names(refs.world.pods[0].netns()),
            "{ctx}: pod links differ"
        );
        let key = "net.ipv4.conf.eth0.arp_notify";
        assert_eq!(
            read_in_ns_proc(ours.world.pods[0].netns(), key),
            read_in_ns_proc(refs.world.pods[0].netns(), key),
            "{ctx}: pod sysctl {key}"
        );
        assert_eq!(
            master_state(&ours.world),
            master_state(&refs.world),
            "{ctx}: node master differs"
        );
        assert_eq!(
            link_names(ours.world.node.netns()),
            link_names(refs.world.node.netns()),
            "{ctx}: node links differ"
        );
        assert_eq!(
            dir_contents(&ours.world.path("ipam")),
            dir_contents(&refs.world.path("ipam")),
            "{ctx}: host-local files differ"
        );
        // DEL on both: same end state.
        for (side, bin) in [(&ours, common::ours()), (&refs, reference("macvlan"))] {
            let c = full_conf(version, &case.conf, &side.world.path("ipam"));
            invoke_args(&side.world, &bin, "DEL", &cid, 0, "eth0", &c, case.args).ok();
            assert_eq!(
                link_names(side.world.pods[0].netns()),
                vec!["lo"],
                "{ctx}: eth0 left after DEL"
            );
        }
        assert_eq!(
            dir_contents(&ours.world.path("ipam")),
            dir_contents(&refs.world.path("ipam")),
            "{ctx}: host-local files differ after DEL"
        );
        assert!(
            ip_files(&ours.world.path("ipam")).is_empty(),
            "{ctx}: IP not released"
        );
        assert_eq!(
            master_state(&ours.world),
            master_state(&refs.world),
            "{ctx}: node master differs after DEL"
        );
        assert_eq!(
            link_names(ours.world.node.netns()),
            link_names(refs.world.node.netns()),
            "{ctx}: node links differ after DEL"
        );
    }
    last
}

#[test]
fn host_local_v4() {
    let r = compare(&Case::new(
        "hl4",
        json!({"master": MASTER, "ipam": {"type": "host-local", "subnet": "10.60.0.0/24"}}),
    ));
    assert_eq!(r["interfaces"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "10.60.0.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.60.0.1");
    assert_eq!(r["ips"][0]["interface"], 0);
}

#[test]
fn default_master_dual_stack_with_routes() {
    // No "master": the interface of the node's default route.
    let r = compare(&Case::new(
        "dual",
        json!({"ipam": {"type": "host-local",
                        "ranges": [[{"subnet": "10.61.0.0/24", "rangeStart": "10.61.0.40"}], [{"subnet": "fd00:61::/64"}]],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "172.16.0.0/16", "gw": "10.61.0.9"}, {"dst": "fd00:99::/64"}]}}),
    ));
    assert_eq!(r["ips"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["routes"].as_array().map(Vec::len), Some(3));
}

#[test]
fn static_ipam_with_dns() {
    let r = compare(&Case::new(
        "static",
        json!({"master": MASTER,
               "ipam": {"type": "static",
                        "addresses": [{"address": "10.62.0.7/24", "gateway": "10.62.0.1"}, {"address": "fd00:62::7/64"}],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.62.0.3"}],
                        "dns": {"nameservers": ["10.62.0.53"], "search": ["svc.local"]}},
               "dns": {"nameservers": ["1.1.1.1"], "domain": "example.org"}}),
    ));
    // Like the reference, the result carries the configuration's DNS, not IPAM's.
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["1.1.1.1"], "domain": "example.org"})
    );
}

#[test]
fn layer2_only() {
    let r = compare(&Case::new("l2", json!({"master": MASTER})));
    assert!(r.get("ips").is_none(), "{r}");
}

#[test]
fn layer2_only_default_master() {
    let _ = compare(&Case::new("l2d", json!({})));
}

#[test]
fn every_mode() {
    for (mode, m) in [
        ("bridge", MacvlanMode::Bridge),
        ("private", MacvlanMode::Private),
        ("vepa", MacvlanMode::Vepa),
        ("passthru", MacvlanMode::Passthru),
    ] {
        let mut c = Case::new(
            mode,
            json!({"master": MASTER, "mode": mode,
                   "ipam": {"type": "host-local", "subnet": "10.63.0.0/24"}}),
        );
        c.mode = m;
        let _ = compare(&c);
    }
}

#[test]
fn mtu_below_master() {
    let mut c = Case::new(
        "mtu",
        json!({"master": MASTER, "mtu": 1400,
               "ipam": {"type": "host-local", "subnet": "10.64.0.0/24"}}),
    );
    c.master_mtu = 9000;
    c.pod_mtu = 1400;
    let _ = compare(&c);
}

#[test]
fn mtu_inherited_from_master() {
    let mut c = Case::new("mtu0", json!({"master": MASTER, "mtu": 0}));
    c.master_mtu = 9000;
    c.pod_mtu = 9000;
    let _ = compare(&c);
}

#[test]
fn mac_from_runtime_config() {
    let mut c = Case::new(
        "rcmac",
        json!({"master": MASTER, "capabilities": {"mac": true},
               "runtimeConfig": {"mac": "0e:11:22:33:44:55"},
               "ipam": {"type": "host-local", "subnet": "10.65.0.0/24"}}),
    );
    c.mac = Some("0e:11:22:33:44:55");
    let _ = compare(&c);
}

#[test]
fn mac_from_cni_args() {
    let mut c = Case::new(
        "argmac",
        json!({"master": MASTER, "ipam": {"type": "host-local", "subnet": "10.66.0.0/24"}}),
    );
    c.args = "IgnoreUnknown=1;MAC=0e:11:22:33:44:66";
    c.mac = Some("0e:11:22:33:44:66");
    let _ = compare(&c);
}

#[test]
fn mac_from_config() {
    let mut c = Case::new(
        "cfmac",
        json!({"master": MASTER, "mac": "0e:11:22:33:44:77"}),
    );
    c.mac = Some("0e:11:22:33:44:77");
    let _ = compare(&c);
}

/// Bad configurations fail on both sides without leaving anything behind; ours with
/// code 7 and a message naming the field (the reference says 999).
#[test]
fn bad_configs_fail_on_both_sides() {
    let cases = [
        ("mtu", json!({"master": MASTER, "mtu": 9000})),
        ("mtu", json!({"master": MASTER, "mtu": -1})),
        ("mode", json!({"master": MASTER, "mode": "foo"})),
        ("master", json!({"master": "nope0"})),
        ("mac", json!({"master": MASTER, "mac": "zz"})),
    ];
    for (field, extra) in cases {
        for (bin, is_ours) in [(ours(), true), (reference("macvlan"), false)] {
            let w = world(1);
            let before = link_names(w.node.netns());
            let mut base = extra.clone();
            base["ipam"] = json!({"type": "host-local", "subnet": "10.67.0.0/24"});
            let c = full_conf("1.0.0", &base, &w.path("ipam"));
            let r = invoke(&w, &bin, "ADD", "bad", 0, "eth0", &c);
            let ctx = format!("{field} {extra} ours={is_ours}");
            assert_ne!(r.code, 0, "{ctx}: must fail");
            if is_ours {
                assert_eq!(r.err_code(), 7, "{ctx}: {}", r.stdout);
                assert!(
                    r.err_msg().contains(&format!("\"{field}\"")),
                    "{ctx}: message must name the field: {}",
                    r.err_msg()
                );
            }
            assert_eq!(link_names(w.pods[0].netns()), vec!["lo"], "{ctx}");
            assert_eq!(link_names(w.node.netns()), before, "{ctx}");
            assert!(ip_files(&w.path("ipam")).is_empty(), "{ctx}: reservation");
        }
    }
}
