//! The cluster IPAM's side of `meta-cni-agent` against the real kube-apiserver (v1.20.2 +
//! etcd), with the RBAC of `deploy/rbac.yaml` (the agent's own ServiceAccount token):
//! the real agent binary in a node namespace writes the node's meta-ipam journal to the
//! block objects, frees the allocations of pods and nodes that are gone (never a young
//! one, never a live pod's), deletes the emptied blocks of gone nodes, runs again when a
//! pod is deleted, and shows the pools on `/metrics`.

mod agent_support;
use agent_support::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use meta_ipam_cluster::crd::{
    Allocation, IpBlock, IpBlockSpec, IpPool, IpPoolSpec, NODE_LABEL, POOL_LABEL,
};
use meta_ipam_cluster::{ClusterIpamConfig, Owner};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const POOL: &str = "10-77-0-0-24";
const METRICS: &str = "127.0.0.1:9391";

fn apply_ipam_crds(api: &ApiFixture) {
    let crds: Api<CustomResourceDefinition> = Api::all(api.admin.clone());
    for crd in meta_ipam_cluster::crd::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.rt
            .block_on(crds.create(&PostParams::default(), &crd))
            .expect("create CRD");
        wait_for(
            T,
            || format!("CRD {name} established"),
            || {
                let c = api.rt.block_on(crds.get(&name)).ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        );
    }
}

fn create_pod(api: &ApiFixture, name: &str, node: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "localhost/app:1"}]}
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(api.admin.clone(), "default");
    api.rt
        .block_on(pods.create(&PostParams::default(), &pod))
        .expect("create pod")
        .metadata
        .uid
        .expect("uid")
}

fn delete_pod(api: &ApiFixture, name: &str) {
    let pods: Api<Pod> = Api::namespaced(api.admin.clone(), "default");
    // No kubelet: grace period 0 removes the object at once.
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    api.rt.block_on(pods.delete(name, &dp)).expect("delete pod");
}

fn alloc(uid: &str, node: &str, created: u64) -> Allocation {
    Allocation {
        owner: format!("{uid}/net1"),
        namespace: "default".into(),
        pod: format!("pod-{uid}"),
        pod_uid: uid.into(),
        container_id: format!("cid-{uid}"),
        node: node.into(),
        created,
    }
}

/// Creates block `i` of the pool for `node` with `allocations` (offset → allocation).
fn create_block(api: &ApiFixture, i: u32, node: &str, allocations: &[(u32, Allocation)]) {
    let b = IpBlock {
        metadata: ObjectMeta {
            name: Some(format!("{POOL}-b{i}")),
            labels: Some(BTreeMap::from([
                (POOL_LABEL.to_string(), POOL.to_string()),
                (NODE_LABEL.to_string(), node.to_string()),
            ])),
            ..Default::default()
        },
        spec: IpBlockSpec {
            pool: POOL.into(),
            cidr: format!("10.77.0.{}/28", i * 16),
            node: node.into(),
            lend_from: 12,
            empty_since: None,
            allocations: allocations
                .iter()
                .map(|(o, a)| (o.to_string(), a.clone()))
                .collect(),
        },
    };
    api.rt
        .block_on(Api::<IpBlock>::all(api.admin.clone()).create(&PostParams::default(), &b))
        .expect("create IpBlock");
}

/// Every block on the server: name → (node, owners by offset).
fn blocks(api: &ApiFixture) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    api.rt
        .block_on(Api::<IpBlock>::all(api.admin.clone()).list(&ListParams::default()))
        .expect("list IpBlocks")
        .items
        .into_iter()
        .map(|b| {
            let owners = b
                .spec
                .allocations
                .iter()
                .map(|(o, a)| (o.clone(), a.owner.clone()))
                .collect();
            (b.metadata.name.unwrap(), (b.spec.node, owners))
        })
        .collect()
}

