//! A real containerd (Debian's 1.6, with its CRI plugin) for integration tests: the
//! runtime kubelet talks to, running pod sandboxes whose network is set up by the CNI
//! plugins of a test-provided bin dir and conf dir.
//!
//! [`Containerd::start`] runs one containerd per fixture, inside the test's "node" network
//! namespace (`setns` before exec, so the CNI plugins it runs, which inherit its namespace,
//! create their host-side links there and never in the machine's root namespace), with its
//! own root, state, runc root and sockets in a fresh directory under [`BASE_DIR`], the pause
//! image of `meta-tests/containerd/build-pause.sh` imported as its sandbox image, and CRI network
//! namespaces mounted under its state directory (`netns_mounts_under_state_dir`), not
//! `/run/netns`. It never uses `/run/containerd/containerd.sock`, `/var/lib/containerd`,
//! `/run/containerd/runc` or `/etc/containerd`, so it runs beside a system containerd.
//! Only the runc shims' sockets land in `/run/containerd/s/` (containerd 1.6 hard-codes
//! that directory; their names hash this instance's socket path, so they never collide).
//!
//! Dropping the fixture stops and removes every sandbox through CRI (so CNI DEL runs while
//! the plugins' world still exists), stops containerd, kills what is left of its shims and
//! their pause processes, unmounts whatever is still mounted under its directory and
//! removes the directory. containerd itself dies with the test process (`PR_SET_PDEATHSIG`)
//! even on a crash; whatever a crashed run left behind (shims, pause processes, mounts) is
//! cleaned by the next [`Containerd::start`] (directories whose owner process is gone).
//!
//! Set `META_CNI_KEEP_CONTAINERD=1` to keep the directory (config, `containerd.log`).

use crate::cri::Cri;
use meta_netlink::{Netlink, NetlinkOps, Netns};
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The sandbox image (a local name: containerd never tries a real registry for it).
pub const PAUSE_IMAGE: &str = "localhost/meta-cni/pause:1.0";
/// Where `meta-tests/containerd/build-pause.sh` leaves the image (OCI layout tarball).
pub const PAUSE_TARBALL: &str = "/var/cache/meta-cni/pause.tar";
/// Where each fixture gets its directory (root, state, sockets, config, log).
pub const BASE_DIR: &str = "/var/tmp/meta-cni-containerd";
/// Debian's containerd.
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// Debian's ctr.
pub const CTR: &str = "/usr/bin/ctr";
/// The containerd namespace of CRI.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// libcni's result cache, which containerd 1.6 always uses.
pub const CNI_CACHE_RESULTS: &str = "/var/lib/cni/results";
/// The CRI plugin's id (its state dir is `<state>/<id>`).
pub const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";

/// `meta-tests/containerd/build-pause.sh` of this checkout.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("containerd/build-pause.sh")
}

/// Runs `build-pause.sh` once per process (it installs containerd, runc and the reference
/// plugins when missing and builds the pause image when missing or stale; a second run is
/// a no-op of ~0.1 s). Panics when it fails, so a test fails rather than skips.
pub fn ensure_prerequisites() -> PathBuf {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        crate::require_root();
        let script = build_script();
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for p in [CONTAINERD, CTR, PAUSE_TARBALL, "/usr/bin/runc"] {
            assert!(
                Path::new(p).exists(),
                "{p} missing after {}",
                script.display()
            );
        }
        *done = true;
    }
    PathBuf::from(PAUSE_TARBALL)
}

/// Settings of one containerd.
#[derive(Debug, Clone)]
pub struct Options {
    /// CNI `bin_dir`: the plugins (containerd 1.6 also runs `loopback` from here, for
    /// `lo`, whatever the conf dir holds).
    pub cni_bin_dir: PathBuf,
    /// CNI `conf_dir`: containerd uses the first `max_conf_num` files in lexical order.
    pub cni_conf_dir: PathBuf,
    /// CNI `max_conf_num` (containerd's default is 1).
    pub max_conf_num: u32,
    /// Log level (`debug` shows every CRI call and CNI result).
    pub log_level: String,
    /// How long to wait for CRI to be ready.
    pub start_timeout: Duration,
}

