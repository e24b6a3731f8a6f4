//! The HTTPS server in file mode, on 127.0.0.1: TLS versions, plaintext refused, routes and
//! limits, readiness, metrics, a slow or panicking handler, graceful shutdown, and the
//! certificate files replaced while a client keeps sending requests.

mod common;

use common::*;
use meta_cni_webhook::certs::{Authority, Issued};
use meta_cni_webhook::serve::ServeOpts;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Pki {
    ca: Authority,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: Authority::generate("test CA", Duration::from_secs(3600)).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn leaf(&self) -> Issued {
        self.ca
            .issue(
                &["localhost".to_string()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                Duration::from_secs(3600),
            )
            .unwrap()
    }
    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }
    fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }
    /// Writes the pair atomically, each file by write + rename.
    fn install(&self, leaf: &Issued) {
        write_atomic(&self.cert_path(), &leaf.cert_pem);
        write_atomic(&self.key_path(), &leaf.key_pem);
    }
    fn opts(&self) -> ServeOpts {
        let mut o = ServeOpts::new("127.0.0.1:0".parse().unwrap());
        o.tls_cert_file = Some(self.cert_path());
        o.tls_private_key_file = Some(self.key_path());
        o.cert_check_interval = Duration::from_millis(200);
        o
    }
    fn client(&self) -> Arc<rustls::ClientConfig> {
        client(self.ca.cert_pem())
    }
}

fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn started(opts: ServeOpts) -> (Running, Arc<TestHandler>) {
    let handler = TestHandler::new();
    let running = start(opts, handler.clone()).await;
    (running, handler)
}

