//! The spool between the plugin and the node agent: one small JSON file per CNI verb
//! (ADD, DEL, CHECK) that meta-cni drops into a directory next to the agent's socket
//! (default [`DEFAULT_SPOOL_DIR`]) without waiting for anyone, and that the agent picks up
//! to send Kubernetes Events and to feed its Prometheus metrics.
//!
//! Format (version [`VERSION`], documented in docs/ARCHITECTURE.md): a [`Record`] as JSON,
//! at most [`MAX_RECORD_BYTES`]. A file is written as `.tmp.<name>` and renamed to
//! `<name>` = `<unix ms>-<pid>-<n>.json`, so the agent never sees half a record; names
//! starting with `.` are never read (a temp file older than [`STALE_TEMP`] is a killed
//! writer's and is removed). The directory is bounded: [`write`] drops the record when
//! [`MAX_FILES`] files are already waiting (the agent is down), and the agent drops
//! records older than [`MAX_AGE`] unsent.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The record format's version.
pub const VERSION: u32 = 1;
/// The spool directory's default (next to the agent's default socket).
pub const DEFAULT_SPOOL_DIR: &str = "/run/meta-cni/spool";
/// At most this many records wait in the spool; further ones are dropped by the writer.
pub const MAX_FILES: usize = 1024;
/// The largest record the agent reads (larger files are garbage).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Records older than this are dropped by the agent instead of being sent.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// A temp file older than this belongs to a writer that died between write and rename.
pub const STALE_TEMP: Duration = Duration::from_secs(60);
/// The longest error message kept in a record (longer ones are cut at a char boundary).
pub const MAX_MESSAGE: usize = 2048;

/// The CNI verb of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verb {
    /// ADD
    Add,
    /// DEL
    Del,
    /// CHECK
    Check,
}

impl Verb {
    /// `ADD`, `DEL` or `CHECK`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
        }
    }
}

/// The pod a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// metadata.uid, when known (K8S_POD_UID or the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One attachment (network × interface) of a verb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRecord {
    /// `namespace/name` of the NAD, or the cluster network's name.
    pub network: String,
    /// The interface in the pod.
    pub ifname: String,
    /// The delegate's type (the first plugin of the network's configuration list).
    #[serde(rename = "type")]
    pub delegate_type: String,
    /// How long its delegate took, in seconds.
    pub duration_seconds: f64,
    /// 0 on success, else the CNI error code.
    pub code: u32,
    /// The error message on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The addresses it got (ADD), `ip/prefix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// What one verb did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// [`VERSION`].
    pub version: u32,
    /// The verb.
    pub verb: Verb,
    /// When the verb started, Unix time in milliseconds.
    pub time_unix_ms: u64,
    /// CNI_CONTAINERID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The pod, in Kubernetes mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The whole verb, in seconds.
    pub duration_seconds: f64,
    /// 0 on success, else the CNI error code the runtime got.
    pub code: u32,
    /// The error message the runtime got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The attachments run, in order (on failure: up to the failed one).
    #[serde(default)]
    pub attachments: Vec<AttachmentRecord>,
    /// What the cluster IPAM (`meta-ipam`) did in this verb, per network (absent when it
    /// did nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipam: Vec<IpamRecord>,
}

/// The cluster IPAM's counters of one verb for one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamRecord {
    /// The IPAM network (whereabouts' `network_name`, else the configuration's name).
    pub network: String,
    /// Addresses allocated.
    #[serde(default)]
    pub allocations: u64,
    /// Addresses released.
    #[serde(default)]
    pub releases: u64,
    /// Conditional writes refused (409) and retried.
    #[serde(default)]
    pub conflicts: u64,
    /// Requests sent to the API server.
    #[serde(default)]
    pub api_requests: u64,
    /// Addresses skipped because an overlapping range holds them.
    #[serde(default)]
    pub overlap_skips: u64,
    /// Addresses handed out offline that an overlapping range held as well.
    #[serde(default)]
    pub overlap_conflicts: u64,
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The record is in the spool under this path.
    Spooled(PathBuf),
    /// The spool directory does not exist (no agent was ever started on this node):
    /// nothing written.
    NoSpool,
    /// [`MAX_FILES`] records were already waiting: this one was dropped.
    Full,
}

