//! Kernel tests (root; every object lives in namespaces the test creates, the masters are
//! veth ends on the test's node namespace).
//!
//! Whether the kernel can make ipvlan links is probed first. Without ipvlan (this is the
//! case on kernels built without CONFIG_IPVLAN) ADD must fail, ours with a message saying
//! "ipvlan unsupported by this kernel", and leave nothing behind — no link, no IPAM
//! reservation — and so must the reference plugin. With ipvlan, the same tests run the
//! real differential comparison against the reference plugin (Debian 1.1.1): result
//! shape, pod interface, host-local files, CHECK, DEL. Each test prints which of the two
//! it ran.

mod common;
use common::*;
use meta_ipvlan::UNSUPPORTED_MSG;
use meta_netlink::{
    IpvlanFlags, IpvlanMode, LinkKind, LinkRequest, NamedNetns, Netlink, NetlinkOps, RouteSpec,
};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Whether this kernel creates ipvlan links (probed once, in a scratch namespace).
fn kernel_has_ipvlan() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        require_root();
        let ns = NamedNetns::create(&unique("mcn-ivp-")).expect("netns");
        let mut nl = Netlink::open(Some(ns.netns())).expect("netlink");
        nl.link_add(&veth("ivp0", "ivp1")).expect("veth");
        let m = nl.link_by_name("ivp0").expect("links").expect("ivp0");
        let req = LinkRequest {
            name: "ivprobe".into(),
            kind: LinkKind::Ipvlan {
                master: m.index,
                mode: IpvlanMode::L2,
                flags: IpvlanFlags::Bridge,
            },
            mtu: None,
            mac: None,
            netns: None,
            up: false,
        };
        match nl.link_add(&req) {
            Ok(()) => true,
            Err(e) if e.is_unsupported() => false,
            Err(e) => panic!("probing ipvlan support: {e}"),
        }
    })
}

fn veth(a: &str, b: &str) -> LinkRequest {
    LinkRequest {
        name: a.into(),
        kind: LinkKind::Veth {
            peer_name: b.into(),
            peer_netns: None,
            peer_mac: None,
            peer_mtu: None,
        },
        mtu: None,
        mac: None,
        netns: None,
        up: true,
    }
}

/// A world whose node has a veth pair `mst0`/`mst1` (both up), `mst0` with 192.168.77.1/24
/// and the node's default route via 192.168.77.254.
fn world() -> World {
    let w = World::new(1);
    let mut nl = Netlink::open(Some(w.node.netns())).expect("netlink");
    nl.link_add(&veth("mst0", "mst1")).expect("veth");
    let m0 = nl.link_by_name("mst0").unwrap().unwrap();
    let m1 = nl.link_by_name("mst1").unwrap().unwrap();
    nl.link_set_up(m1.index, true).unwrap();
    nl.addr_add(m0.index, "192.168.77.1/24".parse().unwrap())
        .unwrap();
    nl.route_add(&RouteSpec {
        gw: Some("192.168.77.254".parse().unwrap()),
        oif: Some(m0.index),
        ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
    })
    .unwrap();
    w
}

/// The cases both plugins understand (the reference 1.1.1 has no `linkInContainer`).
fn cases() -> Vec<(&'static str, Value)> {
    vec![
        (
            "l2-default-master",
            json!({"ipam": {"type": "host-local", "subnet": "10.30.0.0/24"}}),
        ),
        (
            "l3-master-mtu",
            json!({"master": "mst0", "mode": "l3", "mtu": 1400,
                   "ipam": {"type": "host-local", "subnet": "10.31.0.0/24",
                            "routes": [{"dst": "0.0.0.0/0"}]}}),
        ),
        (
            "l3s",
            json!({"master": "mst0", "mode": "l3s",
                   "ipam": {"type": "host-local", "subnet": "10.32.0.0/24"}}),
        ),
        (
            "dual-stack-dns",
            json!({"master": "mst0", "dns": {"nameservers": ["10.33.0.53"]},
                   "ipam": {"type": "host-local",
                            "ranges": [[{"subnet": "10.33.0.0/24", "gateway": "10.33.0.1"}],
                                       [{"subnet": "fd00:33::/64"}]],
                            "routes": [{"dst": "10.99.0.0/16"}, {"dst": "fd00:99::/64"}]}}),
        ),
        (
            "chained",
            json!({"prevResult": {"interfaces": [{"name": "mst0"}],
                                  "ips": [{"address": "10.34.0.7/24", "gateway": "10.34.0.1", "interface": 0}],
                                  "routes": [{"dst": "10.98.0.0/16"}]}}),
        ),
    ]
}

/// The case's config for `version` with its host-local data dir in `w`.
fn case_conf(w: &World, version: &str, case: &Value) -> Value {
    let mut c = conf(version, "ivdiff", case.clone());
    if let Some(ipam) = c.get_mut("ipam") {
        ipam["dataDir"] = json!(w.path("ipam"));
    }
    if let Some(p) = c.get_mut("prevResult") {
        p["cniVersion"] = json!(version);
        if version.starts_with("0.") {
            for ip in p["ips"].as_array_mut().into_iter().flatten() {
                ip["version"] = json!("4");
            }
        }
    }
    c
}

