//! The kernel side of the agent, on a thread of its own.
//!
//! [`Dataplane::spawn`] starts a thread that owns the netlink handle (a
//! [`meta_netlink::Netlink`] blocks on its own runtime, so it must never be used from an
//! async task). The thread first sets the node up ([`setup`]: underlay detection, VXLAN
//! device, node masquerade, subnet file, in that order, so the subnet file — the CNI
//! side's signal that the overlay is ready — comes last) and reports the node's own record
//! through a oneshot channel. Then it waits for desired node sets ([`Dataplane::update`]):
//! updates arriving within the debounce time of each other are coalesced (only the newest
//! set counts; a steady stream still gets a reconciliation at least every ten debounce
//! periods), and every run
//!
//! 1. checks the node masquerade rule and the subnet file (cheap; repairs drift),
//! 2. calls [`overlay::reconcile`] with the newest set (idempotent: nothing is sent to the
//!    kernel when nothing differs).
//!
//! A run that failed (or left failed changes) is retried with a backoff of 1 s doubling up
//! to 30 s; otherwise the next run comes with the next update or after the resync period.
//! Stopping ([`Dataplane::stop`], or dropping it) lets a running reconciliation finish and
//! leaves the kernel state in place.

use super::{Error, Result};
use ipnet::IpNet;
use meta_netlink::{Mac, NetlinkOps};
use meta_overlay::{
    self as overlay, NodeRecord, OverlayConfig, Report, Skipped, Underlay, read_subnet_file,
    write_subnet_file,
};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest retry backoff after a failed reconciliation.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The node-level masquerade, as the data plane needs it (a trait so that tests can run
/// without nftables).
pub trait NodeMasq: Send {
    /// Makes the node masquerade rule be `want` = (pod subnet, cluster CIDR), or absent for
    /// `None`. Returns whether anything changed.
    fn apply(&self, want: Option<(IpNet, IpNet)>) -> std::result::Result<bool, String>;
}

impl NodeMasq for meta_firewall::Nftables {
    fn apply(&self, want: Option<(IpNet, IpNet)>) -> std::result::Result<bool, String> {
        match want {
            Some((subnet, cluster)) => self.ensure_node_masq(subnet, cluster),
            None => self.remove_node_masq(),
        }
        .map_err(|e| e.to_string())
    }
}

/// The overlay settings of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// VXLAN device name.
    pub device: String,
    /// Underlay interface (`None` = detected).
    pub underlay_iface: Option<String>,
    /// Local underlay address (`None` = [`Own::underlay_ip`], else detected).
    pub underlay_ip: Option<IpAddr>,
    /// The cluster CIDR.
    pub cluster_cidr: IpNet,
    /// The subnet file.
    pub subnet_file: PathBuf,
    /// meta-vxlan's segment state directory (owner files of secondary segments).
    pub segment_state_dir: PathBuf,
    /// Install (true) or remove (false) the node masquerade rule.
    pub masquerade: bool,
    /// Period of unprompted runs (zero = none).
    pub resync: Duration,
    /// Quiet time before a run.
    pub debounce: Duration,
}

/// What this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    /// Node name.
    pub name: String,
    /// Its pod subnet.
    pub pod_subnet: IpNet,
    /// A VTEP MAC to use instead of the one derived from the underlay IP.
    pub vtep_mac: Option<Mac>,
    /// The underlay address the node list says this node has (used when
    /// [`Settings::underlay_ip`] is not set).
    pub underlay_ip: Option<IpAddr>,
}

/// The node after [`setup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// What the other nodes need (to be published).
    pub record: NodeRecord,
    /// The underlay interface.
    pub underlay_iface: String,
    /// The overlay (pod) MTU.
    pub mtu: u32,
}

/// Counters of the data plane thread (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Runs so far.
    pub runs: u64,
    /// Remote nodes fully programmed after the last run.
    pub programmed: usize,
    /// Changes of the last run.
    pub changes: usize,
    /// Records skipped in the last run.
    pub skipped: usize,
    /// Failed changes in the last run (or 1 when the run failed as a whole).
    pub failed: usize,
    /// Size of the last desired set.
    pub desired: usize,
}

