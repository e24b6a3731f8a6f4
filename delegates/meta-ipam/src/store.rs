//! The on-disk store, laid out exactly like the reference's disk backend:
//!
//! ```text
//! <dataDir>/<network>/lock                 flock()ed for the whole operation
//! <dataDir>/<network>/<ip>                 "<containerID>\r\n<ifname>" (legacy: "<containerID>")
//! <dataDir>/<network>/last_reserved_ip.<N> the last address reserved from range set N
//! ```
//!
//! Crash safety: a reservation file is never visible half-written. Its content is written
//! to a temporary file in the same directory and fsynced, then `link()`ed to the address's
//! name. `link()` fails with `EEXIST` when the name exists, so it has the exclusivity of
//! `O_CREAT|O_EXCL` (two processes cannot both get an address, even ones that bypass the
//! lock) while readers only ever see complete files. The temporary name is then unlinked.
//! On filesystems without hard links we fall back to `O_CREAT|O_EXCL` + write + fsync.
//! `last_reserved_ip.N` is replaced atomically (temporary file + `rename()`). The directory
//! is fsynced after every change. Temporary files (`.meta-ipam-tmp-*`) left by a crash are
//! removed the next time the lock is taken.

use crate::ip::canon;
use cni_core::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const LAST_IP_PREFIX: &str = "last_reserved_ip.";
const TMP_PREFIX: &str = ".meta-ipam-tmp-";
const LINE_BREAK: &str = "\r\n";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// The address (the file name).
    pub ip: IpAddr,
    /// The file name (normally `ip`'s canonical text; kept as found).
    pub name: String,
    /// The file content, trimmed.
    pub content: String,
}

impl Reservation {
    /// The (containerID, ifname) owning it; ifname is `None` for a legacy (id-only) file.
    pub fn owner(&self) -> (&str, Option<&str>) {
        match self.content.split_once(LINE_BREAK) {
            Some((id, ifname)) => (id, Some(ifname)),
            None => (self.content.as_str(), None),
        }
    }
    /// Whether the reservation is held by (id, ifname) in the current format.
    pub fn is_exactly(&self, id: &str, ifname: &str) -> bool {
        self.content == key(id, ifname)
    }
    /// Whether it is a legacy (id-only) reservation of `id`.
    pub fn is_legacy_of(&self, id: &str) -> bool {
        self.content == id.trim()
    }
}

fn key(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

fn io_err(what: impl std::fmt::Display, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("host-local: {what} {}: {e}", path.display()))
}

