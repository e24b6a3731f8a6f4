//! `meta-cni-agent` in local mode: the nodes come from a static JSON file, re-read when it
//! changes. Two node namespaces on one underlay, the real binary in each, pods made by the
//! `meta-vxlan` binary. Needs root (namespaces); see `agent_support` for the topology.

mod agent_support;
use agent_support::*;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn local_env(n: &NodeNs, file: &Path) -> Vec<(String, String)> {
    let mut env = base_env(n);
    env.push(("META_CNI_AGENT_MODE".into(), "local".into()));
    env.push((
        "META_CNI_AGENT_NODES_FILE".into(),
        file.display().to_string(),
    ));
    env
}

/// Replaces the file atomically.
fn write(file: &Path, v: &Value) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn entry(n: &NodeNs) -> Value {
    json!({"name": n.name, "podSubnet": n.subnet, "underlayIP": n.ip})
}

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
fn agent_programs_nodes_from_a_static_file() {
    let mut c = Cluster::new(2);
    let file = c.dir.path().join("nodes.json");
    let mut agents: Vec<Agent> = c
        .nodes
        .iter()
        .map(|n| Agent::start(n.ns.netns(), &local_env(n, &file)))
        .collect();
    // No file yet: the agents wait and make nothing.
    for a in &agents {
        a.wait_log("does not exist yet", 1, T);
    }
    assert!(!c.nodes[0].subnet_file().exists());

    // Two real nodes and a fake remote without vtepMAC (derived from its underlay IP).
    let fake = |n: u8| {
        json!({"name": format!("fake{n}"), "podSubnet": format!("10.244.{n}.0/24"),
                              "underlayIP": format!("{UNDERLAY}.{n}")})
    };
    write(
        &file,
        &json!([entry(&c.nodes[0]), entry(&c.nodes[1]), fake(50)]),
    );
    let f50 = (
        "10.244.50.0/24".parse().unwrap(),
        format!("{UNDERLAY}.50").parse().unwrap(),
        "02:6d:c0:a8:58:32".to_string(),
    );
    let nodes: Vec<_> = c
        .nodes
        .iter()
        .map(|x| (x.subnet, x.ip, x.vtep_mac()))
        .collect();
    let n = |i: usize| nodes[i].clone();
    wait_entries(&c, 0, &[n(1), f50.clone()]);
    wait_entries(&c, 1, &[n(0), f50.clone()]);
    for node in &c.nodes {
        let f = meta_overlay::read_subnet_file(&node.subnet_file()).unwrap();
        assert_eq!((f.subnet, f.mtu), (node.subnet, 1450));
        assert_eq!(node_masq_rules(&node.ns).len(), 1);
    }
    let (p0, ip0) = c.primary_pod(0, "l-a");
    let (p1, ip1) = c.primary_pod(1, "l-b");
    assert_reaches(&c.pods[p0], ip1, &[]);
    assert_reaches(&c.pods[p1], ip0, &[]);

    // The file changes: fake50 goes, fake60 (explicit MAC) comes.
    let mut f60 = fake(60);
    f60["vtepMAC"] = json!("02:00:00:00:00:60");
    write(&file, &json!([entry(&c.nodes[0]), entry(&c.nodes[1]), f60]));
    let f60e = (
        "10.244.60.0/24".parse().unwrap(),
        format!("{UNDERLAY}.60").parse().unwrap(),
        "02:00:00:00:00:60".to_string(),
    );
    wait_entries(&c, 0, &[n(1), f60e.clone()]);
    wait_entries(&c, 1, &[n(0), f60e.clone()]);

    // A broken file is reported and ignored: the last good list stays in force.
    std::fs::write(&file, b"[{\"name\": ").unwrap();
    for a in &agents {
        a.wait_log("keeping the last node list", 1, T);
    }
    assert_eq!(
        entries(c.nodes[0].ns.netns()),
        expected_entries(&[n(1), f60e.clone()])
    );
    write(&file, &json!([entry(&c.nodes[0]), entry(&c.nodes[1])]));
    wait_entries(&c, 0, &[n(1)]);
    wait_entries(&c, 1, &[n(0)]);
    assert_reaches(&c.pods[p0], ip1, &[]);

    // SIGINT: exit 0, state kept; a restart changes nothing.
    let before: Vec<Vec<String>> = c.nodes.iter().map(|n| snapshot(&n.ns)).collect();
    for a in agents.iter_mut() {
        assert_eq!(
            a.stop_with(nix::sys::signal::Signal::SIGINT),
            0,
            "{}",
            a.log()
        );
        assert!(a.log().contains("SIGINT: shutting down"), "{}", a.log());
    }
    let agents: Vec<Agent> = c
        .nodes
        .iter()
        .map(|n| Agent::start(n.ns.netns(), &local_env(n, &file)))
        .collect();
    for a in &agents {
        a.wait_log("reconciled: nothing to change", 1, T);
        assert_eq!(a.count("peers programmed"), 0, "{}", a.log());
    }
    let after: Vec<Vec<String>> = c.nodes.iter().map(|n| snapshot(&n.ns)).collect();
    assert_eq!(before, after);
    drop(agents);

    // Masquerade off: the node rule goes, nothing else changes.
    let mut env = local_env(&c.nodes[1], &file);
    env.push(("META_CNI_AGENT_MASQUERADE".into(), "false".into()));
    let a = Agent::start(c.nodes[1].ns.netns(), &env);
    a.wait_log("node masquerade removed", 1, T);
    a.wait_log("reconciled: nothing to change", 1, T);
    assert!(node_masq_rules(&c.nodes[1].ns).is_empty());
    assert_eq!(node_masq_rules(&c.nodes[0].ns).len(), 1);
    assert_reaches(&c.pods[p1], ip0, &[]);
}

