//! The real kube-apiserver fixture: starts, serves TLS with client-certificate auth, and
//! listens on 127.0.0.1 only.

use meta_tests::apiserver::{ApiServer, VERSION};
use serde_json::Value;
use std::process::Command;

/// A raw HTTPS GET with curl (no Kubernetes client): (status, body).
fn curl(api: &ApiServer, path: &str, client_cert: bool) -> (u16, String) {
    let pki = api.dir().join("pki");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "20"])
        .arg("--cacert")
        .arg(api.ca_path());
    if client_cert {
        cmd.arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"));
    }
    let out = cmd
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{}{path}", api.url()))
        .output()
        .expect("run curl (Debian package curl; meta-tests/apiserver/build.sh installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = s.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

#[test]
fn apiserver_serves_the_default_namespace_to_the_admin() {
    let api = ApiServer::start();
    assert!(api.url().starts_with("https://127.0.0.1:"), "{}", api.url());

    let (code, body) = curl(&api, "/api/v1/namespaces/default", true);
    assert_eq!(code, 200, "GET /api/v1/namespaces/default: {body}");
    let ns: Value = serde_json::from_str(&body).expect("namespace JSON");
    assert_eq!(ns["kind"], "Namespace", "{ns}");
    assert_eq!(ns["metadata"]["name"], "default", "{ns}");

    // The server is the one built from Debian's source.
    let (code, body) = curl(&api, "/version", true);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("version JSON");
    assert_eq!(v["gitVersion"], format!("v{VERSION}"), "{v}");

    // No client certificate: anonymous auth is off.
    let (code, body) = curl(&api, "/api/v1/namespaces/default", false);
    assert_eq!(code, 401, "anonymous GET: {body}");

    // The admin kubeconfig names the same server and embeds the CA.
    let kc: Value = serde_json::from_str(
        &std::fs::read_to_string(api.admin_kubeconfig()).expect("read admin kubeconfig"),
    )
    .expect("kubeconfig JSON");
    assert_eq!(kc["clusters"][0]["cluster"]["server"], api.url());
    assert!(api.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));

    // Nothing listens anywhere but on 127.0.0.1.
    let listeners = api.listeners();
    assert!(
        listeners.iter().any(|(n, _)| *n == "kube-apiserver")
            && listeners.iter().any(|(n, _)| *n == "etcd"),
        "{listeners:?}"
    );
    for (name, addr) in &listeners {
        assert_eq!(
            addr.ip(),
            std::net::IpAddr::from([127, 0, 0, 1]),
            "{name} listens on {addr}"
        );
    }
}

#[test]
fn dropping_the_fixture_stops_both_processes_and_removes_its_directories() {
    let api = ApiServer::start();
    let dirs = [api.dir().to_path_buf(), api.etcd_data_dir().to_path_buf()];
    let pids = api.pids();
    let addr: std::net::SocketAddr = api.url().trim_start_matches("https://").parse().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(api);
    for d in &dirs {
        assert!(!d.exists(), "{} still there", d.display());
    }
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still there"
        );
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "{addr} still accepts"
    );
}
