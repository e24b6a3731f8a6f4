//! ADD + DEL of meta-ipam against the real kube-apiserver fixture next to the in-process
//! host-local (`meta_ipam::allocate` / `release`), one node, sequential, a fresh owner
//! each round; then 8 parallel allocators (threads of one process, as 8 concurrent CNI
//! invocations on one node) doing `BENCH_PAR` ADDs each, then the DELs, 8 in parallel:
//! latency percentiles, allocations per second, and API requests per ADD and DEL from
//! the fixture's audit log.
//! `BENCH_ITERS=200 BENCH_PAR=100 cargo bench -p meta-ipam-cluster --bench vs_host_local`

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use meta_ipam_cluster::{ClusterIpamConfig, Owner};
use meta_tests::apiserver::ApiServer;
use serde_json::json;
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn ipam_requests(api: &ApiServer) -> usize {
    api.audit_events()
        .iter()
        .filter(|e| e["objectRef"]["apiGroup"] == "ipam.meta-cni.io")
        .count()
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let api = ApiServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(meta_tests::kube::client_for(&api.admin_kubeconfig()));
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for c in meta_ipam_cluster::crd::crds() {
        rt.block_on(crds.create(&PostParams::default(), &c))
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let conf = |ipam: serde_json::Value| {
        cni_core::NetConf::from_map(
            json!({"cniVersion": "1.0.0", "name": "bench", "type": "macvlan", "ipam": ipam})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap()
    };
    let args = cni_core::CniArgs::parse("").unwrap();
    let mi = ClusterIpamConfig::from_conf(
        &conf(json!({"type": "meta-ipam", "range": "10.100.0.0/16",
                     "kubeconfig": api.admin_kubeconfig().display().to_string(),
                     "dataDir": dir.path().join("meta-ipam").display().to_string(),
                     "nodeName": "bench-node"})),
        &args,
    )
    .unwrap();
    let hl = meta_ipam::HostLocalConfig::from_conf(
        &conf(json!({"type": "host-local", "subnet": "10.101.0.0/16",
                     "dataDir": dir.path().join("host-local").display().to_string()})),
        &args,
    )
    .unwrap();
    let owner = |i: usize| Owner {
        key: format!("bench-{i}/net1"),
        namespace: "default".into(),
        pod: format!("p{i}"),
        pod_uid: format!("bench-{i}"),
        container_id: format!("c{i}"),
    };
    // Warm-up (claims the first block).
    for i in 0..5 {
        meta_ipam_cluster::add(&mi, &owner(1_000_000 + i)).unwrap();
        meta_ipam_cluster::del(&mi, &owner(1_000_000 + i)).unwrap();
    }
    let (mut ma, mut md, mut ha, mut hd) = (vec![], vec![], vec![], vec![]);
    let r0 = ipam_requests(&api);
    let mut add_reqs = 0;
    let mut del_reqs = 0;
    for i in 0..iters {
        let t = Instant::now();
        meta_ipam_cluster::add(&mi, &owner(i)).unwrap();
        ma.push(t.elapsed());
        let r1 = ipam_requests(&api);
        let t = Instant::now();
        meta_ipam_cluster::del(&mi, &owner(i)).unwrap();
        md.push(t.elapsed());
        let r2 = ipam_requests(&api);
        add_reqs += r1;
        del_reqs += r2 - r1;
        add_reqs -= r1;
        let id = format!("hl-{i}");
        let t = Instant::now();
        meta_ipam::allocate(&hl, &id, "net1").unwrap();
        ha.push(t.elapsed());
        let t = Instant::now();
        meta_ipam::release(&hl, &id, "net1").unwrap();
        hd.push(t.elapsed());
    }
    let total = ipam_requests(&api) - r0;
    add_reqs += total - del_reqs;
    println!(
        "{iters} rounds of ADD then DEL, one node, in-process; API requests per ADD {:.2}, per DEL {:.2}",
        add_reqs as f64 / iters as f64,
        del_reqs as f64 / iters as f64
    );
    println!(
        "| IPAM | ADD p50 ms | ADD p95 ms | ADD p99 ms | DEL p50 ms | DEL p95 ms | DEL p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, a, d) in [
        ("meta-ipam (kube-apiserver 1.20.2)", &mut ma, &mut md),
        ("host-local", &mut ha, &mut hd),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            pct(a, 0.5),
            pct(a, 0.95),
            pct(a, 0.99),
            pct(d, 0.5),
            pct(d, 0.95),
            pct(d, 0.99)
        );
    }

    // 8 parallel allocators.
    let per: usize = std::env::var("BENCH_PAR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    const PAR: usize = 8;
    let total = PAR * per;
    let base = 2_000_000;
    let r0 = ipam_requests(&api);
    let (mi_add, mi_add_wall) = parallel(PAR, per, |i| {
        meta_ipam_cluster::add(&mi, &owner(base + i)).unwrap();
    });
    let r1 = ipam_requests(&api);
    let (mi_del, mi_del_wall) = parallel(PAR, per, |i| {
        meta_ipam_cluster::del(&mi, &owner(base + i)).unwrap();
    });
    let r2 = ipam_requests(&api);
    let (hl_add, hl_add_wall) = parallel(PAR, per, |i| {
        meta_ipam::allocate(&hl, &format!("par-{i}"), "net1").unwrap();
    });
    let (hl_del, hl_del_wall) = parallel(PAR, per, |i| {
        meta_ipam::release(&hl, &format!("par-{i}"), "net1").unwrap();
    });
    println!();
    println!(
        "{PAR} parallel allocators x {per} ADDs ({total} allocations), then the {total} DELs 8 in parallel; \
         meta-ipam API requests per ADD {:.2}, per DEL {:.2}",
        (r1 - r0) as f64 / total as f64,
        (r2 - r1) as f64 / total as f64
    );
    println!(
        "| IPAM | ADD p50 ms | ADD p99 ms | allocations/s | DEL p50 ms | DEL p99 ms | releases/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, mut a, aw, mut d, dw) in [
        (
            "meta-ipam (kube-apiserver 1.20.2)",
            mi_add,
            mi_add_wall,
            mi_del,
            mi_del_wall,
        ),
        ("host-local", hl_add, hl_add_wall, hl_del, hl_del_wall),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} |",
            pct(&mut a, 0.5),
            pct(&mut a, 0.99),
            total as f64 / aw.as_secs_f64(),
            pct(&mut d, 0.5),
            pct(&mut d, 0.99),
            total as f64 / dw.as_secs_f64()
        );
    }
}

/// `threads` threads each calling `f` `per` times with distinct indexes: every call's
/// latency and the wall time of the whole.
fn parallel(threads: usize, per: usize, f: impl Fn(usize) + Sync) -> (Vec<Duration>, Duration) {
    let t0 = Instant::now();
    let lat = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|ti| {
                let f = &f;
                s.spawn(move || {
                    (0..per)
                        .map(|k| {
                            let t = Instant::now();
                            f(ti * per + k);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    (lat, t0.elapsed())
}
