//! meta-ipam against the real kube-apiserver fixture (v1.20.2 + etcd): "nodes" are
//! allocators with distinct node names and data directories, each with several threads
//! (every call opens its own client and lock, as separate plugin processes would).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use meta_ipam_cluster::crd::{IpBlock, crds};
use meta_ipam_cluster::{ClusterIpamConfig, Error, Owner};
use meta_tests::apiserver::ApiServer;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

struct Fixture {
    api: ApiServer,
    rt: tokio::runtime::Runtime,
    admin: kube::Client,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Fixture {
        let api = ApiServer::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let admin = rt.block_on(meta_tests::kube::client_for(&api.admin_kubeconfig()));
        rt.block_on(apply_crds(&admin));
        Fixture {
            api,
            rt,
            admin,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn conf(&self, node: &str, ipam: Value) -> ClusterIpamConfig {
        self.conf_with(node, ipam, json!({}), "")
    }

    fn conf_with(
        &self,
        node: &str,
        mut ipam: Value,
        runtime: Value,
        args: &str,
    ) -> ClusterIpamConfig {
        let m = ipam.as_object_mut().unwrap();
        m.insert("type".into(), json!("meta-ipam"));
        m.entry("kubeconfig")
            .or_insert(json!(self.api.admin_kubeconfig().display().to_string()));
        m.insert(
            "dataDir".into(),
            json!(self.dir.path().join(node).display().to_string()),
        );
        m.insert("nodeName".into(), json!(node));
        let conf = cni_core::NetConf::from_map(
            json!({"cniVersion": "1.0.0", "name": "net1", "type": "macvlan",
                   "ipam": ipam, "runtimeConfig": runtime})
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
        ClusterIpamConfig::from_conf(&conf, &cni_core::CniArgs::parse(args).unwrap()).unwrap()
    }

    /// `ipam` as a network configuration passes it to the `meta-ipam` binary on `node`.
    fn plugin_ipam(&self, node: &str, mut ipam: Value) -> Value {
        let m = ipam.as_object_mut().unwrap();
        m.insert("type".into(), json!("meta-ipam"));
        m.insert(
            "kubeconfig".into(),
            json!(self.api.admin_kubeconfig().display().to_string()),
        );
        m.insert(
            "dataDir".into(),
            json!(self.dir.path().join(node).display().to_string()),
        );
        m.insert("nodeName".into(), json!(node));
        ipam
    }

    fn blocks(&self) -> Vec<IpBlock> {
        let api: Api<IpBlock> = Api::all(self.admin.clone());
        self.rt
            .block_on(api.list(&ListParams::default()))
            .unwrap()
            .items
    }

    /// (address offset key per block) -> owner, over every block on the server.
    fn server_allocations(&self) -> BTreeMap<(String, String), String> {
        self.blocks()
            .into_iter()
            .flat_map(|b| {
                let name = b.metadata.name.clone().unwrap();
                b.spec
                    .allocations
                    .into_iter()
                    .map(move |(o, a)| ((name.clone(), o), a.owner))
            })
            .collect()
    }

    /// Address -> owner of every IpReservation on the server.
    fn reservations(&self) -> BTreeMap<String, String> {
        use meta_ipam_cluster::crd::IpReservation;
        let api: Api<IpReservation> = Api::all(self.admin.clone());
        self.rt
            .block_on(api.list(&ListParams::default()))
            .unwrap()
            .items
            .into_iter()
            .map(|r| (r.spec.ip, r.spec.holder.owner))
            .collect()
    }

    /// Address -> owner of every block allocation on the server.
    fn allocated_addresses(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for b in self.blocks() {
            let base: ipnet::IpNet = b.spec.cidr.parse().unwrap();
            for (o, a) in b.spec.allocations {
                let ip = meta_ipam_cluster::config::from_u128(
                    base.network(),
                    meta_ipam_cluster::config::to_u128(base.network()) + o.parse::<u128>().unwrap(),
                );
                let prev = out.insert(ip.to_string(), a.owner);
                assert!(prev.is_none(), "{ip} allocated in two blocks");
            }
        }
        out
    }

    /// Audit events of meta-ipam's objects so far.
    fn ipam_requests(&self) -> usize {
        self.api
            .audit_events()
            .iter()
            .filter(|e| {
                e["objectRef"]["apiGroup"] == "ipam.meta-cni.io"
                    && e["user"]["username"] != "system:apiserver"
            })
            .count()
    }
}

async fn apply_crds(admin: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let c = api.get(&name).await.unwrap();
            let ok = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if ok {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CRD {name} not Established"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn owner(uid: &str) -> Owner {
    Owner {
        key: format!("{uid}/net1"),
        namespace: "default".into(),
        pod: format!("pod-{uid}"),
        pod_uid: uid.into(),
        container_id: format!("ctr-{uid}"),
    }
}

fn first_ip(r: &cni_core::CniResult) -> IpAddr {
    r.ips[0].address.addr()
}

#[test]
fn crd_file_matches_the_types() {
    let want = meta_ipam_cluster::crd::crds_yaml().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/meta-ipam.yaml");
    let have = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        have, want,
        "deploy/crds/meta-ipam.yaml is stale: cargo run -p meta-ipam-cluster --bin meta-ipam-crdgen deploy/crds/meta-ipam.yaml"
    );
}

/// As whereabouts: configurations with the same range and no `network_name` (two NADs on
/// one LAN, different CNI names) share one pool and never hand out the same address; a
/// `network_name` makes a pool of its own.
#[test]
fn same_range_shares_a_pool_unless_network_name_differs() {
    use meta_ipam_cluster::crd::IpPool;
    let f = Fixture::start();
    let a = f.conf("node-a", json!({"range": "10.95.0.0/28"}));
    let mut b = a.clone();
    b.network = "net2".into();
    let other = f.conf(
        "node-a",
        json!({"range": "10.95.0.0/28", "network_name": "other"}),
    );
    let ra = meta_ipam_cluster::add(&a, &owner("nad-a")).unwrap();
    let rb = meta_ipam_cluster::add(&b, &owner("nad-b")).unwrap();
    let ro = meta_ipam_cluster::add(&other, &owner("nad-o")).unwrap();
    assert_ne!(first_ip(&ra), first_ip(&rb), "one pool: distinct addresses");
    assert_eq!(
        first_ip(&ra),
        first_ip(&ro),
        "network_name: a pool of its own"
    );
    let pools: BTreeMap<String, String> =
        f.rt.block_on(Api::<IpPool>::all(f.admin.clone()).list(&ListParams::default()))
            .unwrap()
            .items
            .into_iter()
            .map(|p| (p.metadata.name.unwrap(), p.spec.network))
            .collect();
    assert_eq!(
        pools,
        BTreeMap::from([
            ("10-95-0-0-28".to_string(), String::new()),
            ("other-10-95-0-0-28".to_string(), "other".to_string()),
        ])
    );
}

/// 3 nodes x 8 parallel allocators, 1000 allocations on one /22: no address twice, all
/// released after DEL; API requests per allocation from the audit log.
/// Three "nodes", each a stream of `meta-ipam` processes (one per ADD or DEL, as the
/// runtime calls a CNI plugin) with its own node name and data dir, 8 in parallel per
/// node: 1000 allocations on one /22, no address twice, all released by DEL.
#[test]
fn three_nodes_thousand_allocations_no_duplicates() {
    let f = Fixture::start();
    let nodes = ["node-a", "node-b", "node-c"];
    let ipams: Vec<Value> = nodes
        .iter()
        .map(|n| f.plugin_ipam(n, json!({"range": "10.40.0.0/22"})))
        .collect();
    const TOTAL: usize = 1000;
    const THREADS: usize = 8;
    let before = f.ipam_requests();
    let got: Mutex<Vec<(String, IpAddr, usize)>> = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (ni, ipam) in ipams.iter().enumerate() {
            for _ in 0..THREADS {
                let (got, next) = (&got, &next);
                s.spawn(move || {
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if k >= TOTAL {
                            break;
                        }
                        let uid = format!("uid-{k}");
                        let (ok, out) = finish(plugin("ADD", ipam, &format!("pod-{uid}"), &uid));
                        assert!(ok, "ADD {uid} on {}: {out}", nodes[ni]);
                        let r: Value = serde_json::from_str(&out).unwrap();
                        let ip: ipnet::IpNet =
                            r["ips"][0]["address"].as_str().unwrap().parse().unwrap();
                        got.lock().unwrap().push((uid, ip.addr(), ni));
                    }
                });
            }
        }
    });
    let got = got.into_inner().unwrap();
    let adds = f.ipam_requests() - before;
    assert_eq!(got.len(), TOTAL);
    let distinct: BTreeSet<IpAddr> = got.iter().map(|g| g.1).collect();
    assert_eq!(distinct.len(), TOTAL, "duplicate addresses handed out");
    for ip in &distinct {
        let v4 = match ip {
            IpAddr::V4(v) => v.octets(),
            IpAddr::V6(_) => panic!("{ip}"),
        };
        assert!(
            v4[0] == 10 && v4[1] == 40 && v4[2] < 4 && v4[3] != 0,
            "{ip}"
        );
    }
    // The server agrees: 1000 allocations, each owner once, on the node that made it.
    let server = f.server_allocations();
    assert_eq!(server.len(), TOTAL);
    let owners: BTreeSet<&String> = server.values().collect();
    assert_eq!(owners.len(), TOTAL);
    let mut per_node = [0usize; 3];
    let mut borrowed = 0;
    for b in f.blocks() {
        for a in b.spec.allocations.values() {
            let ni = nodes.iter().position(|n| *n == a.node).expect("node");
            per_node[ni] += 1;
            let (_, _, made_on) = got.iter().find(|g| a.pod_uid == g.0).expect("owner");
            assert_eq!(*made_on, ni, "{} recorded on the wrong node", a.owner);
            borrowed += usize::from(a.node != b.spec.node);
        }
    }
    // DEL everything, in parallel, each on the node that allocated it.
    let before_del = f.ipam_requests();
    std::thread::scope(|s| {
        for chunk in got.chunks(got.len().div_ceil(THREADS * nodes.len())) {
            let ipams = &ipams;
            s.spawn(move || {
                for (uid, _, ni) in chunk {
                    let (ok, out) = finish(plugin("DEL", &ipams[*ni], &format!("pod-{uid}"), uid));
                    assert!(ok, "DEL {uid}: {out}");
                }
            });
        }
    });
    let dels = f.ipam_requests() - before_del;
    assert!(
        f.server_allocations().is_empty(),
        "addresses left after DEL"
    );
    let blocks = f.blocks().len();
    let report = format!(
        "meta-ipam 3 nodes x {THREADS} parallel plugin processes, {TOTAL} allocations on a /22 \
         (per node {per_node:?}): 0 duplicates, {blocks} blocks, {borrowed} borrowed addresses, \
         ADD {:.2} API requests/allocation, DEL {:.2}/release",
        adds as f64 / TOTAL as f64,
        dels as f64 / TOTAL as f64
    );
    eprintln!("{report}");
}

