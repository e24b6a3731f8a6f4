//! The agent's side of the spool ([`meta_crd::spool`]): the directory is created (mode
//! 0700) at startup and checked every [`POLL`]; each record is observed once in the
//! metrics ([`crate::metrics`]), its Events are sent ([`crate::events`], kube mode), and
//! the file is removed. A file that is not a valid record of this version (garbage, a
//! foreign file, a record too large) is logged and removed; a record older than
//! [`meta_crd::spool::MAX_AGE`] is removed unsent; a temp file older than
//! [`meta_crd::spool::STALE_TEMP`] (its writer died) is removed. When the API server
//! does not take an Event (connection, 429, 5xx) the record stays and is retried with
//! backoff; records therefore wait (bounded by the plugin) while the agent is down or
//! the API is unreachable, and are sent later.

use crate::events::{Recorder, SendError};
use crate::{Error, Result, Shutdown, metrics};
use meta_crd::spool::{self, Record};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the spool directory is read.
pub const POLL: Duration = Duration::from_millis(200);
/// Longest wait before retrying Events the API server did not take.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Creates the spool directory (root only) if needed.
pub fn prepare(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| Error::Io {
        context: format!("create the spool directory {}", dir.display()),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// What one pass over the spool did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Records observed and removed.
    pub processed: usize,
    /// Garbage removed.
    pub invalid: usize,
    /// Stale records removed.
    pub stale: usize,
    /// Records kept for a retry.
    pub kept: usize,
}

/// The consumer's state across passes.
#[derive(Debug)]
pub struct Consumer {
    dir: PathBuf,
    events: Option<Recorder>,
    /// Records already counted in the metrics but kept for an Event retry.
    observed: HashSet<String>,
}

fn remove(p: &Path) {
    if let Err(e) = std::fs::remove_file(p)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("spool: remove {}: {e}", p.display());
    }
}

impl Consumer {
    /// A consumer of `dir`, sending Events through `events` (none in local mode).
    pub fn new(dir: PathBuf, events: Option<Recorder>) -> Consumer {
        Consumer {
            dir,
            events,
            observed: HashSet::new(),
        }
    }

    /// One pass over the spool, oldest records first; stops at the first record whose
    /// Events must be retried (the later ones wait with it, keeping the order).
    pub async fn pass(&mut self) -> Pass {
        let mut pass = Pass::default();
        let m = metrics::global();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => {
                tracing::warn!("spool {}: {e}", self.dir.display());
                return pass;
            }
        };
        let mut names: Vec<(String, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        // `<unix ms>-<pid>-<n>.json`: by time, then by name.
        names.sort_by_key(|(n, _)| {
            (
                n.split('-').next().and_then(|t| t.parse::<u64>().ok()),
                n.clone(),
            )
        });
        let now = SystemTime::now();
        for (name, path) in names {
            if name.starts_with('.') {
                let old = std::fs::symlink_metadata(&path)
                    .and_then(|md| md.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > spool::STALE_TEMP);
                if old {
                    tracing::warn!("spool: removing an abandoned temp file {name}");
                    remove(&path);
                }
                continue;
            }
            let rec = match read_record(&path) {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!("spool: {name}: {why}; removed");
                    m.spool_record("invalid");
                    pass.invalid += 1;
                    remove(&path);
                    continue;
                }
            };
            if rec.is_stale(now, spool::MAX_AGE) {
                tracing::warn!(
                    "spool: {name}: a {} record older than {:?}; removed unsent",
                    rec.verb.as_str(),
                    spool::MAX_AGE
                );
                m.spool_record("stale");
                pass.stale += 1;
                self.observed.remove(&name);
                remove(&path);
                continue;
            }
            if !self.observed.contains(&name) {
                m.observe_record(&rec);
            }
            if let Some(ev) = self.events.as_mut() {
                match ev.send(&rec).await {
                    Ok(()) => {}
                    Err(SendError::Drop(why)) => {
                        tracing::warn!("spool: {name}: Events dropped: {why}")
                    }
                    Err(SendError::Retry(why)) => {
                        tracing::warn!("spool: {name}: Events not sent ({why}); retrying");
                        self.observed.insert(name);
                        pass.kept += 1;
                        return pass;
                    }
                }
            }
            self.observed.remove(&name);
            m.spool_record("processed");
            pass.processed += 1;
            remove(&path);
        }
        pass
    }
}

/// Reads and parses one record file (at most [`spool::MAX_RECORD_BYTES`] are read).
fn read_record(path: &Path) -> std::result::Result<Record, String> {
    use std::io::Read;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !spool::is_record_name(&name) {
        return Err("not a record's name".into());
    }
    let md = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !md.is_file() {
        return Err("not a regular file".into());
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| e.to_string())?
        .take(spool::MAX_RECORD_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    Record::parse(&buf)
}

/// Consumes the spool until `shutdown`.
pub async fn run(mut consumer: Consumer, mut shutdown: Shutdown) {
    let mut wait = POLL;
    loop {
        let p = consumer.pass().await;
        wait = if p.kept > 0 {
            (wait * 2).clamp(Duration::from_secs(1), MAX_RETRY)
        } else {
            POLL
        };
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meta_crd::spool::{Record, VERSION, Verb, Written};

    fn rec(ms: u64) -> Record {
        Record {
            version: VERSION,
            verb: Verb::Check,
            time_unix_ms: ms,
            container_id: "c".into(),
            pod: None,
            duration_seconds: 0.001,
            code: 0,
            message: None,
            attachments: vec![],
            ipam: Vec::new(),
        }
    }

    #[tokio::test]
    async fn garbage_stale_and_good_records_all_leave_the_spool() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("spool");
        prepare(&dir).unwrap();
        let now = spool::unix_ms(SystemTime::now());
        assert!(matches!(
            spool::write(&dir, &rec(now), 16).unwrap(),
            Written::Spooled(_)
        ));
        spool::write(&dir, &rec(now - 2 * 3600 * 1000), 16).unwrap();
        std::fs::write(dir.join("1-2-3.json"), b"\x00garbage").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        std::fs::write(dir.join("9-9-9.json"), br#"{"version": 99}"#).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("5-5-5.json")).unwrap();
        // A fresh temp file is a writer at work: left alone.
        std::fs::write(dir.join(".tmp.7-7-7.json"), b"{").unwrap();
        let mut c = Consumer::new(dir.clone(), None);
        let p = c.pass().await;
        assert_eq!(
            p,
            Pass {
                processed: 1,
                invalid: 4,
                stale: 1,
                kept: 0
            }
        );
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec![".tmp.7-7-7.json".to_string()]);
    }
}
