//! The journal under kill -9, and what its durability costs.
//!
//! kill -9 campaigns (what containerd sends when its context times out): ADDs of a
//! 4-network pod in local mode (`common::four_network_world`) — the cluster network (bridge), a NAD bridge with
//! masquerade and MAC spoof check (nftables rules), macvlan on a veth parent inside the node namespace and a
//! secondary VXLAN with its own VNI, all in-process — each SIGKILLed at a point spread over
//! an ADD's duration, then DEL twice (both succeed), or GC with an empty valid list alone.
//! Afterwards nothing may be left: pod and node links, FDB entries, host-local
//! reservations, journal entries, lock and temp files, status files, nftables rules.
//!
//! The kill points come from one measured ADD; no assertion depends on timing (an ADD that
//! finished before its kill, or was killed before it started, must leave nothing too).
//!
//! `fsyncs_of_one_add` counts the fsync/fdatasync calls of one ADD under strace (the
//! figures of docs/BENCHMARKS.md) and holds the journal to its budget.

mod common;
use common::*;
use meta_netlink::{Netlink, NetlinkOps};
use serde_json::{Value, json};
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// ADDs per campaign.
const KILLS: u32 = 50;
const VNI: u32 = 4317;
/// GC campaign: killed ADDs (each in a pod of its own) between two GCs.
const GC_EVERY: usize = 5;

/// Infrastructure of the node that stays (the test's own links, the delegates' bridges and
/// the VXLAN segment); anything else on the node is residue.
const NODE_INFRA: &[&str] = &[
    "lo", "mvpar0", "mvpar1", "ul0", "ul0p", "clbr0", "kcbr1", "mvx4317", "mbr4317",
];

/// The local-mode world of the campaign: [`four_network_world`].
fn world(pods: usize) -> (Env, Value) {
    four_network_world(pods, VNI)
}

fn args(cid: &str, pod: usize) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod{pod};K8S_POD_INFRA_CONTAINER_ID={cid}"
    )
}

/// Starts meta-cni ADD in the node namespace, in a process group of its own (so that what
/// it runs, such as `nft`, can be waited for after the kill).
fn spawn_add(e: &Env, pod: usize, cid: &str, conf: &Value) -> std::process::Child {
    spawn_wrapped(e, pod, cid, conf, &[])
}

/// [`spawn_add`] with meta-cni run by `wrapper` (e.g. strace and its options).
fn spawn_wrapped(
    e: &Env,
    pod: usize,
    cid: &str,
    conf: &Value,
    wrapper: &[&str],
) -> std::process::Child {
    let netns = e.w.pod(pod);
    let args = args(cid, pod);
    let inv = Invocation {
        verb: "ADD",
        container_id: cid,
        netns: &netns,
        ifname: "eth0",
        args: &args,
        path: REFERENCE_DIR,
        ..Default::default()
    };
    let fd = e.w.node.netns().fd().as_raw_fd();
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = std::process::Command::new(prog);
            c.args(rest).arg(meta_bin());
            c
        }
        None => std::process::Command::new(meta_bin()),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(plugin_env(&inv))
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setns is async-signal-safe; the fd stays open in the parent for the call.
    unsafe {
        cmd.pre_exec(move || {
            let f = BorrowedFd::borrow_raw(fd);
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().expect("spawn meta-cni");
    let mut si = child.stdin.take().expect("stdin");
    let _ = si.write_all(conf.to_string().as_bytes());
    child
}

/// Processes of process group `pgid` that are still running (not zombies).
fn group_alive(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for de in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = de.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X" {
            out.push(pid);
        }
    }
    out
}

