//! Kube mode: the own Node's `podCIDR`, the published annotations, the Node watch.

use super::cache::{self, Shared};
use super::dataplane::{Dataplane, Own};
use super::records::{self, NodeView, annotation_patch, pod_cidr, published};
use super::socket;
use super::{AgentConfig, Error, Result, Shutdown};
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use meta_overlay::NodeRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait between two attempts to publish the annotations.
const MAX_PUBLISH_BACKOFF: Duration = Duration::from_secs(30);

fn kube_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}

/// A client from `kubeconfig`, or the in-cluster configuration when `None`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    kube::Client::try_from(config(kubeconfig).await?)
        .map_err(kube_err("build the Kubernetes client"))
}

/// The API configuration from `kubeconfig`, or the in-cluster one when `None`.
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config> {
    Ok(match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", p.display())))?
        }
        None => kube::Config::incluster().map_err(|e| {
            Error::Config(format!(
                "no kubeconfig given (--kubeconfig / KUBECONFIG) and no in-cluster configuration: {e}"
            ))
        })?,
    })
}

/// Waits until Node `name` exists and has a pod subnet; returns it and the Node. Retries
/// every `poll` (API errors are logged and retried: the API server may not be up yet).
pub async fn wait_pod_cidr(api: &Api<Node>, name: &str, poll: Duration) -> Result<(IpNet, Node)> {
    let mut said = String::new();
    loop {
        let status = match api.get_opt(name).await {
            Ok(Some(node)) => match pod_cidr(&node) {
                Some(c) => {
                    let net = c.parse::<IpNet>().map(|n| n.trunc()).map_err(|e| {
                        Error::Config(format!("Node {name}: spec.podCIDR {c:?}: {e}"))
                    })?;
                    return Ok((net, node));
                }
                None => format!("Node {name} has no spec.podCIDR yet; waiting"),
            },
            Ok(None) => format!("Node {name} does not exist yet; waiting"),
            Err(e) => format!("get Node {name}: {e}; retrying"),
        };
        if status != said {
            tracing::warn!("{status}");
            said = status;
        }
        tokio::time::sleep(poll).await;
    }
}

/// The nodes the overlay programs, from watch events.
///
/// Keeps, per node name, the [`NodeRecord`] of every node with a `podCIDR` and both
/// annotations; [`NodeSet::apply`] returns the new desired set whenever it changed (after
/// the first complete listing, and on every later change of a record), and nothing when an
/// event changed nothing the overlay cares about (status heartbeats, labels, ...).
#[derive(Debug, Default)]
pub struct NodeSet {
    ready: BTreeMap<String, NodeRecord>,
    problems: BTreeMap<String, NodeView>,
    /// During a (re)listing: the ready records and every name seen so far.
    init: Option<(BTreeMap<String, NodeRecord>, BTreeSet<String>)>,
    synced: bool,
}

impl NodeSet {
    /// An empty set (not synced).
    pub fn new() -> NodeSet {
        NodeSet::default()
    }

    /// Whether the first complete listing has arrived.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The current records.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.ready.values().cloned().collect()
    }

    /// Nodes not programmed, with why (pending or invalid).
    pub fn problems(&self) -> &BTreeMap<String, NodeView> {
        &self.problems
    }

    fn note(&mut self, name: &str, v: &NodeView) {
        match v {
            NodeView::Ready(_) => {
                self.problems.remove(name);
            }
            other => {
                if self.problems.get(name) != Some(other) {
                    match other {
                        NodeView::Invalid(why) => {
                            tracing::warn!(node = name, "not programmed: {why}")
                        }
                        NodeView::Pending(why) => {
                            tracing::debug!(node = name, "not programmed yet: {why}")
                        }
                        NodeView::Ready(_) => {}
                    }
                    self.problems.insert(name.to_string(), other.clone());
                }
            }
        }
    }

    /// Applies one watch event; `Some(desired set)` when it changed.
    pub fn apply(&mut self, ev: Event<Node>) -> Option<Vec<NodeRecord>> {
        match ev {
            Event::Init => {
                self.init = Some(Default::default());
                None
            }
            Event::InitApply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let v = records::view(&node);
                self.note(&name, &v);
                if let Some((buf, seen)) = self.init.as_mut() {
                    seen.insert(name.clone());
                    if let NodeView::Ready(r) = v {
                        buf.insert(name, r);
                    }
                }
                None
            }
            Event::InitDone => {
                let (buf, seen) = self.init.take().unwrap_or_default();
                self.problems.retain(|n, _| seen.contains(n));
                let changed = !self.synced || buf != self.ready;
                self.ready = buf;
                self.synced = true;
                changed.then(|| self.records())
            }
            Event::Apply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let v = records::view(&node);
                self.note(&name, &v);
                let changed = match v {
                    NodeView::Ready(r) => self.ready.insert(name, r.clone()).as_ref() != Some(&r),
                    _ => self.ready.remove(&name).is_some(),
                };
                (changed && self.synced).then(|| self.records())
            }
            Event::Delete(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                self.problems.remove(&name);
                let changed = self.ready.remove(&name).is_some();
                (changed && self.synced).then(|| self.records())
            }
        }
    }
}

