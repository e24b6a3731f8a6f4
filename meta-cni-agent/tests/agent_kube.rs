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

/// The agent's answer to `op` on node `n`'s socket.
fn ask(n: &NodeNs, op: meta_crd::agent_api::Op) -> meta_crd::agent_api::Response {
    use meta_crd::agent_api::{Client, Request};
    Client::connect(&n.agent_socket(), Duration::from_secs(5))
        .and_then(|mut c| c.ask(&Request::new(op)))
        .unwrap_or_else(|e| panic!("{}: {e}", n.agent_socket().display()))
}

fn nad_op(ns: &str, name: &str) -> meta_crd::agent_api::Op {
    meta_crd::agent_api::Op::Nad {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn pod_op(ns: &str, name: &str, uid: Option<&str>) -> meta_crd::agent_api::Op {
    meta_crd::agent_api::Op::Pod {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.map(str::to_string),
    }
}

#[test]
fn agent_serves_nads_and_its_nodes_pods_on_the_socket() {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{DeleteParams, PostParams};
    use meta_crd::NetworkAttachmentDefinition;
    use meta_crd::agent_api::ErrorKind;
    use serde_json::json;
    const NS: &str = "sock";

    let api = ApiFixture::start();
    api.rt.block_on(apply_nad_crd(&api.admin));
    let c = Cluster::new(1);
    let n = &c.nodes[0];
    api.create_node(&node_object(&n.name, Some(&n.subnet.to_string()), &[]));
    let _fwd = Forwarder::start(n.ns.netns(), api.addr, api.addr);
    let pp = PostParams::default();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    api.rt
        .block_on(kube::Api::<Namespace>::all(api.admin.clone()).create(&pp, &ns))
        .expect("namespace");
    let nads: kube::Api<NetworkAttachmentDefinition> = kube::Api::namespaced(api.admin.clone(), NS);
    let nad = |name: &str| -> NetworkAttachmentDefinition {
        serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"config": format!(r#"{{"cniVersion":"1.0.0","name":"{name}","type":"bridge","bridge":"br-{name}"}}"#)}
        }))
        .unwrap()
    };
    api.rt
        .block_on(nads.create(&pp, &nad("blue")))
        .expect("create NAD blue");
    let pods: kube::Api<Pod> = kube::Api::namespaced(api.admin.clone(), NS);
    let pod = |name: &str, node: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS,
                         "annotations": {meta_crd::NETWORKS_ANNOTATION: "blue"}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "localhost/x:1"}]}
        }))
        .unwrap()
    };
    let web = api
        .rt
        .block_on(pods.create(&pp, &pod("web", &n.name)))
        .expect("create pod web");
    let web_uid = web.metadata.uid.clone().expect("uid");
    api.rt
        .block_on(pods.create(&pp, &pod("elsewhere", "node-x")))
        .expect("create pod elsewhere");

    let agent = Agent::start(n.ns.netns(), &kube_env(&api, n));
    // Both caches synced; only this node's pod is held.
    let st = wait_for(
        T,
        || format!("caches not synced; log:\n{}", agent.log()),
        || {
            if !n.agent_socket().exists() {
                return None;
            }
            let st = ask(n, meta_crd::agent_api::Op::Status).status?;
            (st.nads.synced && st.pods.synced).then_some(st)
        },
    );
    assert_eq!(st.node, n.name);
    assert_eq!((st.nads.count, st.pods.count), (1, 1), "{st:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(n.agent_socket())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode");
    }

    let r = ask(n, nad_op(NS, "blue"));
    assert!(r.ok, "{r:?}");
    assert_eq!(r.nad.unwrap().spec.config, nad("blue").spec.config);
    let r = ask(n, pod_op(NS, "web", Some(&web_uid)));
    let p = r.pod.clone().unwrap_or_else(|| panic!("pod web: {r:?}"));
    assert_eq!(p.uid.as_deref(), Some(web_uid.as_str()));
    assert_eq!(p.annotations[meta_crd::NETWORKS_ANNOTATION], "blue");
    let r = ask(n, pod_op(NS, "elsewhere", None));
    assert_eq!(
        r.error,
        Some(ErrorKind::Unknown),
        "another node's pod: {r:?}"
    );
    let r = ask(n, nad_op(NS, "green"));
    assert_eq!(r.error, Some(ErrorKind::Unknown), "{r:?}");

    // Created: visible; deleted: gone.
    api.rt
        .block_on(nads.create(&pp, &nad("green")))
        .expect("create NAD green");
    wait_for(
        T,
        || "NAD green never served".into(),
        || ask(n, nad_op(NS, "green")).ok.then_some(()),
    );
    api.rt
        .block_on(nads.delete("blue", &DeleteParams::default()))
        .expect("delete NAD blue");
    wait_for(
        T,
        || "NAD blue still served".into(),
        || (ask(n, nad_op(NS, "blue")).error == Some(ErrorKind::Unknown)).then_some(()),
    );
    // A pod's annotation change is served.
    api.rt
        .block_on(pods.patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {meta_crd::NETWORKS_ANNOTATION: "green"}}}),
            ),
        ))
        .expect("patch pod web");
    wait_for(
        T,
        || "the pod's new annotation never served".into(),
        || {
            let p = ask(n, pod_op(NS, "web", None)).pod?;
            (p.annotations[meta_crd::NETWORKS_ANNOTATION] == "green").then_some(())
        },
    );
    let st = ask(n, meta_crd::agent_api::Op::Status).status.unwrap();
    assert_eq!((st.nads.count, st.pods.count), (1, 1), "{st:?}");
    let mut agent = agent;
    assert_eq!(agent.terminate(), 0, "{}", agent.log());
    assert!(!n.agent_socket().exists(), "socket left behind");
}

