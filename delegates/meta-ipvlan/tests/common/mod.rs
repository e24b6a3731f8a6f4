//! Helpers shared by the ipvlan integration tests.
#![allow(dead_code)]

pub use meta_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

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
