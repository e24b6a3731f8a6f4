//! The meta plugin: pod annotations + NetworkAttachmentDefinitions → eth0..netN, a merged
//! result for the runtime, network-status on the pod, a durable journal and rollback.
//!
//! ADD ([`MetaPlugin`]'s `add`, one function top to bottom): configuration → pod
//! annotations (from the runtime's `runtimeConfig."io.kubernetes.cri.pod-annotations"`,
//! else a GET of the pod) → the plan ([`plan`]) → the plan written to the journal
//! ([`journal`]) → each attachment run ([`exec`]) and its result recorded as it lands → on
//! failure, everything attempted is deleted in reverse and one error names the network and
//! the cause → [`default_route`] → [`network_status`] → the cluster network's result.
//!
//! DEL works from the journal alone; CHECK runs over every attachment; STATUS reports
//! readiness; GC removes journal entries (and their attachments) not listed as valid and
//! lets every known network's plugins collect their own garbage.

pub mod config;
pub mod default_route;
pub mod exec;
pub mod handoff;
pub mod hotplug;
pub mod install;
pub mod journal;
pub mod network_status;
pub mod plan;
pub mod source;
pub mod spool;

use cni_core::{CmdArgs, CniResult, Error, Plugin, Result, code};
use config::MetaConf;
use exec::Runner;
use journal::{Attachment, Entry, Journal, PodRef};
use plan::PodCtx;
use serde_json::{Map, Value};
use source::{AgentSource, KubeSource, LocalSource, NoSource, Source};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// The meta plugin.
#[derive(Default)]
pub struct MetaPlugin;

/// Where pods and NADs come from: the API server, a local NAD directory, or nowhere.
pub(crate) fn make_source(conf: &MetaConf) -> Result<Box<dyn Source>> {
    if let Some(kc) = &conf.kubeconfig {
        if !conf.agent_socket.as_os_str().is_empty() {
            return Ok(Box::new(AgentSource::new(
                conf.agent_socket.clone(),
                kc.clone(),
                Duration::from_secs(conf.api_timeout_seconds),
            )));
        }
        return Ok(Box::new(KubeSource::new(
            kc,
            Duration::from_secs(conf.api_timeout_seconds),
        )?));
    }
    if let Some(dir) = &conf.local_nad_dir {
        return Ok(Box::new(LocalSource::new(
            dir.clone(),
            conf.cache_dir.join("status"),
        )));
    }
    Ok(Box::new(NoSource))
}

fn runner(conf: &MetaConf, args: &CmdArgs, netns: &str) -> Runner {
    Runner {
        container_id: args.env.container_id.clone(),
        netns: netns.to_string(),
        args_raw: args.env.args_raw.clone(),
        bin_dirs: conf.bin_dirs(&args.env.path),
        force_exec: conf.force_exec.clone(),
    }
}