/// A /28 (one block of 14 usable addresses) and 20 pods on two nodes: node-a claims the
/// block, node-b borrows its lend area (the top quarter: offsets 12..14); the rest fail
/// with a clear error, and succeed after deletions.
#[test]
fn exhaustion_is_a_clear_error_and_deletions_make_room() {
    let f = Fixture::start();
    let ipam = json!({"range": "10.50.0.0/28"});
    let confs = [
        f.conf("node-a", ipam.clone()),
        f.conf("node-b", ipam.clone()),
    ];
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let exhausted = |e: Error| match e {
        Error::Exhausted(m) => {
            assert!(m.contains("no free address in range 10.50.0.0/28"), "{m}");
            let ce: cni_core::Error = Error::Exhausted(m).into();
            assert_eq!(ce.code, cni_core::code::INTERNAL);
        }
        e => panic!("want exhaustion, got {e}"),
    };
    for k in 0..20 {
        let n = if k < 12 { 0 } else { 1 };
        let uid = format!("ex-{k}");
        match meta_ipam_cluster::add(&confs[n], &owner(&uid)) {
            Ok(r) => ok.push((uid, first_ip(&r), n)),
            Err(e) => {
                exhausted(e);
                failed.push((uid, n));
            }
        }
    }
    // node-a: 11 below the lend line (offsets 1..11) and the first of the lend area; node-b
    // borrows the other two; 6 fail.
    assert_eq!(ok.len(), 14, "{ok:?}");
    assert_eq!(failed.len(), 6);
    let distinct: BTreeSet<IpAddr> = ok.iter().map(|o| o.1).collect();
    assert_eq!(distinct.len(), 14);
    let all: BTreeSet<IpAddr> = (1..15)
        .map(|i| format!("10.50.0.{i}").parse().unwrap())
        .collect();
    assert_eq!(distinct, all);
    assert_eq!(
        ok.iter().filter(|o| o.2 == 1).count(),
        2,
        "node-b borrows the lend area"
    );
    exhausted(meta_ipam_cluster::add(&confs[0], &owner("ex-more")).unwrap_err());
    // Deleting two of node-a's pods in the lend area's reach and one below it.
    let gone: Vec<_> = ok
        .iter()
        .filter(|o| o.0 == "ex-0" || o.0 == "ex-11" || o.0 == "ex-12")
        .cloned()
        .collect();
    assert_eq!(gone.len(), 3);
    for (uid, _, n) in &gone {
        meta_ipam_cluster::del(&confs[*n], &owner(uid)).unwrap();
    }
    // node-b gets the two lend-area addresses back, node-a the one below the line.
    let mut again = Vec::new();
    for (uid, n) in failed.iter().take(2) {
        let r = meta_ipam_cluster::add(&confs[*n], &owner(uid))
            .unwrap_or_else(|e| panic!("ADD {uid} after deletions: {e}"));
        again.push(first_ip(&r));
    }
    exhausted(meta_ipam_cluster::add(&confs[1], &owner("ex-b-more")).unwrap_err());
    again.push(first_ip(
        &meta_ipam_cluster::add(&confs[0], &owner("ex-a-new")).unwrap(),
    ));
    let freed: BTreeSet<IpAddr> = gone.iter().map(|g| g.1).collect();
    assert_eq!(again.iter().copied().collect::<BTreeSet<_>>(), freed);
    assert_eq!(f.server_allocations().len(), 14);
}

