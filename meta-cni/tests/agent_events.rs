//! Events and metrics through the spool, against the real kube-apiserver: the real
//! `meta-cni` binary runs ADD/DEL in the e2e node namespace with the real
//! `meta-cni-agent` up (its own ServiceAccount and `deploy/rbac.yaml`), and
//!
//! - a successful ADD of a 3-network pod produces one `AddedInterface` Event per
//!   interface on the pod (listed with `fieldSelector=involvedObject.uid=<uid>`), with
//!   Multus's message (`Add net1 [10.x.y.z/24] from e2e/blue`);
//! - a failing ADD produces one `Warning` Event carrying the CNI error the runtime got;
//! - Events are created by the agent's user only: the plugin makes no Events call (audit
//!   log of the fixture);
//! - `/metrics` (inside the node namespace) shows the ADD/DEL histograms per verb,
//!   network and delegate type, the failure by CNI code, and the caches' state;
//! - garbage in the spool is removed;
//! - with the agent down, an ADD's record waits in the spool and its Events are sent
//!   once the agent is back.

mod e2e_support;
use e2e_support::*;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

const PLUGIN_USER: &str = "system:serviceaccount:kube-system:meta-cni";
const AGENT_USER: &str = "system:serviceaccount:kube-system:meta-cni-agent";
const NODE: &str = "events-node";
const METRICS: &str = "127.0.0.1:9191";

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

/// The Events of the pod with `uid`, by the API's field selector.
fn events_of(e: &E2e, uid: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(e.admin.clone(), NS);
    let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    e.rt.block_on(api.list(&lp)).expect("list events").items
}

