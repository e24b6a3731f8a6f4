//! Root-free tests of the delegate's logic on fakes (no real namespace, sysctl or IPAM
//! store is touched): the exact netlink requests of ADD per mode and option, rollback on
//! injected failures, DEL/CHECK/STATUS. What every delegate must do (every verb in every
//! spec version, refused ADDs, GC, bad input) runs on the same fakes in the contract
//! suite: tests/contract.rs.

use cni_core::plugin::dispatch;
use cni_core::{CmdArgs, CniResult, Env, NetConf, Plugin, Route};
use meta_ipvlan::testing::{FAKE_POD_PATH, FakeBackend, default_route};
use meta_ipvlan::{AddCtx, Ipvlan, UNSUPPORTED_MSG, add_with, config};
use meta_netlink::{
    IpvlanFlags, IpvlanMode, LinkInfo, LinkKind, LinkRequest, NetlinkOps, Request, RouteSpec,
};
use serde_json::{Value, json};
use std::collections::HashMap;

type P = Ipvlan<FakeBackend>;

fn plugin() -> P {
    Ipvlan::with_backend(FakeBackend::new().expect("fake backend"))
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn conf(version: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": "ivnet", "type": "ipvlan"});
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    c
}

fn with_ipam(extra: Value) -> Value {
    let mut c = conf(
        "1.0.0",
        json!({"ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}),
    );
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    c
}

fn ipam_result(v: Value) -> CniResult {
    CniResult::from_value(&v).expect("ipam result")
}

fn v4_result() -> CniResult {
    ipam_result(json!({"cniVersion": "1.0.0",
        "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.1.0.53"]}}))
}

struct Call<'a> {
    verb: &'a str,
    netns: &'a str,
    ifname: &'a str,
    cid: &'a str,
    args: &'a str,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Call {
            verb: "ADD",
            netns: FAKE_POD_PATH,
            ifname: "net1",
            cid: "cid1",
            args: "",
        }
    }
}

fn lookup(c: &Call) -> HashMap<&'static str, String> {
    let mut m = HashMap::new();
    m.insert("CNI_COMMAND", c.verb.to_string());
    m.insert("CNI_CONTAINERID", c.cid.to_string());
    m.insert("CNI_NETNS", c.netns.to_string());
    m.insert("CNI_IFNAME", c.ifname.to_string());
    m.insert("CNI_ARGS", c.args.to_string());
    m.insert("CNI_PATH", "/nonexistent/cni/bin".to_string());
    m
}

/// One verb through the plugin skeleton: (stdout JSON or Null, exit code).
fn run(p: &P, c: Call, stdin: &Value) -> (Value, i32) {
    let m = lookup(&c);
    let out = dispatch(p, |k| m.get(k).cloned(), stdin.to_string().as_bytes());
    let v = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
    };
    (v, out.exit_code)
}

fn ok(p: &P, c: Call, stdin: &Value) -> Value {
    let (v, rc) = run(p, c, stdin);
    assert_eq!(rc, 0, "failed: {v}");
    v
}

fn err(p: &P, c: Call, stdin: &Value) -> (u64, String) {
    let (v, rc) = run(p, c, stdin);
    assert_eq!(rc, 1, "expected failure, got {v}");
    (
        v["code"].as_u64().expect("code"),
        v["msg"].as_str().expect("msg").to_string(),
    )
}

fn node_reqs(p: &P) -> Vec<Request> {
    p.backend().world.borrow().node.requests().to_vec()
}

fn pod_reqs(p: &P) -> Vec<Request> {
    p.backend().world.borrow().pod.requests().to_vec()
}

fn pod_link(p: &P, name: &str) -> Option<LinkInfo> {
    p.backend().pod().link_by_name(name).unwrap()
}

fn pod_links(p: &P) -> Vec<String> {
    let mut v: Vec<String> = p
        .backend()
        .pod()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    v.sort();
    v
}