/// The API server stopped (the process gone, connections refused) and started again on
/// the same port: ADD with room in a claimed block succeeds from the journal, an ADD
/// needing a new block fails with code 11, DEL succeeds; after the restart the next
/// invocation writes the journal and the objects agree with what was handed out.
#[test]
fn api_server_stopped_journal_then_sync_after_restart() {
    let mut f = Fixture::start();
    offline_then_sync(
        &mut f,
        |f| f.api.stop_apiserver(),
        |f| f.api.restart_apiserver(),
    );
}

/// The same with the API server hung (SIGSTOP: requests wait for `apiTimeoutMs`).
#[test]
fn api_server_hung_journal_then_sync() {
    let mut f = Fixture::start();
    let pid = f.api.pids()[1] as i32;
    let guard = std::cell::RefCell::new(None);
    offline_then_sync(
        &mut f,
        |_| {
            assert_eq!(signal(pid, libc::SIGSTOP), 0, "SIGSTOP");
            *guard.borrow_mut() = Some(Cont(pid));
        },
        |_| drop(guard.borrow_mut().take()),
    );
}

fn offline_then_sync(
    f: &mut Fixture,
    down: impl FnOnce(&mut Fixture),
    up: impl FnOnce(&mut Fixture),
) {
    let ipam = json!({"range": "10.60.0.0/24", "blockSize": 28, "apiTimeoutMs": 1500});
    let c = f.conf("node-a", ipam.clone());
    let first = meta_ipam_cluster::add(&c, &owner("up-0")).unwrap();
    assert_eq!(first_ip(&first), "10.60.0.1".parse::<IpAddr>().unwrap());
    down(f);
    // lend_from of a /28 block is 12: offline, offsets 2..11 are this node's.
    let mut offline = Vec::new();
    for k in 0..10 {
        let r = meta_ipam_cluster::add(&c, &owner(&format!("down-{k}")))
            .unwrap_or_else(|e| panic!("offline ADD {k}: {e}"));
        offline.push(first_ip(&r));
    }
    let e = meta_ipam_cluster::add(&c, &owner("down-x")).unwrap_err();
    assert!(matches!(e, Error::Unreachable(_)), "{e}");
    assert!(
        e.to_string()
            .contains("claiming a new block needs the API server"),
        "{e}"
    );
    let ce: cni_core::Error = e.into();
    assert_eq!(ce.code, 11);
    // DEL of an online and an offline allocation: journalled, no error.
    meta_ipam_cluster::del(&c, &owner("up-0")).unwrap();
    meta_ipam_cluster::del(&c, &owner("down-0")).unwrap();
    up(f);
    // Back: the next ADD writes the journal first.
    let r = meta_ipam_cluster::add(&c, &owner("after")).unwrap();
    let server = f.server_allocations();
    let owners: BTreeSet<String> = server.values().cloned().collect();
    let mut want: BTreeSet<String> = (1..10).map(|k| format!("down-{k}/net1")).collect();
    want.insert("after/net1".into());
    assert_eq!(owners, want);
    let ips: BTreeSet<IpAddr> = offline[1..].iter().copied().chain([first_ip(&r)]).collect();
    assert_eq!(ips.len(), 10, "no address twice");
    // The reservations journalled offline (no overlapping pool is known) are written too,
    // and the released ones are gone.
    assert_eq!(f.reservations(), f.allocated_addresses());
}

