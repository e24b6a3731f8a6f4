//! ADD+DEL latency and peak RSS: meta-bridge vs the reference bridge (+ host-local), the
//! same configuration, the same kind of world, in one run. Every iteration is a full
//! process spawn of the plugin (as a runtime does), run inside a node namespace.
//!
//! `cargo bench -p meta-bridge --bench add_del` (root). `BENCH_ITERS` sets the iterations
//! (default 200). Prints a Markdown table for docs/BENCHMARKS.md.

use meta_tests::{Invocation, REFERENCE_DIR, World, reference, run_in};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Stats {
    add: Vec<Duration>,
    del: Vec<Duration>,
    rss_add: i64,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn bench(
    label: &str,
    bin: &Path,
    ipam_type: &str,
    iters: usize,
    extra_env: Vec<(&str, &str)>,
) -> Stats {
    let w = World::new(1);
    let c = json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "benchbr",
                   "isGateway": true,
                   "ipam": {"type": ipam_type, "subnet": "10.50.0.0/16", "dataDir": w.path("ipam")}});
    let stdin = c.to_string();
    let netns = w.pod(0);
    let mut s = Stats {
        add: Vec::new(),
        del: Vec::new(),
        rss_add: 0,
    };
    // Warm-up (bridge creation, page cache).
    for i in 0..(iters + 5) {
        let cid = format!("bench-{i}");
        let mk = |verb| Invocation {
            verb,
            container_id: &cid,
            netns: &netns,
            ifname: "eth0",
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench",
            path: REFERENCE_DIR,
            extra_env: extra_env.clone(),
            ..Default::default()
        };
        let t = Instant::now();
        let r = run_in(w.node.netns(), bin, &mk("ADD"), stdin.as_bytes());
        let ta = t.elapsed();
        assert_eq!(r.code, 0, "{label} ADD: {} {}", r.stdout, r.stderr);
        let t = Instant::now();
        let d = run_in(w.node.netns(), bin, &mk("DEL"), stdin.as_bytes());
        let td = t.elapsed();
        assert_eq!(d.code, 0, "{label} DEL: {}", d.stdout);
        if i >= 5 {
            s.add.push(ta);
            s.del.push(td);
            s.rss_add = s.rss_add.max(r.max_rss_kib);
        }
    }
    s
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_meta-bridge"));
    let refbin = reference("bridge");
    let rows = [
        (
            "meta-bridge (host-local in-process)",
            bench("ours", &ours, "host-local", iters, vec![]),
        ),
        (
            "meta-bridge + exec'd reference host-local",
            bench(
                "ours-exec",
                &ours,
                "host-local",
                iters,
                vec![("META_CNI_FORCE_EXEC", "host-local")],
            ),
        ),
        (
            "reference bridge + host-local 1.1.1",
            bench("reference", &refbin, "host-local", iters, vec![]),
        ),
    ];
    println!(
        "\nADD+DEL, {iters} iterations each, one pod, cniVersion 1.0.0, isGateway, host-local /16\n"
    );
    println!(
        "| plugin | ADD p50 ms | ADD p95 ms | DEL p50 ms | DEL p95 ms | ADD+DEL mean ms | peak RSS (ADD) KiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, mut s) in rows {
        let mean = (s.add.iter().sum::<Duration>() + s.del.iter().sum::<Duration>()).as_secs_f64()
            * 1e3
            / s.add.len() as f64;
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            pct(&mut s.add, 0.5),
            pct(&mut s.add, 0.95),
            pct(&mut s.del, 0.5),
            pct(&mut s.del, 0.95),
            mean,
            s.rss_add
        );
    }
}