fn ipvlan_req(p: &P, master: u32, mode: IpvlanMode, mtu: Option<u32>) -> Request {
    Request::LinkAdd(LinkRequest {
        name: "ivtmp0".into(),
        kind: LinkKind::Ipvlan {
            master,
            mode,
            flags: IpvlanFlags::Bridge,
        },
        mtu,
        mac: None,
        netns: Some(p.backend().world.borrow().pod_ns.clone()),
        up: false,
    })
}

fn default_v4_via(gw: &str, oif: u32) -> RouteSpec {
    RouteSpec {
        gw: Some(gw.parse().unwrap()),
        oif: Some(oif),
        scope: Some(meta_netlink::SCOPE_UNIVERSE),
        ..RouteSpec::new(net("0.0.0.0/0"))
    }
}

#[test]
fn add_l2_default_master_from_node_default_route() {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    let res = ok(&p, Call::default(), &with_ipam(json!({})));
    // The exact requests: one LinkAdd on the node (master eth0 = index 2, from the default
    // route), everything else inside the pod.
    assert_eq!(node_reqs(&p), vec![ipvlan_req(&p, 2, IpvlanMode::L2, None)]);
    assert_eq!(
        pod_reqs(&p),
        vec![
            Request::SetName(2, "net1".into()),
            Request::AddrAdd(2, net("10.1.0.2/24")),
            Request::SetUp(2, true),
            Request::RouteAdd(default_v4_via("10.1.0.1", 2)),
        ]
    );
    // The reference's result shape: one interface (in the sandbox, the master's MAC),
    // IPs on interface 0, IPAM's routes, the configuration's dns (none here).
    assert_eq!(
        res,
        json!({"cniVersion": "1.0.0",
               "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:02", "sandbox": FAKE_POD_PATH}],
               "ips": [{"interface": 0, "address": "10.1.0.2/24", "gateway": "10.1.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}],
               "dns": {}})
    );
    let l = pod_link(&p, "net1").expect("net1 in the pod");
    assert_eq!(
        (
            l.kind.as_deref(),
            l.ipvlan_mode,
            l.mtu,
            l.up,
            l.link,
            l.link_netnsid
        ),
        (
            Some("ipvlan"),
            Some(IpvlanMode::L2),
            1500,
            true,
            Some(2),
            Some(0)
        )
    );
    let w = p.backend().world.borrow();
    assert_eq!(
        w.sysctl_writes,
        vec![
            ("net/ipv4/conf/net1/arp_notify".to_string(), "1".to_string()),
            (
                "net/ipv6/conf/net1/ndisc_notify".to_string(),
                "1".to_string()
            ),
        ]
    );
    assert_eq!(p.backend().ipam.calls(), vec!["validate", "add"]);
    assert_eq!(
        p.backend().ipam.reserved(),
        vec![("cid1".to_string(), "net1".to_string())]
    );
}

#[test]
fn add_each_mode_with_master_and_mtu() {
    for (mode, want) in [
        ("l2", IpvlanMode::L2),
        ("l3", IpvlanMode::L3),
        ("l3s", IpvlanMode::L3s),
    ] {
        let p = plugin();
        p.backend().ipam.set_result(v4_result());
        let c = with_ipam(json!({"master": "eth1", "mode": mode, "mtu": 1400}));
        ok(&p, Call::default(), &c);
        assert_eq!(
            node_reqs(&p),
            vec![ipvlan_req(&p, 3, want, Some(1400))],
            "{mode}"
        );
        assert_eq!(
            pod_reqs(&p)[0],
            Request::SetName(2, "net1".into()),
            "{mode}"
        );
        let l = pod_link(&p, "net1").unwrap();
        assert_eq!((l.ipvlan_mode, l.mtu, l.link), (Some(want), 1400, Some(3)));
    }
    // No mtu: the link inherits the master's.
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    ok(&p, Call::default(), &with_ipam(json!({"master": "eth1"})));
    assert_eq!(node_reqs(&p), vec![ipvlan_req(&p, 3, IpvlanMode::L2, None)]);
    assert_eq!(pod_link(&p, "net1").unwrap().mtu, 9000);
}

