//! Pod-to-pod over the VXLAN overlay vs the same pods routed without encapsulation.
//!
//! Two node namespaces on an underlay bridge (MTU 1500), the overlay set up by
//! `overlay::reconcile`, one pod per node made by the `meta-vxlan` binary (eth0 MTU 1450).
//! First the traffic goes through the overlay (`10.244.2.0/24 via 10.244.2.0 dev meta.1
//! onlink`); then the nodes' routes to each other's pod subnet are replaced by plain routes
//! via the other node's underlay address (`10.244.2.0/24 via 192.168.77.3 dev eth0`, like
//! flannel's host-gw), so the same pods with the same MTU talk without encapsulation.
//!
//! Measured: iperf3 TCP, one stream, pod0 → pod1 (median of the runs, the two paths
//! interleaved); ping RTT both ways (average of 200 pings at 10 ms intervals). The overlay
//! device's TX counter proves which path each run took. Prints a Markdown table.
//!
//! `cargo bench -p meta-vxlan --bench overlay` as root, with the Debian package `iperf3`
//! installed. `BENCH_SECS` (default 5) sets the length of one iperf3 run, `BENCH_RUNS`
//! (default 3) the number of runs per path.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use meta_netlink::{NetlinkOps, RouteSpec};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn require_iperf3() {
    let ok = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "iperf3 not found: install the Debian package `iperf3` (apt-get install iperf3) \
             and run the benchmark again"
        );
        std::process::exit(2);
    }
}

/// An iperf3 server in a namespace, killed on drop.
struct Server(Child);

impl Server {
    fn start(ns: &str, port: u16) -> Server {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 server");
        let t = Instant::now();
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "ss", "-Hltn"])
                .output()
                .expect("ss");
            if String::from_utf8_lossy(&out.stdout).contains(&format!(":{port}")) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "iperf3 did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 run from `ns` to `dst`: received Gbit/s.
fn iperf(ns: &str, dst: IpAddr, port: u16, secs: u64) -> f64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-J", "-c"])
        .arg(dst.to_string())
        .args(["-p", &port.to_string(), "-t", &secs.to_string()])
        .output()
        .expect("iperf3 client");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in iperf3 output: {v}"))
        / 1e9
}

/// Average and mdev RTT (ms) of 200 pings.
fn rtt(ns: &str, dst: IpAddr) -> (f64, f64) {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-q", "-c", "200", "-i", "0.01",
        ])
        .arg(dst.to_string())
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap_or_else(|| panic!("no rtt line: {text}"));
    let nums: Vec<f64> = line
        .split('=')
        .nth(1)
        .unwrap_or_default()
        .trim()
        .trim_end_matches(" ms")
        .split('/')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    (nums[1], nums[3])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Packets the node's overlay device has sent.
fn overlay_tx(node: &str) -> u64 {
    let out = Command::new("ip")
        .args(["-n", node, "-j", "-s", "link", "show", "dev", "meta.1"])
        .output()
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
}

/// Routes the pod subnets through the overlay (reconcile puts the onlink routes back) or
/// directly via the other node's underlay address.
fn set_direct(c: &Cluster, direct: bool) {
    let all = c.records();
    for (i, n) in c.nodes.iter().enumerate() {
        let mut nl = n.nl();
        if direct {
            let other = &c.nodes[1 - i];
            let eth0 = nl.link_by_name("eth0").unwrap().expect("eth0").index;
            nl.route_replace(&RouteSpec {
                gw: Some(other.ip),
                oif: Some(eth0),
                ..RouteSpec::new(other.subnet)
            })
            .expect("direct route");
        } else {
            let rep = meta_overlay::reconcile(&mut nl, &n.overlay(), &all).expect("reconcile");
            assert!(rep.is_ok(), "{rep}");
        }
    }
}

struct Row {
    label: &'static str,
    gbps: Vec<f64>,
    rtt01: (f64, f64),
    rtt10: (f64, f64),
}

fn main() {
    require_root();
    require_iperf3();
    let secs = env_num("BENCH_SECS", 5);
    let runs = env_num("BENCH_RUNS", 3).max(1);
    let mut c = Cluster::new(2, 1500);
    c.overlay_up();
    let mut ips = Vec::new();
    for n in 0..2 {
        let p = c.new_pod();
        let conf = primary_conf(&c.nodes[n]);
        let r = invoke(
            c.nodes[n].ns.netns(),
            "ADD",
            &format!("bench{n}"),
            &c.pod_path(p),
            "eth0",
            &conf,
        )
        .ok();
        ips.push(result_ip(r.value()));
    }
    let (ip0, ip1) = (ips[0], ips[1]);
    let (p0, p1) = (c.pods[0].name(), c.pods[1].name());
    let node0 = c.nodes[0].ns.name();
    let _srv = Server::start(p1, 5201);
    let mut rows = [
        Row {
            label: "VXLAN overlay (meta.1)",
            gbps: Vec::new(),
            rtt01: (0.0, 0.0),
            rtt10: (0.0, 0.0),
        },
        Row {
            label: "direct routing, no encapsulation",
            gbps: Vec::new(),
            rtt01: (0.0, 0.0),
            rtt10: (0.0, 0.0),
        },
    ];
    // Interleaved, alternating which path goes first, so that load changes on the machine
    // hit both alike.
    for run in 0..runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for m in order {
            let direct = m == 1;
            set_direct(&c, direct);
            assert_reaches(&c.pods[0], ip1, &[]);
            let before = overlay_tx(node0);
            rows[m].gbps.push(iperf(p0, ip1, 5201, secs));
            let sent = overlay_tx(node0) - before;
            if direct {
                assert!(
                    sent < 10,
                    "direct run went through the overlay ({sent} packets)"
                );
            } else {
                assert!(
                    sent > 10_000,
                    "overlay run bypassed meta.1 ({sent} packets)"
                );
            }
        }
    }
    for (m, row) in rows.iter_mut().enumerate() {
        set_direct(&c, m == 1);
        assert_reaches(&c.pods[0], ip1, &[]);
        assert_reaches(&c.pods[1], ip0, &[]);
        row.rtt01 = rtt(p0, ip1);
        row.rtt10 = rtt(p1, ip0);
    }
    println!(
        "\n## Pod-to-pod: VXLAN overlay vs direct routing\n\n\
         Two node namespaces on one veth/bridge underlay (MTU 1500), pod eth0 MTU 1450 in \
         both cases; iperf3 TCP single stream pod0 -> pod1, {secs} s per run, median of \
         {runs}; ping RTT = average (mdev) of 200 pings at 10 ms. Kernel {}, {} CPUs.\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "| path | TCP throughput (Gbit/s) | runs | RTT pod0 -> pod1 (ms) | RTT pod1 -> pod0 (ms) |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        let runs: Vec<String> = r.gbps.iter().map(|g| format!("{g:.2}")).collect();
        println!(
            "| {} | {:.2} | {} | {:.3} ({:.3}) | {:.3} ({:.3}) |",
            r.label,
            median(r.gbps.clone()),
            runs.join(", "),
            r.rtt01.0,
            r.rtt01.1,
            r.rtt10.0,
            r.rtt10.1
        );
    }
    let ratio = median(rows[0].gbps.clone()) / median(rows[1].gbps.clone());
    println!(
        "\nOverlay throughput = {:.0}% of direct routing.",
        ratio * 100.0
    );
}
