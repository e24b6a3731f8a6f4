//! Macvlan-specific verb behaviour: DEL after the master was deleted (where the reference
//! fails), CHECK catching drift, `linkInContainer`, STATUS judging the master, name
//! clashes with node links. What every delegate must do (every verb in every version, DEL
//! idempotency, refused ADDs and failures after IPAM leaving nothing, GC, bad input) is the
//! contract suite: tests/contract.rs.

mod common;
use common::*;
use meta_netlink::{MacvlanMode, Netlink, NetlinkOps};
use serde_json::{Value, json};

fn net(version: &str, w: &World, subnet: &str) -> Value {
    conf(
        version,
        "verbs",
        json!({"master": MASTER,
               "ipam": host_local(&w.path("ipam"), json!([[{"subnet": subnet}]]))}),
    )
}

fn ips(w: &World) -> Vec<String> {
    ip_files(&w.path("ipam"))
}

/// The reference 1.1.1 looks the master up at DEL and fails once it is gone, leaking
/// the reservation; we release it.
#[test]
fn del_after_master_deleted() {
    let w = world(2);
    let c = net("1.0.0", &w, "10.83.0.0/24");
    invoke(&w, &ours(), "ADD", "m-ours", 0, "eth0", &c).ok();
    invoke(&w, &reference("macvlan"), "ADD", "m-ref", 1, "eth0", &c).ok();
    assert_eq!(ips(&w).len(), 2);
    del_link(w.node.netns(), MASTER);
    // The kernel took the macvlans with their master.
    assert_eq!(link_names(w.pods[0].netns()), vec!["lo"]);
    assert_eq!(link_names(w.pods[1].netns()), vec!["lo"]);
    let r = invoke(&w, &reference("macvlan"), "DEL", "m-ref", 1, "eth0", &c);
    assert_ne!(r.code, 0, "reference 1.1.1 was expected to fail here");
    for _ in 0..3 {
        invoke(&w, &ours(), "DEL", "m-ours", 0, "eth0", &c).ok();
    }
    // Ours released its address; the reference's stays (its bug).
    let owners: Vec<String> = dir_contents(&w.path("ipam"))
        .into_iter()
        .filter(|(k, _)| !k.ends_with("lock") && !k.contains("last_reserved"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(owners, vec!["m-ref\r\neth0".to_string()]);
    // Our DEL also cleans up what the reference left, with the same config.
    invoke(&w, &ours(), "DEL", "m-ref", 1, "eth0", &c).ok();
    assert!(ips(&w).is_empty());
}

#[test]
fn ifname_may_clash_with_a_node_link() {
    // The node's master is called eth0, and so is the pod's interface.
    let w = World::new(1);
    add_master(&w, "eth0", 1500, true);
    let c = conf(
        "1.0.0",
        "clash",
        json!({"ipam": host_local(&w.path("ipam"), json!([[{"subnet": "10.87.0.0/24"}]]))}),
    );
    let res = invoke(&w, &ours(), "ADD", "clash", 0, "eth0", &c)
        .ok()
        .value()
        .clone();
    assert_eq!(res["interfaces"][0]["name"], "eth0");
    assert_eq!(
        iface_state(w.pods[0].netns(), "eth0").and_then(|s| s.kind),
        Some("macvlan".into())
    );
    invoke(
        &w,
        &ours(),
        "CHECK",
        "clash",
        0,
        "eth0",
        &with_prev(&c, &res),
    )
    .ok();
    invoke(&w, &ours(), "DEL", "clash", 0, "eth0", &c).ok();
    assert_eq!(link_names(w.node.netns()), vec!["eth0", "eth0p", "lo"]);
    assert_eq!(link_names(w.pods[0].netns()), vec!["lo"]);
}

#[test]
fn check_detects_drift() {
    let w = world(1);
    let mut c = net("1.0.0", &w, "10.88.0.0/24");
    c["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16"}]);
    let res = invoke(&w, &ours(), "ADD", "ck", 0, "eth0", &c)
        .ok()
        .value()
        .clone();
    let check = |conf: &Value, prev: &Value| {
        invoke(
            &w,
            &ours(),
            "CHECK",
            "ck",
            0,
            "eth0",
            &with_prev(conf, prev),
        )
    };
    check(&c, &res).ok();
    // Another mode than the link's.
    let mut private = c.clone();
    private["mode"] = json!("private");
    let r = check(&private, &res);
    assert_ne!(r.code, 0);
    assert!(r.err_msg().contains("mode"), "{}", r.err_msg());
    // Another MAC in the prevResult.
    let mut other_mac = res.clone();
    other_mac["interfaces"][0]["mac"] = json!("0e:00:00:00:00:01");
    let r = check(&c, &other_mac);
    assert!(r.err_msg().contains("MAC"), "{}", r.err_msg());
    // Another sandbox in the prevResult.
    let mut other_sb = res.clone();
    other_sb["interfaces"][0]["sandbox"] = json!("/run/netns/elsewhere");
    let r = check(&c, &other_sb);
    assert!(r.err_msg().contains("sandbox"), "{}", r.err_msg());
    // A master that is not the link's parent.
    add_master(&w, "mvup1", 1500, false);
    let mut other_master = c.clone();
    other_master["master"] = json!("mvup1");
    let r = check(&other_master, &res);
    assert!(r.err_msg().contains("mvup1"), "{}", r.err_msg());
    // A missing route, then a missing address.
    {
        let mut nl = Netlink::open(Some(w.pods[0].netns())).expect("netlink");
        let l = nl.link_by_name("eth0").unwrap().unwrap();
        nl.route_del(&meta_netlink::RouteSpec {
            gw: Some("10.88.0.1".parse().unwrap()),
            oif: Some(l.index),
            ..meta_netlink::RouteSpec::new("10.99.0.0/16".parse().unwrap())
        })
        .unwrap();
    }
    let r = check(&c, &res);
    assert!(r.err_msg().contains("10.99.0.0/16"), "{}", r.err_msg());
    {
        let mut nl = Netlink::open(Some(w.pods[0].netns())).expect("netlink");
        let l = nl.link_by_name("eth0").unwrap().unwrap();
        nl.addr_del(l.index, "10.88.0.2/24".parse().unwrap())
            .unwrap();
    }
    let r = check(&c, &res);
    assert!(r.err_msg().contains("10.88.0.2/24"), "{}", r.err_msg());
    // The link gone, then the master gone.
    del_link(w.pods[0].netns(), "eth0");
    let r = check(&c, &res);
    assert!(r.err_msg().contains("eth0"), "{}", r.err_msg());
    del_link(w.node.netns(), MASTER);
    let r = check(&c, &res);
    assert_eq!(r.err_code(), 7, "{}", r.err_msg());
    assert!(r.err_msg().contains("master"), "{}", r.err_msg());
}