#[test]
fn add_link_in_container_uses_the_pods_master_and_default_route() {
    let p = plugin();
    {
        let mut w = p.backend().world.borrow_mut();
        w.pod.add_existing_link(LinkInfo {
            index: 2,
            name: "eth9".into(),
            mac: Some([2, 0, 0, 0, 0, 9]),
            mtu: 1450,
            up: true,
            ..Default::default()
        });
        w.pod
            .add_existing_route(default_route(2, "172.16.0.1").unwrap());
    }
    p.backend().ipam.set_result(v4_result());
    let res = ok(
        &p,
        Call::default(),
        &with_ipam(json!({"linkInContainer": true, "mode": "l3"})),
    );
    assert!(node_reqs(&p).is_empty(), "nothing happens on the node");
    let pr = pod_reqs(&p);
    assert_eq!(
        pr[0],
        Request::LinkAdd(LinkRequest {
            name: "ivtmp0".into(),
            kind: LinkKind::Ipvlan {
                master: 2,
                mode: IpvlanMode::L3,
                flags: IpvlanFlags::Bridge
            },
            mtu: None,
            mac: None,
            netns: None,
            up: false,
        })
    );
    assert_eq!(
        pr[1..],
        [
            Request::SetName(3, "net1".into()),
            Request::AddrAdd(3, net("10.1.0.2/24")),
            Request::SetUp(3, true),
            Request::RouteAdd(default_v4_via("10.1.0.1", 3)),
        ]
    );
    assert_eq!(res["interfaces"][0]["mac"], "02:00:00:00:00:09");
    // An explicit master is looked up in the pod too.
    let p2 = plugin();
    p2.backend().ipam.set_result(v4_result());
    let (code, msg) = err(
        &p2,
        Call::default(),
        &with_ipam(json!({"linkInContainer": true, "master": "eth1"})),
    );
    assert_eq!(code, 999);
    assert!(
        msg.contains("failed to lookup master \"eth1\": Link not found"),
        "{msg}"
    );
    assert!(node_reqs(&p2).is_empty() && pod_reqs(&p2).is_empty());
}

#[test]
fn add_chained_takes_master_and_ips_from_prev_result() {
    let p = plugin();
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth1", "mac": "02:00:00:00:00:03"}],
        "ips": [{"address": "10.5.0.9/24", "gateway": "10.5.0.1", "interface": 0},
                {"address": "fd00:5::9/64", "interface": 0}],
        "routes": [{"dst": "10.6.0.0/16"}],
        "dns": {"nameservers": ["10.5.0.53"]}});
    let c = conf(
        "1.0.0",
        json!({"prevResult": prev, "dns": {"nameservers": ["9.9.9.9"]}}),
    );
    let res = ok(&p, Call::default(), &c);
    assert_eq!(
        node_reqs(&p),
        vec![ipvlan_req(&p, 3, IpvlanMode::L2, None)],
        "master eth1 from prevResult"
    );
    assert_eq!(
        pod_reqs(&p),
        vec![
            Request::SetName(2, "net1".into()),
            Request::AddrAdd(2, net("10.5.0.9/24")),
            Request::AddrAdd(2, net("fd00:5::9/64")),
            Request::SetUp(2, true),
            Request::RouteAdd(RouteSpec {
                oif: Some(2),
                gw: Some("10.5.0.1".parse().unwrap()),
                scope: Some(meta_netlink::SCOPE_UNIVERSE),
                ..RouteSpec::new(net("10.6.0.0/16"))
            }),
        ]
    );
    assert!(p.backend().ipam.calls().is_empty(), "no IPAM when chained");
    assert_eq!(
        res,
        json!({"cniVersion": "1.0.0",
               "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:03", "sandbox": FAKE_POD_PATH}],
               "ips": [{"interface": 0, "address": "10.5.0.9/24", "gateway": "10.5.0.1"},
                       {"interface": 0, "address": "fd00:5::9/64"}],
               "routes": [{"dst": "10.6.0.0/16"}],
               "dns": {"nameservers": ["9.9.9.9"]}})
    );
    // IPv6 got enabled on lo (it was disabled); net1 has no such key in the fake.
    let w = p.backend().world.borrow();
    assert!(
        w.sysctl_writes
            .contains(&("net/ipv6/conf/lo/disable_ipv6".into(), "0".into())),
        "{:?}",
        w.sysctl_writes
    );
}

