//! The agent's Prometheus metrics (OpenMetrics text), served on `GET /metrics` of
//! `--metrics-bind-address` (default `127.0.0.1:9191`: the node's loopback, off the pod
//! network; `0` or an empty value turns it off).
//!
//! From the plugin's spool records ([`crate::spool`]):
//! - `meta_cni_cni_duration_seconds{verb,outcome}`: whole ADD/DEL/CHECK (histogram);
//! - `meta_cni_attachment_duration_seconds{verb,network,delegate_type}`: each delegate run
//!   of a verb (histogram);
//! - `meta_cni_cni_failures_total{verb,code}`: failed verbs by CNI error code;
//! - `meta_cni_agent_spool_records_total{outcome}`: records taken from the spool
//!   (`processed`, `invalid`, `stale`);
//! - `meta_cni_agent_events_total{type,outcome}`: Kubernetes Events (`created`,
//!   `aggregated` = an existing Event's count patched, `rate_limited`, `failed`).
//!
//! From the agent itself:
//! - `meta_cni_agent_hotplug_operations_total{op,outcome}` ([`Metrics::hotplug`]): `attach`
//!   / `detach` with `ok` per interface hot-plugged or removed, `change` with `failed` per
//!   rolled-back change;
//! - `meta_cni_agent_cache_synced{cache}` (1 once the first listing arrived) and
//!   `meta_cni_agent_cache_objects{cache}` for `nads` and `pods` (kube mode);
//! - `meta_cni_agent_overlay_peers`: remote nodes programmed by the last reconciliation;
//! - `meta_cni_agent_reconcile_duration_seconds`: each data plane reconciliation
//!   (histogram).
//!
//! The cluster IPAM (`meta-ipam`), kube mode:
//! - `meta_cni_ipam_allocations_total{network}`, `meta_cni_ipam_releases_total{network}`,
//!   `meta_cni_ipam_conflicts_retried_total{network}` (conditional writes refused with 409
//!   and retried), `meta_cni_ipam_api_requests_total{network}`,
//!   `meta_cni_ipam_overlap_skips_total{network}` (addresses an overlapping range held)
//!   and `meta_cni_ipam_overlap_conflicts_total{network}` (addresses handed out offline
//!   that an overlapping range held too): from the plugin's spool records and the
//!   agent's own hot-plug;
//! - `meta_cni_ipam_pool_size_addresses{pool}`, `meta_cni_ipam_pool_blocks{pool}`,
//!   `meta_cni_ipam_pool_allocated_addresses{pool}` (every node) and
//!   `meta_cni_ipam_node_blocks{pool}`, `meta_cni_ipam_node_allocated_addresses{pool}`
//!   (this node), as the last reconciliation ([`crate::ipam`]) saw them;
//! - `meta_cni_ipam_journal_pending`: changes journalled on this node, not yet written;
//! - `meta_cni_agent_ipam_reconcile_duration_seconds` (histogram),
//!   `meta_cni_agent_ipam_reconcile_freed_total`,
//!   `meta_cni_agent_ipam_reconcile_blocks_deleted_total`,
//!   `meta_cni_agent_ipam_reconcile_reservations_freed_total`,
//!   `meta_cni_agent_ipam_reconcile_errors_total`.

