//! Network namespaces: open handles, running code inside one, named namespaces.
//!
//! The calling thread's namespace is never changed: [`Netns::run`] does its work
//! on another OS thread that is in the target namespace: a fresh one that
//! `setns()`es and then exits, or, while a [`NetnsWorker`] of that namespace is
//! held, that worker's long-lived thread.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, TryLockError, Weak};

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
    pub(crate) fn key(&self) -> NsKey {
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

    /// Runs `f` on an OS thread that is in this namespace, and waits for it.
    ///
    /// The thread is a fresh one that `setns()`es and exits when `f` returns, or,
    /// while a [`NetnsWorker`] of this namespace is held (see [`Netns::worker`]),
    /// the worker's long-lived thread: when that worker is busy (another caller, or
    /// a nested call that would have to wait for it) a fresh thread is used instead,
    /// and a call made on the worker thread for its own namespace runs inline. Either
    /// way the caller's namespace is never changed. Calls may nest. A panic in `f`
    /// becomes [`Error::Panic`].
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let key = self.key();
        if WORKER_OF.get() == Some(key) && current_key().ok() == Some(key) {
            return catch_unwind(AssertUnwindSafe(f)).map_err(|p| Error::Panic(panic_message(&p)));
        }
        let f = match held_worker(key) {
            Some(w) => match w.try_run(f) {
                Ok(r) => return r,
                Err(f) => f,
            },
            None => f,
        };
        self.run_on_fresh_thread(f)
    }

    /// [`Netns::run`] on a fresh thread, never reused.
    fn run_on_fresh_thread<F, R>(&self, f: F) -> Result<R>
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

    /// This namespace's hand-off thread: while the returned handle (or a clone, or
    /// another handle of the same namespace) is alive, [`Netns::run`] on any `Netns`
    /// of this namespace runs on that one thread, which `setns()`'d once, instead of
    /// a fresh thread per call. The live worker of the namespace when there is one;
    /// the thread exits when the last handle is dropped (the drop joins it), and
    /// with it the thread's hold on the namespace.
    ///
    /// Closures run there one after another on one thread, so thread-local state
    /// outlives a call; a closure that moves its thread to another network namespace
    /// is undone after it returns.
    pub fn worker(&self) -> Result<NetnsWorker> {
        // Spawned under the registry lock, so a namespace never has two: the new
        // thread only setns()es before it answers, it takes no lock.
        let inner = WORKERS.get_or_insert_with(self.key(), || Worker::spawn(self).map(Arc::new))?;
        Ok(NetnsWorker { inner })
    }
}

/// A namespace's identity: its nsfs device and inode.
pub(crate) type NsKey = (u64, u64);

/// The identity of the calling thread's network namespace.
pub(crate) fn current_key() -> Result<NsKey> {
    let md = std::fs::metadata(THREAD_SELF_NETNS)
        .map_err(|e| Error::io(format!("stat {THREAD_SELF_NETNS}"), e))?;
    Ok((md.dev(), md.ino()))
}

/// Live objects of one kind by namespace (workers, netlink connections): weak, so an
/// entry lives exactly as long as some handle holds it.
pub(crate) struct Registry<T>(Mutex<Vec<(NsKey, Weak<T>)>>);

