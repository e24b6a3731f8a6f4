//! The durable per-attachment journal: the plan is written before the first delegate runs,
//! each result is recorded as it lands, and DEL/GC work from it alone (no API server, netns
//! may be gone). One file per (container ID, runtime ifname), written atomically (temp +
//! fsync + rename) under an exclusive flock on a sibling lock file.

use cni_core::{CniResult, Env, Error, Result, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where an attachment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Planned; its ADD may have started (a crash mid-ADD leaves this): DEL it anyway.
    Planned,
    /// ADD succeeded; `result` holds its result.
    Added,
}

/// One attachment of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// Network name: `namespace/name` of a NAD, or the cluster network's name.
    pub network: String,
    /// Interface name in the pod.
    pub ifname: String,
    /// The configuration list that was (or is to be) run.
    pub conf: Value,
    /// Capability arguments (runtimeConfig) given to the plugins that declare them.
    #[serde(default, rename = "capabilityArgs")]
    pub cap_args: Map<String, Value>,
    /// `args.cni` merged into each plugin configuration.
    #[serde(default, rename = "cniArgs", skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// Gateways this attachment owns the default route for.
    #[serde(
        default,
        rename = "defaultRoute",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_route: Vec<std::net::IpAddr>,
    /// Whether this is the cluster network (its result goes to the runtime).
    #[serde(default, rename = "isCluster")]
    pub is_cluster: bool,
    /// Progress.
    pub state: State,
    /// The result (canonical 1.1.0 JSON) once added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl Attachment {
    /// The recorded result, once added.
    pub fn cni_result(&self) -> Option<CniResult> {
        self.result
            .as_ref()
            .and_then(|v| CniResult::from_value(v).ok())
    }

    /// Records a (possibly adjusted) result; the attachment is added.
    pub fn record(&mut self, result: &CniResult) {
        self.state = State::Added;
        self.result = Some(result.to_value(Version::V1_1_0));
    }
}

/// The pod an entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A journal entry: everything DEL needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version.
    pub version: u32,
    /// CNI_CONTAINERID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// CNI_IFNAME given by the runtime (the cluster interface).
    pub ifname: String,
    /// CNI_NETNS at ADD.
    pub netns: String,
    /// CNI_ARGS at ADD.
    #[serde(rename = "cniArgs")]
    pub cni_args: String,
    /// The pod, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Attachments in ADD order.
    pub attachments: Vec<Attachment>,
}

impl Entry {
    /// The format version this build writes.
    pub const VERSION: u32 = 1;

    /// The entry an ADD journals before its first delegate runs: the invocation (container
    /// ID, runtime ifname, netns and CNI_ARGS, all DEL and GC need), the pod, and the plan.
    pub fn planned(env: &Env, pod: Option<PodRef>, attachments: Vec<Attachment>) -> Entry {
        Entry {
            version: Entry::VERSION,
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            netns: env.netns.clone(),
            cni_args: env.args_raw.clone(),
            pod,
            attachments,
        }
    }
}

/// An open, locked journal slot for one (container ID, ifname).
pub struct Journal {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

fn io(ctx: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(format!("{ctx}: {e}"))
}

/// The file name of an entry. Container IDs and ifnames cannot contain '/'; ':' is not
/// allowed in either, so it separates them unambiguously.
fn file_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}.json")
}

