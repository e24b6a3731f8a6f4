//! Concurrency: 200 allocations on one network from 8 threads (library) and from 8
//! concurrent streams of processes (the built binary, and the reference plugin sharing
//! the same data directory): no address is handed out twice, and DEL frees everything.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

const TOTAL: usize = 200;
const WORKERS: usize = 8;

fn ipam(dir: &Path) -> Value {
    json!({"type": "host-local", "dataDir": dir.to_str().expect("utf-8"),
        "ranges": [[{"subnet": "10.20.0.0/24"}], [{"subnet": "fd20::/120"}]]})
}

fn conf(dir: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "busy", "ipam": ipam(dir)})
}

/// Only the bookkeeping files are left.
fn assert_only_bookkeeping(dir: &Path) {
    let left: Vec<String> = snapshot(&dir.join("busy")).into_keys().collect();
    assert!(
        left.iter()
            .all(|n| n == "lock" || n.starts_with("last_reserved_ip.")),
        "left behind: {left:?}"
    );
}

/// Checks no duplicates among all addresses, and that the directory holds exactly them.
fn assert_unique(dir: &Path, all: &[String]) {
    let set: HashSet<&String> = all.iter().collect();
    assert_eq!(set.len(), all.len(), "duplicate addresses handed out");
    assert_eq!(all.len(), 2 * TOTAL);
    let files = snapshot(&dir.join("busy"))
        .into_keys()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .count();
    assert_eq!(files, 2 * TOTAL, "reservation files");
}

#[test]
fn threads_library() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nc = cni_core::NetConf::parse(conf(tmp.path()).to_string().as_bytes()).expect("conf");
    let cfg = Arc::new(
        meta_ipam::HostLocalConfig::from_conf(&nc, &cni_core::CniArgs::default()).expect("cfg"),
    );
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let cfg = Arc::clone(&cfg);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in (w..TOTAL).step_by(WORKERS) {
                    let r = meta_ipam::allocate(&cfg, &format!("t{i}"), "eth0").expect("allocate");
                    got.extend(r.ips.iter().map(|ip| ip.address.addr().to_string()));
                }
                got
            })
        })
        .collect();
    let all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    assert_unique(tmp.path(), &all);
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let cfg = Arc::clone(&cfg);
            std::thread::spawn(move || {
                for i in (w..TOTAL).step_by(WORKERS) {
                    meta_ipam::release(&cfg, &format!("t{i}"), "eth0").expect("release");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_only_bookkeeping(tmp.path());
}

/// Runs TOTAL ADDs then TOTAL DELs through `plugin_for(i)` from WORKERS threads, each
/// spawning processes.
fn processes(plugin_for: fn(usize) -> &'static str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let netns = Arc::new(fake_netns(tmp.path()));
    let stdin = Arc::new(conf(tmp.path()).to_string());
    let run_all = |cmd: &'static str| -> Vec<String> {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let netns = Arc::clone(&netns);
                let stdin = Arc::clone(&stdin);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for i in (w..TOTAL).step_by(WORKERS) {
                        let cid = format!("p{i}");
                        let plugin = plugin_for(i);
                        let call = Call {
                            cmd,
                            cid: &cid,
                            ifname: "eth0",
                            args: "",
                            netns: &netns,
                        };
                        let o = run(plugin, &call, &stdin);
                        assert_eq!(o.rc, 0, "{plugin} {cmd} {cid}: {} {}", o.raw, o.stderr);
                        if let Some(ips) = o.json["ips"].as_array() {
                            for ip in ips {
                                let a = ip["address"].as_str().expect("address");
                                got.push(a.split('/').next().unwrap_or(a).to_string());
                            }
                        }
                    }
                    got
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    };
    let all = run_all("ADD");
    assert_unique(tmp.path(), &all);
    let none = run_all("DEL");
    assert!(none.is_empty());
    assert_only_bookkeeping(tmp.path());
}

#[test]
fn processes_ours() {
    processes(|_| OURS_HOST_LOCAL);
}

/// Ours and the reference, interleaved on one data directory: the lock and the layout are
/// shared, so they never hand out the same address.
#[test]
fn processes_mixed_with_reference() {
    require(REF_HOST_LOCAL);
    processes(|i| {
        if i % 2 == 0 {
            OURS_HOST_LOCAL
        } else {
            REF_HOST_LOCAL
        }
    });
}
