//! Who created a secondary segment's device on this node: one small JSON file per VNI in
//! the segment state directory, written by the vxlan delegate and read by the delegate
//! (for conflict messages) and the node agent (whether to program the flood list).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default segment state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/meta-cni/vxlan";

/// Who created a VNI's device on this node (`<stateDir>/vni-<vni>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Network name.
    pub network: String,
    /// VNI.
    pub vni: u32,
    /// Port.
    pub port: u16,
    /// MTU.
    pub mtu: u32,
    /// Bridge.
    pub bridge: String,
    /// Whether the creating configuration had a static `peers` list (then the agent
    /// leaves the segment's flood list alone; otherwise it programs every node).
    #[serde(default, rename = "staticPeers")]
    pub static_peers: bool,
}

fn owner_path(dir: &Path, vni: u32) -> PathBuf {
    dir.join(format!("vni-{vni}.json"))
}

/// Records `o` atomically (temp file + fsync + rename).
pub fn write_owner(dir: &Path, o: &Owner) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = owner_path(dir, o.vni);
    let tmp = dir.join(format!(".vni-{}.json.tmp.{}", o.vni, std::process::id()));
    let body = serde_json::to_vec(o).map_err(std::io::Error::other)?;
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Reads who created VNI `vni`'s segment on this node (`None` when unrecorded).
pub fn read_owner(dir: &Path, vni: u32) -> Option<Owner> {
    let b = std::fs::read(owner_path(dir, vni)).ok()?;
    serde_json::from_slice(&b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let o = Owner {
            network: "a".into(),
            vni: 42,
            port: 4789,
            mtu: 1450,
            bridge: "mbr42".into(),
            static_peers: true,
        };
        write_owner(&d.path().join("x"), &o).unwrap();
        assert_eq!(read_owner(&d.path().join("x"), 42), Some(o));
        assert_eq!(read_owner(&d.path().join("x"), 43), None);
    }
}
