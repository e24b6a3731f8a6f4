//! The local API's socket without an API server: the caches filled by hand, the real
//! listener and connection handling, the documented protocol through meta-crd's client,
//! and the refusal of a non-root peer (a child process of this test binary running as uid
//! 65534). Needs root (to switch the child's uid).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::runtime::watcher::Event;
use meta_cni_agent::cache::{Shared, pod_meta};
use meta_cni_agent::socket::{Listener, serve};
use meta_cni_agent::{Shutdown, ShutdownTrigger};
use meta_crd::NetworkAttachmentDefinition;
use meta_crd::agent_api::{Client, ErrorKind, Op, Request, Response};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HELPER_ENV: &str = "META_CNI_AGENT_SOCKET_HELPER";
const T: Duration = Duration::from_secs(5);

/// The server on a thread of its own (current-thread runtime), until the trigger.
struct Server {
    trigger: Option<ShutdownTrigger>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(path: &Path, state: Shared) -> Server {
        let (trigger, shutdown) = Shutdown::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let l = Listener::bind(&path).expect("bind");
                tx.send(()).expect("ready");
                serve(l, state, None, shutdown).await;
            });
        });
        rx.recv_timeout(T).expect("the listener is bound");
        Server {
            trigger: Some(trigger),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn nad(ns: &str, name: &str) -> NetworkAttachmentDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": format!("{{\"cniVersion\":\"1.0.0\",\"name\":\"{name}\",\"type\":\"bridge\"}}")}
    }))
    .expect("NAD")
}

fn pod(ns: &str, name: &str, uid: &str, networks: &str) -> PartialObjectMeta<Pod> {
    use kube::core::PartialObjectMetaExt;
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        annotations: Some(BTreeMap::from([(
            meta_crd::NETWORKS_ANNOTATION.to_string(),
            networks.to_string(),
        )])),
        ..Default::default()
    }
    .into_response_partial::<Pod>()
}

fn ask(path: &Path, op: Op) -> Response {
    Client::connect(path, T)
        .expect("connect")
        .ask(&Request::new(op))
        .expect("answer")
}

fn nad_op(ns: &str, name: &str) -> Op {
    Op::Nad {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn socket_serves_the_caches_by_the_protocol() {
    meta_tests::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run/agent.sock");
    let state = Shared::new("node0");
    let server = Server::start(&path, state.clone());
    assert_eq!(mode(&path), 0o600, "socket mode");
    assert_eq!(mode(path.parent().unwrap()), 0o700, "directory mode");

    // Nothing synced yet: status says so, lookups are not-synced (never "unknown").
    let r = ask(&path, Op::Status);
    assert!(r.ok, "{r:?}");
    let st = r.status.unwrap();
    assert_eq!(st.node, "node0");
    assert!(!st.nads.synced && !st.pods.synced, "{st:?}");
    let r = ask(&path, nad_op("ns1", "blue"));
    assert_eq!(
        (r.ok, r.error),
        (false, Some(ErrorKind::NotSynced)),
        "{r:?}"
    );
    let r = ask(
        &path,
        Op::Pod {
            namespace: "ns1".into(),
            name: "web".into(),
            uid: None,
        },
    );
    assert_eq!(r.error, Some(ErrorKind::NotSynced), "{r:?}");

    {
        let mut s = state.lock();
        s.nads.apply(Event::Init, |n| n);
        s.nads.apply(Event::InitApply(nad("ns1", "blue")), |n| n);
        s.nads.apply(Event::InitDone, |n| n);
        s.pods.apply(Event::Init, pod_meta);
        s.pods
            .apply(Event::InitApply(pod("ns1", "web", "u1", "blue")), pod_meta);
        s.pods.apply(Event::InitDone, pod_meta);
    }
    // Several requests on one connection.
    let mut c = Client::connect(&path, T).expect("connect");
    let r = c.ask(&Request::new(nad_op("ns1", "blue"))).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.nad.unwrap().spec.config, nad("ns1", "blue").spec.config);
    let r = c.ask(&Request::new(nad_op("ns1", "green"))).unwrap();
    assert_eq!((r.ok, r.error), (false, Some(ErrorKind::Unknown)), "{r:?}");
    assert!(r.message.unwrap().contains("ns1/green"));
    let r = c
        .ask(&Request::new(Op::Pod {
            namespace: "ns1".into(),
            name: "web".into(),
            uid: Some("u1".into()),
        }))
        .unwrap();
    let p = r.pod.expect("pod");
    assert_eq!(p.uid.as_deref(), Some("u1"));
    assert_eq!(p.annotations[meta_crd::NETWORKS_ANNOTATION], "blue");
    // Another UID (a recreated pod the cache has not seen yet): unknown, not an answer.
    let r = c
        .ask(&Request::new(Op::Pod {
            namespace: "ns1".into(),
            name: "web".into(),
            uid: Some("u2".into()),
        }))
        .unwrap();
    assert_eq!(r.error, Some(ErrorKind::Unknown), "{r:?}");
    let st = c.ask(&Request::new(Op::Status)).unwrap().status.unwrap();
    assert!(st.nads.synced && st.pods.synced);
    assert_eq!((st.nads.count, st.pods.count), (1, 1));

    // network-status: only for a pod the cache holds with that UID; this server has no
    // API connection, so even that one is refused (the plugin then patches it itself).
    let status_op = |name: &str, uid: &str| Op::NetworkStatus {
        namespace: "ns1".into(),
        name: name.into(),
        uid: Some(uid.into()),
        value: "[]".into(),
    };
    for (name, uid, says) in [
        ("other", "u1", "not in the cache of node node0"),
        ("web", "u2", "cached with UID u1, not u2"),
        ("web", "u1", "no API connection"),
    ] {
        let r = c.ask(&Request::new(status_op(name, uid))).unwrap();
        assert_eq!((r.ok, r.error), (false, Some(ErrorKind::Unknown)), "{r:?}");
        assert!(r.message.as_deref().unwrap().contains(says), "{r:?}");
    }

    // Raw lines: a bad one and another version get a refusal, the connection stays usable.
    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"{not json\n{\"v\":7,\"op\":\"status\"}\n{\"v\":1,\"op\":\"status\"}\n")
        .unwrap();
    let mut rd = BufReader::new(s);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        rd.read_line(&mut line).expect("response line");
        let r: Response = serde_json::from_str(&line).expect("response JSON");
        kinds.push((r.ok, r.error));
    }
    assert_eq!(
        kinds,
        vec![
            (false, Some(ErrorKind::BadRequest)),
            (false, Some(ErrorKind::UnsupportedVersion)),
            (true, None)
        ]
    );

    // Stopping removes the socket file.
    drop(server);
    assert!(!path.exists(), "socket file left behind");
}

