//! ADD + DEL of meta-ipam against the real kube-apiserver fixture next to the in-process
//! host-local (`meta_ipam::allocate` / `release`), one node, sequential, a fresh owner
//! each round; then 8 parallel allocators (threads of one process, as 8 concurrent CNI
//! invocations on one node) doing `BENCH_PAR` ADDs each, then the DELs, 8 in parallel:
//! latency percentiles, allocations per second, and API requests per ADD and DEL from
//! the fixture's audit log. meta-ipam runs twice: with `enable_overlapping_ranges` at its
//! default (true: one IpReservation per address) and false.
//! `BENCH_ITERS=200 BENCH_PAR=100 cargo bench -p meta-ipam-cluster --bench vs_host_local`

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use meta_ipam_cluster::{ClusterIpamConfig, Owner};
use meta_tests::apiserver::ApiServer;
use meta_tests::bench::pct;
use serde_json::json;
use std::time::{Duration, Instant};

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
    let mo = ClusterIpamConfig::from_conf(
        &conf(json!({"type": "meta-ipam", "range": "10.102.0.0/16",
                     "enable_overlapping_ranges": false,
                     "kubeconfig": api.admin_kubeconfig().display().to_string(),
                     "dataDir": dir.path().join("meta-ipam-no-overlap").display().to_string(),
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
    for c in [&mi, &mo] {
        for i in 0..5 {
            meta_ipam_cluster::add(c, &owner(1_000_000 + i)).unwrap();
            meta_ipam_cluster::del(c, &owner(1_000_000 + i)).unwrap();
        }
    }
    let (mut ma, mut md, mut ha, mut hd) = (vec![], vec![], vec![], vec![]);
    let (mut oa, mut od) = (vec![], vec![]);
    // API requests of ADD and DEL, with and without the overlap check.
    let mut reqs = [[0usize; 2]; 2];
    for i in 0..iters {
        for (k, c, a, d) in [(0, &mi, &mut ma, &mut md), (1, &mo, &mut oa, &mut od)] {
            let r0 = ipam_requests(&api);
            let t = Instant::now();
            meta_ipam_cluster::add(c, &owner(i)).unwrap();
            a.push(t.elapsed());
            let r1 = ipam_requests(&api);
            let t = Instant::now();
            meta_ipam_cluster::del(c, &owner(i)).unwrap();
            d.push(t.elapsed());
            let r2 = ipam_requests(&api);
            reqs[k][0] += r1 - r0;
            reqs[k][1] += r2 - r1;
        }
        let id = format!("hl-{i}");
        let t = Instant::now();
        meta_ipam::allocate(&hl, &id, "net1").unwrap();
        ha.push(t.elapsed());
        let t = Instant::now();
        meta_ipam::release(&hl, &id, "net1").unwrap();
        hd.push(t.elapsed());
    }
    let per_op = |n: usize| n as f64 / iters as f64;
    println!(
        "{iters} rounds of ADD then DEL, one node, in-process; API requests per ADD {:.2}, per DEL {:.2} \
         (enable_overlapping_ranges false: {:.2}, {:.2})",
        per_op(reqs[0][0]),
        per_op(reqs[0][1]),
        per_op(reqs[1][0]),
        per_op(reqs[1][1])
    );
    println!(
        "| IPAM | ADD p50 ms | ADD p95 ms | ADD p99 ms | DEL p50 ms | DEL p95 ms | DEL p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, a, d) in [
        ("meta-ipam (kube-apiserver 1.20.2)", &mut ma, &mut md),
        (
            "meta-ipam, enable_overlapping_ranges false",
            &mut oa,
            &mut od,
        ),
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
    let (mo_add, mo_add_wall) = parallel(PAR, per, |i| {
        meta_ipam_cluster::add(&mo, &owner(base + i)).unwrap();
    });
    let r3 = ipam_requests(&api);
    let (mo_del, mo_del_wall) = parallel(PAR, per, |i| {
        meta_ipam_cluster::del(&mo, &owner(base + i)).unwrap();
    });
    let r4 = ipam_requests(&api);
    let (hl_add, hl_add_wall) = parallel(PAR, per, |i| {
        meta_ipam::allocate(&hl, &format!("par-{i}"), "net1").unwrap();
    });
    let (hl_del, hl_del_wall) = parallel(PAR, per, |i| {
        meta_ipam::release(&hl, &format!("par-{i}"), "net1").unwrap();
    });
    println!();
    println!(
        "{PAR} parallel allocators x {per} ADDs ({total} allocations), then the {total} DELs 8 in parallel; \
         meta-ipam API requests per ADD {:.2}, per DEL {:.2} (enable_overlapping_ranges false: {:.2}, {:.2})",
        (r1 - r0) as f64 / total as f64,
        (r2 - r1) as f64 / total as f64,
        (r3 - r2) as f64 / total as f64,
        (r4 - r3) as f64 / total as f64
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
        (
            "meta-ipam, enable_overlapping_ranges false",
            mo_add,
            mo_add_wall,
            mo_del,
            mo_del_wall,
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
