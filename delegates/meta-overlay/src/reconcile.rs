//! Neighbour, FDB and route entries of the other nodes on the primary overlay device.

use super::{Error, NodeRecord, OverlayConfig, Result, ensure_device};
use ipnet::IpNet;
use meta_netlink::{
    FdbSpec, Mac, NeighSpec, NetlinkOps, PROTO_KERNEL, RouteInfo, RouteSpec, SCOPE_UNIVERSE,
    TABLE_MAIN, format_mac,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// One change [`reconcile`] (or [`super::reconcile_peers`]) made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Permanent neighbour entry `ip` → `mac` added or replaced.
    NeighSet {
        /// Remote VTEP address on the overlay.
        ip: IpAddr,
        /// Remote VTEP MAC.
        mac: Mac,
    },
    /// Neighbour entry removed.
    NeighDel {
        /// Its address.
        ip: IpAddr,
    },
    /// FDB entry `mac` → `dst` added or replaced.
    FdbSet {
        /// Remote VTEP MAC.
        mac: Mac,
        /// Remote underlay address.
        dst: IpAddr,
    },
    /// FDB entry removed (every remote of the MAC when `dst` is None).
    FdbDel {
        /// Its MAC.
        mac: Mac,
        /// Its remote.
        dst: Option<IpAddr>,
    },
    /// Route to a remote subnet added or replaced.
    RouteSet {
        /// The remote pod subnet.
        dst: IpNet,
        /// Its VTEP address (on-link next hop).
        gw: IpAddr,
    },
    /// Route removed.
    RouteDel {
        /// The subnet.
        dst: IpNet,
    },
    /// Flood (all-zero MAC) FDB entry to a peer added.
    FloodAdd {
        /// The peer's underlay address.
        dst: IpAddr,
    },
    /// Flood FDB entry removed.
    FloodDel {
        /// The peer's underlay address.
        dst: IpAddr,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NeighSet { ip, mac } => write!(f, "neigh {ip} lladdr {}", format_mac(mac)),
            Change::NeighDel { ip } => write!(f, "neigh del {ip}"),
            Change::FdbSet { mac, dst } => write!(f, "fdb {} dst {dst}", format_mac(mac)),
            Change::FdbDel { mac, dst } => match dst {
                Some(d) => write!(f, "fdb del {} dst {d}", format_mac(mac)),
                None => write!(f, "fdb del {}", format_mac(mac)),
            },
            Change::RouteSet { dst, gw } => write!(f, "route {dst} via {gw} onlink"),
            Change::RouteDel { dst } => write!(f, "route del {dst}"),
            Change::FloodAdd { dst } => write!(f, "fdb append 00:00:00:00:00:00 dst {dst}"),
            Change::FloodDel { dst } => write!(f, "fdb del 00:00:00:00:00:00 dst {dst}"),
        }
    }
}

/// A record [`reconcile`] did not program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The node's name.
    pub node: String,
    /// Why.
    pub reason: String,
}

/// A change that failed; the others went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The node concerned (empty for removals of nodes that are gone).
    pub node: String,
    /// What failed.
    pub error: String,
}

/// What a reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Changes made, in order.
    pub changes: Vec<Change>,
    /// Records left out (invalid or conflicting).
    pub skipped: Vec<Skipped>,
    /// Changes that failed (a later run retries them).
    pub failed: Vec<Failure>,
    /// Remote nodes whose entries are all in place after the run.
    pub programmed: usize,
}

impl Report {
    /// Nothing was changed.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }

    /// Nothing failed and nothing was skipped.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes programmed, {} changes",
            self.programmed,
            self.changes.len()
        )?;
        for c in &self.changes {
            write!(f, "; {c}")?;
        }
        for s in &self.skipped {
            write!(f, "; skipped {}: {}", s.node, s.reason)?;
        }
        for x in &self.failed {
            write!(f, "; failed {}: {}", x.node, x.error)?;
        }
        Ok(())
    }
}

/// A remote node, validated.
struct Peer<'a> {
    rec: &'a NodeRecord,
    subnet: IpNet,
    gw: IpAddr,
}