/// Issue 12's memory bound: the agent with 10,000 NADs cluster-wide and 500 pods on its
/// node (plus 100 pods elsewhere, which its field selector must leave out) synced stays
/// below 64 MiB peak RSS, half the DaemonSet's 128 MiB limit (measured 2026-12-03, debug
/// build: 37.9 MiB).
#[test]
fn agent_caches_stay_small_with_10000_nads_and_500_pods() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::PostParams;
    use meta_crd::NetworkAttachmentDefinition;
    use serde_json::json;
    const RSS_BOUND_MIB: u64 = 64;
    const NADS: usize = 10_000;
    const PODS: usize = 500;

    let api = ApiFixture::start();
    api.rt.block_on(apply_nad_crd(&api.admin));
    let c = Cluster::new(1);
    let n = &c.nodes[0];
    api.create_node(&node_object(&n.name, Some(&n.subnet.to_string()), &[]));
    let _fwd = Forwarder::start(n.ns.netns(), api.addr, api.addr);
    let pp = PostParams::default();
    let t = std::time::Instant::now();
    api.rt.block_on(async {
        for ns in ["mem-a", "mem-b"] {
            let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
            kube::Api::<Namespace>::all(api.admin.clone())
                .create(&pp, &o)
                .await
                .expect("namespace");
        }
        let nads = (0..NADS).map(|i| {
            let ns = if i % 2 == 0 { "mem-a" } else { "mem-b" };
            let api: kube::Api<NetworkAttachmentDefinition> =
                kube::Api::namespaced(api.admin.clone(), ns);
            let name = format!("net-{i}");
            let cfg = json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan",
                "master": "eth1", "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": format!("10.{}.{}.0/24", 100 + i / 256 % 100, i % 256)}});
            let nad: NetworkAttachmentDefinition = serde_json::from_value(json!({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"config": cfg.to_string()}
            }))
            .unwrap();
            let pp = pp.clone();
            async move { api.create(&pp, &nad).await.map(|_| ()) }
        });
        let pods = (0..PODS + 100).map(|i| {
            let api: kube::Api<Pod> = kube::Api::namespaced(api.admin.clone(), "mem-a");
            let node = if i < PODS { n.name.clone() } else { "node-x".into() };
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("pod-{i}"), "namespace": "mem-a",
                             "labels": {"app": "mem"},
                             "annotations": {meta_crd::NETWORKS_ANNOTATION: format!("net-{}, net-{}", 2 * i, 2 * i + 2)}},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "localhost/x:1",
                         "env": [{"name": "PADDING", "value": "x".repeat(2000)}]}]}
            }))
            .unwrap();
            let pp = pp.clone();
            async move { api.create(&pp, &pod).await.map(|_| ()) }
        });
        let mut s = futures::stream::iter(nads.map(futures::future::Either::Left).chain(pods.map(futures::future::Either::Right)))
            .buffer_unordered(16);
        while let Some(r) = s.next().await {
            r.expect("create");
        }
    });
    eprintln!(
        "created {NADS} NADs and {} pods in {:?}",
        PODS + 100,
        t.elapsed()
    );

    let agent = Agent::start(n.ns.netns(), &kube_env(&api, n));
    let st = wait_for(
        Duration::from_secs(120),
        || format!("caches not synced; log:\n{}", agent.log()),
        || {
            if !n.agent_socket().exists() {
                return None;
            }
            let st = ask(n, meta_crd::agent_api::Op::Status).status?;
            (st.nads.synced && st.pods.synced).then_some(st)
        },
    );
    assert_eq!((st.nads.count, st.pods.count), (NADS, PODS), "{st:?}");
    // Served from the cache, both ends of the ranges.
    assert!(ask(n, nad_op("mem-b", &format!("net-{}", NADS - 1))).ok);
    assert!(ask(n, pod_op("mem-a", "pod-0", None)).ok);
    assert_eq!(
        ask(n, pod_op("mem-a", &format!("pod-{PODS}"), None)).error,
        Some(meta_crd::agent_api::ErrorKind::Unknown),
        "another node's pod"
    );
    let hwm = agent.vm_hwm_kib();
    eprintln!(
        "agent peak RSS (VmHWM) with {NADS} NADs and {PODS} pods synced: {:.1} MiB",
        hwm as f64 / 1024.0
    );
    assert!(hwm > 0, "no VmHWM read");
    assert!(
        hwm < RSS_BOUND_MIB * 1024,
        "agent peak RSS {hwm} KiB, bound {RSS_BOUND_MIB} MiB"
    );
}
