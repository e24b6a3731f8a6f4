//! DEL's network-status clear, handed off so that no DEL ever waits on the API server.
//!
//! Once a DEL has deleted a journaled pod's attachments, the pod's network-status should
//! become `[]` (as Multus does). Doing that inside DEL made every teardown wait up to
//! `apiTimeoutSeconds` while the API server was down or hung: the Multus failure meta-cni
//! exists to fix. Instead DEL writes a *job* (one small JSON file, renamed into
//! `<cniDir>/handoff/`) and starts a detached *worker* — this same binary, re-executed
//! with [`WORKER_ENV`] set, in a session of its own, its standard streams on `/dev/null`
//! (or the log file) so the runtime never waits for it — and returns.
//!
//! The worker holds `handoff/.worker.lock` (one worker per node; a second one exits at
//! once) and clears every job: done when the API server acknowledges the patch, or when the
//! pod is gone or was recreated (the UID precondition fails: the new pod is left alone);
//! retried with backoff (1 s doubling to 30 s) while the API server is unreachable, slow or
//! overloaded; dropped with a warning after [`DEADLINE`] (the pod then shows its last
//! network-status until it is deleted) or on a permanent refusal (401/403, named in the
//! log). Each attempt reads the job's kubeconfig again, so rotated credentials are used.
//! A job written while the worker is between its last scan and its unlock is not lost:
//! after unlocking, the worker looks again and goes round once more if anything is there.
//! DEL and GC also start a worker when jobs are waiting and none runs (jobs left by a
//! reboot), so a job waits at most until the node's next DEL or GC.
//!
//! Jobs are not fsynced: losing one in a crash costs a stale annotation, never an
//! attachment or an address, and the durability of the DEL itself is the journal's.

use crate::journal::io;
use crate::source::{ClearOutcome, KubeSource};
use cni_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable that turns the `meta-cni` binary into the hand-off worker of
/// the spool directory it names.
pub const WORKER_ENV: &str = "META_CNI_HANDOFF_WORKER";

/// The spool directory under `cniDir`.
pub const SPOOL: &str = "handoff";

/// How long a job is retried before it is dropped.
pub const DEADLINE: Duration = Duration::from_secs(600);

const LOCK: &str = ".worker.lock";
const MAX_BACKOFF_MS: u64 = 30_000;

/// One pod's network-status to clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID (the patch's precondition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The plugin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The bound of each request.
    #[serde(rename = "apiTimeoutSeconds")]
    pub api_timeout_seconds: u64,
    /// When DEL wrote it (Unix milliseconds).
    pub created: u64,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// No attempt before this (Unix milliseconds).
    #[serde(default, rename = "notBefore")]
    pub not_before: u64,
}

impl Job {
    /// A job made now, to clear `pod`'s network-status with `kubeconfig`.
    pub fn new(pod: &crate::journal::PodRef, kubeconfig: &Path, api_timeout_seconds: u64) -> Job {
        Job {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            api_timeout_seconds,
            created: now_ms(),
            attempts: 0,
            not_before: 0,
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The job's file name: `<uid>.json`, else `<namespace>_<name>.json` (`_` is in neither
/// a DNS label nor a UID, so the two forms never collide); any other character is
/// replaced, so a name can never leave the spool directory.
pub fn file_name(job: &Job) -> String {
    let key = match &job.uid {
        Some(u) if !u.is_empty() => u.clone(),
        _ => format!("{}_{}", job.namespace, job.name),
    };
    let key: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '~'
            }
        })
        .collect();
    let key = key.trim_start_matches('.');
    format!("{key}.json")
}

/// Backoff after `attempts` failures: 1 s, doubling, at most 30 s.
pub fn backoff_ms(attempts: u32) -> u64 {
    1000u64
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF_MS)
}

/// Writes `job` into `spool` (temp file and rename: a reader sees all of it or nothing).
/// The spool is made if missing (an idle worker removes it: tried again if that happens
/// in between).
pub fn write_job(spool: &Path, job: &Job) -> Result<PathBuf> {
    let path = spool.join(file_name(job));
    let tmp = spool.join(format!(".{}.tmp.{}", file_name(job), std::process::id()));
    let bytes = serde_json::to_vec(job).map_err(|e| Error::internal(e.to_string()))?;
    let mut tries = 0;
    loop {
        std::fs::create_dir_all(spool).map_err(io(format!("create {}", spool.display())))?;
        match std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io(format!("write {}: {e}", path.display())));
            }
        }
    }
}