#[test]
fn add_chained_with_ipam_uses_ipam() {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
                      "ips": [{"address": "10.5.0.9/24", "interface": 0}]});
    let res = ok(&p, Call::default(), &with_ipam(json!({"prevResult": prev})));
    assert_eq!(res["ips"][0]["address"], "10.1.0.2/24");
    assert_eq!(node_reqs(&p), vec![ipvlan_req(&p, 2, IpvlanMode::L2, None)]);
}

#[test]
fn add_refuses_configs_without_addresses_before_touching_anything() {
    let prev_no_ips = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]});
    for c in [
        conf("1.0.0", json!({"master": "eth0"})),
        conf("1.0.0", json!({"master": "eth0", "ipam": {}})),
        conf("1.0.0", json!({"prevResult": prev_no_ips})),
    ] {
        let p = plugin();
        let (code, msg) = err(&p, Call::default(), &c);
        assert_eq!(code, 7, "{c}");
        assert!(msg.contains("ipam"), "{msg}");
        assert!(node_reqs(&p).is_empty() && pod_reqs(&p).is_empty());
        assert!(p.backend().ipam.calls().is_empty());
    }
}

#[test]
fn add_master_resolution_failures() {
    // prevResult without a single named interface.
    let p = plugin();
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}],
                      "ips": [{"address": "10.5.0.9/24"}]});
    let (code, msg) = err(
        &p,
        Call::default(),
        &conf("1.0.0", json!({"prevResult": prev})),
    );
    assert_eq!(code, 7);
    assert!(msg.contains("chained master failure"), "{msg}");
    // No default route on the node.
    let p = plugin();
    p.backend()
        .node()
        .route_del(&RouteSpec::new(net("0.0.0.0/0")))
        .unwrap();
    p.backend().world.borrow_mut().node.clear_requests();
    let (code, msg) = err(&p, Call::default(), &with_ipam(json!({})));
    assert_eq!(code, 999);
    assert!(msg.contains("no default route interface found"), "{msg}");
    // A master that does not exist.
    let p2 = plugin();
    let (_, msg2) = err(&p2, Call::default(), &with_ipam(json!({"master": "eth7"})));
    assert!(
        msg2.contains("failed to lookup master \"eth7\": Link not found"),
        "{msg2}"
    );
    for p in [&p, &p2] {
        assert!(node_reqs(p).is_empty() && pod_reqs(p).is_empty());
        assert_eq!(p.backend().ipam.calls(), vec!["validate"]);
    }
}

#[test]
fn add_mtu_above_the_masters_is_refused_before_creating() {
    let p = plugin();
    let (code, msg) = err(
        &p,
        Call::default(),
        &with_ipam(json!({"master": "eth0", "mtu": 9000})),
    );
    assert_eq!(code, 7);
    assert!(
        msg.contains("larger than the MTU 1500 of master \"eth0\""),
        "{msg}"
    );
    assert!(node_reqs(&p).is_empty() && pod_reqs(&p).is_empty());
    // Equal to the master's is fine.
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    ok(
        &p,
        Call::default(),
        &with_ipam(json!({"master": "eth1", "mtu": 9000})),
    );
    assert_eq!(
        node_reqs(&p),
        vec![ipvlan_req(&p, 3, IpvlanMode::L2, Some(9000))]
    );
}

