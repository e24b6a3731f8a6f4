//! Hot-plug (kube mode, `--hotplug-conf`): when the `k8s.v1.cni.cncf.io/networks`
//! annotation of a running pod on this node changes, its attachments follow, through
//! meta-cni's engine ([`meta_cni::hotplug::reconcile`]: the pod's journal entry, the
//! in-process delegates, rollback of a failed change) with meta-cni's own configuration
//! file, and the pod's network-status is patched to what the plugin would write.
//!
//! Driven by the pod watch ([`crate::cache`]): a pod whose annotation changed is
//! reconciled after the debounce (`--debounce`) of quiet; every pod of the first complete
//! listing (a restart: a hot-plug a kill -9 interrupted converges) and every pod each
//! resync period (`--resync`; an annotation changed while the pod's ADD was in flight, a
//! failed change retried) too. Pods are reconciled one at a time on a blocking thread
//! (the delegates do netlink in the pod's netns), so one pod's changes never interleave;
//! an ADD or DEL of the pod in flight holds the journal entry's lock, so the reconcile
//! waits for it. A pod being deleted (`deletionTimestamp` set) is left alone, and so is a
//! pod without a journal entry (not added yet). NADs come from the agent's NAD cache
//! (reconciles wait for its first listing). A change that fails is rolled back by the
//! engine and reported as a `Warning` Event `FailedHotplugInterface` on the pod (and
//! retried each resync period while the annotation still asks for it).

use crate::cache::{Key, Shared};
use crate::{Error, Result, Shutdown};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use meta_cni::config::MetaConf;
use meta_cni::plan::PodCtx;
use meta_cni::source::{PodInfo, Source};
use meta_crd::NadConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What hot-plug knows of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// metadata.uid
    pub uid: Option<String>,
    /// All annotations (the networks annotation and network-status among them).
    pub annotations: BTreeMap<String, String>,
    /// Whether `deletionTimestamp` is set.
    pub deleting: bool,
}

impl PodView {
    fn networks(&self) -> Option<&String> {
        self.annotations.get(meta_crd::NETWORKS_ANNOTATION)
    }
}

/// One pod watch event as hot-plug gets it.
#[derive(Debug)]
enum PodEvent {
    Seen(Key, PodView),
    Gone(Key),
    Listed,
}

/// Where the pod watch hands its events to hot-plug.
#[derive(Debug, Clone)]
pub struct Events(mpsc::UnboundedSender<PodEvent>);

fn key_of(p: &PartialObjectMeta<Pod>) -> Key {
    (p.namespace().unwrap_or_default(), p.name_any())
}

fn view(p: &PartialObjectMeta<Pod>) -> PodView {
    let m = p.meta();
    PodView {
        uid: m.uid.clone(),
        annotations: m.annotations.clone().unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
    }
}

impl Events {
    /// Hands one pod watch event over (never blocks).
    pub fn send(&self, ev: &Event<PartialObjectMeta<Pod>>) {
        let e = match ev {
            Event::Init => return,
            Event::InitApply(p) | Event::Apply(p) => PodEvent::Seen(key_of(p), view(p)),
            Event::Delete(p) => PodEvent::Gone(key_of(p)),
            Event::InitDone => PodEvent::Listed,
        };
        let _ = self.0.send(e);
    }
}

