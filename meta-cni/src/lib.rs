//! The meta plugin: pod annotations + NetworkAttachmentDefinitions → eth0..netN, a merged
//! result for the runtime, network-status on the pod, a durable journal and rollback.
//!
//! ADD: configuration → pod annotations (from the runtime's
//! `runtimeConfig."io.kubernetes.cri.pod-annotations"`, else a GET of the pod) → the plan
//! ([`plan`]) → the plan written to the journal ([`journal`]) → each attachment run
//! ([`exec`]) and its result recorded as it lands → on failure, everything attached is
//! deleted in reverse and one error names the network and the cause → default-route
//! adjustment → network-status → the cluster network's result.
//!
//! DEL works from the journal alone; CHECK runs over every attachment; STATUS reports
//! readiness; GC removes journal entries (and their attachments) not listed as valid and
//! lets every known network's plugins collect their own garbage.

pub mod config;
pub mod exec;
pub mod journal;
pub mod plan;
pub mod source;

use cni_core::{CmdArgs, CniResult, Error, Plugin, Result, Route, Version, code};
use config::MetaConf;
use exec::Runner;
use journal::{Entry, Journal, PodRef, State};
use plan::PodCtx;
use serde_json::{Map, Value};
use source::{KubeSource, LocalSource, NoSource, Source};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// The meta plugin.
#[derive(Default)]
pub struct MetaPlugin;