#[test]
fn link_in_container() {
    let w = World::new(1);
    // The master lives in the pod; with no "master", the pod's default route picks it.
    add_master_in(w.pods[0].netns(), "cm0", 9000, true);
    for (i, master) in [Some("cm0"), None].into_iter().enumerate() {
        let mut base = json!({"linkInContainer": true, "mtu": 1400, "mode": "vepa",
                              "ipam": host_local(&w.path("ipam"), json!([[{"subnet": "10.89.0.0/24"}]]))});
        if let Some(m) = master {
            base["master"] = json!(m);
        }
        let c = conf("1.0.0", "lic", base);
        let cid = format!("lic-{i}");
        let node_before = link_names(w.node.netns());
        let res = invoke(&w, &ours(), "ADD", &cid, 0, "net1", &c)
            .ok()
            .value()
            .clone();
        assert_eq!(res["interfaces"][0]["sandbox"], w.pod(0));
        let mut nl = Netlink::open(Some(w.pods[0].netns())).expect("netlink");
        let cm = nl.link_by_name("cm0").unwrap().unwrap();
        let l = nl.link_by_name("net1").unwrap().unwrap();
        assert_eq!(l.link, Some(cm.index), "parent is the pod's master");
        assert_eq!(l.link_netnsid, None, "parent in the same namespace");
        assert_eq!(
            (l.macvlan_mode, l.mtu, l.up),
            (Some(MacvlanMode::Vepa), 1400, true)
        );
        assert_eq!(link_names(w.node.netns()), node_before, "node untouched");
        invoke(&w, &ours(), "CHECK", &cid, 0, "net1", &with_prev(&c, &res)).ok();
        invoke(&w, &ours(), "DEL", &cid, 0, "net1", &c).ok();
        assert_eq!(link_names(w.pods[0].netns()), vec!["cm0", "cm0p", "lo"]);
        assert!(ips(&w).is_empty());
    }
    // A master that is only on the node is not found in the pod.
    add_master(&w, "nodeonly", 1500, false);
    let c = conf(
        "1.0.0",
        "lic",
        json!({"linkInContainer": true, "master": "nodeonly"}),
    );
    let r = invoke(&w, &ours(), "ADD", "lic-x", 0, "net1", &c);
    assert_eq!(r.err_code(), 7);
    assert!(r.err_msg().contains("pod namespace"), "{}", r.err_msg());
}

#[test]
fn status_reports_the_master() {
    let w = world(1);
    let c = net("1.1.0", &w, "10.90.0.0/24");
    invoke(&w, &ours(), "STATUS", "", 0, "", &c).ok();
    let mut big = c.clone();
    big["mtu"] = json!(9000);
    assert_eq!(invoke(&w, &ours(), "STATUS", "", 0, "", &big).err_code(), 7);
    let mut missing = c.clone();
    missing["master"] = json!("nope0");
    let r = invoke(&w, &ours(), "STATUS", "", 0, "", &missing);
    assert_eq!(r.err_code(), 50, "{}", r.stdout);
    assert!(r.err_msg().contains("nope0"));
    // No master and no default route.
    let bare = World::new(1);
    let c = conf("1.1.0", "st", json!({}));
    assert_eq!(
        invoke(&bare, &ours(), "STATUS", "", 0, "", &c).err_code(),
        50
    );
}
