//! `meta-cni-agent`: the per-node daemon of the primary VXLAN overlay (flannel-like).
//!
//! # What it does
//!
//! 1. Learns this node's pod subnet: the own Node's `spec.podCIDR` (kube mode; it waits
//!    until the field is set), or the own entry of a nodes file (local mode).
//! 2. Sets the node up on a thread of its own ([`dataplane`]): detects the underlay, makes
//!    sure the VXLAN device exists ([`meta_overlay::ensure_device`]), installs the
//!    node-level masquerade (`ip saddr <pod subnet> ip daddr != <cluster CIDR>
//!    masquerade`, [`meta_firewall::Nftables::ensure_node_masq`]), then writes the subnet
//!    file (`/run/meta-cni/subnet.env`) that the CNI side reads and that meta-cni's
//!    `readinessindicatorfile` can point at — last, so that it means "ready".
//! 3. Kube mode: publishes the node's VTEP on its Node as the annotations
//!    [`ANNOTATION_VTEP_MAC`] (`meta-cni.io/vtep-mac`) and [`ANNOTATION_UNDERLAY_IP`]
//!    (`meta-cni.io/underlay-ip`), with a JSON merge patch of just those two keys, and only
//!    when they differ; then watches every Node (`kube::runtime::watcher`, bounded
//!    exponential backoff 0.8 s → 30 s on errors) and keeps the set of nodes that have a
//!    `podCIDR` and both annotations ([`kube::NodeSet`]). Local mode: re-reads the nodes
//!    file when its content changes.
//! 4. On every change of that set the data plane reconciles
//!    ([`meta_overlay::reconcile`]: neighbour → FDB → on-link route per remote
//!    node, entries of nodes that are gone removed), debounced, idempotent, and again every
//!    resync period (repairing drift). A restarted agent converges from whatever the kernel
//!    holds and changes nothing when it is all in place.
//! 5. On SIGTERM or SIGINT it stops watching, lets a running reconciliation finish and
//!    exits 0, leaving the device, the entries, the rule and the subnet file in place (like
//!    flannel: pods keep their connectivity across agent restarts and upgrades).
//!
//! 6. Kube mode: keeps caches of every NetworkAttachmentDefinition and of this node's pods
//!    (metadata only) through watchers ([`cache`]) and serves them to meta-cni on a unix
//!    socket only root may use ([`socket`], protocol [`meta_crd::agent_api`]), and patches
//!    network-status of its node's pods for meta-cni over its long-lived API connection.
//! 7. Kube mode with `--hotplug-conf`: hot-plug of the networks annotation into this
//!    node's running pods ([`hotplug`]).
//!
//! 8. Kube mode: the cluster IPAM's journal sync and reconciliation ([`ipam`]), on pod
//!    deletion and every `--ipam-reconcile-interval`.
//!
//! 9. Consumes the plugin's spool of ADD/DEL/CHECK records ([`spool`]): Kubernetes Events
//!    as Multus emits them (kube mode, [`events`]) and Prometheus metrics ([`metrics`],
//!    `--metrics-bind-address`, default `127.0.0.1:9191`).
//!
//! The API permissions it needs are exactly `deploy/rbac.yaml`'s ClusterRole
//! `meta-cni-agent`: nodes get, list, watch, patch; network-attachment-definitions and
//! pods list, watch; pods/status patch (the plugin's network-status and hot-plug's);
//! events create, patch; for meta-ipam: ippools and ipblocks get, list, create, update,
//! delete; ipamclaims list (and get, update/patch of their status for hot-plug).
//!
//! Configuration: [`config`] (flags and environment variables through clap, `--help`).

pub mod cache;
pub mod config;
pub mod dataplane;
pub mod events;
pub mod hotplug;
pub mod ipam;
pub mod kube;
pub mod local;
pub mod metrics;
pub mod records;
pub mod socket;
pub mod spool;

pub use config::{AgentConfig, Mode};
pub use records::{ANNOTATION_UNDERLAY_IP, ANNOTATION_VTEP_MAC};

use dataplane::{NodeMasq, Settings};
use std::future::Future;

/// Everything that stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or environment was refused by clap (unknown option, missing or
    /// invalid value), or asked for `--help`/`--version`: [`clap::Error::exit`] prints it.
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Overlay setup or reconciliation failed.
    #[error(transparent)]
    Overlay(#[from] meta_overlay::Error),
    /// The node masquerade rule could not be set.
    #[error("node masquerade: {0}")]
    Firewall(String),
    /// An API request failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The kube error.
        #[source]
        source: ::kube::Error,
    },
    /// A netlink handle could not be opened.
    #[error("netlink: {0}")]
    Netlink(#[from] meta_netlink::Error),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The data plane thread ended unexpectedly.
    #[error("the dataplane thread ended before the node was set up")]
    DataplaneGone,
}

