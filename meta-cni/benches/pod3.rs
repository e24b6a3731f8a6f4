//! ADD and DEL of a 3-network pod (cluster bridge + NAD bridge + NAD macvlan, host-local
//! everywhere): meta-cni with its bundled delegates in-process vs the same pod with every
//! delegate exec'd from /usr/lib/cni (the reference bridge, macvlan and host-local — the
//! way Multus runs a pod), in one run; and the 4-network pod of the kill -9 campaign
//! (eth0 bridge, a bridge with ipMasq + macspoofchk, macvlan, a secondary VXLAN segment;
//! every delegate in-process) in the same rounds.
//!
//! `BENCH_ITERS=100 cargo bench -p meta-cni --bench pod3` (root). `BENCH_GAP_MS` pauses
//! between each ADD and its DEL (not timed).

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;
use meta_tests::bench::{before_bin, pct};
use serde_json::json;
use std::time::{Duration, Instant};

struct Mode {
    label: String,
    bin: std::path::PathBuf,
    conf: serde_json::Value,
    force_env: &'static str,
    adds: Vec<Duration>,
    dels: Vec<Duration>,
    rss: i64,
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // A pause between each ADD and its DEL (default none): a DEL right after its ADD
    // depends on how far the kernel got with the ADD's aftermath.
    let gap = Duration::from_millis(
        std::env::var("BENCH_GAP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let (e, pod4) = four_network_world(1, 4318);
    let nets = "ns1/br-net, ns1/mv-net";
    let mut modes = vec![
        Mode {
            label: "meta-cni, delegates in-process".into(),
            bin: meta_bin(),
            conf: e.conf(nets, json!({"forceExec": []})),
            force_env: "",
            adds: vec![],
            dels: vec![],
            rss: 0,
        },
        Mode {
            label: "meta-cni, every delegate exec'd (Multus way)".into(),
            bin: meta_bin(),
            conf: e.conf(nets, json!({"forceExec": ["bridge", "macvlan"]})),
            force_env: "host-local",
            adds: vec![],
            dels: vec![],
            rss: 0,
        },
    ];
    modes.push(Mode {
        label: "4-network pod (bridge, bridge + ipMasq + macspoofchk, macvlan, VXLAN segment), in-process".into(),
        bin: meta_bin(),
        conf: pod4,
        force_env: "",
        adds: vec![],
        dels: vec![],
        rss: 0,
    });
    // Another build of meta-cni (BENCH_BEFORE_DIR), interleaved with these.
    if let Some((label, bin)) = before_bin("meta-cni") {
        modes.push(Mode {
            label: format!("meta-cni {label}, delegates in-process"),
            bin,
            conf: e.conf(nets, json!({"forceExec": []})),
            force_env: "",
            adds: vec![],
            dels: vec![],
            rss: 0,
        });
    }
    // The modes alternate every iteration, so they all see the same machine load.
    // The starting mode rotates every round, so that none always runs right after
    // another one's DEL.
    let n = modes.len();
    for i in 0..iters + 3 {
        for k in 0..n {
            let m = &mut modes[(i + k) % n];
            let cid = format!("bench{i}");
            let netns = e.w.pod(0);
            let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod0";
            let mk = |verb| Invocation {
                verb,
                container_id: &cid,
                netns: &netns,
                ifname: "eth0",
                args,
                path: REFERENCE_DIR,
                extra_env: vec![("META_CNI_FORCE_EXEC", m.force_env)],
                ..Default::default()
            };
            let stdin = m.conf.to_string();
            let t = Instant::now();
            let r = run_in(e.w.node.netns(), &m.bin, &mk("ADD"), stdin.as_bytes());
            let ta = t.elapsed();
            assert_eq!(r.code, 0, "{}: {} {}", m.label, r.stdout, r.stderr);
            if gap > Duration::ZERO {
                std::thread::sleep(gap);
            }
            let t = Instant::now();
            let d = run_in(e.w.node.netns(), &m.bin, &mk("DEL"), stdin.as_bytes());
            let td = t.elapsed();
            assert_eq!(d.code, 0, "{}: {}", m.label, d.stdout);
            if i >= 3 {
                m.adds.push(ta);
                m.dels.push(td);
                m.rss = m.rss.max(r.max_rss_kib);
            }
        }
    }
    println!(
        "\n3-network pod (eth0 bridge, net1 bridge, net2 macvlan; host-local) unless the row says otherwise, {iters} iterations, modes interleaved\n"
    );
    println!("| mode | ADD p50 ms | ADD p95 ms | DEL p50 ms | DEL p95 ms | peak RSS KiB |");
    println!("|---|---|---|---|---|---|");
    for m in modes.iter_mut() {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            m.label,
            pct(&mut m.adds, 0.5),
            pct(&mut m.adds, 0.95),
            pct(&mut m.dels, 0.5),
            pct(&mut m.dels, 0.95),
            m.rss
        );
    }
}
