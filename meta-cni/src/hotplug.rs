//! Hot-plug: a running pod's `k8s.v1.cni.cncf.io/networks` annotation changed, so its
//! attachments follow: the node agent calls [`reconcile`] with the pod's annotations now,
//! and the pod's journal entry is brought in line under the entry's lock, with the same
//! in-process delegates as ADD and DEL. A later DEL of the pod works from the same entry,
//! so it removes hot-plugged interfaces too.
//!
//! [`diff`] (pure) decides what changes: the entry's attachments other than the cluster
//! network and the configured `defaultNetworks` are matched with the annotation's
//! elements — an element naming an interface by that interface, one without by its
//! network — an attachment no element matches is detached, an element without a match is
//! attached (without an interface name, on the first `netN` the pod does not use), and a
//! match whose parameters (`ips`, `mac`, other capability arguments, `cni-args`,
//! `default-route`, or the network for a named interface) differ is detached and attached
//! again. A NAD edited since the pod's ADD is no change: pods keep what they were given.
//!
//! [`reconcile`] applies it. Each change is all or nothing: an attach is journaled as
//! `Planned` before its delegates run and recorded when they return; if they fail it is
//! deleted again and leaves the entry; a detach leaves the entry only once its delegates
//! deleted it (else it stays, for the pod's DEL to retry); a changed element whose new
//! attach fails gets its previous attachment back. Before the diff, attachments left
//! `Planned` by a killed hot-plug are deleted, so a reconcile after a crash converges. An
//! entry whose cluster network is not added yet belongs to an ADD that never finished
//! (the runtime's DEL removes it) and is left alone; an ADD in flight holds the entry's
//! lock, so a reconcile waits for it and never interleaves.

use crate::config::MetaConf;
use crate::exec::Runner;
use crate::journal::{self, Attachment, Entry, Journal, State};
use crate::plan::{self, PodCtx};
use crate::source::Source;
use cni_core::{Error, Result};
use meta_crd::NetworkSelectionElement;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// What the annotation asks for in one element, as [`diff`] compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// `namespace/name` of the NAD.
    pub network: String,
    /// The interface the element names, if any.
    pub ifname: Option<String>,
    /// Its capability arguments (`ips`, `mac`, ...).
    pub cap_args: Map<String, Value>,
    /// Its `cni-args`.
    pub cni_args: Option<Map<String, Value>>,
    /// Its `default-route`.
    pub default_route: Vec<std::net::IpAddr>,
}

impl Wanted {
    /// The element `el` as compared.
    pub fn of(el: &NetworkSelectionElement) -> Result<Wanted> {
        Ok(Wanted {
            network: el.namespaced_name(),
            ifname: el.interface.clone(),
            cap_args: meta_crd::pod::capability_args(el)
                .map_err(|e| Error::internal(e.to_string()))?,
            cni_args: el.cni_args.clone(),
            default_route: el.default_route.clone(),
        })
    }

    fn same_params(&self, a: &Attachment) -> bool {
        self.network == a.network
            && self.cap_args == a.cap_args
            && self.cni_args == a.cni_args
            && self.default_route == a.default_route
    }
}

/// One change to a pod's attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Detach the attachment on this interface.
    Detach {
        /// Its interface.
        ifname: String,
    },
    /// Attach element `element` of the annotation on `ifname`.
    Attach {
        /// Index in the annotation.
        element: usize,
        /// The interface it gets.
        ifname: String,
    },
    /// Detach the attachment on `ifname`, then attach element `element` there.
    Replace {
        /// Index in the annotation.
        element: usize,
        /// The interface.
        ifname: String,
    },
}

/// The first `netN` (N ≥ 1) not in `used`.
pub fn next_free(used: &HashSet<String>) -> String {
    (1..)
        .map(meta_crd::pod::default_ifname)
        .find(|n| !used.contains(n))
        .unwrap_or_default()
}

