//! The vxlan binary's mode-specific behaviour: the primary mode's bridge, forwarding,
//! masquerade, CHECK and DEL without the subnet file; the secondary mode's segment, owner
//! file and L2-only attachments; concurrent ADDs sharing one segment. What every delegate
//! must do (every verb in every version, DEL idempotency, refused ADDs, GC, bad input) is
//! the contract suite: tests/contract.rs.

mod common;
use common::*;
use meta_firewall::{Nftables, Tag};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

fn ip_files(dir: &std::path::Path, net: &str) -> Vec<String> {
    dir_contents(&dir.join("ipam").join(net))
        .into_keys()
        .filter(|k| !k.ends_with("lock") && !k.contains("last_reserved_ip"))
        .collect()
}

fn masq_tags(node: &Node) -> BTreeSet<Tag> {
    node.ns
        .netns()
        .run(|| Nftables::default().list_attachments())
        .expect("ns")
        .expect("list")
        .into_iter()
        .filter(|t| matches!(t, Tag::Masq { .. }))
        .collect()
}

/// The primary mode's own state (the gateway on the node bridge, forwarding, one
/// masquerade rule), CHECK noticing a missing cluster route, and DEL once both the pod
/// and the subnet file are gone. Every verb in every version, GC and DEL idempotency are
/// the contract suite's (tests/contract.rs).
#[test]
fn primary_node_state_check_and_del_without_subnet_file() {
    let mut c = Cluster::new(1, 1500);
    c.overlay_up();
    let conf = primary_conf(&c.nodes[0]);
    let node = c.nodes[0].ns.netns().clone();
    let p0 = c.new_pod();
    let add = invoke(&node, "ADD", "v-a", &c.pod_path(p0), "eth0", &conf).ok();
    let res = add.value().clone();
    assert_eq!(res["cniVersion"], "1.1.0");
    assert_eq!(res["interfaces"][2]["sandbox"], c.pod_path(p0));
    assert_eq!(masq_tags(&c.nodes[0]).len(), 1);
    // The bridge has the gateway; forwarding is on.
    let br = iface_state(&node, "meta0").unwrap();
    assert_eq!(br.addrs, vec!["10.244.1.1/24"]);
    assert_eq!(read_in_ns_proc(&node, "net.ipv4.ip_forward"), "1");
    // CHECK, STATUS.
    invoke(
        &node,
        "CHECK",
        "v-a",
        &c.pod_path(p0),
        "eth0",
        &with_prev(&conf, &res),
    )
    .ok();
    let r = invoke(&node, "CHECK", "v-a", &c.pod_path(p0), "eth0", &conf);
    assert_eq!(r.err_code(), 7);
    invoke(&node, "STATUS", "", "", "", &conf).ok();
    // CHECK notices a missing route.
    let mut nl = meta_netlink::Netlink::open(Some(c.pods[p0].netns())).unwrap();
    use meta_netlink::NetlinkOps;
    nl.route_del(&meta_netlink::RouteSpec::new(
        "10.244.0.0/16".parse().unwrap(),
    ))
    .unwrap();
    let r = invoke(
        &node,
        "CHECK",
        "v-a",
        &c.pod_path(p0),
        "eth0",
        &with_prev(&conf, &res),
    );
    assert!(r.err_msg().contains("10.244.0.0/16"), "{}", r.stdout);
    // DEL with the namespace gone and the subnet file gone.
    let gone = c.pod_path(p0);
    drop(nl);
    drop(c.pods.remove(p0));
    std::fs::remove_file(c.nodes[0].subnet_file()).unwrap();
    invoke(&node, "DEL", "v-a", &gone, "eth0", &conf).ok();
    invoke(&node, "DEL", "v-a", "", "eth0", &conf).ok();
    assert!(ip_files(&c.nodes[0].dir, "cluster").is_empty());
    assert!(masq_tags(&c.nodes[0]).is_empty());
}