/// SIGKILLs the ADD after `delay` (only meta-cni itself, as containerd does), reaps it,
/// and waits until anything it had started has exited too.
fn kill_after(mut child: std::process::Child, delay: Duration) {
    std::thread::sleep(delay);
    let pid = child.id();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    child.wait().expect("wait meta-cni");
    let t0 = Instant::now();
    loop {
        let alive = group_alive(pid);
        if alive.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "children of the killed ADD still running: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Duration of a complete ADD (spawn to exit; the shortest of three, the first of which
/// also creates the node's bridges and segment), each followed by its DEL: the campaign's
/// time scale.
fn measure_add(e: &Env, conf: &Value) -> Duration {
    (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let st = spawn_add(e, 0, "kcm", conf).wait().expect("wait");
            let d = t0.elapsed();
            assert!(st.success(), "the unkilled ADD failed: {st}");
            assert_eq!(
                link_names(e.w.pods[0].netns()),
                vec!["eth0", "lo", "net1", "net2", "net3"]
            );
            del(e, 0, "kcm", conf);
            d
        })
        .min()
        .expect("three runs")
}

fn del(e: &Env, pod: usize, cid: &str, conf: &Value) {
    let r = e.run("DEL", cid, pod, "ns1", conf);
    assert_eq!(r.code, 0, "DEL {cid}: {} {}", r.stdout, r.stderr);
}

/// Everything an attachment leaves behind that is not the node's infrastructure.
fn residue(e: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in e.w.pods.iter().enumerate() {
        let mut nl = Netlink::open(Some(p.netns())).expect("netlink");
        for l in nl.links().expect("links") {
            if l.name != "lo" {
                out.push(format!("pod{i} link {}", l.name));
            }
        }
    }
    let mut nl = Netlink::open(Some(e.w.node.netns())).expect("netlink");
    for l in nl.links().expect("links") {
        if l.kind.as_deref() == Some("vxlan") {
            for f in nl.fdbs(l.index).expect("fdbs") {
                if f.self_ && f.mac != [0; 6] {
                    out.push(format!(
                        "fdb {} {} dst {:?}",
                        l.name,
                        meta_netlink::format_mac(&f.mac),
                        f.dst
                    ));
                }
            }
        }
        if !NODE_INFRA.contains(&l.name.as_str()) {
            out.push(format!("node link {} kind={:?}", l.name, l.kind));
        }
    }
    for n in ["cluster", "br", "mv", "vx"] {
        for f in dir_contents(&e.w.path(&format!("ipam-{n}"))).into_keys() {
            if !f.ends_with("lock") && !f.contains("last_reserved") {
                out.push(format!("ipam-{n}/{f}"));
            }
        }
    }
    for f in dir_contents(&e.cache).into_keys() {
        out.push(format!("cache {f}"));
    }
    for t in meta_tests::contract::kernel::nft_tags(e.w.node.netns()) {
        out.push(format!("nft {t}"));
    }
    out
}

/// A pod's netns is torn down by the kernel a moment after its links are deleted; give
/// the node's side of that up to 5 s before calling anything residue.
fn assert_no_residue(e: &Env, ctx: &str) {
    let t0 = Instant::now();
    let mut left = residue(e);
    while !left.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        left = residue(e);
    }
    assert!(left.is_empty(), "{ctx}: residue: {left:#?}");
}

/// What a kill left in pod `pod` (for the printed summary of where the kills landed):
/// its links and the kinds of files of the cache dir.
fn outcome(e: &Env, pod: usize) -> String {
    let links = link_names(e.w.pods[pod].netns()).len() - 1;
    let mut files: Vec<&str> = dir_contents(&e.cache)
        .into_keys()
        .map(|f| {
            if f.starts_with(".tmp-") {
                "temp"
            } else if f.ends_with(".json.lock") {
                "lock"
            } else if f.starts_with("status/") {
                "status"
            } else if f.ends_with(".json") {
                "entry"
            } else {
                "other"
            }
        })
        .collect();
    files.sort();
    files.dedup();
    format!("{links} pod links, cache {files:?}")
}

fn print_outcomes(what: &str, seen: &std::collections::BTreeMap<String, u32>) {
    println!("{what}: where the kills landed");
    for (k, n) in seen {
        println!("  {n:3}  {k}");
    }
}

/// The kill points: k/KILLS of the measured ADD's duration, k = 0..KILLS, slightly past
/// its end so the last ones also hit an ADD that finished.
fn delay(k: u32, add: Duration) -> Duration {
    add.mul_f64(1.1 * f64::from(k) / f64::from(KILLS))
}