/// The changes that turn `current` (the entry's attachments; those at the indices in
/// `fixed` — the cluster network, `defaultNetworks` — are never touched) into what
/// `wanted` asks for. Detaches and replacements come first (they free names), then
/// attaches, each group in order.
pub fn diff(current: &[Attachment], fixed: &HashSet<usize>, wanted: &[Wanted]) -> Vec<Change> {
    let managed: Vec<usize> = (0..current.len()).filter(|i| !fixed.contains(i)).collect();
    let mut used_by: Vec<Option<usize>> = vec![None; wanted.len()];
    let mut taken = HashSet::new();
    // Elements naming their interface match the attachment on it.
    for (w, want) in wanted.iter().enumerate() {
        let Some(n) = &want.ifname else { continue };
        if let Some(&i) = managed
            .iter()
            .find(|&&i| current[i].ifname == *n && !taken.contains(&i))
        {
            taken.insert(i);
            used_by[w] = Some(i);
        }
    }
    // The others match an attachment of their network: one with the same parameters
    // first, else any.
    for (w, want) in wanted.iter().enumerate() {
        if want.ifname.is_some() {
            continue;
        }
        let free = |i: &&usize| !taken.contains(*i) && current[**i].network == want.network;
        let pick = managed
            .iter()
            .filter(free)
            .find(|&&i| want.same_params(&current[i]))
            .or_else(|| managed.iter().find(free))
            .copied();
        if let Some(i) = pick {
            taken.insert(i);
            used_by[w] = Some(i);
        }
    }
    let mut out = Vec::new();
    for &i in &managed {
        if !taken.contains(&i) {
            out.push(Change::Detach {
                ifname: current[i].ifname.clone(),
            });
        }
    }
    for (w, want) in wanted.iter().enumerate() {
        if let Some(i) = used_by[w]
            && !want.same_params(&current[i])
        {
            out.push(Change::Replace {
                element: w,
                ifname: current[i].ifname.clone(),
            });
        }
    }
    // Names in use: every attachment that stays, and every name an element asks for.
    let mut used: HashSet<String> = current
        .iter()
        .enumerate()
        .filter(|(i, _)| fixed.contains(i) || taken.contains(i))
        .map(|(_, a)| a.ifname.clone())
        .collect();
    used.extend(wanted.iter().filter_map(|w| w.ifname.clone()));
    for (w, want) in wanted.iter().enumerate() {
        if used_by[w].is_some() {
            continue;
        }
        let ifname = want.ifname.clone().unwrap_or_else(|| next_free(&used));
        used.insert(ifname.clone());
        out.push(Change::Attach { element: w, ifname });
    }
    out
}

/// The indices of `entry`'s attachments hot-plug never touches: the cluster network and
/// the `defaultNetworks` the pod got at ADD (`net1..netK` of those networks, in order).
pub fn fixed_attachments(conf: &MetaConf, entry: &Entry) -> HashSet<usize> {
    let mut fixed: HashSet<usize> = entry
        .attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_cluster)
        .map(|(i, _)| i)
        .collect();
    let pod_ns = entry.pod.as_ref().map(|p| p.namespace.as_str());
    if pod_ns.is_some_and(|ns| !conf.is_system_namespace(ns)) {
        for (k, dn) in conf.default_networks.iter().enumerate() {
            let network = match dn.split_once('/') {
                Some((ns, n)) => format!("{ns}/{n}"),
                None => format!("{}/{dn}", conf.multus_namespace),
            };
            let ifname = meta_crd::pod::default_ifname(k + 1);
            if let Some(i) = entry
                .attachments
                .iter()
                .position(|a| a.network == network && a.ifname == ifname)
            {
                fixed.insert(i);
            }
        }
    }
    fixed
}

/// What a [`reconcile`] did to one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The pod's container ID (its journal entry's).
    pub container_id: String,
    /// `network (ifname)` of each attachment made.
    pub attached: Vec<String>,
    /// `network (ifname)` of each attachment removed (killed hot-plugs' included).
    pub detached: Vec<String>,
    /// Each change that failed and was rolled back, with the error.
    pub failures: Vec<String>,
    /// The pod's network-status annotation value, from the entry as it now is.
    pub network_status: String,
}

