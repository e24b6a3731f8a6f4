//! The overlay across nodes on one machine: an underlay bridge joining three node
//! namespaces (192.168.77.2-4), the overlay set up on each node by `reconcile` (as the agent
//! would), pods made by the `meta-vxlan` binary inside each node.
//!
//! MTU arithmetic (underlay MTU 1500, IPv4): the overlay MTU is 1500 − 50 = 1450 (outer
//! IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14). `ping -M do -s 1422` sends an ICMP
//! payload of 1422 bytes: + 8 (ICMP) + 20 (IPv4) = a 1450-byte IP packet, the largest that
//! fits, which becomes a 1500-byte packet on the underlay. `-s 1423` (1451 bytes) does not
//! fit the pod's 1450 MTU and is refused in the pod ("message too long").

mod common;
use common::*;
use meta_netlink::NetlinkOps;
use meta_overlay::{self as overlay, Change, NodeRecord};
use serde_json::Value;
use std::net::IpAddr;

/// Adds a primary pod on node `n`; returns (pod index, pod IP, ADD result).
fn primary_pod(c: &mut Cluster, n: usize, cid: &str) -> (usize, IpAddr, Value) {
    let p = c.new_pod();
    let conf = primary_conf(&c.nodes[n]);
    let r = invoke(
        c.nodes[n].ns.netns(),
        "ADD",
        cid,
        &c.pod_path(p),
        "eth0",
        &conf,
    )
    .ok();
    let v = r.value().clone();
    (p, result_ip(&v), v)
}

#[test]
fn primary_pods_talk_across_nodes() {
    let mut c = Cluster::new(3, 1500);
    c.overlay_up();
    let (p0, ip0, res0) = primary_pod(&mut c, 0, "pod-a");
    let (p1, ip1, _) = primary_pod(&mut c, 1, "pod-b");
    let (p2, ip2, _) = primary_pod(&mut c, 2, "pod-c");
    assert_eq!(ip0.to_string(), "10.244.1.2");
    assert_eq!(ip1.to_string(), "10.244.2.2");
    assert_eq!(ip2.to_string(), "10.244.3.2");
    // The result: bridge, host veth, eth0; gateway .1; routes to the cluster and default.
    assert_eq!(res0["interfaces"][0]["name"], "meta0");
    assert_eq!(res0["ips"][0]["gateway"], "10.244.1.1");
    let routes: Vec<String> = res0["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} via {}", r["dst"], r["gw"]))
        .collect();
    assert_eq!(
        routes,
        vec![
            "\"10.244.0.0/16\" via \"10.244.1.1\"",
            "\"0.0.0.0/0\" via \"10.244.1.1\""
        ]
    );
    let eth0 = iface_state(c.pods[p0].netns(), "eth0").unwrap();
    assert_eq!(eth0.mtu, 1450);

    // ICMP across nodes, every direction.
    assert_reaches(&c.pods[p0], ip1, &[]);
    assert_reaches(&c.pods[p0], ip2, &[]);
    assert_reaches(&c.pods[p2], ip1, &[]);
    assert_reaches(&c.pods[p1], ip0, &[]);
    // The largest unfragmented packet: 1422 + 8 + 20 = 1450 = overlay MTU.
    assert_reaches(&c.pods[p0], ip1, &["-M", "do", "-s", "1422"]);
    // One byte more (1451) does not fit the pod's 1450 MTU: nothing gets through. (ping
    // usually reports "local error: message too long, mtu=1450"; right after the 1422-byte
    // run it sometimes counts the packets as sent instead, so only the outcome is checked.)
    let (ok, out) = ping(&c.pods[p0], ip1, &["-M", "do", "-s", "1423"]);
    assert!(!ok, "1451-byte DF packet passed: {out}");
    // TCP, 4 MiB echoed through the overlay (segments at the 1450 MTU).
    let n = tcp_echo(c.pods[p1].netns(), c.pods[p0].netns(), ip1, 5201, 4 << 20);
    assert_eq!(n, 4 << 20);
    tcp_echo(c.pods[p0].netns(), c.pods[p2].netns(), ip0, 5202, 1 << 20);
    // A node reaches a remote pod (source: its VTEP address 10.244.1.0).
    let node0 = &c.nodes[0].ns;
    assert_reaches(node0, ip1, &[]);
    // Outside the cluster CIDR: masqueraded to the node's underlay address (the underlay
    // has no route back to 10.244.0.0/16, so a reply proves the masquerade).
    assert_reaches(&c.pods[p0], "192.168.77.1".parse().unwrap(), &[]);

    // DEL: interface and IP gone; the others still talk.
    let conf = primary_conf(&c.nodes[0]);
    invoke(
        c.nodes[0].ns.netns(),
        "DEL",
        "pod-a",
        &c.pod_path(p0),
        "eth0",
        &conf,
    )
    .ok();
    assert!(iface_state(c.pods[p0].netns(), "eth0").is_none());
    assert_reaches(&c.pods[p2], ip1, &[]);
}