fn make_source(conf: &MetaConf) -> Result<Box<dyn Source>> {
    if let Some(kc) = &conf.kubeconfig {
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

fn result_of(a: &journal::Attachment) -> Option<CniResult> {
    a.result
        .as_ref()
        .and_then(|v| CniResult::from_value(v).ok())
}

/// The pod's annotations as the runtime passed them (values must be strings).
fn runtime_annotations(args: &CmdArgs) -> Result<Option<BTreeMap<String, String>>> {
    Ok(args.conf.pod_annotations()?.map(|m| {
        m.into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
            .collect()
    }))
}

/// Network-status entries for all added attachments.
fn network_status(entry: &Entry) -> Vec<meta_crd::NetworkStatus> {
    let has_default_route = entry
        .attachments
        .iter()
        .any(|a| !a.default_route.is_empty());
    let mut out = Vec::new();
    for a in &entry.attachments {
        let Some(r) = result_of(a) else { continue };
        let summary = meta_crd::ResultSummary {
            interfaces: r
                .interfaces
                .iter()
                .map(|i| meta_crd::ResultInterface {
                    name: i.name.clone(),
                    mac: i.mac.clone(),
                    mtu: i.mtu.unwrap_or(0),
                    sandbox: i.sandbox.clone(),
                })
                .collect(),
            ips: r
                .ips
                .iter()
                .map(|ip| meta_crd::ResultIp {
                    address: ip.address.addr(),
                    interface: ip.interface,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: r
                .routes
                .iter()
                .map(|rt| meta_crd::ResultRoute {
                    dst: rt.dst,
                    gw: rt.gw,
                })
                .collect(),
            dns: meta_crd::Dns {
                nameservers: r.dns.nameservers.clone(),
                domain: r.dns.domain.clone(),
                search: r.dns.search.clone(),
                options: r.dns.options.clone(),
            },
        };
        let default = if has_default_route {
            !a.default_route.is_empty()
        } else {
            a.is_cluster
        };
        let mut statuses = meta_crd::network_statuses(&summary, &a.network, default, None);
        // A result naming no pod interface (a legacy 0.1.0/0.2.0 plugin's has none): the
        // interface is the one the plugin was asked to configure.
        if !summary.interfaces.iter().any(|i| !i.sandbox.is_empty())
            && let [only] = statuses.as_mut_slice()
        {
            only.interface = a.ifname.clone();
        }
        out.extend(statuses);
    }
    out
}

/// `default-route`: the chosen attachment owns the default route of each family its
/// gateways are in; other attachments' default routes of those families go, in the pod
/// and in their results (as Multus does). Returns whether anything changed (the journal
/// then needs the adjusted results).
fn apply_default_route(entry: &mut Entry, netns: &str) -> Result<bool> {
    let Some(d) = entry
        .attachments
        .iter()
        .position(|a| !a.default_route.is_empty())
    else {
        return Ok(false);
    };
    let gws = entry.attachments[d].default_route.clone();
    let ifname = entry.attachments[d].ifname.clone();
    let ns = meta_netlink::Netns::open(netns)
        .map_err(|e| Error::internal(format!("default-route: open netns: {e}")))?;
    let mut nl = meta_netlink::Netlink::open(Some(&ns))
        .map_err(|e| Error::internal(format!("default-route: netlink: {e}")))?;
    use meta_netlink::NetlinkOps;
    let link = nl
        .link_by_name(&ifname)
        .map_err(|e| Error::internal(format!("default-route: {e}")))?
        .ok_or_else(|| Error::internal(format!("default-route: {ifname} not found in the pod")))?;
    for v6 in [false, true] {
        let fam: Vec<_> = gws.iter().filter(|g| g.is_ipv6() == v6).collect();
        let Some(gw) = fam.first() else { continue };
        let any: ipnet::IpNet = if v6 { "::/0" } else { "0.0.0.0/0" }
            .parse()
            .map_err(|_| Error::internal("literal"))?;
        for r in nl
            .routes(v6, None)
            .map_err(|e| Error::internal(format!("default-route: {e}")))?
        {
            if r.dst.prefix_len() == 0 {
                let spec = meta_netlink::RouteSpec {
                    dst: r.dst,
                    gw: r.gw,
                    oif: r.oif,
                    ..Default::default()
                };
                if let Err(e) = nl.route_del(&spec)
                    && !e.is_not_found()
                {
                    return Err(Error::internal(format!(
                        "default-route: delete {}: {e}",
                        r.dst
                    )));
                }
            }
        }
        let spec = meta_netlink::RouteSpec {
            dst: any,
            gw: Some(**gw),
            oif: Some(link.index),
            ..Default::default()
        };
        nl.route_replace(&spec)
            .map_err(|e| Error::internal(format!("default-route via {gw} dev {ifname}: {e}")))?;
        for (i, a) in entry.attachments.iter_mut().enumerate() {
            let Some(mut r) = result_of(a) else { continue };
            r.routes
                .retain(|rt| !(rt.dst.prefix_len() == 0 && rt.dst.addr().is_ipv6() == v6));
            if i == d {
                r.routes.push(Route::new(any, Some(**gw)));
            }
            a.result = Some(r.to_value(Version::V1_1_0));
        }
    }
    Ok(true)
}

impl MetaPlugin {
    /// Deletes attachments `0..=upto` in reverse; returns the failures.
    fn delete_all(run: &Runner, entry: &Entry, upto: usize) -> Vec<String> {
        let mut errs = Vec::new();
        for a in entry.attachments[..=upto.min(entry.attachments.len().saturating_sub(1))]
            .iter()
            .rev()
        {
            if let Err(e) = run.del(a, result_of(a).as_ref()) {
                errs.push(format!("network {} ({}): {e}", a.network, a.ifname));
            }
        }
        errs
    }

    fn pod_ctx(
        &self,
        args: &CmdArgs,
        src: &mut dyn Source,
    ) -> Result<Option<(PodCtx, Option<String>)>> {
        let Some(p) = args.env.args.k8s_pod() else {
            return Ok(None);
        };
        let (annotations, uid) = match runtime_annotations(args)? {
            Some(a) => (a, p.uid.clone()),
            None if src.has_pods() => {
                let info = src.pod(&p.namespace, &p.name)?.ok_or_else(|| {
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

    /// Local mode keeps network-status in the cache dir; DEL removes it.
    fn clear_local_status(conf: &MetaConf, ns: &str, name: &str) -> Result<()> {
        if let Some(dir) = &conf.local_nad_dir {
            LocalSource::new(dir.clone(), conf.cache_dir.join("status"))
                .clear_network_status(ns, name)?;
            let _ = std::fs::remove_dir(conf.cache_dir.join("status"));
        }
        Ok(())
    }

    /// Kubernetes mode: the pod's network-status becomes `[]` once its attachments are
    /// deleted, as Multus does on a DEL that still has the netns (the first of a sandbox's
    /// DELs), so a pod whose sandbox is gone (a finished Job, a sandbox being recreated)
    /// shows no stale addresses. Best effort within `apiTimeoutSeconds`: the attachments
    /// are already gone and the journal with them, so a failure here (pod deleted, API
    /// server down) is logged and never fails the DEL. The UID precondition keeps a
    /// recreated pod of the same name untouched.
    fn clear_api_status(conf: &MetaConf, netns: &str, pod: &PodRef) {
        if conf.kubeconfig.is_none() || netns.is_empty() || !std::path::Path::new(netns).exists() {
            return;
        }
        let res = make_source(conf).and_then(|mut src| {
            src.set_network_status(&pod.namespace, &pod.name, pod.uid.as_deref(), "[]")
        });
        match res {
            Ok(()) => tracing::debug!("network-status of {}/{} cleared", pod.namespace, pod.name),
            Err(e) => tracing::warn!(
                "DEL: clearing network-status of pod {}/{}: {e} (ignored: the attachments are deleted)",
                pod.namespace,
                pod.name
            ),
        }
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
        let conf = MetaConf::load(args)?;
        Self::check_ready(&conf, code::TRY_AGAIN_LATER)?;
        let mut src = make_source(&conf)?;
        let pod = self.pod_ctx(args, src.as_mut())?;
        let rc: Map<String, Value> = args
            .conf
            .get("runtimeConfig")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let plan = plan::build(
            &conf,
            &args.env.ifname,
            &rc,
            pod.as_ref().map(|p| &p.0),
            src.as_mut(),
        )?;

        let journal = Journal::open(&conf.cache_dir, &args.env.container_id, &args.env.ifname)?;
        let run = runner(&conf, args, &args.env.netns);
        if let Some(old) = journal.load()? {
            // A previous ADD of this attachment was never deleted: clean it first.
            tracing::warn!(
                "ADD over an existing journal entry for {}: deleting the old attachments first",
                args.env.container_id
            );
            let errs = Self::delete_all(
                &runner(&conf, args, &old.netns),
                &old,
                old.attachments.len(),
            );
            if !errs.is_empty() {
                return Err(Error::try_again(format!(
                    "cleaning a previous ADD failed: {}",
                    errs.join("; ")
                )));
            }
        }
        let mut entry = Entry {
            version: 1,
            container_id: args.env.container_id.clone(),
            ifname: args.env.ifname.clone(),
            netns: args.env.netns.clone(),
            cni_args: args.env.args_raw.clone(),
            pod: pod.as_ref().map(|(p, uid)| PodRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: uid.clone(),
            }),
            attachments: plan,
        };
        journal.store(&entry)?;

        let fail = |entry: &Entry, upto: usize, err: Error, journal: Journal| -> Error {
            let errs = Self::delete_all(&run, entry, upto);
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
        };
        for i in 0..entry.attachments.len() {
            match run.add(&entry.attachments[i]) {
                Ok(r) => {
                    entry.attachments[i].state = State::Added;
                    entry.attachments[i].result = Some(r.to_value(Version::V1_1_0));
                    if let Err(e) = journal.store(&entry) {
                        return Err(fail(&entry, i, e, journal));
                    }
                }
                Err(e) => {
                    let a = &entry.attachments[i];
                    let e = e.context(format!("network {} ({})", a.network, a.ifname));
                    return Err(fail(&entry, i, e, journal));
                }
            }
        }
        let last = entry.attachments.len() - 1;
        match apply_default_route(&mut entry, &args.env.netns) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = journal.store(&entry) {
                    return Err(fail(&entry, last, e, journal));
                }
            }
            Err(e) => return Err(fail(&entry, last, e, journal)),
        }
        if let Some(p) = &entry.pod {
            let statuses = network_status(&entry);
            let value = meta_crd::network_status_annotation(&statuses)
                .map_err(|e| Error::internal(e.to_string()))?;
            if let Err(e) = src.set_network_status(&p.namespace, &p.name, p.uid.as_deref(), &value)
            {
                let e = e.context("network-status");
                return Err(fail(&entry, last, e, journal));
            }
        }
        let cluster = entry
            .attachments
            .iter()
            .find(|a| a.is_cluster)
            .and_then(result_of);
        cluster.ok_or_else(|| Error::internal("cluster network produced no result"))
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let conf = MetaConf::load(args)?;
        let journal = Journal::open(&conf.cache_dir, &args.env.container_id, &args.env.ifname)?;
        let run = runner(&conf, args, &args.env.netns);
        match journal.load()? {
            Some(entry) => {
                let errs = Self::delete_all(&run, &entry, entry.attachments.len());
                if !errs.is_empty() {
                    return Err(Error::internal(format!(
                        "DEL failed for {}",
                        errs.join("; ")
                    )));
                }
                if let Some(p) = &entry.pod {
                    Self::clear_local_status(&conf, &p.namespace, &p.name)?;
                }
                journal.remove()?;
                if let Some(p) = &entry.pod {
                    Self::clear_api_status(&conf, &args.env.netns, p);
                }
                Ok(())
            }
            None => {
                // No journal (never added, already deleted, or the cache was lost): do what
                // can be resolved without failing the pod's deletion.
                let mut src: Box<dyn Source> = match make_source(&conf) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("DEL without journal: {e}");
                        Box::new(NoSource)
                    }
                };
                let pod = match self.pod_ctx(args, src.as_mut()) {
                    Ok(p) => p.map(|(p, _)| p),
                    Err(e) => {
                        tracing::warn!(
                            "DEL without journal: pod lookup: {e}; deleting the cluster network only"
                        );
                        None
                    }
                };
                let rc = Map::new();
                let plan = plan::build(&conf, &args.env.ifname, &rc, pod.as_ref(), src.as_mut())
                    .or_else(|e| {
                        tracing::warn!(
                            "DEL without journal: {e}; deleting the cluster network only"
                        );
                        plan::build(&conf, &args.env.ifname, &rc, None, &mut NoSource)
                    });
                match plan {
                    Ok(plan) => {
                        let entry = Entry {
                            version: 1,
                            container_id: args.env.container_id.clone(),
                            ifname: args.env.ifname.clone(),
                            netns: args.env.netns.clone(),
                            cni_args: args.env.args_raw.clone(),
                            pod: None,
                            attachments: plan,
                        };
                        let errs = Self::delete_all(&run, &entry, entry.attachments.len());
                        if !errs.is_empty() {
                            return Err(Error::internal(format!(
                                "DEL failed for {}",
                                errs.join("; ")
                            )));
                        }
                        if let Some(p) = &pod {
                            Self::clear_local_status(&conf, &p.namespace, &p.name)?;
                        }
                    }
                    Err(e) => tracing::warn!("DEL without journal: nothing resolvable: {e}"),
                }
                journal.remove()
            }
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let conf = MetaConf::load(args)?;
        let journal = Journal::open(&conf.cache_dir, &args.env.container_id, &args.env.ifname)?;
        let entry = journal.load()?.ok_or_else(|| {
            Error::internal(format!(
                "CHECK: no journal entry for container {} interface {}",
                args.env.container_id, args.env.ifname
            ))
        })?;
        let run = runner(&conf, args, &args.env.netns);
        for a in &entry.attachments {
            let r = result_of(a).ok_or_else(|| {
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

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let conf = MetaConf::load(args)?;
        Self::check_ready(&conf, code::NOT_AVAILABLE)?;
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
        let conf = MetaConf::load(args)?;
        let valid: HashSet<(String, String)> = args
            .conf
            .gc_valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        let mut errs = Vec::new();
        // Journal entries the runtime no longer knows: delete their attachments.
        for (cid, ifname) in journal::list(&conf.cache_dir)? {
            if valid.contains(&(cid.clone(), ifname.clone())) {
                continue;
            }
            let j = Journal::open(&conf.cache_dir, &cid, &ifname)?;
            if let Some(entry) = j.load()? {
                let mut run = runner(&conf, args, &entry.netns);
                run.container_id = cid.clone();
                run.args_raw = entry.cni_args.clone();
                let e = Self::delete_all(&run, &entry, entry.attachments.len());
                if e.is_empty() {
                    j.remove()?;
                } else {
                    errs.extend(e);
                }
            }
        }
        // Every known network's plugins get the attachments still valid for them.
        let mut networks: BTreeMap<String, (journal::Attachment, Vec<(String, String)>)> =
            BTreeMap::new();
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