impl Outcome {
    /// Whether the entry changed.
    pub fn changed(&self) -> bool {
        !self.attached.is_empty() || !self.detached.is_empty()
    }
}

fn label(a: &Attachment) -> String {
    format!("{} ({})", a.network, a.ifname)
}

/// Brings the journal entry of pod `pod` (UID `uid`) in line with its annotations (see
/// the module docs). `Ok(None)`: there is nothing of the pod's to change — no entry (not
/// added yet, or added on another node), or its ADD never finished. `Err`: nothing was
/// changed (the annotation or the entry could not be read, or the plan is invalid); a
/// change that failed is in [`Outcome::failures`], rolled back.
pub fn reconcile(
    conf: &MetaConf,
    pod: &PodCtx,
    uid: Option<&str>,
    src: &mut dyn Source,
) -> Result<Option<Outcome>> {
    let Some((cid, ifname)) = journal::find_pod(&conf.cache_dir, &pod.namespace, &pod.name, uid)?
    else {
        return Ok(None);
    };
    // Under the lock: waits for an ADD or DEL of the pod in flight.
    let mut j = Journal::open(&conf.cache_dir, &cid, &ifname)?;
    let Some(mut entry) = j.load()? else {
        // A DEL removed the entry meanwhile: take the lock file our open recreated with it.
        j.remove()?;
        return Ok(None);
    };
    let same_pod = entry.pod.as_ref().is_some_and(|p| {
        p.namespace == pod.namespace
            && p.name == pod.name
            && (uid.is_none() || p.uid.is_none() || p.uid.as_deref() == uid)
    });
    let cluster_added = entry
        .attachments
        .iter()
        .any(|a| a.is_cluster && a.state == State::Added);
    if !same_pod || !cluster_added {
        return Ok(None);
    }
    let run = Runner {
        container_id: entry.container_id.clone(),
        netns: entry.netns.clone(),
        args_raw: entry.cni_args.clone(),
        bin_dirs: conf.bin_dirs(&[]),
        force_exec: conf.force_exec.clone(),
    };
    let _held = crate::hold_namespaces(&entry.netns);
    let mut out = Outcome {
        container_id: cid.clone(),
        ..Default::default()
    };
    // A killed hot-plug's attach: delete it.
    let stale: Vec<Attachment> = entry
        .attachments
        .iter()
        .filter(|a| !a.is_cluster && a.state == State::Planned)
        .cloned()
        .collect();
    for a in stale {
        detach(&run, &mut j, &mut entry, &a.ifname, &mut out)?;
    }
    // What the annotation asks for.
    let sel = match pod.annotations.get(meta_crd::NETWORKS_ANNOTATION) {
        Some(v) => {
            meta_crd::parse_network_selection(v, &pod.namespace)
                .map_err(|e| Error::config(format!("pod {}/{}: {e}", pod.namespace, pod.name)))?
                .networks
        }
        None => Vec::new(),
    };
    let wanted = sel.iter().map(Wanted::of).collect::<Result<Vec<_>>>()?;
    let fixed = fixed_attachments(conf, &entry);
    let changes = diff(&entry.attachments, &fixed, &wanted);
    // The interface rules over the result, before anything changes.
    check_result(pod, &entry, &changes, &wanted)?;
    for c in changes {
        match c {
            Change::Detach { ifname } => {
                if let Err(e) = detach(&run, &mut j, &mut entry, &ifname, &mut out) {
                    out.failures.push(format!("detach {ifname}: {e}"));
                }
            }
            Change::Attach { element, ifname } => {
                let el = &sel[element];
                if let Err(e) = attach(
                    conf, &run, &mut j, &mut entry, pod, element, el, &ifname, src,
                )
                .map(|a| out.attached.push(a))
                {
                    out.failures
                        .push(format!("attach {} ({ifname}): {e}", el.namespaced_name()));
                }
            }
            Change::Replace { element, ifname } => {
                let el = &sel[element];
                let Some(old) = entry
                    .attachments
                    .iter()
                    .find(|a| a.ifname == ifname)
                    .cloned()
                else {
                    continue;
                };
                if let Err(e) = detach(&run, &mut j, &mut entry, &ifname, &mut out) {
                    out.failures
                        .push(format!("change {}: detach: {e}", label(&old)));
                    continue;
                }
                match attach(
                    conf, &run, &mut j, &mut entry, pod, element, el, &ifname, src,
                ) {
                    Ok(a) => out.attached.push(a),
                    Err(e) => {
                        // Rolled back: the previous attachment comes back.
                        let mut back = old.clone();
                        back.state = State::Planned;
                        back.result = None;
                        let restored = add_one(&run, &mut j, &mut entry, back);
                        let how = match restored {
                            Ok(()) => {
                                out.detached.pop();
                                "the previous attachment was restored".to_string()
                            }
                            Err(e2) => {
                                format!("restoring the previous attachment failed too: {e2}")
                            }
                        };
                        out.failures.push(format!(
                            "change {} to {}: {e}; {how}",
                            label(&old),
                            el.namespaced_name()
                        ));
                    }
                }
            }
        }
    }
    out.network_status =
        meta_crd::network_status_annotation(&crate::network_status::network_status(&entry))
            .map_err(|e| Error::internal(e.to_string()))?;
    Ok(Some(out))
}

