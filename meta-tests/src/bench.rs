//! Shared pieces of the delegate ADD+DEL benchmarks: the timed loop (one process spawn per
//! verb, inside a node namespace, as a runtime does) and the Markdown table.

use crate::{Invocation, REFERENCE_DIR, World, run_in};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Timings of one plugin.
#[derive(Debug, Default)]
pub struct AddDel {
    /// ADD durations.
    pub add: Vec<Duration>,
    /// DEL durations.
    pub del: Vec<Duration>,
    /// Peak RSS of an ADD, KiB.
    pub rss_add: i64,
}

/// Another build of one of our binaries to measure side by side with this one, in the
/// same run: `BENCH_BEFORE_DIR` names a directory holding that build's binaries (e.g. the
/// `target/release` of an older commit) and `BENCH_BEFORE_LABEL` what to call it
/// (default "before"). `None` when unset.
pub fn before_bin(name: &str) -> Option<(String, std::path::PathBuf)> {
    let dir = std::env::var_os("BENCH_BEFORE_DIR")?;
    let bin = Path::new(&dir).join(name);
    assert!(
        bin.exists(),
        "BENCH_BEFORE_DIR has no {name}: {}",
        bin.display()
    );
    let label = std::env::var("BENCH_BEFORE_LABEL").unwrap_or_else(|_| "before".into());
    Some((label, bin))
}

/// Percentile `p` (0..=1) of `v`, in milliseconds.
pub fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

/// `iters` rounds of ADD then DEL of `bin` with `conf` against pod 0 of `w` (a fresh
/// container ID each round), after 5 discarded warm-up rounds.
pub fn add_del(
    w: &World,
    label: &str,
    bin: &Path,
    conf: &Value,
    iters: usize,
    extra_env: &[(&str, &str)],
) -> AddDel {
    let stdin = conf.to_string();
    let netns = w.pod(0);
    let mut s = AddDel::default();
    for i in 0..(iters + 5) {
        let cid = format!("bench-{i}");
        let mk = |verb| Invocation {
            verb,
            container_id: &cid,
            netns: &netns,
            ifname: "eth0",
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench",
            path: REFERENCE_DIR,
            extra_env: extra_env.to_vec(),
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

/// Prints the rows as the Markdown table docs/BENCHMARKS.md uses.
pub fn print_table<S: AsRef<str>>(rows: Vec<(S, AddDel)>) {
    println!(
        "| plugin | ADD p50 ms | ADD p95 ms | DEL p50 ms | DEL p95 ms | ADD+DEL mean ms | peak RSS (ADD) KiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, mut s) in rows {
        let n = s.add.len().max(1) as f64;
        let mean = (s.add.iter().sum::<Duration>() + s.del.iter().sum::<Duration>()).as_secs_f64()
            * 1e3
            / n;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            name.as_ref(),
            pct(&mut s.add, 0.5),
            pct(&mut s.add, 0.95),
            pct(&mut s.del, 0.5),
            pct(&mut s.del, 0.95),
            mean,
            s.rss_add
        );
    }
}

/// `BENCH_ITERS`, default `default`, at least 1.
pub fn iters(default: usize) -> usize {
    env_usize("BENCH_ITERS", default)
}

/// The number in environment variable `key`, default `default`, at least 1.
pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}