/// Starts hot-plug with meta-cni's configuration file `conf`; the pod watch feeds the
/// returned [`Events`]. The file may not exist yet (the DaemonSet's installer writes it only
/// once this agent has published the node's subnet): pods are then reconciled once it does.
/// A file that exists but is not a meta-cni configuration is a configuration error.
pub fn spawn(
    conf: &Path,
    node: &str,
    client: kube::Client,
    state: Shared,
    debounce: Duration,
    resync: Duration,
    shutdown: Shutdown,
) -> Result<Events> {
    let meta = if conf.exists() {
        let m = MetaConf::from_file(conf)
            .map_err(|e| Error::Config(format!("--hotplug-conf: {}", e.msg)))?;
        tracing::info!(
            conf = %conf.display(),
            cache_dir = %m.cache_dir.display(),
            "hot-plug of the networks annotation on"
        );
        Some(m)
    } else {
        tracing::info!(
            conf = %conf.display(),
            "hot-plug of the networks annotation on, once meta-cni's configuration exists"
        );
        None
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let h = Hotplug {
        conf_path: conf.to_path_buf(),
        conf: meta,
        recorder: crate::events::Recorder::new(client.clone(), node),
        client,
        state,
        debounce,
        resync,
    };
    tokio::spawn(h.run(rx, shutdown));
    Ok(Events(tx))
}

struct Hotplug {
    /// `--hotplug-conf`, read again before each reconcile (the installer rewrites it).
    conf_path: PathBuf,
    /// The last configuration read successfully; None until the file first exists.
    conf: Option<MetaConf>,
    /// Sends the Warning Events of failed changes.
    recorder: crate::events::Recorder,
    client: kube::Client,
    state: Shared,
    debounce: Duration,
    resync: Duration,
}

impl Hotplug {
    /// meta-cni's configuration as the file has it now; the last good one when the file
    /// cannot be read or parsed (logged); None while it never existed.
    fn current_conf(&mut self) -> Option<MetaConf> {
        match MetaConf::from_file(&self.conf_path) {
            Ok(c) => {
                if self.conf.is_none() {
                    tracing::info!(conf = %self.conf_path.display(), cache_dir = %c.cache_dir.display(), "hot-plug: meta-cni's configuration is there");
                }
                self.conf = Some(c);
            }
            Err(e) if self.conf.is_some() => {
                tracing::warn!(
                    "hot-plug: --hotplug-conf: {}; keeping the last configuration read",
                    e.msg
                );
            }
            Err(e) => tracing::debug!("hot-plug: --hotplug-conf: {}", e.msg),
        }
        self.conf.clone()
    }
}

/// NADs from the agent's cache for the engine (it reads nothing else).
struct CacheSource(Shared);

impl Source for CacheSource {
    fn pod(&mut self, _: &str, _: &str) -> cni_core::Result<Option<PodInfo>> {
        Ok(None)
    }

    fn nad(&mut self, ns: &str, name: &str) -> cni_core::Result<Option<NadConfig>> {
        let s = self.0.lock();
        match s.nads.get(ns, name) {
            Some(n) => meta_crd::effective_config(n)
                .map(Some)
                .map_err(|e| cni_core::Error::config(e.to_string())),
            None => Ok(None),
        }
    }

    fn set_network_status(
        &mut self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: &str,
    ) -> cni_core::Result<()> {
        Err(cni_core::Error::internal(
            "hot-plug patches network-status itself",
        ))
    }

    fn has_pods(&self) -> bool {
        false
    }
}

/// Whether two network-status values say the same (as JSON; absent = `[]`).
fn same_status(a: Option<&String>, b: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    match a {
        Some(a) => parse(a) == parse(b),
        None => parse(b) == Some(serde_json::json!([])),
    }
}

impl Hotplug {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PodEvent>, mut shutdown: Shutdown) {
        let mut pods: BTreeMap<Key, PodView> = BTreeMap::new();
        let mut due: BTreeMap<Key, Instant> = BTreeMap::new();
        let mut listed = false;
        let far = Duration::from_secs(3600);
        let mut next_resync = (!self.resync.is_zero()).then(|| Instant::now() + self.resync);
        loop {
            let next_due = due.values().min().copied();
            let wake = [next_due, next_resync]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + far);
            tokio::select! {
                _ = shutdown.wait() => break,
                ev = rx.recv() => match ev {
                    None => break,
                    Some(PodEvent::Seen(k, v)) => {
                        let prev = pods.insert(k.clone(), v.clone());
                        let changed = prev.as_ref().is_none_or(|p| {
                            p.networks() != v.networks() || p.uid != v.uid
                        });
                        if listed && changed && !v.deleting {
                            due.insert(k, Instant::now() + self.debounce);
                        }
                    }
                    Some(PodEvent::Gone(k)) => {
                        pods.remove(&k);
                        due.remove(&k);
                    }
                    Some(PodEvent::Listed) => {
                        if !listed {
                            tracing::info!("hot-plug: reconciling the {} pods of the first listing", pods.len());
                        }
                        listed = true;
                        let now = Instant::now();
                        for k in pods.keys() {
                            due.insert(k.clone(), now);
                        }
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if next_resync.is_some_and(|t| t <= now) {
                        next_resync = Some(now + self.resync);
                        if listed {
                            for k in pods.keys() {
                                due.entry(k.clone()).or_insert(now);
                            }
                        }
                    }
                    // NADs are resolved from the cache: wait for its first listing.
                    if !self.state.lock().nads.synced() {
                        for t in due.values_mut() {
                            *t = (*t).max(now + Duration::from_millis(200));
                        }
                        continue;
                    }
                    let ready: Vec<Key> = due.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
                    for k in ready {
                        due.remove(&k);
                        let Some(v) = pods.get(&k).cloned() else { continue };
                        if v.deleting {
                            continue;
                        }
                        let retry = self.reconcile(&k, &v).await;
                        if retry {
                            due.insert(k, Instant::now() + self.resync.max(Duration::from_secs(1)));
                        }
                    }
                }
            }
        }
    }

    /// One pod: the engine on a blocking thread, then network-status. Returns whether to
    /// try again later.
    async fn reconcile(&mut self, key: &Key, v: &PodView) -> bool {
        let Some(conf) = self.current_conf() else {
            // no configuration yet: nothing was attached by meta-cni on this node either
            return true;
        };
        let state = self.state.clone();
        let pod = PodCtx {
            namespace: key.0.clone(),
            name: key.1.clone(),
            annotations: v.annotations.clone(),
        };
        let uid = v.uid.clone();
        let started = std::time::Instant::now();
        let res = tokio::task::spawn_blocking(move || {
            meta_cni::hotplug::reconcile(&conf, &pod, uid.as_deref(), &mut CacheSource(state))
        })
        .await;
        let out = match res {
            Ok(Ok(Some(out))) => out,
            Ok(Ok(None)) => {
                tracing::debug!(pod = %format!("{}/{}", key.0, key.1), "hot-plug: no completed journal entry, nothing to do");
                return false;
            }
            Ok(Err(e)) => {
                self.report_failure(key, v, &e.msg).await;
                return false;
            }
            Err(e) => {
                self.report_failure(key, v, &format!("the reconcile thread failed: {e}"))
                    .await;
                return true;
            }
        };
        for f in &out.failures {
            self.report_failure(key, v, f).await;
        }
        for _ in &out.attached {
            crate::metrics::hotplug("attach", "ok");
        }
        for _ in &out.detached {
            crate::metrics::hotplug("detach", "ok");
        }
        if out.changed() {
            tracing::info!(
                pod = %format!("{}/{}", key.0, key.1),
                attached = ?out.attached,
                detached = ?out.detached,
                took_ms = started.elapsed().as_millis() as u64,
                "hot-plug"
            );
        }
        let mut retry = !out.failures.is_empty();
        let current = v.annotations.get(meta_crd::NETWORK_STATUS_ANNOTATION);
        if (out.changed() || !same_status(current, &out.network_status))
            && let Err(e) = self
                .patch_status(key, v.uid.as_deref(), &out.network_status)
                .await
        {
            self.report_failure(key, v, &format!("network-status: {e}"))
                .await;
            retry = true;
        }
        retry
    }

    /// A failed hot-plug change of a pod (rolled back): a warning in the log,
    /// `meta_cni_agent_hotplug_operations_total{op="change",outcome="failed"}`, and a
    /// `Warning` Event [`crate::events::REASON_HOTPLUG_FAILED`] on the pod (aggregated and
    /// rate-limited like the spool's Events; an Event that cannot be sent is only logged).
    async fn report_failure(&mut self, key: &Key, v: &PodView, failure: &str) {
        crate::metrics::hotplug("change", "failed");
        tracing::warn!(pod = %format!("{}/{}", key.0, key.1), "hot-plug: {failure}");
        let pod = meta_crd::spool::PodRef {
            namespace: key.0.clone(),
            name: key.1.clone(),
            uid: v.uid.clone(),
        };
        let planned = vec![crate::events::Planned {
            type_: "Warning",
            reason: crate::events::REASON_HOTPLUG_FAILED,
            message: meta_crd::spool::clip(&format!(
                "hot-plug of the networks annotation failed and was rolled back: {failure}"
            )),
        }];
        let now = meta_crd::spool::unix_ms(std::time::SystemTime::now());
        if let Err(e) = self.recorder.send_planned(&pod, now, planned).await {
            tracing::warn!(pod = %format!("{}/{}", key.0, key.1), "hot-plug: Event not sent: {e:?}");
        }
    }

    /// Merge-patches the pod's network-status through `pods/status`, the UID as
    /// precondition (as the plugin does).
    async fn patch_status(
        &self,
        key: &Key,
        uid: Option<&str>,
        value: &str,
    ) -> std::result::Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let mut meta =
            serde_json::json!({"annotations": {meta_crd::NETWORK_STATUS_ANNOTATION: value}});
        if let Some(u) = uid {
            meta["uid"] = serde_json::Value::String(u.to_string());
        }
        let patch = serde_json::json!({"metadata": meta});
        api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comparison_is_by_json() {
        let s = r#"[{"name":"a","interface":"net1"}]"#.to_string();
        assert!(same_status(
            Some(&s),
            r#"[ {"interface":"net1", "name":"a"} ]"#
        ));
        assert!(!same_status(Some(&s), "[]"));
        assert!(same_status(None, "[]"));
        assert!(!same_status(None, &s));
    }
}
