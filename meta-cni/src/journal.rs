//! The durable per-attachment journal: the plan is written before the first delegate runs,
//! each result is recorded as it lands, and DEL/GC work from it alone (no API server, netns
//! may be gone). One file per (container ID, runtime ifname) under an exclusive flock on a
//! sibling lock file: the plan written atomically (temp + fdatasync + rename + directory
//! fsync), each later change appended as one line and fdatasync'd (see [`Journal`]).
//! Temp files are named after their slot, so DEL and GC of the slot remove one a kill -9
//! left, and every verb first sweeps those older than [`STALE_TEMP`].

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
    /// The format version this build writes (2: base line + update lines; 1, one
    /// document, is still read).
    pub const VERSION: u32 = 2;

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
///
/// On disk (format 2) the entry is one line of JSON (the plan, written atomically with a
/// temp file and rename), followed by one line per later [`Journal::store`] that changed
/// attachments (`{"set": [{"index", "state", "result"}, ...]}`), each appended with one
/// `write` and made durable with one `fdatasync`: a rewrite by rename would need the
/// directory synced as well, an append to an existing name does not. A line without its
/// newline is a write a crash (kill -9) cut short: it was never durable, so it never
/// counted, and is ignored. Format 1 (one pretty-printed document) is still read.
pub struct Journal {
    path: PathBuf,
    dir: PathBuf,
    container_id: String,
    ifname: String,
    /// The entry as it is on disk, and the file to append to, once this handle stored one.
    written: Option<(Entry, File)>,
    _lock: nix::fcntl::Flock<File>,
}

/// One appended line: the attachments a store changed, applied together.
#[derive(Debug, Serialize, Deserialize)]
struct Update {
    set: Vec<AttachmentUpdate>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AttachmentUpdate {
    index: usize,
    state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
}

pub(crate) fn io(ctx: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(format!("{ctx}: {e}"))
}

/// The file name of an entry. Container IDs and ifnames cannot contain '/'; ':' is not
/// allowed in either, so it separates them unambiguously.
fn file_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}.json")
}

/// The lock file's name of an entry.
fn lock_name(container_id: &str, ifname: &str) -> String {
    format!("{}.lock", file_name(container_id, ifname))
}

/// A temp file's name: `.tmp-<containerID>:<ifname>.<pid>`. Named after its slot so that
/// DEL and GC of that slot find (and remove) one a kill -9 left; the leading dot keeps it
/// out of [`list`]'s entries.
fn temp_name(container_id: &str, ifname: &str) -> String {
    format!(".tmp-{container_id}:{ifname}.{}", std::process::id())
}

/// The slot (container ID, ifname) of a temp file name: ours (`.tmp-<cid>:<ifname>.<pid>`)
/// or the one earlier versions wrote (`<cid>:<ifname>.tmp.<pid>`). `None` for anything
/// else. Ifnames may contain dots; the pid is the digits after the last one.
fn temp_slot(name: &str) -> Option<(&str, &str)> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let stem = if let Some(rest) = name.strip_prefix(".tmp-") {
        let (stem, pid) = rest.rsplit_once('.')?;
        digits(pid).then_some(stem)?
    } else {
        let (stem, pid) = name.rsplit_once(".tmp.")?;
        digits(pid).then_some(stem)?
    };
    stem.split_once(':')
}

/// The slot a file of the cache dir belongs to, and what it is.
fn slot_of(name: &str) -> Option<(&str, &str)> {
    if let Some(stem) = name.strip_suffix(".json") {
        return stem.split_once(':');
    }
    if let Some(stem) = name.strip_suffix(".json.lock") {
        return stem.split_once(':');
    }
    temp_slot(name)
}