/// An open, locked network directory. The lock is released on drop.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Creates `<data_dir>/<network>` (0755) and its `lock` file if needed and takes the
    /// exclusive lock (blocking).
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| io_err("cannot create data directory", &dir, e))?;
        let lock_path = dir.join("lock");
        // Same mode as the reference's go-filemutex (0750).
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o750)
            .open(&lock_path)
            .map_err(|e| io_err("cannot open lock file", &lock_path, e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("cannot lock", &lock_path, e.into()))?;
        Ok(Store { dir, _lock: lock })
    }

    /// The network directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All reservation files (names that parse as addresses), sorted by name. Removes
    /// temporary files left by a crash (we hold the lock, so none is in use).
    pub fn reservations(&self) -> Result<Vec<Reservation>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| io_err("cannot read data directory", &self.dir, e))?;
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) {
                let _ = fs::remove_file(ent.path());
                continue;
            }
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            if !ent.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            // Like the reference, unreadable files are skipped.
            let Ok(content) = fs::read_to_string(ent.path()) else {
                continue;
            };
            out.push(Reservation {
                ip: canon(ip),
                name: name.to_string(),
                content: content.trim().to_string(),
            });
        }
        out.sort_by_key(|r| r.ip.to_string());
        Ok(out)
    }

    fn path_of(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn tmp_path(&self) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
    }

    /// Writes `data` to a new temporary file (0644), fsynced.
    fn write_tmp(&self, data: &[u8]) -> Result<PathBuf> {
        let tmp = self.tmp_path();
        let res = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("cannot write temporary file", &tmp, e));
        }
        Ok(tmp)
    }

    /// fsyncs the directory (after removals).
    pub fn sync(&self) -> Result<()> {
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("cannot sync data directory", &self.dir, e))
    }

    /// Creates the reservation file of `ip` for (id, ifname) unless it exists (then
    /// `Ok(false)`), and records `ip` in `last_reserved_ip.<range_id>`.
    pub fn reserve(&self, id: &str, ifname: &str, ip: IpAddr, range_id: usize) -> Result<bool> {
        let target = self.path_of(ip);
        if fs::symlink_metadata(&target).is_ok() {
            return Ok(false);
        }
        let content = key(id, ifname);
        let tmp = self.write_tmp(content.as_bytes())?;
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) if link_unsupported(&e) => {
                if !self.create_exclusive(&target, content.as_bytes())? {
                    return Ok(false);
                }
            }
            Err(e) => return Err(io_err("cannot create reservation", &target, e)),
        }
        if let Err(e) = self.write_last_reserved(ip, range_id) {
            let _ = fs::remove_file(&target);
            let _ = self.sync_dir();
            return Err(e);
        }
        self.sync_dir()?;
        Ok(true)
    }

    /// The fallback for filesystems without hard links: `O_CREAT|O_EXCL`, write, fsync.
    fn create_exclusive(&self, target: &Path, data: &[u8]) -> Result<bool> {
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(target)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("cannot create reservation", target, e)),
        };
        if let Err(e) = f.write_all(data).and_then(|_| f.sync_all()) {
            let _ = fs::remove_file(target);
            return Err(io_err("cannot write reservation", target, e));
        }
        Ok(true)
    }

    fn write_last_reserved(&self, ip: IpAddr, range_id: usize) -> Result<()> {
        let path = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        let tmp = self.write_tmp(ip.to_string().as_bytes())?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("cannot write", &path, e)
        })
    }

    /// The content of `last_reserved_ip.<range_id>`, when it holds an address.
    pub fn last_reserved_ip(&self, range_id: usize) -> Option<IpAddr> {
        let path = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        let s = fs::read_to_string(path).ok()?;
        s.trim().parse::<IpAddr>().ok().map(canon)
    }

    /// Removes the reservation file of `ip` (missing is fine).
    pub fn remove(&self, ip: IpAddr) -> Result<()> {
        self.remove_name(&ip.to_string())
    }

    /// Removes a file of the directory by name (missing is fine).
    pub fn remove_name(&self, name: &str) -> Result<()> {
        let p = self.dir.join(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove reservation", &p, e)),
        }
    }

    /// The reference's `ReleaseByID`: removes the reservations of (id, ifname); when there
    /// are none, the legacy (id-only) reservations of `id`. Returns how many were removed.
    pub fn release_by_id(&self, id: &str, ifname: &str) -> Result<usize> {
        let all = self.reservations()?;
        let mut mine: Vec<&Reservation> = all.iter().filter(|r| r.is_exactly(id, ifname)).collect();
        if mine.is_empty() {
            mine = all.iter().filter(|r| r.is_legacy_of(id)).collect();
        }
        for r in &mine {
            self.remove_name(&r.name)?;
        }
        if !mine.is_empty() {
            self.sync_dir()?;
        }
        Ok(mine.len())
    }

    /// Removes a set of addresses and syncs the directory.
    pub fn remove_all(&self, ips: &[IpAddr]) -> Result<()> {
        let mut first_err = None;
        for ip in ips {
            if let Err(e) = self.remove(*ip) {
                first_err.get_or_insert(e);
            }
        }
        let synced = self.sync_dir();
        match first_err {
            Some(e) => Err(e),
            None => synced,
        }
    }
}

fn link_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno) if libc_errno == nix::errno::Errno::EPERM as i32
            || libc_errno == nix::errno::Errno::EOPNOTSUPP as i32
            || libc_errno == nix::errno::Errno::ENOSYS as i32
            || libc_errno == nix::errno::Errno::EMLINK as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_release_layout() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "net").unwrap();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.reserve("c1 ", "eth0", ip, 0).unwrap());
        assert!(!s.reserve("c2", "eth0", ip, 0).unwrap());
        let dir = d.path().join("net");
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.0")).unwrap(),
            b"10.0.0.2"
        );
        assert_eq!(s.last_reserved_ip(0), Some(ip));
        let r = s.reservations().unwrap();
        assert_eq!(r[0].owner(), ("c1", Some("eth0")));
        // crash leftovers are cleaned
        fs::write(dir.join(".meta-ipam-tmp-1-1"), "x").unwrap();
        s.reservations().unwrap();
        assert!(!dir.join(".meta-ipam-tmp-1-1").exists());
        assert_eq!(s.release_by_id("c1", "eth1").unwrap(), 0);
        assert_eq!(s.release_by_id("c1", "eth0").unwrap(), 1);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn legacy_release_only_without_new_format() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "net").unwrap();
        let dir = d.path().join("net");
        fs::write(dir.join("10.0.0.9"), "c1\n").unwrap();
        fs::write(dir.join("10.0.0.8"), "c2").unwrap();
        assert!(
            s.reserve("c1", "eth0", "10.0.0.3".parse().unwrap(), 0)
                .unwrap()
        );
        assert_eq!(s.release_by_id("c1", "eth0").unwrap(), 1);
        assert!(dir.join("10.0.0.9").exists());
        assert_eq!(s.release_by_id("c1", "eth0").unwrap(), 1);
        assert!(!dir.join("10.0.0.9").exists());
        assert!(dir.join("10.0.0.8").exists());
    }

    #[test]
    fn non_canonical_names_are_released() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), "net").unwrap();
        let dir = d.path().join("net");
        fs::write(dir.join("fd00:0::5"), "c1\r\neth0").unwrap();
        let r = s.reservations().unwrap();
        assert_eq!(r[0].ip.to_string(), "fd00::5");
        assert_eq!(s.release_by_id("c1", "eth0").unwrap(), 1);
        assert!(!dir.join("fd00:0::5").exists());
    }
}