/// The runtime's own runtimeConfig (its pod annotations included).
fn runtime_config(args: &CmdArgs) -> Map<String, Value> {
    args.conf
        .get("runtimeConfig")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The pod's annotations as the runtime passed them (values must be strings).
fn runtime_annotations(args: &CmdArgs) -> Result<Option<BTreeMap<String, String>>> {
    Ok(args.conf.pod_annotations()?.map(|m| {
        m.into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect()
    }))
}

/// The pod of a Kubernetes invocation and its UID: annotations from the runtime when it
/// passed them, else a GET of the pod (its UID checked against `K8S_POD_UID`). `None`
/// without a Kubernetes pod identity in CNI_ARGS.
fn resolve_pod(args: &CmdArgs, src: &mut dyn Source) -> Result<Option<(PodCtx, Option<String>)>> {
    let Some(p) = args.env.args.k8s_pod() else {
        return Ok(None);
    };
    plan::check_pod_namespace(&p.namespace, &p.name)?;
    let (annotations, uid) = match runtime_annotations(args)? {
        Some(a) => (a, p.uid.clone()),
        None if src.has_pods() => {
            let info = src
                .pod_with_uid(&p.namespace, &p.name, p.uid.as_deref())?
                .ok_or_else(|| {
                    Error::try_again(format!(
                        "pod {}/{} not found in the API server",
                        p.namespace, p.name
                    ))
                })?;
            if let (Some(want), Some(have)) = (&p.uid, &info.uid)
                && want != have
            {
                return Err(Error::try_again(format!(
                    "pod {}/{} has UID {have}, the runtime asked for {want} (pod recreated?)",
                    p.namespace, p.name
                )));
            }
            (info.annotations, info.uid.or(p.uid.clone()))
        }
        None => (BTreeMap::new(), p.uid.clone()),
    };
    Ok(Some((
        PodCtx {
            namespace: p.namespace,
            name: p.name,
            annotations,
        },
        uid,
    )))
}

/// Deletes `attachments` in reverse order; returns the failures.
fn delete_in_reverse(run: &Runner, attachments: &[Attachment]) -> Vec<String> {
    delete_recorded(run, attachments, None)
}

/// [`delete_in_reverse`], each delegate's run recorded in `rec` (DEL's spool record).
fn delete_recorded(
    run: &Runner,
    attachments: &[Attachment],
    mut rec: Option<&mut spool::Recorder>,
) -> Vec<String> {
    run.remove_pod_links(attachments);
    let mut errs = Vec::new();
    for a in attachments.iter().rev() {
        let t = Instant::now();
        let r = run.del(a, a.cni_result().as_ref());
        if let Some(rec) = rec.as_deref_mut() {
            rec.attachment(a, t.elapsed(), r.as_ref().map(|_| None));
        }
        if let Err(e) = r {
            errs.push(format!("network {} ({}): {e}", a.network, a.ifname));
        }
    }
    errs
}

/// ADD over an entry a previous ADD of this attachment left (never deleted): its
/// attachments are deleted first, in the netns they were made in.
fn delete_leftover(conf: &MetaConf, args: &CmdArgs, journal: &Journal) -> Result<()> {
    let Some(old) = journal.load()? else {
        return Ok(());
    };
    tracing::warn!(
        "ADD over an existing journal entry for {}: deleting the old attachments first",
        args.env.container_id
    );
    let errs = delete_in_reverse(&runner(conf, args, &old.netns), &old.attachments);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Error::try_again(format!(
            "cleaning a previous ADD failed: {}",
            errs.join("; ")
        )))
    }
}

/// A failed ADD: the first `attempted` attachments (the failed one included: it may be half
/// made) are deleted in reverse, and the journal entry goes with them, unless a DEL failed:
/// then it stays for DEL or GC to retry. Returns `err`.
fn roll_back(run: &Runner, entry: &Entry, attempted: usize, journal: Journal, err: Error) -> Error {
    let errs = delete_in_reverse(run, &entry.attachments[..attempted]);
    if errs.is_empty() {
        if let Err(e) = journal.remove() {
            tracing::warn!("{e}");
        }
    } else {
        tracing::error!(
            "rollback incomplete, journal kept for DEL/GC: {}",
            errs.join("; ")
        );
    }
    err
}

/// DEL without a journal entry (never added, already deleted, or the cache was lost): the
/// attachments the configuration, the runtime's annotations and local NADs resolve to now,
/// and the pod. No API request: a DEL never waits on the API server, and without a journal
/// entry nothing of meta-cni's can be attached that only the API could name (the plan is
/// durable before the first attachment), so NADs in the API server are not looked up and
/// the cluster network alone is deleted when the annotations name any. Never fails: the
/// pod's deletion must not block on this; with nothing resolvable, nothing.
fn resolve_without_journal(conf: &MetaConf, args: &CmdArgs) -> (Vec<Attachment>, Option<PodRef>) {
    let mut src: Box<dyn Source> = if conf.kubeconfig.is_some() {
        Box::new(NoSource)
    } else {
        match make_source(conf) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("DEL without journal: {e}");
                Box::new(NoSource)
            }
        }
    };
    let pod = match resolve_pod(args, src.as_mut()) {
        Ok(p) => p.map(|(p, _)| p),
        Err(e) => {
            tracing::warn!(
                "DEL without journal: pod lookup: {e}; deleting the cluster network only"
            );
            None
        }
    };
    let rc = Map::new();
    let plan = plan::build(conf, &args.env.ifname, &rc, pod.as_ref(), src.as_mut()).or_else(|e| {
        if conf.kubeconfig.is_some() {
            tracing::debug!(
                "DEL without journal: NADs are not looked up in the API server; deleting the cluster network only"
            );
        } else {
            tracing::warn!("DEL without journal: {e}; deleting the cluster network only");
        }
        plan::build(conf, &args.env.ifname, &rc, None, &mut NoSource)
    });
    match plan {
        Ok(plan) => (
            plan,
            pod.map(|p| PodRef {
                namespace: p.namespace,
                name: p.name,
                uid: None,
            }),
        ),
        Err(e) => {
            tracing::warn!("DEL without journal: nothing resolvable: {e}");
            (Vec::new(), None)
        }
    }
}