/// The entries of `node` for the other nodes: (neighbours, fdbs, routes) on meta.1.
fn entries(n: &Node) -> (Vec<String>, Vec<String>, Vec<String>) {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let mut nl = n.nl();
    let dev = nl.link_by_name("meta.1").unwrap().expect("meta.1");
    let neighs = nl
        .neighs(Some(dev.index))
        .unwrap()
        .into_iter()
        .filter(|x| x.permanent)
        .map(|x| format!("{} {}", x.ip, meta_netlink::format_mac(&x.mac)))
        .collect();
    let fdbs = nl
        .fdbs(dev.index)
        .unwrap()
        .into_iter()
        .map(|f| {
            format!(
                "{} {:?} permanent={}",
                meta_netlink::format_mac(&f.mac),
                f.dst,
                f.permanent
            )
        })
        .collect();
    let routes = nl
        .routes(false, None)
        .unwrap()
        .into_iter()
        .filter(|r| r.oif == Some(dev.index))
        .map(|r| format!("{} via {:?} onlink={}", r.dst, r.gw, r.onlink))
        .collect();
    (sorted(neighs), sorted(fdbs), sorted(routes))
}

#[test]
fn reconcile_removes_gone_nodes_and_restart_changes_nothing() {
    let mut c = Cluster::new(3, 1500);
    c.overlay_up();
    let (p0, _, _) = primary_pod(&mut c, 0, "r-a");
    let (_, ip1, _) = primary_pod(&mut c, 1, "r-b");
    let (_, ip2, _) = primary_pod(&mut c, 2, "r-c");
    let all = c.records();
    let (n, f, r) = entries(&c.nodes[0]);
    let m = |i: usize| meta_netlink::format_mac(&all[i].vtep_mac);
    assert_eq!(
        n,
        vec![
            format!("10.244.2.0 {}", m(1)),
            format!("10.244.3.0 {}", m(2))
        ]
    );
    assert_eq!(
        f,
        vec![
            format!("{} Some(192.168.77.3) permanent=true", m(1)),
            format!("{} Some(192.168.77.4) permanent=true", m(2))
        ]
    );
    assert_eq!(
        r,
        vec![
            "10.244.2.0/24 via Some(10.244.2.0) onlink=true",
            "10.244.3.0/24 via Some(10.244.3.0) onlink=true"
        ]
    );

    // Restart: a new handle and a freshly built configuration, the same input. No mutating
    // request reaches the kernel and the state is the same.
    for node in &c.nodes {
        let before = snapshot(node);
        let cfg = node.overlay();
        let mut nl = node.nl();
        let mut rec = Recorder::new(&mut nl);
        let rep = overlay::reconcile(&mut rec, &cfg, &all).unwrap();
        assert!(rep.is_noop(), "{}: {rep}", node.name);
        assert!(
            rec.mutations.is_empty(),
            "{}: {:?}",
            node.name,
            rec.mutations
        );
        assert_eq!(before, snapshot(node), "{}", node.name);
    }

    // node2 leaves: node0 and node1 drop its entries.
    let without: Vec<NodeRecord> = all.iter().filter(|r| r.name != "node2").cloned().collect();
    for node in &c.nodes[..2] {
        let mut nl = node.nl();
        let rep = overlay::reconcile(&mut nl, &node.overlay(), &without).unwrap();
        assert_eq!(
            rep.changes,
            vec![
                Change::RouteDel {
                    dst: "10.244.3.0/24".parse().unwrap()
                },
                Change::FdbDel {
                    mac: all[2].vtep_mac,
                    dst: None
                },
                Change::NeighDel {
                    ip: "10.244.3.0".parse().unwrap()
                },
            ],
            "{}",
            node.name
        );
    }
    let (n, f, r) = entries(&c.nodes[0]);
    assert_eq!(n, vec![format!("10.244.2.0 {}", m(1))]);
    assert_eq!(f.len(), 1);
    assert_eq!(r, vec!["10.244.2.0/24 via Some(10.244.2.0) onlink=true"]);
    assert_unreachable(&c.pods[p0], ip2);
    assert_reaches(&c.pods[p0], ip1, &[]);
    // Again with the same input: nothing to do.
    let mut nl = c.nodes[0].nl();
    let mut rec = Recorder::new(&mut nl);
    let rep = overlay::reconcile(&mut rec, &c.nodes[0].overlay(), &without).unwrap();
    assert!(rep.is_noop() && rec.mutations.is_empty(), "{rep}");

    // node2 comes back.
    for node in &c.nodes[..2] {
        let mut nl = node.nl();
        let rep = overlay::reconcile(&mut nl, &node.overlay(), &all).unwrap();
        assert_eq!(rep.changes.len(), 3, "{rep}");
    }
    assert_reaches(&c.pods[p0], ip2, &[]);

    // Drift repaired: someone flushed node0's route to node1.
    let mut nl = c.nodes[0].nl();
    nl.route_del(&meta_netlink::RouteSpec::new(
        "10.244.2.0/24".parse().unwrap(),
    ))
    .unwrap();
    assert_unreachable(&c.pods[p0], ip1);
    let rep = overlay::reconcile(&mut nl, &c.nodes[0].overlay(), &all).unwrap();
    assert_eq!(rep.changes.len(), 1, "{rep}");
    assert_reaches(&c.pods[p0], ip1, &[]);
}