async fn server() -> (Pki, Running, Arc<TestHandler>) {
    let pki = Pki::new();
    pki.install(&pki.leaf());
    let (r, h) = started(pki.opts()).await;
    (pki, r, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_are_accepted() {
    let (pki, srv, _h) = server().await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let cfg = client_config(pki.ca.cert_pem(), &[version]);
        let r = get(srv.addr, cfg.clone(), "/healthz").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "ok\n");
        assert_eq!(r.version, Some(want));
        let r = post_review(srv.addr, cfg, &review("Pod", "CREATE", "p"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["response"]["uid"], "uid-p");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_distrusts_the_certificate_fails_the_handshake() {
    let (_pki, srv, _h) = server().await;
    let other = Authority::generate("another CA", Duration::from_secs(3600)).unwrap();
    let err = get(srv.addr, client(other.cert_pem()), "/healthz")
        .await
        .unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");
}

/// Reads what the server sends back until it closes (or 10 s pass, which fails the test).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open: {out:?}");
    out
}

/// The first `n` bytes the server answers to `bytes` (fewer if it closes first).
async fn first_bytes(addr: SocketAddr, bytes: &[u8], n: usize) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while out.len() < n {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => out.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_request_is_refused() {
    let (pki, srv, _h) = server().await;
    let body = review("Pod", "CREATE", "p");
    let mut req = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let out = exchange(srv.addr, &req).await;
    assert!(
        !out.starts_with(b"HTTP/"),
        "answered plaintext HTTP: {out:?}"
    );
    // At most a TLS alert comes back.
    assert!(out.is_empty() || out[0] == 0x15, "{out:?}");
    let out = exchange(srv.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(
        !out.starts_with(b"HTTP/"),
        "answered plaintext HTTP: {out:?}"
    );
    // The server is still serving TLS, and counted the failures.
    let m = get(srv.addr, pki.client(), "/metrics").await.unwrap();
    assert_eq!(m.status, 200);
    assert!(
        m.text()
            .contains("meta_cni_webhook_tls_handshake_failures_total 2"),
        "{}",
        m.text()
    );
}

fn push_ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend(ty.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// A ClientHello record offering `version` (as `client_version`, without the TLS 1.3
/// `supported_versions` extension, the way a TLS 1.1 or 1.2 client does), ECDHE suites,
/// P-256 and X25519, SNI `localhost`.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(version);
    body.extend([0x42u8; 32]);
    body.push(0); // no session id
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc013, 0xc009, 0x002f, 0x0035];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut ext = Vec::new();
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend((host.len() as u16).to_be_bytes());
    sni.extend(host);
    push_ext(&mut ext, 0, &sni);
    push_ext(&mut ext, 10, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // supported_groups
    push_ext(&mut ext, 11, &[1, 0]); // ec_point_formats: uncompressed
    push_ext(&mut ext, 13, &[0, 6, 4, 3, 8, 4, 4, 1]); // signature_algorithms
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1u8]; // client_hello
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls11_client_hello_is_refused() {
    let (_pki, srv, _h) = server().await;
    // The same hand-made hello saying TLS 1.2 gets a ServerHello: the hello is right.
    let out = first_bytes(srv.addr, &client_hello([3, 3]), 11).await;
    assert!(out.len() > 11, "{out:?}");
    assert_eq!(out[0], 0x16, "a handshake record: {out:?}");
    assert_eq!(out[5], 2, "a ServerHello: {out:?}");
    assert_eq!(&out[9..11], &[3, 3], "TLS 1.2: {out:?}");
    // TLS 1.1 (and 1.0): a protocol_version alert, no ServerHello.
    for v in [[3, 2], [3, 1]] {
        let out = exchange(srv.addr, &client_hello(v)).await;
        assert_eq!(out.len(), 7, "one alert record: {out:?}");
        assert_eq!(out[0], 0x15, "an alert: {out:?}");
        assert_eq!(&out[5..7], &[2, 70], "fatal protocol_version: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_methods_content_types_and_sizes() {
    let pki = Pki::new();
    pki.install(&pki.leaf());
    let mut opts = pki.opts();
    let limit = 64 * 1024;
    opts.max_request_bytes = limit;
    let (srv, _h) = started(opts).await;
    let (a, c) = (srv.addr, pki.client());
    let body = review("NetworkAttachmentDefinition", "CREATE", "n");
    let post = |ct: &str, len: usize| {
        format!("POST /validate HTTP/1.1\r\nContent-Type: {ct}\r\nContent-Length: {len}")
    };

    let r = get(a, c.clone(), "/nope").await.unwrap();
    assert_eq!(r.status, 404);
    let r = get(a, c.clone(), "/validate").await.unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let r = raw_request(
        a,
        c.clone(),
        "POST /healthz HTTP/1.1\r\nContent-Length: 0",
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET"));
    // Content types.
    let r = raw_request(a, c.clone(), &post("text/plain", body.len()), &body)
        .await
        .unwrap();
    assert_eq!(r.status, 415);
    let r = raw_request(
        a,
        c.clone(),
        &format!("POST /validate HTTP/1.1\r\nContent-Length: {}", body.len()),
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415, "no Content-Type");
    let r = raw_request(
        a,
        c.clone(),
        &post("Application/JSON; charset=utf-8", body.len()),
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "parameters are allowed: {r:?}");
    // Empty, malformed.
    let r = raw_request(a, c.clone(), &post("application/json", 0), b"")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = post_review(a, c.clone(), b"{\"request\": ").await.unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("EOF"),
        "the handler's message: {}",
        r.text()
    );
    let r = post_review(a, c.clone(), &[0xff, 0xfe, 0x00, 0x01])
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    // Sizes: exactly the limit is accepted (JSON padded with spaces), one byte more is not.
    let mut at_limit = body.clone();
    at_limit.resize(limit, b' ');
    let r = post_review(a, c.clone(), &at_limit).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    at_limit.push(b' ');
    let r = post_review(a, c.clone(), &at_limit).await.unwrap();
    assert_eq!(r.status, 413, "Content-Length over the limit");
    // A huge declared body is refused before it is sent.
    let r = raw_request(a, c.clone(), &post("application/json", 1 << 40), b"")
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    // Chunked, no Content-Length: refused while reading.
    let mut chunked = Vec::new();
    for _ in 0..(limit / 4096 + 2) {
        chunked.extend(b"1000\r\n");
        chunked.extend([b' '; 4096]);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let r = raw_request(
        a,
        c.clone(),
        "POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked",
        &chunked,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    // Everything still works.
    let r = post_review(a, c.clone(), &body).await.unwrap();
    assert_eq!(r.status, 200);
    let m = get(a, c, "/metrics").await.unwrap().text();
    for line in [
        "meta_cni_webhook_rejected_requests_total{reason=\"not_found\"} 1",
        "meta_cni_webhook_rejected_requests_total{reason=\"method_not_allowed\"} 2",
        "meta_cni_webhook_rejected_requests_total{reason=\"unsupported_media_type\"} 2",
        "meta_cni_webhook_rejected_requests_total{reason=\"empty_body\"} 1",
        "meta_cni_webhook_rejected_requests_total{reason=\"invalid_review\"} 2",
        "meta_cni_webhook_rejected_requests_total{reason=\"payload_too_large\"} 3",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_takes_3_mib() {
    let (pki, srv, _h) = server().await;
    let mut big = review("Pod", "UPDATE", "big");
    big.resize(3 * 1024 * 1024, b' ');
    let r = post_review(srv.addr, pki.client(), &big).await.unwrap();
    assert_eq!(r.status, 200);
    big.resize(
        meta_cni_webhook::server::DEFAULT_MAX_REQUEST_BYTES + 1,
        b' ',
    );
    let r = post_review(srv.addr, pki.client(), &big).await.unwrap();
    assert_eq!(r.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_handler() {
    let (pki, srv, h) = server().await;
    let r = get(srv.addr, pki.client(), "/readyz").await.unwrap();
    assert_eq!(r.status, 200);
    h.ready.store(false, Ordering::SeqCst);
    let r = get(srv.addr, pki.client(), "/readyz").await.unwrap();
    assert_eq!(r.status, 503);
    let r = get(srv.addr, pki.client(), "/healthz").await.unwrap();
    assert_eq!(r.status, 200, "alive though not ready");
    h.ready.store(true, Ordering::SeqCst);
    let r = get(srv.addr, pki.client(), "/readyz").await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_kind_operation_and_verdict() {
    let (pki, srv, _h) = server().await;
    let (a, c) = (srv.addr, pki.client());
    for b in [
        review("Pod", "CREATE", "p1"),
        review("Pod", "CREATE", "p2"),
        review("NetworkAttachmentDefinition", "UPDATE", "deny-me"),
        review("ConfigMap", "PATCH", "x"),
    ] {
        assert_eq!(post_review(a, c.clone(), &b).await.unwrap().status, 200);
    }
    let r = get(a, c, "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let m = r.text();
    let served = std::fs::read_to_string(pki.cert_path()).unwrap();
    let expiry = meta_cni_webhook::certs::Validity::of_pem(&served)
        .unwrap()
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry = format!("meta_cni_webhook_serving_certificate_expiry_timestamp_seconds {expiry}");
    assert!(m.contains(&expiry), "{expiry} in\n{m}");
    for line in [
        "meta_cni_webhook_requests_total{kind=\"Pod\",operation=\"CREATE\",verdict=\"allowed\"} 2",
        "meta_cni_webhook_requests_total{kind=\"NetworkAttachmentDefinition\",operation=\"UPDATE\",verdict=\"denied\"} 1",
        "meta_cni_webhook_requests_total{kind=\"other\",operation=\"other\",verdict=\"allowed\"} 1",
        "meta_cni_webhook_request_duration_seconds_count 4",
        "# TYPE meta_cni_webhook_request_duration_seconds histogram",
        "# TYPE meta_cni_webhook_serving_certificate_expiry_timestamp_seconds gauge",
        "# EOF",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_panicking_handler_stalls_nothing_else() {
    let (pki, srv, h) = server().await;
    let (a, c) = (srv.addr, pki.client());
    let blocked = {
        let c = c.clone();
        tokio::spawn(async move { post_review(a, c, &review("Pod", "CREATE", "block")).await })
    };
    h.wait_blocked(1).await;
    // Answers while the handler holds that request (it waits until released below).
    for i in 0..5 {
        let r = post_review(a, c.clone(), &review("Pod", "CREATE", &format!("p{i}")))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let r = post_review(a, c.clone(), &review("Pod", "CREATE", "panic"))
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    assert!(!blocked.is_finished());
    h.release();
    let r = blocked.await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    let r = get(a, c, "/healthz").await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let (pki, mut srv, h) = server().await;
    let (a, c) = (srv.addr, pki.client());
    let blocked = {
        let c = c.clone();
        tokio::spawn(async move { post_review(a, c, &review("Pod", "CREATE", "block")).await })
    };
    h.wait_blocked(1).await;
    srv.stop();
    // New connections are refused once the listener is gone.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(a).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "still accepting after shutdown");
    assert!(!srv.task.is_finished(), "waits for the request in flight");
    h.release();
    let r = blocked.await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(20), &mut srv.task).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

/// A client that keeps sending reviews over new connections until told to stop; returns
/// (requests that succeeded, failures, the certificates seen).
fn client_loop(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut ok, mut failures) = (0, Vec::new());
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            match post_review(
                addr,
                cfg.clone(),
                &review("Pod", "CREATE", &format!("p{i}")),
            )
            .await
            {
                Ok(r) if r.status == 200 => {
                    ok += 1;
                    let mut s = seen.lock().unwrap();
                    if s.last() != Some(&r.peer_cert) {
                        s.push(r.peer_cert);
                    }
                }
                Ok(r) => failures.push(format!("status {}: {}", r.status, r.text())),
                Err(e) => failures.push(e),
            }
        }
        (ok, failures)
    })
}

async fn wait_for_cert(seen: &std::sync::Mutex<Vec<Vec<u8>>>, der: &[u8]) {
    for _ in 0..600 {
        if seen.lock().unwrap().last().map(Vec::as_slice) == Some(der) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the new certificate was not served within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_served_and_no_request_fails() {
    let (pki, srv, _h) = server().await;
    let first = std::fs::read_to_string(pki.cert_path()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let looping = client_loop(srv.addr, pki.client(), stop.clone(), seen.clone());
    wait_for_cert(&seen, &der_of(&first)).await;

    // Renewed the way kubelet updates a mounted Secret: each file replaced atomically.
    let second = pki.leaf();
    pki.install(&second);
    wait_for_cert(&seen, &der_of(&second.cert_pem)).await;

    // Renewed clumsily: the certificate first, the key a few check intervals later. The
    // mismatched pair in between is not served; the old one is.
    let third = pki.leaf();
    write_atomic(&pki.cert_path(), &third.cert_pem);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&der_of(&second.cert_pem)),
        "a certificate without its key is not served"
    );
    write_atomic(&pki.key_path(), &third.key_pem);
    wait_for_cert(&seen, &der_of(&third.cert_pem)).await;

    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = looping.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(ok >= 3, "{ok} requests");
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        vec![
            der_of(&first),
            der_of(&second.cert_pem),
            der_of(&third.cert_pem)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_and_flags_are_errors() {
    let pki = Pki::new();
    // Files missing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = meta_cni_webhook::serve::run_on(listener, pki.opts(), TestHandler::new(), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, meta_cni_webhook::Error::File { .. }), "{err}");
    // A key that is not the certificate's.
    let (a, b) = (pki.leaf(), pki.leaf());
    write_atomic(&pki.cert_path(), &a.cert_pem);
    write_atomic(&pki.key_path(), &b.key_pem);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = meta_cni_webhook::serve::run_on(listener, pki.opts(), TestHandler::new(), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, meta_cni_webhook::Error::Tls(_)), "{err}");
    // Garbage.
    write_atomic(&pki.key_path(), "not a key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = meta_cni_webhook::serve::run_on(listener, pki.opts(), TestHandler::new(), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, meta_cni_webhook::Error::Tls(_)), "{err}");
    // Neither mode.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = ServeOpts::new("127.0.0.1:0".parse().unwrap());
    let err = meta_cni_webhook::serve::run_on(listener, opts, TestHandler::new(), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, meta_cni_webhook::Error::Flags(_)), "{err}");
}
