//! 64 ADDs from 8 parallel plugin processes on one master: every pod gets its own
//! macvlan and IP, no duplicate MAC or IP; all released and removed after DEL.

mod common;
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

#[test]
fn sixty_four_adds_from_eight_processes() {
    const N: usize = 64;
    const WORKERS: usize = 8;
    let w = Arc::new(world(N));
    let c = Arc::new(conf(
        "1.0.0",
        "parallel",
        json!({"master": MASTER,
               "ipam": host_local(&w.path("ipam"), json!([[{"subnet": "10.98.0.0/16"}]]))}),
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
    let field = |path: &str| -> HashSet<String> {
        results
            .iter()
            .map(|r| {
                r.pointer(path)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(field("/ips/0/address").len(), N, "duplicate IPs handed out");
    assert_eq!(field("/interfaces/0/mac").len(), N, "duplicate MACs");
    for (i, p) in w.pods.iter().enumerate() {
        assert_eq!(link_names(p.netns()), vec!["eth0", "lo"], "pod {i}");
    }
    assert_eq!(ip_files(&w.path("ipam")).len(), N);
    run_all("DEL");
    assert!(ip_files(&w.path("ipam")).is_empty(), "not released");
    for p in &w.pods {
        assert_eq!(link_names(p.netns()), vec!["lo"]);
    }
    assert_eq!(link_names(w.node.netns()), vec!["lo", MASTER, "mvup0p"]);
}
