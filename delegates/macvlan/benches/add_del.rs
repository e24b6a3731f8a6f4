//! ADD+DEL latency and peak RSS: meta-macvlan vs the reference macvlan (+ host-local), the
//! same configuration, the same kind of world, in one run. Every iteration is a full
//! process spawn of the plugin (as a runtime does), run inside a node namespace whose
//! master is a veth end.
//!
//! `cargo bench -p meta-macvlan --bench add_del` (root). `BENCH_ITERS` sets the iterations
//! (default 200). Prints a Markdown table for docs/BENCHMARKS.md.

use meta_netlink::{LinkKind, LinkRequest, Netlink, NetlinkOps};
use meta_tests::{Invocation, REFERENCE_DIR, World, reference, run_in};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MASTER: &str = "benchup0";

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

/// The master: a veth pair in the node, both ends up.
fn add_master(w: &World) {
    let mut nl = Netlink::open(Some(w.node.netns())).expect("netlink");
    nl.link_add(&LinkRequest {
        name: MASTER.into(),
        kind: LinkKind::Veth {
            peer_name: format!("{MASTER}p"),
            peer_netns: None,
            peer_mac: None,
            peer_mtu: None,
        },
        mtu: None,
        mac: None,
        netns: None,
        up: true,
    })
    .expect("master");
    for name in [MASTER.to_string(), format!("{MASTER}p")] {
        let l = nl.link_by_name(&name).expect("links").expect("link");
        nl.link_set_up(l.index, true).expect("up");
    }
}

fn bench(label: &str, bin: &Path, iters: usize, extra_env: Vec<(&str, &str)>) -> Stats {
    let w = World::new(1);
    add_master(&w);
    let c = json!({"cniVersion": "1.0.0", "name": "bench", "type": "macvlan", "master": MASTER,
                   "ipam": {"type": "host-local", "subnet": "10.50.0.0/16", "dataDir": w.path("ipam")}});
    let stdin = c.to_string();
    let netns = w.pod(0);
    let mut s = Stats {
        add: Vec::new(),
        del: Vec::new(),
        rss_add: 0,
    };
    // 5 warm-up rounds (page cache, host-local files).
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
        .unwrap_or(200)
        .max(1);
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_meta-macvlan"));
    let refbin = reference("macvlan");
    let rows = [
        (
            "meta-macvlan (host-local in-process)",
            bench("ours", &ours, iters, vec![]),
        ),
        (
            "meta-macvlan + exec'd reference host-local",
            bench(
                "ours-exec",
                &ours,
                iters,
                vec![("META_CNI_FORCE_EXEC", "host-local")],
            ),
        ),
        (
            "reference macvlan + host-local 1.1.1",
            bench("reference", &refbin, iters, vec![]),
        ),
    ];
    println!(
        "\nADD+DEL, {iters} iterations each, one pod, cniVersion 1.0.0, bridge mode on a veth master, host-local /16\n"
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
