//! Every verb across every spec version, DEL idempotency (netns gone, CNI_NETNS empty,
//! master deleted), rollback without residue, CHECK catching drift, `linkInContainer`,
//! STATUS, name clashes with node links, and bad input giving the spec's error codes.

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

#[test]
fn every_verb_every_version() {
    for (i, v) in OUR_VERSIONS.iter().enumerate() {
        let w = world(1);
        let c = net(v, &w, "10.80.0.0/24");
        let cid = format!("verbs-{i}");
        // VERSION
        let r = invoke(&w, &ours(), "VERSION", "", 0, "", &json!({"cniVersion": v})).ok();
        assert_eq!(r.value()["cniVersion"], *v);
        assert_eq!(
            r.value()["supportedVersions"].as_array().map(Vec::len),
            Some(5)
        );
        // ADD
        let add = invoke(&w, &ours(), "ADD", &cid, 0, "eth0", &c).ok();
        let res = add.value().clone();
        assert_eq!(res["cniVersion"], *v);
        assert_eq!(res["ips"][0]["address"], "10.80.0.2/24");
        assert_eq!(res["ips"][0]["interface"], 0);
        assert_eq!(
            res["ips"][0].get("version").is_some(),
            v.starts_with("0."),
            "{v}: ips[].version"
        );
        assert_eq!(res["interfaces"][0]["name"], "eth0");
        assert_eq!(res["interfaces"][0]["sandbox"], w.pod(0));
        assert_eq!(
            macvlan_mode(w.pods[0].netns(), "eth0"),
            Some(MacvlanMode::Bridge)
        );
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
        // GC with this attachment valid keeps it.
        if *v == "1.1.0" {
            let mut g = c.clone();
            g["cni.dev/valid-attachments"] = json!([{"containerID": cid, "ifname": "eth0"}]);
            invoke(&w, &ours(), "GC", "", 0, "", &g).ok();
            assert_eq!(ips(&w).len(), 1, "GC released a valid attachment");
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
        // (GC without a valid-attachments list released everything.)
        // DEL three times, with prevResult, then without.
        invoke(&w, &ours(), "DEL", &cid, 0, "eth0", &with_prev(&c, &res)).ok();
        invoke(&w, &ours(), "DEL", &cid, 0, "eth0", &c).ok();
        invoke(&w, &ours(), "DEL", &cid, 0, "eth0", &c).ok();
        assert!(ips(&w).is_empty(), "{v}: IP not released");
        assert_eq!(link_names(w.pods[0].netns()), vec!["lo"]);
        assert_eq!(link_names(w.node.netns()), vec!["lo", MASTER, "mvup0p"]);
    }
}

#[test]
fn gc_releases_invalid_attachments() {
    let w = world(3);
    let c = net("1.1.0", &w, "10.81.0.0/24");
    for i in 0..3 {
        invoke(&w, &ours(), "ADD", &format!("gc-{i}"), i, "eth0", &c).ok();
    }
    assert_eq!(ips(&w).len(), 3);
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
    // A malformed list is a config error.
    let mut bad = c.clone();
    bad["cni.dev/valid-attachments"] = json!([{"containerID": 1}]);
    assert_eq!(invoke(&w, &ours(), "GC", "", 0, "", &bad).err_code(), 7);
    let mut g = c.clone();
    g["cni.dev/attachments"] = json!([]);
    invoke(&w, &ours(), "GC", "", 0, "", &g).ok();
    assert!(ips(&w).is_empty());
}

#[test]
fn del_when_netns_is_gone_or_empty() {
    let mut w = world(2);
    let c = net("1.0.0", &w, "10.82.0.0/24");
    invoke(&w, &ours(), "ADD", "gone", 0, "eth0", &c).ok();
    invoke(&w, &ours(), "ADD", "empty", 1, "eth0", &c).ok();
    assert_eq!(ips(&w).len(), 2);
    let gone_path = w.pod(0);
    let pod0 = w.pods.remove(0);
    drop(pod0);
    assert!(!std::path::Path::new(&gone_path).exists());
    let path = cni_path();
    for (cid, netns) in [("gone", gone_path.as_str()), ("empty", "")] {
        for _ in 0..3 {
            let inv = Invocation {
                verb: "DEL",
                container_id: cid,
                netns,
                ifname: "eth0",
                path: &path,
                ..Default::default()
            };
            run_in(w.node.netns(), &ours(), &inv, c.to_string().as_bytes()).ok();
        }
    }
    assert!(ips(&w).is_empty(), "IPs leaked: {:?}", ips(&w));
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
fn add_failing_after_ipam_leaves_nothing() {
    let w = world(1);
    // The route's gateway is not reachable from the pod: configuring the interface fails
    // after IPAM allocated and the link exists.
    let mut c = net("1.0.0", &w, "10.84.0.0/24");
    c["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "192.0.2.1"}]);
    let node_before = link_names(w.node.netns());
    let r = invoke(&w, &ours(), "ADD", "fail", 0, "eth0", &c);
    assert_ne!(r.code, 0);
    assert!(r.err_msg().contains("route"), "{}", r.err_msg());
    assert_eq!(link_names(w.pods[0].netns()), vec!["lo"], "link leaked");
    assert!(ips(&w).is_empty(), "reservation leaked: {:?}", ips(&w));
    assert_eq!(link_names(w.node.netns()), node_before);
    // IPAM itself failing (range exhausted) removes the link too.
    let mut c = net("1.0.0", &w, "10.85.0.0/30");
    c["ipam"]["ranges"] =
        json!([[{"subnet": "10.85.0.0/30", "rangeStart": "10.85.0.2", "rangeEnd": "10.85.0.2"}]]);
    invoke(&w, &ours(), "ADD", "first", 0, "eth0", &c).ok();
    let r = invoke(&w, &ours(), "ADD", "second", 0, "net1", &c);
    assert_ne!(r.code, 0);
    assert_eq!(link_names(w.pods[0].netns()), vec!["eth0", "lo"]);
    assert_eq!(ips(&w).len(), 1);
}

#[test]
fn add_on_existing_ifname_fails_without_touching_it() {
    let w = world(1);
    let c = net("1.0.0", &w, "10.86.0.0/24");
    invoke(&w, &ours(), "ADD", "first", 0, "eth0", &c).ok();
    let mac = mac_of(w.pods[0].netns(), "eth0");
    let r = invoke(&w, &ours(), "ADD", "second", 0, "eth0", &c);
    assert_ne!(r.code, 0);
    assert!(r.err_msg().contains("eth0"), "{}", r.err_msg());
    assert_eq!(ips(&w).len(), 1, "IP leaked");
    assert_eq!(mac_of(w.pods[0].netns(), "eth0"), mac);
    assert_eq!(
        iface_state(w.pods[0].netns(), "eth0").map(|s| s.addrs),
        Some(vec!["10.86.0.2/24".to_string()])
    );
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

#[test]
fn bad_input_codes() {
    let w = world(1);
    let good = net("1.0.0", &w, "10.91.0.0/24");
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
    let m = |extra: Value| {
        let mut e = json!({"master": MASTER});
        if let (Some(a), Some(b)) = (e.as_object_mut(), extra.as_object()) {
            a.extend(b.clone());
        }
        conf("1.0.0", "n", e).to_string()
    };
    let cases: Vec<(&str, String, Invocation, u64)> = vec![
        ("invalid JSON", "{nope".into(), base(), 6),
        (
            "missing name",
            json!({"cniVersion": "1.0.0", "type": "macvlan"}).to_string(),
            base(),
            7,
        ),
        (
            "bad name",
            json!({"cniVersion": "1.0.0", "name": "a b", "type": "macvlan"}).to_string(),
            base(),
            7,
        ),
        (
            "unsupported version",
            json!({"cniVersion": "0.2.0", "name": "n", "type": "macvlan"}).to_string(),
            base(),
            1,
        ),
        (
            "unknown version",
            json!({"cniVersion": "7.0.0", "name": "n", "type": "macvlan"}).to_string(),
            base(),
            1,
        ),
        (
            "missing env",
            g.clone(),
            Invocation {
                unset: vec!["CNI_NETNS", "CNI_IFNAME"],
                ..base()
            },
            4,
        ),
        (
            "bad container id",
            g.clone(),
            Invocation {
                container_id: "-x",
                ..base()
            },
            4,
        ),
        (
            "bad ifname",
            g.clone(),
            Invocation {
                ifname: "eth0/1",
                ..base()
            },
            4,
        ),
        (
            "long ifname",
            g.clone(),
            Invocation {
                ifname: "abcdefghijklmnop",
                ..base()
            },
            4,
        ),
        (
            "unknown command",
            g.clone(),
            Invocation {
                verb: "FROB",
                ..base()
            },
            4,
        ),
        (
            "unknown CNI_ARGS key",
            g.clone(),
            Invocation {
                args: "FOO=bar",
                ..base()
            },
            4,
        ),
        (
            "bad CIDR",
            m(
                json!({"ipam": {"type": "host-local", "subnet": "10.0.0.0/33", "dataDir": w.path("x")}}),
            ),
            base(),
            7,
        ),
        (
            "bad runtimeConfig mac",
            m(json!({"runtimeConfig": {"mac": "zz"}})),
            base(),
            7,
        ),
        (
            "bad CNI_ARGS mac",
            m(json!({})),
            Invocation {
                args: "MAC=01:02:03:04:05:06",
                ..base()
            },
            7,
        ),
        ("unknown mode", m(json!({"mode": "source"})), base(), 7),
        ("mtu above master", m(json!({"mtu": 1501})), base(), 7),
        ("negative mtu", m(json!({"mtu": -5})), base(), 7),
        ("mtu not a number", m(json!({"mtu": "1400"})), base(), 7),
        (
            "linkInContainer not a bool",
            m(json!({"linkInContainer": "yes"})),
            base(),
            7,
        ),
        ("missing master", m(json!({"master": "nope0"})), base(), 7),
        ("bad master name", m(json!({"master": "a/b"})), base(), 7),
        (
            "netns missing",
            g.clone(),
            Invocation {
                netns: "/run/netns/does-not-exist-mv",
                ..base()
            },
            3,
        ),
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
    assert_eq!(link_names(w.node.netns()), vec!["lo", MASTER, "mvup0p"]);
    assert_eq!(link_names(w.pods[0].netns()), vec!["lo"]);
    assert!(ips(&w).is_empty());
    // DEL does not care about fields only ADD needs.
    let lenient = m(json!({"mode": "nope", "mtu": 99999, "master": "gone0"}));
    run(
        &lenient,
        Invocation {
            verb: "DEL",
            ..base()
        },
    )
    .ok();
}
