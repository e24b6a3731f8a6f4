//! `meta-cni-agent` in kube mode against a real kube-apiserver (v1.20.2 + etcd), with the
//! RBAC of `deploy/rbac.yaml` and a ServiceAccount token from the TokenRequest API: three
//! node namespaces on one underlay, the real binary in each, pods made by the `meta-vxlan`
//! binary from the subnet file the agent writes. Needs root (namespaces); see
//! `agent_support` for the topology.

mod agent_support;
use agent_support::*;
use meta_cni_agent::{ANNOTATION_UNDERLAY_IP, ANNOTATION_VTEP_MAC};
use std::net::IpAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn kube_env(api: &ApiFixture, n: &NodeNs) -> Vec<(String, String)> {
    let mut env = base_env(n);
    env.push(("KUBECONFIG".into(), api.kubeconfig.display().to_string()));
    env
}

/// The annotations of Node `name` (empty map when none).
fn annotations(api: &ApiFixture, name: &str) -> std::collections::BTreeMap<String, String> {
    api.node(name).metadata.annotations.unwrap_or_default()
}

/// (subnet, underlay IP, MAC) of every node but `i`, plus `extra`.
fn others(
    c: &Cluster,
    i: usize,
    extra: &[(ipnet::IpNet, IpAddr, String)],
) -> Vec<(ipnet::IpNet, IpAddr, String)> {
    let mut v: Vec<_> = c
        .nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, n)| (n.subnet, n.ip, n.vtep_mac()))
        .collect();
    v.extend(extra.iter().cloned());
    v
}

/// Waits until node `i` holds exactly the entries for `want`.
fn wait_entries(c: &Cluster, i: usize, want: &[(ipnet::IpNet, IpAddr, String)]) {
    let exp = expected_entries(want);
    let ns = c.nodes[i].ns.netns();
    wait_for(
        T,
        || {
            format!(
                "{}: entries {:?}, want {:?}",
                c.nodes[i].name,
                entries(ns),
                exp
            )
        },
        || (entries(ns) == exp).then_some(()),
    );
}

