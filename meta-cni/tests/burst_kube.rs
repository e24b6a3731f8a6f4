//! The Kubernetes-mode burst benchmark's checks in the test suite, on fewer pods: 16
//! 3-network pods per mode through containerd, 8 RunPodSandbox calls at a time, with the
//! node agent up and with it stopped: every call succeeds, every pod has its interfaces
//! and network-status, nothing is left afterwards; with the agent up the plugin makes no
//! API request at all. `cargo bench -p meta-cni --bench burst_kube` runs 100 per mode
//! and reports pods per second.

#[allow(dead_code)]
#[path = "../benches/burst_kube.rs"]
mod burst_kube;

#[test]
fn a_burst_through_the_agent_and_without_it_under_containerd() {
    let rows = burst_kube::run(16, 8);
    for r in &rows {
        assert!(r.failures.is_empty(), "{}: {:#?}", r.label, r.failures);
        eprintln!(
            "{}: {:.1} pods/s up, {:.1} down; RunPodSandbox p50 {:.0} ms; API requests/pod plugin {:.2}, agent {:.2}",
            r.label, r.up_per_s, r.down_per_s, r.p50_ms, r.plugin_requests, r.agent_requests
        );
    }
    assert_eq!(
        rows[0].plugin_requests, 0.0,
        "agent up: the plugin asks nothing"
    );
    assert_eq!(
        rows[0].agent_requests, 1.0,
        "agent up: one network-status patch per pod"
    );
    // Agent stopped: both NADs and the patch, per pod.
    assert_eq!(rows[1].plugin_requests, 3.0, "agent stopped");
    assert_eq!(rows[1].agent_requests, 0.0, "agent stopped");
}