#[test]
fn kill_9_during_add_then_del_twice_leaves_nothing() {
    let (e, conf) = world(1);
    let add = measure_add(&e, &conf);
    assert_no_residue(&e, "after the measured ADD and its DEL");
    let mut seen = std::collections::BTreeMap::new();
    for k in 0..KILLS {
        let cid = format!("kd{k}");
        kill_after(spawn_add(&e, 0, &cid, &conf), delay(k, add));
        *seen.entry(outcome(&e, 0)).or_insert(0) += 1;
        del(&e, 0, &cid, &conf);
        del(&e, 0, &cid, &conf);
        assert_no_residue(
            &e,
            &format!("kill {k} of {KILLS} (after {:?})", delay(k, add)),
        );
    }
    print_outcomes(&format!("DEL campaign (ADD {add:?})"), &seen);
}

#[test]
fn kill_9_during_add_then_gc_alone_leaves_nothing() {
    let (e, conf) = world(GC_EVERY);
    let add = measure_add(&e, &conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let mut seen = std::collections::BTreeMap::new();
    for k in 0..KILLS {
        let cid = format!("kg{k}");
        // One pod per killed ADD until GC runs, so that GC meets several leftovers at once
        // and no ADD meets another's.
        let pod = k as usize % GC_EVERY;
        kill_after(spawn_add(&e, pod, &cid, &conf), delay(k, add));
        let links = link_names(e.w.pods[pod].netns()).len() - 1;
        *seen.entry(format!("{links} pod links")).or_insert(0) += 1;
        if pod + 1 == GC_EVERY || k + 1 == KILLS {
            let r = e.run("GC", "", 0, "ns1", &gc);
            assert_eq!(r.code, 0, "GC after kill {k}: {} {}", r.stdout, r.stderr);
            assert_no_residue(&e, &format!("GC after kill {k} of {KILLS}"));
        }
    }
    print_outcomes(&format!("GC campaign (ADD {add:?})"), &seen);
}

/// One ADD of local.rs's 3-network pod (cluster bridge and NAD bridge in-process, the
/// reference macvlan exec'd) under `strace -f -y -e trace=fsync,fdatasync`: the calls per
/// file class are printed (docs/BENCHMARKS.md), and the journal's are held to the budget of
/// docs/ARCHITECTURE.md: plan 2 (fdatasync of the temp file, fsync of the directory for
/// the new name), then one fdatasync per attachment (the last one carries the
/// default-route adjustments too).
#[test]
fn fsyncs_of_one_add() {
    fsyncs("macvlan exec'd (as in local.rs)", json!({}));
    fsyncs("every delegate in-process", json!({"forceExec": []}));
}

fn fsyncs(what: &str, extra: Value) {
    assert!(
        std::path::Path::new("/usr/bin/strace").exists(),
        "strace missing: apt-get install -y strace (scripts/test.sh does)"
    );
    let e = setup(1);
    let conf = e.conf("ns1/br-net, ns1/mv-net", extra);
    let log = e.w.path("strace.log");
    let log_s = log.display().to_string();
    let st = spawn_wrapped(
        &e,
        0,
        "fs1",
        &conf,
        &[
            "/usr/bin/strace",
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
            &log_s,
        ],
    )
    .wait()
    .expect("wait strace");
    assert!(st.success(), "ADD under strace: {st}");
    assert_eq!(
        link_names(e.w.pods[0].netns()),
        vec!["eth0", "lo", "net1", "net2"]
    );
    let text = std::fs::read_to_string(&log).expect("strace log");
    let cache = e.cache.display().to_string();
    let mut by_class: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text.lines() {
        let Some((call, rest)) = line
            .split_once(' ')
            .map(|(_, l)| l)
            .and_then(|l| l.split_once('('))
        else {
            continue;
        };
        let path = rest
            .split_once('<')
            .and_then(|(_, p)| p.split_once('>'))
            .map(|(p, _)| p)
            .unwrap_or("?");
        let class = if path.starts_with(&cache) {
            "journal (cniDir)".to_string()
        } else if let Some(n) = ["ipam-cluster", "ipam-br", "ipam-mv"]
            .iter()
            .find(|n| path.contains(&format!("/{n}")))
        {
            format!("host-local {n}")
        } else {
            format!("other {path}")
        };
        *by_class
            .entry(format!("{class}: {}", call.trim()))
            .or_default() += 1;
    }
    let total: usize = by_class.values().sum();
    println!("fsync/fdatasync calls of one ADD of a 3-network pod, {what}: {total}");
    for (k, v) in &by_class {
        println!("  {v:3}  {k}");
    }
    let journal: usize = by_class
        .iter()
        .filter(|(k, _)| k.starts_with("journal"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(journal, 2 + 3, "journal syncs: {by_class:#?}\n{text}");
    del(&e, 0, "fs1", &conf);
    e.assert_clean(0, "after the traced ADD");
}

/// Every verb first sweeps the journal's temp files older than a minute (both naming
/// patterns); a fresh one (a live writer's) and other files stay.
#[test]
fn stale_temp_files_are_swept_by_any_verb() {
    let e = setup(1);
    let mut conf = e.conf("", json!({}));
    conf["cniVersion"] = json!("1.1.0");
    let old = std::time::SystemTime::now() - Duration::from_secs(120);
    for (name, t) in [
        (".tmp-dead:eth0.77", Some(old)),
        ("dead2:eth0.tmp.78", Some(old)),
        (".tmp-live:eth0.79", None),
        (".not-ours", Some(old)),
    ] {
        let f = std::fs::File::create(e.cache.join(name)).expect("create");
        if let Some(t) = t {
            f.set_modified(t).expect("mtime");
        }
    }
    let r = e.run("STATUS", "sw", 0, "ns1", &conf);
    assert_eq!(r.code, 0, "STATUS: {} {}", r.stdout, r.stderr);
    let left: Vec<_> = dir_contents(&e.cache).into_keys().collect();
    assert_eq!(left, vec![".not-ours", ".tmp-live:eth0.79"]);
}

/// Runs `verb` for sandbox `cid` of pod `name` in pod namespace `netns`.
fn run_sandbox(e: &Env, verb: &str, cid: &str, netns: usize, name: &str, conf: &Value) -> Run {
    let path = e.w.pod(netns);
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME={name}");
    let inv = Invocation {
        verb,
        container_id: cid,
        netns: &path,
        ifname: "eth0",
        args: &args,
        path: REFERENCE_DIR,
        ..Default::default()
    };
    run_in(
        e.w.node.netns(),
        &meta_bin(),
        &inv,
        conf.to_string().as_bytes(),
    )
}

/// GC removes what DEL would, the local network-status file of a collected pod included,
/// but keeps the file while a valid attachment of the same pod remains (the pod's new
/// sandbox wrote it).
#[test]
fn gc_removes_the_status_files_of_collected_pods_only() {
    let e = setup(3);
    let mut conf = e.conf("ns1/br-net", json!({}));
    conf["cniVersion"] = json!("1.1.0");
    run_sandbox(&e, "ADD", "old0", 0, "pod0", &conf).ok();
    run_sandbox(&e, "ADD", "one", 1, "pod1", &conf).ok();
    run_sandbox(&e, "ADD", "new0", 2, "pod0", &conf).ok();
    let status = |pod: &str| e.cache.join(format!("status/ns1/{pod}.json"));
    assert!(status("pod0").exists() && status("pod1").exists());
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "new0", "ifname": "eth0"}]);
    let r = run_sandbox(&e, "GC", "", 0, "pod0", &gc);
    assert_eq!(r.code, 0, "GC: {} {}", r.stdout, r.stderr);
    assert_eq!(link_names(e.w.pods[0].netns()), vec!["lo"]);
    assert_eq!(link_names(e.w.pods[1].netns()), vec!["lo"]);
    assert!(!status("pod1").exists(), "pod1's status file left");
    assert!(
        status("pod0").exists(),
        "the live sandbox's status file went"
    );
    let mut left: Vec<_> = dir_contents(&e.cache).into_keys().collect();
    left.retain(|f| !f.starts_with("new0:"));
    assert_eq!(left, vec!["status/ns1/pod0.json"]);
    run_sandbox(&e, "DEL", "new0", 2, "pod0", &conf).ok();
    e.assert_clean(2, "after the DEL of the live sandbox");
}