/// The pod's interfaces after `changes`, checked by the rules ADD checks (unique names, one
/// `default-route`); a hot-plugged `default-route` is refused (the pod's routes would
/// change under its running processes, and a rollback could not restore them).
fn check_result(pod: &PodCtx, entry: &Entry, changes: &[Change], wanted: &[Wanted]) -> Result<()> {
    let mut after: Vec<(String, String, bool)> = entry
        .attachments
        .iter()
        .map(|a| {
            (
                a.ifname.clone(),
                a.network.clone(),
                !a.default_route.is_empty(),
            )
        })
        .collect();
    for c in changes {
        match c {
            Change::Detach { ifname } | Change::Replace { ifname, .. } => {
                after.retain(|(n, _, _)| n != ifname)
            }
            Change::Attach { .. } => {}
        }
    }
    for c in changes {
        if let Change::Attach { element, ifname } | Change::Replace { element, ifname } = c {
            let w = &wanted[*element];
            if !w.default_route.is_empty() {
                return Err(Error::config(format!(
                    "pod {}/{}: networks[{element}] ({}) asks for default-route, which hot-plug does not change; recreate the pod",
                    pod.namespace, pod.name, w.network
                )));
            }
            after.push((ifname.clone(), w.network.clone(), false));
        }
    }
    let planned: Vec<_> = after
        .iter()
        .map(
            |(ifname, network, default_route)| meta_crd::pod::PlannedInterface {
                ifname,
                network,
                default_route: *default_route,
            },
        )
        .collect();
    meta_crd::pod::check_interfaces((&pod.namespace, &pod.name), &planned).map_err(Error::config)
}

/// Deletes the attachment on `ifname` and drops it from the entry (journaled); on a
/// failure it stays, for the pod's DEL.
fn detach(
    run: &Runner,
    j: &mut Journal,
    entry: &mut Entry,
    ifname: &str,
    out: &mut Outcome,
) -> Result<()> {
    let Some(a) = entry
        .attachments
        .iter()
        .find(|a| a.ifname == ifname)
        .cloned()
    else {
        return Ok(());
    };
    let errs = crate::delete_in_reverse(run, std::slice::from_ref(&a));
    if !errs.is_empty() {
        return Err(Error::internal(errs.join("; ")));
    }
    entry.attachments.retain(|x| x.ifname != ifname);
    j.store(entry)?;
    out.detached.push(label(&a));
    Ok(())
}

