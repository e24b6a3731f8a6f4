//! `meta-cni-agent` at 1000 Nodes: convergence time and peak RSS.
//!
//! `cargo bench -p meta-cni --bench agent_scale` (root: it creates network namespaces).
//! A real kube-apiserver (the test fixture) holds 1000 Node objects: `node0`, this node
//! (podCIDR only; the agent publishes its VTEP), and 999 fake remotes with podCIDR
//! `10.<1 + i/256>.<i%256>.0/24` and the agent's annotations (distinct underlay IPs
//! `192.168.<100 + i/250>.<1 + i%250>` and the MACs derived from them). The agent binary
//! runs in a node namespace (the `agent_support` topology, one node) with the
//! ServiceAccount token of `deploy/rbac.yaml`. Per run:
//!
//! 1. **cold start**: from spawning the agent until the kernel of the node has 999 routes
//!    on `meta.1` (polled every 10 ms over netlink);
//! 2. **delete 100**: 100 Nodes deleted through the API (16 requests in flight); from the
//!    first request until 899 routes are left (and from the last answer);
//! 3. **restart**: SIGTERM, a new agent, until its first reconciliation reports nothing to
//!    change (log line), over the 900 Nodes;
//!
//! and the agent's peak RSS (`VmHWM` of /proc/<pid>/status) at the end of each phase.
//! `BENCH_RUNS` (default 3) runs on one API server (the deleted Nodes are created again
//! between runs, in a fresh node namespace). Prints a Markdown table (medians, and every
//! run).

#[path = "../tests/agent_support/mod.rs"]
mod agent_support;

use agent_support::*;
use futures::StreamExt;
use meta_cni_agent::{ANNOTATION_UNDERLAY_IP, ANNOTATION_VTEP_MAC};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const NODES: usize = 1000;
const DELETE: usize = 100;
const CLUSTER_CIDR: &str = "10.0.0.0/8";
const T: Duration = Duration::from_secs(300);

fn fake_name(i: usize) -> String {
    format!("fake{i:04}")
}

fn fake_subnet(i: usize) -> String {
    format!("10.{}.{}.0/24", 1 + i / 256, i % 256)
}

fn fake_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        192,
        168,
        (100 + i / 250) as u8,
        (1 + i % 250) as u8,
    ))
}

