//! Helpers for running CNI plugin binaries in tests.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The reference plugins (containernetworking/plugins v1.1.1).
pub const REF_HOST_LOCAL: &str = "/usr/lib/cni/host-local";
pub const REF_STATIC: &str = "/usr/lib/cni/static";
pub const OURS_HOST_LOCAL: &str = env!("CARGO_BIN_EXE_meta-host-local");
pub const OURS_STATIC: &str = env!("CARGO_BIN_EXE_meta-static");

/// Fails (never skips) when the reference binary is missing.
pub fn require(path: &str) {
    assert!(
        Path::new(path).is_file(),
        "reference plugin {path} is missing: install containernetworking-plugins (v1.1.1)"
    );
}

/// One invocation's outcome.
#[derive(Debug, Clone)]
pub struct Out {
    /// stdout parsed as JSON (Null when empty).
    pub json: Value,
    /// The raw stdout.
    pub raw: String,
    /// stderr.
    pub stderr: String,
    /// Exit code.
    pub rc: i32,
}

impl Out {
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }
    pub fn msg(&self) -> String {
        self.json["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// A CNI invocation.
pub struct Call<'a> {
    pub cmd: &'a str,
    pub cid: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub netns: &'a Path,
}

/// Runs `plugin` with the CNI environment and `stdin`.
pub fn run(plugin: &str, call: &Call<'_>, stdin: &str) -> Out {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CNI_COMMAND", call.cmd)
        .env("CNI_CONTAINERID", call.cid)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {plugin}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let o = child.wait_with_output().expect("wait");
    let raw = String::from_utf8_lossy(&o.stdout).to_string();
    let json = if raw.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{plugin}: bad JSON {raw:?}: {e}"))
    };
    Out {
        json,
        raw,
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
        rc: o.status.code().unwrap_or(-1),
    }
}

/// A network directory's content: name -> (mode, bytes).
pub fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut m = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return m;
    };
    for e in rd {
        let e = e.expect("dir entry");
        let md = e.metadata().expect("metadata");
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        m.insert(
            e.file_name().to_string_lossy().to_string(),
            (md.permissions().mode() & 0o7777, bytes),
        );
    }
    m
}

/// A file usable as CNI_NETNS (IPAM never enters it; it must not be our own netns).
pub fn fake_netns(dir: &Path) -> PathBuf {
    let p = dir.join("netns");
    std::fs::write(&p, b"").expect("netns file");
    p
}
