//! Kubernetes Events (core/v1, so Kubernetes 1.20 works) from the plugin's spool records,
//! as Multus emits them:
//!
//! - a successful ADD: one `Normal` Event `AddedInterface` per interface, message `Add
//!   <ifname> [<ip/prefix> ...] from <network>` ([`meta_crd::spool::added_interface_message`]);
//! - a failed ADD: one `Warning` Event [`REASON_FAILED`] naming the interface and network
//!   that failed and carrying the CNI error code and message (Multus itself leaves this
//!   to the kubelet's `FailedCreatePodSandBox`).
//!
//! Every Event has `involvedObject` = the pod (with its UID when known), `source.component`
//! and `reportingComponent` = `meta-cni`, `source.host` and `reportingInstance` = the node,
//! and the time of the ADD as first/last timestamp (a record sent late keeps its time).
//! Like client-go's recorder, an Event identical to one sent in the last
//! [`AGGREGATE_WINDOW`] is not created again: the existing one's `count` and
//! `lastTimestamp` are patched; and each pod gets a token bucket of [`BURST`] Events
//! refilled at one per [`REFILL`] (client-go's spam filter defaults), beyond which
//! Events are dropped and counted.

use crate::metrics;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meta_crd::spool::{self, Record, Verb};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The reason of a successful ADD's Events (Multus's).
pub const REASON_ADDED: &str = "AddedInterface";
/// The reason of a failed ADD's Event.
pub const REASON_FAILED: &str = "FailedAddInterface";
/// The reason of the Event of a hot-plug change that failed (and was rolled back).
pub const REASON_HOTPLUG_FAILED: &str = "FailedHotplugInterface";
/// The component named in every Event.
pub const COMPONENT: &str = "meta-cni";
/// Events per pod before the rate limit applies.
pub const BURST: f64 = 25.0;
/// One more Event per pod per this period.
pub const REFILL: Duration = Duration::from_secs(300);
/// An identical Event within this window patches the previous one's count.
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// Pods and Events remembered for the rate limit and the aggregation.
const MAX_REMEMBERED: usize = 4096;

/// One Event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// The reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// The Events a record asks for (only ADD records with a pod ask for any).
pub fn plan(rec: &Record) -> Vec<Planned> {
    if rec.verb != Verb::Add || rec.pod.is_none() {
        return Vec::new();
    }
    if rec.code == 0 {
        return rec
            .attachments
            .iter()
            .filter(|a| a.code == 0)
            .map(|a| Planned {
                type_: "Normal",
                reason: REASON_ADDED,
                message: spool::added_interface_message(&a.ifname, &a.ips, &a.network),
            })
            .collect();
    }
    let failed = rec.attachments.iter().find(|a| a.code != 0);
    let msg = rec.message.as_deref().unwrap_or("unknown error");
    vec![Planned {
        type_: "Warning",
        reason: REASON_FAILED,
        message: spool::clip(&spool::failed_add_message(
            failed.map(|a| a.ifname.as_str()),
            failed.map(|a| a.network.as_str()),
            rec.code,
            msg,
        )),
    }]
}

/// RFC 3339 (UTC, seconds) of Unix milliseconds: the same rendering as the installer's
/// log timestamps ([`meta_cni::install::format_utc`]).
pub fn rfc3339(ms: u64) -> String {
    meta_cni::install::format_utc(ms / 1000)
}

/// Why an Event was not sent now.
#[derive(Debug)]
pub enum SendError {
    /// Worth retrying later (connection, 429, 5xx): the record stays in the spool.
    Retry(String),
    /// Not worth retrying (e.g. the namespace is gone): the Event is dropped.
    Drop(String),
}

/// (pod key, reason, message) of a sent Event.
type SentKey = (String, &'static str, String);
/// (namespace, Event name, count, when last sent) of a sent Event.
type SentEvent = (String, String, i32, Instant);

/// Sends Events with aggregation and a per-pod rate limit.
pub struct Recorder {
    client: kube::Client,
    node: String,
    buckets: HashMap<String, (f64, Instant)>,
    sent: HashMap<SentKey, SentEvent>,
    seq: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("node", &self.node)
            .finish()
    }
}

fn classify(e: kube::Error) -> SendError {
    match &e {
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => SendError::Retry(e.to_string()),
        kube::Error::Api(_) => SendError::Drop(e.to_string()),
        _ => SendError::Retry(e.to_string()),
    }
}

impl Recorder {
    /// A recorder sending as the agent of `node`.
    pub fn new(client: kube::Client, node: &str) -> Recorder {
        Recorder {
            client,
            node: node.to_string(),
            buckets: HashMap::new(),
            sent: HashMap::new(),
            seq: 0,
        }
    }

    fn allow(&mut self, pod: &str) -> bool {
        let now = Instant::now();
        if self.buckets.len() > MAX_REMEMBERED {
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < REFILL * (BURST as u32));
        }
        let (tokens, last) = self.buckets.entry(pod.to_string()).or_insert((BURST, now));
        let refill = now.duration_since(*last).as_secs_f64() / REFILL.as_secs_f64();
        *tokens = (*tokens + refill).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sends the Events of `rec`. `Retry` means none of the remaining ones were sent and
    /// the whole record should be tried again later; Events already sent are aggregated
    /// then (their count is patched), not duplicated.
    pub async fn send(&mut self, rec: &Record) -> Result<(), SendError> {
        let Some(pod) = &rec.pod else {
            return Ok(());
        };
        self.send_planned(pod, rec.time_unix_ms, plan(rec)).await
    }