fn signal(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) on the fixture's own child process.
    unsafe { libc::kill(pid, sig) }
}

/// SIGCONTs the API server when dropped (also when the test fails).
struct Cont(i32);
impl Drop for Cont {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn create_pod(f: &Fixture, name: &str, node: &str) -> String {
    use k8s_openapi::api::core::v1::Pod;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "localhost/app:1"}]}
    }))
    .unwrap();
    let api: Api<Pod> = Api::namespaced(f.admin.clone(), "default");
    f.rt.block_on(api.create(&PostParams::default(), &pod))
        .expect("create pod")
        .metadata
        .uid
        .expect("uid")
}

fn delete_pod(f: &Fixture, name: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let api: Api<Pod> = Api::namespaced(f.admin.clone(), "default");
    // No kubelet: grace period 0 removes the object at once.
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    f.rt.block_on(api.delete(name, &dp)).expect("delete pod");
}

/// Waits for a plugin process: (exit status success, stdout).
fn finish(mut c: std::process::Child) -> (bool, String) {
    use std::io::Read as _;
    let mut out = String::new();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (c.wait().unwrap().success(), out)
}

/// The `meta-ipam` binary run with `CNI_COMMAND=cmd` for pod `name` (uid).
fn plugin(cmd: &str, ipam: &Value, name: &str, uid: &str) -> std::process::Child {
    use std::io::Write as _;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_meta-ipam"))
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", format!("ctr-{uid}"))
        .env("CNI_NETNS", "/run/netns/meta-ipam-test-pod")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/nonexistent")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_UID={uid}"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn meta-ipam");
    let conf = json!({"cniVersion": "1.0.0", "name": "net1", "type": "macvlan", "ipam": ipam});
    c.stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    c
}