#[test]
fn add_on_existing_ifname_fails_before_creating() {
    let p = plugin();
    p.backend()
        .world
        .borrow_mut()
        .pod
        .add_existing_link(LinkInfo {
            index: 2,
            name: "net1".into(),
            ..Default::default()
        });
    let (_, msg) = err(&p, Call::default(), &with_ipam(json!({})));
    assert!(
        msg.contains("net1") && msg.contains("already exists"),
        "{msg}"
    );
    assert!(node_reqs(&p).is_empty() && pod_reqs(&p).is_empty());
}

#[test]
fn kernel_without_ipvlan_gives_a_clear_error_and_nothing_else() {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    p.backend().world.borrow_mut().node.fail_next(
        "link_add",
        meta_netlink::Error::Netlink {
            op: "link_add ivtmp0".into(),
            errno: 95,
            message: "Unknown device type".into(),
        },
    );
    let (code, msg) = err(&p, Call::default(), &with_ipam(json!({})));
    assert_eq!(code, 999);
    assert!(msg.contains(UNSUPPORTED_MSG), "{msg}");
    assert!(msg.contains("Unknown device type"), "{msg}");
    assert_eq!(node_reqs(&p), vec![ipvlan_req(&p, 2, IpvlanMode::L2, None)]);
    assert!(pod_reqs(&p).is_empty(), "nothing to roll back in the pod");
    assert_eq!(
        p.backend().ipam.calls(),
        vec!["validate"],
        "IPAM never asked"
    );
    assert!(p.backend().ipam.reserved().is_empty());
    assert_eq!(pod_links(&p), vec!["lo"]);
}

#[test]
fn l3s_without_kernel_support_names_the_option() {
    let p = plugin();
    p.backend()
        .world
        .borrow_mut()
        .node
        .fail_next("link_add", meta_netlink::Error::netlink("link_add", 524));
    let (_, msg) = err(&p, Call::default(), &with_ipam(json!({"mode": "l3s"})));
    assert!(
        msg.contains("l3s") && msg.contains("CONFIG_IPVLAN_L3S"),
        "{msg}"
    );
    // Any other refusal is reported with the master's name.
    let p = plugin();
    p.backend()
        .world
        .borrow_mut()
        .node
        .fail_next("link_add", meta_netlink::Error::netlink("link_add", 16));
    let (_, msg) = err(&p, Call::default(), &with_ipam(json!({})));
    assert!(
        msg.contains("failed to create ipvlan on master \"eth0\""),
        "{msg}"
    );
    assert!(!msg.contains(UNSUPPORTED_MSG), "{msg}");
}

/// Runs ADD with one injected failure and checks the rollback: the link deleted in the pod
/// (the last pod request) and exactly the IPAM calls `ipam` (released only after an IPAM
/// ADD that succeeded: a failed one took nothing).
fn rollback_case(inject: impl FnOnce(&P), ipam: &[&str], needle: &str) {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    inject(&p);
    let (_, msg) = err(&p, Call::default(), &with_ipam(json!({})));
    assert!(msg.contains(needle), "{needle}: {msg}");
    let pr = pod_reqs(&p);
    assert_eq!(pr.last(), Some(&Request::LinkDel(2)), "{needle}: {pr:?}");
    assert_eq!(pod_links(&p), vec!["lo"], "{needle}");
    assert_eq!(p.backend().ipam.calls(), ipam, "{needle}");
    assert!(p.backend().ipam.reserved().is_empty(), "{needle}");
}

