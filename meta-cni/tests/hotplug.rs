//! Hot-plug with the real `meta-cni-agent` against the real kube-apiserver fixture: a pod
//! ADDed by the real meta-cni binary (cluster network only) in a test pod netns gets a
//! macvlan (`green`, parent a veth end in the node netns) and a bridge network (`blue`)
//! when its networks annotation is patched; the latency until both are in the pod netns
//! and in network-status is printed. Then one is removed, then the agent is killed (-9)
//! right after a hot-plug starts and restarted, and pod, journal and network-status agree
//! again; finally DEL through the binary leaves nothing (links, journal, host-local IPs),
//! hot-plugged interfaces included.

mod e2e_support;
use e2e_support::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

const NODE: &str = "hotplug-node";
const POD: &str = "hp";
const CID: &str = "cid-hotplug";

fn start_agent(e: &E2e, env: &[(&'static str, String)], socket: &Path) -> Child {
    let agent = spawn_agent(e, env);
    if agent_synced(socket, |_| true).is_some() {
        agent
    } else {
        let log = stop(agent, nix::sys::signal::Signal::SIGKILL);
        panic!("the agent's caches never synced; its log:\n{log}");
    }
}

/// A pod of the agent's node without secondary networks; returns its UID.
fn create_plain_pod(e: &E2e, name: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "localhost/e2e/app:1"}]}
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(e.admin.clone(), NS);
    e.rt.block_on(pods.create(&PostParams::default(), &pod))
        .expect("create pod")
        .metadata
        .uid
        .expect("uid")
}

fn stop(mut agent: Child, sig: nix::sys::signal::Signal) -> String {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), sig);
    let _ = agent.wait();
    let mut log = String::new();
    if let Some(mut e) = agent.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    log
}

fn set_networks(e: &E2e, networks: &str) {
    let api: Api<Pod> = Api::namespaced(e.admin.clone(), NS);
    let patch = json!({"metadata": {"annotations": {meta_crd::NETWORKS_ANNOTATION: networks}}});
    e.rt.block_on(api.patch(POD, &PatchParams::default(), &Patch::Merge(&patch)))
        .expect("patch networks");
}

/// (pod links, journal attachments (network, ifname, state), network-status (network,
/// interface)) now.
type View = (
    Vec<String>,
    Vec<(String, String, String)>,
    Vec<(String, String)>,
);

fn view(e: &E2e) -> View {
    let links = meta_tests::link_names(e.w.pods[0].netns());
    let journal = e.journal_attachments(CID);
    let mut status: Vec<(String, String)> = e
        .network_status(POD)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.interface))
        .collect();
    status.sort();
    (links, journal, status)
}

/// What the three must say for the pod's networks being `nets` ((network, ifname) after
/// eth0 on the cluster network).
fn agreeing(nets: &[(&str, &str)]) -> View {
    let mut links = vec!["eth0".to_string(), "lo".to_string()];
    let mut journal = vec![(
        "cluster".to_string(),
        "eth0".to_string(),
        "Added".to_string(),
    )];
    let mut status = vec![("cluster".to_string(), "eth0".to_string())];
    for (n, i) in nets {
        links.push(i.to_string());
        journal.push((format!("{NS}/{n}"), i.to_string(), "Added".to_string()));
        status.push((format!("{NS}/{n}"), i.to_string()));
    }
    links.sort();
    status.sort();
    (links, journal, status)
}