/// Plugin processes killed with SIGKILL at staggered moments of their ADD: no address is
/// held twice, every completed ADD is on the server with its owner, and after the
/// journal is written and the reconciler ran (the killed pods deleted), nothing leaks.
#[test]
fn kill_9_then_reconcile_no_duplicates_no_leaks() {
    let f = Fixture::start();
    let mut ipam = json!({"range": "10.70.0.0/24", "blockSize": 28});
    let c = f.conf("node-k", ipam.clone());
    {
        let m = ipam.as_object_mut().unwrap();
        m.insert("type".into(), json!("meta-ipam"));
        m.insert(
            "kubeconfig".into(),
            json!(f.api.admin_kubeconfig().display().to_string()),
        );
        m.insert("dataDir".into(), json!(c.data_dir.display().to_string()));
        m.insert("nodeName".into(), json!("node-k"));
    }
    let mut done: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut killed = Vec::new();
    for round in 0..6 {
        let mut procs = Vec::new();
        for k in 0..8 {
            let name = format!("k-{round}-{k}");
            let uid = create_pod(&f, &name, "node-k");
            procs.push((name.clone(), uid.clone(), plugin("ADD", &ipam, &name, &uid)));
        }
        // Kill half of them at staggered moments (0..70 ms after their start).
        for (k, (name, uid, child)) in procs.iter_mut().enumerate() {
            if k % 2 == 0 {
                std::thread::sleep(Duration::from_millis((k as u64 * 10 + round * 3) % 70));
                let _ = child.kill();
                let _ = child.wait();
                killed.push((name.clone(), uid.clone()));
            }
        }
        for (k, (name, uid, child)) in procs.into_iter().enumerate() {
            if k % 2 == 0 {
                continue;
            }
            let (ok, out) = finish(child);
            assert!(ok, "ADD {name}: {out}");
            let r: Value = serde_json::from_str(&out).unwrap();
            let ip: ipnet::IpNet = r["ips"][0]["address"].as_str().unwrap().parse().unwrap();
            done.insert(uid, ip.addr());
        }
    }
    let distinct: BTreeSet<IpAddr> = done.values().copied().collect();
    assert_eq!(distinct.len(), done.len(), "an address handed out twice");
    // The killed pods are deleted; the journal is written, the reconciler runs.
    for (name, _) in &killed {
        delete_pod(&f, name);
    }
    meta_ipam_cluster::sync_journal(&c).unwrap();
    let mut kube =
        meta_ipam_cluster::api::Kube::new(Some(&f.api.admin_kubeconfig()), Duration::from_secs(10))
            .unwrap();
    let report = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::ZERO).unwrap();
    eprintln!("reconcile after kill -9: {report:?}");
    let server = f.server_allocations();
    let owners: BTreeSet<String> = server.values().cloned().collect();
    let want: BTreeSet<String> = done.keys().map(|u| format!("{u}/net1")).collect();
    assert_eq!(owners, want, "leaked or lost allocations");
    assert_eq!(server.len(), done.len(), "an owner twice");
    assert_eq!(
        f.reservations(),
        f.allocated_addresses(),
        "reservations and block allocations differ after the reconciler"
    );
    // Every completed ADD's address is the one the server holds for it.
    for b in f.blocks() {
        let base: ipnet::IpNet = b.spec.cidr.parse().unwrap();
        for (o, a) in &b.spec.allocations {
            let ip = meta_ipam_cluster::config::from_u128(
                base.network(),
                meta_ipam_cluster::config::to_u128(base.network()) + o.parse::<u128>().unwrap(),
            );
            assert_eq!(done[&a.pod_uid], ip, "{}", a.owner);
        }
    }
    // The pods that remain, deleted: the reconciler frees them too; a fresh allocation
    // (pod alive) is never touched.
    let live = create_pod(&f, "fresh", "node-k");
    let fresh = meta_ipam_cluster::add(&c, &owner(&live)).unwrap();
    let names: Vec<String> = (0..6)
        .flat_map(|r| {
            (0..8)
                .filter(|k| k % 2 == 1)
                .map(move |k| format!("k-{r}-{k}"))
        })
        .collect();
    for n in &names {
        delete_pod(&f, n);
    }
    let report = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::ZERO).unwrap();
    assert_eq!(report.freed, done.len());
    let server = f.server_allocations();
    assert_eq!(server.len(), 1);
    assert_eq!(
        server.values().next().unwrap(),
        &format!("{live}/net1"),
        "fresh allocation {} kept",
        first_ip(&fresh)
    );
}