/// The `meta-ipam` configuration of network `lan` on node0 with data dir `dir`.
fn conf(kubeconfig: &Path, dir: &Path) -> ClusterIpamConfig {
    let nc = cni_core::NetConf::from_map(
        json!({"cniVersion": "1.0.0", "name": "lan", "type": "macvlan",
               "ipam": {"type": "meta-ipam", "range": "10.77.0.0/24",
                        "kubeconfig": kubeconfig, "dataDir": dir, "nodeName": "node0"}})
        .as_object()
        .unwrap()
        .clone(),
    )
    .unwrap();
    ClusterIpamConfig::from_conf(&nc, &cni_core::CniArgs::parse("").unwrap()).unwrap()
}

fn owner(uid: &str) -> Owner {
    Owner {
        key: format!("{uid}/net1"),
        namespace: "default".into(),
        pod: format!("pod-{uid}"),
        pod_uid: uid.into(),
        container_id: format!("cid-{uid}"),
    }
}

/// A copy of `kubeconfig` whose server is a closed port: the API server "unreachable".
fn unreachable_kubeconfig(kubeconfig: &Path, url: &str, out: &Path) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    assert!(text.contains(url), "{text}");
    std::fs::write(out, text.replace(url, &format!("https://{closed}"))).unwrap();
}

fn pending_ops(dir: &Path) -> usize {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    v["pending"].as_array().map_or(0, Vec::len)
}