#[test]
fn agent_programs_nodes_from_the_api_server() {
    let api = ApiFixture::start();
    let mut c = Cluster::new(3);
    // node0 and node1 exist with their podCIDR; node2 gets its podCIDR later.
    for n in &c.nodes[..2] {
        api.create_node(&node_object(&n.name, Some(&n.subnet.to_string()), &[]));
    }
    api.create_node(&node_object("node2", None, &[]));
    // node1's API server is unreachable at first (no forwarder yet).
    let mut fwd: Vec<Forwarder> = [0, 2]
        .iter()
        .map(|&i| Forwarder::start(c.nodes[i].ns.netns(), api.addr, api.addr))
        .collect();
    let mut agents: Vec<Agent> = c
        .nodes
        .iter()
        .map(|n| Agent::start(n.ns.netns(), &kube_env(&api, n)))
        .collect();
    agents[1].wait_log("get Node node1:", 1, T);
    assert!(!c.nodes[1].subnet_file().exists());
    fwd.push(Forwarder::start(c.nodes[1].ns.netns(), api.addr, api.addr));

    // node2's agent waits for its podCIDR and has made nothing yet.
    agents[2].wait_log("has no spec.podCIDR yet", 1, T);
    assert!(entries(c.nodes[2].ns.netns()).2.is_empty());
    assert!(!c.nodes[2].subnet_file().exists());
    api.patch_node(
        "node2",
        serde_json::json!({"spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}}),
    );

    // Every agent publishes its VTEP on its Node.
    for n in &c.nodes {
        let a = wait_for(
            T,
            || format!("annotations of {}", n.name),
            || {
                let a = annotations(&api, &n.name);
                a.contains_key(ANNOTATION_UNDERLAY_IP).then_some(a)
            },
        );
        assert_eq!(a[ANNOTATION_VTEP_MAC], n.vtep_mac(), "{}", n.name);
        assert_eq!(a[ANNOTATION_UNDERLAY_IP], n.ip.to_string(), "{}", n.name);
    }
    // Once each (the watch starts after the patch, so its listing already shows it).
    for a in &agents {
        assert_eq!(a.count("VTEP published"), 1, "{}", a.log());
    }
    // Every node programmed for the other two: neighbour, FDB, route.
    for i in 0..3 {
        wait_entries(&c, i, &others(&c, i, &[]));
    }
    let (n, f, r) = entries(c.nodes[0].ns.netns());
    assert_eq!(
        n,
        vec![
            "10.244.2.0 02:6d:c0:a8:58:03".to_string(),
            "10.244.3.0 02:6d:c0:a8:58:04".to_string()
        ]
    );
    assert_eq!(
        f,
        vec![
            "02:6d:c0:a8:58:03 dst 192.168.88.3 permanent=true".to_string(),
            "02:6d:c0:a8:58:04 dst 192.168.88.4 permanent=true".to_string()
        ]
    );
    assert_eq!(
        r,
        vec![
            "10.244.2.0/24 via 10.244.2.0 onlink=true".to_string(),
            "10.244.3.0/24 via 10.244.3.0 onlink=true".to_string()
        ]
    );
    // The subnet file and the node masquerade rule.
    for n in &c.nodes {
        let f = meta_overlay::read_subnet_file(&n.subnet_file()).expect("subnet file");
        assert_eq!(
            (f.subnet, f.cluster_cidr.to_string(), f.mtu),
            (n.subnet, CLUSTER.to_string(), 1450),
            "{}",
            n.name
        );
        assert_eq!(
            node_masq_rules(&n.ns),
            vec![(
                format!("meta-cni:node-masq:{}:{CLUSTER}", n.subnet),
                n.subnet.to_string(),
                CLUSTER.to_string()
            )],
            "{}",
            n.name
        );
    }

    // Pods through the meta-vxlan binary, reading the agent's subnet file.
    let (p0, ip0) = c.primary_pod(0, "pod-a");
    let (p1, ip1) = c.primary_pod(1, "pod-b");
    let (p2, ip2) = c.primary_pod(2, "pod-c");
    assert_eq!(
        [ip0, ip1, ip2].map(|i| i.to_string()),
        ["10.244.1.2", "10.244.2.2", "10.244.3.2"]
    );
    assert_reaches(&c.pods[p0], ip1, &[]);
    assert_reaches(&c.pods[p1], ip2, &[]);
    assert_reaches(&c.pods[p2], ip0, &[]);
    // Leaving the cluster CIDR: only the agent's node rule masquerades (the pods have
    // ipMasq false), and the underlay has no route back to 10.244.0.0/16.
    assert_reaches(&c.pods[p0], format!("{UNDERLAY}.1").parse().unwrap(), &[]);

    // A new Node (a fake remote with a podCIDR and annotations) gets programmed everywhere.
    let fake_subnet: ipnet::IpNet = "10.244.50.0/24".parse().unwrap();
    let fake_ip: IpAddr = format!("{UNDERLAY}.50").parse().unwrap();
    let fake_mac = "02:6d:c0:a8:58:32".to_string();
    api.create_node(&node_object(
        "fake",
        Some("10.244.50.0/24"),
        &[
            (ANNOTATION_VTEP_MAC, fake_mac.clone()),
            (ANNOTATION_UNDERLAY_IP, fake_ip.to_string()),
        ],
    ));
    let fake = [(fake_subnet, fake_ip, fake_mac.clone())];
    for i in 0..3 {
        wait_entries(&c, i, &others(&c, i, &fake));
    }
    // Its VTEP moves: the FDB entry follows.
    let moved_ip: IpAddr = format!("{UNDERLAY}.51").parse().unwrap();
    api.patch_node(
        "fake",
        serde_json::json!({"metadata": {"annotations": {ANNOTATION_UNDERLAY_IP: moved_ip.to_string()}}}),
    );
    let moved = [(fake_subnet, moved_ip, fake_mac.clone())];
    for i in 0..3 {
        wait_entries(&c, i, &others(&c, i, &moved));
    }
    // A Node whose annotation is garbage is not programmed (and the rest stays).
    api.create_node(&node_object(
        "broken",
        Some("10.244.60.0/24"),
        &[
            (ANNOTATION_VTEP_MAC, "not-a-mac".into()),
            (ANNOTATION_UNDERLAY_IP, format!("{UNDERLAY}.60")),
        ],
    ));
    agents[0].wait_log("not programmed: meta-cni.io/vtep-mac", 1, T);
    // Deleted: cleaned up everywhere.
    api.delete_node("fake");
    api.delete_node("broken");
    for i in 0..3 {
        wait_entries(&c, i, &others(&c, i, &[]));
    }
    assert_reaches(&c.pods[p0], ip2, &[]);

    // Someone removes our annotations: the agent puts them back.
    api.patch_node(
        "node1",
        serde_json::json!({"metadata": {"annotations": {ANNOTATION_VTEP_MAC: null, ANNOTATION_UNDERLAY_IP: null}}}),
    );
    wait_for(
        T,
        || "node1 annotations back".into(),
        || {
            annotations(&api, "node1")
                .contains_key(ANNOTATION_VTEP_MAC)
                .then_some(())
        },
    );
    // (Meanwhile the others dropped node1's entries and now have them again.)
    for i in 0..3 {
        wait_entries(&c, i, &others(&c, i, &[]));
    }

    // Kernel drift (a route flushed by hand) is repaired by the next reconciliation,
    // prompted here by a Node event.
    {
        use meta_netlink::NetlinkOps;
        let mut nl = c.nodes[0].nl();
        nl.route_del(&meta_netlink::RouteSpec::new(
            "10.244.2.0/24".parse().unwrap(),
        ))
        .expect("flush a route");
    }
    api.create_node(&node_object("nudge", None, &[]));
    api.patch_node(
        "nudge",
        serde_json::json!({"spec": {"podCIDR": "10.244.70.0/24"}}),
    );
    api.patch_node(
        "nudge",
        serde_json::json!({"metadata": {"annotations": {
            ANNOTATION_VTEP_MAC: "02:6d:c0:a8:58:46", ANNOTATION_UNDERLAY_IP: format!("{UNDERLAY}.70")}}}),
    );
    let nudge = [(
        "10.244.70.0/24".parse().unwrap(),
        format!("{UNDERLAY}.70").parse().unwrap(),
        "02:6d:c0:a8:58:46".to_string(),
    )];
    wait_entries(&c, 0, &others(&c, 0, &nudge));
    api.delete_node("nudge");
    for i in 0..3 {
        wait_entries(&c, i, &others(&c, i, &[]));
    }

    // Graceful shutdown: SIGTERM → exit 0, kernel state, rule and subnet file left in
    // place; pods keep talking while no agent runs.
    let before: Vec<Vec<String>> = c.nodes.iter().map(|n| snapshot(&n.ns)).collect();
    let versions: Vec<Option<String>> = c
        .nodes
        .iter()
        .map(|n| api.node(&n.name).metadata.resource_version)
        .collect();
    for a in agents.iter_mut() {
        assert_eq!(a.terminate(), 0, "exit code; log:\n{}", a.log());
        assert!(a.log().contains("SIGTERM: shutting down"), "{}", a.log());
    }
    let after: Vec<Vec<String>> = c.nodes.iter().map(|n| snapshot(&n.ns)).collect();
    assert_eq!(before, after, "state changed by the shutdown");
    for n in &c.nodes {
        assert!(n.subnet_file().exists());
    }
    assert_reaches(&c.pods[p1], ip0, &[]);

    // Restart: the agents converge without changing anything (kernel, ruleset, subnet
    // file, and the Nodes: no patch, so the same resourceVersion).
    let inodes: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(n.subnet_file()).unwrap().ino()
        })
        .collect();
    let agents: Vec<Agent> = c
        .nodes
        .iter()
        .map(|n| Agent::start(n.ns.netns(), &kube_env(&api, n)))
        .collect();
    for a in &agents {
        a.wait_log("reconciled: nothing to change", 1, T);
        assert_eq!(a.count("peers programmed"), 0, "{}", a.log());
        assert_eq!(a.count("VTEP published"), 0, "{}", a.log());
    }
    let again: Vec<Vec<String>> = c.nodes.iter().map(|n| snapshot(&n.ns)).collect();
    assert_eq!(before, again, "state changed by the restart");
    for (i, n) in c.nodes.iter().enumerate() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(n.subnet_file()).unwrap().ino(),
            inodes[i],
            "subnet file rewritten"
        );
        assert_eq!(api.node(&n.name).metadata.resource_version, versions[i]);
    }

    // A real node leaves the cluster: its entries go on the others; its pod is cut off.
    api.delete_node("node2");
    for i in 0..2 {
        let want: Vec<_> = others(&c, i, &[])
            .into_iter()
            .filter(|(s, _, _)| s.to_string() != "10.244.3.0/24")
            .collect();
        wait_entries(&c, i, &want);
    }
    assert_unreachable(&c.pods[p0], ip2);
    assert_reaches(&c.pods[p0], ip1, &[]);
    for a in &agents {
        a.assert_running();
    }
}