/// A block of a node that is gone (no Node object) is deleted by the reconciler once its
/// pods are gone; blocks of existing nodes stay.
#[test]
fn reconcile_releases_blocks_of_gone_nodes() {
    use k8s_openapi::api::core::v1::Node;
    let f = Fixture::start();
    let ipam = json!({"range": "10.80.0.0/24"});
    let (alive, gone) = (f.conf("alive", ipam.clone()), f.conf("gone", ipam.clone()));
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "alive"}})).unwrap();
    f.rt.block_on(Api::<Node>::all(f.admin.clone()).create(&PostParams::default(), &node))
        .unwrap();
    let a = create_pod(&f, "pa", "alive");
    let g = create_pod(&f, "pg", "gone");
    meta_ipam_cluster::add(&alive, &owner(&a)).unwrap();
    meta_ipam_cluster::add(&gone, &owner(&g)).unwrap();
    assert_eq!(f.blocks().len(), 2);
    let mut kube =
        meta_ipam_cluster::api::Kube::new(Some(&f.api.admin_kubeconfig()), Duration::from_secs(10))
            .unwrap();
    // Pod of the gone node still exists: nothing happens.
    let r = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::ZERO).unwrap();
    assert_eq!((r.freed, r.blocks_deleted), (0, 0));
    delete_pod(&f, "pg");
    let r = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::ZERO).unwrap();
    assert_eq!((r.freed, r.blocks_deleted), (1, 1));
    let left = f.blocks();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spec.node, "alive");
    // A young allocation of a gone pod is left for a later pass.
    delete_pod(&f, "pa");
    let r = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::from_secs(3600)).unwrap();
    assert_eq!((r.freed, r.too_young), (0, 1));
}