impl Error {
    /// The process exit code for this error: 2 for configuration errors (0 for `--help`
    /// and `--version`), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Cli(e) => u8::try_from(e.exit_code()).unwrap_or(2),
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Result alias of the agent.
pub type Result<T> = std::result::Result<T, Error>;

/// A shutdown signal that can be awaited by many tasks.
#[derive(Debug, Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

/// Triggers a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(tokio::sync::watch::Sender<bool>);

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Completes once triggered (or once the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Runs `fut` unless the shutdown comes first (`None` then).
    pub async fn until<T>(&mut self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = fut => Some(v),
            _ = self.wait() => None,
        }
    }
}

impl ShutdownTrigger {
    /// Triggers the shutdown.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// Waits for SIGTERM or SIGINT, then triggers `trigger`.
pub async fn on_signals(trigger: ShutdownTrigger) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |what: &str| {
        let context = format!("install the {what} handler");
        move |source| Error::Io { context, source }
    };
    let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT"))?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name}: shutting down (kernel state is left in place)");
    trigger.trigger();
    Ok(())
}

/// The data plane settings of `cfg`.
pub fn settings(cfg: &AgentConfig) -> Settings {
    Settings {
        vni: cfg.vni,
        port: cfg.port,
        device: cfg.device.clone(),
        underlay_iface: cfg.underlay_iface.clone(),
        underlay_ip: cfg.underlay_ip,
        cluster_cidr: cfg.cluster_cidr,
        subnet_file: cfg.subnet_file.clone(),
        segment_state_dir: cfg.segment_state_dir.clone(),
        masquerade: cfg.masquerade,
        resync: cfg.resync,
        debounce: cfg.debounce,
    }
}

/// The nftables driver of `cfg` (node masquerade).
pub fn firewall(cfg: &AgentConfig) -> Box<dyn NodeMasq> {
    Box::new(meta_firewall::Nftables::new().with_lock_path(cfg.firewall_lock.clone()))
}

/// Starts the spool consumer (Events through `client`, kube mode) and the metrics server
/// (the caches' state from `caches`), both until `shutdown`.
pub async fn start_observability(
    cfg: &AgentConfig,
    client: Option<::kube::Client>,
    caches: Option<cache::Shared>,
    shutdown: Shutdown,
) -> Result<()> {
    spool::prepare(&cfg.spool_dir)?;
    let events = client.map(|c| events::Recorder::new(c, &cfg.node_name));
    let consumer = spool::Consumer::new(cfg.spool_dir.clone(), events);
    tokio::spawn(spool::run(consumer, shutdown.clone()));
    if let Some(addr) = cfg.metrics_bind_address {
        let l = metrics::Listener::bind(addr).await?;
        tokio::spawn(metrics::serve(l, caches, shutdown));
    }
    Ok(())
}

/// Runs the agent in the calling thread's network namespace until `shutdown`.
pub async fn run_until(cfg: &AgentConfig, shutdown: Shutdown) -> Result<()> {
    tracing::info!(
        node = %cfg.node_name,
        mode = ?cfg.mode,
        cluster_cidr = %cfg.cluster_cidr,
        vni = cfg.vni,
        port = cfg.port,
        device = %cfg.device,
        masquerade = cfg.masquerade,
        "meta-cni-agent {} starting",
        env!("CARGO_PKG_VERSION")
    );
    match &cfg.mode {
        Mode::Kube { kubeconfig } => kube::run(cfg, kubeconfig.as_deref(), shutdown).await,
        Mode::Local { nodes_file } => {
            start_observability(cfg, None, None, shutdown.clone()).await?;
            local::run(cfg, nodes_file, shutdown).await
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT, on a current-thread runtime of its own.
pub fn run(cfg: &AgentConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "build the tokio runtime".into(),
            source,
        })?;
    rt.block_on(async {
        let (trigger, shutdown) = Shutdown::new();
        let signals = tokio::spawn(on_signals(trigger));
        let res = run_until(cfg, shutdown).await;
        signals.abort();
        res
    })?;
    tracing::info!("meta-cni-agent stopped");
    Ok(())
}

/// Opens the netlink handle of the data plane (calling thread's namespace).
pub(crate) fn open_netlink() -> Result<meta_netlink::Netlink> {
    Ok(meta_netlink::Netlink::open(None)?)
}
