//! Helpers shared by the bridge integration tests.
#![allow(dead_code)]

pub use meta_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Our binary.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meta-bridge"))
}

/// The spec versions both we and the reference 1.1.1 speak.
pub const SHARED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// Every version we speak.
pub const OUR_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A bridge config: `base` merged over the defaults, with the version and name set.
pub fn conf(version: &str, name: &str, base: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": name, "type": "bridge"});
    if let (Some(m), Some(b)) = (c.as_object_mut(), base.as_object()) {
        for (k, v) in b {
            m.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A host-local ipam section with its own data dir.
pub fn host_local(data_dir: &Path, ranges: Value) -> Value {
    json!({"type": "host-local", "ranges": ranges, "dataDir": data_dir})
}

/// CNI_PATH for our plugin and the reference (IPAM binaries are looked up there).
pub fn cni_path() -> String {
    REFERENCE_DIR.to_string()
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
    let path = cni_path();
    let inv = Invocation {
        verb,
        container_id: cid,
        netns: &netns,
        ifname,
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
        path: &path,
        ..Default::default()
    };
    run_in(w.node.netns(), bin, &inv, conf.to_string().as_bytes())
}

/// `conf` with `prevResult` set.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}