/// `enable_overlapping_ranges` (whereabouts' default, true): two configurations whose
/// ranges overlap (a /24 and the /25 inside it, no `network_name`), used concurrently on
/// two nodes, never hand out one address twice; an address held through the other range
/// is skipped, or refused when requested; DEL and the reconciler release the reservations;
/// offline, an ADD in a range known to overlap is refused with code 11. With the option
/// false (and its own `network_name`), the two ranges are independent, as in whereabouts.
#[test]
fn overlapping_ranges_never_share_an_address() {
    let mut f = Fixture::start();
    let wide = json!({"range": "10.96.0.0/24", "blockSize": 28, "apiTimeoutMs": 1500});
    let narrow = json!({"range": "10.96.0.0/25", "blockSize": 28, "apiTimeoutMs": 1500});
    let a = f.conf("node-a", wide.clone());
    let b = f.conf("node-b", narrow.clone());
    let first_a = first_ip(&meta_ipam_cluster::add(&a, &owner("ov-a0")).unwrap());
    let first_b = first_ip(&meta_ipam_cluster::add(&b, &owner("ov-b0")).unwrap());
    assert_eq!(first_a, "10.96.0.1".parse::<IpAddr>().unwrap());
    assert_ne!(first_b, first_a, "the /25 skipped what the /24 holds");
    // Concurrent: 4 threads per (node, range), both ranges on both nodes.
    let confs = [
        a.clone(),
        b.clone(),
        f.conf("node-a", narrow.clone()),
        f.conf("node-b", wide.clone()),
    ];
    let got = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (ci, c) in confs.iter().enumerate() {
            for t in 0..4 {
                let got = &got;
                s.spawn(move || {
                    for k in 0..5 {
                        let o = owner(&format!("ov-{ci}-{t}-{k}"));
                        let r = meta_ipam_cluster::add(c, &o)
                            .unwrap_or_else(|e| panic!("ADD {}: {e}", o.key));
                        got.lock().unwrap().push((o.key, first_ip(&r)));
                    }
                });
            }
        }
    });
    let mut got = got.into_inner().unwrap();
    got.push(("ov-a0/net1".into(), first_a));
    got.push(("ov-b0/net1".into(), first_b));
    let distinct: BTreeSet<IpAddr> = got.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(
        distinct.len(),
        got.len(),
        "an address handed out twice: {got:?}"
    );
    let held = f.allocated_addresses();
    assert_eq!(
        held.len(),
        got.len(),
        "skipped addresses are not left allocated"
    );
    assert_eq!(f.reservations(), held, "one reservation per allocation");
    // Requested: an address the other range holds is refused with its holder.
    let c = f.conf_with(
        "node-b",
        narrow.clone(),
        json!({"ips": [format!("{first_a}/25")]}),
        "",
    );
    let e = meta_ipam_cluster::add(&c, &owner("want-a0")).unwrap_err();
    assert!(
        e.to_string().contains("through an overlapping range"),
        "{e}"
    );
    assert!(e.to_string().contains("ov-a0/net1"), "{e}");
    // DEL releases the reservation: then it can be had through the other range.
    meta_ipam_cluster::del(&a, &owner("ov-a0")).unwrap();
    assert!(!f.reservations().contains_key(&first_a.to_string()));
    assert_eq!(
        first_ip(&meta_ipam_cluster::add(&c, &owner("want-a0")).unwrap()),
        first_a
    );
    assert_eq!(f.reservations(), f.allocated_addresses());
    // The option off, in a scope of its own: whereabouts' behaviour, no cross-check.
    let off = |r: &str| json!({"range": r, "network_name": "nocheck", "enable_overlapping_ranges": false});
    let x = first_ip(
        &meta_ipam_cluster::add(&f.conf("node-a", off("10.96.0.0/24")), &owner("nc-x")).unwrap(),
    );
    let y = first_ip(
        &meta_ipam_cluster::add(&f.conf("node-a", off("10.96.0.0/25")), &owner("nc-y")).unwrap(),
    );
    assert_eq!(
        x, y,
        "without the cross-check overlapping ranges are independent"
    );
    // Offline: an ADD in a range this node knows to overlap another is refused (it could
    // not reserve the address), with code 11 and the reason; DEL still works.
    f.api.stop_apiserver();
    let e = meta_ipam_cluster::add(&b, &owner("ov-offline")).unwrap_err();
    assert!(matches!(e, Error::Unreachable(_)), "{e}");
    assert!(
        e.to_string().contains("overlaps pool(s) 10-96-0-0-24"),
        "{e}"
    );
    assert_eq!(cni_core::Error::from(e).code, 11);
    meta_ipam_cluster::del(&b, &owner("ov-b0")).unwrap();
    f.api.restart_apiserver();
    meta_ipam_cluster::sync_journal(&b).unwrap();
    assert!(
        !f.reservations().contains_key(&first_b.to_string()),
        "journalled release written"
    );
    // The reconciler: every owner here is pod-less, so everything is freed, reservations too.
    let mut kube =
        meta_ipam_cluster::api::Kube::new(Some(&f.api.admin_kubeconfig()), Duration::from_secs(10))
            .unwrap();
    let r = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::ZERO).unwrap();
    eprintln!("reconcile: {r:?}");
    assert!(f.allocated_addresses().is_empty());
    assert!(f.reservations().is_empty(), "{:?}", f.reservations());
}

/// IPAMClaim: the same address when the pod is recreated (new UID) on another node; DEL
/// keeps it; deleting the claim frees it (reconciler). `ipam-claim-reference` with `ips`
/// is refused.
#[test]
fn ipam_claim_keeps_the_address_across_recreation_and_nodes() {
    use meta_ipam_cluster::crd::IPAMClaim;
    let f = Fixture::start();
    let claim: IPAMClaim = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
        "metadata": {"name": "db-0.net1", "namespace": "default"},
        "spec": {"network": "net1", "interface": "net1"}
    }))
    .unwrap();
    let claims: Api<IPAMClaim> = Api::namespaced(f.admin.clone(), "default");
    f.rt.block_on(claims.create(&PostParams::default(), &claim))
        .unwrap();
    let ipam = json!({"ipRanges": [{"range": "10.90.0.0/24"}, {"range": "fd00:90::/64"}]});
    let rc = json!({"ipam-claim-reference": "db-0.net1"});
    let on_a = f.conf_with("node-a", ipam.clone(), rc.clone(), "");
    let on_b = f.conf_with("node-b", ipam.clone(), rc.clone(), "");
    // Someone else first, so the claim's address is not simply the first one.
    meta_ipam_cluster::add(&f.conf("node-a", ipam.clone()), &owner("other")).unwrap();
    let uid1 = create_pod(&f, "db-0", "node-a");
    let r1 = meta_ipam_cluster::add(&on_a, &owner(&uid1)).unwrap();
    assert_eq!(r1.ips.len(), 2);
    let st =
        f.rt.block_on(claims.get("db-0.net1"))
            .unwrap()
            .status
            .unwrap();
    let want: Vec<String> = r1.ips.iter().map(|i| i.address.to_string()).collect();
    assert_eq!(st.ips, want);
    meta_ipam_cluster::del(&on_a, &owner(&uid1)).unwrap();
    delete_pod(&f, "db-0");
    // Recreated with the same name (new UID) on node-b.
    let uid2 = create_pod(&f, "db-0", "node-b");
    assert_ne!(uid1, uid2);
    let r2 = meta_ipam_cluster::add(&on_b, &owner(&uid2)).unwrap();
    assert_eq!(
        r2.ips.iter().map(|i| i.address).collect::<Vec<_>>(),
        r1.ips.iter().map(|i| i.address).collect::<Vec<_>>()
    );
    let mut kube =
        meta_ipam_cluster::api::Kube::new(Some(&f.api.admin_kubeconfig()), Duration::from_secs(10))
            .unwrap();
    // The claim exists: the reconciler keeps its addresses although pod db-0 (uid1) is gone.
    let before = f.server_allocations().len();
    let r = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::ZERO).unwrap();
    assert_eq!(r.freed, 2, "only the pod-less 'other' (v4 and v6): {r:?}");
    assert_eq!(f.server_allocations().len(), before - 2);
    assert!(
        f.server_allocations()
            .values()
            .all(|o| o == "claim:default/db-0.net1")
    );
    f.rt.block_on(claims.delete("db-0.net1", &Default::default()))
        .unwrap();
    let r = meta_ipam_cluster::reconcile::reconcile(&mut kube, Duration::ZERO).unwrap();
    assert_eq!(r.freed, 2, "{r:?}");
    assert!(f.server_allocations().is_empty());
    // A missing claim is a clear error.
    let e = meta_ipam_cluster::add(&on_b, &owner(&uid2)).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