#[test]
fn add_failures_roll_back_link_and_ipam() {
    let nl_err = |op: &str, errno| meta_netlink::Error::netlink(op, errno);
    rollback_case(
        |p| {
            p.backend()
                .world
                .borrow_mut()
                .pod
                .fail_next("link_set_name", nl_err("link_set_name", 16))
        },
        &["validate"],
        "failed to rename ipvlan to \"net1\"",
    );
    rollback_case(
        |p| {
            p.backend()
                .ipam
                .fail_next("add", cni_core::Error::internal("pool exhausted"))
        },
        &["validate", "add"],
        "pool exhausted",
    );
    rollback_case(
        |p| p.backend().ipam.set_result(CniResult::default()),
        &["validate", "add", "del"],
        "IPAM plugin returned missing IP config",
    );
    rollback_case(
        |p| {
            p.backend()
                .world
                .borrow_mut()
                .pod
                .fail_next("addr_add", nl_err("addr_add", 22))
        },
        &["validate", "add", "del"],
        "failed to add IP addr 10.1.0.2/24",
    );
    rollback_case(
        |p| {
            p.backend()
                .world
                .borrow_mut()
                .pod
                .fail_next("link_set_up", nl_err("link_set_up", 22))
        },
        &["validate", "add", "del"],
        "failed to set net1 up",
    );
    rollback_case(
        |p| {
            p.backend()
                .world
                .borrow_mut()
                .pod
                .fail_next("route_add", nl_err("route_add", 101))
        },
        &["validate", "add", "del"],
        "failed to add route 0.0.0.0/0",
    );
}

#[test]
fn rollback_requests_in_order() {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    p.backend()
        .world
        .borrow_mut()
        .pod
        .fail_next("route_add", meta_netlink::Error::netlink("route_add", 101));
    err(&p, Call::default(), &with_ipam(json!({})));
    assert_eq!(
        pod_reqs(&p),
        vec![
            Request::SetName(2, "net1".into()),
            Request::AddrAdd(2, net("10.1.0.2/24")),
            Request::SetUp(2, true),
            Request::RouteAdd(default_v4_via("10.1.0.1", 2)),
            Request::LinkDel(2),
        ]
    );
}

#[test]
fn add_with_directly_on_fakes() {
    // The generic entry point, without the plugin skeleton: IPv6 with a gateway.
    let b = FakeBackend::new().unwrap();
    b.ipam.set_result(ipam_result(json!({"cniVersion": "1.0.0",
        "ips": [{"address": "fd00:1::2/64", "gateway": "fd00:1::1"}],
        "routes": [{"dst": "::/0"}]})));
    b.world
        .borrow_mut()
        .sysctls
        .insert("net/ipv6/conf/net1/disable_ipv6".into(), "1".into());
    let c = with_ipam(json!({"master": "eth0", "mode": "l3"}));
    let args = cmd_args("ADD", &c);
    let r = config::load(&args).unwrap();
    let (mut node, mut pod) = (b.node(), b.pod());
    let pod_ns = b.world.borrow().pod_ns.clone();
    let mut sysctl = meta_ipvlan::testing::FakeSysctl(b.world.clone());
    let mut cx = AddCtx {
        pod_ns: &pod_ns,
        sysctl: &mut sysctl,
        ipam: &b.ipam,
        tmp_name: "tmpx",
    };
    let res = add_with(&mut node, &mut pod, &mut cx, &args, &r).unwrap();
    assert_eq!(res.ips[0].interface, Some(0));
    assert_eq!(res.routes, vec![Route::new(net("::/0"), None)]);
    let w = b.world.borrow();
    assert_eq!(
        w.pod.requests(),
        [
            Request::SetName(2, "net1".into()),
            Request::AddrAdd(2, net("fd00:1::2/64")),
            Request::SetUp(2, true),
            Request::RouteAdd(RouteSpec {
                gw: Some("fd00:1::1".parse().unwrap()),
                oif: Some(2),
                scope: Some(meta_netlink::SCOPE_UNIVERSE),
                ..RouteSpec::new(net("::/0"))
            }),
        ]
    );
    assert_eq!(
        w.sysctl_writes,
        vec![
            ("net/ipv4/conf/net1/arp_notify".to_string(), "1".to_string()),
            (
                "net/ipv6/conf/net1/ndisc_notify".to_string(),
                "1".to_string()
            ),
            ("net/ipv6/conf/lo/disable_ipv6".to_string(), "0".to_string()),
            (
                "net/ipv6/conf/net1/disable_ipv6".to_string(),
                "0".to_string()
            ),
        ]
    );
    match &w.node.requests()[0] {
        Request::LinkAdd(req) => assert_eq!(req.name, "tmpx"),
        other => panic!("{other:?}"),
    }
}

