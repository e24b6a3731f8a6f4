//! Helpers shared by the webhook's integration tests: a test [`Handler`], a raw HTTPS
//! client (HTTP/1.1 over tokio-rustls, one connection per request) and server startup.
#![allow(dead_code)]

use meta_cni_webhook::serve::{ServeOpts, run_on};
use meta_cni_webhook::server::{Answer, Handler};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Answers an AdmissionReview with `allowed` unless the object's name starts with `deny`;
/// objects named `panic` make it panic; objects named `block` make it wait until
/// [`TestHandler::release`].
pub struct TestHandler {
    pub ready: AtomicBool,
    /// How many requests are waiting in the handler for [`TestHandler::release`].
    pub blocked: AtomicUsize,
    gate: Mutex<bool>,
    cv: Condvar,
}

impl TestHandler {
    pub fn new() -> Arc<TestHandler> {
        Arc::new(TestHandler {
            ready: AtomicBool::new(true),
            blocked: AtomicUsize::new(0),
            gate: Mutex::new(false),
            cv: Condvar::new(),
        })
    }
    pub fn release(&self) {
        *self.gate.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl Handler for TestHandler {
    fn handle(&self, body: &[u8]) -> Result<Answer, String> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let req = v.get("request").ok_or("no request")?;
        let uid = req.get("uid").and_then(|u| u.as_str()).ok_or("no uid")?;
        let kind = match req.pointer("/kind/kind").and_then(|k| k.as_str()) {
            Some("NetworkAttachmentDefinition") => "NetworkAttachmentDefinition",
            Some("Pod") => "Pod",
            _ => "other",
        };
        let operation = match req.get("operation").and_then(|o| o.as_str()) {
            Some("CREATE") => "CREATE",
            Some("UPDATE") => "UPDATE",
            Some("DELETE") => "DELETE",
            Some("CONNECT") => "CONNECT",
            _ => "other",
        };
        let name = req
            .pointer("/object/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if name == "panic" {
            panic!("the test handler panics on request");
        }
        if name == "block" {
            self.blocked.fetch_add(1, Ordering::SeqCst);
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
        }
        let allowed = !name.starts_with("deny");
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": { "uid": uid, "allowed": allowed },
        }))
        .unwrap();
        Ok(Answer {
            body,
            kind,
            operation,
            allowed,
        })
    }
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// An AdmissionReview request.
pub fn review(kind: &str, operation: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{name}"),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "operation": operation,
            "object": {"metadata": {"name": name}},
        },
    }))
    .unwrap()
}

/// A client configuration trusting `ca_pem`, speaking only `versions`, without session
/// resumption.
pub fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(meta_cni_webhook::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Full handshakes only: a resumed session shows the certificate of the session it
    // resumes, and the tests want to see the one being served now.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// A client configuration trusting `ca_pem`, TLS 1.2 or 1.3.
pub fn client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    client_config(ca_pem, rustls::ALL_VERSIONS)
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    /// The certificate the server presented.
    pub peer_cert: Vec<u8>,
    pub version: Option<rustls::ProtocolVersion>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` over a new
/// TLS connection to `addr` (SNI `localhost`, `TCP_NODELAY` as curl's and Go's clients
/// set it: without it, a server that sends nothing after the client's TLS Finished gets
/// the request only after its delayed ACK, some 40 ms), with `Connection: close`; returns
/// the reply.
pub async fn raw_request(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    head: &str,
    body: &[u8],
) -> Result<Reply, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let conn = tokio_rustls::TlsConnector::from(cfg);
        let tls = conn
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let peer_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let version = session.protocol_version();
        let mut req =
            format!("{head}\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes();
        req.extend_from_slice(body);
        let (mut rd, mut wr) = tokio::io::split(tls);
        // Write and read at once: the server may answer (413) before the body is sent.
        let writer = async move {
            let _ = wr.write_all(&req).await;
            let _ = wr.flush().await;
            wr
        };
        let reader = async move {
            let mut out = Vec::new();
            let r = rd.read_to_end(&mut out).await;
            (out, r)
        };
        let (_wr, (out, r)) = tokio::join!(writer, reader);
        if out.is_empty() {
            return Err(format!("no response ({r:?})"));
        }
        let text = out.clone();
        let split = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("no end of head in {:?}", String::from_utf8_lossy(&out)))?;
        let head = String::from_utf8_lossy(&text[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {head:?}"))?;
        Ok(Reply {
            status,
            head,
            body: text[split + 4..].to_vec(),
            peer_cert,
            version,
        })
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| "request timed out after 30 s".to_string())?
}

/// `POST /validate` with an AdmissionReview.
pub async fn post_review(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    body: &[u8],
) -> Result<Reply, String> {
    post_json(addr, cfg, "/validate", body).await
}

/// `POST path` with a JSON body.
pub async fn post_json(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> Result<Reply, String> {
    raw_request(
        addr,
        cfg,
        &format!(
            "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
            body.len()
        ),
        body,
    )
    .await
}

/// `GET path`.
pub async fn get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<Reply, String> {
    raw_request(addr, cfg, &format!("GET {path} HTTP/1.1"), b"").await
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), meta_cni_webhook::Error>>,
}

impl Running {
    /// Asks for shutdown; the task's result tells how serving ended.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts [`run_on`] on 127.0.0.1, a free port.
pub async fn start(opts: ServeOpts, handler: Arc<dyn Handler>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_on(listener, opts, handler, async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// DER of the first certificate of a PEM text.
pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

impl TestHandler {
    /// Waits (30 s at most) until `n` requests wait in the handler.
    pub async fn wait_blocked(&self, n: usize) {
        for _ in 0..600 {
            if self.blocked.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no request reached the handler");
    }
}