fn ipvlan_mode(w: &World, ifname: &str) -> Option<IpvlanMode> {
    let mut nl = Netlink::open(Some(w.pods[0].netns())).expect("netlink");
    nl.link_by_name(ifname).expect("links")?.ipvlan_mode
}

/// Without ipvlan in the kernel: both plugins fail the ADD and leave the node's links,
/// the pod and the IPAM store as they were; ours says why.
fn unsupported_case(name: &str, case: &Value) {
    for (bin, is_ours) in [(ours(), true), (reference("ipvlan"), false)] {
        let w = world();
        let c = case_conf(&w, "1.0.0", case);
        let node_before = link_names(w.node.netns());
        let r = invoke(&w, &bin, "ADD", "unsup", 0, "eth0", &c);
        let who = if is_ours { "meta-ipvlan" } else { "reference" };
        assert_ne!(r.code, 0, "{name}: {who} ADD succeeded without ipvlan?");
        if is_ours {
            assert_eq!(r.err_code(), 999, "{name}");
            let msg = r.err_msg();
            assert!(msg.contains(UNSUPPORTED_MSG), "{name}: {msg}");
            println!("{name}: meta-ipvlan ADD refused as expected: {msg}");
        }
        assert_eq!(
            link_names(w.node.netns()),
            node_before,
            "{name}: {who} left links on the node"
        );
        assert_eq!(
            link_names(w.pods[0].netns()),
            vec!["lo"],
            "{name}: {who} left links in the pod"
        );
        assert!(
            ip_files(&w.path("ipam")).is_empty(),
            "{name}: {who} left an IPAM reservation"
        );
        // DEL after the failed ADD succeeds and changes nothing.
        invoke(&w, &bin, "DEL", "unsup", 0, "eth0", &c).ok();
        assert_eq!(link_names(w.node.netns()), node_before);
    }
}

/// With ipvlan: the same config through both plugins gives the same result shape, pod
/// interface, IPAM files, and DEL end state; our CHECK accepts our result.
fn differential_case(name: &str, case: &Value) {
    for version in SHARED_VERSIONS {
        let ctx = format!("{name} {version}");
        let cid = format!("diff-{}", version.replace('.', ""));
        let sides: Vec<(World, Value)> = [ours(), reference("ipvlan")]
            .iter()
            .map(|bin| {
                let w = world();
                let c = case_conf(&w, version, case);
                let r = invoke(&w, bin, "ADD", &cid, 0, "eth0", &c).ok();
                let v = r.value().clone();
                (w, v)
            })
            .collect();
        let (ow, ores) = &sides[0];
        let (rw, rres) = &sides[1];
        for (w, res) in [(ow, ores), (rw, rres)] {
            assert_eq!(res["interfaces"][0]["sandbox"], w.pod(0), "{ctx}: sandbox");
        }
        let strip = |v: &Value| {
            let mut v = normalize_result(v);
            v["interfaces"][0]["sandbox"] = json!("<sandbox>");
            v
        };
        assert_eq!(strip(ores), strip(rres), "{ctx}: result differs");
        assert_eq!(
            iface_state(ow.pods[0].netns(), "eth0"),
            iface_state(rw.pods[0].netns(), "eth0"),
            "{ctx}: pod eth0 differs"
        );
        assert_eq!(
            ipvlan_mode(ow, "eth0"),
            ipvlan_mode(rw, "eth0"),
            "{ctx}: mode"
        );
        assert_eq!(
            dir_contents(&ow.path("ipam")),
            dir_contents(&rw.path("ipam")),
            "{ctx}: host-local files differ"
        );
        if *version != "0.3.0" && *version != "0.3.1" {
            let c = case_conf(ow, version, case);
            invoke(ow, &ours(), "CHECK", &cid, 0, "eth0", &with_prev(&c, ores)).ok();
        }
        for ((w, _), bin) in sides.iter().zip([ours(), reference("ipvlan")]) {
            let c = case_conf(w, version, case);
            invoke(w, &bin, "DEL", &cid, 0, "eth0", &c).ok();
            assert!(
                iface_state(w.pods[0].netns(), "eth0").is_none(),
                "{ctx}: eth0 left after DEL"
            );
            assert!(ip_files(&w.path("ipam")).is_empty(), "{ctx}: IP kept");
        }
        assert_eq!(
            link_names(ow.node.netns()),
            link_names(rw.node.netns()),
            "{ctx}: node links differ after DEL"
        );
    }
}