impl Journal {
    /// Opens (creating the directory) and locks the slot; blocks while another invocation
    /// for the same attachment holds it.
    pub fn open(dir: &Path, container_id: &str, ifname: &str) -> Result<Journal> {
        std::fs::create_dir_all(dir).map_err(io(format!("create cache dir {}", dir.display())))?;
        let path = dir.join(file_name(container_id, ifname));
        let lock_path = dir.join(format!("{}.lock", file_name(container_id, ifname)));
        // The lock file is removed with the entry; a waiter that then wins the flock holds
        // an unlinked file, so it checks that it locked the file now at the path, and
        // otherwise tries again.
        let lock = loop {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(io(format!("open {}", lock_path.display())))?;
            let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::io(format!("lock {}: {e}", lock_path.display())))?;
            use std::os::unix::fs::MetadataExt;
            let held = lock
                .metadata()
                .map_err(io(format!("stat {}", lock_path.display())))?;
            match std::fs::metadata(&lock_path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => break lock,
                _ => continue,
            }
        };
        Ok(Journal { path, _lock: lock })
    }

    /// The entry, if any. A corrupt file is an error naming it (never silently dropped).
    pub fn load(&self) -> Result<Option<Entry>> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::decode(format!("corrupt journal {}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("read {}", self.path.display()))(e)),
        }
    }

    /// Writes the entry atomically (temp file, fsync, rename, fsync dir).
    pub fn store(&self, e: &Entry) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let data = serde_json::to_vec_pretty(e)
            .map_err(|e| Error::internal(format!("serialize journal: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("write journal {}: {e}", self.path.display()))
        })
    }

    /// Removes the entry (and its lock file; the flock we hold keeps others out until we
    /// drop it, and a new opener recreates it).
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("remove {}", self.path.display()))(e)),
        }
        let lock = self.path.with_file_name(format!(
            "{}.lock",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_file(lock);
        Ok(())
    }

    /// The path of the entry file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// All (container ID, ifname) with an entry in `dir`.
pub fn list(dir: &Path) -> Result<Vec<(String, String)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
    };
    let mut out = Vec::new();
    for de in rd.flatten() {
        let name = de.file_name().to_string_lossy().to_string();
        if let Some(stem) = name.strip_suffix(".json")
            && let Some((cid, ifn)) = stem.split_once(':')
        {
            out.push((cid.to_string(), ifn.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            version: 1,
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            cni_args: "IgnoreUnknown=1".into(),
            pod: Some(PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: None,
            }),
            attachments: vec![Attachment {
                network: "ns/a".into(),
                ifname: "net1".into(),
                conf: serde_json::json!({"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]}),
                cap_args: Map::new(),
                cni_args: None,
                default_route: vec![],
                is_cluster: false,
                state: State::Planned,
                result: None,
            }],
        }
    }

    #[test]
    fn roundtrip_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path(), "c1", "eth0").unwrap();
        assert_eq!(j.load().unwrap(), None);
        j.store(&entry()).unwrap();
        assert_eq!(j.load().unwrap(), Some(entry()));
        assert_eq!(
            list(d.path()).unwrap(),
            vec![("c1".to_string(), "eth0".to_string())]
        );
        j.remove().unwrap();
        assert!(list(d.path()).unwrap().is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn planned_entry_records_the_invocation() {
        let env = Env {
            verb: cni_core::Verb::Add,
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: Default::default(),
            args_raw: "IgnoreUnknown=1".into(),
            path: vec![],
        };
        let want = entry();
        let mut e = Entry::planned(&env, want.pod.clone(), want.attachments.clone());
        assert_eq!(e, want);
        let r = CniResult::from_value(&serde_json::json!({"cniVersion": "1.1.0"})).unwrap();
        e.attachments[0].record(&r);
        assert_eq!(e.attachments[0].state, State::Added);
        assert_eq!(e.attachments[0].cni_result(), Some(r));
    }

    #[test]
    fn corrupt_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("c1:eth0.json"), b"{garbage").unwrap();
        let j = Journal::open(d.path(), "c1", "eth0").unwrap();
        assert_eq!(j.load().unwrap_err().code, 6);
    }

    #[test]
    fn lock_serializes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_path_buf();
        let j = Journal::open(&p, "c1", "eth0").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _j2 = Journal::open(&p, "c1", "eth0").unwrap();
            tx.send(()).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            rx.try_recv().is_err(),
            "second opener must wait for the lock"
        );
        drop(j);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