/// Runs this test binary's [`non_root_client_helper`] as uid/gid 65534 against `path`;
/// returns its verdict line.
fn as_nobody(path: &Path) -> String {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "non_root_client_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, path)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run the helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helper failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        // libtest prints "test non_root_client_helper ... " before the helper's output
        .find_map(|l| l.split_once("VERDICT ").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no verdict from the helper: {stdout}"))
        .to_string()
}

/// Not a test of its own: what the non-root child runs (does nothing without its variable).
#[test]
fn non_root_client_helper() {
    let Some(path) = std::env::var_os(HELPER_ENV).map(PathBuf::from) else {
        return;
    };
    let verdict = match UnixStream::connect(&path) {
        Err(e) => format!("connect-error {:?}", e.kind()),
        Ok(mut s) => {
            s.set_read_timeout(Some(T)).unwrap();
            let _ = s.write_all(b"{\"v\":1,\"op\":\"status\"}\n");
            let mut rd = BufReader::new(s);
            let mut line = String::new();
            let _ = rd.read_line(&mut line);
            let mut rest = String::new();
            let _ = rd.read_line(&mut rest);
            format!("answer {} then {:?}", line.trim_end(), rest)
        }
    };
    println!("VERDICT {verdict}");
}

#[test]
fn non_root_peers_are_refused() {
    meta_tests::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run/agent.sock");
    let state = Shared::new("node0");
    let _server = Server::start(&path, state);
    // As deployed (0700 directory, 0600 socket): the kernel refuses the connect.
    let v = as_nobody(&path);
    assert_eq!(v, "connect-error PermissionDenied");
    // With the file modes opened up (a misconfigured directory), the peer credentials
    // still refuse it: one forbidden answer, then the connection is closed.
    for p in [dir.path(), path.parent().unwrap()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let v = as_nobody(&path);
    let (answer, rest) = v
        .strip_prefix("answer ")
        .and_then(|a| a.split_once(" then "))
        .unwrap_or_else(|| panic!("not connected: {v}"));
    let r: Response = serde_json::from_str(answer).expect("a response line");
    assert_eq!(
        (r.ok, r.error),
        (false, Some(ErrorKind::Forbidden)),
        "{r:?}"
    );
    assert!(
        r.message
            .as_deref()
            .unwrap_or_default()
            .contains("uid 65534"),
        "{r:?}"
    );
    assert!(r.status.is_none(), "answered the refused peer: {r:?}");
    assert_eq!(rest, "\"\"", "the connection stays open after the refusal");
    // Root still gets answers.
    assert!(ask(&path, Op::Status).ok);
}