impl Options {
    /// Defaults: `max_conf_num` 1, log level `debug`, 60 s start timeout.
    pub fn new(cni_bin_dir: &Path, cni_conf_dir: &Path) -> Options {
        Options {
            cni_bin_dir: cni_bin_dir.to_path_buf(),
            cni_conf_dir: cni_conf_dir.to_path_buf(),
            max_conf_num: 1,
            log_level: "debug".into(),
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// A running containerd with its CRI plugin, inside a node network namespace.
pub struct Containerd {
    cri: Cri,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    // Keeps the node namespace alive (and its fd valid) as long as the fixture.
    node: Netns,
    opts: Options,
    started_in: Duration,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("dir", &self.dir)
            .field("pid", &self.pid())
            .field("node", &self.node)
            .finish()
    }
}

fn toml_str(p: &Path) -> String {
    let s = p.display().to_string();
    assert!(
        !s.contains('"') && !s.contains('\\') && !s.contains('\n'),
        "path not usable in TOML: {s:?}"
    );
    format!("\"{s}\"")
}

fn config_toml(dir: &Path, socket: &Path, opts: &Options) -> String {
    let q = |rel: &str| toml_str(&dir.join(rel));
    let cri = format!("plugins.\"{CRI_PLUGIN}\"");
    format!(
        r#"# meta-cni containerd test fixture (meta-tests/src/containerd.rs)
version = 2
root = {root}
state = {state}
# Plugins that would touch machine-wide paths (/opt/containerd) or need absent kernel
# features; tracing needs no exporter.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {sock}
[ttrpc]
  address = {ttrpc}
[debug]
  address = ""
  level = "{level}"
[metrics]
  address = ""

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Needed on this machine (the test process runs with a negative oom_score_adj floor).
  restrict_oom_score_adj = true
  # Network namespaces under <state>/{CRI_PLUGIN}/netns, not the machine's /run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  # The streaming server (exec/attach) on loopback, any free port.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    bin_dir = {bin}
    conf_dir = {conf}
    max_conf_num = {max}
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
        Root = {runc}
        SystemdCgroup = false
"#,
        root = q("root"),
        state = q("state"),
        sock = toml_str(socket),
        ttrpc = toml_str(&socket.with_extension("sock.ttrpc")),
        level = opts.log_level,
        bin = toml_str(&opts.cni_bin_dir),
        conf = toml_str(&opts.cni_conf_dir),
        max = opts.max_conf_num,
        runc = q("runc"),
    )
}

/// Spawns `cmd` from a thread that lives as long as the process, with `PR_SET_PDEATHSIG`:
/// the child is killed when the test process ends, however it ends (the signal follows the
/// death of the spawning *thread*, hence the dedicated one).
fn spawn_tied_to_process(cmd: Command) -> std::io::Result<Child> {
    type Req = (Command, mpsc::Sender<std::io::Result<Child>>);
    static TX: OnceLock<Mutex<mpsc::Sender<Req>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Req>();
        std::thread::Builder::new()
            .name("containerd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the containerd-spawner thread");
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, rtx))
        .expect("containerd-spawner thread gone");
    rrx.recv().expect("containerd-spawner thread gone")
}

