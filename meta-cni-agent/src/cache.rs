//! Kube mode: the caches the local API serves ([`crate::socket`]): every
//! NetworkAttachmentDefinition of the cluster, and the pods of this node (metadata only,
//! field selector `spec.nodeName=<node>`), each kept by a kube-runtime watcher and with
//! its own "synced" state (its first complete listing has arrived).
//!
//! A relisting (after a watch error or an expired resource version) keeps serving the
//! previous content until the new listing is complete, then swaps. A miss is never
//! "does not exist": the plugin falls back to the API server on every miss.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use meta_crd::NetworkAttachmentDefinition;
use meta_crd::agent_api::{CacheState, PodMeta, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// `(namespace, name)`.
pub type Key = (String, String);

/// Objects of one kind from watch events, keyed by namespace and name.
#[derive(Debug)]
pub struct Cache<V> {
    items: BTreeMap<Key, V>,
    /// During a (re)listing: what has been listed so far.
    relist: Option<BTreeMap<Key, V>>,
    synced: bool,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Cache {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

fn key<K: Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl<V> Cache<V> {
    /// Applies one watch event, converting objects with `conv`.
    pub fn apply<K: Resource>(&mut self, ev: Event<K>, conv: impl Fn(K) -> V) {
        match ev {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                let k = key(&o);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, conv(o));
            }
            Event::InitDone => {
                self.items = self.relist.take().unwrap_or_default();
                self.synced = true;
            }
            Event::Apply(o) => {
                let k = key(&o);
                self.items.insert(k, conv(o));
            }
            Event::Delete(o) => {
                let k = key(&o);
                self.items.remove(&k);
                if let Some(r) = self.relist.as_mut() {
                    r.remove(&k);
                }
            }
        }
    }

    /// Whether the first complete listing has arrived.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The object `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&V> {
        self.items.get(&(namespace.to_string(), name.to_string()))
    }

    /// Its state for `status`.
    pub fn state(&self) -> CacheState {
        CacheState {
            synced: self.synced,
            count: self.items.len(),
        }
    }
}

/// What the local API serves.
#[derive(Debug, Default)]
pub struct State {
    /// This node's name.
    pub node: String,
    /// Every NAD of the cluster.
    pub nads: Cache<NetworkAttachmentDefinition>,
    /// The pods of this node.
    pub pods: Cache<PodMeta>,
}

impl State {
    /// The answer to `status`.
    pub fn status(&self) -> Status {
        Status {
            node: self.node.clone(),
            nads: self.nads.state(),
            pods: self.pods.state(),
        }
    }
}

/// The state shared between the watchers and the socket's connections.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<State>>);

impl Shared {
    /// An empty state (nothing synced) for `node`.
    pub fn new(node: &str) -> Shared {
        Shared(Arc::new(Mutex::new(State {
            node: node.to_string(),
            ..Default::default()
        })))
    }