/// Parses an entry file (format 2: base line + update lines; or format 1: one document).
fn parse(bytes: &[u8]) -> std::result::Result<Entry, String> {
    if let Ok(e) = serde_json::from_slice::<Entry>(bytes) {
        return Ok(e);
    }
    let mut lines = bytes.split_inclusive(|b| *b == b'\n');
    let base = lines.next().unwrap_or_default();
    let mut e: Entry = serde_json::from_slice(base).map_err(|e| e.to_string())?;
    if !base.ends_with(b"\n") {
        return Err("unterminated entry".into());
    }
    for (n, line) in lines.enumerate() {
        if !line.ends_with(b"\n") {
            tracing::warn!("journal: ignoring an update cut short by a crash");
            break;
        }
        let u: Update =
            serde_json::from_slice(line).map_err(|err| format!("update {}: {err}", n + 1))?;
        for s in u.set {
            let a = e
                .attachments
                .get_mut(s.index)
                .ok_or_else(|| format!("update {}: no attachment {}", n + 1, s.index))?;
            a.state = s.state;
            a.result = s.result;
        }
    }
    Ok(e)
}

impl Journal {
    /// Opens (creating the directory) and locks the slot; blocks while another invocation
    /// for the same attachment holds it.
    pub fn open(dir: &Path, container_id: &str, ifname: &str) -> Result<Journal> {
        std::fs::create_dir_all(dir).map_err(io(format!("create cache dir {}", dir.display())))?;
        let path = dir.join(file_name(container_id, ifname));
        let lock_path = dir.join(lock_name(container_id, ifname));
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
        Ok(Journal {
            path,
            dir: dir.to_path_buf(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            written: None,
            _lock: lock,
        })
    }

    /// The entry, if any. A corrupt file is an error naming it (never silently dropped).
    pub fn load(&self) -> Result<Option<Entry>> {
        match std::fs::read(&self.path) {
            Ok(b) => parse(&b).map(Some).map_err(|e| {
                Error::decode(format!("corrupt journal {}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("read {}", self.path.display()))(e)),
        }
    }

    /// Makes `e` the durable entry. The first store of this handle (or one that changes
    /// more than attachment states and results) writes the whole entry: temp file,
    /// fdatasync, rename, fsync of the directory (a new name) — 2 syncs. Every later one
    /// appends the changed attachments as one line — 1 fdatasync; none when nothing
    /// changed.
    pub fn store(&mut self, e: &Entry) -> Result<()> {
        let set = match &self.written {
            Some((old, _)) => changes(old, e),
            None => None,
        };
        match set {
            Some(set) if set.is_empty() => Ok(()),
            Some(set) => self.append(e, set),
            None => self.rewrite(e),
        }
    }

    fn rewrite(&mut self, e: &Entry) -> Result<()> {
        self.written = None;
        let tmp = self.dir.join(temp_name(&self.container_id, &self.ifname));
        let mut data = serde_json::to_vec(e)
            .map_err(|e| Error::internal(format!("serialize journal: {e}")))?;
        data.push(b'\n');
        let write = || -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok(f)
        };
        let f = write().map_err(|err| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("write journal {}: {err}", self.path.display()))
        })?;
        self.written = Some((e.clone(), f));
        Ok(())
    }

    fn append(&mut self, e: &Entry, set: Vec<AttachmentUpdate>) -> Result<()> {
        let Some((_, f)) = &mut self.written else {
            return self.rewrite(e);
        };
        let mut line = serde_json::to_vec(&Update { set })
            .map_err(|e| Error::internal(format!("serialize journal: {e}")))?;
        line.push(b'\n');
        let res = f.write_all(&line).and_then(|_| f.sync_data());
        if let Err(err) = res {
            self.written = None;
            return Err(Error::io(format!(
                "append to journal {}: {err}",
                self.path.display()
            )));
        }
        if let Some((old, _)) = &mut self.written {
            *old = e.clone();
        }
        Ok(())
    }

    /// Removes the entry, any temp file of this slot a killed writer left, and the lock
    /// file (the flock we hold keeps others out until we drop it, and a new opener
    /// recreates it).
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("remove {}", self.path.display()))(e)),
        }
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for de in rd.flatten() {
                let name = de.file_name();
                let Some(name) = name.to_str() else { continue };
                if temp_slot(name) == Some((&self.container_id, &self.ifname)) {
                    let _ = std::fs::remove_file(de.path());
                }
            }
        }
        let _ = std::fs::remove_file(self.dir.join(lock_name(&self.container_id, &self.ifname)));
        Ok(())
    }

    /// The path of the entry file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The attachment updates that turn `old` into `new`, or `None` when more than