/// The configuration of a verb; every verb starts by sweeping temp files killed journal
/// writers left (one readdir of the cache dir).
fn load_conf(args: &CmdArgs) -> Result<MetaConf> {
    let conf = MetaConf::load(args)?;
    journal::sweep_stale_temps(&conf.cache_dir, journal::STALE_TEMP);
    Ok(conf)
}

/// What a verb holds for its length so the in-process delegates, IPAM and the
/// default-route step share one of each per namespace instead of each making their own:
/// the pod namespace's hand-off thread (while it is held, `meta_netlink::Netns::run` in
/// the pod — sysctls, opening a connection — runs on that one thread, which entered the
/// namespace once, instead of a fresh thread per call), and the node's and the pod's
/// netlink connections (while a namespace's connection is alive,
/// `meta_netlink::Netlink::open` hands out that one: one socket and one runtime per
/// namespace), and a firewall driver (while one is alive, every in-process delegate's
/// `meta_firewall::Nftables` shares its netlink sockets, so a pod whose networks masquerade
/// or spoof-check on several bridges opens one socket and hands it off once, at the end).
/// The node needs no hand-off thread: nothing switches to the namespace the
/// verb already runs in. Dropped at the end of the verb, so the thread (which pins the
/// pod namespace) is gone before DEL returns. Best effort: a namespace that cannot be
/// opened is skipped (the delegates report it).
struct Held {
    _netlink: Vec<meta_netlink::Netlink>,
    _worker: Option<meta_netlink::NetnsWorker>,
    _firewall: meta_firewall::Nftables,
}

fn hold_namespaces(netns: &str) -> Held {
    let mut netlink: Vec<_> = meta_netlink::Netlink::open(None).into_iter().collect();
    let mut worker = None;
    if !netns.is_empty()
        && let Ok(ns) = meta_netlink::Netns::open(netns)
    {
        // The worker first: the pod's connection is then opened on its thread.
        worker = ns.worker().ok();
        netlink.extend(meta_netlink::Netlink::open(Some(&ns)));
    }
    Held {
        _netlink: netlink,
        _worker: worker,
        _firewall: meta_firewall::Nftables::new(),
    }
}

/// DEL and GC: a worker for hand-off jobs that wait without one ([`handoff::kick`]).
fn kick_handoff(conf: &MetaConf) {
    handoff::kick(
        &conf.cache_dir,
        conf.log_file.as_deref(),
        conf.log_level.as_deref(),
    );
}

/// What DEL and GC remove once an attachment's delegates are deleted: the pod's local
/// network-status file and the journal slot (entry, temp files, lock).
fn forget(conf: &MetaConf, journal: Journal, pod: Option<&PodRef>) -> Result<()> {
    if let Some(p) = pod {
        network_status::clear_local(conf, p)?;
    }
    journal.remove()
}

fn check_ready(conf: &MetaConf, code_: u32) -> Result<()> {
    if let Some(f) = &conf.readiness_indicator_file
        && !f.exists()
    {
        return Err(Error::new(
            code_,
            format!(
                "readiness indicator file {} does not exist: the cluster network is not ready",
                f.display()
            ),
        ));
    }
    Ok(())
}