enum Msg {
    Update(Vec<NodeRecord>),
    Stop,
}

/// Handle of the data plane thread.
pub struct Dataplane {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<Stats>>,
}

/// Sets the node up: detects the underlay, makes sure the VXLAN device exists, applies the
/// node masquerade setting, writes the subnet file (only when its content differs). Sends
/// no mutating request when everything is in place. Returns the overlay configuration.
pub fn setup<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    s: &Settings,
    own: &Own,
    masq: &dyn NodeMasq,
) -> Result<OverlayConfig> {
    let local_ip = s.underlay_ip.or(own.underlay_ip);
    let underlay = Underlay::detect(nl, s.underlay_iface.as_deref(), local_ip)?;
    let mut cfg = OverlayConfig::new(underlay, s.cluster_cidr, own.pod_subnet);
    cfg.vni = s.vni;
    cfg.port = s.port;
    cfg.device = s.device.clone();
    cfg.vtep_mac = own.vtep_mac;
    cfg.validate()?;
    let dev = overlay::ensure_device(nl, &cfg)?;
    tracing::info!(
        device = %cfg.device,
        index = dev.index,
        vni = cfg.vni,
        port = cfg.port,
        underlay = %cfg.underlay.iface,
        local_ip = %cfg.underlay.local_ip,
        vtep_mac = %meta_netlink::format_mac(&cfg.vtep_mac()),
        mtu = cfg.mtu(),
        pod_subnet = %cfg.pod_subnet,
        "overlay device ready"
    );
    node_checks(&cfg, s, masq)?;
    Ok(cfg)
}