fn peers<'a>(cfg: &OverlayConfig, desired: &'a [NodeRecord], report: &mut Report) -> Vec<Peer<'a>> {
    let mut out: Vec<Peer<'a>> = Vec::new();
    let mut macs: BTreeSet<Mac> = BTreeSet::new();
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    for rec in desired {
        let subnet = rec.pod_subnet.trunc();
        // This node itself.
        if subnet == cfg.pod_subnet || rec.underlay_ip == cfg.underlay.local_ip {
            continue;
        }
        let mut skip = |reason: String| {
            report.skipped.push(Skipped {
                node: rec.name.clone(),
                reason,
            })
        };
        if subnet.addr().is_ipv4() != cfg.pod_subnet.addr().is_ipv4() {
            skip(format!("pod subnet {subnet} is of another address family"));
            continue;
        }
        if !cfg.cluster_cidr.contains(&subnet.network())
            || subnet.prefix_len() < cfg.cluster_cidr.prefix_len()
        {
            skip(format!(
                "pod subnet {subnet} is outside the cluster CIDR {}",
                cfg.cluster_cidr
            ));
            continue;
        }
        if subnet.contains(&cfg.pod_subnet.network()) || cfg.pod_subnet.contains(&subnet.network())
        {
            skip(format!(
                "pod subnet {subnet} overlaps this node's {}",
                cfg.pod_subnet
            ));
            continue;
        }
        if let Some(o) = out
            .iter()
            .find(|p| p.subnet.contains(&subnet.network()) || subnet.contains(&p.subnet.network()))
        {
            skip(format!(
                "pod subnet {subnet} overlaps {} of node {}",
                o.subnet, o.rec.name
            ));
            continue;
        }
        if rec.underlay_ip.is_ipv4() != cfg.underlay.local_ip.is_ipv4() {
            skip(format!(
                "underlay IP {} is of another address family than the local {}",
                rec.underlay_ip, cfg.underlay.local_ip
            ));
            continue;
        }
        if rec.vtep_mac == [0; 6] || rec.vtep_mac[0] & 1 == 1 {
            skip(format!(
                "VTEP MAC {} is not unicast",
                format_mac(&rec.vtep_mac)
            ));
            continue;
        }
        if !macs.insert(rec.vtep_mac) {
            skip(format!(
                "VTEP MAC {} is used by another node",
                format_mac(&rec.vtep_mac)
            ));
            continue;
        }
        if !ips.insert(rec.underlay_ip) {
            skip(format!(
                "underlay IP {} is used by another node",
                rec.underlay_ip
            ));
            continue;
        }
        out.push(Peer {
            rec,
            subnet,
            gw: subnet.network(),
        });
    }
    out
}

fn is_route_ok(r: &RouteInfo, p: &Peer, dev: u32) -> bool {
    r.dst == p.subnet && r.gw == Some(p.gw) && r.oif == Some(dev) && r.onlink
}