impl<T> Registry<T> {
    /// An empty registry.
    pub(crate) const fn new() -> Registry<T> {
        Registry(Mutex::new(Vec::new()))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<(NsKey, Weak<T>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(entries: &[(NsKey, Weak<T>)], key: NsKey) -> Option<Arc<T>> {
        entries
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
    }

    /// The live object of namespace `key`.
    pub(crate) fn get(&self, key: NsKey) -> Option<Arc<T>> {
        Self::find(&self.entries(), key)
    }

    /// Records `obj` as namespace `key`'s (dead entries are dropped on the way).
    pub(crate) fn insert(&self, key: NsKey, obj: &Arc<T>) {
        let mut entries = self.entries();
        entries.retain(|(_, w)| w.strong_count() > 0);
        entries.push((key, Arc::downgrade(obj)));
    }

    /// The live object of `key`, else one made by `make` under the registry's lock (so
    /// a namespace never gets two; `make` must not use this registry).
    pub(crate) fn get_or_insert_with<E>(
        &self,
        key: NsKey,
        make: impl FnOnce() -> std::result::Result<Arc<T>, E>,
    ) -> std::result::Result<Arc<T>, E> {
        let mut entries = self.entries();
        entries.retain(|(_, w)| w.strong_count() > 0);
        if let Some(obj) = Self::find(&entries, key) {
            return Ok(obj);
        }
        let obj = make()?;
        entries.push((key, Arc::downgrade(&obj)));
        Ok(obj)
    }
}

/// Live workers by namespace.
static WORKERS: Registry<Worker> = Registry::new();

thread_local! {
    /// On a worker thread: the namespace it serves.
    static WORKER_OF: Cell<Option<NsKey>> = const { Cell::new(None) };
}

/// The live worker of a namespace, if one is held.
fn held_worker(key: NsKey) -> Option<Arc<Worker>> {
    WORKERS.get(key)
}

/// A held hand-off thread of one network namespace (see [`Netns::worker`]).
///
/// Cloning is cheap: clones hold the same thread.
#[derive(Clone)]
pub struct NetnsWorker {
    inner: Arc<Worker>,
}

impl NetnsWorker {
    /// The namespace the worker's thread is in.
    pub fn netns(&self) -> &Netns {
        &self.inner.netns
    }

    /// The worker thread's id.
    pub fn thread_id(&self) -> std::thread::ThreadId {
        self.inner.thread_id
    }
}

impl std::fmt::Debug for NetnsWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsWorker")
            .field("netns", &self.inner.netns)
            .field("thread", &self.inner.thread_id)
            .finish()
    }
}

struct Worker {
    netns: Netns,
    thread_id: std::thread::ThreadId,
    /// Taken by a caller for the whole of one job, and only with `try_lock`: a busy
    /// worker is never waited for.
    chan: Mutex<Chan>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Chan {
    /// None once the worker is being dropped.
    jobs: Option<Sender<Job>>,
    /// One `()` per job the thread has finished with.
    done: Receiver<()>,
}

/// A borrowed closure handed to the worker thread: `slot` points to a [`Slot<F, R>`]
/// on the caller's stack and `call` is `call_slot::<F, R>`.
struct Job {
    slot: *mut (),
    call: unsafe fn(*mut ()),
}

// SAFETY: a Job only carries a pointer to a `Slot<F, R>` with `F: Send, R: Send`,
// which the worker thread takes `F` out of and puts `R` into while the caller
// waits (see `Worker::try_run`).
unsafe impl Send for Job {}

struct Slot<F, R> {
    f: Option<F>,
    r: Option<std::thread::Result<R>>,
}

/// Runs the closure of a job's slot, catching a panic.
///
/// # Safety
///
/// `p` must point to a live `Slot<F, R>` that nothing else accesses meanwhile.
unsafe fn call_slot<F: FnOnce() -> R, R>(p: *mut ()) {
    // SAFETY: the caller's guarantee.
    let slot = unsafe { &mut *p.cast::<Slot<F, R>>() };
    if let Some(f) = slot.f.take() {
        slot.r = Some(catch_unwind(AssertUnwindSafe(f)));
    }
}

impl Worker {
    fn spawn(ns: &Netns) -> Result<Worker> {
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        let netns = ns.clone();
        let thread = std::thread::Builder::new()
            .name("netns-worker".into())
            .spawn(move || worker_main(netns, jobs_rx, done_tx, ready_tx))
            .map_err(|e| Error::io("spawn netns worker thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(match thread.join() {
                    Err(p) => Error::Panic(panic_message(&p)),
                    Ok(()) => Error::Panic("netns worker thread exited".into()),
                });
            }
        }
        Ok(Worker {
            netns: ns.clone(),
            thread_id: thread.thread().id(),
            chan: Mutex::new(Chan {
                jobs: Some(jobs_tx),
                done: done_rx,
            }),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the worker thread and waits for it; gives `f` back when the worker
    /// is busy or gone.
    fn try_run<F, R>(&self, f: F) -> std::result::Result<Result<R>, F>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let chan = match self.chan.try_lock() {
            Ok(c) => c,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(f),
        };
        let Some(jobs) = &chan.jobs else {
            return Err(f);
        };
        let mut slot = Slot::<F, R> {
            f: Some(f),
            r: None,
        };
        let job = Job {
            slot: (&raw mut slot).cast(),
            call: call_slot::<F, R>,
        };
        // SAFETY: the worker thread dereferences `slot` (which borrows whatever `f`
        // borrows: the lifetimes are erased here) only between receiving the job and
        // sending `()` on `done`, and never after; it drops a job it did not run
        // without touching `slot` (a Job has no drop glue), and it drops its `done`
        // sender only after its last job. So once the job is sent, this frame must not
        // return or unwind, nor touch `slot`, until `done` yields `()` or reports the
        // sender gone: `AwaitDone` waits for that, and its drop waits too should the
        // wait itself unwind (a blocking `recv` cannot panic). While this frame holds
        // `chan` no other job is in flight, so the one `()` received is this job's.
        // `F: Send` and `R: Send` make running `f` and producing `R` on the worker
        // thread sound; the channel orders the worker's writes to `slot` before the
        // reads below. No cycle wait: a caller only waits for a worker whose lock it
        // took (`try_lock`), which is then idle and starts the job at once; a job that
        // calls `run` for a worker that is busy (possibly waiting for this very job)
        // gets a fresh thread.
        if jobs.send(job).is_ok() {
            AwaitDone(&chan.done).wait();
        }
        drop(chan);
        match (slot.r.take(), slot.f.take()) {
            (Some(Ok(r)), _) => Ok(Ok(r)),
            (Some(Err(p)), _) => Ok(Err(Error::Panic(panic_message(&p)))),
            // Never ran: the worker thread is gone.
            (None, Some(f)) => Err(f),
            (None, None) => Ok(Err(Error::Panic("netns worker thread died".into()))),
        }
    }
}

/// The wait for the worker to be done with the job in flight (or gone); dropping it
/// waits too, so the caller's frame cannot end, not even by unwinding, while its job may
/// still run.
struct AwaitDone<'a>(&'a Receiver<()>);