/// Waits until [`view`] is `want`; returns how long that took.
fn wait_view(e: &E2e, want: &View, ctx: &str) -> Duration {
    let t = Instant::now();
    loop {
        let v = view(e);
        if v == *want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{ctx}: pod, journal, network-status {v:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn hotplug_attaches_detaches_and_survives_a_killed_agent() {
    let e = E2e::setup(1);
    // The agent reaches the API server through a forwarder of its own, so the plugin's
    // (e.fwd) counts only the plugin's connections.
    let (_agent_fwd, agent_kc) = agent_api_access(&e);
    let socket = e.w.path("agent/agent.sock");
    let conf = e.conf(json!({"agentSocket": socket}));
    let conf_file = e.w.path("00-meta-cni.conflist");
    std::fs::write(
        &conf_file,
        json!({"cniVersion": "1.0.0", "name": "meta-e2e", "plugins": [conf]}).to_string(),
    )
    .unwrap();
    let env = agent_env(
        &e,
        NODE,
        &agent_kc,
        &socket,
        &[
            (
                "META_CNI_AGENT_HOTPLUG_CONF",
                conf_file.display().to_string(),
            ),
            ("META_CNI_AGENT_DEBOUNCE", "10ms".to_string()),
        ],
    );
    // A pod of the agent's node, no secondary networks yet.
    let uid = create_plain_pod(&e, POD);
    let agent = start_agent(&e, &env, &socket);
    e.run("ADD", CID, 0, POD, &uid, &conf).ok();
    wait_view(&e, &agreeing(&[]), "after ADD");

    // Add a macvlan and a bridge network.
    set_networks(&e, "green, blue");
    let took = wait_view(
        &e,
        &agreeing(&[("green", "net1"), ("blue", "net2")]),
        "hot-plug of green and blue",
    );
    eprintln!(
        "hot-plug of a macvlan and a bridge network: in the pod netns, the journal and network-status after {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(e.reservations().len(), 3, "{:?}", e.reservations());

    // Remove one: gone from all three, its IP released.
    set_networks(&e, "blue");
    wait_view(&e, &agreeing(&[("blue", "net2")]), "removal of green");
    assert_eq!(e.reservations().len(), 2, "{:?}", e.reservations());

    // kill -9 right after a hot-plug starts (its journal entry grew), then restart.
    set_networks(&e, "blue, green");
    let t = Instant::now();
    loop {
        let (_, j, _) = view(&e);
        if j.len() == 3 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the hot-plug never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let log = stop(agent, nix::sys::signal::Signal::SIGKILL);
    eprintln!(
        "killed mid hot-plug: journal {:?}, links {:?}",
        view(&e).1,
        view(&e).0
    );
    let agent = start_agent(&e, &env, &socket);
    wait_view(
        &e,
        &agreeing(&[("blue", "net2"), ("green", "net1")]),
        &format!("after kill -9 and restart; first agent's log:\n{log}"),
    );
    assert_eq!(e.reservations().len(), 3, "{:?}", e.reservations());

    // A change that fails (a macvlan whose parent does not exist) is rolled back: pod,
    // journal and network-status as before, no IP held, and a Warning Event on the pod.
    e.create_nad(
        NS,
        "broken",
        &json!({"cniVersion": "1.0.0", "name": "broken", "type": "macvlan",
                "master": "nosuchpar0", "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": "10.79.0.0/24",
                         "dataDir": e.w.path("ipam-broken")}}),
    );
    set_networks(&e, "blue, green, broken");
    let t = Instant::now();
    let warning = loop {
        let evs: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(e.admin.clone(), NS);
        let found =
            e.rt.block_on(evs.list(&kube::api::ListParams::default()))
                .expect("list events")
                .items
                .into_iter()
                .find(|ev| {
                    ev.reason.as_deref() == Some("FailedHotplugInterface")
                        && ev.involved_object.name.as_deref() == Some(POD)
                });
        if let Some(ev) = found {
            break ev;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no FailedHotplugInterface Event on the pod"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.involved_object.uid.as_deref(), Some(uid.as_str()));
    let msg = warning.message.clone().unwrap_or_default();
    assert!(
        msg.contains("rolled back") && msg.contains("broken") && msg.contains("nosuchpar0"),
        "{msg}"
    );
    assert_eq!(
        view(&e),
        agreeing(&[("blue", "net2"), ("green", "net1")]),
        "after the failed change"
    );
    assert_eq!(e.reservations().len(), 3, "{:?}", e.reservations());
    assert_eq!(
        meta_tests::dir_contents(&e.w.path("ipam-broken"))
            .into_keys()
            .filter(|k| k
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .parse::<std::net::IpAddr>()
                .is_ok())
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "the failed attachment's IP was not released"
    );
    eprintln!(
        "failed hot-plug rolled back, Event after {:?}: {msg}",
        t.elapsed()
    );
    set_networks(&e, "blue, green");

    // DEL removes everything, the hot-plugged interfaces included.
    e.run("DEL", CID, 0, POD, &uid, &conf).ok();
    let log = stop(agent, nix::sys::signal::Signal::SIGTERM);
    e.wait_handoff(Duration::from_secs(30));
    assert_eq!(
        meta_tests::link_names(e.w.pods[0].netns()),
        vec!["lo"],
        "links left in the pod; agent log:\n{log}"
    );
    assert_eq!(e.node_leftovers(), Vec::<String>::new(), "node links left");
    assert_eq!(e.reservations(), Vec::<String>::new(), "IPs left");
    let left: Vec<_> = e
        .cache_entries()
        .into_iter()
        .filter(|k| !k.starts_with("status"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "journal left");
}

/// Hot-plug of a pod sandbox that containerd 1.6 (CRI) set up through meta-cni: the
/// agent attaches a macvlan and a bridge network into the sandbox when the annotation is
/// patched (latency printed), removes one; the agent is killed (-9) right after a
/// hot-plug into the sandbox starts and restarted, and sandbox, journal and
/// network-status agree again; StopPodSandbox + RemovePodSandbox then leave nothing, the
/// hot-plugged interfaces included.
#[test]
fn hotplug_under_containerd() {
    use meta_tests::containerd::Containerd;
    use meta_tests::cri::PodSandboxConfig;
    const CPOD: &str = "hp-ctd";
    let e = E2e::setup(0);
    let (_agent_fwd, agent_kc) = agent_api_access(&e);
    let socket = e.w.path("agent/agent.sock");
    let (ctd_conf, conf_file) = e.containerd_conflist(&socket);
    let env = agent_env(
        &e,
        NODE,
        &agent_kc,
        &socket,
        &[
            (
                "META_CNI_AGENT_HOTPLUG_CONF",
                conf_file.display().to_string(),
            ),
            ("META_CNI_AGENT_DEBOUNCE", "10ms".to_string()),
        ],
    );
    let uid = create_plain_pod(&e, CPOD);
    let pods: Api<Pod> = Api::namespaced(e.admin.clone(), NS);
    let mut agent = start_agent(&e, &env, &socket);
    let ctd = Containerd::start(e.w.node.netns(), &e.bin, &ctd_conf);
    ctd.wait_network_ready(Duration::from_secs(10)).unwrap();
    let cri = ctd.cri();
    let id = cri
        .run_pod_sandbox(&PodSandboxConfig::pod(CPOD, NS, &uid))
        .unwrap_or_else(|s| panic!("RunPodSandbox: {s}\n{}", ctd.log_tail(30)));
    let netns_path = cri.sandbox(&id).unwrap().1.netns_path().expect("netns");
    let sandbox = meta_netlink::Netns::open(&netns_path).unwrap();
    // (links of the sandbox, network-status (network, interface), journal attachments
    // (network, ifname, state)), sorted.
    type Seen = (
        Vec<String>,
        Vec<(String, String)>,
        Vec<(String, String, String)>,
    );
    let journal = || -> Vec<(String, String, String)> {
        let mut j = e.journal_attachments(&id);
        j.sort();
        j
    };
    let seen = || -> Seen {
        let links = meta_tests::link_names(&sandbox);
        let mut st: Vec<(String, String)> = e
            .network_status(CPOD)
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.name, s.interface))
            .collect();
        st.sort();
        (links, st, journal())
    };
    let want = |nets: &[(&str, &str)]| -> Seen {
        let mut links = vec!["eth0".to_string(), "lo".to_string()];
        let mut st = vec![("cluster".to_string(), "eth0".to_string())];
        let mut j = vec![(
            "cluster".to_string(),
            "eth0".to_string(),
            "Added".to_string(),
        )];
        for (n, i) in nets {
            links.push(i.to_string());
            st.push((format!("{NS}/{n}"), i.to_string()));
            j.push((format!("{NS}/{n}"), i.to_string(), "Added".to_string()));
        }
        links.sort();
        st.sort();
        j.sort();
        (links, st, j)
    };
    let wait = |w: &Seen, ctx: &str| {
        let t = Instant::now();
        loop {
            let v = seen();
            if v == *w {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{ctx}: sandbox and network-status {v:?}, want {w:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait(&want(&[]), "after RunPodSandbox");
    let patch = |nets: &str| {
        let patch = json!({"metadata": {"annotations": {meta_crd::NETWORKS_ANNOTATION: nets}}});
        e.rt.block_on(pods.patch(CPOD, &PatchParams::default(), &Patch::Merge(&patch)))
            .expect("patch networks");
    };
    patch("green, blue");
    let took = wait(
        &want(&[("green", "net1"), ("blue", "net2")]),
        "hot-plug of green and blue",
    );
    eprintln!(
        "containerd sandbox: hot-plug of a macvlan and a bridge network in the sandbox and network-status after {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(
        iface_kind(&sandbox, "net1").as_deref(),
        Some("macvlan"),
        "net1"
    );
    patch("blue");
    wait(&want(&[("blue", "net2")]), "removal of green");
    assert_eq!(e.reservations().len(), 2, "{:?}", e.reservations());
    // kill -9 of the agent right after a hot-plug into the sandbox starts (its journal
    // entry grew), then a restart: sandbox, journal and network-status agree again.
    patch("blue, green");
    let t = Instant::now();
    while journal().len() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the hot-plug never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let log = stop(agent, nix::sys::signal::Signal::SIGKILL);
    eprintln!(
        "containerd sandbox: agent killed mid hot-plug, journal {:?}, links {:?}",
        journal(),
        meta_tests::link_names(&sandbox)
    );
    agent = start_agent(&e, &env, &socket);
    let took = wait(
        &want(&[("blue", "net2"), ("green", "net1")]),
        &format!("after kill -9 and restart; first agent's log:\n{log}"),
    );
    eprintln!(
        "containerd sandbox: after kill -9 mid hot-plug, the restarted agent had sandbox, journal and network-status agreeing in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(e.reservations().len(), 3, "{:?}", e.reservations());
    // Teardown as kubelet does it: the hot-plugged interface goes too.
    cri.stop_pod_sandbox(&id).expect("StopPodSandbox");
    cri.remove_pod_sandbox(&id).expect("RemovePodSandbox");
    let log = stop(agent, nix::sys::signal::Signal::SIGTERM);
    e.wait_handoff(Duration::from_secs(30));
    assert_eq!(
        e.node_leftovers(),
        Vec::<String>::new(),
        "node links left; agent log:\n{log}"
    );
    assert_eq!(e.reservations(), Vec::<String>::new(), "IPs left");
    let left: Vec<_> = e
        .cache_entries()
        .into_iter()
        .filter(|k| !k.starts_with("status"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "journal left");
}

fn iface_kind(ns: &meta_netlink::Netns, ifname: &str) -> Option<String> {
    meta_tests::iface_state(ns, ifname).and_then(|s| s.kind)
}
