//! Kube mode: the cluster IPAM's (`meta-ipam`) side of the node agent, on a thread of its
//! own ("ipam-reconcile"; meta-ipam's client is blocking). Each pass:
//!
//! 1. writes the journal of every `--ipam-data-dir` to the API server
//!    ([`meta_ipam_cluster::sync_data_dir`]): what an ADD or DEL journalled while the API
//!    server was unreachable reaches the block objects even when no further CNI call
//!    comes;
//! 2. reconciles ([`meta_ipam_cluster::reconcile::reconcile_node`]): frees this node's
//!    allocations whose pod UID (or IPAMClaim) is gone and those of nodes that are gone,
//!    and deletes the empty blocks of gone nodes, never touching an allocation younger
//!    than `--ipam-min-age`;
//! 3. sets the pool gauges of [`crate::metrics`] and adds the counters of the agent's own
//!    allocations (hot-plug runs meta-ipam in this process).
//!
//! A pass runs every `--ipam-reconcile-interval` and shortly ([`POD_GONE_DELAY`]) after a
//! pod of this node is deleted (the pod watch of [`crate::cache`] calls
//! [`Trigger::pod_gone`]). Each pass makes a fresh client, so an API server that was
//! unreachable in one pass is tried again in the next. A cluster without the IpBlock CRD
//! (meta-ipam not installed) costs one request per pass.

use crate::metrics;
use crate::{AgentConfig, Error, Result};
use meta_ipam_cluster::api::Kube;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long after a pod deletion the pass runs (deletions in a burst share one pass).
pub const POD_GONE_DELAY: Duration = Duration::from_secs(1);
/// Bound of each API request of a pass.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Msg {
    PodGone,
    Stop,
}

/// Asks the reconciliation thread for a pass; dropping every trigger stops it.
#[derive(Debug, Clone)]
pub struct Trigger(mpsc::Sender<Msg>);

impl Trigger {
    /// A pod of this node was deleted: a pass soon.
    pub fn pod_gone(&self) {
        let _ = self.0.send(Msg::PodGone);
    }

    /// Stops the thread after its current pass.
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

/// What the thread needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name.
    pub node: String,
    /// The data directories whose journals are written.
    pub data_dirs: Vec<PathBuf>,
    /// Period of the passes.
    pub interval: Duration,
    /// Allocations younger than this are left.
    pub min_age: Duration,
}

impl Settings {
    /// The settings of `cfg`; `None` when the reconciliation is off (interval 0).
    pub fn of(cfg: &AgentConfig) -> Option<Settings> {
        (!cfg.ipam_reconcile_interval.is_zero()).then(|| Settings {
            node: cfg.node_name.clone(),
            data_dirs: cfg.ipam_data_dirs.clone(),
            interval: cfg.ipam_reconcile_interval,
            min_age: cfg.ipam_min_age,
        })
    }
}

/// Starts the thread (its first pass right away) with the API configuration `api`.
pub fn spawn(api: kube::Config, s: Settings) -> Result<Trigger> {
    let (tx, rx) = mpsc::channel();
    tracing::info!(
        interval = ?s.interval,
        min_age = ?s.min_age,
        data_dirs = ?s.data_dirs,
        "meta-ipam reconciliation on"
    );
    std::thread::Builder::new()
        .name("ipam-reconcile".into())
        .spawn(move || run(api, s, rx))
        .map_err(|source| Error::Io {
            context: "start the ipam-reconcile thread".into(),
            source,
        })?;
    Ok(Trigger(tx))
}

fn run(api: kube::Config, s: Settings, rx: mpsc::Receiver<Msg>) {
    let mut next = Instant::now();
    let mut said_error = String::new();
    let mut said_absent = false;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::PodGone) => {
                next = next.min(Instant::now() + POD_GONE_DELAY);
                continue;
            }
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let t0 = Instant::now();
        match pass(&api, &s) {
            Ok((p, pending)) => {
                metrics::global().ipam_pass(t0.elapsed(), &p, pending);
                if p.not_installed {
                    if !said_absent {
                        tracing::info!(
                            "the IpBlock CRD (ipam.meta-cni.io) is not installed: meta-ipam is not in use"
                        );
                        said_absent = true;
                    }
                } else {
                    said_absent = false;
                }
                if p.report.freed > 0 || p.report.blocks_deleted > 0 {
                    tracing::info!(
                        freed = p.report.freed,
                        blocks_deleted = p.report.blocks_deleted,
                        too_young = p.report.too_young,
                        took = ?t0.elapsed(),
                        "meta-ipam reconciled"
                    );
                }
                if !said_error.is_empty() {
                    tracing::info!("meta-ipam reconciliation works again");
                    said_error.clear();
                }
            }
            Err((e, pending)) => {
                metrics::global().ipam_failed(t0.elapsed(), pending);
                let msg = e.to_string();
                if msg != said_error {
                    tracing::warn!(
                        "meta-ipam reconciliation: {msg} (retried every {:?})",
                        s.interval
                    );
                    said_error = msg;
                }
            }
        }
        for (network, c) in meta_ipam_cluster::stats::take() {
            metrics::global().ipam_counters(&network, &c);
        }
        next = Instant::now() + s.interval;
    }
    tracing::debug!("ipam-reconcile thread stopped");
}

type PassError = (meta_ipam_cluster::Error, Option<usize>);

/// One pass: journals, then the reconciliation. Returns what it saw and the journals'
/// backlog.
fn pass(
    api: &kube::Config,
    s: &Settings,
) -> std::result::Result<(meta_ipam_cluster::reconcile::NodePass, usize), PassError> {
    let client = || Kube::from_config(api.clone(), API_TIMEOUT).map_err(|e| (e, None));
    let mut pending = 0;
    let mut first_err = None;
    for d in &s.data_dirs {
        match meta_ipam_cluster::sync_data_dir(d, &s.node, client()?) {
            Ok(n) => pending += n,
            Err(e) => {
                tracing::debug!("journal {}: {e}", d.display());
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err((e, Some(pending)));
    }
    let mut kube = client()?;
    let p = meta_ipam_cluster::reconcile::reconcile_node(&mut kube, &s.node, s.min_age)
        .map_err(|e| (e, Some(pending)))?;
    Ok((p, pending))
}