/// Creates fakes `range` with 16 requests in flight.
fn create_fakes(api: &ApiFixture, range: std::ops::Range<usize>) {
    let nodes = api.nodes();
    api.rt.block_on(async {
        let results: Vec<_> = futures::stream::iter(range)
            .map(|i| {
                let nodes = nodes.clone();
                async move {
                    let ip = fake_ip(i);
                    let mac = meta_netlink::format_mac(&meta_overlay::vtep_mac_for(ip));
                    let n = node_object(
                        &fake_name(i),
                        Some(&fake_subnet(i)),
                        &[
                            (ANNOTATION_VTEP_MAC, mac),
                            (ANNOTATION_UNDERLAY_IP, ip.to_string()),
                        ],
                    );
                    nodes.create(&Default::default(), &n).await
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r.expect("create Node");
        }
    });
}

/// Deletes fakes `range` with 16 requests in flight.
fn delete_fakes(api: &ApiFixture, range: std::ops::Range<usize>) {
    let nodes = api.nodes();
    api.rt.block_on(async {
        let results: Vec<_> = futures::stream::iter(range)
            .map(|i| {
                let nodes = nodes.clone();
                async move { nodes.delete(&fake_name(i), &Default::default()).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r.expect("delete Node");
        }
    });
}

fn wait_routes(c: &Cluster, n: usize, agent: &Agent) {
    let ns = c.nodes[0].ns.netns();
    let deadline = Instant::now() + T;
    loop {
        if overlay_routes(ns) == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} routes, want {n}; log tail:\n{}",
            overlay_routes(ns),
            tail(&agent.log())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(20);
    lines[from..]
        .iter()
        .map(|l| if l.len() > 300 { &l[..300] } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Default, Clone)]
struct Run {
    cold_ms: f64,
    cold_reconcile_ms: f64,
    delete_reconcile_ms: f64,
    cold_rss_kib: u64,
    delete_ms: f64,
    delete_after_api_ms: f64,
    delete_api_ms: f64,
    delete_rss_kib: u64,
    restart_ms: f64,
    restart_rss_kib: u64,
}

/// The duration the agent logged for its `nth` reconciliation that changed something
/// (`reconciled: N peers programmed, M changes, F failed (X ms)`).
fn reconcile_ms(log: &str, nth: usize) -> f64 {
    log.lines()
        .filter(|l| l.contains("peers programmed"))
        .nth(nth)
        .and_then(|l| l.rsplit_once(" failed ("))
        .and_then(|(_, r)| r.split_once(" ms)"))
        .and_then(|(v, _)| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us too: only run for real
    // when asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("agent_scale: run with `cargo bench -p meta-cni --bench agent_scale` (root)");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let t = Instant::now();
    let api = ApiFixture::start();
    eprintln!("API server ready in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    api.create_node(&node_object("node0", Some("10.0.0.0/24"), &[]));
    create_fakes(&api, 0..NODES - 1);
    eprintln!(
        "{NODES} Nodes created in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut all = Vec::new();
    for run in 0..runs {
        let c = Cluster::new(1);
        let _fwd = Forwarder::start(c.nodes[0].ns.netns(), api.addr, api.addr);
        let mut env = base_env(&c.nodes[0]);
        for (k, v) in env.iter_mut() {
            match k.as_str() {
                "META_CNI_AGENT_CLUSTER_CIDR" => *v = CLUSTER_CIDR.into(),
                "META_CNI_AGENT_LOG" => *v = "info,meta_cni_agent=debug".into(),
                "META_CNI_AGENT_DEBOUNCE" => *v = "100ms".into(),
                _ => {}
            }
        }
        env.push(("KUBECONFIG".into(), api.kubeconfig.display().to_string()));
        let mut r = Run::default();

        // 1. cold start
        let t0 = Instant::now();
        let mut agent = Agent::start(c.nodes[0].ns.netns(), &env);
        wait_routes(&c, NODES - 1, &agent);
        r.cold_ms = t0.elapsed().as_secs_f64() * 1000.0;
        r.cold_rss_kib = agent.vm_hwm_kib();
        r.cold_reconcile_ms = reconcile_ms(&agent.log(), 0);

        // 2. delete 100
        let t0 = Instant::now();
        delete_fakes(&api, 0..DELETE);
        let api_done = Instant::now();
        wait_routes(&c, NODES - 1 - DELETE, &agent);
        let done = Instant::now();
        r.delete_ms = (done - t0).as_secs_f64() * 1000.0;
        r.delete_api_ms = (api_done - t0).as_secs_f64() * 1000.0;
        r.delete_after_api_ms = (done - api_done).as_secs_f64() * 1000.0;
        r.delete_rss_kib = agent.vm_hwm_kib();
        // The deletions may have been spread over several runs: add them up.
        let n = agent.count("peers programmed");
        r.delete_reconcile_ms = (1..n).map(|i| reconcile_ms(&agent.log(), i)).sum();
        agent.assert_running();

        // 3. restart, nothing to change
        assert_eq!(agent.terminate(), 0, "{}", tail(&agent.log()));
        let t0 = Instant::now();
        let agent = Agent::start(c.nodes[0].ns.netns(), &env);
        agent.wait_log("reconciled: nothing to change", 1, T);
        r.restart_ms = t0.elapsed().as_secs_f64() * 1000.0;
        r.restart_rss_kib = agent.vm_hwm_kib();
        assert_eq!(agent.count("peers programmed"), 0, "{}", tail(&agent.log()));
        assert_eq!(overlay_routes(c.nodes[0].ns.netns()), NODES - 1 - DELETE);
        drop(agent);
        eprintln!("run {}: {r:?}", run + 1);
        all.push(r);
        drop(c);
        create_fakes(&api, 0..DELETE);
    }

    let mib = |k: u64| k as f64 / 1024.0;
    let col = |f: &dyn Fn(&Run) -> f64| {
        let v: Vec<f64> = all.iter().map(f).collect();
        let each = v
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        (median(v), each)
    };
    let colm = |f: &dyn Fn(&Run) -> f64| {
        let v: Vec<f64> = all.iter().map(f).collect();
        let each = v
            .iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        (median(v), each)
    };
    println!();
    println!(
        "meta-cni-agent, {NODES} Nodes in a real kube-apiserver v1.20.2, {runs} run(s), medians (every run in brackets)"
    );
    println!();
    println!("| phase | until | time (ms) | agent peak RSS, VmHWM (MiB) |");
    println!("|---|---|---|---|");
    let (m, e) = col(&|r| r.cold_ms);
    let (rm, re) = colm(&|r| mib(r.cold_rss_kib));
    println!(
        "| cold start, {NODES} Nodes | {} routes programmed | {m:.0} [{e}] | {rm:.1} [{re}] |",
        NODES - 1
    );
    let (m, e) = col(&|r| r.cold_reconcile_ms);
    println!(
        "| ... of which the reconciliation (agent's log: {} x neighbour + FDB + route) | | {m:.0} [{e}] | |",
        NODES - 1
    );
    let (m, e) = col(&|r| r.delete_ms);
    let (rm, re) = colm(&|r| mib(r.delete_rss_kib));
    println!(
        "| delete {DELETE} Nodes (from the first DELETE) | {} routes left | {m:.0} [{e}] | {rm:.1} [{re}] |",
        NODES - 1 - DELETE
    );
    let (m, e) = col(&|r| r.delete_api_ms);
    println!("| ... of which the {DELETE} API DELETEs | last answer | {m:.0} [{e}] | |");
    let (m, e) = col(&|r| r.delete_after_api_ms);
    println!(
        "| ... after the last DELETE answer | {} routes left | {m:.0} [{e}] | |",
        NODES - 1 - DELETE
    );
    let (m, e) = col(&|r| r.delete_reconcile_ms);
    println!("| ... of which the reconciliations (agent's log, summed) | | {m:.0} [{e}] | |");
    let (m, e) = col(&|r| r.restart_ms);
    let (rm, re) = colm(&|r| mib(r.restart_rss_kib));
    println!(
        "| restart, {} Nodes, nothing to change | first reconciliation (no-op) | {m:.0} [{e}] | {rm:.1} [{re}] |",
        NODES - DELETE
    );
}