fn scrape(n: &NodeNs) -> String {
    n.ns.netns()
        .run(|| {
            let mut s = std::net::TcpStream::connect(METRICS).expect("connect to /metrics");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .expect("run in the node namespace")
}

#[test]
fn agent_syncs_the_journal_and_frees_what_gone_pods_and_nodes_held() {
    let api = ApiFixture::start();
    apply_ipam_crds(&api);
    let c = Cluster::new(1);
    let n = &c.nodes[0];
    api.create_node(&node_object(&n.name, Some(&n.subnet.to_string()), &[]));
    let dir = n.dir.join("ipam");
    let admin_kc = api.server.admin_kubeconfig();

    // This node's journal: one ADD online (claims a block), one while the API server is
    // unreachable (journalled only).
    let online = create_pod(&api, "online", "node0");
    let offline = create_pod(&api, "offline", "node0");
    let r = meta_ipam_cluster::add(&conf(&admin_kc, &dir), &owner(&online)).unwrap();
    let dead_kc = n.dir.join("unreachable.kubeconfig");
    unreachable_kubeconfig(&admin_kc, api.server.url(), &dead_kc);
    let r2 = meta_ipam_cluster::add(&conf(&dead_kc, &dir), &owner(&offline)).unwrap();
    assert_eq!(pending_ops(&dir), 1, "the offline ADD is journalled");
    let (own, _) = blocks(&api)
        .into_iter()
        .find(|(_, (node, _))| node == "node0")
        .map(|(name, (_, o))| (name, o))
        .expect("node0's block");
    eprintln!("online {:?}, offline {:?} in {own}", r.ips, r2.ips);
    let used: BTreeSet<u32> = blocks(&api)
        .keys()
        .filter_map(|b| b.rsplit_once("-b")?.1.parse().ok())
        .collect();
    let [a, b, g] = {
        let mut free = (0..16).filter(|i| !used.contains(i));
        [
            free.next().unwrap(),
            free.next().unwrap(),
            free.next().unwrap(),
        ]
    };

    // Allocations the reconciliation must judge. node0: a live pod (kept), a gone pod
    // (freed), a gone pod allocated just now (kept: too young). "ghost" (no Node): a gone
    // pod (freed, then its empty block deleted); "ghost2": a live pod (kept, block kept).
    let live = create_pod(&api, "live", "node0");
    let ghost_live = create_pod(&api, "ghost-live", "ghost2");
    let now = meta_ipam_cluster::alloc::now();
    create_block(
        &api,
        a,
        "node0",
        &[
            (1, alloc(&live, "node0", 1)),
            (2, alloc("gone-uid-1", "node0", 1)),
            (3, alloc("gone-uid-young", "node0", now)),
        ],
    );
    create_block(&api, b, "ghost", &[(1, alloc("gone-uid-2", "ghost", 1))]);
    create_block(&api, g, "ghost2", &[(1, alloc(&ghost_live, "ghost2", 1))]);
    // A pool object for the usage metrics (the online ADD made it).
    let pool: IpPool = api
        .rt
        .block_on(Api::<IpPool>::all(api.admin.clone()).get(POOL))
        .expect("IpPool");
    assert_eq!(
        pool.spec,
        IpPoolSpec {
            network: String::new(),
            cidr: "10.77.0.0/24".into(),
            block_prefix: 28
        }
    );

    // The agent: a first pass at start, then only after pod deletions (period 1 h).
    let _fwd = Forwarder::start(n.ns.netns(), api.addr, api.addr);
    let mut env = base_env(n);
    env.extend(
        [
            ("KUBECONFIG", api.kubeconfig.display().to_string()),
            ("META_CNI_AGENT_IPAM_DATA_DIR", dir.display().to_string()),
            ("META_CNI_AGENT_IPAM_RECONCILE_INTERVAL", "1h".into()),
            ("META_CNI_AGENT_IPAM_MIN_AGE", "120s".into()),
            ("META_CNI_AGENT_METRICS_BIND_ADDRESS", METRICS.into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let agent = Agent::start(n.ns.netns(), &env);
    let name = |i: u32| format!("{POOL}-b{i}");
    let want_first = |bl: &BTreeMap<String, (String, BTreeMap<String, String>)>| {
        let own_owners: BTreeSet<&String> = bl.get(&own)?.1.values().collect();
        let a_offsets: Vec<&String> = bl.get(&name(a))?.1.keys().collect();
        (own_owners == BTreeSet::from([&format!("{online}/net1"), &format!("{offline}/net1")])
            && a_offsets == ["1", "3"]
            && !bl.contains_key(&name(b))
            && bl.get(&name(g))?.1.len() == 1)
            .then_some(())
    };
    wait_for(
        T,
        || format!("blocks {:#?}\nagent log:\n{}", blocks(&api), agent.log()),
        || want_first(&blocks(&api)),
    );
    assert_eq!(pending_ops(&dir), 0, "the journal is written");
    agent.wait_log("meta-ipam reconciled", 1, T);

    // What /metrics shows once the pass is recorded.
    let m = wait_for(
        T,
        || format!("ipam gauges on /metrics:\n{}", scrape(n)),
        || {
            let m = scrape(n);
            m.contains(&format!("meta_cni_ipam_pool_blocks{{pool=\"{POOL}\"}} 3"))
                .then_some(m)
        },
    );
    for want in [
        format!("meta_cni_ipam_pool_size_addresses{{pool=\"{POOL}\"}} 256"),
        // own block: online + offline; block a: live + young; block g: ghost-live
        format!("meta_cni_ipam_pool_allocated_addresses{{pool=\"{POOL}\"}} 5"),
        format!("meta_cni_ipam_node_blocks{{pool=\"{POOL}\"}} 2"),
        format!("meta_cni_ipam_node_allocated_addresses{{pool=\"{POOL}\"}} 4"),
        "meta_cni_ipam_journal_pending 0".to_string(),
        "meta_cni_agent_ipam_reconcile_freed_total 2".to_string(),
        "meta_cni_agent_ipam_reconcile_blocks_deleted_total 1".to_string(),
        "meta_cni_agent_ipam_reconcile_errors_total 0".to_string(),
    ] {
        assert!(m.contains(&want), "missing {want} in\n{m}");
    }

    // A pod deletion runs a pass (the period is an hour): the live pod's address is freed.
    delete_pod(&api, "live");
    let t0 = Instant::now();
    wait_for(
        T,
        || format!("blocks {:#?}\nagent log:\n{}", blocks(&api), agent.log()),
        || {
            let bl = blocks(&api);
            (bl.get(&name(a))?.1.keys().collect::<Vec<_>>() == ["3"]).then_some(())
        },
    );
    eprintln!("freed {:?} after the pod's deletion", t0.elapsed());
    // Nothing else changed: the young allocation, the other node's live pod, this node's
    // block with the two pods that exist.
    let bl = blocks(&api);
    assert_eq!(bl.len(), 3, "{bl:#?}");
    assert_eq!(bl[&own].1.len(), 2, "{bl:#?}");
    assert_eq!(bl[&name(g)].1.len(), 1, "{bl:#?}");
    agent.assert_running();
}
