//! Every verb across every spec version, DEL idempotency, rollback without residue, and
//! bad input giving the spec's error codes.

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

#[test]
fn every_verb_every_version() {
    for (i, v) in OUR_VERSIONS.iter().enumerate() {
        let w = World::new(1);
        let br = format!("vb{i}");
        let c = net(v, &w, &br, "10.20.0.0/24");
        let cid = format!("verbs-{i}");
        // VERSION
        let r = invoke(&w, &ours(), "VERSION", "", 0, "", &json!({"cniVersion": v})).ok();
        assert_eq!(r.value()["cniVersion"], *v);
        assert!(r.value()["supportedVersions"].as_array().unwrap().len() == 5);
        // ADD
        let add = invoke(&w, &ours(), "ADD", &cid, 0, "eth0", &c).ok();
        let res = add.value().clone();
        assert_eq!(res["cniVersion"], *v);
        assert_eq!(res["ips"][0]["address"], "10.20.0.2/24");
        assert_eq!(res["ips"][0]["interface"], 2);
        assert_eq!(
            res["ips"][0].get("version").is_some(),
            v.starts_with("0."),
            "{v}: ips[].version"
        );
        assert_eq!(res["interfaces"][2]["sandbox"], w.pod(0));
        // CHECK: allowed from 0.4.0
        let chk = invoke(&w, &ours(), "CHECK", &cid, 0, "eth0", &with_prev(&c, &res));
        if ["0.3.0", "0.3.1"].contains(v) {
            assert_eq!(chk.err_code(), 1, "{v}: CHECK must be refused");
        } else {
            assert_eq!(chk.code, 0, "{v}: CHECK failed: {}", chk.stdout);
            // CHECK without prevResult is a config error.
            assert_eq!(
                invoke(&w, &ours(), "CHECK", &cid, 0, "eth0", &c).err_code(),
                7
            );
        }
        // STATUS and GC: only 1.1.0.
        for verb in ["STATUS", "GC"] {
            let r = invoke(&w, &ours(), verb, "", 0, "", &c);
            if *v == "1.1.0" {
                assert_eq!(r.code, 0, "{verb}: {}", r.stdout);
                assert!(
                    r.stdout.trim().is_empty(),
                    "{verb} prints nothing on success"
                );
            } else {
                assert_eq!(r.err_code(), 1, "{v}: {verb} must be refused");
            }
        }
        // DEL three times, with prevResult, then without.
        invoke(&w, &ours(), "DEL", &cid, 0, "eth0", &with_prev(&c, &res)).ok();
        invoke(&w, &ours(), "DEL", &cid, 0, "eth0", &c).ok();
        invoke(&w, &ours(), "DEL", &cid, 0, "eth0", &c).ok();
        assert!(ip_files(&w).is_empty(), "{v}: IP not released");
        assert!(iface_state(w.pods[0].netns(), "eth0").is_none());
    }
}