#[test]
fn bad_configuration_exits_2_with_a_message() {
    let c = Cluster::new(1);
    let mut env = base_env(&c.nodes[0]);
    env.retain(|(k, _)| k != "META_CNI_AGENT_CLUSTER_CIDR");
    let mut a = Agent::start(c.nodes[0].ns.netns(), &env);
    let code = a.stop_with(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(code, 2, "{}", a.log());
    assert!(a.log().contains("cluster CIDR is required"), "{}", a.log());
    // --help documents every variable (run directly: it touches nothing).
    let out = std::process::Command::new(agent_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for v in [
        "NODE_NAME",
        "KUBECONFIG",
        "META_CNI_AGENT_NODES_FILE",
        "META_CNI_AGENT_CLUSTER_CIDR",
        "META_CNI_AGENT_VNI",
        "META_CNI_AGENT_PORT",
        "META_CNI_AGENT_UNDERLAY_IFACE",
        "META_CNI_AGENT_UNDERLAY_IP",
        "META_CNI_AGENT_SUBNET_FILE",
        "META_CNI_AGENT_MASQUERADE",
        "META_CNI_AGENT_RESYNC",
    ] {
        assert!(help.contains(v), "{v} missing from --help:\n{help}");
    }
}

/// A secondary segment pod through the `meta-vxlan` binary on node `n`.
fn segment_pod(
    c: &mut Cluster,
    n: usize,
    cid: &str,
    vni: u32,
    peers: Option<Vec<String>>,
    ip: &str,
) -> usize {
    let p = c.new_pod();
    let node = &c.nodes[n];
    let mut conf = json!({"cniVersion": "1.1.0", "name": format!("seg{vni}"), "type": "meta-vxlan", "vni": vni,
        "stateDir": node.dir.join("vxlan-state"),
        "ipam": {"type": "static", "addresses": [{"address": ip}]}});
    if let Some(peers) = peers {
        conf["peers"] = json!(peers);
    }
    let path = c.pods[p].path().display().to_string();
    let inv = meta_tests::Invocation {
        verb: "ADD",
        container_id: cid,
        netns: &path,
        ifname: "net1",
        path: meta_tests::REFERENCE_DIR,
        ..Default::default()
    };
    meta_tests::run_in(
        node.ns.netns(),
        &meta_vxlan_bin(),
        &inv,
        conf.to_string().as_bytes(),
    )
    .ok();
    p
}

/// Flood-list entries (all-zero MAC) of a segment device.
fn flood(n: &NodeNs, dev: &str) -> Vec<String> {
    use meta_netlink::NetlinkOps;
    let mut nl = n.nl();
    let Some(l) = nl.link_by_name(dev).unwrap() else {
        return vec![];
    };
    let mut v: Vec<String> = nl
        .fdbs(l.index)
        .unwrap()
        .into_iter()
        .filter(|f| f.mac == [0; 6])
        .filter_map(|f| f.dst.map(|d| d.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn agent_programs_peers_of_segments_without_static_peers() {
    let mut c = Cluster::new(2);
    let file = c.dir.path().join("nodes.json");
    write(&file, &json!([entry(&c.nodes[0]), entry(&c.nodes[1])]));
    let envs: Vec<_> = c
        .nodes
        .iter()
        .map(|n| {
            let mut e = local_env(n, &file);
            e.push((
                "META_CNI_AGENT_SEGMENT_STATE_DIR".into(),
                n.dir.join("vxlan-state").display().to_string(),
            ));
            e
        })
        .collect();
    let _agents: Vec<Agent> = c
        .nodes
        .iter()
        .zip(&envs)
        .map(|(n, e)| Agent::start(n.ns.netns(), e))
        .collect();
    for n in &c.nodes {
        wait_for(
            T,
            || format!("{}: no subnet file", n.name),
            || n.subnet_file().exists().then_some(()),
        );
    }
    // VNI 300 without peers on both nodes: the agents give each the other node.
    let a = segment_pod(&mut c, 0, "s-a", 300, None, "10.30.0.1/24");
    let b = segment_pod(&mut c, 1, "s-b", 300, None, "10.30.0.2/24");
    let (ip0, ip1) = (c.nodes[0].ip.to_string(), c.nodes[1].ip.to_string());
    wait_for(
        T,
        || format!("node0 flood list {:?}", flood(&c.nodes[0], "mvx300")),
        || (flood(&c.nodes[0], "mvx300") == vec![ip1.clone()]).then_some(()),
    );
    wait_for(
        T,
        || format!("node1 flood list {:?}", flood(&c.nodes[1], "mvx300")),
        || (flood(&c.nodes[1], "mvx300") == vec![ip0.clone()]).then_some(()),
    );
    assert_reaches(&c.pods[a], "10.30.0.2".parse().unwrap(), &[]);
    assert_reaches(&c.pods[b], "10.30.0.1".parse().unwrap(), &[]);
    // VNI 301 with a static peer list: the agent leaves it exactly as configured, even
    // across its periodic runs (a fake peer .99 that is no node stays).
    let fake = format!("{UNDERLAY}.99");
    segment_pod(
        &mut c,
        0,
        "s-c",
        301,
        Some(vec![fake.clone()]),
        "10.31.0.1/24",
    );
    write(&file, &json!([entry(&c.nodes[0]), entry(&c.nodes[1])])); // nudge a run
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(flood(&c.nodes[0], "mvx301"), vec![fake]);
}
