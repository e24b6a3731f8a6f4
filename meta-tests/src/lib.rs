//! The netns test harness of meta-cni.
//!
//! Every test builds its own world: a "node" namespace (where plugins run, so their host
//! side never touches the machine's root namespace) and "pod" namespaces, all with unique
//! names (pid + counter) and torn down by RAII even when the test panics. Plugins (ours or
//! the reference ones in /usr/lib/cni) run as child processes that `setns()` into the node
//! namespace before exec. Snapshots read the kernel state of a namespace through netlink
//! for differential comparison.

pub mod apiserver;
pub mod bench;
pub mod containerd;
pub mod contract;
pub mod cri;
#[cfg(feature = "kube")]
pub mod kube;
pub mod kubectl;

use meta_netlink::{NamedNetns, Netlink, NetlinkOps, Netns};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the Debian reference plugins live.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Fails the test (never skips) unless running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces); run the suite with scripts/test.sh as root"
    );
}

/// A reference plugin's path; fails the test when it is missing.
pub fn reference(name: &str) -> PathBuf {
    let p = Path::new(REFERENCE_DIR).join(name);
    assert!(
        p.exists(),
        "reference plugin {} missing: install Debian's containernetworking-plugins (scripts/test.sh does)",
        p.display()
    );
    p
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs a fixture script of this crate (`bash SCRIPT`, its log on stderr) that prints the
/// path of what it built or fetched as its last line of stdout; panics unless it succeeds
/// and that path is `binary`.
pub(crate) fn run_fixture_script(script: &Path, binary: &str) {
    let out = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}); its log is on stderr above. stdout: {stdout}",
        script.display(),
        out.status
    );
    assert_eq!(
        stdout.lines().last().unwrap_or_default().trim(),
        binary,
        "{} printed an unexpected path",
        script.display()
    );
}

/// A name unique to this process and call: `<prefix><pid hex><counter>`, at most 15 bytes
/// when `prefix` has at most 4.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{:x}{n:x}", std::process::id() & 0xfffff)
}

/// A node namespace with pods, and a scratch directory.
pub struct World {
    /// The node.
    pub node: NamedNetns,
    /// The pods.
    pub pods: Vec<NamedNetns>,
    /// Scratch directory (data dirs, caches, configs).
    pub dir: tempfile::TempDir,
}

