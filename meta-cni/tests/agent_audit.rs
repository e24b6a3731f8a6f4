//! What one ADD of a 3-network pod (cluster network from confDir, NADs `blue` and
//! `green`) asks the API server, counted in the real kube-apiserver's audit log by the
//! plugin's user (ServiceAccount kube-system/meta-cni) and the agent's
//! (kube-system/meta-cni-agent): with the real `meta-cni-agent` answering on its socket
//! (the plugin asks nothing; the agent's one network-status patch) and with the agent
//! stopped (the plugin's reads of before: the pod and both NADs, then its patch). Direct runs of the real binary in the
//! e2e node namespace (see `e2e_support`); the pod annotations come from the API (the
//! runtime passes none), so the pod itself is one of the reads the agent saves.

mod e2e_support;
use e2e_support::*;
use serde_json::json;
use std::io::Read;
use std::process::Child;

const PLUGIN_USER: &str = "system:serviceaccount:kube-system:meta-cni";
const AGENT_USER: &str = "system:serviceaccount:kube-system:meta-cni-agent";
const NODE: &str = "audit-node";

fn stop(mut agent: Child) -> String {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
    let mut log = String::new();
    if let Some(mut e) = agent.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    log
}

#[test]
fn add_reads_nothing_from_the_api_server_with_the_agent_up() {
    let e = E2e::setup(2);
    // The agent: its own ServiceAccount, the API through the node's forwarder, every
    // path in the World's scratch directory; its Node does not exist, so it never gets
    // to the data plane (it waits for the podCIDR) while its caches serve.
    // The agent reaches the API server through a forwarder of its own, so the plugin's
    // (e.fwd) counts only the plugin's connections.
    let (_agent_fwd, agent_kc) = agent_api_access(&e);
    let socket = e.w.path("agent/agent.sock");
    let env = agent_env(&e, NODE, &agent_kc, &socket, &[]);
    let uid_a = create_node_pod(&e, NODE, "audit-a", "blue, green");
    let uid_b = create_node_pod(&e, NODE, "audit-b", "blue, green");
    let agent = spawn_agent(&e, &env);
    let s = agent_synced(&socket, |_| true).expect("the agent's caches never synced");
    assert_eq!((s.nads.count, s.pods.count), (2, 2), "{s:?}");
    let conf = e.conf(json!({"agentSocket": socket}));

    // Agent up.
    let before = settled_events(&e, "marker-up-0").len();
    let plugin_fwd = e.fwd.as_ref().expect("forwarder");
    let conns = plugin_fwd.accepted();
    e.run("ADD", "cid-audit-a", 0, "audit-a", &uid_a, &conf)
        .ok();
    assert_eq!(
        plugin_fwd.accepted(),
        conns,
        "with the agent up ADD opens no API connection of its own"
    );
    let evs = settled_events(&e, "marker-up-1");
    let up = requests_of(&evs, before, PLUGIN_USER);
    // The agent's Events of this ADD (from the spool, asynchronous: they may or may not
    // be in before the marker) are not part of the ADD's path.
    // Nor is the meta-ipam reconciliation (at start and after pod deletions; here the
    // IpBlock CRD is not installed: one list answered 404).
    let agent_up: Vec<_> = requests_of(&evs, before, AGENT_USER)
        .into_iter()
        .filter(|(verb, uri)| !(verb == "create" && uri.ends_with("/events")))
        .filter(|(_, uri)| !uri.starts_with("/apis/ipam.meta-cni.io/"))
        .collect();
    eprintln!(
        "ADD with the agent up: plugin {} requests {up:?}; agent {agent_up:?}",
        up.len()
    );
    assert_eq!(
        up,
        vec![],
        "with the agent up the plugin asks the API server nothing"
    );
    assert_eq!(
        agent_up,
        vec![(
            "patch".to_string(),
            format!("/api/v1/namespaces/{NS}/pods/audit-a/status")
        )],
        "with the agent up ADD's one request is the agent's network-status patch"
    );
    assert!(
        e.network_status("audit-a").is_some(),
        "network-status written"
    );
    // Besides that patch the agent only lists and watches (and gets its Node), and
    // creates the Events of the plugin's spool records.
    for (verb, uri) in requests_of(&evs, 0, AGENT_USER) {
        assert!(
            ["list", "watch", "get"].contains(&verb.as_str())
                || (verb == "patch" && uri.ends_with("/pods/audit-a/status"))
                || (verb == "create" && uri.ends_with("/events")),
            "agent: {verb} {uri}"
        );
    }

    // Agent down: the API server as before, and ADD still succeeds.
    let log = stop(agent);
    assert!(!socket.exists(), "socket left behind; agent log:\n{log}");
    let before = settled_events(&e, "marker-down-0").len();
    e.run("ADD", "cid-audit-b", 1, "audit-b", &uid_b, &conf)
        .ok();
    let evs = settled_events(&e, "marker-down-1");
    let down = requests_of(&evs, before, PLUGIN_USER);
    eprintln!("ADD with the agent down: {} requests: {down:?}", down.len());
    let nads = format!("/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions");
    let mut got = down.clone();
    got.sort();
    let mut want = vec![
        (
            "get".to_string(),
            format!("/api/v1/namespaces/{NS}/pods/audit-b"),
        ),
        ("get".to_string(), format!("{nads}/blue")),
        ("get".to_string(), format!("{nads}/green")),
        (
            "patch".to_string(),
            format!("/api/v1/namespaces/{NS}/pods/audit-b/status"),
        ),
    ];
    want.sort();
    assert_eq!(got, want, "with the agent down: {down:?}");

    for (cid, pod, name, uid) in [
        ("cid-audit-a", 0, "audit-a", &uid_a),
        ("cid-audit-b", 1, "audit-b", &uid_b),
    ] {
        e.run("DEL", cid, pod, name, uid, &conf).ok();
    }
}