/// Publishes `rec` on Node `name` (merge patch of the two annotations).
async fn publish(api: &Api<Node>, name: &str, rec: &NodeRecord) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(annotation_patch(rec)),
    )
    .await
    .map_err(kube_err(format!("annotate Node {name}")))?;
    tracing::info!(
        node = name,
        vtep_mac = %meta_netlink::format_mac(&rec.vtep_mac),
        underlay_ip = %rec.underlay_ip,
        "VTEP published"
    );
    Ok(())
}

/// Kube mode: see the module docs of [`super`].
pub async fn run(
    cfg: &AgentConfig,
    kubeconfig: Option<&Path>,
    mut shutdown: Shutdown,
) -> Result<()> {
    let api_config = config(kubeconfig).await?;
    let client = kube::Client::try_from(api_config.clone())
        .map_err(kube_err("build the Kubernetes client"))?;
    let ipam = match crate::ipam::Settings::of(cfg) {
        Some(s) => Some(crate::ipam::spawn(api_config, s)?),
        None => None,
    };
    // The local API first: its caches do not wait for the node's pod subnet.
    let state = Shared::new(&cfg.node_name);
    let listener = socket::Listener::bind(&cfg.socket)?;
    let hotplug = match &cfg.hotplug_conf {
        Some(path) => Some(crate::hotplug::spawn(
            path,
            &cfg.node_name,
            client.clone(),
            state.clone(),
            cfg.debounce,
            cfg.resync,
            shutdown.clone(),
        )?),
        None => None,
    };
    tokio::spawn(cache::run(
        client.clone(),
        state.clone(),
        hotplug,
        ipam.clone(),
        shutdown.clone(),
    ));
    if let Some(t) = ipam {
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            sd.wait().await;
            t.stop();
        });
    }
    super::start_observability(
        cfg,
        Some(client.clone()),
        Some(state.clone()),
        shutdown.clone(),
    )
    .await?;
    tokio::spawn(socket::serve(
        listener,
        state,
        Some(client.clone()),
        shutdown.clone(),
    ));
    let api: Api<Node> = Api::all(client);
    let name = cfg.node_name.clone();
    let Some(subnet) = shutdown.until(wait_pod_cidr(&api, &name, cfg.poll)).await else {
        return Ok(());
    };
    let (subnet, node) = subnet?;
    tracing::info!(node = %name, pod_subnet = %subnet, "own pod subnet");
    let own = Own {
        name: name.clone(),
        pod_subnet: subnet,
        vtep_mac: None,
        underlay_ip: None,
    };
    let (dp, ready) = Dataplane::spawn(
        super::settings(cfg),
        own,
        super::open_netlink,
        super::firewall(cfg),
    )?;
    let Some(ready) = shutdown.until(ready).await else {
        dp.stop();
        return Ok(());
    };
    let ready = ready.map_err(|_| Error::DataplaneGone)??;
    let me = ready.record;

    // Publish (unless already there: a restart changes nothing) before the watch starts,
    // so that its first listing already shows the annotations; a failure is retried with
    // backoff while watching.
    let mut need_publish = !published(&node, &me);
    let mut publish_at = Instant::now();
    let mut backoff = Duration::from_secs(1);
    if !need_publish {
        tracing::info!("VTEP already published on Node {name}");
    } else {
        match shutdown.until(publish(&api, &name, &me)).await {
            None => {
                dp.stop();
                return Ok(());
            }
            Some(Ok(())) => need_publish = false,
            Some(Err(e)) => {
                tracing::warn!("{e}; retrying in {backoff:?}");
                publish_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_PUBLISH_BACKOFF);
            }
        }
    }
    let mut nodes = NodeSet::new();
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut last_summary = (usize::MAX, usize::MAX);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep_until(publish_at), if need_publish => {
                match publish(&api, &name, &me).await {
                    Ok(()) => {
                        need_publish = false;
                        backoff = Duration::from_secs(1);
                    }
                    Err(e) => {
                        tracing::warn!("{e}; retrying in {backoff:?}");
                        publish_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_PUBLISH_BACKOFF);
                    }
                }
            }
            ev = stream.next() => {
                let Some(ev) = ev else {
                    tracing::error!("the Node watch ended");
                    break;
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!("Node watch: {e} (retrying with backoff)");
                        continue;
                    }
                };
                // Our own Node: annotations still there? podCIDR unchanged?
                match &ev {
                    Event::Apply(n) | Event::InitApply(n)
                        if n.metadata.name.as_deref() == Some(name.as_str()) =>
                    {
                        if !published(n, &me) && !need_publish {
                            tracing::info!("own Node lacks the VTEP annotations; publishing");
                            need_publish = true;
                            publish_at = Instant::now();
                        }
                        let cidr = pod_cidr(n).and_then(|c| c.parse::<IpNet>().ok());
                        if cidr.map(|c| c.trunc()) != Some(subnet) {
                            tracing::warn!(
                                "own Node's podCIDR is now {:?}, the overlay uses {subnet}; restart the agent to apply",
                                pod_cidr(n)
                            );
                        }
                    }
                    Event::Delete(n) if n.metadata.name.as_deref() == Some(name.as_str()) => {
                        tracing::warn!("own Node was deleted; publishing again when it is back");
                        need_publish = true;
                        publish_at = Instant::now() + backoff;
                    }
                    _ => {}
                }
                if let Some(desired) = nodes.apply(ev) {
                    let summary = (desired.len(), nodes.problems().len());
                    if summary != last_summary {
                        tracing::info!(
                            "nodes: {} with a VTEP, {} not (yet) usable",
                            summary.0, summary.1
                        );
                        last_summary = summary;
                    }
                    dp.update(desired);
                }
            }
        }
    }
    drop(stream);
    dp.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ANNOTATION_UNDERLAY_IP, ANNOTATION_VTEP_MAC};
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(name: &str, n: u8, annotated: bool) -> Node {
        let mut ann = BTreeMap::new();
        if annotated {
            ann.insert(
                ANNOTATION_VTEP_MAC.to_string(),
                format!("02:6d:c0:a8:4d:{n:02x}"),
            );
            ann.insert(
                ANNOTATION_UNDERLAY_IP.to_string(),
                format!("192.168.77.{n}"),
            );
        }
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(ann),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(format!("10.244.{n}.0/24")),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn names(v: &[NodeRecord]) -> Vec<&str> {
        v.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn node_set_follows_events() {
        let mut s = NodeSet::new();
        assert_eq!(s.apply(Event::Init), None);
        assert_eq!(s.apply(Event::InitApply(node("a", 1, true))), None);
        assert_eq!(s.apply(Event::InitApply(node("b", 2, false))), None);
        // Nothing before the listing is complete; then the ready ones.
        let d = s.apply(Event::InitDone).unwrap();
        assert_eq!(names(&d), vec!["a"]);
        assert!(s.synced());
        assert!(matches!(s.problems().get("b"), Some(NodeView::Pending(_))));
        // b publishes: changed.
        let d = s.apply(Event::Apply(node("b", 2, true))).unwrap();
        assert_eq!(names(&d), vec!["a", "b"]);
        assert!(s.problems().is_empty());
        // The same again (a heartbeat): nothing.
        assert_eq!(s.apply(Event::Apply(node("b", 2, true))), None);
        // A node without annotations: nothing to program, nothing changed.
        assert_eq!(s.apply(Event::Apply(node("c", 3, false))), None);
        // a goes.
        let d = s.apply(Event::Delete(node("a", 1, true))).unwrap();
        assert_eq!(names(&d), vec!["b"]);
        // A relist that lost b and found d.
        s.apply(Event::Init);
        s.apply(Event::InitApply(node("d", 4, true)));
        let d = s.apply(Event::InitDone).unwrap();
        assert_eq!(names(&d), vec!["d"]);
        // An identical relist: nothing.
        s.apply(Event::Init);
        s.apply(Event::InitApply(node("d", 4, true)));
        assert_eq!(s.apply(Event::InitDone), None);
        // Invalid annotation: dropped from the set, listed as a problem.
        let mut bad = node("d", 4, true);
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_VTEP_MAC.into(), "nope".into());
        let d = s.apply(Event::Apply(bad)).unwrap();
        assert!(d.is_empty());
        assert!(matches!(s.problems().get("d"), Some(NodeView::Invalid(_))));
    }

    #[test]
    fn empty_first_listing_is_still_sent() {
        let mut s = NodeSet::new();
        s.apply(Event::Init);
        assert_eq!(s.apply(Event::InitDone), Some(vec![]));
    }
}