/// Resolves element `el` for `ifname` and attaches it ([`add_one`]).
#[allow(clippy::too_many_arguments)]
fn attach(
    conf: &MetaConf,
    run: &Runner,
    j: &mut Journal,
    entry: &mut Entry,
    pod: &PodCtx,
    element: usize,
    el: &NetworkSelectionElement,
    ifname: &str,
    src: &mut dyn Source,
) -> Result<String> {
    let a = plan::element_attachment(conf, pod, element, el, ifname.to_string(), src)?;
    run.check_config(&a)?;
    let l = label(&a);
    add_one(run, j, entry, a)?;
    Ok(l)
}

/// Journals `a` as planned, runs its ADD, records the result; on a failure deletes it and
/// drops it from the entry again.
fn add_one(run: &Runner, j: &mut Journal, entry: &mut Entry, a: Attachment) -> Result<()> {
    let ifname = a.ifname.clone();
    entry.attachments.push(a);
    j.store(entry)?;
    let i = entry.attachments.len() - 1;
    let res = run.add(&entry.attachments[i]).and_then(|r| {
        entry.attachments[i].record(&r);
        j.store(entry)
    });
    if let Err(e) = res {
        let errs = crate::delete_in_reverse(run, std::slice::from_ref(&entry.attachments[i]));
        if !errs.is_empty() {
            // Kept (planned) for the next reconcile or the pod's DEL.
            return Err(e.context(format!("rollback incomplete: {}", errs.join("; "))));
        }
        entry.attachments.retain(|x| x.ifname != ifname);
        j.store(entry)?;
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn att(network: &str, ifname: &str, cluster: bool) -> Attachment {
        Attachment {
            network: network.into(),
            ifname: ifname.into(),
            conf: json!({}),
            cap_args: Map::new(),
            cni_args: None,
            default_route: vec![],
            is_cluster: cluster,
            state: State::Added,
            result: None,
        }
    }

    fn want(network: &str, ifname: Option<&str>) -> Wanted {
        Wanted {
            network: network.into(),
            ifname: ifname.map(Into::into),
            cap_args: Map::new(),
            cni_args: None,
            default_route: vec![],
        }
    }

    fn with_ip(mut w: Wanted, ip: &str) -> Wanted {
        w.cap_args.insert("ips".into(), json!([ip]));
        w
    }

    fn detach(n: &str) -> Change {
        Change::Detach { ifname: n.into() }
    }
    fn attach(e: usize, n: &str) -> Change {
        Change::Attach {
            element: e,
            ifname: n.into(),
        }
    }
    fn replace(e: usize, n: &str) -> Change {
        Change::Replace {
            element: e,
            ifname: n.into(),
        }
    }

    #[test]
    fn diff_table() {
        let base = vec![
            att("cluster", "eth0", true),
            att("ns/a", "net1", false),
            att("ns/b", "net2", false),
        ];
        let cluster: HashSet<usize> = [0].into();
        let ip_a = {
            let mut a = att("ns/a", "net1", false);
            a.cap_args.insert("ips".into(), json!(["10.1.0.5/24"]));
            a
        };
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            &str,
            Vec<Attachment>,
            HashSet<usize>,
            Vec<Wanted>,
            Vec<Change>,
        )> = vec![
            (
                "unchanged",
                base.clone(),
                cluster.clone(),
                vec![want("ns/a", None), want("ns/b", None)],
                vec![],
            ),
            (
                "order does not matter",
                base.clone(),
                cluster.clone(),
                vec![want("ns/b", None), want("ns/a", None)],
                vec![],
            ),
            (
                "added without interface: next free netN",
                base.clone(),
                cluster.clone(),
                vec![want("ns/a", None), want("ns/b", None), want("ns/c", None)],
                vec![attach(2, "net3")],
            ),
            (
                "removed",
                base.clone(),
                cluster.clone(),
                vec![want("ns/b", None)],
                vec![detach("net1")],
            ),
            (
                "all removed, the cluster network stays",
                base.clone(),
                cluster.clone(),
                vec![],
                vec![detach("net1"), detach("net2")],
            ),
            (
                "a gap is filled: net1 removed, new one gets net1",
                base.clone(),
                cluster.clone(),
                vec![want("ns/b", None), want("ns/c", None)],
                vec![detach("net1"), attach(1, "net1")],
            ),
            (
                "a named interface is not taken by an unnamed element",
                base.clone(),
                cluster.clone(),
                vec![
                    want("ns/a", None),
                    want("ns/b", None),
                    want("ns/c", Some("net3")),
                    want("ns/d", None),
                ],
                vec![attach(2, "net3"), attach(3, "net4")],
            ),
            (
                "parameters changed: replaced on the same interface",
                base.clone(),
                cluster.clone(),
                vec![
                    with_ip(want("ns/a", None), "10.1.0.5/24"),
                    want("ns/b", None),
                ],
                vec![replace(0, "net1")],
            ),
            (
                "parameters unchanged with capability args",
                vec![base[0].clone(), ip_a.clone()],
                cluster.clone(),
                vec![with_ip(want("ns/a", None), "10.1.0.5/24")],
                vec![],
            ),
            (
                "the same network twice: the one with equal parameters is kept",
                vec![base[0].clone(), att("ns/a", "net1", false), {
                    let mut a = ip_a.clone();
                    a.ifname = "net2".into();
                    a
                }],
                cluster.clone(),
                vec![with_ip(want("ns/a", None), "10.1.0.5/24")],
                vec![detach("net1")],
            ),
            (
                "named interface now on another network: replaced",
                base.clone(),
                cluster.clone(),
                vec![want("ns/c", Some("net1")), want("ns/b", None)],
                vec![replace(0, "net1")],
            ),
            (
                "named interface matches by name",
                vec![base[0].clone(), att("ns/a", "blue", false)],
                cluster.clone(),
                vec![want("ns/a", Some("blue"))],
                vec![],
            ),
            (
                "renamed interface: detach and attach",
                vec![base[0].clone(), att("ns/a", "blue", false)],
                cluster.clone(),
                vec![want("ns/a", Some("green"))],
                vec![detach("blue"), attach(0, "green")],
            ),
            (
                "fixed (defaultNetworks) attachments are never touched",
                base.clone(),
                [0, 1].into(),
                vec![want("ns/b", None), want("ns/a", None)],
                vec![attach(1, "net3")],
            ),
            (
                "first hot-plug into a pod with the cluster network only",
                vec![base[0].clone()],
                cluster.clone(),
                vec![want("ns/m", None), want("ns/br", None)],
                vec![attach(0, "net1"), attach(1, "net2")],
            ),
        ];
        for (name, current, fixed, wanted, expect) in table {
            assert_eq!(diff(&current, &fixed, &wanted), expect, "{name}");
        }
    }

    #[test]
    fn next_free_skips_used_names() {
        let used: HashSet<String> = ["net1", "net3", "eth0"].map(String::from).into();
        assert_eq!(next_free(&used), "net2");
        assert_eq!(next_free(&HashSet::new()), "net1");
    }

    #[test]
    fn default_networks_are_fixed() {
        let conf: MetaConf = serde_json::from_value(json!({
            "type": "meta-cni", "clusterNetwork": "c", "defaultNetworks": ["dn", "x/dn2"]
        }))
        .unwrap();
        let entry = Entry {
            version: Entry::VERSION,
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: String::new(),
            cni_args: String::new(),
            pod: Some(journal::PodRef {
                namespace: "app".into(),
                name: "p".into(),
                uid: None,
            }),
            attachments: vec![
                att("c", "eth0", true),
                att("kube-system/dn", "net1", false),
                att("x/dn2", "net2", false),
                att("x/dn2", "net3", false),
            ],
        };
        assert_eq!(fixed_attachments(&conf, &entry), [0, 1, 2].into());
        let mut sys = entry.clone();
        sys.pod.as_mut().unwrap().namespace = "kube-system".into();
        assert_eq!(fixed_attachments(&conf, &sys), [0].into());
    }
}
