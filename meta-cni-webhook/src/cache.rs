//! The webhook's view of the cluster for [`crate::admission`]: NADs cluster-wide (each
//! stored with what the checks need, computed once per change) and, for deletion
//! protection, the pods that are attached to something (from their network-status), both
//! kept by kube-rs watchers. Pods are watched as metadata only. The cache is ready once
//! both watches have listed everything once; until then `/readyz` fails, so the API server
//! sends no review to a replica that would miss a NAD.

use crate::world::{NadEntry, PodAttachments, World};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use meta_crd::NetworkAttachmentDefinition;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

type Key = (String, String);

fn key_of(meta: &kube::api::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// One watched kind: the current map, the one a re-list is building, whether the first
/// list is complete.
struct Store<V> {
    map: RwLock<HashMap<Key, V>>,
    relist: std::sync::Mutex<Option<HashMap<Key, V>>>,
    synced: AtomicBool,
    len: AtomicUsize,
}

impl<V> Default for Store<V> {
    fn default() -> Self {
        Store {
            map: RwLock::new(HashMap::new()),
            relist: std::sync::Mutex::new(None),
            synced: AtomicBool::new(false),
            len: AtomicUsize::new(0),
        }
    }
}

impl<V> Store<V> {
    /// Applies a watch event, `value` making the stored value of an object (`None`: the
    /// object is not worth storing, e.g. a pod without network-status).
    fn apply<K>(&self, ev: Event<K>, key: impl Fn(&K) -> Key, value: impl Fn(&K) -> Option<V>) {
        let mut relist = self
            .relist
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ev {
            Event::Init => *relist = Some(HashMap::new()),
            Event::InitApply(o) => {
                if let (Some(r), Some(v)) = (relist.as_mut(), value(&o)) {
                    r.insert(key(&o), v);
                }
            }
            Event::InitDone => {
                if let Some(r) = relist.take() {
                    let mut m = self.write();
                    *m = r;
                    self.len.store(m.len(), Ordering::Relaxed);
                }
                self.synced.store(true, Ordering::Release);
            }
            Event::Apply(o) => {
                let mut m = self.write();
                match value(&o) {
                    Some(v) => m.insert(key(&o), v),
                    None => m.remove(&key(&o)),
                };
                self.len.store(m.len(), Ordering::Relaxed);
            }
            Event::Delete(o) => {
                let mut m = self.write();
                m.remove(&key(&o));
                self.len.store(m.len(), Ordering::Relaxed);
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, V>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, V>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The watch caches.
#[derive(Default)]
pub struct Cache {
    nads: Store<Arc<NadEntry>>,
    pods: Store<PodAttachments>,
}

impl Cache {
    /// An empty cache (not ready until [`Cache::run`] has listed both kinds).
    pub fn new() -> Arc<Cache> {
        Arc::new(Cache::default())
    }

    /// Both kinds listed once.
    pub fn ready(&self) -> bool {
        self.nads.synced.load(Ordering::Acquire) && self.pods.synced.load(Ordering::Acquire)
    }

    /// How many NADs and attached pods it holds.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.nads.len.load(Ordering::Relaxed),
            self.pods.len.load(Ordering::Relaxed),
        )
    }

    /// Applies one NAD watch event.
    pub fn nad_event(&self, ev: Event<NetworkAttachmentDefinition>) {
        self.nads.apply(
            ev,
            |n| key_of(&n.metadata),
            |n| Some(Arc::new(NadEntry::new(n))),
        );
    }

    /// Applies one pod (metadata) watch event; only pods with network-status are kept.
    pub fn pod_event(&self, ev: Event<kube::core::PartialObjectMeta<Pod>>) {
        self.pods.apply(
            ev,
            |p| key_of(&p.metadata),
            |p| {
                let anns: BTreeMap<String, String> =
                    p.metadata.annotations.clone().unwrap_or_default();
                let a = PodAttachments::from_annotations(&anns);
                (!a.networks.is_empty()).then_some(a)
            },
        );
    }

    /// Keeps the cache in step with the API server until the watches end (never, with
    /// the default backoff: errors are logged and retried).
    pub async fn run(self: Arc<Self>, client: kube::Client) {
        let nads = Api::<NetworkAttachmentDefinition>::all(client.clone());
        let pods = Api::<kube::core::PartialObjectMeta<Pod>>::all(client);
        let mut nad_stream = watcher::watcher(nads, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut pod_stream = watcher::watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            tokio::select! {
                ev = nad_stream.next() => match ev {
                    Some(Ok(ev)) => self.nad_event(ev),
                    Some(Err(e)) => tracing::warn!("NAD watch: {e} (retrying with backoff)"),
                    None => break,
                },
                ev = pod_stream.next() => match ev {
                    Some(Ok(ev)) => self.pod_event(ev),
                    Some(Err(e)) => tracing::warn!("pod watch: {e} (retrying with backoff)"),
                    None => break,
                },
            }
        }
        tracing::error!("a watch ended");
    }
}

impl World for Cache {
    fn nad(&self, namespace: &str, name: &str) -> Option<Arc<NadEntry>> {
        self.nads
            .read()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn for_each_nad(&self, f: &mut dyn FnMut(&NadEntry)) {
        for e in self.nads.read().values() {
            f(e);
        }
    }

    fn pods_attached(&self, namespace: &str, name: &str) -> Vec<String> {
        let id = format!("{namespace}/{name}");
        let mut out: Vec<String> = self
            .pods
            .read()
            .iter()
            .filter(|(_, a)| a.uses(&id))
            .map(|((ns, n), _)| format!("{ns}/{n}"))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nad(ns: &str, name: &str) -> NetworkAttachmentDefinition {
        serde_json::from_value(
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}}),
        )
        .unwrap()
    }

    fn pod(ns: &str, name: &str, nets: &[&str]) -> kube::core::PartialObjectMeta<Pod> {
        let status: Vec<_> = nets.iter().map(|n| json!({"name": n})).collect();
        let mut p = kube::core::PartialObjectMeta::<Pod>::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        if !nets.is_empty() {
            p.metadata.annotations = Some(BTreeMap::from([(
                meta_crd::NETWORK_STATUS_ANNOTATION.to_string(),
                json!(status).to_string(),
            )]));
        }
        p
    }

    #[test]
    fn events_relists_and_readiness() {
        let c = Cache::default();
        assert!(!c.ready());
        c.nad_event(Event::Init);
        c.nad_event(Event::InitApply(nad("a", "n1")));
        assert!(
            c.nad("a", "n1").is_none(),
            "a re-list shows when it is complete"
        );
        c.nad_event(Event::InitDone);
        assert!(c.nad("a", "n1").is_some());
        c.pod_event(Event::Init);
        c.pod_event(Event::InitApply(pod("a", "p1", &["a/n1"])));
        c.pod_event(Event::InitApply(pod("a", "p2", &[])));
        c.pod_event(Event::InitDone);
        assert!(c.ready());
        assert_eq!(
            c.counts(),
            (1, 1),
            "pods without network-status are not kept"
        );
        assert_eq!(c.pods_attached("a", "n1"), vec!["a/p1"]);
        c.pod_event(Event::Apply(pod("a", "p1", &[])));
        assert!(c.pods_attached("a", "n1").is_empty());
        c.nad_event(Event::Apply(nad("b", "n2")));
        c.nad_event(Event::Delete(nad("a", "n1")));
        assert!(c.nad("a", "n1").is_none() && c.nad("b", "n2").is_some());
        // A re-list replaces everything: what it does not list is gone.
        c.nad_event(Event::Init);
        c.nad_event(Event::InitApply(nad("c", "n3")));
        c.nad_event(Event::InitDone);
        assert!(c.nad("b", "n2").is_none() && c.nad("c", "n3").is_some());
    }
}