/// Requested IPs (runtimeConfig.ips, CNI_ARGS IP=): honoured when free, refused with the
/// holder when taken.
#[test]
fn requested_ips_honoured_or_refused() {
    let f = Fixture::start();
    let ipam = json!({"range": "10.91.0.0/24"});
    let c = f.conf_with(
        "node-a",
        ipam.clone(),
        json!({"ips": ["10.91.0.77/24"]}),
        "",
    );
    let r = meta_ipam_cluster::add(&c, &owner("want-77")).unwrap();
    assert_eq!(first_ip(&r), "10.91.0.77".parse::<IpAddr>().unwrap());
    let c2 = f.conf_with("node-a", ipam.clone(), json!({}), "IP=10.91.0.77");
    let e = meta_ipam_cluster::add(&c2, &owner("also-77")).unwrap_err();
    assert!(
        e.to_string().contains("already allocated to want-77/net1"),
        "{e}"
    );
    let c3 = f.conf_with("node-a", ipam, json!({}), "IP=10.91.0.78");
    assert_eq!(
        first_ip(&meta_ipam_cluster::add(&c3, &owner("want-78")).unwrap()),
        "10.91.0.78".parse::<IpAddr>().unwrap()
    );
}

/// A whereabouts NAD config (whereabouts README's keys: range, exclude, gateway, routes,
/// log_file, log_level, kubernetes.kubeconfig) with only `type` changed, through the
/// `meta-ipam` binary: ADD, then DEL.
#[test]
fn whereabouts_config_with_only_type_changed_through_the_binary() {
    let f = Fixture::start();
    let dir = f.dir.path().join("wb");
    let ipam = json!({
        "type": "meta-ipam",
        "range": "192.168.2.225/28",
        "exclude": ["192.168.2.229/30"],
        "gateway": "192.168.2.225",
        "routes": [{"dst": "0.0.0.0/0"}],
        "log_file": "/tmp/whereabouts.log",
        "log_level": "debug",
        "kubernetes": {"kubeconfig": f.api.admin_kubeconfig().display().to_string()},
        "dataDir": dir.display().to_string(),
        "nodeName": "node-w"
    });
    let mut got = Vec::new();
    for k in 0..3 {
        let (ok, out) = finish(plugin(
            "ADD",
            &ipam,
            &format!("w-{k}"),
            &format!("w-uid-{k}"),
        ));
        assert!(ok, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ips"][0]["gateway"], "192.168.2.225", "{v}");
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0", "{v}");
        got.push(v["ips"][0]["address"].as_str().unwrap().to_string());
    }
    // .225 is the gateway, .228-.231 excluded (/30 of .229).
    assert_eq!(
        got,
        ["192.168.2.226/28", "192.168.2.227/28", "192.168.2.232/28"]
    );
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_meta-ipam"))
        .env("CNI_COMMAND", "DEL")
        .env("CNI_CONTAINERID", "ctr-w-uid-0")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/nonexistent")
        .env(
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=w-0;K8S_POD_UID=w-uid-0",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            let conf =
                json!({"cniVersion": "1.0.0", "name": "net1", "type": "macvlan", "ipam": ipam});
            c.stdin
                .take()
                .unwrap()
                .write_all(conf.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    assert_eq!(f.server_allocations().len(), 2);
}