#[test]
fn gc_releases_invalid_attachments() {
    let w = World::new(3);
    let c = net("1.1.0", &w, "gcbr", "10.21.0.0/24");
    for i in 0..3 {
        invoke(&w, &ours(), "ADD", &format!("gc-{i}"), i, "eth0", &c).ok();
    }
    assert_eq!(ip_files(&w).len(), 3);
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "gc-1", "ifname": "eth0"}]);
    invoke(&w, &ours(), "GC", "", 0, "", &g).ok();
    let left = dir_contents(&w.path("ipam"));
    let owners: Vec<&String> = left
        .iter()
        .filter(|(k, _)| !k.ends_with("lock") && !k.contains("last_reserved"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(owners, vec!["gc-1\r\neth0"]);
    // The older key name works too.
    let mut g = c.clone();
    g["cni.dev/attachments"] = json!([]);
    invoke(&w, &ours(), "GC", "", 0, "", &g).ok();
    assert!(ip_files(&w).is_empty());
}

#[test]
fn del_when_netns_is_gone_or_empty() {
    let mut w = World::new(2);
    let c = net("1.0.0", &w, "delbr", "10.22.0.0/24");
    invoke(&w, &ours(), "ADD", "gone", 0, "eth0", &c).ok();
    invoke(&w, &ours(), "ADD", "empty", 1, "eth0", &c).ok();
    assert_eq!(ip_files(&w).len(), 2);
    // netns gone: delete the namespace, then DEL with its (now missing) path.
    let gone_path = w.pod(0);
    let pod0 = w.pods.remove(0);
    drop(pod0);
    assert!(!std::path::Path::new(&gone_path).exists());
    let path = cni_path();
    for _ in 0..3 {
        let inv = Invocation {
            verb: "DEL",
            container_id: "gone",
            netns: &gone_path,
            ifname: "eth0",
            path: &path,
            ..Default::default()
        };
        run_in(w.node.netns(), &ours(), &inv, c.to_string().as_bytes()).ok();
    }
    // CNI_NETNS empty.
    for _ in 0..3 {
        let inv = Invocation {
            verb: "DEL",
            container_id: "empty",
            netns: "",
            ifname: "eth0",
            path: &path,
            ..Default::default()
        };
        run_in(w.node.netns(), &ours(), &inv, c.to_string().as_bytes()).ok();
    }
    assert!(ip_files(&w).is_empty(), "IPs leaked: {:?}", ip_files(&w));
}

#[test]
fn add_on_existing_ifname_fails_without_leaking() {
    let w = World::new(1);
    let c = net("1.0.0", &w, "exbr", "10.23.0.0/24");
    invoke(&w, &ours(), "ADD", "first", 0, "eth0", &c).ok();
    let before_links = link_names(w.node.netns());
    let before_ips = ip_files(&w);
    let r = invoke(&w, &ours(), "ADD", "second", 0, "eth0", &c);
    assert_ne!(r.code, 0);
    assert!(
        r.err_msg().contains("eth0"),
        "message names the interface: {}",
        r.err_msg()
    );
    assert_eq!(link_names(w.node.netns()), before_links, "host side leaked");
    assert_eq!(ip_files(&w), before_ips, "IP leaked");
    // The first attachment is untouched.
    assert_eq!(
        iface_state(w.pods[0].netns(), "eth0").unwrap().addrs,
        vec!["10.23.0.2/24"]
    );
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

/// DEL never fails on a value ADD refuses (the runtime DELs after a failed ADD, and a
/// failing DEL would block the pod's teardown): only JSON type errors fail it, as in the
/// reference. A valid attachment DELed with a configuration that has since become invalid
/// still releases its address and its link.
#[test]
fn del_succeeds_on_configurations_add_refuses() {
    let w = World::new(1);
    let base = net("1.0.0", &w, "lenbr", "10.26.0.0/24");
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let mut bad_gw = base.clone();
    bad_gw["ipam"]["ranges"] = json!([[{"subnet": "10.26.0.0/24", "gateway": "10.27.0.1"}]]);
    let cases = [
        ("mtu", with("mtu", json!(70000))),
        (
            "bridge",
            with("bridge", json!("a-much-too-long-bridge-name")),
        ),
        ("promiscMode", {
            let mut c = with("hairpinMode", json!(true));
            c["promiscMode"] = json!(true);
            c
        }),
        (
            "mac",
            with("runtimeConfig", json!({"mac": "zz:11:22:33:44:55"})),
        ),
        ("gateway", bad_gw.clone()),
    ];
    for (what, c) in &cases {
        let r = invoke(&w, &ours(), "ADD", "len", 0, "eth0", c);
        assert_eq!(r.err_code(), 7, "{what}: {}", r.stdout);
        let d = invoke(&w, &ours(), "DEL", "len", 0, "eth0", c);
        assert_eq!(d.code, 0, "{what}: DEL failed: {}", d.stdout);
        assert!(ip_files(&w).is_empty(), "{what}");
    }
    // A JSON type error still fails DEL (as in the reference).
    let d = invoke(
        &w,
        &ours(),
        "DEL",
        "len",
        0,
        "eth0",
        &with("mtu", json!("big")),
    );
    assert_eq!(d.err_code(), 7, "{}", d.stdout);
    // Added with a valid configuration, deleted with one that became invalid.
    invoke(&w, &ours(), "ADD", "len2", 0, "eth0", &base).ok();
    assert_eq!(ip_files(&w).len(), 1);
    invoke(&w, &ours(), "DEL", "len2", 0, "eth0", &bad_gw).ok();
    assert!(ip_files(&w).is_empty(), "address left: {:?}", ip_files(&w));
    assert!(
        iface_state(w.pods[0].netns(), "eth0").is_none(),
        "pod link left"
    );
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

#[test]
fn bad_input_codes() {
    let w = World::new(1);
    let good = net("1.0.0", &w, "bibr", "10.26.0.0/24");
    let path = cni_path();
    let pod = w.pod(0);
    let run =
        |stdin: &str, env: Invocation| run_in(w.node.netns(), &ours(), &env, stdin.as_bytes());
    let base = || Invocation {
        verb: "ADD",
        container_id: "bad",
        netns: &pod,
        ifname: "eth0",
        path: &path,
        ..Default::default()
    };
    let g = good.to_string();
    let cases: Vec<(&str, String, Invocation, u64)> = vec![
        ("invalid JSON", "{nope".into(), base(), 6),
        ("missing name", json!({"cniVersion": "1.0.0", "type": "bridge"}).to_string(), base(), 7),
        ("bad name", json!({"cniVersion": "1.0.0", "name": "a b", "type": "bridge"}).to_string(), base(), 7),
        ("unsupported version", json!({"cniVersion": "0.2.0", "name": "n", "type": "bridge"}).to_string(), base(), 1),
        ("unknown version", json!({"cniVersion": "7.0.0", "name": "n", "type": "bridge"}).to_string(), base(), 1),
        ("missing env", g.clone(), Invocation { unset: vec!["CNI_NETNS", "CNI_IFNAME"], ..base() }, 4),
        ("bad container id", g.clone(), Invocation { container_id: "-x", ..base() }, 4),
        ("bad ifname", g.clone(), Invocation { ifname: "eth0/1", ..base() }, 4),
        ("long ifname", g.clone(), Invocation { ifname: "abcdefghijklmnop", ..base() }, 4),
        ("unknown command", g.clone(), Invocation { verb: "FROB", ..base() }, 4),
        ("unknown CNI_ARGS key", g.clone(), Invocation { args: "FOO=bar", ..base() }, 4),
        ("bad CIDR", conf("1.0.0", "n", json!({"ipam": {"type": "host-local", "subnet": "10.0.0.0/33", "dataDir": w.path("x")}})).to_string(), base(), 7),
        ("bad mac", conf("1.0.0", "n", json!({"runtimeConfig": {"mac": "zz"}})).to_string(), base(), 7),
        ("vlan out of range", conf("1.0.0", "n", json!({"vlan": 5000})).to_string(), base(), 7),
        ("wrong field type", conf("1.0.0", "n", json!({"isGateway": "yes"})).to_string(), base(), 7),
        ("preserveDefaultVlan false", conf("1.0.0", "n", json!({"vlan": 10, "preserveDefaultVlan": false})).to_string(), base(), 2),
        ("hairpin+promisc", conf("1.0.0", "n", json!({"hairpinMode": true, "promiscMode": true})).to_string(), base(), 7),
        ("netns missing", g.clone(), Invocation { netns: "/run/netns/does-not-exist-mc", ..base() }, 3),
    ];
    for (what, stdin, env, code) in cases {
        let r = run(&stdin, env);
        assert_eq!(r.err_code(), code, "{what}: {}", r.stdout);
        assert!(!r.err_msg().is_empty(), "{what}: empty message");
        assert_eq!(
            r.stdout.trim().lines().count(),
            1,
            "{what}: stdout must be one JSON document"
        );
    }
    // Nothing was left behind by any of them.
    assert_eq!(link_names(w.node.netns()), vec!["lo"]);
    assert_eq!(link_names(w.pods[0].netns()), vec!["lo"]);
}
