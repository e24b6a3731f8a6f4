//! Admission latency with 1000 NADs and 500 attached pods in the cache: a pod without
//! networks (every pod of the cluster), a pod with 3 networks, and a NAD of each bundled
//! type, each as an AdmissionReview body:
//! - "handler": decode + checks + encode, in-process ([`Admitter::handle`]);
//! - "HTTPS": `POST /validate` to the real server on 127.0.0.1 (TLS 1.3, a new connection
//!   per request, as a cold API server connection; the API server keeps its connections,
//!   so this is the upper bound).
//!
//! `BENCH_ITERS` (default 2000 in-process, a tenth of it over HTTPS).

#[path = "../tests/common/mod.rs"]
mod common;

use kube::runtime::watcher::Event;
use meta_cni_webhook::cache::Cache;
use meta_cni_webhook::certs::Authority;
use meta_cni_webhook::handler::Admitter;
use meta_cni_webhook::serve::ServeOpts;
use meta_cni_webhook::server::Handler;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn nad_obj(ns: &str, name: &str, config: Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": ns}, "spec": {"config": config.to_string()}})
}

fn config(i: usize) -> Value {
    let subnet = format!("10.{}.{}.0/24", 100 + i / 250, i % 250);
    let ipam = json!({"type": "host-local", "subnet": subnet});
    match i % 4 {
        0 => {
            json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": format!("br{}", i % 50), "ipam": ipam})
        }
        1 => json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "eth1", "ipam": ipam}),
        2 => {
            json!({"cniVersion": "1.0.0", "type": "ipvlan", "master": "eth1", "mode": "l3", "ipam": ipam})
        }
        _ => json!({"cniVersion": "1.0.0", "type": "vxlan", "vni": 1000 + i, "ipam": ipam}),
    }
}

fn review(kind: &str, group: &str, ns: &str, name: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "bench", "kind": {"group": group, "version": "v1", "kind": kind},
                    "operation": "CREATE", "namespace": ns, "name": name,
                    "userInfo": {"username": "bench"}, "object": object}
    }))
    .unwrap()
}

fn pod(networks: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "ns0", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "registry.example/web:1", "ports": [{"containerPort": 80}]}]}});
    if let Some(n) = networks {
        p["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/networks": n});
    }
    p
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let cache = Cache::new();
    cache.nad_event(Event::Init);
    for i in 0..1000 {
        let nad = serde_json::from_value(nad_obj(
            &format!("ns{}", i % 10),
            &format!("net{i}"),
            config(i),
        ))
        .unwrap();
        cache.nad_event(Event::InitApply(nad));
    }
    cache.nad_event(Event::InitDone);
    cache.pod_event(Event::Init);
    for i in 0..500 {
        let mut p = kube::core::PartialObjectMeta::<k8s_openapi::api::core::v1::Pod>::default();
        p.metadata.namespace = Some(format!("ns{}", i % 10));
        p.metadata.name = Some(format!("pod{i}"));
        let st = json!([{"name": format!("ns{}/net{}", i % 10, (i * 10 + i % 10) % 1000)}]);
        p.metadata.annotations = Some(
            [(
                "k8s.v1.cni.cncf.io/network-status".to_string(),
                st.to_string(),
            )]
            .into(),
        );
        cache.pod_event(Event::InitApply(p));
    }
    cache.pod_event(Event::InitDone);
    assert_eq!(cache.counts(), (1000, 500));
    let handler = Arc::new(Admitter {
        settings: meta_cni_webhook::admission::Settings::default(),
        world: cache,
        ready: Cache::ready,
    });
    let nad_case = |t: &str, c: Value| {
        (
            format!("NAD {t}"),
            review(
                "NetworkAttachmentDefinition",
                "k8s.cni.cncf.io",
                "ns0",
                "new",
                nad_obj("ns0", "new", c),
            ),
        )
    };
    let ipam = json!({"type": "host-local", "subnet": "10.250.0.0/24"});
    let cases = vec![
        (
            "pod without networks".to_string(),
            review("Pod", "", "ns0", "web", pod(None)),
        ),
        (
            "pod with 3 networks".to_string(),
            review(
                "Pod",
                "",
                "ns0",
                "web",
                pod(Some("net0, net10@fast0, net20")),
            ),
        ),
        nad_case(
            "bridge",
            json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "br-new", "ipam": ipam}),
        ),
        nad_case(
            "macvlan",
            json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "eth1", "ipam": ipam}),
        ),
        nad_case(
            "ipvlan",
            json!({"cniVersion": "1.0.0", "type": "ipvlan", "master": "eth1", "ipam": ipam}),
        ),
        nad_case(
            "vxlan",
            json!({"cniVersion": "1.0.0", "type": "vxlan", "vni": 77, "ipam": ipam}),
        ),
    ];
    // Every case must be admitted (the bench measures the full path, not an early refusal).
    for (name, body) in &cases {
        let a = handler.handle(body).unwrap();
        assert!(a.allowed, "{name}: {}", String::from_utf8_lossy(&a.body));
    }
    println!(
        "1000 NADs (bridge, macvlan, ipvlan, vxlan; 10 namespaces) and 500 attached pods cached; {iters} iterations in-process, {} over HTTPS",
        iters / 10
    );
    println!();
    println!("| request | handler p50 µs | handler p99 µs | HTTPS p50 µs | HTTPS p99 µs |");
    println!("|---|---|---|---|---|");
    // The server, TLS with a test CA.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca = Authority::generate("bench CA", Duration::from_secs(3600)).unwrap();
    let leaf = ca
        .issue(
            &["localhost".to_string()],
            &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
            Duration::from_secs(3600),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &leaf.key_pem).unwrap();
    let mut opts = ServeOpts::new("127.0.0.1:0".parse().unwrap());
    opts.tls_cert_file = Some(dir.path().join("tls.crt"));
    opts.tls_private_key_file = Some(dir.path().join("tls.key"));
    let running = rt.block_on(common::start(opts, handler.clone()));
    let client = common::client_config(ca.cert_pem(), &[&rustls::version::TLS13]);
    for (name, body) in &cases {
        let mut local = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            let a = handler.handle(body).unwrap();
            local.push(t.elapsed());
            std::hint::black_box(a);
        }
        let mut https = Vec::with_capacity(iters / 10);
        for _ in 0..(iters / 10).max(1) {
            let t = Instant::now();
            let r = rt
                .block_on(common::post_review(running.addr, client.clone(), body))
                .unwrap();
            https.push(t.elapsed());
            assert_eq!(r.status, 200);
        }
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {:.0} |",
            pct(&mut local, 0.5),
            pct(&mut local, 0.99),
            pct(&mut https, 0.5),
            pct(&mut https, 0.99)
        );
    }
    drop(running);
}
