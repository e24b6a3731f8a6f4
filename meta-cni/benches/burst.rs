//! A node's burst of pods under containerd: `BENCH_PODS` pods (default 100), `BENCH_PAR`
//! RunPodSandbox calls at a time (default 8), each pod with 3 networks through meta-cni
//! (eth0: the cluster bridge; net1: a bridge NAD; net2: a macvlan NAD on a veth parent in
//! the node namespace; NADs from `localNadDir`, the pods' annotations passed by
//! containerd), then the same number of pods through a conflist of the reference bridge
//! alone, in one run. Checks what the issue asks of it and fails (exit 1) otherwise: every
//! RunPodSandbox succeeds, no address is given twice, and after StopPodSandbox +
//! RemovePodSandbox of every pod nothing is left (links, host-local reservations,
//! meta-cni's journal and status files, sandboxes).
//!
//! `cargo bench -p meta-cni --bench burst` (root). Prints a Markdown table.

use meta_netlink::Netns;
use meta_tests::bench::pct;
use meta_tests::containerd::Containerd;
use meta_tests::cri::{PodSandboxConfig, parallel};
use meta_tests::{World, dir_contents, iface_state, link_names, reference, unique, veth_pair_in};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = "burst";
const PARENT: &str = "bpar0";
const PARENT_PEER: &str = "bpar1";

/// A node's CNI setup for containerd.
pub struct Setup {
    conf: PathBuf,
    bin: PathBuf,
    ipam: Vec<PathBuf>,
    cache: Option<PathBuf>,
    /// Interface names in each pod and the subnet prefix each must be in.
    ifaces: Vec<(&'static str, &'static str)>,
    /// Node links that are the setup's own (bridges, the macvlan parent pair).
    infra: Vec<String>,
    annotations: bool,
}

fn write(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn bin_dir(w: &World) -> PathBuf {
    let bin = w.path("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["bridge", "macvlan", "host-local", "loopback"] {
        std::os::unix::fs::symlink(reference(p), bin.join(p)).unwrap();
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_meta-cni"), bin.join("meta-cni")).unwrap();
    bin
}

/// meta-cni with 3 networks.
pub fn meta_setup(w: &World) -> Setup {
    veth_pair_in(w.node.netns(), PARENT, PARENT_PEER);
    let bin = bin_dir(w);
    let (cbr, bbr) = (unique("bcl"), unique("bbl"));
    let ipam: Vec<PathBuf> = ["ipam-cluster", "ipam-blue", "ipam-green"]
        .iter()
        .map(|d| w.path(d))
        .collect();
    let meta_net = w.path("meta-net.d");
    write(
        &meta_net.join("cluster.conflist"),
        &json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{
            "type": "bridge", "bridge": cbr, "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.80.0.0/16", "dataDir": ipam[0],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]}),
    );
    let nads = w.path("nads");
    write(
        &nads.join(NS).join("blue.json"),
        &json!({"cniVersion": "1.0.0", "name": "blue", "type": "bridge", "bridge": bbr,
                "ipam": {"type": "host-local", "subnet": "10.81.0.0/16", "dataDir": ipam[1]}}),
    );
    write(
        &nads.join(NS).join("green.json"),
        &json!({"cniVersion": "1.0.0", "name": "green", "type": "macvlan", "master": PARENT,
                "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": "10.82.0.0/16", "dataDir": ipam[2]}}),
    );
    let cache = w.path("meta-cache");
    let conf = w.path("ctd-net.d");
    write(
        &conf.join("00-meta-cni.conflist"),
        &json!({"cniVersion": "1.0.0", "name": "meta-burst", "plugins": [{
            "type": "meta-cni", "clusterNetwork": "cluster", "confDir": meta_net,
            "localNadDir": nads, "cniDir": cache, "binDir": bin,
            "capabilities": {"io.kubernetes.cri.pod-annotations": true}}]}),
    );
    Setup {
        conf,
        bin,
        ipam,
        cache: Some(cache),
        ifaces: vec![("eth0", "10.80."), ("net1", "10.81."), ("net2", "10.82.")],
        infra: vec![cbr, bbr, PARENT.into(), PARENT_PEER.into()],
        annotations: true,
    }
}