impl AwaitDone<'_> {
    fn wait(self) {
        let _ = recv_spinning(self.0);
        std::mem::forget(self);
    }
}

impl Drop for AwaitDone<'_> {
    fn drop(&mut self) {
        let _ = self.0.recv();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop; join it, so that it is gone
        // (and no longer pins the namespace) right after (unless this is the worker
        // thread itself).
        self.chan
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .jobs
            .take();
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

/// How long either side of a worker hand-off keeps its CPU busy (yielding) before it
/// blocks: the caller waiting for its job, the worker waiting for the next one. Two
/// threads that block hand over through the scheduler's cross-CPU wake-ups, which on an
/// idle virtual machine cost tens of microseconds each (a halted vCPU is woken); while
/// one side yields instead, the two trade one CPU and a hand-off is a few microseconds
/// (measured in `benches/run.rs`). Bounded, so an idle worker sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// `rx.recv()`, after polling for up to [`SPIN`] (yielding the CPU in between); None
/// when the sender is gone.
fn recv_spinning<T>(rx: &Receiver<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if start.elapsed() < SPIN => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

fn worker_main(
    ns: Netns,
    jobs: Receiver<Job>,
    done: SyncSender<()>,
    ready: SyncSender<Result<()>>,
) {
    let key = ns.key();
    let enter = || {
        nix::sched::setns(ns.fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::nix(format!("setns into {}", ns.path.display()), e))
    };
    if let Err(e) = enter() {
        let _ = ready.send(Err(e));
        return;
    }
    WORKER_OF.set(Some(key));
    let _ = ready.send(Ok(()));
    drop(ready);
    while let Some(job) = recv_spinning(&jobs) {
        // SAFETY: the sender waits in `Worker::try_run` until `done` below.
        unsafe { (job.call)(job.slot) };
        // A closure that moved this thread elsewhere is undone, or the worker retires
        // (later calls get fresh threads).
        let home = current_key().ok() == Some(key) || enter().is_ok();
        if done.send(()).is_err() {
            break;
        }
        if !home {
            tracing::warn!(netns = %ns.path.display(), "netns worker cannot return to its namespace; exiting");
            break;
        }
    }
    WORKER_OF.set(None);
    // No job is touched after the loop; `done` goes last.
    drop(jobs);
    drop(done);
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
