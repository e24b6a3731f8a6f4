//! 200 ADDs from 8 parallel plugin processes on one network: no duplicate IP, every
//! address released after DEL.

mod common;
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

#[test]
fn two_hundred_adds_from_eight_processes() {
    const N: usize = 200;
    const WORKERS: usize = 8;
    let w = Arc::new(World::new(N));
    let c = Arc::new(conf(
        "1.0.0",
        "parallel",
        json!({"bridge": "parbr", "isGateway": true,
               "ipam": host_local(&w.path("ipam"), json!([[{"subnet": "10.30.0.0/16"}]]))}),
    ));
    let run_all = |verb: &'static str| -> Vec<serde_json::Value> {
        let mut handles = Vec::new();
        for k in 0..WORKERS {
            let (w, c) = (Arc::clone(&w), Arc::clone(&c));
            handles.push(std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in (k..N).step_by(WORKERS) {
                    let r = invoke(&w, &ours(), verb, &format!("par-{i}"), i, "eth0", &c);
                    assert_eq!(r.code, 0, "{verb} {i}: {} {}", r.stdout, r.stderr);
                    if let Some(v) = r.json {
                        out.push(v);
                    }
                }
                out
            }));
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    };
    let results = run_all("ADD");
    assert_eq!(results.len(), N);
    let ips: HashSet<String> = results
        .iter()
        .map(|r| {
            r["ips"][0]["address"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(ips.len(), N, "duplicate IPs handed out");
    let files = dir_contents(&w.path("ipam"));
    let reserved = files
        .keys()
        .filter(|k| !k.ends_with("lock") && !k.contains("last_reserved"))
        .count();
    assert_eq!(reserved, N);
    run_all("DEL");
    let files = dir_contents(&w.path("ipam"));
    let left: Vec<&String> = files
        .keys()
        .filter(|k| !k.ends_with("lock") && !k.contains("last_reserved"))
        .collect();
    assert!(left.is_empty(), "not released: {left:?}");
    // Only the bridge stays on the node.
    assert_eq!(link_names(w.node.netns()), vec!["lo", "parbr"]);
}
