//! A node's burst of 3-network pods in Kubernetes mode under containerd, through the node
//! agent and without it, in one run: `BENCH_PODS` pods (default 100) per mode,
//! `BENCH_PAR` RunPodSandbox calls at a time (default 8), each pod with eth0 on the
//! cluster bridge (confDir) and the NADs `e2e/blue` (bridge) and `e2e/green` (macvlan)
//! from the real kube-apiserver, the conflist as deploy/ ships it (pod annotations from
//! the runtime). With the agent up the plugin asks it for the NADs and hands it the
//! network-status patch; with the agent stopped the plugin reads both NADs and patches
//! itself. Reports pods per second, RunPodSandbox p50/p99 and the API requests per pod of
//! the plugin's and the agent's users (the real audit log), and fails (exit 1) unless
//! every RunPodSandbox succeeds, every pod has its three interfaces with distinct
//! addresses and its network-status, and Stop+RemovePodSandbox of every pod leaves
//! nothing (links, host-local reservations, journal, sandboxes).
//!
//! `cargo bench -p meta-cni --bench burst_kube` (root). Prints a Markdown table.

#[path = "../tests/e2e_support/mod.rs"]
mod e2e_support;
use e2e_support::*;
use meta_tests::bench::pct;
use meta_tests::containerd::Containerd;
use meta_tests::cri::{PodSandboxConfig, parallel};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NODE: &str = "burst-node";
const PLUGIN_USER: &str = "system:serviceaccount:kube-system:meta-cni";
const AGENT_USER: &str = "system:serviceaccount:kube-system:meta-cni-agent";

/// One mode's burst.
pub struct Row {
    /// The row's name.
    pub label: String,
    /// Pods per second up (RunPodSandbox) and down (Stop+RemovePodSandbox).
    pub up_per_s: f64,
    pub down_per_s: f64,
    /// RunPodSandbox latency, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// API requests per pod during the ups, by the plugin's and by the agent's user
    /// (the agent's Events, IPAM reconciliation, watches and poll of its Node left out:
    /// not on the ADD path).
    pub plugin_requests: f64,
    pub agent_requests: f64,
    /// What went wrong (empty: every check passed).
    pub failures: Vec<String>,
}

/// The up and down of `uids` (pod name -> UID) through `ctd`.
fn phase(
    e: &E2e,
    ctd: &Containerd,
    label: &str,
    pods: &[(String, String)],
    par: usize,
    marker: &str,
) -> Row {
    let mut failures = Vec::new();
    let before = settled_events(e, &format!("{marker}-0")).len();
    let t = Instant::now();
    let ups = parallel(ctd.socket(), pods.len(), par, |cri, i| {
        let (name, uid) = &pods[i];
        let config = PodSandboxConfig::pod(name, NS, uid)
            .annotation(meta_crd::NETWORKS_ANNOTATION, "blue, green");
        let t = Instant::now();
        let r = cri.run_pod_sandbox(&config).map_err(|s| s.to_string());
        (r, t.elapsed())
    });
    let up_s = t.elapsed().as_secs_f64();
    let evs = settled_events(e, &format!("{marker}-1"));
    let count = |user: &str| {
        requests_of(&evs, before, user)
            .into_iter()
            .filter(|(verb, uri)| !(verb == "create" && uri.ends_with("/events")))
            .filter(|(_, uri)| !uri.starts_with("/apis/ipam.meta-cni.io/"))
            .filter(|(verb, _)| verb != "watch")
            // The agent's poll of its Node (for its podCIDR) runs in the background.
            .filter(|(_, uri)| !uri.starts_with("/api/v1/nodes/"))
            .count() as f64
            / pods.len() as f64
    };
    let (plugin_requests, agent_requests) = (count(PLUGIN_USER), count(AGENT_USER));
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        for user in [PLUGIN_USER, AGENT_USER] {
            let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
            for (verb, uri) in requests_of(&evs, before, user) {
                let uri = uri
                    .rsplit_once('/')
                    .map_or(uri.clone(), |(p, _)| p.to_string());
                *by.entry((verb, uri)).or_default() += 1;
            }
            eprintln!("{label}: {user}: {by:?}");
        }
    }
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for (i, (r, took)) in ups {
        lat.push(took);
        match r {
            Ok(id) => ids.push((i, id)),
            Err(s) => failures.push(format!("RunPodSandbox {}: {s}", pods[i].0)),
        }
    }
    // Every pod: three interfaces, one address each, none twice; network-status of all
    // three.
    let cri = ctd.cri();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, id) in &ids {
        let name = &pods[*i].0;
        let Some(path) = cri.sandbox(id).ok().and_then(|(_, info)| info.netns_path()) else {
            failures.push(format!("sandbox of {name}: no netns"));
            continue;
        };
        let ns = meta_netlink::Netns::open(&path).expect("sandbox netns");
        for (ifname, prefix) in [
            ("eth0", CLUSTER_PREFIX),
            ("net1", BLUE_PREFIX),
            ("net2", GREEN_PREFIX),
        ] {
            match meta_tests::iface_state(&ns, ifname) {
                Some(st) if st.addrs.len() == 1 && st.addrs[0].starts_with(prefix) => {
                    if let Some(other) = seen.insert(st.addrs[0].clone(), name.clone()) {
                        failures.push(format!("{} given to {other} and {name}", st.addrs[0]));
                    }
                }
                st => failures.push(format!("{name}: {ifname}: {st:?}")),
            }
        }
        let status = e.network_status(name).unwrap_or_default();
        if status.len() != 3 {
            failures.push(format!("{name}: network-status {status:?}"));
        }
    }
    let t = Instant::now();
    let downs = parallel(ctd.socket(), ids.len(), par, |cri, k| {
        let id = &ids[k].1;
        cri.stop_pod_sandbox(id)
            .and_then(|_| cri.remove_pod_sandbox(id))
            .map_err(|s| s.to_string())
    });
    let down_s = t.elapsed().as_secs_f64();
    for (k, r) in downs {
        if let Err(s) = r {
            failures.push(format!("Stop/RemovePodSandbox {}: {s}", pods[ids[k].0].0));
        }
    }
    e.wait_handoff(Duration::from_secs(60));
    let left = cri
        .list_pod_sandbox(None)
        .map(|l| l.len())
        .unwrap_or(usize::MAX);
    if left != 0 {
        failures.push(format!("{left} sandboxes left"));
    }
    let links = e.node_leftovers();
    if !links.is_empty() {
        failures.push(format!("node links left: {links:?}"));
    }
    let ips = e.reservations();
    if !ips.is_empty() {
        failures.push(format!("{} IP reservations left: {ips:?}", ips.len()));
    }
    let journal: Vec<String> = e
        .cache_entries()
        .into_iter()
        .filter(|k| !k.starts_with("status"))
        .collect();
    if !journal.is_empty() {
        failures.push(format!("journal left: {journal:?}"));
    }
    Row {
        label: label.to_string(),
        up_per_s: pods.len() as f64 / up_s,
        down_per_s: ids.len() as f64 / down_s,
        p50_ms: pct(&mut lat, 0.5),
        p99_ms: pct(&mut lat, 0.99),
        plugin_requests,
        agent_requests,
        failures,
    }
}

