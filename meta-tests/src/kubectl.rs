//! kubectl v1.20.2, the client of the API server fixture's version, for the tests of
//! `deploy/` (`kubectl apply -k`).
//!
//! It is Debian bookworm's `kubernetes-client` package, not installed (it would conflict
//! with another `kubectl` on the machine) but downloaded and unpacked into
//! [`DIR`] by `meta-tests/kubectl/fetch.sh`, which [`kubectl`] runs when the binary is
//! missing, so a test fails rather than skips when it cannot be fetched.

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
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}); its log is on stderr above. stdout: {stdout}",
        script.display(),
        out.status
    );
    assert_eq!(
        stdout.lines().last().unwrap_or_default().trim(),
        BINARY,
        "{} printed an unexpected path",
        script.display()
    );
    assert!(
        binary_ok(),
        "{} succeeded but `{BINARY} version --client` does not say v{VERSION}",
        script.display()
    );
    *done = true;
    PathBuf::from(BINARY)
}