/// attachment states and results differ (the entry is then rewritten).
fn changes(old: &Entry, new: &Entry) -> Option<Vec<AttachmentUpdate>> {
    fn header(e: &Entry) -> (u32, &str, &str, &str, &str, Option<&PodRef>, usize) {
        (
            e.version,
            &e.container_id,
            &e.ifname,
            &e.netns,
            &e.cni_args,
            e.pod.as_ref(),
            e.attachments.len(),
        )
    }
    if header(old) != header(new) {
        return None;
    }
    let mut set = Vec::new();
    for (i, (o, n)) in old.attachments.iter().zip(&new.attachments).enumerate() {
        let mut o2 = o.clone();
        o2.state = n.state;
        o2.result = n.result.clone();
        if o2 != *n {
            return None;
        }
        if o.state != n.state || o.result != n.result {
            set.push(AttachmentUpdate {
                index: i,
                state: n.state,
                result: n.result.clone(),
            });
        }
    }
    Some(set)
}

/// How old a temp file must be before [`sweep_stale_temps`] takes it for a killed
/// writer's: a live writer renames its temp file within milliseconds.
pub const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes temp files of the journal's own pattern older than `older_than` from `dir`
/// (one readdir; run at the start of every verb). Returns how many went. Errors are
/// ignored: this is hygiene, never a reason to fail a verb.
pub fn sweep_stale_temps(dir: &Path, older_than: std::time::Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut n = 0;
    for de in rd.flatten() {
        let name = de.file_name();
        if name.to_str().and_then(temp_slot).is_none() {
            continue;
        }
        let old = de
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= older_than);
        if old && std::fs::remove_file(de.path()).is_ok() {
            tracing::debug!("removed stale journal temp file {}", de.path().display());
            n += 1;
        }
    }
    n
}