/// The jobs in `spool`, with their files; unreadable files are removed (a job is never
/// worth a worker that spins on it).
pub fn jobs(spool: &Path) -> Vec<(PathBuf, Job)> {
    let Ok(rd) = std::fs::read_dir(spool) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for de in rd.flatten() {
        let name = de.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".json") {
            // The lock, and temp files of a writer (or of one killed: swept below).
            if name.contains(".tmp.") && is_older(&de, Duration::from_secs(60)) {
                let _ = std::fs::remove_file(de.path());
            }
            continue;
        }
        let path = de.path();
        match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Job>(&b).ok())
        {
            Some(job) => out.push((path, job)),
            None => {
                tracing::warn!("hand-off: dropping unreadable job {}", path.display());
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn is_older(de: &std::fs::DirEntry, age: Duration) -> bool {
    de.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|a| a >= age)
}

/// What one attempt at a job came to.
pub trait Clearer {
    /// Clears the job's network-status.
    fn clear(&mut self, job: &Job) -> ClearOutcome;
}

/// The real one: a [`KubeSource`] from the job's kubeconfig, made for each attempt.
pub struct KubeClearer;

impl Clearer for KubeClearer {
    fn clear(&mut self, job: &Job) -> ClearOutcome {
        let timeout = Duration::from_secs(job.api_timeout_seconds.max(1));
        match KubeSource::new(&job.kubeconfig, timeout) {
            Ok(mut src) => src.clear_status(&job.namespace, &job.name, job.uid.as_deref()),
            // An unreadable kubeconfig may be rewritten (the installer renews it).
            Err(e) => ClearOutcome::Retry(e.msg),
        }
    }
}

/// One pass over the spool at `now`: every due job attempted; done and expired jobs
/// removed, failed ones rescheduled. Returns how long until the next job is due, or
/// `None` when the spool is empty.
pub fn pass(spool: &Path, now: u64, clearer: &mut dyn Clearer) -> Option<Duration> {
    let mut next: Option<u64> = None;
    for (path, mut job) in jobs(spool) {
        let id = format!("pod {}/{}", job.namespace, job.name);
        if job.not_before > now {
            next = Some(next.map_or(job.not_before, |n| n.min(job.not_before)));
            continue;
        }
        match clearer.clear(&job) {
            ClearOutcome::Cleared => {
                tracing::debug!("hand-off: network-status of {id} cleared");
                let _ = std::fs::remove_file(&path);
            }
            ClearOutcome::Gone(why) => {
                tracing::debug!("hand-off: network-status of {id} left alone: {why}");
                let _ = std::fs::remove_file(&path);
            }
            ClearOutcome::Refused(why) => {
                tracing::warn!("hand-off: network-status of {id} not cleared: {why}");
                let _ = std::fs::remove_file(&path);
            }
            ClearOutcome::Retry(why) => {
                job.attempts += 1;
                if now.saturating_sub(job.created) >= DEADLINE.as_millis() as u64 {
                    tracing::warn!(
                        "hand-off: network-status of {id} not cleared after {} attempts in {} s, giving up: {why}",
                        job.attempts,
                        DEADLINE.as_secs()
                    );
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                job.not_before = now + backoff_ms(job.attempts);
                tracing::debug!(
                    "hand-off: network-status of {id}: attempt {} failed, again in {} ms: {why}",
                    job.attempts,
                    job.not_before - now
                );
                // Rewritten only if DEL did not write a newer job for the pod meanwhile.
                let fresh = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Job>(&b).ok());
                if fresh.as_ref().is_some_and(|f| f.created == job.created) {
                    let _ = write_job(spool, &job);
                }
                next = Some(next.map_or(job.not_before, |n| n.min(job.not_before)));
            }
        }
    }
    next.map(|n| Duration::from_millis(n.saturating_sub(now)))
}

fn try_lock(spool: &Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(spool.join(LOCK))
        .ok()?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
}

/// Is a worker running on `spool`?
pub fn worker_running(spool: &Path) -> bool {
    spool.join(LOCK).exists() && try_lock(spool).is_none()
}

/// The worker: clears the spool's jobs until none is left, then removes its lock file and
/// the (empty) spool, so an idle node keeps nothing, and exits; exits at once when another
/// worker holds the lock. New jobs are picked up within a second. (Two workers at once,
/// which the lock file's removal makes possible in a narrow window, only patch `[]`
/// twice.)
pub fn run_worker(spool: &Path, clearer: &mut dyn Clearer) {
    loop {
        let Some(lock) = try_lock(spool) else {
            return;
        };
        while let Some(wait) = pass(spool, now_ms(), clearer) {
            std::thread::sleep(wait.clamp(Duration::from_millis(50), Duration::from_secs(1)));
        }
        let _ = std::fs::remove_file(spool.join(LOCK));
        drop(lock);
        let _ = std::fs::remove_dir(spool);
        // A job written after the last pass but before the unlock saw the lock taken.
        if jobs(spool).is_empty() {
            return;
        }
    }
}

/// Starts a detached worker for `spool`: this binary when it is `meta-cni` (a new session,
/// standard streams away from the runtime's pipes), else (the plugin used as a library, in
/// a long-lived process) a thread.
pub fn start_worker(spool: &Path, log_file: Option<&Path>, log_level: Option<&str>) {
    let exe = std::env::current_exe().ok();
    let is_plugin = exe
        .as_deref()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "meta-cni");
    if let (true, Some(exe)) = (is_plugin, exe) {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(exe);
        cmd.env(WORKER_ENV, spool)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/");
        if let Some(f) = log_file {
            cmd.env("META_CNI_LOG_FILE", f);
        }
        if let Some(l) = log_level {
            cmd.env("META_CNI_LOG", l);
        }
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        match cmd.spawn() {
            // Reaped here if this process outlives it; else its new parent reaps it.
            Ok(mut child) => {
                std::thread::spawn(move || child.wait());
            }
            Err(e) => {
                tracing::warn!("hand-off: cannot start the worker ({e}); the next DEL or GC will")
            }
        }
    } else {
        let spool = spool.to_path_buf();
        std::thread::spawn(move || run_worker(&spool, &mut KubeClearer));
    }
}