/// Start time of process `pid` (field 22 of /proc/PID/stat), to tell a PID's reuse.
fn proc_start_time(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Containerd {
    /// Starts containerd in `node` with CNI bin dir `cni_bin_dir` and conf dir
    /// `cni_conf_dir` (see [`Options::new`] for the rest), imports the pause image and
    /// waits until CRI answers, reports `RuntimeReady` and knows the pause image. The conf
    /// dir may still be empty: see [`Containerd::wait_network_ready`]. Panics on failure
    /// (with the end of containerd's log).
    pub fn start(node: &Netns, cni_bin_dir: &Path, cni_conf_dir: &Path) -> Containerd {
        Containerd::start_with(node, Options::new(cni_bin_dir, cni_conf_dir))
    }

    /// [`Containerd::start`] with all settings.
    pub fn start_with(node: &Netns, opts: Options) -> Containerd {
        let t0 = Instant::now();
        let tarball = ensure_prerequisites();
        // CRI's streaming server binds 127.0.0.1 in the node namespace: lo must be up.
        {
            let mut nl = Netlink::open(Some(node)).expect("netlink in the node namespace");
            if let Ok(Some(lo)) = nl.link_by_name("lo") {
                nl.link_set_up(lo.index, true)
                    .expect("lo up in the node namespace");
            }
        }
        fs::create_dir_all(BASE_DIR).unwrap_or_else(|e| panic!("create {BASE_DIR}: {e}"));
        reap_stale();
        let dir = tempfile::Builder::new()
            .prefix("ctd-")
            .tempdir_in(BASE_DIR)
            .expect("containerd fixture dir")
            .keep();
        let me = std::process::id();
        fs::write(
            dir.join("owner"),
            format!("{me} {}\n", proc_start_time(me).unwrap_or(0)),
        )
        .expect("write owner");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(&config, config_toml(&dir, &socket, &opts)).expect("write config.toml");
        let log = fs::File::create(dir.join("containerd.log")).expect("create containerd.log");

        let mut cmd = Command::new(CONTAINERD);
        cmd.arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("TMPDIR", &dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let fd = node.fd().as_raw_fd();
        // SAFETY: prctl, getppid and setns are async-signal-safe; `fd` stays open in the
        // parent (held by `node`) for the whole spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("parent already gone"));
                }
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            spawn_tied_to_process(cmd).unwrap_or_else(|e| panic!("spawn {CONTAINERD}: {e}"));
        let mut me = Containerd {
            cri: Cri::connect(&socket).with_timeout(Duration::from_secs(10)),
            dir: dir.clone(),
            socket,
            child: Some(child),
            node: node.clone(),
            opts,
            started_in: Duration::ZERO,
        };
        let deadline = t0 + me.opts.start_timeout;
        // 1. CRI answers and the runtime is ready.
        loop {
            me.assert_alive("starting");
            if me.socket.exists()
                && let Ok(st) = me.cri.status(false)
                && st.condition("RuntimeReady").is_some_and(|c| c.status)
            {
                break;
            }
            me.assert_before(deadline, "CRI to report RuntimeReady");
            std::thread::sleep(Duration::from_millis(50));
        }
        // 2. The pause image, imported with ctr and visible to CRI.
        let out = me.ctr(&["images", "import", &tarball.display().to_string()]);
        assert!(
            out.status.success(),
            "ctr images import {} failed: {}\n--- containerd.log ---\n{}",
            tarball.display(),
            String::from_utf8_lossy(&out.stderr),
            me.log_tail(40)
        );
        loop {
            if let Ok(Some(_)) = me.cri.image_status(PAUSE_IMAGE) {
                break;
            }
            me.assert_alive("importing the pause image");
            me.assert_before(deadline, "CRI to see the pause image");
            std::thread::sleep(Duration::from_millis(50));
        }
        me.cri = Cri::connect(&me.socket);
        me.started_in = t0.elapsed();
        me
    }

    fn assert_alive(&mut self, when: &str) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            panic!(
                "containerd exited while {when}: {st}\n--- containerd.log ---\n{}",
                self.log_tail(40)
            );
        }
    }

    fn assert_before(&self, deadline: Instant, what: &str) {
        if Instant::now() > deadline {
            panic!(
                "no {what} within {:?}\n--- containerd.log ---\n{}",
                self.opts.start_timeout,
                self.log_tail(40)
            );
        }
    }

    /// The CRI client of this containerd (60 s per call).
    pub fn cri(&self) -> &Cri {
        &self.cri
    }

    /// The CRI (and containerd API) socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The fixture's directory (config.toml, containerd.log, root/, state/, runc/).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where CRI mounts the sandboxes' network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.dir.join("state").join(CRI_PLUGIN).join("netns")
    }

    /// The node namespace containerd (and so every CNI plugin it runs) lives in.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// The settings it was started with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// How long [`Containerd::start`] took (including the image import).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// PID of containerd (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// containerd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// Runs `ctr --address <socket> -n k8s.io ARGS` (in the test's own namespaces).
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(CTR)
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", K8S_NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {CTR}: {e}"))
    }

    /// Waits until CRI reports `NetworkReady` (a CNI config was loaded from the conf dir;
    /// containerd watches the directory with inotify). Err with the last status otherwise.
    pub fn wait_network_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.cri.status(false) {
                Ok(st) => match st.condition("NetworkReady") {
                    Some(c) if c.status => return Ok(()),
                    Some(c) => format!("{}: {}", c.reason, c.message),
                    None => "no NetworkReady condition".into(),
                },
                Err(e) => format!("Status failed: {e}"),
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and removes every sandbox through CRI (CNI DEL runs for each), returning
    /// the errors met.
    pub fn remove_all_sandboxes(&self) -> Vec<String> {
        let mut errors = Vec::new();
        match self.cri.list_pod_sandbox(None) {
            Ok(items) => {
                for sb in items {
                    if let Err(e) = self.cri.stop_pod_sandbox(&sb.id) {
                        errors.push(format!("StopPodSandbox {}: {e}", sb.id));
                    }
                    if let Err(e) = self.cri.remove_pod_sandbox(&sb.id) {
                        errors.push(format!("RemovePodSandbox {}: {e}", sb.id));
                    }
                }
            }
            Err(e) => errors.push(format!("ListPodSandbox: {e}")),
        }
        errors
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if alive {
            for e in self.remove_all_sandboxes() {
                eprintln!("containerd fixture {}: {e}", self.dir.display());
            }
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        cleanup_dir(&self.dir, &self.socket);
        if std::env::var_os("META_CNI_KEEP_CONTAINERD").is_some() {
            eprintln!("containerd fixture kept: {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("containerd fixture: remove {}: {e}", self.dir.display());
        }
    }
}

/// All processes as (pid, ppid, cmdline with NULs as spaces).
fn processes() -> Vec<(u32, u32, String)> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        let cmd = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        v.push((pid, ppid, cmd));
    }
    v
}