use crate::cache::Shared;
use crate::{Error, Result, Shutdown};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachmentLabels {
    verb: String,
    network: String,
    delegate_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    verb: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    r#type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HotplugLabels {
    op: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

/// The cluster IPAM's metrics.
#[derive(Debug)]
struct Ipam {
    allocations: Family<NetworkLabels, Counter>,
    releases: Family<NetworkLabels, Counter>,
    conflicts: Family<NetworkLabels, Counter>,
    api_requests: Family<NetworkLabels, Counter>,
    overlap_skips: Family<NetworkLabels, Counter>,
    overlap_conflicts: Family<NetworkLabels, Counter>,
    pool_size: Family<PoolLabels, Gauge>,
    pool_blocks: Family<PoolLabels, Gauge>,
    pool_allocated: Family<PoolLabels, Gauge>,
    node_blocks: Family<PoolLabels, Gauge>,
    node_allocated: Family<PoolLabels, Gauge>,
    journal_pending: Gauge,
    reconcile_duration: Histogram,
    freed: Counter,
    blocks_deleted: Counter,
    reservations_freed: Counter,
    errors: Counter,
}

fn gauge_value<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The registry and the metrics in it; one per process ([`global`]).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cni_duration: Family<VerbLabels, Histogram, fn() -> Histogram>,
    attachment_duration: Family<AttachmentLabels, Histogram, fn() -> Histogram>,
    cni_failures: Family<FailureLabels, Counter>,
    spool_records: Family<OutcomeLabels, Counter>,
    events: Family<EventLabels, Counter>,
    hotplug: Family<HotplugLabels, Counter>,
    cache_synced: Family<CacheLabels, Gauge>,
    cache_objects: Family<CacheLabels, Gauge>,
    overlay_peers: Gauge,
    reconcile_duration: Histogram,
    ipam: Ipam,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric of the module docs.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let cni_duration = Family::<VerbLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let attachment_duration =
            Family::<AttachmentLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let m = Metrics {
            cni_duration,
            attachment_duration,
            cni_failures: Family::default(),
            spool_records: Family::default(),
            events: Family::default(),
            hotplug: Family::default(),
            cache_synced: Family::default(),
            cache_objects: Family::default(),
            overlay_peers: Gauge::default(),
            reconcile_duration: latency_histogram(),
            ipam: Ipam {
                allocations: Family::default(),
                releases: Family::default(),
                conflicts: Family::default(),
                api_requests: Family::default(),
                overlap_skips: Family::default(),
                overlap_conflicts: Family::default(),
                pool_size: Family::default(),
                pool_blocks: Family::default(),
                pool_allocated: Family::default(),
                node_blocks: Family::default(),
                node_allocated: Family::default(),
                journal_pending: Gauge::default(),
                reconcile_duration: latency_histogram(),
                freed: Counter::default(),
                blocks_deleted: Counter::default(),
                reservations_freed: Counter::default(),
                errors: Counter::default(),
            },
            registry: Registry::default(),
        };
        registry.register(
            "meta_cni_cni_duration_seconds",
            "Duration of meta-cni's ADD, DEL and CHECK",
            m.cni_duration.clone(),
        );
        registry.register(
            "meta_cni_attachment_duration_seconds",
            "Duration of each delegate run of a verb, per network and delegate type",
            m.attachment_duration.clone(),
        );
        registry.register(
            "meta_cni_cni_failures",
            "Failed meta-cni verbs by CNI error code",
            m.cni_failures.clone(),
        );
        registry.register(
            "meta_cni_agent_spool_records",
            "Records taken from the plugin's spool, by outcome",
            m.spool_records.clone(),
        );
        registry.register(
            "meta_cni_agent_events",
            "Kubernetes Events from spool records, by type and outcome",
            m.events.clone(),
        );
        registry.register(
            "meta_cni_agent_hotplug_operations",
            "Hot-plug attach and detach operations, by outcome",
            m.hotplug.clone(),
        );
        registry.register(
            "meta_cni_agent_cache_synced",
            "1 once the cache's first complete listing has arrived",
            m.cache_synced.clone(),
        );
        registry.register(
            "meta_cni_agent_cache_objects",
            "Objects in the cache",
            m.cache_objects.clone(),
        );
        registry.register(
            "meta_cni_agent_overlay_peers",
            "Remote nodes programmed by the last overlay reconciliation",
            m.overlay_peers.clone(),
        );
        registry.register(
            "meta_cni_agent_reconcile_duration_seconds",
            "Duration of each data plane reconciliation",
            m.reconcile_duration.clone(),
        );
        let i = &m.ipam;
        for (name, help, fam) in [
            (
                "meta_cni_ipam_allocations",
                "Addresses allocated by meta-ipam on this node",
                &i.allocations,
            ),
            (
                "meta_cni_ipam_releases",
                "Addresses released by meta-ipam on this node",
                &i.releases,
            ),
            (
                "meta_cni_ipam_conflicts_retried",
                "meta-ipam block writes refused by a resourceVersion precondition (409) and retried",
                &i.conflicts,
            ),
            (
                "meta_cni_ipam_api_requests",
                "API requests of meta-ipam on this node",
                &i.api_requests,
            ),
            (
                "meta_cni_ipam_overlap_skips",
                "Addresses meta-ipam skipped because an overlapping range holds them",
                &i.overlap_skips,
            ),
            (
                "meta_cni_ipam_overlap_conflicts",
                "Addresses handed out while the API server was unreachable that an overlapping range held as well",
                &i.overlap_conflicts,
            ),
        ] {
            registry.register(name, help, fam.clone());
        }
        for (name, help, fam) in [
            (
                "meta_cni_ipam_pool_size_addresses",
                "Addresses in the pool's subnet",
                &i.pool_size,
            ),
            (
                "meta_cni_ipam_pool_blocks",
                "Blocks of the pool claimed by any node",
                &i.pool_blocks,
            ),
            (
                "meta_cni_ipam_pool_allocated_addresses",
                "Addresses of the pool allocated on any node",
                &i.pool_allocated,
            ),
            (
                "meta_cni_ipam_node_blocks",
                "Blocks of the pool claimed by this node",
                &i.node_blocks,
            ),
            (
                "meta_cni_ipam_node_allocated_addresses",
                "Addresses allocated in this node's blocks of the pool",
                &i.node_allocated,
            ),
        ] {
            registry.register(name, help, fam.clone());
        }
        registry.register(
            "meta_cni_ipam_journal_pending",
            "meta-ipam changes journalled on this node and not yet written to the API server",
            i.journal_pending.clone(),
        );
        registry.register(
            "meta_cni_agent_ipam_reconcile_duration_seconds",
            "Duration of each meta-ipam reconciliation pass",
            i.reconcile_duration.clone(),
        );
        registry.register(
            "meta_cni_agent_ipam_reconcile_freed",
            "Allocations of gone pods freed by the reconciliation",
            i.freed.clone(),
        );
        registry.register(
            "meta_cni_agent_ipam_reconcile_blocks_deleted",
            "Empty blocks of gone nodes deleted by the reconciliation",
            i.blocks_deleted.clone(),
        );
        registry.register(
            "meta_cni_agent_ipam_reconcile_reservations_freed",
            "Address reservations no allocation backs any more, deleted by the reconciliation",
            i.reservations_freed.clone(),
        );
        registry.register(
            "meta_cni_agent_ipam_reconcile_errors",
            "meta-ipam reconciliation passes that failed",
            i.errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one hot-plug operation: `op` `attach` or `detach`, `outcome` `success`,
    /// `failure` or `rolled_back`.
    pub fn hotplug(&self, op: &str, outcome: &str) {
        self.hotplug
            .get_or_create(&HotplugLabels {
                op: op.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Observes one spool record's verb and attachments.
    pub fn observe_record(&self, rec: &meta_crd::spool::Record) {
        let verb = rec.verb.as_str().to_string();
        let outcome = if rec.code == 0 { "success" } else { "failure" };
        self.cni_duration
            .get_or_create(&VerbLabels {
                verb: verb.clone(),
                outcome: outcome.to_string(),
            })
            .observe(rec.duration_seconds.max(0.0));
        if rec.code != 0 {
            self.cni_failures
                .get_or_create(&FailureLabels {
                    verb: verb.clone(),
                    code: rec.code.to_string(),
                })
                .inc();
        }
        for a in &rec.attachments {
            self.attachment_duration
                .get_or_create(&AttachmentLabels {
                    verb: verb.clone(),
                    network: a.network.clone(),
                    delegate_type: a.delegate_type.clone(),
                })
                .observe(a.duration_seconds.max(0.0));
        }
        for r in &rec.ipam {
            self.ipam_counters(
                &r.network,
                &meta_ipam_cluster::stats::Counters {
                    allocations: r.allocations,
                    releases: r.releases,
                    conflicts: r.conflicts,
                    api_requests: r.api_requests,
                    overlap_skips: r.overlap_skips,
                    overlap_conflicts: r.overlap_conflicts,
                },
            );
        }
    }

    /// Adds one process's (or one verb's) cluster IPAM counters for `network`.
    pub fn ipam_counters(&self, network: &str, c: &meta_ipam_cluster::stats::Counters) {
        let l = NetworkLabels {
            network: network.to_string(),
        };
        let i = &self.ipam;
        for (fam, v) in [
            (&i.allocations, c.allocations),
            (&i.releases, c.releases),
            (&i.conflicts, c.conflicts),
            (&i.api_requests, c.api_requests),
            (&i.overlap_skips, c.overlap_skips),
            (&i.overlap_conflicts, c.overlap_conflicts),
        ] {
            fam.get_or_create(&l).inc_by(v);
        }
    }

    /// Records one IPAM reconciliation pass: its duration, what it freed and deleted,
    /// the pools' usage (pools it did not see are dropped) and the journal's backlog.
    pub fn ipam_pass(
        &self,
        took: Duration,
        pass: &meta_ipam_cluster::reconcile::NodePass,
        pending: usize,
    ) {
        let i = &self.ipam;
        i.reconcile_duration.observe(took.as_secs_f64());
        i.freed.inc_by(pass.report.freed as u64);
        i.blocks_deleted.inc_by(pass.report.blocks_deleted as u64);
        i.reservations_freed
            .inc_by(pass.report.reservations_freed as u64);
        i.journal_pending.set(gauge_value(pending));
        let fams = [
            &i.pool_size,
            &i.pool_blocks,
            &i.pool_allocated,
            &i.node_blocks,
            &i.node_allocated,
        ];
        for f in fams {
            f.clear();
        }
        for p in &pass.pools {
            let l = PoolLabels {
                pool: p.pool.clone(),
            };
            i.pool_size.get_or_create(&l).set(gauge_value(p.size));
            i.pool_blocks.get_or_create(&l).set(gauge_value(p.blocks));
            i.pool_allocated
                .get_or_create(&l)
                .set(gauge_value(p.allocated));
            i.node_blocks
                .get_or_create(&l)
                .set(gauge_value(p.node_blocks));
            i.node_allocated
                .get_or_create(&l)
                .set(gauge_value(p.node_allocated));
        }
    }

    /// Counts a failed IPAM reconciliation pass (the journal's backlog when known).
    pub fn ipam_failed(&self, took: Duration, pending: Option<usize>) {
        self.ipam.reconcile_duration.observe(took.as_secs_f64());
        self.ipam.errors.inc();
        if let Some(p) = pending {
            self.ipam.journal_pending.set(gauge_value(p));
        }
    }

    /// Counts a record taken from the spool (`processed`, `invalid`, `stale`).
    pub fn spool_record(&self, outcome: &str) {
        self.spool_records
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts an Event (`type` Normal/Warning; `outcome` created, aggregated,
    /// rate_limited, failed).
    pub fn event(&self, type_: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                r#type: type_.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records one data plane reconciliation: its duration and, when it produced a
    /// report, the peers programmed.
    pub fn reconciled(&self, took: Duration, peers: Option<usize>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(p) = peers {
            self.overlay_peers.set(i64::try_from(p).unwrap_or(i64::MAX));
        }
    }

    /// Copies the caches' state into the gauges.
    pub fn caches(&self, state: &Shared) {
        let st = state.lock().status();
        for (name, c) in [("nads", st.nads), ("pods", st.pods)] {
            let l = CacheLabels {
                cache: name.to_string(),
            };
            self.cache_synced.get_or_create(&l).set(i64::from(c.synced));
            self.cache_objects
                .get_or_create(&l)
                .set(i64::try_from(c.count).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Counts one hot-plug operation in [`global`] (see [`Metrics::hotplug`]).
pub fn hotplug(op: &str, outcome: &str) {
    global().hotplug(op, outcome);
}

/// A bound metrics listener.
#[derive(Debug)]
pub struct Listener(tokio::net::TcpListener);

impl Listener {
    /// Binds `addr` (must run inside a tokio runtime).
    pub async fn bind(addr: SocketAddr) -> Result<Listener> {
        tokio::net::TcpListener::bind(addr)
            .await
            .map(Listener)
            .map_err(|source| Error::Io {
                context: format!("bind the metrics address {addr}"),
                source,
            })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local_addr().ok()
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    caches: Option<Shared>,
) -> std::result::Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let resp = |status: StatusCode, ct: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(ct),
        );
        r
    };
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let m = global();
            if let Some(c) = &caches {
                m.caches(c);
            }
            resp(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                m.encode(),
            )
        }
        (_, "/metrics") => resp(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
        _ => resp(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

/// Serves `GET /metrics` on `listener` until `shutdown`; `caches` are read at each scrape.
pub async fn serve(listener: Listener, caches: Option<Shared>, mut shutdown: Shutdown) {
    if let Some(a) = listener.local_addr() {
        tracing::info!("metrics on http://{a}/metrics");
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            a = listener.0.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let caches = caches.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, caches.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            // A scrape is one small request: bound a slow client.
            match tokio::time::timeout(Duration::from_secs(30), conn).await {
                Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
                Err(_) => tracing::debug!("metrics connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meta_crd::spool::{AttachmentRecord, Record, VERSION, Verb};

    #[test]
    fn records_become_labelled_histograms_and_failure_counts() {
        let m = Metrics::new();
        let att = |network: &str, t: &str| AttachmentRecord {
            network: network.into(),
            ifname: "net1".into(),
            delegate_type: t.into(),
            duration_seconds: 0.002,
            code: 0,
            message: None,
            ips: vec![],
        };
        let mut r = Record {
            version: VERSION,
            verb: Verb::Add,
            time_unix_ms: 0,
            container_id: "c".into(),
            pod: None,
            duration_seconds: 0.01,
            code: 0,
            message: None,
            attachments: vec![att("cluster", "bridge"), att("e2e/green", "macvlan")],
            ipam: vec![meta_crd::spool::IpamRecord {
                network: "green".into(),
                allocations: 1,
                releases: 0,
                conflicts: 1,
                api_requests: 4,
                overlap_skips: 3,
                overlap_conflicts: 0,
            }],
        };
        m.observe_record(&r);
        r.verb = Verb::Del;
        r.code = 11;
        r.attachments.truncate(1);
        m.observe_record(&r);
        m.hotplug("attach", "success");
        let t = m.encode();
        for want in [
            r#"meta_cni_cni_duration_seconds_count{verb="ADD",outcome="success"} 1"#,
            r#"meta_cni_cni_duration_seconds_count{verb="DEL",outcome="failure"} 1"#,
            r#"meta_cni_attachment_duration_seconds_count{verb="ADD",network="e2e/green",delegate_type="macvlan"} 1"#,
            r#"meta_cni_attachment_duration_seconds_count{verb="DEL",network="cluster",delegate_type="bridge"} 1"#,
            r#"meta_cni_cni_failures_total{verb="DEL",code="11"} 1"#,
            r#"meta_cni_agent_hotplug_operations_total{op="attach",outcome="success"} 1"#,
            // The IPAM counters of both records (the DEL kept the ADD's ipam list).
            r#"meta_cni_ipam_allocations_total{network="green"} 2"#,
            r#"meta_cni_ipam_conflicts_retried_total{network="green"} 2"#,
            r#"meta_cni_ipam_api_requests_total{network="green"} 8"#,
            r#"meta_cni_ipam_overlap_skips_total{network="green"} 6"#,
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
        assert!(!t.contains(r#"code="0""#), "{t}");
    }

    #[test]
    fn ipam_passes_set_the_pool_gauges_and_drop_gone_pools() {
        use meta_ipam_cluster::reconcile::{NodePass, PoolUsage, Report};
        let m = Metrics::new();
        let pool = |name: &str, allocated: usize| PoolUsage {
            pool: name.into(),
            size: 1024,
            blocks: 3,
            allocated,
            node_blocks: 1,
            node_allocated: 2,
        };
        let mut pass = NodePass {
            report: Report {
                freed: 2,
                blocks_deleted: 1,
                too_young: 0,
                reservations_freed: 5,
            },
            pools: vec![pool("lan-10-9-0-0-22", 17), pool("old-10-8-0-0-24", 0)],
            not_installed: false,
        };
        m.ipam_pass(Duration::from_millis(3), &pass, 4);
        let t = m.encode();
        for want in [
            r#"meta_cni_ipam_pool_size_addresses{pool="lan-10-9-0-0-22"} 1024"#,
            r#"meta_cni_ipam_pool_blocks{pool="lan-10-9-0-0-22"} 3"#,
            r#"meta_cni_ipam_pool_allocated_addresses{pool="lan-10-9-0-0-22"} 17"#,
            r#"meta_cni_ipam_node_blocks{pool="lan-10-9-0-0-22"} 1"#,
            r#"meta_cni_ipam_node_allocated_addresses{pool="lan-10-9-0-0-22"} 2"#,
            r#"meta_cni_ipam_pool_blocks{pool="old-10-8-0-0-24"} 3"#,
            "meta_cni_ipam_journal_pending 4",
            "meta_cni_agent_ipam_reconcile_freed_total 2",
            "meta_cni_agent_ipam_reconcile_blocks_deleted_total 1",
            "meta_cni_agent_ipam_reconcile_reservations_freed_total 5",
            "meta_cni_agent_ipam_reconcile_duration_seconds_count 1",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
        pass.pools.truncate(1);
        pass.report = Report::default();
        m.ipam_pass(Duration::from_millis(3), &pass, 0);
        m.ipam_failed(Duration::from_millis(1), None);
        let t = m.encode();
        assert!(!t.contains("old-10-8-0-0-24"), "{t}");
        assert!(
            t.contains("meta_cni_agent_ipam_reconcile_freed_total 2"),
            "{t}"
        );
        assert!(
            t.contains("meta_cni_agent_ipam_reconcile_errors_total 1"),
            "{t}"
        );
        assert!(t.contains("meta_cni_ipam_journal_pending 0"), "{t}");
    }
}
