//! The plugin's side of the spool ([`meta_crd::spool`]): each ADD, DEL and CHECK leaves
//! one record of what it did (per attachment: network, interface, delegate type, duration,
//! outcome, addresses; the cluster IPAM's counters) for the node agent, which turns it into Kubernetes Events and
//! Prometheus metrics. Writing it is a readdir, a small file and a rename on tmpfs: no API
//! call, no connection, no waiting on the agent. A record that cannot be written is logged
//! and forgotten; it never changes the verb's outcome.

use crate::config::MetaConf;
use crate::journal::Attachment;
use cni_core::{CmdArgs, CniResult, Error};
use meta_crd::spool::{self, AttachmentRecord, IpamRecord, PodRef, Record, Verb, Written};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// The spool directory of `conf`: `spoolDir`, else `spool` next to `agentSocket`; `None`
/// when that is empty.
pub fn spool_dir(conf: &MetaConf) -> Option<PathBuf> {
    match &conf.spool_dir {
        Some(d) if d.as_os_str().is_empty() => None,
        Some(d) => Some(d.clone()),
        None => {
            if conf.agent_socket.as_os_str().is_empty() {
                return None;
            }
            Some(
                conf.agent_socket
                    .parent()
                    .map_or_else(|| PathBuf::from("spool"), |p| p.join("spool")),
            )
        }
    }
}

/// The delegate type of a network's configuration list (its first plugin's `type`; a
/// single configuration's `type`).
pub fn delegate_type(conf: &Value) -> String {
    conf.get("plugins")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .unwrap_or(conf)
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string()
}

/// Collects one verb's record while it runs; [`Recorder::finish`] spools it.
#[derive(Debug)]
pub struct Recorder {
    verb: Verb,
    start: Instant,
    started: SystemTime,
    dir: Option<PathBuf>,
    pod_uid: Option<String>,
    attachments: Vec<AttachmentRecord>,
}

impl Recorder {
    /// A recorder for `verb`, starting now.
    pub fn start(verb: Verb) -> Recorder {
        Recorder {
            verb,
            start: Instant::now(),
            started: SystemTime::now(),
            dir: None,
            pod_uid: None,
            attachments: Vec::new(),
        }
    }

    /// Once the configuration is loaded: where the record goes.
    pub fn configure(&mut self, conf: &MetaConf) {
        self.dir = spool_dir(conf);
    }

    /// The pod's UID when the verb learnt it (from the API or the journal).
    pub fn pod_uid(&mut self, uid: Option<&str>) {
        self.pod_uid = uid.map(str::to_string);
    }

    /// One attachment's delegate run, `took` long, with its outcome.
    pub fn attachment(
        &mut self,
        a: &Attachment,
        took: std::time::Duration,
        outcome: std::result::Result<Option<&CniResult>, &Error>,
    ) {
        let (code, message, ips) = match outcome {
            Ok(r) => (
                0,
                None,
                r.map(|r| r.ips.iter().map(|ip| ip.address.to_string()).collect())
                    .unwrap_or_default(),
            ),
            Err(e) => (e.code, Some(spool::clip(&e.to_string())), Vec::new()),
        };
        self.attachments.push(AttachmentRecord {
            network: a.network.clone(),
            ifname: a.ifname.clone(),
            delegate_type: delegate_type(&a.conf),
            duration_seconds: took.as_secs_f64(),
            code,
            message,
            ips,
        });
    }

    /// Spools the record of the verb that ended with `outcome`. Without a spool
    /// directory (not configured, or no agent ever created it) nothing is written.
    pub fn finish(mut self, args: &CmdArgs, outcome: std::result::Result<(), &Error>) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        let pod = args.env.args.k8s_pod().map(|p| PodRef {
            namespace: p.namespace,
            name: p.name,
            uid: p.uid.or(self.pod_uid.take()),
        });
        let (code, message) = match outcome {
            Ok(()) => (0, None),
            Err(e) => (e.code, Some(spool::clip(&e.to_string()))),
        };
        let rec = Record {
            version: spool::VERSION,
            verb: self.verb,
            time_unix_ms: spool::unix_ms(self.started),
            container_id: args.env.container_id.clone(),
            pod,
            duration_seconds: self.start.elapsed().as_secs_f64(),
            code,
            message,
            attachments: std::mem::take(&mut self.attachments),
            ipam: ipam_records(),
        };
        match spool::write(&dir, &rec, spool::MAX_FILES) {
            Ok(Written::Spooled(p)) => tracing::debug!("spooled {}", p.display()),
            Ok(Written::NoSpool) => {
                tracing::debug!("no spool directory {}: record not kept", dir.display())
            }
            Ok(Written::Full) => tracing::warn!(
                "spool {} holds {} records (is the agent down?): this {} record is dropped",
                dir.display(),
                spool::MAX_FILES,
                self.verb.as_str()
            ),
            Err(e) => tracing::warn!("spool {}: {e}: record dropped", dir.display()),
        }
    }
}

/// The cluster IPAM's counters of this process since they were last taken.
fn ipam_records() -> Vec<IpamRecord> {
    meta_ipam_cluster::stats::take()
        .into_iter()
        .map(|(network, c)| IpamRecord {
            network,
            allocations: c.allocations,
            releases: c.releases,
            conflicts: c.conflicts,
            api_requests: c.api_requests,
            overlap_skips: c.overlap_skips,
            overlap_conflicts: c.overlap_conflicts,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delegate_type_of_lists_and_single_configs() {
        assert_eq!(
            delegate_type(&json!({"plugins": [{"type": "macvlan"}, {"type": "tuning"}]})),
            "macvlan"
        );
        assert_eq!(delegate_type(&json!({"type": "bridge"})), "bridge");
        assert_eq!(delegate_type(&json!({"plugins": []})), "unknown");
        assert_eq!(delegate_type(&json!(null)), "unknown");
    }
}
