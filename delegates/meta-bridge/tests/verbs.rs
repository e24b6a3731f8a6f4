//! Bridge-specific verb behaviour: a refused duplicate ADD keeps the live reservation (as
//! the reference does), 1.1.0 route fields only in 1.1.0, a failure after IPAM (an address
//! already on the bridge) leaves nothing, CHECK catching drift. What every delegate must
//! do (every verb in every version, DEL idempotency, refused ADDs, GC, bad input) is the
//! contract suite: tests/contract.rs.

mod common;
use common::*;
use serde_json::{Value, json};

fn net(version: &str, w: &World, bridge: &str, subnet: &str) -> Value {
    conf(
        version,
        "verbs",
        json!({"bridge": bridge, "isGateway": true,
               "ipam": host_local(&w.path("ipam"), json!([[{"subnet": subnet}]]))}),
    )
}

fn ip_files(w: &World) -> Vec<String> {
    dir_contents(&w.path("ipam"))
        .into_keys()
        .filter(|k| !k.ends_with("/lock") && !k.contains("last_reserved_ip"))
        .collect()
}

/// The same container ID and ifname ADDed again into another pod: host-local refuses the
/// duplicate, and the rollback must not release the live attachment's address (the
/// reference keeps it too).
#[test]
fn duplicate_add_keeps_the_live_reservation() {
    for (side, bin) in [("ours", ours()), ("reference", reference("bridge"))] {
        let w = World::new(2);
        let c = net("1.0.0", &w, "dupbr", "10.25.0.0/24");
        invoke(&w, &bin, "ADD", "dup", 0, "eth0", &c).ok();
        let before = dir_contents(&w.path("ipam"));
        let r = invoke(&w, &bin, "ADD", "dup", 1, "eth0", &c);
        assert_ne!(r.code, 0, "{side}");
        assert!(
            r.err_msg().contains("duplicate allocation"),
            "{side}: {}",
            r.err_msg()
        );
        let after = dir_contents(&w.path("ipam"));
        assert_eq!(
            after.get("verbs/10.25.0.2"),
            Some(&"dup\r\neth0".to_string()),
            "{side}: the live reservation was released: {after:?}"
        );
        if side == "ours" {
            // Nothing of the failed ADD stays either.
            assert_eq!(after, before, "ours");
            assert!(iface_state(w.pods[1].netns(), "eth0").is_none());
        }
        assert_eq!(
            iface_state(w.pods[0].netns(), "eth0").unwrap().addrs,
            vec!["10.25.0.2/24"],
            "{side}"
        );
    }
}

/// Route fields of CNI 1.1.0 (`priority`, `table`, ...) exist only in 1.1.0
/// configurations: below, they are neither installed nor reported, as with an exec'd IPAM
/// plugin of that version (and the reference).
#[test]
fn route_fields_of_1_1_only_in_1_1() {
    for (v, metric) in [("1.0.0", false), ("1.1.0", true)] {
        let w = World::new(1);
        let mut c = net(v, &w, "rtbr", "10.28.0.0/24");
        c["ipam"]["routes"] =
            json!([{"dst": "192.168.60.0/24", "gw": "10.28.0.254", "priority": 100}]);
        let r = invoke(&w, &ours(), "ADD", "rt", 0, "eth0", &c).ok();
        let routes = iface_state(w.pods[0].netns(), "eth0").unwrap().routes;
        let route = routes
            .iter()
            .find(|r| r.starts_with("192.168.60.0/24"))
            .unwrap_or_else(|| panic!("{v}: {routes:?}"));
        assert_eq!(route.contains("metric 100"), metric, "{v}: {route}");
        assert_eq!(
            r.value()["routes"][0].get("priority").is_some(),
            metric,
            "{v}: {}",
            r.stdout
        );
        invoke(&w, &ours(), "DEL", "rt", 0, "eth0", &c).ok();
    }
}

#[test]
fn add_failing_after_ipam_leaves_nothing() {
    let w = World::new(1);
    // The bridge already has another address in the subnet and forceAddress is off: the
    // failure comes after IPAM allocated and the container side was configured.
    let c = net("1.0.0", &w, "fabr", "10.24.0.0/24");
    {
        use meta_netlink::{LinkKind, LinkRequest, Netlink, NetlinkOps};
        let mut nl = Netlink::open(Some(w.node.netns())).unwrap();
        nl.link_add(&LinkRequest {
            name: "fabr".into(),
            kind: LinkKind::Bridge {
                vlan_filtering: false,
            },
            mtu: None,
            mac: None,
            netns: None,
            up: true,
        })
        .unwrap();
        let br = nl.link_by_name("fabr").unwrap().unwrap();
        nl.addr_add(br.index, "10.24.0.200/24".parse().unwrap())
            .unwrap();
    }
    let before = link_names(w.node.netns());
    let r = invoke(&w, &ours(), "ADD", "fail", 0, "eth0", &c);
    assert_ne!(r.code, 0);
    assert!(
        r.err_msg().contains("already has an IP address"),
        "{}",
        r.err_msg()
    );
    assert_eq!(link_names(w.node.netns()), before, "host veth leaked");
    assert!(
        iface_state(w.pods[0].netns(), "eth0").is_none(),
        "container link leaked"
    );
    assert!(ip_files(&w).is_empty(), "reservation leaked");
    // The same with forceAddress succeeds and replaces the address.
    let mut c2 = c.clone();
    c2["forceAddress"] = json!(true);
    invoke(&w, &ours(), "ADD", "force", 0, "eth0", &c2).ok();
    assert_eq!(
        iface_state(w.node.netns(), "fabr").unwrap().addrs,
        vec!["10.24.0.1/24"]
    );
}

#[test]
fn check_detects_drift() {
    let w = World::new(1);
    let c = net("1.0.0", &w, "ckbr", "10.25.0.0/24");
    let mut c = c;
    c["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16"}]);
    let res = invoke(&w, &ours(), "ADD", "ck", 0, "eth0", &c)
        .ok()
        .value()
        .clone();
    invoke(&w, &ours(), "CHECK", "ck", 0, "eth0", &with_prev(&c, &res)).ok();
    // Remove the address: CHECK must notice.
    {
        use meta_netlink::{Netlink, NetlinkOps};
        let mut nl = Netlink::open(Some(w.pods[0].netns())).unwrap();
        let l = nl.link_by_name("eth0").unwrap().unwrap();
        nl.addr_del(l.index, "10.25.0.2/24".parse().unwrap())
            .unwrap();
    }
    let r = invoke(&w, &ours(), "CHECK", "ck", 0, "eth0", &with_prev(&c, &res));
    assert_ne!(r.code, 0);
    assert!(r.err_msg().contains("10.25.0.2/24"), "{}", r.err_msg());
}