#[test]
fn add_fails_cleanly_without_kernel_ipvlan_else_matches_reference() {
    if kernel_has_ipvlan() {
        println!("kernel has ipvlan: running the differential comparison");
        for (name, case) in cases() {
            differential_case(name, &case);
        }
    } else {
        println!("{UNSUPPORTED_MSG}: checking that ADD fails cleanly (no differential run)");
        for (name, case) in cases() {
            unsupported_case(name, &case);
        }
    }
}

#[test]
fn missing_master_fails_cleanly_on_any_kernel() {
    // Fails before the kernel is asked for an ipvlan, so this runs the same everywhere.
    let w = world();
    let c = conf(
        "1.0.0",
        "nomaster",
        json!({"master": "nope0", "ipam": {"type": "host-local", "subnet": "10.35.0.0/24",
                                            "dataDir": w.path("ipam")}}),
    );
    let before = link_names(w.node.netns());
    let r = invoke(&w, &ours(), "ADD", "nm", 0, "eth0", &c);
    assert!(
        r.err_msg()
            .contains("failed to lookup master \"nope0\": Link not found"),
        "{}",
        r.err_msg()
    );
    assert_eq!(link_names(w.node.netns()), before);
    assert_eq!(link_names(w.pods[0].netns()), vec!["lo"]);
    assert!(ip_files(&w.path("ipam")).is_empty());
}

#[test]
fn del_after_master_is_gone_succeeds() {
    // With ipvlan: ADD, remove the master (the kernel removes the ipvlan with it), DEL.
    // Without: DEL of an attachment whose master and link are gone, which is the same
    // state from DEL's point of view.
    let w = world();
    let c = conf(
        "1.0.0",
        "mgone",
        json!({"master": "mst0", "ipam": {"type": "host-local", "subnet": "10.36.0.0/24",
                                           "dataDir": w.path("ipam")}}),
    );
    let supported = kernel_has_ipvlan();
    if supported {
        invoke(&w, &ours(), "ADD", "mg", 0, "eth0", &c).ok();
        assert_eq!(ip_files(&w.path("ipam")).len(), 1);
    }
    let mut nl = Netlink::open(Some(w.node.netns())).unwrap();
    let m = nl.link_by_name("mst0").unwrap().unwrap();
    nl.link_del(m.index).unwrap();
    for _ in 0..2 {
        invoke(&w, &ours(), "DEL", "mg", 0, "eth0", &c).ok();
    }
    assert_eq!(link_names(w.pods[0].netns()), vec!["lo"]);
    assert!(ip_files(&w.path("ipam")).is_empty());
    println!(
        "del_after_master_is_gone: ran {}",
        if supported {
            "ADD + master removal + DEL"
        } else {
            "DEL only (ipvlan unsupported by this kernel)"
        }
    );
}

#[test]
fn link_in_container_fails_cleanly_without_kernel_ipvlan_else_works() {
    // The master (a veth end) lives in the pod; the reference 1.1.1 has no linkInContainer,
    // so this is ours only.
    let w = world();
    {
        let mut nl = Netlink::open(Some(w.node.netns())).unwrap();
        nl.link_add(&LinkRequest {
            netns: Some(w.pods[0].netns().clone()),
            ..veth("pmst0", "hmst0")
        })
        .unwrap();
        let mut pn = Netlink::open(Some(w.pods[0].netns())).unwrap();
        let m = pn.link_by_name("pmst0").unwrap().unwrap();
        pn.link_set_up(m.index, true).unwrap();
    }
    let c = conf(
        "1.1.0",
        "lic",
        json!({"master": "pmst0", "linkInContainer": true, "mode": "l2",
               "ipam": {"type": "host-local", "subnet": "10.37.0.0/24", "dataDir": w.path("ipam")}}),
    );
    let node_before = link_names(w.node.netns());
    let pod_before = link_names(w.pods[0].netns());
    if kernel_has_ipvlan() {
        let res = invoke(&w, &ours(), "ADD", "lic", 0, "net1", &c)
            .ok()
            .value()
            .clone();
        assert_eq!(res["interfaces"][0]["name"], "net1");
        assert_eq!(ipvlan_mode(&w, "net1"), Some(IpvlanMode::L2));
        assert_eq!(
            iface_state(w.pods[0].netns(), "net1").unwrap().addrs,
            vec!["10.37.0.2/24"]
        );
        invoke(&w, &ours(), "CHECK", "lic", 0, "net1", &with_prev(&c, &res)).ok();
        invoke(&w, &ours(), "DEL", "lic", 0, "net1", &c).ok();
        println!("link_in_container: ran ADD, CHECK, DEL on the kernel");
    } else {
        let r = invoke(&w, &ours(), "ADD", "lic", 0, "net1", &c);
        assert!(r.err_msg().contains(UNSUPPORTED_MSG), "{}", r.err_msg());
        println!(
            "link_in_container: ADD refused as expected: {}",
            r.err_msg()
        );
    }
    assert_eq!(link_names(w.node.netns()), node_before);
    assert_eq!(link_names(w.pods[0].netns()), pod_before);
    assert!(ip_files(&w.path("ipam")).is_empty());
}
