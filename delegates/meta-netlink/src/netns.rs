//! Network namespaces: open handles, running code inside one, named namespaces.
//!
//! The calling thread's namespace is never changed: [`Netns::run`] does its work
//! on a fresh OS thread that `setns()`es into the target namespace and then exits.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{Error, Result};

/// Directory where named namespaces are bind-mounted (like `ip netns add`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of the calling thread's network namespace.
pub const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

// NS_GET_NSTYPE = _IO(0xb7, 0x3)
mod ioctl {
    #![allow(missing_docs)]
    nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);
}
use ioctl::ns_get_nstype;

/// An open file descriptor of a network namespace plus the path it came from.
///
/// Cloning is cheap: clones share the same descriptor. Two `Netns` compare equal
/// when they refer to the same namespace (same nsfs inode), whatever their paths.
#[derive(Clone)]
pub struct Netns {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .finish()
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}
impl Eq for Netns {}

impl Netns {
    /// Opens the network namespace at `path` (e.g. `/var/run/netns/x`,
    /// `/proc/<pid>/ns/net`).
    ///
    /// Fails with [`Error::is_not_found`] when the path does not exist and with
    /// [`Error::Invalid`] when it is not a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("network namespace {}", path.display()))
            } else {
                Error::io(format!("open netns {}", path.display()), e)
            }
        })?;
        let st = nix::sys::statfs::fstatfs(&file)
            .map_err(|e| Error::nix(format!("statfs {}", path.display()), e))?;
        if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
            return Err(Error::Invalid(format!(
                "{} is not a namespace file (not on nsfs)",
                path.display()
            )));
        }
        // SAFETY: the ioctl takes no argument and only reads the fd.
        match unsafe { ns_get_nstype(std::os::fd::AsRawFd::as_raw_fd(&file)) } {
            Ok(t) if t == CloneFlags::CLONE_NEWNET.bits() => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "{} is a namespace but not a network namespace",
                    path.display()
                )));
            }
            // Old kernels without NS_GET_NSTYPE: setns() will check the type.
            Err(Errno::ENOTTY) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(Error::nix(format!("NS_GET_NSTYPE {}", path.display()), e)),
        }
        let md = file
            .metadata()
            .map_err(|e| Error::io(format!("fstat {}", path.display()), e))?;
        Ok(Netns {
            fd: Arc::new(OwnedFd::from(file)),
            path: path.to_path_buf(),
            dev: md.dev(),
            ino: md.ino(),
        })
    }

    /// The namespace's identity: the nsfs device and inode.
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The calling thread's network namespace (`/proc/thread-self/ns/net`).
    pub fn current() -> Result<Netns> {
        Netns::open(THREAD_SELF_NETNS)
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's file descriptor (valid as long as `self`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The nsfs inode number identifying this namespace.
    pub fn inode(&self) -> u64 {
        self.ino
    }

    /// Runs `f` on a fresh OS thread that has `setns()`'d into this namespace.
    ///
    /// The thread is never reused (it exits when `f` returns), so the caller's
    /// namespace is never changed. Calls may nest. A panic in `f` becomes
    /// [`Error::Panic`].
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.fd();
        let path = &self.path;
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(s, move || -> Result<R> {
                    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::nix(format!("setns into {}", path.display()), e))?;
                    Ok(f())
                })
                .map_err(|e| Error::io("spawn netns thread", e))?;
            match handle.join() {
                Ok(r) => r,
                Err(p) => Err(Error::Panic(panic_message(&p))),
            }
        })
    }
}

pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// A named network namespace at `/run/netns/NAME`, bind-mounted like
/// `ip netns add NAME`. For tests and tools.
///
/// Dropping it unmounts and removes the file; the namespace (and everything in
/// it) disappears once nothing else holds it open.
#[derive(Debug)]
pub struct NamedNetns {
    name: String,
    path: PathBuf,
    netns: Netns,
}

impl NamedNetns {
    /// Creates a fresh, empty network namespace named `name`.
    ///
    /// Fails with [`Error::is_exists`] when `/run/netns/NAME` already exists.
    pub fn create(name: &str) -> Result<NamedNetns> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(Error::Invalid(format!("bad namespace name {name:?}")));
        }
        prepare_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Exists(format!("network namespace {}", path.display()))
                } else {
                    Error::io(format!("create {}", path.display()), e)
                }
            })?;
        let cleanup = |err: Error| -> Error {
            let _ = nix::mount::umount2(&path, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
            err
        };
        let target = path.clone();
        let res = std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name("netns-create".into())
                .spawn_scoped(s, move || -> Result<()> {
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::nix("unshare(CLONE_NEWNET)", e))?;
                    nix::mount::mount(
                        Some(THREAD_SELF_NETNS),
                        &target,
                        Some("none"),
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| Error::nix(format!("bind-mount netns on {}", target.display()), e))
                })
                .map_err(|e| Error::io("spawn netns thread", e))?;
            match h.join() {
                Ok(r) => r,
                Err(p) => Err(Error::Panic(panic_message(&p))),
            }
        });
        res.map_err(cleanup)?;
        let netns = Netns::open(&path).map_err(cleanup)?;
        tracing::debug!(name, "created named netns");
        Ok(NamedNetns {
            name: name.to_string(),
            path,
            netns,
        })
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH)
            && e != Errno::EINVAL
            && e != Errno::ENOENT
        {
            tracing::warn!(path = %self.path.display(), error = %e, "umount netns");
        }
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "remove netns file");
        }
    }
}

/// Creates `/run/netns` and makes it a shared mount point, like iproute2 does, so
/// that namespace mounts propagate to other mount namespaces.
fn prepare_run_dir() -> Result<()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {NETNS_RUN_DIR}"), e))?;
    // Serialize with other processes doing the same (the directory inode is the
    // same before and after the self bind-mount).
    let d = File::open(dir).map_err(|e| Error::io(format!("open {NETNS_RUN_DIR}"), e))?;
    let _flock = nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::nix(format!("flock {NETNS_RUN_DIR}"), e))?;
    let shared = || {
        nix::mount::mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then make it shared.
            nix::mount::mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::nix(format!("bind-mount {NETNS_RUN_DIR} on itself"), e))?;
            shared().map_err(|e| Error::nix(format!("make {NETNS_RUN_DIR} shared"), e))
        }
        Err(e) => Err(Error::nix(format!("make {NETNS_RUN_DIR} shared"), e)),
    }
}