/// Every (container ID, ifname) with a file in `dir`: an entry, or only the lock file or a
/// temp file a kill -9 left before the plan was durable (then nothing of it was attached;
/// opening and removing the slot cleans it).
pub fn list(dir: &Path) -> Result<Vec<(String, String)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
    };
    let mut out = Vec::new();
    for de in rd.flatten() {
        let name = de.file_name().to_string_lossy().to_string();
        if let Some((cid, ifn)) = slot_of(&name) {
            out.push((cid.to_string(), ifn.to_string()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The entry of slot (container ID, ifname) as it is on disk now, read without its lock:
/// a snapshot for finding entries (the plan is written by rename, later lines are ignored
/// until complete). Act on an entry only under [`Journal::open`]'s lock, after a fresh
/// [`Journal::load`].
pub fn peek(dir: &Path, container_id: &str, ifname: &str) -> Result<Option<Entry>> {
    let path = dir.join(file_name(container_id, ifname));
    match std::fs::read(&path) {
        Ok(b) => parse(&b)
            .map(Some)
            .map_err(|e| Error::decode(format!("corrupt journal {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("read {}", path.display()))(e)),
    }
}

/// The slot (container ID, ifname) of the pod `namespace/name` (with UID `uid` when given)
/// in `dir`: the entry naming that pod, the most recently written one if a sandbox's
/// entry was never deleted. `None` when no entry names the pod (not added yet, or an ADD
/// is writing its plan). Corrupt entries are skipped (logged): they belong to DEL and GC.
pub fn find_pod(
    dir: &Path,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Option<(String, String)>> {
    let mut best: Option<(std::time::SystemTime, String, String)> = None;
    for (cid, ifname) in list(dir)? {
        let e = match peek(dir, &cid, &ifname) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let Some(p) = &e.pod else { continue };
        if p.namespace != namespace || p.name != name {
            continue;
        }
        if let (Some(want), Some(have)) = (uid, p.uid.as_deref())
            && want != have
        {
            continue;
        }
        let mtime = std::fs::metadata(dir.join(file_name(&cid, &ifname)))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _, _)| mtime >= *t) {
            best = Some((mtime, cid, ifname));
        }
    }
    Ok(best.map(|(_, c, i)| (c, i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            version: Entry::VERSION,
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
        let mut j = Journal::open(d.path(), "c1", "eth0").unwrap();
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

    fn result() -> CniResult {
        CniResult::from_value(&serde_json::json!({"cniVersion": "1.1.0",
            "ips": [{"address": "10.0.0.2/24"}]}))
        .unwrap()
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn later_stores_append_one_line_each_and_load_applies_them() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::open(d.path(), "c1", "eth0").unwrap();
        let mut e = entry();
        e.attachments.push(e.attachments[0].clone());
        e.attachments[1].ifname = "net2".into();
        j.store(&e).unwrap();
        // nothing changed: nothing written
        j.store(&e).unwrap();
        assert_eq!(
            std::fs::read(j.path())
                .unwrap()
                .split(|b| *b == b'\n')
                .count(),
            2
        );
        e.attachments[0].record(&result());
        j.store(&e).unwrap();
        assert_eq!(j.load().unwrap().as_ref(), Some(&e));
        e.attachments[1].record(&result());
        e.attachments[0].result = Some(serde_json::json!({"cniVersion": "1.1.0"}));
        j.store(&e).unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(j.load().unwrap().as_ref(), Some(&e));
        // Anything but states and results changed: rewritten as one line.
        e.netns = "/run/netns/y".into();
        j.store(&e).unwrap();
        assert_eq!(
            std::fs::read_to_string(j.path()).unwrap().lines().count(),
            1
        );
        assert_eq!(j.load().unwrap(), Some(e));
        assert_eq!(names(d.path()), vec!["c1:eth0.json", "c1:eth0.json.lock"]);
    }

    #[test]
    fn an_update_cut_short_is_ignored_a_bad_complete_one_is_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::open(d.path(), "c1", "eth0").unwrap();
        let mut e = entry();
        j.store(&e).unwrap();
        let planned = e.clone();
        e.attachments[0].record(&result());
        j.store(&e).unwrap();
        let full = std::fs::read(j.path()).unwrap();
        // kill -9 inside the append: the line lacks its newline (and maybe more)
        for cut in [1, 10, full.len() - planned_len(&planned) - 1] {
            std::fs::write(j.path(), &full[..full.len() - cut]).unwrap();
            assert_eq!(j.load().unwrap(), Some(planned.clone()), "cut {cut}");
        }
        let mut bad = full[..planned_len(&planned)].to_vec();
        bad.extend_from_slice(b"{\"set\": 7}\n");
        std::fs::write(j.path(), &bad).unwrap();
        assert_eq!(j.load().unwrap_err().code, 6);
        let mut bad = full[..planned_len(&planned)].to_vec();
        bad.extend_from_slice(b"{\"set\": [{\"index\": 5, \"state\": \"added\"}]}\n");
        std::fs::write(j.path(), &bad).unwrap();
        assert_eq!(j.load().unwrap_err().code, 6);
    }

    fn planned_len(e: &Entry) -> usize {
        serde_json::to_vec(e).unwrap().len() + 1
    }

    #[test]
    fn format_1_is_read() {
        let d = tempfile::tempdir().unwrap();
        let mut e = entry();
        e.version = 1;
        std::fs::write(
            d.path().join("c1:eth0.json"),
            serde_json::to_vec_pretty(&e).unwrap(),
        )
        .unwrap();
        let j = Journal::open(d.path(), "c1", "eth0").unwrap();
        assert_eq!(j.load().unwrap(), Some(e));
    }

    #[test]
    fn find_pod_by_name_and_uid() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(find_pod(d.path(), "ns", "p", None).unwrap(), None);
        let mut e = entry();
        e.pod.as_mut().unwrap().uid = Some("u1".into());
        Journal::open(d.path(), "c1", "eth0")
            .unwrap()
            .store(&e)
            .unwrap();
        std::fs::write(d.path().join("c9:eth0.json"), b"{garbage").unwrap();
        let slot = Some(("c1".to_string(), "eth0".to_string()));
        assert_eq!(find_pod(d.path(), "ns", "p", Some("u1")).unwrap(), slot);
        assert_eq!(find_pod(d.path(), "ns", "p", None).unwrap(), slot);
        assert_eq!(find_pod(d.path(), "ns", "p", Some("u2")).unwrap(), None);
        assert_eq!(find_pod(d.path(), "ns", "q", None).unwrap(), None);
        assert_eq!(find_pod(d.path(), "other", "p", None).unwrap(), None);
        assert_eq!(peek(d.path(), "c1", "eth0").unwrap(), Some(e));
        assert_eq!(peek(d.path(), "c2", "eth0").unwrap(), None);
    }

    #[test]
    fn temp_names_belong_to_their_slot() {
        assert_eq!(temp_slot(".tmp-c1:eth0.123"), Some(("c1", "eth0")));
        assert_eq!(temp_slot(".tmp-c1:eth0.5.123"), Some(("c1", "eth0.5")));
        assert_eq!(
            temp_slot("c1:eth0.tmp.77"),
            Some(("c1", "eth0")),
            "format 1"
        );
        assert_eq!(temp_slot("c1:eth0.5.tmp.77"), Some(("c1", "eth0.5")));
        for other in [
            ".tmp-c1:eth0.",
            ".tmp-c1:eth0.12a",
            ".tmp-c1eth0.1",
            "c1:eth0.json",
            "c1:eth0.json.lock",
            ".meta-ipam-tmp-1",
            "c1:eth0.tmp.",
            "status",
        ] {
            assert_eq!(temp_slot(other), None, "{other}");
        }
        let name = temp_name("c1", "eth0");
        assert_eq!(temp_slot(&name), Some(("c1", "eth0")));
    }

    #[test]
    fn remove_and_list_cover_temps_and_orphan_locks() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            ".tmp-c1:eth0.41",
            "c1:eth0.tmp.42",
            ".tmp-c1:eth0.5.43",
            ".tmp-c2:eth0.44",
            "c3:eth0.json.lock",
            "unrelated",
        ] {
            std::fs::write(d.path().join(f), b"{").unwrap();
        }
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            list(d.path()).unwrap(),
            vec![
                pair("c1", "eth0"),
                pair("c1", "eth0.5"),
                pair("c2", "eth0"),
                pair("c3", "eth0")
            ]
        );
        let mut j = Journal::open(d.path(), "c1", "eth0").unwrap();
        j.store(&entry()).unwrap();
        j.remove().unwrap();
        Journal::open(d.path(), "c3", "eth0")
            .unwrap()
            .remove()
            .unwrap();
        assert_eq!(
            names(d.path()),
            vec![".tmp-c1:eth0.5.43", ".tmp-c2:eth0.44", "unrelated"]
        );
    }

    #[test]
    fn sweep_removes_only_old_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        for (f, t) in [
            (".tmp-c1:eth0.1", Some(old)),
            ("c1:eth0.tmp.2", Some(old)),
            (".tmp-c2:eth0.3", None),
            ("c4:eth0.json", Some(old)),
            ("c4:eth0.json.lock", Some(old)),
            (".meta-ipam-tmp-9", Some(old)),
        ] {
            let file = File::create(d.path().join(f)).unwrap();
            if let Some(t) = t {
                file.set_modified(t).unwrap();
            }
        }
        assert_eq!(sweep_stale_temps(d.path(), STALE_TEMP), 2);
        assert_eq!(
            names(d.path()),
            vec![
                ".meta-ipam-tmp-9",
                ".tmp-c2:eth0.3",
                "c4:eth0.json",
                "c4:eth0.json.lock"
            ]
        );
        assert_eq!(sweep_stale_temps(&d.path().join("missing"), STALE_TEMP), 0);
    }
}
