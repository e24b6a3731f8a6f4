//! Helpers shared by the ipvlan integration tests.
#![allow(dead_code)]

pub use meta_tests::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Our binary.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meta-ipvlan"))
}

/// The spec versions both we and the reference 1.1.1 speak.
pub const SHARED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// Every version we speak.
pub const OUR_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// An ipvlan config: `extra` merged over the basics.
pub fn conf(version: &str, name: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": name, "type": "ipvlan"});
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A host-local ipam section with its own data dir.
pub fn host_local(data_dir: &Path, subnet: &str) -> Value {
    json!({"type": "host-local", "subnet": subnet, "dataDir": data_dir})
}

/// `conf` with `prevResult` set.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// Host-local allocation files (locks and the last-reserved markers excluded).
pub fn ip_files(dir: &Path) -> Vec<String> {
    dir_contents(dir)
        .into_keys()
        .filter(|k| !k.ends_with("lock") && !k.contains("last_reserved_ip"))
        .collect()
}

/// Runs `bin` in the test's own process context (no namespace switch): only for
/// invocations that never reach the kernel (VERSION, bad input, DEL of a gone netns,
/// STATUS/GC without a master, IPAM-only work).
pub fn run_plain(bin: &Path, inv: &Invocation, stdin: &[u8]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", inv.verb)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", inv.path);
    for (k, v) in &inv.extra_env {
        cmd.env(k, v);
    }
    for k in &inv.unset {
        cmd.env_remove(k);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    Run {
        code: out.status.code().unwrap_or(128),
        json: serde_json::from_str(stdout.trim()).ok(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        max_rss_kib: 0,
    }
}

/// Runs one verb of `bin` in the world's node namespace against pod `pod`.
pub fn invoke(
    w: &World,
    bin: &Path,
    verb: &str,
    cid: &str,
    pod: usize,
    ifname: &str,
    conf: &Value,
) -> Run {
    let netns = w.pod(pod);
    let inv = Invocation {
        verb,
        container_id: cid,
        netns: &netns,
        ifname,
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
        path: REFERENCE_DIR,
        ..Default::default()
    };
    run_in(w.node.netns(), bin, &inv, conf.to_string().as_bytes())
}
