//! The cost of one `Netns::run` hand-off: a fresh thread per call (no worker held) vs a
//! held `NetnsWorker`'s long-lived thread, for an empty closure and for a sysctl read in
//! the namespace (what the delegates hand off); plus a nested same-namespace call on the
//! worker (inline) and what holding a worker costs (spawn + setns, join on drop).
//!
//! `cargo bench -p meta-netlink --bench run` (root: it creates a namespace).
//! `BENCH_ITERS` sets the calls per row (default 5000). Prints a Markdown table for
//! docs/BENCHMARKS.md.

use meta_netlink::{NamedNetns, Netlink, NetlinkOps, Netns};
use std::time::{Duration, Instant};

fn stats(label: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    let mean = v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
    format!("| {label} | {:.1} | {:.1} | {:.1} |", q(0.5), q(0.95), mean)
}

fn time(iters: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..iters / 10 {
        f(); // warm-up
    }
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let named = NamedNetns::create(&format!("mnl-bench-run-{}", std::process::id()))
        .expect("create a namespace (root?)");
    let ns: &Netns = named.netns();
    let key = "net/ipv4/conf/lo/arp_notify";
    let mut rows = Vec::new();
    // What a delegate does between hand-offs: a netlink request (here: a link dump of
    // the namespace, on its shared connection), not timed.
    let mut nl = Netlink::open(Some(ns)).unwrap();
    let mut interleaved = |label: &str, rows: &mut Vec<String>| {
        let mut v = Vec::with_capacity(iters);
        for i in 0..iters + iters / 10 {
            nl.links().unwrap();
            let t = Instant::now();
            ns.sysctl_get(key).unwrap();
            if i >= iters / 10 {
                v.push(t.elapsed());
            }
        }
        rows.push(stats(label, v));
    };
    interleaved(
        "`sysctl_get` after a link dump, fresh thread (no worker held)",
        &mut rows,
    );

    rows.push(stats(
        "`run` of an empty closure, fresh thread (no worker held)",
        time(iters, || ns.run(|| ()).unwrap()),
    ));
    rows.push(stats(
        "`sysctl_get`, fresh thread (no worker held)",
        time(iters, || {
            ns.sysctl_get(key).unwrap();
        }),
    ));
    let w = ns.worker().unwrap();
    rows.push(stats(
        "`run` of an empty closure, held worker",
        time(iters, || ns.run(|| ()).unwrap()),
    ));
    rows.push(stats(
        "`sysctl_get`, held worker",
        time(iters, || {
            ns.sysctl_get(key).unwrap();
        }),
    ));
    interleaved("`sysctl_get` after a link dump, held worker", &mut rows);
    let inline: Vec<Duration> = ns.run(|| time(iters, || ns.run(|| ()).unwrap())).unwrap();
    rows.push(stats(
        "nested `run` of an empty closure on the worker (inline)",
        inline,
    ));
    drop(w);
    rows.push(stats(
        "`worker()` + drop (spawn, setns, join)",
        time(iters / 5, || drop(ns.worker().unwrap())),
    ));

    println!("\n`Netns::run` hand-off, {iters} calls per row, µs per call\n");
    println!("| call | p50 µs | p95 µs | mean µs |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