/// Kills the shims of the containerd at `socket` (their command line names it as
/// `-address`) and all their descendants (runc, pause), and waits until they are gone.
fn kill_shims(socket: &Path) {
    let needle = format!("-address {} ", socket.display());
    let procs = processes();
    let mut victims: Vec<u32> = procs
        .iter()
        .filter(|(_, _, cmd)| {
            cmd.contains("containerd-shim") && format!("{cmd} ").contains(&needle)
        })
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut i = 0;
    while i < victims.len() {
        let parent = victims[i];
        for (pid, ppid, _) in &procs {
            if *ppid == parent && !victims.contains(pid) {
                victims.push(*pid);
            }
        }
        i += 1;
    }
    for pid in &victims {
        // SAFETY: plain kill(2); these PIDs were just read as descendants of our shims.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while victims
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.display().to_string();
    let mut v: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .map(PathBuf::from)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// After containerd is gone: kills leftover shims (and pause processes), removes their
/// sockets from /run/containerd/s, unmounts everything under `dir`.
fn cleanup_dir(dir: &Path, socket: &Path) {
    kill_shims(socket);
    // Shim sockets: /run/containerd/s/<sha256(socket/k8s.io/<id>)> (containerd 1.6);
    // a killed shim leaves its socket behind.
    let tasks = dir
        .join("state/io.containerd.runtime.v2.task")
        .join(K8S_NAMESPACE);
    if let Ok(rd) = fs::read_dir(&tasks) {
        for e in rd.flatten() {
            let key = format!(
                "{}/{K8S_NAMESPACE}/{}",
                socket.display(),
                e.file_name().to_string_lossy()
            );
            if let Some(hex) = sha256_hex(key.as_bytes()) {
                let _ = fs::remove_file(Path::new("/run/containerd/s").join(hex));
            }
        }
    }
    // libcni's result cache (not configurable in containerd 1.6): entries
    // `<network>-<sandbox id>-<ifname>` stay when DEL never ran (crashed run).
    let ids: Vec<String> = ["root", "state"]
        .iter()
        .filter_map(|d| fs::read_dir(dir.join(d).join(CRI_PLUGIN).join("sandboxes")).ok())
        .flat_map(|rd| rd.flatten())
        .map(|e| format!("-{}-", e.file_name().to_string_lossy()))
        .filter(|id| id.len() == 66)
        .collect();
    if let (false, Ok(cache)) = (ids.is_empty(), fs::read_dir(CNI_CACHE_RESULTS)) {
        for e in cache.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.contains(id.as_str())) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    for m in mounts_under(dir) {
        let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: plain umount2(2) on a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn sha256_hex(data: &[u8]) -> Option<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(data).ok()?;
    let out = child.wait_with_output().ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()?
            .to_string(),
    )
}

/// Cleans the directories under [`BASE_DIR`] whose owner process is gone (a test run that
/// was killed before its fixtures' Drop): shims, pause processes, mounts, files.
pub fn reap_stale() {
    let Ok(rd) = fs::read_dir(BASE_DIR) else {
        return;
    };
    for e in rd.flatten() {
        let dir = e.path();
        let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let mut it = owner.split_whitespace().map(|s| s.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(start))) = (it.next(), it.next()) else {
            // Being created right now by another process, or not ours: leave it unless old.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|d| d > Duration::from_secs(3600));
            if !old {
                continue;
            }
            cleanup_dir(&dir, &dir.join("containerd.sock"));
            let _ = fs::remove_dir_all(&dir);
            continue;
        };
        if proc_start_time(pid as u32) == Some(start) {
            continue; // owner alive
        }
        // containerd itself died with its owner (PDEATHSIG); make sure anyway.
        let sock = dir.join("containerd.sock");
        for (p, _, cmd) in processes() {
            if cmd.starts_with(CONTAINERD)
                && cmd.contains(&format!("{} ", dir.join("config.toml").display()))
            {
                // SAFETY: plain kill(2) of a containerd started for this dead owner's dir.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
            }
        }
        cleanup_dir(&dir, &sock);
        let _ = fs::remove_dir_all(&dir);
    }
}