    /// Sends `planned` about `pod`, dated `time_unix_ms`, with the same aggregation and
    /// rate limit as the spool's Events.
    pub async fn send_planned(
        &mut self,
        pod: &spool::PodRef,
        time_unix_ms: u64,
        planned: Vec<Planned>,
    ) -> Result<(), SendError> {
        let pod_key = pod
            .uid
            .clone()
            .unwrap_or_else(|| format!("{}/{}", pod.namespace, pod.name));
        for p in planned {
            let key = (pod_key.clone(), p.reason, p.message.clone());
            let now = Instant::now();
            let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
            let ts = rfc3339(time_unix_ms);
            if let Some((ns, name, count, at)) = self.sent.get(&key).cloned()
                && now.duration_since(at) < AGGREGATE_WINDOW
                && ns == pod.namespace
            {
                let patch = json!({"count": count + 1, "lastTimestamp": ts});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        self.sent.insert(key, (ns, name, count + 1, now));
                        metrics::global().event(p.type_, "aggregated");
                        continue;
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.sent.remove(&key);
                    }
                    Err(e) => {
                        metrics::global().event(p.type_, "failed");
                        return Err(classify(e));
                    }
                }
            }
            if !self.allow(&pod_key) {
                tracing::warn!(
                    pod = %format!("{}/{}", pod.namespace, pod.name),
                    "Event rate limit reached: {} {} dropped",
                    p.reason, p.message
                );
                metrics::global().event(p.type_, "rate_limited");
                continue;
            }
            self.seq += 1;
            let name = format!(
                "{}.{:x}{:04x}",
                pod.name,
                time_unix_ms.saturating_mul(1_000_000),
                self.seq & 0xffff
            );
            let mut involved = json!({
                "apiVersion": "v1", "kind": "Pod",
                "namespace": pod.namespace, "name": pod.name,
            });
            if let Some(uid) = &pod.uid {
                involved["uid"] = uid.clone().into();
            }
            let ev: Event = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": pod.namespace},
                "involvedObject": involved,
                "reason": p.reason,
                "message": p.message,
                "type": p.type_,
                "source": {"component": COMPONENT, "host": self.node},
                "reportingComponent": COMPONENT,
                "reportingInstance": self.node,
                "firstTimestamp": ts,
                "lastTimestamp": ts,
                "count": 1,
            }))
            .map_err(|e| SendError::Drop(format!("build the Event: {e}")))?;
            match api.create(&PostParams::default(), &ev).await {
                Ok(_) => {
                    metrics::global().event(p.type_, "created");
                    if self.sent.len() > MAX_REMEMBERED {
                        self.sent
                            .retain(|_, v| now.duration_since(v.3) < AGGREGATE_WINDOW);
                    }
                    self.sent.insert(key, (pod.namespace.clone(), name, 1, now));
                }
                Err(e) => {
                    metrics::global().event(p.type_, "failed");
                    match classify(e) {
                        SendError::Drop(m) => {
                            tracing::warn!("Event {} {}: {m}; dropped", p.reason, p.message)
                        }
                        retry => return Err(retry),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meta_crd::spool::{AttachmentRecord, PodRef, VERSION};

    fn rec(code: u32) -> Record {
        let att = |ifname: &str, network: &str, code: u32| AttachmentRecord {
            network: network.into(),
            ifname: ifname.into(),
            delegate_type: "bridge".into(),
            duration_seconds: 0.001,
            code,
            message: None,
            ips: if code == 0 {
                vec!["10.1.2.3/24".into()]
            } else {
                vec![]
            },
        };
        Record {
            version: VERSION,
            verb: Verb::Add,
            time_unix_ms: 0,
            container_id: "c".into(),
            pod: Some(PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: None,
            }),
            duration_seconds: 0.0,
            code,
            message: (code != 0).then(|| "network e2e/red (net2): boom".to_string()),
            attachments: vec![att("eth0", "cluster", 0), att("net2", "e2e/red", code)],
            ipam: Vec::new(),
        }
    }

    #[test]
    fn plans_multus_events() {
        let p = plan(&rec(0));
        assert_eq!(
            p.iter().map(|p| p.message.as_str()).collect::<Vec<_>>(),
            vec![
                "Add eth0 [10.1.2.3/24] from cluster",
                "Add net2 [10.1.2.3/24] from e2e/red"
            ]
        );
        assert!(
            p.iter()
                .all(|p| p.type_ == "Normal" && p.reason == REASON_ADDED)
        );
        let f = plan(&rec(7));
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].type_, f[0].reason), ("Warning", REASON_FAILED));
        assert_eq!(
            f[0].message,
            "Add net2 from e2e/red failed: CNI error 7: network e2e/red (net2): boom"
        );
        let mut d = rec(0);
        d.verb = Verb::Del;
        assert!(plan(&d).is_empty());
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_220_245_999), "2026-12-02T14:04:05Z");
    }
}