/// DEL: hand the clear of `job` to a worker (written, and a worker started).
pub fn hand_off(
    cache_dir: &Path,
    job: &Job,
    log_file: Option<&Path>,
    log_level: Option<&str>,
) -> Result<()> {
    let spool = cache_dir.join(SPOOL);
    write_job(&spool, job)?;
    start_worker(&spool, log_file, log_level);
    Ok(())
}

/// DEL and GC: when jobs wait and no worker runs (a reboot, a worker killed), start one.
/// One failed `open` when the spool does not exist.
pub fn kick(cache_dir: &Path, log_file: Option<&Path>, log_level: Option<&str>) {
    let spool = cache_dir.join(SPOOL);
    let Ok(mut rd) = std::fs::read_dir(&spool) else {
        return;
    };
    let waiting = rd.any(|de| {
        de.ok()
            .and_then(|d| d.file_name().to_str().map(|n| !n.starts_with('.')))
            .unwrap_or(false)
    });
    if waiting && !worker_running(&spool) {
        start_worker(&spool, log_file, log_level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn job(uid: Option<&str>, created: u64) -> Job {
        Job {
            namespace: "ns1".into(),
            name: "web-0".into(),
            uid: uid.map(Into::into),
            kubeconfig: "/nonexistent".into(),
            api_timeout_seconds: 1,
            created,
            attempts: 0,
            not_before: 0,
        }
    }

    /// Answers from a script, and records what it was asked.
    struct Script(VecDeque<ClearOutcome>, Vec<String>);

    impl Clearer for Script {
        fn clear(&mut self, job: &Job) -> ClearOutcome {
            self.1.push(job.name.clone());
            self.0.pop_front().expect("an unexpected attempt")
        }
    }

    #[test]
    fn file_names_stay_in_the_spool() {
        assert_eq!(file_name(&job(Some("0b1c-22"), 0)), "0b1c-22.json");
        assert_eq!(file_name(&job(None, 0)), "ns1_web-0.json");
        assert_eq!(file_name(&job(Some("../../etc/x"), 0)), "~..~etc~x.json");
        let mut j = job(None, 0);
        j.namespace = "..".into();
        j.name = "/x".into();
        assert_eq!(file_name(&j), "_~x.json");
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let b: Vec<u64> = (1..=8).map(backoff_ms).collect();
        assert_eq!(b, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(backoff_ms(u32::MAX), 30000);
    }

    #[test]
    fn a_cleared_job_is_removed() {
        let d = tempfile::tempdir().unwrap();
        write_job(d.path(), &job(Some("u1"), 1000)).unwrap();
        let mut s = Script(VecDeque::from([ClearOutcome::Cleared]), Vec::new());
        assert_eq!(pass(d.path(), 2000, &mut s), None);
        assert!(jobs(d.path()).is_empty());
        assert_eq!(s.1, ["web-0"]);
    }

    #[test]
    fn gone_and_refused_jobs_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        write_job(d.path(), &job(Some("u1"), 1000)).unwrap();
        write_job(d.path(), &job(Some("u2"), 1000)).unwrap();
        let mut s = Script(
            VecDeque::from([
                ClearOutcome::Gone("pod recreated".into()),
                ClearOutcome::Refused("403".into()),
            ]),
            Vec::new(),
        );
        assert_eq!(pass(d.path(), 2000, &mut s), None);
        assert!(jobs(d.path()).is_empty());
    }

    #[test]
    fn a_failed_attempt_backs_off_and_then_succeeds() {
        let d = tempfile::tempdir().unwrap();
        write_job(d.path(), &job(Some("u1"), 1000)).unwrap();
        let mut s = Script(
            VecDeque::from([
                ClearOutcome::Retry("hung".into()),
                ClearOutcome::Retry("hung".into()),
                ClearOutcome::Cleared,
            ]),
            Vec::new(),
        );
        assert_eq!(
            pass(d.path(), 2000, &mut s),
            Some(Duration::from_millis(1000))
        );
        let j = &jobs(d.path())[0].1;
        assert_eq!((j.attempts, j.not_before), (1, 3000));
        // Not due yet: no attempt.
        assert_eq!(
            pass(d.path(), 2500, &mut s),
            Some(Duration::from_millis(500))
        );
        assert_eq!(s.1.len(), 1);
        assert_eq!(
            pass(d.path(), 3000, &mut s),
            Some(Duration::from_millis(2000))
        );
        assert_eq!(pass(d.path(), 5000, &mut s), None);
        assert_eq!(s.1.len(), 3);
        assert!(jobs(d.path()).is_empty());
    }

    #[test]
    fn a_job_is_dropped_after_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        write_job(d.path(), &job(Some("u1"), 1000)).unwrap();
        let mut s = Script(VecDeque::from([ClearOutcome::Retry("down".into())]), vec![]);
        let late = 1000 + DEADLINE.as_millis() as u64;
        assert_eq!(pass(d.path(), late, &mut s), None);
        assert!(jobs(d.path()).is_empty());
    }

    #[test]
    fn a_newer_job_for_the_pod_is_not_overwritten_by_a_retry() {
        let d = tempfile::tempdir().unwrap();
        write_job(d.path(), &job(Some("u1"), 1000)).unwrap();
        struct Rewrite<'a>(&'a Path);
        impl Clearer for Rewrite<'_> {
            fn clear(&mut self, _: &Job) -> ClearOutcome {
                // DEL of the same pod again, while this attempt hangs.
                write_job(self.0, &job(Some("u1"), 5000)).unwrap();
                ClearOutcome::Retry("hung".into())
            }
        }
        pass(d.path(), 6000, &mut Rewrite(d.path()));
        let j = &jobs(d.path())[0].1;
        assert_eq!((j.created, j.attempts), (5000, 0));
    }

    #[test]
    fn unreadable_jobs_and_stale_temps_are_removed_and_the_lock_is_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.json"), b"{not json").unwrap();
        std::fs::write(d.path().join(".x.json.tmp.1"), b"").unwrap();
        let old = SystemTime::now() - Duration::from_secs(120);
        let f = std::fs::File::options()
            .write(true)
            .open(d.path().join(".x.json.tmp.1"))
            .unwrap();
        f.set_modified(old).unwrap();
        std::fs::write(d.path().join(".y.json.tmp.2"), b"").unwrap();
        let _lock = try_lock(d.path()).unwrap();
        assert!(jobs(d.path()).is_empty());
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, [".worker.lock", ".y.json.tmp.2"]);
    }

    #[test]
    fn one_worker_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let held = try_lock(d.path()).unwrap();
        assert!(worker_running(d.path()));
        // A second worker exits at once, leaving the job to the holder.
        write_job(d.path(), &job(Some("u1"), 1000)).unwrap();
        let mut s = Script(VecDeque::new(), Vec::new());
        run_worker(d.path(), &mut s);
        assert_eq!(jobs(d.path()).len(), 1);
        drop(held);
        assert!(!worker_running(d.path()));
        let mut s = Script(VecDeque::from([ClearOutcome::Cleared]), Vec::new());
        run_worker(d.path(), &mut s);
        assert!(jobs(d.path()).is_empty());
        // Idle: no lock file, no spool.
        assert!(!d.path().exists());
        // A job for a spool that is gone makes it again.
        write_job(d.path(), &job(Some("u2"), 1000)).unwrap();
        assert_eq!(jobs(d.path()).len(), 1);
    }
}