#[test]
fn primary_without_subnet_file() {
    let mut c = Cluster::new(1, 1500);
    let conf = primary_conf(&c.nodes[0]);
    let node = c.nodes[0].ns.netns().clone();
    let r = invoke(&node, "STATUS", "", "", "", &conf);
    assert_eq!(r.err_code(), 50, "{}", r.stdout);
    assert!(r.err_msg().contains("subnet.env"), "{}", r.err_msg());
    let p = c.new_pod();
    let r = invoke(&node, "ADD", "nf", &c.pod_path(p), "eth0", &conf);
    assert_eq!(r.err_code(), 11, "{}", r.stdout);
    assert!(iface_state(c.pods[p].netns(), "eth0").is_none());
    invoke(&node, "DEL", "nf", &c.pod_path(p), "eth0", &conf).ok();
    // Everything configured inline: no file needed.
    let mut inline = conf.clone();
    inline["subnet"] = "10.244.1.0/24".into();
    inline["clusterCIDR"] = CLUSTER.into();
    inline["mtu"] = 1400.into();
    inline["ipMasq"] = false.into();
    let r = invoke(&node, "ADD", "nf", &c.pod_path(p), "eth0", &inline).ok();
    assert_eq!(r.value()["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(iface_state(c.pods[p].netns(), "eth0").unwrap().mtu, 1400);
    assert!(masq_tags(&c.nodes[0]).is_empty());
    invoke(&node, "DEL", "nf", &c.pod_path(p), "eth0", &inline).ok();
}

#[test]
fn secondary_every_verb() {
    let mut c = Cluster::new(1, 1500);
    let n = &c.nodes[0];
    let conf = secondary_conf(
        n,
        "sec",
        4242,
        &["192.168.77.9".parse().unwrap()],
        "10.98.0.0/24",
        10,
    );
    let node = n.ns.netns().clone();
    let p = c.new_pod();
    let res = invoke(&node, "ADD", "s-a", &c.pod_path(p), "net1", &conf)
        .ok()
        .value()
        .clone();
    assert_eq!(res["interfaces"][0]["name"], "mbr4242");
    assert_eq!(res["ips"][0]["address"], "10.98.0.10/24");
    assert_eq!(iface_state(c.pods[p].netns(), "net1").unwrap().mtu, 1450);
    let owner: Value =
        serde_json::from_str(&read(&c.nodes[0].dir.join("state/vni-4242.json"))).unwrap();
    assert_eq!(owner["network"], "sec");
    invoke(
        &node,
        "CHECK",
        "s-a",
        &c.pod_path(p),
        "net1",
        &with_prev(&conf, &res),
    )
    .ok();
    invoke(&node, "STATUS", "", "", "", &conf).ok();
    let mut g = conf.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "s-a", "ifname": "net1"}]);
    invoke(&node, "GC", "", "", "", &g).ok();
    assert_eq!(ip_files(&c.nodes[0].dir, "sec").len(), 1);
    for _ in 0..3 {
        invoke(&node, "DEL", "s-a", &c.pod_path(p), "net1", &conf).ok();
    }
    assert!(ip_files(&c.nodes[0].dir, "sec").is_empty());
    assert!(iface_state(c.pods[p].netns(), "net1").is_none());
    // The segment stays for the next pod.
    assert!(iface_state(&node, "mvx4242").is_some());
    // L2 only (no ipam): the interface is up without addresses.
    let mut l2 = conf.clone();
    l2.as_object_mut().unwrap().remove("ipam");
    let r = invoke(&node, "ADD", "s-b", &c.pod_path(p), "net1", &l2).ok();
    assert!(r.value().get("ips").is_none());
    let st = iface_state(c.pods[p].netns(), "net1").unwrap();
    assert!(st.up && st.addrs.is_empty());
    invoke(&node, "DEL", "s-b", &c.pod_path(p), "net1", &l2).ok();
}

#[test]
fn concurrent_adds_share_one_segment_and_bridge() {
    let mut c = Cluster::new(1, 1500);
    c.overlay_up();
    let pods: Vec<usize> = (0..6).map(|_| c.new_pod()).collect();
    let node = c.nodes[0].ns.netns().clone();
    let sec = secondary_conf(
        &c.nodes[0],
        "par",
        77,
        &[
            "192.168.77.20".parse().unwrap(),
            "192.168.77.21".parse().unwrap(),
        ],
        "10.96.0.0/24",
        10,
    );
    let prim = primary_conf(&c.nodes[0]);
    let paths: Vec<String> = pods.iter().map(|p| c.pod_path(*p)).collect();
    // Fresh node: every ADD races to create meta0, mvx77 and mbr77 and to program peers.
    std::thread::scope(|s| {
        for (i, path) in paths.iter().enumerate() {
            let (node, sec, prim) = (node.clone(), sec.clone(), prim.clone());
            s.spawn(move || {
                let cid = format!("par-{i}");
                invoke(&node, "ADD", &cid, path, "eth0", &prim).ok();
                invoke(&node, "ADD", &cid, path, "net1", &sec).ok();
            });
        }
    });
    let names = link_names(&node);
    for n in ["meta0", "mbr77", "mvx77"] {
        assert_eq!(names.iter().filter(|x| *x == n).count(), 1, "{names:?}");
    }
    let mut nl = c.nodes[0].nl();
    use meta_netlink::NetlinkOps;
    let dev = nl.link_by_name("mvx77").unwrap().unwrap();
    let flood = nl.fdbs(dev.index).unwrap();
    assert_eq!(
        flood.iter().filter(|f| f.mac == [0; 6]).count(),
        2,
        "{flood:?}"
    );
    assert_eq!(ip_files(&c.nodes[0].dir, "par").len(), 6);
    assert_eq!(ip_files(&c.nodes[0].dir, "cluster").len(), 6);
    // Pods on the same node reach each other on both networks.
    let ip = |p: usize, ifname: &str| -> std::net::IpAddr {
        let st = iface_state(c.pods[p].netns(), ifname).unwrap();
        st.addrs[0].split('/').next().unwrap().parse().unwrap()
    };
    assert_reaches(&c.pods[pods[0]], ip(pods[5], "eth0"), &[]);
    assert_reaches(&c.pods[pods[0]], ip(pods[5], "net1"), &[]);
}
