//! Admission latency with 1000 NADs and 500 attached pods in the cache: a pod without
//! networks (every pod of the cluster), a pod with 3 networks, and a NAD of each bundled
//! type, each as an AdmissionReview body:
//! - "handler": decode + checks + encode, in-process ([`Admitter::handle`]);
//! - "HTTPS": `POST /validate` to the real server on 127.0.0.1 (TLS 1.3, a new connection
//!   per request, as a cold API server connection; the API server keeps its connections,
//!   so this is the upper bound). The client (`common::post_json`) sets `TCP_NODELAY`, as Go's (so the
//!   API server's) does: without it, against a server that sends nothing after the
//!   client's TLS Finished (Go's crypto/tls), Nagle holds the request until the server's
//!   delayed ACK, some 40 ms;
//! - "peer" (only with `PEER_URL`, e.g. `https://127.0.0.1:9443/validate`): the same bodies
//!   POSTed to another webhook (e.g. net-attach-def-admission-controller) with the same
//!   client (TLS 1.3, a new connection per request, SNI `localhost`, the certificate
//!   verified against the PEM file `PEER_CA`), interleaved with the requests to ours; each
//!   row shows both verdicts. The peer must be reachable from the bench process (run the
//!   bench in the peer's network namespace).
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

/// Where `PEER_URL` points: an `https://IP:PORT/PATH` URL.
struct Peer {
    url: String,
    addr: std::net::SocketAddr,
    path: String,
    client: Arc<rustls::ClientConfig>,
}

fn peer() -> Option<Peer> {
    let url = std::env::var("PEER_URL").ok().filter(|u| !u.is_empty())?;
    let rest = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("PEER_URL {url:?}: not https://IP:PORT/PATH"));
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/validate".to_string()),
    };
    let addr = hostport
        .parse()
        .unwrap_or_else(|e| panic!("PEER_URL {url:?}: {hostport:?} is not IP:PORT ({e})"));
    let ca = std::env::var("PEER_CA").expect("PEER_URL needs PEER_CA (the peer's CA, PEM)");
    let ca = std::fs::read_to_string(&ca).unwrap_or_else(|e| panic!("PEER_CA {ca}: {e}"));
    let client = common::client_config(&ca, &[&rustls::version::TLS13]);
    Some(Peer {
        url,
        addr,
        path,
        client,
    })
}

/// `allowed` or `denied` from an AdmissionReview reply, else what came back.
fn verdict(r: &Result<common::Reply, String>) -> String {
    match r {
        Err(e) => format!("error ({e})"),
        Ok(r) if r.status != 200 => format!("HTTP {}", r.status),
        Ok(r) => match serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v.pointer("/response/allowed").and_then(Value::as_bool))
        {
            Some(true) => "allowed".to_string(),
            Some(false) => "denied".to_string(),
            None => "no verdict".to_string(),
        },
    }
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
    let peer = peer();
    match &peer {
        Some(p) => println!(
            "peer: {} ({} requests per row, interleaved with ours; same bodies, same client: TLS 1.3, TCP_NODELAY, a new connection per request)",
            p.url,
            (iters / 10).max(1)
        ),
        None => println!("peer: not measured (set PEER_URL and PEER_CA)"),
    }
    println!();
    if peer.is_some() {
        println!(
            "| request | handler p50 µs | handler p99 µs | HTTPS p50 µs | HTTPS p99 µs | peer p50 µs | peer p99 µs | verdict ours/peer |"
        );
        println!("|---|---|---|---|---|---|---|---|");
    } else {
        println!("| request | handler p50 µs | handler p99 µs | HTTPS p50 µs | HTTPS p99 µs |");
        println!("|---|---|---|---|---|");
    }
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
        let n = (iters / 10).max(1);
        let mut https = Vec::with_capacity(n);
        let mut ours = String::new();
        let ours_once = |https: &mut Vec<Duration>, ours: &mut String| {
            let t = Instant::now();
            let r = rt.block_on(common::post_json(
                running.addr,
                client.clone(),
                "/validate",
                body,
            ));
            https.push(t.elapsed());
            let r = r.unwrap();
            assert_eq!(r.status, 200);
            if ours.is_empty() {
                *ours = verdict(&Ok(r));
            }
        };
        let Some(p) = &peer else {
            for _ in 0..n {
                ours_once(&mut https, &mut ours);
            }
            println!(
                "| {name} | {:.1} | {:.1} | {:.0} | {:.0} |",
                pct(&mut local, 0.5),
                pct(&mut local, 0.99),
                pct(&mut https, 0.5),
                pct(&mut https, 0.99)
            );
            continue;
        };
        let mut theirs = Vec::with_capacity(n);
        let mut peer_verdicts: Vec<String> = Vec::new();
        let mut peer_once = |theirs: &mut Vec<Duration>| {
            let t = Instant::now();
            let r = rt.block_on(common::post_json(p.addr, p.client.clone(), &p.path, body));
            let d = t.elapsed();
            let v = verdict(&r);
            // Timings only of answers (a failed request is not a latency); every distinct
            // verdict is shown, in the order seen.
            if r.is_ok_and(|r| r.status == 200) {
                theirs.push(d);
            }
            if !peer_verdicts.contains(&v) {
                peer_verdicts.push(v);
            }
        };
        // Alternate who goes first, so neither always follows the other's request.
        for i in 0..n {
            if i % 2 == 0 {
                ours_once(&mut https, &mut ours);
                peer_once(&mut theirs);
            } else {
                peer_once(&mut theirs);
                ours_once(&mut https, &mut ours);
            }
        }
        let (pp50, pp99) = if theirs.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.0}", pct(&mut theirs, 0.5)),
                format!("{:.0}", pct(&mut theirs, 0.99)),
            )
        };
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {:.0} | {pp50} | {pp99} | {ours}/{} |",
            pct(&mut local, 0.5),
            pct(&mut local, 0.99),
            pct(&mut https, 0.5),
            pct(&mut https, 0.99),
            peer_verdicts.join(", then ")
        );
    }
    drop(running);
}
