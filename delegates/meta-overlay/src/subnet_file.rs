//! The subnet file: what the node side tells the CNI side (like flannel's `subnet.env`).
//!
//! # Format
//!
//! UTF-8 text, one `KEY=VALUE` per line; blank lines and lines starting with `#` are
//! ignored, and so are unknown keys (newer writers may add some). A value may be wrapped in
//! double quotes. The keys:
//!
//! ```text
//! # written by meta-cni: the primary overlay of this node
//! META_CNI_NETWORK=10.244.0.0/16     # the cluster CIDR (all pod subnets)
//! META_CNI_SUBNET=10.244.1.0/24      # this node's pod subnet (network address form)
//! META_CNI_MTU=1450                  # the pods' MTU (underlay MTU - VXLAN overhead)
//! ```
//!
//! (The comments after the values above are for this documentation; the file has none.)
//! The subnet must lie inside the network. The file is replaced atomically (written to a
//! temporary file in the same directory, synced, renamed over the old one), so a reader
//! sees either the old or the new content, never a mix.

use super::{Error, Result};
use ipnet::IpNet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the node side writes the subnet file unless configured otherwise.
pub const DEFAULT_SUBNET_FILE: &str = "/run/meta-cni/subnet.env";

const KEY_NETWORK: &str = "META_CNI_NETWORK";
const KEY_SUBNET: &str = "META_CNI_SUBNET";
const KEY_MTU: &str = "META_CNI_MTU";

/// The content of a subnet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetFile {
    /// The cluster CIDR.
    pub cluster_cidr: IpNet,
    /// This node's pod subnet.
    pub subnet: IpNet,
    /// The pods' MTU.
    pub mtu: u32,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::SubnetFile {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn check(path: &Path, f: &SubnetFile) -> Result<()> {
    let (c, s) = (f.cluster_cidr, f.subnet);
    if c.addr().is_ipv4() != s.addr().is_ipv4()
        || s.prefix_len() < c.prefix_len()
        || !c.contains(&s.network())
    {
        return Err(bad(
            path,
            format!("subnet {s} is not inside the network {c}"),
        ));
    }
    if !(68..=65535).contains(&f.mtu) {
        return Err(bad(
            path,
            format!("MTU {} out of range (68..=65535)", f.mtu),
        ));
    }
    Ok(())
}

/// Writes the subnet file atomically (temporary file + fsync + rename, then the directory
/// is synced), creating its directory when needed. Mode 0644.
pub fn write_subnet_file(path: &Path, subnet: IpNet, mtu: u32, cluster_cidr: IpNet) -> Result<()> {
    let f = SubnetFile {
        cluster_cidr: cluster_cidr.trunc(),
        subnet: subnet.trunc(),
        mtu,
    };
    check(path, &f)?;
    let io = |p: &Path| {
        let p: PathBuf = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| bad(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let body = format!(
        "# written by meta-cni: the primary overlay of this node\n\
         {KEY_NETWORK}={}\n{KEY_SUBNET}={}\n{KEY_MTU}={}\n",
        f.cluster_cidr, f.subnet, f.mtu
    );
    let res = (|| -> Result<()> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        out.write_all(body.as_bytes()).map_err(io(&tmp))?;
        out.sync_all().map_err(io(&tmp))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads and validates a subnet file. A missing file satisfies [`Error::is_not_found`].
pub fn read_subnet_file(path: &Path) -> Result<SubnetFile> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (mut net, mut sub, mut mtu) = (None, None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad(path, format!("line {}: expected KEY=VALUE", n + 1)));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        let cidr = |v: &str| -> Result<IpNet> {
            v.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                bad(
                    path,
                    format!("line {}: {} is not a CIDR: {v:?}", n + 1, k.trim()),
                )
            })
        };
        match k.trim() {
            KEY_NETWORK => net = Some(cidr(v)?),
            KEY_SUBNET => sub = Some(cidr(v)?),
            KEY_MTU => {
                mtu = Some(v.parse::<u32>().map_err(|_| {
                    bad(
                        path,
                        format!("line {}: {KEY_MTU} is not a number: {v:?}", n + 1),
                    )
                })?)
            }
            _ => {}
        }
    }
    let missing = |k: &str| bad(path, format!("{k} is missing"));
    let f = SubnetFile {
        cluster_cidr: net.ok_or_else(|| missing(KEY_NETWORK))?,
        subnet: sub.ok_or_else(|| missing(KEY_SUBNET))?,
        mtu: mtu.ok_or_else(|| missing(KEY_MTU))?,
    };
    check(path, &f)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_format() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/dir/subnet.env");
        write_subnet_file(
            &p,
            "10.244.1.0/24".parse().unwrap(),
            1450,
            "10.244.0.0/16".parse().unwrap(),
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "# written by meta-cni: the primary overlay of this node\n\
             META_CNI_NETWORK=10.244.0.0/16\nMETA_CNI_SUBNET=10.244.1.0/24\nMETA_CNI_MTU=1450\n"
        );
        let f = read_subnet_file(&p).unwrap();
        assert_eq!(f.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(f.cluster_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(f.mtu, 1450);
        // Overwrite: no temporary file left behind.
        write_subnet_file(
            &p,
            "10.244.7.1/24".parse().unwrap(),
            1400,
            "10.244.0.0/16".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            read_subnet_file(&p).unwrap().subnet.to_string(),
            "10.244.7.0/24"
        );
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["subnet.env"]);
    }

    #[test]
    fn lenient_reader_strict_values() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.env");
        std::fs::write(
            &p,
            "\n# c\nFUTURE_KEY=1\nMETA_CNI_SUBNET=\"10.244.3.0/24\"\n META_CNI_NETWORK = 10.244.0.0/16\nMETA_CNI_MTU=1450\n",
        )
        .unwrap();
        assert_eq!(
            read_subnet_file(&p).unwrap().subnet.to_string(),
            "10.244.3.0/24"
        );
        for (body, needle) in [
            (
                "META_CNI_NETWORK=10.244.0.0/16\nMETA_CNI_MTU=1450\n",
                "META_CNI_SUBNET is missing",
            ),
            (
                "META_CNI_NETWORK=10.244.0.0/16\nMETA_CNI_SUBNET=10.9.0.0/24\nMETA_CNI_MTU=1450\n",
                "not inside",
            ),
            (
                "META_CNI_NETWORK=10.244.0.0/16\nMETA_CNI_SUBNET=x\nMETA_CNI_MTU=1450\n",
                "not a CIDR",
            ),
            (
                "META_CNI_NETWORK=10.244.0.0/16\nMETA_CNI_SUBNET=10.244.1.0/24\nMETA_CNI_MTU=big\n",
                "not a number",
            ),
            ("garbage\n", "line 1: expected KEY=VALUE"),
        ] {
            std::fs::write(&p, body).unwrap();
            let e = read_subnet_file(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
            assert!(e.contains("s.env"), "{e}");
        }
        let e = read_subnet_file(&d.path().join("missing")).unwrap_err();
        assert!(e.is_not_found());
        assert!(
            write_subnet_file(
                &p,
                "10.9.0.0/24".parse().unwrap(),
                1450,
                "10.244.0.0/16".parse().unwrap()
            )
            .is_err()
        );
    }
}