/// Adds a pod with only a secondary attachment `net1`; returns (pod, ip).
fn segment_pod(c: &mut Cluster, n: usize, cid: &str, conf: &Value) -> (usize, IpAddr) {
    let p = c.new_pod();
    let r = invoke(
        c.nodes[n].ns.netns(),
        "ADD",
        cid,
        &c.pod_path(p),
        "net1",
        conf,
    )
    .ok();
    (p, result_ip(r.value()))
}

#[test]
fn secondary_segments_span_nodes_and_stay_isolated() {
    let mut c = Cluster::new(3, 1500);
    let ips: Vec<IpAddr> = c.nodes.iter().map(|n| n.ip).collect();
    // Both VNIs use the same subnet (disjoint per-node ranges): only the VNI separates them.
    let subnet = "10.99.0.0/24";
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..3 {
        let start = 10 + 20 * i as u8;
        let ca = secondary_conf(&c.nodes[i], "seg-a", 100, &ips, subnet, start);
        let cb = secondary_conf(&c.nodes[i], "seg-b", 200, &ips, subnet, start + 10);
        a.push(segment_pod(&mut c, i, &format!("a{i}"), &ca));
        b.push(segment_pod(&mut c, i, &format!("b{i}"), &cb));
    }
    assert_eq!(a[0].1.to_string(), "10.99.0.10");
    assert_eq!(b[1].1.to_string(), "10.99.0.40");
    // The segment devices: learning, flood entries to both other nodes.
    let mut nl = c.nodes[0].nl();
    let dev = nl.link_by_name("mvx100").unwrap().expect("mvx100");
    let v = dev.vxlan.clone().unwrap();
    assert_eq!(
        (v.vni, v.port, v.learning, dev.mtu),
        (100, 4789, true, 1450)
    );
    let br = nl.link_by_name("mbr100").unwrap().expect("mbr100");
    assert_eq!(dev.master, Some(br.index));
    let mut flood: Vec<String> = nl
        .fdbs(dev.index)
        .unwrap()
        .into_iter()
        .filter(|f| f.mac == [0; 6])
        .map(|f| format!("{:?}", f.dst))
        .collect();
    flood.sort();
    assert_eq!(flood, vec!["Some(192.168.77.3)", "Some(192.168.77.4)"]);

    // VNI A reaches VNI A on every node...
    let pod = |i: usize| &c.pods[i];
    for (from, to) in [(0, 1), (0, 2), (2, 1), (1, 0)] {
        assert_reaches(pod(a[from].0), a[to].1, &[]);
        assert_reaches(pod(b[from].0), b[to].1, &[]);
    }
    assert_reaches(pod(a[0].0), a[1].1, &["-M", "do", "-s", "1422"]);
    tcp_echo(
        pod(a[1].0).netns(),
        pod(a[0].0).netns(),
        a[1].1,
        5301,
        1 << 20,
    );
    // ...and nothing of VNI B, on this node or another.
    for to in 0..3 {
        assert_unreachable(pod(a[0].0), b[to].1);
        assert_unreachable(pod(b[2].0), a[to].1);
    }

    // A third network claiming VNI 100 with another port is refused, naming both.
    let mut cc = secondary_conf(&c.nodes[0], "seg-c", 100, &ips, "10.98.0.0/24", 10);
    cc["port"] = 4790.into();
    let p = c.new_pod();
    let r = invoke(
        c.nodes[0].ns.netns(),
        "ADD",
        "c0",
        &c.pod_path(p),
        "net1",
        &cc,
    );
    assert_eq!(r.err_code(), 7, "{}", r.stdout);
    let msg = r.err_msg();
    assert!(
        msg.contains("\"seg-c\"") && msg.contains("\"seg-a\""),
        "{msg}"
    );
    assert!(
        msg.contains("port 4790") && msg.contains("port 4789"),
        "{msg}"
    );
    assert!(iface_state(c.pods[p].netns(), "net1").is_none());
    // The same VNI with the same settings under another name is fine (shared segment).
    let cd = secondary_conf(&c.nodes[0], "seg-d", 100, &ips, subnet, 200);
    let (pd, ipd) = segment_pod(&mut c, 0, "d0", &cd);
    assert_reaches(&c.pods[pd], a[1].1, &[]);
    assert_eq!(ipd.to_string(), "10.99.0.200");

    // A configuration with a shorter peer list converges the flood list to it.
    let peers01 = vec![ips[0], ips[1]];
    let ca = secondary_conf(&c.nodes[0], "seg-a", 100, &peers01, subnet, 10);
    let (pe, _) = segment_pod(&mut c, 0, "a-extra", &ca);
    let mut nl = c.nodes[0].nl();
    let flood: Vec<_> = nl
        .fdbs(dev.index)
        .unwrap()
        .into_iter()
        .filter(|f| f.mac == [0; 6])
        .map(|f| f.dst)
        .collect();
    assert_eq!(flood, vec![Some(ips[1])]);
    assert_reaches(&c.pods[pe], a[1].1, &[]);
}