/// Cuts `s` to at most [`MAX_MESSAGE`] bytes at a char boundary.
pub fn clip(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Milliseconds since the Unix epoch of `t`.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Record {
    /// Parses and checks a spool file's content: valid JSON of this [`VERSION`], at most
    /// [`MAX_RECORD_BYTES`], a pod with a namespace and a name when there is one.
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "{} bytes, more than {MAX_RECORD_BYTES}",
                bytes.len()
            ));
        }
        #[derive(Deserialize)]
        struct V {
            version: Option<u32>,
        }
        let v: V = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        match v.version {
            Some(VERSION) => {}
            Some(n) => return Err(format!("version {n}, this agent reads {VERSION}")),
            None => return Err("no version".into()),
        }
        let r: Record = serde_json::from_slice(bytes).map_err(|e| format!("invalid: {e}"))?;
        if let Some(p) = &r.pod
            && (p.namespace.is_empty() || p.name.is_empty())
        {
            return Err("pod without namespace or name".into());
        }
        if !r.duration_seconds.is_finite()
            || r.attachments
                .iter()
                .any(|a| !a.duration_seconds.is_finite())
        {
            return Err("duration is not a number".into());
        }
        Ok(r)
    }

    /// Whether the record is older than `max_age` at `now`.
    pub fn is_stale(&self, now: SystemTime, max_age: Duration) -> bool {
        unix_ms(now).saturating_sub(self.time_unix_ms) > max_age.as_millis() as u64
    }
}

/// The message of an `AddedInterface` Event, as Multus writes it (`"Add %s %v from %s"`
/// with the addresses as a Go `[]string`): `Add net1 [10.1.2.3/24 fd00::3/64] from
/// default/macvlan`, and without ` from ...` when the network has no name.
pub fn added_interface_message(ifname: &str, ips: &[String], network: &str) -> String {
    let ips = ips.join(" ");
    if network.is_empty() {
        format!("Add {ifname} [{ips}]")
    } else {
        format!("Add {ifname} [{ips}] from {network}")
    }
}

/// The message of a failed ADD's Warning Event: the interface and network that failed
/// (when one did) and the CNI error as the runtime got it.
pub fn failed_add_message(
    ifname: Option<&str>,
    network: Option<&str>,
    code: u32,
    msg: &str,
) -> String {
    match (ifname, network) {
        (Some(i), Some(n)) if !n.is_empty() => {
            format!("Add {i} from {n} failed: CNI error {code}: {msg}")
        }
        (Some(i), _) => format!("Add {i} failed: CNI error {code}: {msg}"),
        _ => format!("ADD failed: CNI error {code}: {msg}"),
    }
}

/// Whether `name` is a finished record's file name (not a temp file, `.json`).
pub fn is_record_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json")
}