/// The reference bridge alone.
pub fn reference_setup(w: &World) -> Setup {
    let bin = bin_dir(w);
    let br = unique("bre");
    let ipam = vec![w.path("ipam-ref")];
    let conf = w.path("ctd-net.d");
    write(
        &conf.join("10-bridge.conflist"),
        &json!({"cniVersion": "1.0.0", "name": "ref-burst", "plugins": [{
            "type": "bridge", "bridge": br, "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.80.0.0/16", "dataDir": ipam[0],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]}),
    );
    Setup {
        conf,
        bin,
        ipam,
        cache: None,
        ifaces: vec![("eth0", "10.80.")],
        infra: vec![br],
        annotations: false,
    }
}

/// host-local reservations: files named by an IP address.
fn reservations(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter()
        .flat_map(|d| dir_contents(d).into_keys())
        .filter(|k| {
            Path::new(k)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .collect()
}

/// What a burst came to.
pub struct Outcome {
    /// The row's name.
    pub label: String,
    /// Wall time of all RunPodSandbox calls, seconds.
    pub up_s: f64,
    /// Wall time of all Stop+RemovePodSandbox calls, seconds.
    pub down_s: f64,
    /// RunPodSandbox latency, p50 (ms).
    pub p50_ms: f64,
    /// RunPodSandbox latency, p99 (ms).
    pub p99_ms: f64,
    /// Everything that went wrong (empty: every check passed).
    pub failures: Vec<String>,
}

/// `pods` pods up and down through a containerd of their own, `par` at a time.
pub fn burst(label: &str, pods: usize, par: usize, setup: fn(&World) -> Setup) -> Outcome {
    let w = World::new(0);
    let s = setup(&w);
    let ctd = Containerd::start(w.node.netns(), &s.bin, &s.conf);
    ctd.wait_network_ready(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{label}: containerd network not ready: {e}"));
    let mut failures = Vec::new();

    // Up: RunPodSandbox, `par` at a time.
    let t = Instant::now();
    let ups = parallel(ctd.socket(), pods, par, |cri, i| {
        let name = format!("pod-{i}");
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        let mut config = PodSandboxConfig::pod(&name, NS, &uid);
        if s.annotations {
            config = config.annotation(meta_crd::NETWORKS_ANNOTATION, "blue, green");
        }
        let t = Instant::now();
        let r = cri.run_pod_sandbox(&config).map_err(|e| e.to_string());
        (r, t.elapsed())
    });
    let up_s = t.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    for (i, (r, took)) in ups {
        lat.push(took);
        match r {
            Ok(id) => ids.push(id),
            Err(e) => failures.push(format!("RunPodSandbox pod-{i}: {e}")),
        }
    }

    // Every pod has its interfaces, each with one address of its network; none twice.
    let cri = ctd.cri();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for id in &ids {
        let netns = match cri.sandbox(id).map(|(_, info)| info.netns_path()) {
            Ok(Some(p)) => p,
            other => {
                failures.push(format!("sandbox {id}: no netns ({other:?})"));
                continue;
            }
        };
        let ns = Netns::open(&netns).unwrap();
        for (ifname, prefix) in &s.ifaces {
            match iface_state(&ns, ifname) {
                Some(st) if st.addrs.len() == 1 && st.addrs[0].starts_with(prefix) => {
                    let ip = st.addrs[0].clone();
                    if let Some(other) = seen.insert(ip.clone(), id.clone()) {
                        failures.push(format!("{ip} given to {other} and {id}"));
                    }
                }
                st => failures.push(format!("sandbox {id}: {ifname}: {st:?}")),
            }
        }
    }

    // Down: StopPodSandbox + RemovePodSandbox, `par` at a time.
    let t = Instant::now();
    let downs = parallel(ctd.socket(), ids.len(), par, |cri, i| {
        cri.stop_pod_sandbox(&ids[i])
            .and_then(|_| cri.remove_pod_sandbox(&ids[i]))
            .map_err(|e| e.to_string())
    });
    let down_s = t.elapsed().as_secs_f64();
    for (i, r) in downs {
        if let Err(e) = r {
            failures.push(format!("Stop/RemovePodSandbox {}: {e}", ids[i]));
        }
    }

    // Nothing left.
    let left = cri
        .list_pod_sandbox(None)
        .map(|l| l.len())
        .unwrap_or(usize::MAX);
    if left != 0 {
        failures.push(format!("{left} sandboxes left"));
    }
    let links: Vec<String> = link_names(w.node.netns())
        .into_iter()
        .filter(|l| l != "lo" && !s.infra.contains(l))
        .collect();
    if !links.is_empty() {
        failures.push(format!("node links left: {links:?}"));
    }
    let r = reservations(&s.ipam);
    if !r.is_empty() {
        failures.push(format!("{} IP reservations left: {r:?}", r.len()));
    }
    if let Some(cache) = &s.cache {
        let c: Vec<String> = dir_contents(cache).into_keys().collect();
        if !c.is_empty() {
            failures.push(format!("meta-cni cache left: {c:?}"));
        }
    }
    drop(ctd);
    Outcome {
        label: label.to_string(),
        up_s,
        down_s,
        p50_ms: pct(&mut lat, 0.5),
        p99_ms: pct(&mut lat, 0.99),
        failures,
    }
}

#[allow(dead_code)] // the test that includes this file has its own entry point
fn main() {
    let env = meta_tests::bench::env_usize;
    let (pods, par) = (env("BENCH_PODS", 100), env("BENCH_PAR", 8));
    let runs = [
        burst(
            "meta-cni, 3 networks (bridge cluster + bridge + macvlan)",
            pods,
            par,
            meta_setup,
        ),
        burst(
            "reference bridge + host-local alone, 1 network",
            pods,
            par,
            reference_setup,
        ),
    ];
    println!(
        "\n{pods} pods through containerd, {par} CRI calls at a time; RunPodSandbox latency per pod\n"
    );
    println!(
        "| conflist | pods/s up | RunPodSandbox p50 ms | p99 ms | pods/s down (Stop+Remove) | failures |"
    );
    println!("|---|---|---|---|---|---|");
    let mut bad = false;
    for r in &runs {
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.1} | {} |",
            r.label,
            pods as f64 / r.up_s,
            r.p50_ms,
            r.p99_ms,
            pods as f64 / r.down_s,
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
