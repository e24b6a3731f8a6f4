//! ADD and DEL of a 3-network pod (cluster bridge from confDir, NADs `e2e/blue` bridge
//! and `e2e/green` macvlan, host-local everywhere) by the real meta-cni binary in the
//! e2e fixture's node namespace, side by side in one run, interleaved round by round:
//!
//! - Kubernetes mode with the real `meta-cni-agent` answering on its socket (the plugin
//!   reads nothing; the agent patches network-status on its long-lived connection);
//! - Kubernetes mode without the agent (the plugin's own client: GET pod, GET both NADs,
//!   PATCH network-status);
//! - local mode (no API at all: annotations from runtimeConfig, NADs from a directory).
//!
//! Also the round trip of one network-status merge patch on an open connection (a
//! long-lived client with the plugin's token), measured alone in the same run: the bar
//! is agent ADD p50 <= local ADD p50 + that round trip's p50 + 2 ms.
//!
//! `BENCH_ITERS=50 cargo bench -p meta-cni --bench kube_modes` (root).

#[path = "../tests/e2e_support/mod.rs"]
mod e2e_support;
use e2e_support::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use meta_tests::bench::pct;
use serde_json::json;
use std::time::{Duration, Instant};

const NODE: &str = "bench-node";

fn main() {
    let iters = meta_tests::bench::iters(50);
    let e = E2e::setup(1);
    // Local mode's NADs: the same configurations as the API server's, in a directory.
    let local_nads = e.w.path("local-nads");
    {
        let nads: Api<meta_crd::NetworkAttachmentDefinition> = Api::namespaced(e.admin.clone(), NS);
        for name in ["blue", "green"] {
            let n = e.rt.block_on(nads.get(name)).expect("get NAD");
            let d = local_nads.join(NS);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join(format!("{name}.json")),
                serde_json::to_string(&n).unwrap(),
            )
            .unwrap();
        }
    }
    let modes = ["agent", "no-agent"];
    let mut uids = Vec::new();
    for i in 0..iters {
        for m in modes {
            let name = format!("b-{m}-{i}");
            uids.push((
                name.clone(),
                create_node_pod(&e, NODE, &name, "blue, green"),
            ));
        }
    }
    // The agent, as in agent_audit.rs: its own ServiceAccount and forwarder.
    let (_agent_fwd, agent_kc) = agent_api_access(&e);
    let socket = e.w.path("agent/agent.sock");
    let env = agent_env(
        &e,
        NODE,
        &agent_kc,
        &socket,
        &[("META_CNI_AGENT_IPAM_RECONCILE_INTERVAL", "0".to_string())],
    );
    let mut agent = spawn_agent(&e, &env);
    agent_synced(&socket, |s| s.pods.count == uids.len()).expect("the agent's caches never synced");
    let with_agent = e.conf(json!({"agentSocket": socket}));
    let without = e.conf(json!({}));
    let mut local = e.conf(json!({
        "localNadDir": local_nads,
        "capabilities": {"io.kubernetes.cri.pod-annotations": true},
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations":
            {meta_crd::NETWORKS_ANNOTATION: "blue, green"}}
    }));
    local.as_object_mut().unwrap().remove("kubeconfig");

    let mut adds: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    let mut dels: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    let mut rtt = Vec::new();
    let pods: Api<Pod> = Api::namespaced(e.sa.clone(), NS);
    for i in 0..iters {
        for (k, conf) in [&with_agent, &without, &local].into_iter().enumerate() {
            let (name, uid) = match k {
                0 | 1 => uids[i * 2 + k].clone(),
                _ => (format!("b-local-{i}"), format!("uid-local-{i}")),
            };
            let cid = format!("cid-{k}-{i}");
            let t = Instant::now();
            e.run("ADD", &cid, 0, &name, &uid, conf).ok();
            adds[k].push(t.elapsed());
            let t = Instant::now();
            e.run("DEL", &cid, 0, &name, &uid, conf).ok();
            dels[k].push(t.elapsed());
        }
        // One network-status patch on the open connection, alone.
        let patch = json!({"metadata": {"annotations":
            {meta_crd::NETWORK_STATUS_ANNOTATION: format!("[{{\"name\":\"rtt-{i}\"}}]")}}});
        let t = Instant::now();
        e.rt.block_on(pods.patch_status(
            &uids[i * 2].0,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ))
        .expect("patch pods/status");
        rtt.push(t.elapsed());
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
    e.wait_handoff(Duration::from_secs(30));
    assert_eq!(e.reservations(), Vec::<String>::new(), "IPs left");

    println!(
        "{iters} rounds; each round one ADD + DEL per mode (real meta-cni binary, 3 networks), then one network-status patch alone"
    );
    println!("| mode | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms |");
    println!("|---|---|---|---|---|");
    let labels = [
        "Kubernetes mode, agent up",
        "Kubernetes mode, no agent",
        "local mode (no API)",
    ];
    let mut p50 = [0.0; 3];
    for k in 0..3 {
        p50[k] = pct(&mut adds[k], 0.5);
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            labels[k],
            p50[k],
            pct(&mut adds[k], 0.99),
            pct(&mut dels[k], 0.5),
            pct(&mut dels[k], 0.99)
        );
    }
    let rtt50 = pct(&mut rtt, 0.5);
    println!(
        "network-status patch on an open connection: p50 {:.2} ms, p99 {:.2} ms",
        rtt50,
        pct(&mut rtt, 0.99)
    );
    println!(
        "bar: agent ADD p50 {:.2} ms <= local p50 {:.2} + patch p50 {:.2} + 2 = {:.2} ms: {}",
        p50[0],
        p50[2],
        rtt50,
        p50[2] + rtt50 + 2.0,
        if p50[0] <= p50[2] + rtt50 + 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
