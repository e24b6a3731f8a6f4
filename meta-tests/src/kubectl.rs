//! kubectl v1.20.2, the client of the API server fixture's version, for the tests of
//! `deploy/` (`kubectl apply -k`).
//!
//! It is Debian bookworm's `kubernetes-client` package, not installed (it would conflict
//! with another `kubectl` on the machine) but downloaded and unpacked into
//! [`DIR`] by `meta-tests/kubectl/fetch.sh`, which [`kubectl`] runs when the binary is
//! missing, so a test fails rather than skips when it cannot be fetched.

use crate::apiserver::ApiServer;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The client's version: the API server fixture's ([`crate::apiserver::VERSION`]).
pub const VERSION: &str = "1.20.2";
/// Where `meta-tests/kubectl/fetch.sh` unpacks the package (outside any clone).
pub const DIR: &str = "/var/cache/meta-cni/kubectl-1.20.2";
/// The binary inside [`DIR`].
pub const BINARY: &str = "/var/cache/meta-cni/kubectl-1.20.2/usr/bin/kubectl";

/// `meta-tests/kubectl/fetch.sh` of this checkout.
pub fn fetch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kubectl/fetch.sh")
}

fn binary_ok() -> bool {
    Command::new(BINARY)
        .args(["version", "--client", "--short"])
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim()
                    == format!("Client Version: v{VERSION}")
        })
        .unwrap_or(false)
}

/// The kubectl v1.20.2 binary; runs `meta-tests/kubectl/fetch.sh` (once per process) when
/// it is missing or does not say v1.20.2. Panics, with the script's log on stderr, when
/// that fails.
pub fn kubectl() -> PathBuf {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done || binary_ok() {
        *done = true;
        return PathBuf::from(BINARY);
    }
    let script = fetch_script();
    eprintln!("kubectl v{VERSION} missing: running {}", script.display());
    crate::run_fixture_script(&script, BINARY);
    assert!(
        binary_ok(),
        "{} succeeded but `{BINARY} version --client` does not say v{VERSION}",
        script.display()
    );
    *done = true;
    PathBuf::from(BINARY)
}

/// What a kubectl run gave.
pub struct Out {
    /// Exit status 0.
    pub ok: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} stdout:\n{}\nstderr:\n{}",
            self.ok, self.stdout, self.stderr
        )
    }
}

/// kubectl v1.20.2 as the fixture's admin, with `stdin` (JSON objects) when given.
pub fn run(api: &ApiServer, args: &[&str], stdin: Option<&Value>) -> Out {
    let mut cmd = Command::new(kubectl());
    cmd.arg("--kubeconfig")
        .arg(api.admin_kubeconfig())
        .arg("--request-timeout=30s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(v);
    }
    // kubectl writes its discovery cache under $HOME/.kube: keep it in the fixture's dir.
    cmd.env("HOME", api.dir());
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(v) = stdin {
        let mut si = child.stdin.take().expect("stdin");
        si.write_all(v.to_string().as_bytes()).expect("write stdin");
    }
    let o = child.wait_with_output().expect("wait kubectl");
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}
