//! `source::AgentSource`: the node agent's socket first, the API server (the real
//! kube-apiserver fixture) when the agent cannot answer. The agent here is a stand-in
//! speaking `meta_crd::agent_api` on a unix socket in a temp dir (the real agent's side is
//! `meta-cni-agent/tests/agent_socket.rs` and `agent_kube.rs`), so that each way of not
//! answering can be made on purpose: down, not synced, unknown, hung.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use meta_cni::source::{AgentSource, Source};
use meta_crd::NetworkAttachmentDefinition;
use meta_crd::agent_api::{self, ErrorKind, Op, PodMeta, Response};
use meta_tests::apiserver::ApiServer;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NS: &str = "agent-src";

/// How the stand-in agent behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Serves NAD `blue` and pod `web` (uid u1), patches network-status `[]` of `web` (the
    /// API server's 409 for another UID); everything else unknown.
    Serving,
    /// Every lookup: not-synced.
    NotSynced,
    /// Reads requests and never answers.
    Hung,
}

fn nad(name: &str) -> NetworkAttachmentDefinition {
    serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"config": format!(r#"{{"cniVersion":"1.0.0","name":"{name}","type":"bridge","bridge":"br-{name}"}}"#)}
    }))
    .unwrap()
}

fn answer(mode: Mode, line: &[u8]) -> Option<Response> {
    let req = match agent_api::decode_request(line) {
        Ok(r) => r,
        Err(refusal) => return Some(*refusal),
    };
    Some(match (mode, req.op) {
        (Mode::Hung, _) => return None,
        (Mode::NotSynced, _) => Response::error(ErrorKind::NotSynced, "not synced"),
        (Mode::Serving, Op::Nad { namespace, name }) if namespace == NS && name == "blue" => {
            Response::nad(nad("blue"))
        }
        (Mode::Serving, Op::Pod { name, uid, .. })
            if name == "web" && uid.as_deref().is_none_or(|u| u == "u1") =>
        {
            Response::pod(PodMeta {
                uid: Some("u1".into()),
                annotations: BTreeMap::from([("from".to_string(), "agent".to_string())]),
            })
        }
        (
            Mode::Serving,
            Op::NetworkStatus {
                name, uid, value, ..
            },
        ) if name == "web" && value == "[]" => match uid.as_deref() {
            Some("u1") => Response::done(),
            _ => Response::api_error(Some(409), "Precondition failed: UID in precondition"),
        },
        _ => Response::error(ErrorKind::Unknown, "not in the cache"),
    })
}

/// The stand-in: answers on `path` in a thread until the test ends; counts requests.
fn fake_agent(path: &Path, mode: Mode) -> Arc<Mutex<Vec<String>>> {
    let l = UnixListener::bind(path).expect("bind");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                for line in BufReader::new(conn).split(b'\n') {
                    let Ok(line) = line else { return };
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&line).into_owned());
                    match answer(mode, &line) {
                        Some(r) => {
                            if w.write_all(&agent_api::encode(&r)).is_err() {
                                return;
                            }
                        }
                        None => std::thread::sleep(Duration::from_secs(30)),
                    }
                }
            });
        }
    });
    seen
}

struct Fixture {
    api: ApiServer,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Fixture {
        let api = ApiServer::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let admin = meta_tests::kube::client_for(&api.admin_kubeconfig()).await;
            meta_tests::kube::apply_nad_crd(&admin).await;
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
            Api::<Namespace>::all(admin.clone())
                .create(&PostParams::default(), &ns)
                .await
                .expect("namespace");
            Api::<NetworkAttachmentDefinition>::namespaced(admin, NS)
                .create(&PostParams::default(), &nad("red"))
                .await
                .expect("NAD red");
        });
        Fixture {
            api,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn source(&self, socket: &Path) -> AgentSource {
        AgentSource::new(
            socket.to_path_buf(),
            self.api.admin_kubeconfig(),
            Duration::from_secs(10),
        )
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The `bridge` of a NAD's single-plugin configuration.
fn bridge_of(cfg: &meta_crd::NadConfig) -> String {
    match cfg {
        meta_crd::NadConfig::Conf(m) => m
            .get("bridge")
            .and_then(|b| b.as_str())
            .unwrap_or_default()
            .to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn agent_first_then_the_api_server() {
    let f = Fixture::start();

    // The agent serves blue and the pod: no API client is built.
    let sock = f.socket("serving.sock");
    let seen = fake_agent(&sock, Mode::Serving);
    let mut src = f.source(&sock);
    let blue = src.nad(NS, "blue").unwrap().expect("blue from the agent");
    assert!(bridge_of(&blue).contains("br-blue"), "{}", bridge_of(&blue));
    let pod = src.pod_with_uid(NS, "web", Some("u1")).unwrap().unwrap();
    assert_eq!(pod.annotations["from"], "agent");
    assert!(!src.api_client_built(), "the agent answered; no API client");
    // red: unknown to the agent, created in the API server a moment ago: found there.
    let red = src
        .nad(NS, "red")
        .unwrap()
        .expect("red from the API server");
    assert!(bridge_of(&red).contains("br-red"), "{}", bridge_of(&red));
    assert!(src.api_client_built());
    // Unknown to both: not found (the API server's verdict, not the agent's).
    assert!(src.nad(NS, "nope").unwrap().is_none());
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(
        reqs.len(),
        4,
        "one connection, one request per lookup: {reqs:?}"
    );
    assert!(reqs.iter().all(|r| r.starts_with("{\"v\":1,")), "{reqs:?}");

    // Down (no socket), not synced, hung: the API server answers each time.
    let sock = f.socket("not-synced.sock");
    fake_agent(&sock, Mode::NotSynced);
    let hung = f.socket("hung.sock");
    fake_agent(&hung, Mode::Hung);
    for (what, path) in [
        ("down", f.socket("absent.sock")),
        ("not synced", sock),
        ("hung", hung),
    ] {
        let mut src = f.source(&path);
        let red = src.nad(NS, "red").unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(bridge_of(&red.expect(what)).contains("br-red"), "{what}");
        assert!(src.api_client_built(), "{what}");
        // A second lookup of the same invocation: the API server again.
        assert!(src.nad(NS, "blue").unwrap().is_none(), "{what}");
    }

    // network-status through the agent: acknowledged, no API client built.
    let sock = f.socket("status.sock");
    let seen = fake_agent(&sock, Mode::Serving);
    let mut src = f.source(&sock);
    src.set_network_status(NS, "web", Some("u1"), "[]")
        .expect("patched by the agent");
    assert!(!src.api_client_built(), "the agent patched; no API client");
    // The API server refused the agent's UID precondition: final, code 11, and not asked
    // again by the plugin (it would say the same).
    let e = src
        .set_network_status(NS, "web", Some("u0"), "[]")
        .unwrap_err();
    assert_eq!(e.code, 11, "{e:?}");
    assert!(e.msg.contains("pod recreated?"), "{}", e.msg);
    assert!(!src.api_client_built(), "no fallback after a final refusal");
    // A pod the agent does not hold: the plugin patches it itself, and the API server's
    // verdict (no such pod) is the answer.
    let e = src
        .set_network_status(NS, "elsewhere", None, "[]")
        .unwrap_err();
    assert!(src.api_client_built(), "fell back to the API server");
    assert!(e.msg.contains("404"), "{}", e.msg);
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(reqs[0].contains("\"op\":\"network-status\""), "{reqs:?}");
}