impl World {
    /// A node and `pods` pod namespaces; loopback up in all of them.
    pub fn new(pods: usize) -> World {
        require_root();
        let node = NamedNetns::create(&unique("mcn-node-")).expect("create node netns");
        lo_up(node.netns());
        let pods = (0..pods)
            .map(|_| {
                let p = NamedNetns::create(&unique("mcn-pod-")).expect("create pod netns");
                lo_up(p.netns());
                p
            })
            .collect();
        World {
            node,
            pods,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Path of pod `i`'s namespace.
    pub fn pod(&self, i: usize) -> String {
        self.pods[i].path().display().to_string()
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

fn lo_up(ns: &Netns) {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    if let Ok(Some(lo)) = nl.link_by_name("lo") {
        nl.link_set_up(lo.index, true).expect("lo up");
    }
}

/// One plugin invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation<'a> {
    /// CNI_COMMAND.
    pub verb: &'a str,
    /// CNI_CONTAINERID.
    pub container_id: &'a str,
    /// CNI_NETNS.
    pub netns: &'a str,
    /// CNI_IFNAME.
    pub ifname: &'a str,
    /// CNI_ARGS.
    pub args: &'a str,
    /// CNI_PATH.
    pub path: &'a str,
    /// Extra environment.
    pub extra_env: Vec<(&'a str, &'a str)>,
    /// Environment variables to leave unset (to test validation).
    pub unset: Vec<&'a str>,
}

/// What a plugin run gave.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// stdout, raw.
    pub stdout: String,
    /// stdout parsed, when it is JSON.
    pub json: Option<Value>,
    /// stderr.
    pub stderr: String,
    /// Peak RSS of the child, KiB.
    pub max_rss_kib: i64,
}

impl Run {
    /// Panics with everything known unless the run succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "plugin failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        self
    }
    /// The JSON output, which must be there.
    pub fn value(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "no JSON on stdout: {:?} (stderr {})",
                self.stdout, self.stderr
            )
        })
    }
    /// The error code of a failed run (asserting stdout is the spec's error JSON).
    pub fn err_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected failure, got {}", self.stdout);
        let v = self.value();
        assert!(
            v.get("msg").and_then(Value::as_str).is_some(),
            "error JSON without msg: {v}"
        );
        v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error JSON without code: {v}"))
    }
    /// The error message.
    pub fn err_msg(&self) -> String {
        self.value()["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// The environment a plugin invocation sees: the CNI variables of `inv` (and the test's
/// `META_CNI_LOG`, if set), then `extra_env`, minus `unset`. One definition for the
/// exec'd runs ([`run_in`], [`run_plain`], [`spawn_in`]) and the in-process ones
/// ([`run_plugin`]).
pub fn plugin_env(inv: &Invocation) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("CNI_COMMAND", inv.verb),
        ("CNI_CONTAINERID", inv.container_id),
        ("CNI_NETNS", inv.netns),
        ("CNI_IFNAME", inv.ifname),
        ("CNI_ARGS", inv.args),
        ("CNI_PATH", inv.path),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Ok(l) = std::env::var("META_CNI_LOG") {
        env.insert("META_CNI_LOG".into(), l);
    }
    for (k, v) in &inv.extra_env {
        env.insert(k.to_string(), v.to_string());
    }
    for k in &inv.unset {
        env.remove(*k);
    }
    env
}

/// The plugin command: `bin` with exactly [`plugin_env`] (and a `PATH`), entering
/// namespace `ns` before exec when given, with piped stdio.
fn command(bin: &Path, inv: &Invocation, ns: Option<&Netns>) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(plugin_env(inv));
    if let Some(ns) = ns {
        let fd = ns.fd().as_raw_fd();
        // SAFETY: setns is async-signal-safe; the fd stays open in the parent for the call.
        unsafe {
            cmd.pre_exec(move || {
                let f = BorrowedFd::borrow_raw(fd);
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a plugin in-process through the CNI skeleton ([`cni_core::plugin::dispatch`]) with
/// the environment of `inv` and `stdin`, as the binary would run it: for delegates whose
/// kernel objects are faked (ipvlan, whose driver this machine's kernel lacks). stderr is
/// empty (logs go through `tracing`) and there is no RSS.
pub fn run_plugin<P: cni_core::Plugin + ?Sized>(plugin: &P, inv: &Invocation, stdin: &[u8]) -> Run {
    let env = plugin_env(inv);
    let out = cni_core::plugin::dispatch(plugin, |k| env.get(k).cloned(), stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(stdout.trim()).ok();
    Run {
        code: out.exit_code,
        stdout,
        json,
        stderr: String::new(),
        max_rss_kib: 0,
    }
}

/// Runs `bin` inside namespace `ns` with the CNI environment of `inv` and `stdin`.
pub fn run_in(ns: &Netns, bin: &Path, inv: &Invocation, stdin: &[u8]) -> Run {
    run(Some(ns), bin, inv, stdin)
}

/// Runs `bin` in the test's own namespace: only for invocations that never reach the
/// kernel (VERSION, bad input, DEL of a gone netns, IPAM-only work).
pub fn run_plain(bin: &Path, inv: &Invocation, stdin: &[u8]) -> Run {
    run(None, bin, inv, stdin)
}

fn run(ns: Option<&Netns>, bin: &Path, inv: &Invocation, stdin: &[u8]) -> Run {
    let mut child = command(bin, inv, ns)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    {
        let mut si = child.stdin.take().expect("stdin");
        let _ = si.write_all(stdin);
    }
    let pid = child.id() as libc::pid_t;
    // Drain pipes on threads, then reap with wait4 for the child's rusage.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut so, &mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut se, &mut s);
        s
    });
    let mut status: libc::c_int = 0;
    // SAFETY: plain FFI call with valid pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4 failed");
    std::mem::forget(child); // already reaped
    let stdout = t1.join().unwrap_or_default();
    let stderr = t2.join().unwrap_or_default();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let json = serde_json::from_str(stdout.trim()).ok();
    Run {
        code,
        stdout,
        json,
        stderr,
        max_rss_kib: ru.ru_maxrss,
    }
}

/// The kernel state of one interface, for comparison (names of random veths excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceState {
    /// Link kind.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Admin up.
    pub up: bool,
    /// Addresses other than IPv6 link-local, sorted.
    pub addrs: Vec<String>,
    /// Routes through this interface (main table, both families), rendered and sorted,
    /// excluding IPv6 link-local/multicast kernel routes.
    pub routes: Vec<String>,
}

/// Snapshot of interface `ifname` in `ns`; None when it does not exist.
pub fn iface_state(ns: &Netns, ifname: &str) -> Option<IfaceState> {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let link = nl.link_by_name(ifname).expect("links")?;
    let mut addrs: Vec<String> = nl
        .addrs(Some(link.index))
        .expect("addrs")
        .into_iter()
        .filter(|a| !(a.addr.addr().is_ipv6() && a.scope == meta_netlink::SCOPE_LINK))
        .map(|a| a.addr.to_string())
        .collect();
    addrs.sort();
    let mut routes = Vec::new();
    for v6 in [false, true] {
        for r in nl.routes(v6, None).expect("routes") {
            if r.oif != Some(link.index) {
                continue;
            }
            let d = r.dst.to_string();
            if d.starts_with("fe80:") || d.starts_with("ff00:") {
                continue;
            }
            routes.push(format!(
                "{d} via {} scope {} proto {}{}{}",
                r.gw.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                r.scope,
                r.protocol,
                r.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default(),
                r.priority
                    .filter(|p| *p != 0 && !v6)
                    .map(|m| format!(" metric {m}"))
                    .unwrap_or_default(),
            ));
        }
    }
    routes.sort();
    Some(IfaceState {
        kind: link.kind.clone(),
        mtu: link.mtu,
        up: link.up,
        addrs,
        routes,
    })
}

/// Names of all links in a namespace, sorted.
pub fn link_names(ns: &Netns) -> Vec<String> {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let mut v: Vec<String> = nl
        .links()
        .expect("links")
        .into_iter()
        .map(|l| l.name)
        .collect();
    v.sort();
    v
}

/// Reads a sysfs/procfs file as seen from inside `ns` (e.g. brport/hairpin_mode).
/// /sys reflects the namespace of whoever mounted it, so this reads through netlink-free
/// sysfs only for attributes that are per-device and visible under /sys/class/net of the
/// namespace's own sysfs mount; use [`read_in_ns_proc`] for /proc/sys.
pub fn read_in_ns_proc(ns: &Netns, key: &str) -> String {
    let key = key.to_string();
    ns.run(move || meta_netlink::sysctl_get(&key))
        .expect("ns thread")
        .unwrap_or_default()
}

/// Replaces MAC addresses and random veth names in a result by placeholders, so results
/// of different plugins can be compared.
pub fn normalize_result(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(ifs) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in ifs {
            if let Some(m) = i.get_mut("mac") {
                *m = Value::String("<mac>".into());
            }
            if let Some(n) = i.get("name").and_then(Value::as_str)
                && n.starts_with("veth")
            {
                i["name"] = Value::String("<veth>".into());
            }
        }
    }
    v
}

/// Every file of a directory (recursively) with its content; for comparing IPAM state.
pub fn dir_contents(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Starts `bin` inside `ns` like [`run_in`] but returns the running child (stdin already
/// written and closed), for tests that kill plugins mid-operation.
pub fn spawn_in(ns: &Netns, bin: &Path, inv: &Invocation, stdin: &[u8]) -> std::process::Child {
    let mut child = command(bin, inv, Some(ns))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(stdin);
    }
    child
}

/// Creates a veth pair `a`/`b` inside `ns` (both ends there, up) — a parent for macvlan
/// in tests (this kernel has no dummy links).
pub fn veth_pair_in(ns: &Netns, a: &str, b: &str) {
    use meta_netlink::{LinkKind, LinkRequest};
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    nl.link_add(&LinkRequest {
        name: a.into(),
        kind: LinkKind::Veth {
            peer_name: b.into(),
            peer_netns: None,
            peer_mac: None,
            peer_mtu: None,
        },
        mtu: None,
        mac: None,
        netns: None,
        up: true,
    })
    .expect("veth pair");
    for n in [a, b] {
        let l = nl.link_by_name(n).expect("links").expect("veth end");
        nl.link_set_up(l.index, true).expect("up");
    }
}

/// Creates a veth pair with end `a` in `ns_a` and end `b` in `ns_b`, both up: a wire
/// between two test namespaces (names may be equal, they live in different namespaces).
pub fn veth_pair_between(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) {
    use meta_netlink::{LinkKind, LinkRequest};
    let mut nl = Netlink::open(Some(ns_a)).expect("netlink");
    nl.link_add(&LinkRequest {
        name: a.into(),
        kind: LinkKind::Veth {
            peer_name: b.into(),
            peer_netns: Some(ns_b.clone()),
            peer_mac: None,
            peer_mtu: None,
        },
        mtu: None,
        mac: None,
        netns: None,
        up: true,
    })
    .expect("veth pair");
    let mut nb = Netlink::open(Some(ns_b)).expect("netlink");
    let l = nb.link_by_name(b).expect("links").expect("veth peer");
    nb.link_set_up(l.index, true).expect("up");
}

/// Pings `dst` from inside `ns` (2 packets, 1 s timeout; `extra` adds ping options such as
/// `-M do -s 1422`). Returns success and ping's output.
pub fn ping(ns: &NamedNetns, dst: std::net::IpAddr, extra: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "ping",
            "-n",
            "-q",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
        ])
        .args(extra)
        .arg(dst.to_string())
        .output()
        .expect("run ping (Debian iputils-ping)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Pings until a reply comes (up to 3 tries: the first packet may race neighbour setup).
pub fn assert_reaches(ns: &NamedNetns, dst: std::net::IpAddr, extra: &[&str]) {
    let mut last = String::new();
    for _ in 0..3 {
        let (ok, out) = ping(ns, dst, extra);
        if ok {
            return;
        }
        last = out;
    }
    panic!("{} cannot reach {dst} ({extra:?}): {last}", ns.name());
}

/// Asserts that no reply comes.
pub fn assert_unreachable(ns: &NamedNetns, dst: std::net::IpAddr) {
    let (ok, out) = ping(ns, dst, &[]);
    assert!(!ok, "{} unexpectedly reaches {dst}: {out}", ns.name());
}

/// The L2/L3 state of a namespace, rendered and sorted, for before/after comparisons:
/// links (with VXLAN parameters and FDB entries), addresses, permanent neighbours and IPv4
/// routes.
pub fn kernel_snapshot(ns: &Netns) -> Vec<String> {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let mut out = Vec::new();
    for l in nl.links().expect("links") {
        out.push(format!(
            "link {} {} kind={:?} mtu={} up={} master={:?} mac={:?} vxlan={:?}",
            l.index,
            l.name,
            l.kind,
            l.mtu,
            l.up,
            l.master,
            l.mac.map(|m| meta_netlink::format_mac(&m)),
            l.vxlan
        ));
        if l.kind.as_deref() == Some("vxlan") {
            for f in nl.fdbs(l.index).expect("fdbs") {
                out.push(format!("fdb {} {f:?}", l.name));
            }
        }
    }
    for a in nl.addrs(None).expect("addrs") {
        out.push(format!("addr {} {}", a.index, a.addr));
    }
    for nb in nl.neighs(None).expect("neighs") {
        if nb.permanent {
            out.push(format!("neigh {nb:?}"));
        }
    }
    for r in nl.routes(false, None).expect("routes") {
        out.push(format!("route {r:?}"));
    }
    out.sort();
    out
}