impl Plugin for MetaPlugin {
    fn about(&self) -> String {
        format!(
            "meta-cni {} (multi-network meta plugin)",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn log_settings(&self, stdin: &[u8]) -> (Option<std::path::PathBuf>, Option<String>) {
        let v: Value = serde_json::from_slice(stdin).unwrap_or_default();
        (
            v.get("logFile").and_then(Value::as_str).map(Into::into),
            v.get("logLevel").and_then(Value::as_str).map(Into::into),
        )
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let mut rec = spool::Recorder::start(meta_crd::spool::Verb::Add);
        let r = add(args, &mut rec);
        rec.finish(args, r.as_ref().map(|_| ()));
        r
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let mut rec = spool::Recorder::start(meta_crd::spool::Verb::Del);
        let r = del(args, &mut rec);
        rec.finish(args, r.as_ref().copied());
        r
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let mut rec = spool::Recorder::start(meta_crd::spool::Verb::Check);
        let r = check(args, &mut rec);
        rec.finish(args, r.as_ref().copied());
        r
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let conf = load_conf(args)?;
        check_ready(&conf, code::NOT_AVAILABLE)?;
        let mut src = make_source(&conf)?;
        let plan = plan::build(&conf, "eth0", &Map::new(), None, src.as_mut())?;
        let run = runner(&conf, args, "");
        for a in &plan {
            run.status(a)
                .map_err(|e| e.context(format!("cluster network {}", a.network)))?;
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let conf = load_conf(args)?;
        kick_handoff(&conf);
        let valid: HashSet<(String, String)> = args
            .conf
            .gc_valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        let mut errs = Vec::new();
        let slots = journal::list(&conf.cache_dir)?;
        // Pods with a valid attachment keep their network-status file.
        let mut live_pods = HashSet::new();
        for (cid, ifname) in slots.iter().filter(|s| valid.contains(*s)) {
            if let Some(p) = Journal::open(&conf.cache_dir, cid, ifname)?
                .load()?
                .and_then(|e| e.pod)
            {
                live_pods.insert((p.namespace, p.name));
            }
        }
        // Slots the runtime no longer knows: delete their attachments, then remove what
        // DEL would (status file, entry, temp files, lock). A slot with only a lock or a
        // temp file (killed before its plan was durable) had nothing attached.
        for (cid, ifname) in slots.iter().filter(|s| !valid.contains(*s)) {
            let j = Journal::open(&conf.cache_dir, cid, ifname)?;
            let Some(entry) = j.load()? else {
                j.remove()?;
                continue;
            };
            let mut run = runner(&conf, args, &entry.netns);
            run.container_id = cid.clone();
            run.args_raw = entry.cni_args.clone();
            let e = delete_in_reverse(&run, &entry.attachments);
            if !e.is_empty() {
                errs.extend(e);
                continue;
            }
            let pod = entry
                .pod
                .filter(|p| !live_pods.contains(&(p.namespace.clone(), p.name.clone())));
            forget(&conf, j, pod.as_ref())?;
        }
        // Every known network's plugins get the attachments still valid for them.
        let mut networks: BTreeMap<String, (Attachment, Vec<(String, String)>)> = BTreeMap::new();
        for (cid, ifname) in journal::list(&conf.cache_dir)? {
            let j = Journal::open(&conf.cache_dir, &cid, &ifname)?;
            if let Some(entry) = j.load()? {
                for a in entry.attachments {
                    let slot = networks
                        .entry(a.network.clone())
                        .or_insert_with(|| (a.clone(), Vec::new()));
                    slot.1.push((cid.clone(), a.ifname.clone()));
                }
            }
        }
        if let Ok(mut src) = make_source(&conf)
            && let Ok(plan) = plan::build(&conf, "eth0", &Map::new(), None, src.as_mut())
        {
            for a in plan {
                networks
                    .entry(a.network.clone())
                    .or_insert_with(|| (a, Vec::new()));
            }
        }
        let run = runner(&conf, args, "");
        for (name, (a, valid)) in networks {
            if let Err(e) = run.gc(&a, &valid) {
                errs.push(format!("network {name}: {e}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(format!("GC: {}", errs.join("; "))))
        }
    }
}

/// ADD, recorded in `rec`.
fn add(args: &CmdArgs, rec: &mut spool::Recorder) -> Result<CniResult> {
    // Configuration; the cluster network must be ready.
    let conf = load_conf(args)?;
    rec.configure(&conf);
    check_ready(&conf, code::TRY_AGAIN_LATER)?;
    // The pod and its networks.
    let mut src = make_source(&conf)?;
    let pod = resolve_pod(args, src.as_mut())?;
    rec.pod_uid(pod.as_ref().and_then(|(_, uid)| uid.as_deref()));
    let plan = plan::build(
        &conf,
        &args.env.ifname,
        &runtime_config(args),
        pod.as_ref().map(|(p, _)| p),
        src.as_mut(),
    )?;
    // ADD's configuration checks for every network before anything is journaled or
    // attached (the admission webhook runs the same ones).
    let run = runner(&conf, args, &args.env.netns);
    for a in &plan {
        run.check_config(a)
            .map_err(|e| e.context(format!("network {} ({})", a.network, a.ifname)))?;
    }
    let _held = hold_namespaces(&args.env.netns);
    // The plan goes to the journal before anything is attached.
    let mut journal = Journal::open(&conf.cache_dir, &args.env.container_id, &args.env.ifname)?;
    delete_leftover(&conf, args, &journal)?;
    let pod = pod.map(|(p, uid)| PodRef {
        namespace: p.namespace,
        name: p.name,
        uid,
    });
    let mut entry = Entry::planned(&args.env, pod, plan);
    journal.store(&entry)?;
    // Attach in order, each result durable before the next attachment starts; the last
    // one is journaled together with the default-route adjustments, before
    // network-status and the return. Any failure rolls back the attempted attachments.
    let mut attempted = 0;
    let n = entry.attachments.len();
    let attached = (|| -> Result<()> {
        for i in 0..n {
            attempted = i + 1;
            let a = &entry.attachments[i];
            let t = Instant::now();
            let r = run
                .add(a)
                .map_err(|e| e.context(format!("network {} ({})", a.network, a.ifname)));
            rec.attachment(a, t.elapsed(), r.as_ref().map(Some));
            entry.attachments[i].record(&r?);
            if i + 1 < n {
                journal.store(&entry)?;
            }
        }
        default_route::apply(&mut entry, &args.env.netns)?;
        journal.store(&entry)?;
        network_status::publish(src.as_mut(), &entry)
    })();
    if let Err(e) = attached {
        return Err(roll_back(&run, &entry, attempted, journal, e));
    }
    // The runtime gets the cluster network's result.
    entry
        .attachments
        .iter()
        .find(|a| a.is_cluster)
        .and_then(Attachment::cni_result)
        .ok_or_else(|| Error::internal("cluster network produced no result"))
}

/// DEL, recorded in `rec`.
fn del(args: &CmdArgs, rec: &mut spool::Recorder) -> Result<()> {
    let conf = load_conf(args)?;
    rec.configure(&conf);
    kick_handoff(&conf);
    let journal = Journal::open(&conf.cache_dir, &args.env.container_id, &args.env.ifname)?;
    // What to delete: the journal's attachments, else what resolves now.
    let (attachments, pod, journaled) = match journal.load()? {
        Some(entry) => (entry.attachments, entry.pod, true),
        None => {
            let (attachments, pod) = resolve_without_journal(&conf, args);
            (attachments, pod, false)
        }
    };
    rec.pod_uid(pod.as_ref().and_then(|p| p.uid.as_deref()));
    let _held = hold_namespaces(&args.env.netns);
    let errs = delete_recorded(
        &runner(&conf, args, &args.env.netns),
        &attachments,
        Some(rec),
    );
    if !errs.is_empty() {
        return Err(Error::internal(format!(
            "DEL failed for {}",
            errs.join("; ")
        )));
    }
    forget(&conf, journal, pod.as_ref())?;
    // Only a journaled pod's network-status is cleared in the API server (its UID is
    // known).
    if journaled && let Some(p) = &pod {
        network_status::clear_api(&conf, &args.env.netns, p);
    }
    Ok(())
}

/// CHECK, recorded in `rec`.
fn check(args: &CmdArgs, rec: &mut spool::Recorder) -> Result<()> {
    let conf = load_conf(args)?;
    rec.configure(&conf);
    let journal = Journal::open(&conf.cache_dir, &args.env.container_id, &args.env.ifname)?;
    let entry = journal.load()?.ok_or_else(|| {
        Error::internal(format!(
            "CHECK: no journal entry for container {} interface {}",
            args.env.container_id, args.env.ifname
        ))
    })?;
    let run = runner(&conf, args, &args.env.netns);
    for a in &entry.attachments {
        let r = a.cni_result().ok_or_else(|| {
            Error::internal(format!(
                "CHECK: network {} ({}) was never added",
                a.network, a.ifname
            ))
        })?;
        run.check(a, &r)
            .map_err(|e| e.context(format!("network {} ({})", a.network, a.ifname)))?;
    }
    Ok(())
}