/// Both bursts in one fixture: the agent up, then the agent stopped.
pub fn run(pods: usize, par: usize) -> Vec<Row> {
    let e = E2e::setup(0);
    let (_agent_fwd, agent_kc) = agent_api_access(&e);
    let socket = e.w.path("agent/agent.sock");
    let (ctd_conf, _) = e.containerd_conflist(&socket);
    let mut set = BTreeMap::new();
    for mode in ["agent", "direct"] {
        let v: Vec<(String, String)> = (0..pods)
            .map(|i| {
                let name = format!("{mode}-{i}");
                let uid = create_node_pod(&e, NODE, &name, "blue, green");
                (name, uid)
            })
            .collect();
        set.insert(mode, v);
    }
    let env = agent_env(&e, NODE, &agent_kc, &socket, &[]);
    let mut agent = spawn_agent(&e, &env);
    assert!(
        agent_synced(&socket, |s| s.pods.count >= 2 * pods).is_some(),
        "the agent's caches never synced"
    );
    let ctd = Containerd::start(e.w.node.netns(), &e.bin, &ctd_conf);
    ctd.wait_network_ready(Duration::from_secs(20))
        .expect("containerd network ready");
    let up = phase(
        &e,
        &ctd,
        "Kubernetes mode, agent up",
        &set["agent"],
        par,
        "burst-agent",
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
    assert!(!socket.exists(), "the agent left its socket");
    let down = phase(
        &e,
        &ctd,
        "Kubernetes mode, agent stopped (the plugin's own client)",
        &set["direct"],
        par,
        "burst-direct",
    );
    drop(ctd);
    vec![up, down]
}

#[allow(dead_code)] // the test that includes this file has its own entry point
fn main() {
    let env = meta_tests::bench::env_usize;
    let (pods, par) = (env("BENCH_PODS", 100), env("BENCH_PAR", 8));
    let rows = run(pods, par);
    println!(
        "\n{pods} pods per mode through containerd, {par} RunPodSandbox calls at a time, 3 networks each\n"
    );
    println!(
        "| mode | pods/s up | RunPodSandbox p50 ms | p99 ms | pods/s down | API requests/pod (plugin) | API requests/pod (agent) | failures |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut bad = false;
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {} |",
            r.label,
            r.up_per_s,
            r.p50_ms,
            r.p99_ms,
            r.down_per_s,
            r.plugin_requests,
            r.agent_requests,
            r.failures.len()
        );
        for f in &r.failures {
            eprintln!("{}: {f}", r.label);
            bad = true;
        }
    }
    if bad {
        std::process::exit(1);
    }
}