    /// The state (held only for a lookup or one event).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A NAD as cached: without `managedFields` (server-side apply bookkeeping, often larger
/// than the object and of no use to the plugin).
pub fn nad_entry(mut n: NetworkAttachmentDefinition) -> NetworkAttachmentDefinition {
    n.metadata.managed_fields = None;
    n
}

/// A pod's metadata as served.
pub fn pod_meta(p: PartialObjectMeta<Pod>) -> PodMeta {
    PodMeta {
        uid: p.metadata.uid,
        annotations: p.metadata.annotations.unwrap_or_default(),
    }
}

/// The field selector of this node's pods.
pub fn node_pods_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Runs both watchers until `shutdown`, feeding `state`; watch errors are logged and
/// retried with kube-runtime's default backoff.
///
/// With `hotplug`, every pod event is also handed to hot-plug ([`crate::hotplug`]); with
/// `ipam`, every pod deletion triggers a pass of the IPAM reconciliation ([`crate::ipam`]).
pub async fn run(
    client: kube::Client,
    state: Shared,
    hotplug: Option<crate::hotplug::Events>,
    ipam: Option<crate::ipam::Trigger>,
    mut shutdown: crate::Shutdown,
) {
    let node = state.lock().node.clone();
    let nads: Api<NetworkAttachmentDefinition> = Api::all(client.clone());
    // Metadata only: `Api<PartialObjectMeta<_>>` makes metadata-only requests.
    let pods: Api<PartialObjectMeta<Pod>> = Api::all(client);
    let mut nad_stream = watcher::watcher(nads, watcher::Config::default())
        .default_backoff()
        .boxed();
    let pod_cfg = watcher::Config::default().fields(&node_pods_selector(&node));
    let mut pod_stream = watcher::watcher(pods, pod_cfg).default_backoff().boxed();
    let (mut nads_said, mut pods_said) = (false, false);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            ev = nad_stream.next() => match ev {
                Some(Ok(ev)) => {
                    let mut s = state.lock();
                    s.nads.apply(ev, nad_entry);
                    if s.nads.synced() && !nads_said {
                        nads_said = true;
                        tracing::info!("NAD cache synced: {} NetworkAttachmentDefinitions", s.nads.state().count);
                    }
                }
                Some(Err(e)) => tracing::warn!("NAD watch: {e} (retrying with backoff)"),
                None => {
                    tracing::error!("the NAD watch ended");
                    break;
                }
            },
            ev = pod_stream.next() => match ev {
                Some(Ok(ev)) => {
                    if let Some(h) = &hotplug {
                        h.send(&ev);
                    }
                    if let (Some(t), Event::Delete(_)) = (&ipam, &ev) {
                        t.pod_gone();
                    }
                    let mut s = state.lock();
                    s.pods.apply(ev, pod_meta);
                    if s.pods.synced() && !pods_said {
                        pods_said = true;
                        tracing::info!("pod cache synced: {} pods on node {node}", s.pods.state().count);
                    }
                }
                Some(Err(e)) => tracing::warn!("pod watch: {e} (retrying with backoff)"),
                None => {
                    tracing::error!("the pod watch ended");
                    break;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn pod(ns: &str, name: &str, uid: &str) -> PartialObjectMeta<Pod> {
        use kube::core::PartialObjectMetaExt;
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            annotations: Some(BTreeMap::from([("a".to_string(), uid.to_string())])),
            ..Default::default()
        }
        .into_response_partial::<Pod>()
    }

    #[test]
    fn cache_follows_events_and_serves_old_content_during_a_relist() {
        let mut c: Cache<PodMeta> = Cache::default();
        assert!(!c.synced());
        c.apply(Event::Init, pod_meta);
        c.apply(Event::InitApply(pod("ns", "a", "1")), pod_meta);
        // Not synced before the listing is complete, and nothing served yet.
        assert!(!c.synced());
        assert!(c.get("ns", "a").is_none());
        c.apply(Event::InitDone, pod_meta);
        assert!(c.synced());
        assert_eq!(c.get("ns", "a").unwrap().uid.as_deref(), Some("1"));
        c.apply(Event::Apply(pod("ns", "b", "2")), pod_meta);
        assert_eq!(c.state().count, 2);
        c.apply(Event::Delete(pod("ns", "a", "1")), pod_meta);
        assert!(c.get("ns", "a").is_none());
        // A relist that finds c only: b still served until it is done, then gone.
        c.apply(Event::Init, pod_meta);
        c.apply(Event::InitApply(pod("ns", "c", "3")), pod_meta);
        assert!(c.get("ns", "b").is_some());
        assert!(c.synced());
        c.apply(Event::InitDone, pod_meta);
        assert!(c.get("ns", "b").is_none());
        assert_eq!(c.get("ns", "c").unwrap().annotations["a"], "3");
        assert_eq!(
            c.state(),
            CacheState {
                synced: true,
                count: 1
            }
        );
        assert_eq!(node_pods_selector("n1"), "spec.nodeName=n1");
    }
}