/// Programs the entries for every node of `desired` other than this one (recognised by its
/// pod subnet or underlay IP) on the overlay device, and removes the entries of nodes that
/// are not in `desired` any more. Makes sure the device exists first ([`ensure_device`]).
///
/// Reads the current neighbour, FDB and route entries of the device and changes only what
/// differs, so a second call with the same input sends no mutating request, and a restarted
/// caller converges from whatever the kernel holds. Per node the order is neighbour → FDB
/// → route (additions) and route → FDB → neighbour (removals, done first).
///
/// Invalid or conflicting records (other address family, outside the cluster CIDR,
/// overlapping subnets, duplicate MAC or underlay IP) are left out and listed in
/// [`Report::skipped`]; failed changes are listed in [`Report::failed`] and the rest goes
/// on. Errors are returned only when the device or the current state cannot be read.
pub fn reconcile<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    cfg: &OverlayConfig,
    desired: &[NodeRecord],
) -> Result<Report> {
    let dev = ensure_device(nl, cfg)?;
    let idx = dev.index;
    let name = &cfg.device;
    let mut report = Report::default();
    let peers = peers(cfg, desired, &mut report);
    let v6 = cfg.pod_subnet.addr().is_ipv6();

    // Current state of the device.
    let neighs: BTreeMap<IpAddr, NeighSpec> = nl
        .neighs(Some(idx))
        .map_err(Error::netlink(format!("list neighbours of {name}")))?
        .into_iter()
        .filter(|n| n.index == idx)
        .map(|n| (n.ip, n))
        .collect();
    let mut fdbs: BTreeMap<Mac, Vec<FdbSpec>> = BTreeMap::new();
    for f in nl
        .fdbs(idx)
        .map_err(Error::netlink(format!("list FDB of {name}")))?
    {
        if f.mac != [0; 6] && f.self_ {
            fdbs.entry(f.mac).or_default().push(f);
        }
    }
    let routes: Vec<RouteInfo> = nl
        .routes(v6, None)
        .map_err(Error::netlink("list routes"))?
        .into_iter()
        .filter(|r| r.oif == Some(idx) && r.table == TABLE_MAIN && r.protocol != PROTO_KERNEL)
        .collect();

    let want_dst: BTreeSet<IpNet> = peers.iter().map(|p| p.subnet).collect();
    let want_mac: BTreeSet<Mac> = peers.iter().map(|p| p.rec.vtep_mac).collect();
    let want_ip: BTreeSet<IpAddr> = peers.iter().map(|p| p.gw).collect();
    let fail = |report: &mut Report, node: &str, what: String, e: meta_netlink::Error| {
        tracing::warn!(node, "{what}: {e}");
        report.failed.push(Failure {
            node: node.to_string(),
            error: format!("{what}: {e}"),
        });
    };

    // Removals: route → FDB → neighbour.
    for r in routes.iter().filter(|r| !want_dst.contains(&r.dst)) {
        let spec = RouteSpec {
            dst: r.dst,
            gw: r.gw,
            oif: Some(idx),
            table: None,
            scope: None,
            priority: r.priority,
            ..Default::default()
        };
        match nl.route_del(&spec) {
            Ok(()) => report.changes.push(Change::RouteDel { dst: r.dst }),
            Err(e) if e.is_not_found() => {}
            Err(e) => fail(&mut report, "", format!("remove route {}", r.dst), e),
        }
    }
    for mac in fdbs.keys().filter(|m| !want_mac.contains(*m)) {
        let spec = FdbSpec {
            index: idx,
            mac: *mac,
            dst: None,
            vni: None,
            permanent: true,
            self_: true,
        };
        match nl.fdb_del(&spec) {
            Ok(()) => report.changes.push(Change::FdbDel {
                mac: *mac,
                dst: None,
            }),
            Err(e) if e.is_not_found() => {}
            Err(e) => fail(
                &mut report,
                "",
                format!("remove FDB entry {}", format_mac(mac)),
                e,
            ),
        }
    }
    for n in neighs
        .values()
        .filter(|n| n.permanent && n.ip.is_ipv6() == v6 && !want_ip.contains(&n.ip))
    {
        match nl.neigh_del(n) {
            Ok(()) => report.changes.push(Change::NeighDel { ip: n.ip }),
            Err(e) if e.is_not_found() => {}
            Err(e) => fail(&mut report, "", format!("remove neighbour {}", n.ip), e),
        }
    }

    // Additions and updates, per node: neighbour → FDB → route.
    for p in &peers {
        let node = p.rec.name.as_str();
        let mac = p.rec.vtep_mac;
        let neigh_ok = neighs
            .get(&p.gw)
            .is_some_and(|n| n.mac == mac && n.permanent);
        if !neigh_ok {
            let spec = NeighSpec {
                index: idx,
                ip: p.gw,
                mac,
                permanent: true,
            };
            match nl.neigh_add(&spec) {
                Ok(()) => report.changes.push(Change::NeighSet { ip: p.gw, mac }),
                Err(e) => {
                    fail(&mut report, node, format!("neighbour {}", p.gw), e);
                    continue;
                }
            }
        }
        let cur = fdbs.get(&mac).map(Vec::as_slice).unwrap_or_default();
        let fdb_ok = cur.len() == 1 && cur[0].dst == Some(p.rec.underlay_ip) && cur[0].permanent;
        if !fdb_ok {
            if !cur.is_empty() {
                // Wrong or several remotes: start over for this MAC.
                let del = FdbSpec {
                    index: idx,
                    mac,
                    dst: None,
                    vni: None,
                    permanent: true,
                    self_: true,
                };
                match nl.fdb_del(&del) {
                    Ok(()) => report.changes.push(Change::FdbDel { mac, dst: None }),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        fail(
                            &mut report,
                            node,
                            format!("remove stale FDB entry {}", format_mac(&mac)),
                            e,
                        );
                        continue;
                    }
                }
            }
            let spec = FdbSpec {
                index: idx,
                mac,
                dst: Some(p.rec.underlay_ip),
                vni: None,
                permanent: true,
                self_: true,
            };
            match nl.fdb_add(&spec) {
                Ok(()) => report.changes.push(Change::FdbSet {
                    mac,
                    dst: p.rec.underlay_ip,
                }),
                Err(e) => {
                    fail(
                        &mut report,
                        node,
                        format!("FDB entry {} dst {}", format_mac(&mac), p.rec.underlay_ip),
                        e,
                    );
                    continue;
                }
            }
        }
        let here: Vec<&RouteInfo> = routes.iter().filter(|r| r.dst == p.subnet).collect();
        let route_ok = here.len() == 1 && is_route_ok(here[0], p, idx);
        if !route_ok {
            // Extra routes to the same subnet through the device (other metrics) go first.
            for r in here.iter().filter(|r| !is_route_ok(r, p, idx)) {
                let spec = RouteSpec {
                    dst: r.dst,
                    gw: r.gw,
                    oif: Some(idx),
                    priority: r.priority,
                    ..Default::default()
                };
                match nl.route_del(&spec) {
                    Ok(()) => report.changes.push(Change::RouteDel { dst: r.dst }),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => fail(&mut report, node, format!("remove route {}", r.dst), e),
                }
            }
            if !here.iter().any(|r| is_route_ok(r, p, idx)) {
                let spec = RouteSpec {
                    dst: p.subnet,
                    gw: Some(p.gw),
                    oif: Some(idx),
                    scope: Some(SCOPE_UNIVERSE),
                    onlink: true,
                    ..Default::default()
                };
                match nl.route_replace(&spec) {
                    Ok(()) => report.changes.push(Change::RouteSet {
                        dst: p.subnet,
                        gw: p.gw,
                    }),
                    Err(e) => {
                        fail(
                            &mut report,
                            node,
                            format!("route {} via {} onlink", p.subnet, p.gw),
                            e,
                        );
                        continue;
                    }
                }
            }
        }
        report.programmed += 1;
    }
    if !report.is_noop() || !report.failed.is_empty() {
        tracing::info!(device = %name, "overlay reconciled: {report}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::tests::fake_node;
    use super::*;
    use meta_netlink::{FakeNetlink, Request};

    fn cfg(nl: &mut FakeNetlink) -> OverlayConfig {
        let u = super::super::Underlay::detect(nl, None, None).unwrap();
        OverlayConfig::new(
            u,
            "10.244.0.0/16".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        )
    }

    fn rec(n: u8) -> NodeRecord {
        NodeRecord {
            name: format!("node{n}"),
            pod_subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            vtep_mac: [2, 0x6d, 192, 168, 77, n + 1],
            underlay_ip: format!("192.168.77.{}", n + 1).parse().unwrap(),
        }
    }

    fn mutating(nl: &FakeNetlink) -> Vec<String> {
        nl.requests().iter().map(|r| format!("{r:?}")).collect()
    }

    #[test]
    fn programs_in_order_then_noop() {
        let (mut nl, _) = fake_node("192.168.77.2");
        let c = cfg(&mut nl);
        let all = vec![rec(1), rec(2), rec(3)];
        let r = reconcile(&mut nl, &c, &all).unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.programmed, 2);
        let dev = nl.link_by_name("meta.1").unwrap().unwrap().index;
        // Per node: neighbour, FDB, route, in that order.
        let tail: Vec<&Request> = nl
            .requests()
            .iter()
            .filter(|q| {
                matches!(
                    q,
                    Request::NeighAdd(_) | Request::FdbAdd(_) | Request::RouteReplace(_)
                )
            })
            .collect();
        assert_eq!(tail.len(), 6);
        for (i, n) in [2u8, 3].iter().enumerate() {
            let r = rec(*n);
            let gw: IpAddr = format!("10.244.{n}.0").parse().unwrap();
            assert_eq!(
                tail[3 * i],
                &Request::NeighAdd(NeighSpec {
                    index: dev,
                    ip: gw,
                    mac: r.vtep_mac,
                    permanent: true
                })
            );
            assert_eq!(
                tail[3 * i + 1],
                &Request::FdbAdd(FdbSpec {
                    index: dev,
                    mac: r.vtep_mac,
                    dst: Some(r.underlay_ip),
                    vni: None,
                    permanent: true,
                    self_: true
                })
            );
            assert_eq!(
                tail[3 * i + 2],
                &Request::RouteReplace(RouteSpec {
                    dst: r.pod_subnet,
                    gw: Some(gw),
                    oif: Some(dev),
                    scope: Some(SCOPE_UNIVERSE),
                    onlink: true,
                    ..Default::default()
                })
            );
        }
        // Second run: no mutating request at all.
        nl.clear_requests();
        let r2 = reconcile(&mut nl, &c, &all).unwrap();
        assert!(r2.is_noop(), "{r2}");
        assert_eq!(r2.programmed, 2);
        assert!(nl.requests().is_empty(), "{:?}", mutating(&nl));
        // Order of the input does not matter either.
        let rev: Vec<NodeRecord> = all.iter().rev().cloned().collect();
        reconcile(&mut nl, &c, &rev).unwrap();
        assert!(nl.requests().is_empty(), "{:?}", mutating(&nl));
    }

    #[test]
    fn removes_gone_nodes_route_first() {
        let (mut nl, _) = fake_node("192.168.77.2");
        let c = cfg(&mut nl);
        reconcile(&mut nl, &c, &[rec(2), rec(3)]).unwrap();
        nl.clear_requests();
        let r = reconcile(&mut nl, &c, &[rec(3)]).unwrap();
        let gone = rec(2);
        assert_eq!(
            r.changes,
            vec![
                Change::RouteDel {
                    dst: gone.pod_subnet
                },
                Change::FdbDel {
                    mac: gone.vtep_mac,
                    dst: None
                },
                Change::NeighDel {
                    ip: "10.244.2.0".parse().unwrap()
                },
            ]
        );
        let dev = nl.link_by_name("meta.1").unwrap().unwrap().index;
        assert_eq!(nl.neighs(Some(dev)).unwrap().len(), 1);
        assert_eq!(nl.fdbs(dev).unwrap().len(), 1);
        let routes: Vec<IpNet> = nl
            .routes(false, None)
            .unwrap()
            .into_iter()
            .filter(|r| r.oif == Some(dev))
            .map(|r| r.dst)
            .collect();
        assert_eq!(routes, vec!["10.244.3.0/24".parse::<IpNet>().unwrap()]);
        // Everything gone.
        reconcile(&mut nl, &c, &[]).unwrap();
        assert!(nl.neighs(Some(dev)).unwrap().is_empty());
        assert!(nl.fdbs(dev).unwrap().is_empty());
    }

    #[test]
    fn updates_moved_node_and_repairs_drift() {
        let (mut nl, _) = fake_node("192.168.77.2");
        let c = cfg(&mut nl);
        reconcile(&mut nl, &c, &[rec(2)]).unwrap();
        let dev = nl.link_by_name("meta.1").unwrap().unwrap().index;
        // The node got a new underlay IP and a new MAC.
        let mut moved = rec(2);
        moved.underlay_ip = "192.168.77.50".parse().unwrap();
        moved.vtep_mac = [2, 0x6d, 192, 168, 77, 50];
        nl.clear_requests();
        let r = reconcile(&mut nl, &c, std::slice::from_ref(&moved)).unwrap();
        assert_eq!(
            r.changes,
            vec![
                Change::FdbDel {
                    mac: rec(2).vtep_mac,
                    dst: None
                },
                Change::NeighSet {
                    ip: "10.244.2.0".parse().unwrap(),
                    mac: moved.vtep_mac
                },
                Change::FdbSet {
                    mac: moved.vtep_mac,
                    dst: moved.underlay_ip
                },
            ],
            "{r}"
        );
        // Someone deleted the route: only the route comes back.
        nl.route_del(&RouteSpec::new("10.244.2.0/24".parse().unwrap()))
            .unwrap();
        let r = reconcile(&mut nl, &c, std::slice::from_ref(&moved)).unwrap();
        assert_eq!(
            r.changes,
            vec![Change::RouteSet {
                dst: "10.244.2.0/24".parse().unwrap(),
                gw: "10.244.2.0".parse().unwrap()
            }]
        );
        // A non-permanent neighbour entry for the VTEP address is made permanent.
        nl.neigh_add(&NeighSpec {
            index: dev,
            ip: "10.244.2.0".parse().unwrap(),
            mac: moved.vtep_mac,
            permanent: false,
        })
        .unwrap();
        let r = reconcile(&mut nl, &c, std::slice::from_ref(&moved)).unwrap();
        assert_eq!(r.changes.len(), 1, "{r}");
    }

    #[test]
    fn skips_bad_records() {
        let (mut nl, _) = fake_node("192.168.77.2");
        let c = cfg(&mut nl);
        let mut outside = rec(5);
        outside.pod_subnet = "10.99.0.0/24".parse().unwrap();
        let mut overlap = rec(6);
        overlap.pod_subnet = "10.244.2.128/25".parse().unwrap();
        let mut dup_mac = rec(7);
        dup_mac.vtep_mac = rec(2).vtep_mac;
        let mut mcast = rec(8);
        mcast.vtep_mac = [1, 0, 0x5e, 0, 0, 1];
        let mut v6 = rec(9);
        v6.underlay_ip = "fd00::9".parse().unwrap();
        let r = reconcile(
            &mut nl,
            &c,
            &[rec(1), rec(2), outside, overlap, dup_mac, mcast, v6],
        )
        .unwrap();
        assert_eq!(r.programmed, 1, "{r}");
        let names: Vec<&str> = r.skipped.iter().map(|s| s.node.as_str()).collect();
        assert_eq!(names, vec!["node5", "node6", "node7", "node8", "node9"]);
        assert!(r.skipped[0].reason.contains("outside the cluster CIDR"));
        assert!(
            r.skipped[1]
                .reason
                .contains("overlaps 10.244.2.0/24 of node node2")
        );
    }

    #[test]
    fn failures_are_reported_and_retried() {
        let (mut nl, _) = fake_node("192.168.77.2");
        let c = cfg(&mut nl);
        nl.fail_next("fdb_add", meta_netlink::Error::netlink("fdb_add", 22));
        let r = reconcile(&mut nl, &c, &[rec(2), rec(3)]).unwrap();
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].node, "node2");
        assert_eq!(r.programmed, 1);
        // node2 has its neighbour entry but no route yet; the next run completes it.
        let r = reconcile(&mut nl, &c, &[rec(2), rec(3)]).unwrap();
        assert!(r.is_ok());
        assert_eq!(r.programmed, 2);
        assert_eq!(r.changes.len(), 2, "{r}");
    }

    #[test]
    fn ipv6_overlay_on_ipv6_underlay() {
        use meta_netlink::{AddrInfo, LinkInfo, RouteInfo};
        let mut nl = FakeNetlink::new();
        nl.add_existing_link(LinkInfo {
            index: 2,
            name: "eth0".into(),
            mtu: 1500,
            up: true,
            ..Default::default()
        });
        nl.add_existing_addr(AddrInfo {
            index: 2,
            addr: "fd77::2/64".parse().unwrap(),
            tentative: false,
            dadfailed: false,
            scope: 0,
        });
        nl.add_existing_route(RouteInfo {
            dst: "::/0".parse().unwrap(),
            gw: Some("fd77::1".parse().unwrap()),
            oif: Some(2),
            table: TABLE_MAIN,
            scope: 0,
            protocol: 3,
            priority: Some(1024),
            mtu: None,
            advmss: None,
            onlink: false,
            src: None,
        });
        let u = super::super::Underlay::detect(&mut nl, None, None).unwrap();
        assert_eq!(u.local_ip.to_string(), "fd77::2");
        assert_eq!(u.overlay_mtu(), 1430);
        let c = OverlayConfig::new(
            u,
            "fd00:244::/56".parse().unwrap(),
            "fd00:244:0:1::/64".parse().unwrap(),
        );
        let other = NodeRecord {
            name: "n2".into(),
            pod_subnet: "fd00:244:0:2::/64".parse().unwrap(),
            vtep_mac: [2, 0x6d, 1, 2, 3, 4],
            underlay_ip: "fd77::3".parse().unwrap(),
        };
        let r = reconcile(&mut nl, &c, std::slice::from_ref(&other)).unwrap();
        assert!(r.is_ok() && r.programmed == 1, "{r}");
        let dev = nl.link_by_name("meta.1").unwrap().unwrap();
        assert_eq!(dev.mtu, 1430);
        let addrs: Vec<String> = nl
            .addrs(Some(dev.index))
            .unwrap()
            .iter()
            .map(|a| a.addr.to_string())
            .collect();
        assert_eq!(addrs, vec!["fd00:244:0:1::/128"]);
        let routes: Vec<_> = nl
            .routes(true, None)
            .unwrap()
            .into_iter()
            .filter(|r| r.oif == Some(dev.index))
            .map(|r| (r.dst.to_string(), r.gw.map(|g| g.to_string()), r.onlink))
            .collect();
        assert_eq!(
            routes,
            vec![(
                "fd00:244:0:2::/64".to_string(),
                Some("fd00:244:0:2::".to_string()),
                true
            )]
        );
        nl.clear_requests();
        let r = reconcile(&mut nl, &c, &[other]).unwrap();
        assert!(r.is_noop() && nl.requests().is_empty(), "{r}");
    }
}