fn cmd_args(verb: &str, c: &Value) -> CmdArgs {
    let call = Call {
        verb,
        ..Default::default()
    };
    let m = lookup(&call);
    let env = Env::from_lookup(|k| m.get(k).cloned()).unwrap();
    let stdin = c.to_string().into_bytes();
    let conf = NetConf::parse(&stdin).unwrap();
    CmdArgs { env, stdin, conf }
}

fn with_prev(c: &Value, prev: &Value) -> Value {
    let mut c = c.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn del_removes_link_and_releases_then_is_idempotent() {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    let c = with_ipam(json!({}));
    ok(&p, Call::default(), &c);
    p.backend().world.borrow_mut().pod.clear_requests();
    let del = || Call {
        verb: "DEL",
        ..Default::default()
    };
    assert_eq!(ok(&p, del(), &c), Value::Null);
    assert_eq!(pod_reqs(&p), vec![Request::LinkDel(2)]);
    assert!(p.backend().ipam.reserved().is_empty());
    ok(&p, del(), &c);
    assert_eq!(
        pod_reqs(&p),
        vec![Request::LinkDel(2)],
        "nothing more to delete"
    );
    // Namespace gone, or CNI_NETNS empty: IPAM is still released.
    p.backend().world.borrow_mut().pod_present = false;
    ok(&p, del(), &c);
    ok(&p, Call { netns: "", ..del() }, &c);
    assert_eq!(
        p.backend().ipam.calls(),
        vec!["validate", "add", "del", "del", "del", "del"]
    );
    // Master gone (the kernel took the ipvlan with it): DEL still succeeds.
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    ok(&p, Call::default(), &c);
    p.backend().node().link_del(2).unwrap();
    p.backend().pod().link_del(2).unwrap();
    ok(&p, del(), &c);
    // Chained (no ipam): no IPAM call at DEL.
    let p = plugin();
    let chained = conf("1.0.0", json!({"master": "eth0"}));
    ok(&p, del(), &chained);
    assert!(p.backend().ipam.calls().is_empty());
    // A DEL failing for real is reported.
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    ok(&p, Call::default(), &c);
    p.backend()
        .world
        .borrow_mut()
        .pod
        .fail_next("link_del", meta_netlink::Error::netlink("link_del", 16));
    let (_, msg) = err(&p, del(), &c);
    assert!(msg.contains("failed to delete \"net1\""), "{msg}");
}

#[test]
fn check_passes_after_add_and_detects_drift() {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    let c = with_ipam(json!({"master": "eth1", "mode": "l3"}));
    let res = ok(&p, Call::default(), &c);
    let check = || Call {
        verb: "CHECK",
        ..Default::default()
    };
    assert_eq!(ok(&p, check(), &with_prev(&c, &res)), Value::Null);
    // No prevResult.
    assert_eq!(err(&p, check(), &c).0, 7);
    // Another mode configured.
    let mut c2 = with_prev(&c, &res);
    c2["mode"] = json!("l2");
    let (_, msg) = err(&p, check(), &c2);
    assert!(
        msg.contains("Container IPVlan mode l3 does not match expected value: l2"),
        "{msg}"
    );
    // Another master configured (exists, but is not the parent).
    let mut c3 = with_prev(&c, &res);
    c3["master"] = json!("eth0");
    let (_, msg) = err(&p, check(), &c3);
    assert!(msg.contains("not an ipvlan of master \"eth0\""), "{msg}");
    // MAC in prevResult differs.
    let mut r4 = res.clone();
    r4["interfaces"][0]["mac"] = json!("02:00:00:00:00:99");
    let (_, msg) = err(&p, check(), &with_prev(&c, &r4));
    assert!(msg.contains("Mac 02:00:00:00:00:99"), "{msg}");
    // Sandbox differs.
    let mut r5 = res.clone();
    r5["interfaces"][0]["sandbox"] = json!("/elsewhere");
    let (_, msg) = err(&p, check(), &with_prev(&c, &r5));
    assert!(msg.contains("Sandbox"), "{msg}");
    // Address removed.
    p.backend().pod().addr_del(2, net("10.1.0.2/24")).unwrap();
    let (_, msg) = err(&p, check(), &with_prev(&c, &res));
    assert!(msg.contains("10.1.0.2/24"), "{msg}");
    // IPAM lost the allocation.
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    let res = ok(&p, Call::default(), &c);
    p.backend()
        .ipam
        .fail_next("check", cni_core::Error::internal("no allocation"));
    let (_, msg) = err(&p, check(), &with_prev(&c, &res));
    assert!(msg.contains("no allocation"), "{msg}");
    // Not an ipvlan.
    let p = plugin();
    p.backend()
        .world
        .borrow_mut()
        .pod
        .add_existing_link(LinkInfo {
            index: 2,
            name: "net1".into(),
            kind: Some("veth".into()),
            ..Default::default()
        });
    let chained = conf("1.0.0", json!({"master": "eth1", "mode": "l3"}));
    let (_, msg) = err(&p, check(), &with_prev(&chained, &res));
    assert!(msg.contains("not of type ipvlan"), "{msg}");
}

#[test]
fn check_with_master_unset_verifies_the_parent_exists() {
    let p = plugin();
    p.backend().ipam.set_result(v4_result());
    let c = with_ipam(json!({}));
    let res = ok(&p, Call::default(), &c);
    let check = || Call {
        verb: "CHECK",
        ..Default::default()
    };
    ok(&p, check(), &with_prev(&c, &res));
    // The fake keeps the child when the master goes (the kernel would not).
    p.backend().node().link_del(2).unwrap();
    let (_, msg) = err(&p, check(), &with_prev(&c, &res));
    assert!(msg.contains("master (index 2)"), "{msg}");
}

#[test]
fn status_checks_the_configured_master_and_ipam() {
    let status = || Call {
        verb: "STATUS",
        cid: "",
        ifname: "",
        ..Default::default()
    };
    let p = plugin();
    let v11 = |extra: Value| {
        let mut c = with_ipam(extra);
        c["cniVersion"] = json!("1.1.0");
        c
    };
    assert_eq!(
        ok(&p, status(), &v11(json!({"master": "eth1"}))),
        Value::Null
    );
    let (code, msg) = err(&p, status(), &v11(json!({"master": "eth7"})));
    assert_eq!(code, 50);
    assert!(msg.contains("eth7"), "{msg}");
    // A master in the pod, or a default one, cannot be judged from the node.
    ok(
        &p,
        status(),
        &v11(json!({"master": "eth7", "linkInContainer": true})),
    );
    ok(&p, status(), &v11(json!({})));
    p.backend()
        .ipam
        .fail_next("status", cni_core::Error::new(50, "pool full"));
    assert_eq!(err(&p, status(), &v11(json!({}))).0, 50);
    assert!(node_reqs(&p).is_empty(), "STATUS only reads");
}

#[test]
fn about_names_the_plugin() {
    assert!(plugin().about().starts_with("meta-ipvlan "));
}
