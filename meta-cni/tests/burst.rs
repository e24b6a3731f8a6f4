//! The burst benchmark's checks in the test suite, on fewer pods: 24 pods with 3 networks
//! each through containerd, 8 RunPodSandbox calls at a time: every call succeeds, no
//! address is given twice, and Stop+RemovePodSandbox of all of them leaves nothing
//! (links, reservations, journal, sandboxes). `cargo bench -p meta-cni --bench burst`
//! runs 100 and reports pods per second beside the reference bridge.

#[allow(dead_code)]
#[path = "../benches/burst.rs"]
mod burst;

#[test]
fn a_burst_of_pods_under_containerd_leaves_nothing() {
    let r = burst::burst("meta-cni", 24, 8, burst::meta_setup);
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    eprintln!(
        "24 pods, 8 at a time: {:.1} pods/s up, {:.1} down; RunPodSandbox p50 {:.0} ms",
        24.0 / r.up_s,
        24.0 / r.down_s,
        r.p50_ms
    );
}