/// Waits until the pod with `uid` has `n` Events.
fn wait_events(e: &E2e, uid: &str, n: usize, agent: &mut Child) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let evs = events_of(e, uid);
        if evs.len() >= n {
            return evs;
        }
        assert!(
            agent.try_wait().ok().flatten().is_none(),
            "the agent exited"
        );
        assert!(
            Instant::now() < deadline,
            "pod {uid}: {} Events, want {n}: {evs:?}",
            evs.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /metrics` of the agent inside the node namespace.
fn scrape(e: &E2e) -> String {
    e.w.node
        .netns()
        .run(|| {
            let mut s = std::net::TcpStream::connect(METRICS).expect("connect to /metrics");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .expect("run in the node namespace")
}

/// Waits until the spool holds no record (only the agent's own use of it is left).
fn wait_spool_empty(spool: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = std::fs::read_dir(spool)
            .expect("spool directory")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "spool not drained: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_synced(socket: &Path, nads: usize) {
    assert!(
        agent_synced(socket, |s| s.nads.count == nads).is_some(),
        "the agent's caches never synced"
    );
}

#[test]
fn adds_become_multus_events_and_metrics_through_the_spool() {
    let e = E2e::setup(3);
    let api = e.api.as_ref().expect("API server");
    let agent_kc = agent_kubeconfig(&e, e.fwd.as_ref().expect("forwarder").addr());
    let socket = e.w.path("agent/agent.sock");
    let spool = e.w.path("agent/spool");
    let env = agent_env(
        &e,
        NODE,
        &agent_kc,
        &socket,
        &[("META_CNI_AGENT_METRICS_BIND_ADDRESS", METRICS.to_string())],
    );
    // A network whose macvlan parent does not exist: its ADD fails.
    e.create_nad(
        NS,
        "red",
        &json!({"cniVersion": "1.0.0", "name": "red", "type": "macvlan",
                "master": "nosuchparent0", "mode": "bridge",
                "ipam": {"type": "static", "addresses": [{"address": "10.99.0.2/24"}]}}),
    );
    let uid_a = create_node_pod(&e, NODE, "ev-a", "blue, green");
    let uid_b = create_node_pod(&e, NODE, "ev-b", "blue, red");
    let uid_c = create_node_pod(&e, NODE, "ev-c", "green");
    let mut agent = spawn_agent(&e, &env);
    wait_synced(&socket, 3);
    assert!(spool.is_dir(), "the agent creates the spool directory");
    let conf = e.conf(json!({"agentSocket": socket}));
    let audit_before = api.audit_events().len();

    // A successful ADD: one AddedInterface per interface, Multus's message.
    e.run("ADD", "cid-ev-a", 0, "ev-a", &uid_a, &conf).ok();
    let status = e.network_status("ev-a").expect("network-status");
    let evs = wait_events(&e, &uid_a, 3, &mut agent);
    let mut got: Vec<String> = evs
        .iter()
        .map(|ev| {
            assert_eq!(ev.reason.as_deref(), Some("AddedInterface"), "{ev:?}");
            assert_eq!(ev.type_.as_deref(), Some("Normal"));
            assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));
            assert_eq!(ev.involved_object.name.as_deref(), Some("ev-a"));
            assert_eq!(ev.involved_object.uid.as_deref(), Some(uid_a.as_str()));
            let src = ev.source.as_ref().expect("source");
            assert_eq!(src.component.as_deref(), Some("meta-cni"));
            assert_eq!(src.host.as_deref(), Some(NODE));
            assert_eq!(ev.reporting_component.as_deref(), Some("meta-cni"));
            assert_eq!(ev.count, Some(1));
            ev.message.clone().unwrap_or_default()
        })
        .collect();
    got.sort();
    assert_eq!(
        got.len(),
        status.len(),
        "{got:?} vs network-status {status:?}"
    );
    for st in &status {
        let m = got
            .iter()
            .find(|m| m.starts_with(&format!("Add {} [", st.interface)))
            .unwrap_or_else(|| panic!("no Event for {}: {got:?}", st.interface));
        for ip in &st.ips {
            assert!(m.contains(&format!("{ip}/")), "{m:?} lacks {ip}");
        }
        if st.interface != "eth0" {
            assert!(
                m.ends_with(&format!("] from {}", st.name)),
                "{m:?} vs {st:?}"
            );
        }
    }
    assert!(
        got.iter()
            .any(|m| m.starts_with("Add net1 [") && m.ends_with("] from e2e/blue"))
    );
    assert!(
        got.iter()
            .any(|m| m.starts_with("Add net2 [") && m.ends_with("] from e2e/green"))
    );

    // A failing ADD: one Warning with the CNI error the runtime got.
    let fail = e.run("ADD", "cid-ev-b", 1, "ev-b", &uid_b, &conf);
    assert_ne!(fail.code, 0, "ADD with a missing macvlan parent must fail");
    let (code, msg) = (fail.err_code(), fail.err_msg());
    let evs = wait_events(&e, &uid_b, 1, &mut agent);
    assert_eq!(evs.len(), 1, "{evs:?}");
    let w = &evs[0];
    assert_eq!(w.type_.as_deref(), Some("Warning"));
    assert_eq!(w.reason.as_deref(), Some("FailedAddInterface"));
    let m = w.message.clone().unwrap_or_default();
    assert!(
        m.contains(&format!("CNI error {code}: ")) && m.contains(&msg) && m.contains("e2e/red"),
        "warning {m:?} vs the CNI error {code} {msg:?}"
    );

    // DEL, then the metrics.
    e.run("DEL", "cid-ev-a", 0, "ev-a", &uid_a, &conf).ok();
    wait_spool_empty(&spool);
    let text = scrape(&e);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for want in [
        r#"meta_cni_cni_duration_seconds_count{verb="ADD",outcome="success"} 1"#.to_string(),
        r#"meta_cni_cni_duration_seconds_count{verb="ADD",outcome="failure"} 1"#.to_string(),
        r#"meta_cni_cni_duration_seconds_count{verb="DEL",outcome="success"} 1"#.to_string(),
        r#"meta_cni_attachment_duration_seconds_count{verb="ADD",network="e2e/green",delegate_type="macvlan"} 1"#.to_string(),
        r#"meta_cni_attachment_duration_seconds_count{verb="DEL",network="e2e/green",delegate_type="macvlan"} 1"#.to_string(),
        r#"meta_cni_attachment_duration_seconds_count{verb="DEL",network="e2e/blue",delegate_type="bridge"} 1"#.to_string(),
        format!(r#"meta_cni_cni_failures_total{{verb="ADD",code="{code}"}} 1"#),
        r#"meta_cni_agent_cache_synced{cache="nads"} 1"#.to_string(),
        r#"meta_cni_agent_cache_objects{cache="nads"} 3"#.to_string(),
        r#"meta_cni_agent_cache_objects{cache="pods"} 3"#.to_string(),
        r#"meta_cni_agent_events_total{type="Normal",outcome="created"} 3"#.to_string(),
        r#"meta_cni_agent_events_total{type="Warning",outcome="created"} 1"#.to_string(),
        r#"meta_cni_agent_spool_records_total{outcome="processed"} 3"#.to_string(),
    ] {
        assert!(text.contains(&want), "missing {want} in\n{text}");
    }
    // blue ran in ev-a's ADD, and in ev-b's unless red's configuration check refused it
    // before anything was attached.
    assert!(
        [1, 2].iter().any(|n| text.contains(&format!(
            r#"meta_cni_attachment_duration_seconds_count{{verb="ADD",network="e2e/blue",delegate_type="bridge"}} {n}"#
        ))),
        "{text}"
    );

    // Garbage in the spool is removed (and counted).
    std::fs::write(spool.join("1-1-1.json"), b"{\"version\": 1, \"verb\": ").unwrap();
    std::fs::write(spool.join("junk"), b"\xff\xfe").unwrap();
    wait_spool_empty(&spool);
    assert!(
        scrape(&e).contains(r#"meta_cni_agent_spool_records_total{outcome="invalid"} 2"#),
        "garbage counted"
    );

    // Only the agent created Events; the plugin made no Events call.
    let audit = api.audit_events();
    let on_events = |user: &str| -> Vec<String> {
        audit[audit_before..]
            .iter()
            .filter(|ev| ev["user"]["username"] == user)
            .filter(|ev| {
                ev["objectRef"]["resource"] == "events"
                    || ev["requestURI"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("/events")
            })
            .map(|ev| format!("{} {}", ev["verb"], ev["requestURI"]))
            .collect()
    };
    assert!(
        on_events(PLUGIN_USER).is_empty(),
        "{:?}",
        on_events(PLUGIN_USER)
    );
    let by_agent = on_events(AGENT_USER);
    assert!(
        by_agent
            .iter()
            .filter(|r| r.starts_with("\"create\""))
            .count()
            >= 4,
        "{by_agent:?}"
    );

    // Agent down: the record waits in the spool; the agent sends it once back.
    let log = stop(agent);
    e.run("ADD", "cid-ev-c", 2, "ev-c", &uid_c, &conf).ok();
    let waiting: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert_eq!(waiting.len(), 1, "one record waits; agent log:\n{log}");
    assert!(events_of(&e, &uid_c).is_empty());
    let mut agent = spawn_agent(&e, &env);
    let evs = wait_events(&e, &uid_c, 2, &mut agent);
    assert!(
        evs.iter().any(|ev| ev
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with("from e2e/green"))),
        "{evs:?}"
    );
    wait_spool_empty(&spool);
    e.run("DEL", "cid-ev-c", 2, "ev-c", &uid_c, &conf).ok();
    stop(agent);
}