/// Writes `rec` into the spool `dir` atomically (a temp file in `dir`, then a rename),
/// unless `dir` does not exist or holds `max_files` entries already. Never waits on
/// anything but the file system; no fsync (the spool is on tmpfs and best effort).
pub fn write(dir: &Path, rec: &Record, max_files: usize) -> std::io::Result<Written> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Written::NoSpool),
        Err(e) => return Err(e),
    };
    if entries.take(max_files).count() >= max_files {
        return Ok(Written::Full);
    }
    let body = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    let name = format!(
        "{}-{}-{}.json",
        rec.time_unix_ms,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join(format!(".tmp.{name}"));
    let path = dir.join(&name);
    let res = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Written::Spooled(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            version: VERSION,
            verb: Verb::Add,
            time_unix_ms: 1_700_000_000_000,
            container_id: "c1".into(),
            pod: Some(PodRef {
                namespace: "default".into(),
                name: "p".into(),
                uid: Some("u-1".into()),
            }),
            duration_seconds: 0.012,
            code: 0,
            message: None,
            attachments: vec![AttachmentRecord {
                network: "default/blue".into(),
                ifname: "net1".into(),
                delegate_type: "bridge".into(),
                duration_seconds: 0.003,
                code: 0,
                message: None,
                ips: vec!["10.1.2.3/24".into()],
            }],
            ipam: vec![IpamRecord {
                network: "blue".into(),
                allocations: 1,
                releases: 0,
                conflicts: 2,
                api_requests: 5,
                overlap_skips: 1,
                overlap_conflicts: 0,
            }],
        }
    }

    #[test]
    fn format_is_the_documented_json() {
        let v = serde_json::to_value(rec()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "version": 1, "verb": "ADD", "timeUnixMs": 1_700_000_000_000u64,
                "containerID": "c1",
                "pod": {"namespace": "default", "name": "p", "uid": "u-1"},
                "durationSeconds": 0.012, "code": 0,
                "attachments": [{"network": "default/blue", "ifname": "net1", "type": "bridge",
                                 "durationSeconds": 0.003, "code": 0, "ips": ["10.1.2.3/24"]}],
                "ipam": [{"network": "blue", "allocations": 1, "releases": 0, "conflicts": 2,
                          "apiRequests": 5, "overlapSkips": 1, "overlapConflicts": 0}]
            })
        );
        let back = Record::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, rec());
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        assert!(Record::parse(b"").is_err());
        assert!(Record::parse(b"\x00\xffgarbage").is_err());
        assert!(Record::parse(b"{}").unwrap_err().contains("no version"));
        let mut v = serde_json::to_value(rec()).unwrap();
        v["version"] = 2.into();
        let e = Record::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        v["version"] = 1.into();
        v["verb"] = "GC".into();
        assert!(Record::parse(&serde_json::to_vec(&v).unwrap()).is_err());
        v["verb"] = "DEL".into();
        v["pod"]["name"] = "".into();
        assert!(Record::parse(&serde_json::to_vec(&v).unwrap()).is_err());
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(Record::parse(&big).unwrap_err().contains("more than"));
    }

    #[test]
    fn multus_message_format() {
        assert_eq!(
            added_interface_message(
                "net1",
                &["10.1.2.3/24".into(), "fd00::3/64".into()],
                "default/macvlan"
            ),
            "Add net1 [10.1.2.3/24 fd00::3/64] from default/macvlan"
        );
        assert_eq!(
            added_interface_message("eth0", &[], "cluster"),
            "Add eth0 [] from cluster"
        );
        assert_eq!(
            added_interface_message("eth0", &["10.0.0.2/24".into()], ""),
            "Add eth0 [10.0.0.2/24]"
        );
        assert_eq!(
            failed_add_message(Some("net1"), Some("e2e/red"), 7, "no such master"),
            "Add net1 from e2e/red failed: CNI error 7: no such master"
        );
        assert_eq!(
            failed_add_message(None, None, 3, "NAD e2e/x not found"),
            "ADD failed: CNI error 3: NAD e2e/x not found"
        );
    }

    #[test]
    fn write_is_atomic_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            write(&d.path().join("absent"), &rec(), 4).unwrap(),
            Written::NoSpool
        );
        let mut paths = Vec::new();
        for _ in 0..3 {
            match write(d.path(), &rec(), 3).unwrap() {
                Written::Spooled(p) => paths.push(p),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(write(d.path(), &rec(), 3).unwrap(), Written::Full);
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| is_record_name(n)), "{names:?}");
        for p in &paths {
            assert_eq!(Record::parse(&std::fs::read(p).unwrap()).unwrap(), rec());
        }
        std::fs::remove_file(&paths[0]).unwrap();
        assert!(matches!(
            write(d.path(), &rec(), 3).unwrap(),
            Written::Spooled(_)
        ));
    }

    #[test]
    fn staleness_and_clipping() {
        let r = rec();
        let t = UNIX_EPOCH + Duration::from_millis(r.time_unix_ms);
        assert!(!r.is_stale(t + Duration::from_secs(3599), MAX_AGE));
        assert!(r.is_stale(t + Duration::from_secs(3601), MAX_AGE));
        let long = "é".repeat(MAX_MESSAGE);
        let c = clip(&long);
        assert!(c.len() <= MAX_MESSAGE && c.chars().all(|ch| ch == 'é'));
        assert!(!is_record_name(".tmp.1-2-3.json"));
    }
}