/// Secondary VXLAN segments (meta-vxlan's `mvx<vni>` devices) created without a static
/// `peers` list get every other node's underlay address as their flood list, through the
/// same `reconcile_peers` the delegate uses for static peers. Failures are logged; the
/// next run retries.
fn segment_peers<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    cfg: &OverlayConfig,
    s: &Settings,
    desired: &[NodeRecord],
) {
    let links = match nl.links() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("segments: cannot list links: {e}");
            return;
        }
    };
    let local = cfg.underlay.local_ip;
    let peers: Vec<IpAddr> = desired
        .iter()
        .map(|n| n.underlay_ip)
        .filter(|ip| *ip != local)
        .collect();
    for l in links {
        let Some(vx) = l.vxlan.as_ref() else { continue };
        if l.name != meta_overlay::segment_device_name(vx.vni) {
            continue; // the primary device, or a VXLAN device that is not ours
        }
        if meta_overlay::read_owner(&s.segment_state_dir, vx.vni).is_some_and(|o| o.static_peers) {
            continue;
        }
        match meta_overlay::reconcile_peers(nl, &l.name, Some(local), &peers) {
            Ok(r) if !r.changes.is_empty() => {
                tracing::info!(
                    "segment {} (VNI {}): {} peer change(s)",
                    l.name,
                    vx.vni,
                    r.changes.len()
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("segment {}: cannot program peers: {e}", l.name),
        }
    }
}

/// The masquerade rule and the subnet file, as `s` wants them.
fn node_checks(cfg: &OverlayConfig, s: &Settings, masq: &dyn NodeMasq) -> Result<()> {
    let want = s.masquerade.then_some((cfg.pod_subnet, cfg.cluster_cidr));
    match masq.apply(want) {
        Ok(true) => match want {
            Some((subnet, cluster)) => tracing::info!(
                "node masquerade: ip saddr {subnet} ip daddr != {cluster} masquerade"
            ),
            None => tracing::info!("node masquerade removed (masquerade off)"),
        },
        Ok(false) => {}
        Err(e) => return Err(Error::Firewall(e)),
    }
    let current = read_subnet_file(&s.subnet_file).ok();
    let same = current.is_some_and(|f| {
        f.subnet == cfg.pod_subnet && f.cluster_cidr == cfg.cluster_cidr && f.mtu == cfg.mtu()
    });
    if !same {
        write_subnet_file(&s.subnet_file, cfg.pod_subnet, cfg.mtu(), cfg.cluster_cidr)?;
        tracing::info!(
            path = %s.subnet_file.display(),
            subnet = %cfg.pod_subnet,
            network = %cfg.cluster_cidr,
            mtu = cfg.mtu(),
            "subnet file written"
        );
    }
    Ok(())
}

impl Dataplane {
    /// Starts the thread: `open` makes the netlink handle there, then [`setup`] runs; its
    /// outcome arrives on the returned receiver, and the thread then serves updates (on
    /// failure it ends).
    pub fn spawn<N, F>(
        settings: Settings,
        own: Own,
        open: F,
        masq: Box<dyn NodeMasq>,
    ) -> Result<(Dataplane, tokio::sync::oneshot::Receiver<Result<Ready>>)>
    where
        N: NetlinkOps + 'static,
        F: FnOnce() -> Result<N> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("dataplane".into())
            .spawn(move || {
                let started = (|| {
                    let mut nl = open()?;
                    let cfg = setup(&mut nl, &settings, &own, masq.as_ref())?;
                    Ok((nl, cfg))
                })();
                match started {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Ok((mut nl, cfg)) => {
                        let _ = ready_tx.send(Ok(Ready {
                            record: cfg.record(&own.name),
                            underlay_iface: cfg.underlay.iface.clone(),
                            mtu: cfg.mtu(),
                        }));
                        serve(&mut nl, &cfg, &settings, masq.as_ref(), &rx, &st);
                    }
                }
            })
            .map_err(|e| Error::Io {
                context: "spawn the dataplane thread".into(),
                source: e,
            })?;
        Ok((
            Dataplane {
                tx,
                thread: Some(thread),
                stats,
            },
            ready_rx,
        ))
    }

    /// Hands the thread a new desired set (all nodes, this one included or not).
    pub fn update(&self, desired: Vec<NodeRecord>) {
        let _ = self.tx.send(Msg::Update(desired));
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the thread (after a running reconciliation) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the dataplane thread panicked");
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The thread's loop: see the module docs.
fn serve<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    cfg: &OverlayConfig,
    s: &Settings,
    masq: &dyn NodeMasq,
    rx: &mpsc::Receiver<Msg>,
    stats: &Mutex<Stats>,
) {
    let max_debounce = s.debounce * 10;
    let mut latest: Option<Vec<NodeRecord>> = None;
    let mut first_pending: Option<Instant> = None;
    let mut debounce_at: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    let mut resync_at = (!s.resync.is_zero()).then(|| Instant::now() + s.resync);
    // Segments appear whenever a pod joins a new secondary network: look for them often
    // (cheap: one link dump, no change when all is in place).
    const SEGMENT_CHECK: Duration = Duration::from_secs(2);
    let mut segments_at = Instant::now() + SEGMENT_CHECK;
    let mut backoff = Duration::from_secs(1);
    let mut last_skipped: Vec<Skipped> = Vec::new();
    loop {
        let due = earliest(earliest(debounce_at, retry_at), resync_at);
        let wake = earliest(due, Some(segments_at)).unwrap_or(segments_at);
        let msg = rx.recv_timeout(wake.saturating_duration_since(Instant::now()));
        match msg {
            Ok(Msg::Update(v)) => {
                latest = Some(v);
                let now = Instant::now();
                let first = *first_pending.get_or_insert(now);
                debounce_at = Some((now + s.debounce).min(first + max_debounce));
                continue;
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= segments_at {
            segments_at = Instant::now() + SEGMENT_CHECK;
            if let Some(desired) = &latest {
                segment_peers(nl, cfg, s, desired);
            }
        }
        if due.is_none_or(|t| Instant::now() < t) {
            continue;
        }
        first_pending = None;
        debounce_at = None;
        let t0 = Instant::now();
        let outcome = node_checks(cfg, s, masq).and_then(|()| match &latest {
            Some(desired) => overlay::reconcile(nl, cfg, desired)
                .map(|r| {
                    segment_peers(nl, cfg, s, desired);
                    Some(r)
                })
                .map_err(Error::from),
            None => Ok(None),
        });
        let elapsed = t0.elapsed();
        crate::metrics::global().reconciled(
            elapsed,
            outcome
                .as_ref()
                .ok()
                .and_then(|r| r.as_ref().map(|r| r.programmed)),
        );
        let ok = match outcome {
            Ok(Some(report)) => {
                log_report(&report, latest.as_ref().map_or(0, Vec::len), elapsed);
                if report.skipped != last_skipped {
                    for sk in &report.skipped {
                        tracing::warn!(node = %sk.node, "not programmed: {}", sk.reason);
                    }
                    last_skipped = report.skipped.clone();
                }
                if let Ok(mut st) = stats.lock() {
                    st.runs += 1;
                    st.programmed = report.programmed;
                    st.changes = report.changes.len();
                    st.skipped = report.skipped.len();
                    st.failed = report.failed.len();
                    st.desired = latest.as_ref().map_or(0, Vec::len);
                }
                report.failed.is_empty()
            }
            Ok(None) => true,
            Err(e) => {
                tracing::error!("reconciliation failed: {e}");
                if let Ok(mut st) = stats.lock() {
                    st.runs += 1;
                    st.failed = 1;
                }
                false
            }
        };
        let now = Instant::now();
        if ok {
            backoff = Duration::from_secs(1);
            retry_at = None;
        } else {
            tracing::warn!("retrying in {backoff:?}");
            retry_at = Some(now + backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        resync_at = (!s.resync.is_zero()).then(|| now + s.resync);
    }
    tracing::debug!("dataplane thread stopped");
}

fn log_report(report: &Report, desired: usize, elapsed: Duration) {
    let ms = elapsed.as_secs_f64() * 1000.0;
    if report.is_noop() && report.failed.is_empty() {
        tracing::debug!(
            desired,
            programmed = report.programmed,
            "reconciled: nothing to change ({ms:.1} ms)"
        );
    } else {
        tracing::info!(
            desired,
            programmed = report.programmed,
            changes = report.changes.len(),
            failed = report.failed.len(),
            "reconciled: {} peers programmed, {} changes, {} failed ({ms:.1} ms)",
            report.programmed,
            report.changes.len(),
            report.failed.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meta_netlink::{AddrInfo, FakeNetlink, LinkInfo, RouteInfo, TABLE_MAIN};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fake_node() -> FakeNetlink {
        let mut nl = FakeNetlink::new();
        nl.add_existing_link(LinkInfo {
            index: 2,
            name: "eth0".into(),
            mtu: 1500,
            up: true,
            mac: Some([2, 0, 0, 0, 0, 2]),
            ..Default::default()
        });
        nl.add_existing_addr(AddrInfo {
            index: 2,
            addr: "192.168.77.2/24".parse().unwrap(),
            tentative: false,
            dadfailed: false,
            scope: 0,
        });
        nl.add_existing_route(RouteInfo {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("192.168.77.1".parse().unwrap()),
            oif: Some(2),
            table: TABLE_MAIN,
            scope: 0,
            protocol: 3,
            priority: None,
            mtu: None,
            advmss: None,
            onlink: false,
            src: None,
        });
        nl
    }

    #[derive(Clone, Default)]
    struct CountingMasq(Arc<AtomicUsize>, Arc<Mutex<Option<(IpNet, IpNet)>>>);

    impl NodeMasq for CountingMasq {
        fn apply(&self, want: Option<(IpNet, IpNet)>) -> std::result::Result<bool, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let mut cur = self.1.lock().unwrap();
            let changed = *cur != want;
            *cur = want;
            Ok(changed)
        }
    }

    fn settings(dir: &std::path::Path) -> Settings {
        Settings {
            vni: 1,
            port: 8472,
            device: "meta.1".into(),
            underlay_iface: None,
            underlay_ip: None,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            subnet_file: dir.join("run/subnet.env"),
            segment_state_dir: dir.join("vxlan-state"),
            masquerade: true,
            resync: Duration::ZERO,
            debounce: Duration::from_millis(20),
        }
    }

    fn own() -> Own {
        Own {
            name: "n1".into(),
            pod_subnet: "10.244.1.0/24".parse().unwrap(),
            vtep_mac: None,
            underlay_ip: None,
        }
    }

    fn rec(n: u8) -> NodeRecord {
        NodeRecord {
            name: format!("n{n}"),
            pod_subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            vtep_mac: [2, 0x6d, 192, 168, 77, n + 1],
            underlay_ip: format!("192.168.77.{}", n + 1).parse().unwrap(),
        }
    }

    #[test]
    fn setup_writes_subnet_file_last_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let masq = CountingMasq::default();
        let mut nl = fake_node();
        let cfg = setup(&mut nl, &s, &own(), &masq).unwrap();
        assert_eq!(cfg.vtep_mac(), [2, 0x6d, 192, 168, 77, 2]);
        let f = read_subnet_file(&s.subnet_file).unwrap();
        assert_eq!(f.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(f.mtu, 1450);
        assert_eq!(
            *masq.1.lock().unwrap(),
            Some((cfg.pod_subnet, cfg.cluster_cidr))
        );
        let n = nl.requests().len();
        let inode = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).unwrap().ino()
        };
        let before = inode(&s.subnet_file);
        setup(&mut nl, &s, &own(), &masq).unwrap();
        assert_eq!(nl.requests().len(), n, "second setup sent requests");
        assert_eq!(inode(&s.subnet_file), before, "subnet file rewritten");
        // Masquerade off removes the rule.
        let mut off = s.clone();
        off.masquerade = false;
        setup(&mut nl, &off, &own(), &masq).unwrap();
        assert_eq!(*masq.1.lock().unwrap(), None);
        // A pod subnet outside the cluster CIDR is refused before anything is made.
        let mut bad = own();
        bad.pod_subnet = "10.9.0.0/24".parse().unwrap();
        let mut fresh = fake_node();
        let e = setup(&mut fresh, &s, &bad, &masq).unwrap_err();
        assert!(e.to_string().contains("not inside"), "{e}");
        assert!(fresh.requests().is_empty());
    }

    #[test]
    fn thread_coalesces_updates_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let masq = CountingMasq::default();
        let shared = Arc::new(Mutex::new(fake_node()));
        struct Shared(Arc<Mutex<FakeNetlink>>);
        macro_rules! fwd {
            ($($name:ident($($a:ident: $t:ty),*) -> $r:ty;)*) => {
                impl NetlinkOps for Shared {
                    $(fn $name(&mut self, $($a: $t),*) -> $r { self.0.lock().unwrap().$name($($a),*) })*
                }
            };
        }
        use meta_netlink::{FdbSpec, LinkRequest, NeighSpec, Netns, RouteSpec};
        fwd! {
            links() -> meta_netlink::Result<Vec<LinkInfo>>;
            link_by_name(name: &str) -> meta_netlink::Result<Option<LinkInfo>>;
            link_by_index(index: u32) -> meta_netlink::Result<Option<LinkInfo>>;
            link_add(req: &LinkRequest) -> meta_netlink::Result<()>;
            link_del(index: u32) -> meta_netlink::Result<()>;
            link_set_up(index: u32, up: bool) -> meta_netlink::Result<()>;
            link_set_mtu(index: u32, mtu: u32) -> meta_netlink::Result<()>;
            link_set_mac(index: u32, mac: Mac) -> meta_netlink::Result<()>;
            link_set_name(index: u32, name: &str) -> meta_netlink::Result<()>;
            link_set_master(index: u32, master: Option<u32>) -> meta_netlink::Result<()>;
            link_set_promisc(index: u32, on: bool) -> meta_netlink::Result<()>;
            link_set_netns(index: u32, ns: &Netns) -> meta_netlink::Result<()>;
            bridge_port_set_hairpin(index: u32, on: bool) -> meta_netlink::Result<()>;
            bridge_port_hairpin(index: u32) -> meta_netlink::Result<bool>;
            bridge_vlan_add(index: u32, vid: u16, pvid: bool, untagged: bool) -> meta_netlink::Result<()>;
            bridge_vlans(index: u32) -> meta_netlink::Result<Vec<(u16, bool, bool)>>;
            addrs(index: Option<u32>) -> meta_netlink::Result<Vec<AddrInfo>>;
            addr_add(index: u32, addr: IpNet) -> meta_netlink::Result<()>;
            addr_del(index: u32, addr: IpNet) -> meta_netlink::Result<()>;
            routes(v6: bool, table: Option<u32>) -> meta_netlink::Result<Vec<RouteInfo>>;
            route_add(r: &RouteSpec) -> meta_netlink::Result<()>;
            route_replace(r: &RouteSpec) -> meta_netlink::Result<()>;
            route_del(r: &RouteSpec) -> meta_netlink::Result<()>;
            neigh_add(n: &NeighSpec) -> meta_netlink::Result<()>;
            neigh_del(n: &NeighSpec) -> meta_netlink::Result<()>;
            neighs(index: Option<u32>) -> meta_netlink::Result<Vec<NeighSpec>>;
            fdb_add(f: &FdbSpec) -> meta_netlink::Result<()>;
            fdb_del(f: &FdbSpec) -> meta_netlink::Result<()>;
            fdbs(index: u32) -> meta_netlink::Result<Vec<FdbSpec>>;
        }
        let handle = Shared(shared.clone());
        let (dp, ready) =
            Dataplane::spawn(s, own(), move || Ok(handle), Box::new(masq.clone())).unwrap();
        let ready = ready.blocking_recv().unwrap().unwrap();
        assert_eq!(
            ready.record,
            NodeRecord {
                name: "n1".into(),
                ..rec(1)
            }
        );
        assert_eq!(ready.mtu, 1450);
        // A burst of updates: one run, with the last set.
        dp.update(vec![rec(1), rec(2)]);
        dp.update(vec![rec(1), rec(2), rec(3)]);
        dp.update(vec![rec(1), rec(2), rec(3), rec(4)]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while dp.stats().runs == 0 {
            assert!(Instant::now() < deadline, "no run");
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = dp.stats();
        assert_eq!(
            (st.runs, st.programmed, st.changes, st.desired),
            (1, 3, 9, 4)
        );
        // Node 3 goes.
        dp.update(vec![rec(1), rec(2), rec(4)]);
        while dp.stats().runs == 1 {
            assert!(Instant::now() < deadline, "no second run");
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = dp.stats();
        assert_eq!((st.programmed, st.changes), (2, 3));
        // A failing change is retried (after 1 s) until it lands.
        shared.lock().unwrap().fail_next(
            "route_replace",
            meta_netlink::Error::Netlink {
                op: "route_replace".into(),
                errno: 1,
                message: String::new(),
            },
        );
        dp.update(vec![rec(1), rec(2), rec(4), rec(5)]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while dp.stats().runs < 3 {
            assert!(Instant::now() < deadline, "no third run");
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = dp.stats();
        assert_eq!((st.failed, st.programmed), (1, 2), "{st:?}");
        while dp.stats().runs < 4 {
            assert!(Instant::now() < deadline, "no retry");
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = dp.stats();
        assert_eq!((st.failed, st.programmed, st.changes), (0, 3, 1), "{st:?}");
        dp.stop();
        let mut nl = shared.lock().unwrap();
        assert!(
            nl.link_by_name("meta.1").unwrap().is_some(),
            "device left in place"
        );
    }
}
