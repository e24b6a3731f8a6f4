//! meta-overlay: the node side of the overlay, without Kubernetes: one implementation for the node agent
//! (`meta-cni-agent`) and for the `meta-vxlan` delegate.
//!
//! # Primary overlay (flannel-like)
//!
//! Every node owns a pod subnet out of the cluster CIDR. Each node has one VXLAN device
//! ([`OverlayConfig::device`], default `meta.<vni>`, i.e. `meta.1`), created by
//! [`ensure_device`]: VNI 1, UDP port 8472 (the Linux/flannel default), learning off, bound
//! to the underlay interface and its IP, MTU = underlay MTU − 50 (− 70 on an IPv6 underlay),
//! a MAC derived from the underlay IP (stable across device re-creation, so the other
//! nodes' entries stay valid), and the node subnet's network address as a host address
//! (`10.244.1.0/32`: the source address for node-to-remote-pod traffic, as flannel does).
//!
//! For every *other* node, [`reconcile`] programs, in this order (the route last, so the
//! kernel never has to resolve the next hop):
//!
//! 1. a permanent neighbour entry: the remote subnet's network address (`10.244.2.0`, the
//!    remote VTEP's address on the overlay) → the remote VTEP MAC, on the VXLAN device;
//! 2. an FDB entry on the VXLAN device: remote VTEP MAC → remote underlay IP;
//! 3. a route `10.244.2.0/24 via 10.244.2.0 dev meta.1 onlink`.
//!
//! It reads the current entries of the device, computes the difference and changes only
//! what differs: entries of nodes that are gone are removed (route, then FDB, then
//! neighbour), and a second run with the same input sends no mutating request. The scaling
//! is one neighbour entry, one FDB entry and one route per remote node, and no netlink
//! listener: a restarted agent converges from whatever the kernel has.
//!
//! The CNI side plugs pods into a node bridge with IPs from the node subnet; it learns the
//! subnet, the cluster CIDR and the MTU from the subnet file ([`write_subnet_file`] /
//! [`read_subnet_file`], like flannel's `subnet.env`).
//!
//! # Secondary segments
//!
//! A secondary VXLAN network is an L2 segment with its own VNI: one VXLAN device
//! (`mvx<vni>`, learning on, default port 4789) enslaved to one bridge (`mbr<vni>`) per
//! node, made by [`ensure_segment`]; pods attach to the bridge by veth. Broadcast and
//! unknown unicast go to every peer node by head-end replication (one all-zero-MAC FDB
//! entry per peer, [`reconcile_peers`]); unicast to known MACs goes to the learned VTEP.
//! The delegate programs the peers of a static list; the agent can program the same VNI
//! through the same function.

mod device;
mod error;
mod owner;
mod reconcile;
mod segment;
mod subnet_file;

pub use device::{ensure_device, vtep_mac_for};
pub use error::{Error, Result};
pub use owner::{DEFAULT_STATE_DIR, Owner, read_owner, write_owner};
pub use reconcile::{Change, Failure, Report, Skipped, reconcile};
pub use segment::{
    Segment, SegmentConfig, SegmentParams, ensure_segment, reconcile_peers, segment_bridge_name,
    segment_device_name,
};
pub use subnet_file::{DEFAULT_SUBNET_FILE, SubnetFile, read_subnet_file, write_subnet_file};

use ipnet::IpNet;
use meta_netlink::{LinkInfo, Mac, NetlinkOps, SCOPE_LINK, format_mac, parse_mac};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Default VNI of the primary overlay (flannel's default).
pub const DEFAULT_VNI: u32 = 1;
/// Default UDP port of the primary overlay: 8472, the Linux kernel's historical VXLAN port
/// and flannel's default.
pub const DEFAULT_PORT: u16 = 8472;
/// Default UDP port of secondary segments: 4789, the IANA VXLAN port.
pub const DEFAULT_SEGMENT_PORT: u16 = 4789;
/// Default node bridge of the primary overlay's pods.
pub const DEFAULT_BRIDGE: &str = "meta0";
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// VXLAN encapsulation overhead on an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8)
/// + inner Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// VXLAN encapsulation overhead on an IPv6 underlay (outer IPv6 header is 40 bytes).
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// Name of the primary overlay's VXLAN device for `vni`: `meta.<vni>` (like `flannel.1`).
pub fn device_name(vni: u32) -> String {
    format!("meta.{vni}")
}

/// The underlay: the interface VXLAN packets leave by, its address, its MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// Interface name (the default-route interface unless configured).
    pub iface: String,
    /// The local VTEP address (source of the encapsulated packets).
    pub local_ip: IpAddr,
    /// The interface's MTU.
    pub mtu: u32,
}

impl Underlay {
    /// Finds the underlay through `nl`: the interface `iface` when given, else the one
    /// holding `local_ip` when given, else the interface of the default route (IPv4 first,
    /// then IPv6, lowest metric). The local IP is `local_ip`, else the default route's
    /// preferred source, else the interface's first global address (of the default route's
    /// family when there is one, IPv4 first otherwise).
    pub fn detect<N: NetlinkOps + ?Sized>(
        nl: &mut N,
        iface: Option<&str>,
        local_ip: Option<IpAddr>,
    ) -> Result<Underlay> {
        let mut family_v6: Option<bool> = None;
        let mut route_src = None;
        let link: LinkInfo = match (iface, local_ip) {
            (Some(name), _) => nl
                .link_by_name(name)
                .map_err(Error::netlink(format!(
                    "look up underlay interface {name:?}"
                )))?
                .ok_or_else(|| {
                    Error::Config(format!("underlay interface {name:?} does not exist"))
                })?,
            (None, Some(ip)) => {
                let addrs = nl.addrs(None).map_err(Error::netlink("list addresses"))?;
                let a = addrs.iter().find(|a| a.addr.addr() == ip).ok_or_else(|| {
                    Error::Config(format!(
                        "no interface has the configured local underlay IP {ip}"
                    ))
                })?;
                nl.link_by_index(a.index)
                    .map_err(Error::netlink("look up underlay interface"))?
                    .ok_or_else(|| Error::Config(format!("interface of {ip} vanished")))?
            }
            (None, None) => {
                let mut found = None;
                for v6 in [false, true] {
                    let mut defaults: Vec<_> = nl
                        .routes(v6, None)
                        .map_err(Error::netlink("list routes"))?
                        .into_iter()
                        .filter(|r| r.dst.prefix_len() == 0 && r.oif.is_some())
                        .collect();
                    defaults.sort_by_key(|r| r.priority.unwrap_or(0));
                    if let Some(r) = defaults.into_iter().next() {
                        found = Some((v6, r));
                        break;
                    }
                }
                let (v6, r) = found.ok_or_else(|| {
                    Error::Config(
                        "no default route to find the underlay interface by; configure the \
                         underlay interface or the local IP"
                            .into(),
                    )
                })?;
                family_v6 = Some(v6);
                route_src = r.src;
                let oif = r.oif.unwrap_or_default();
                nl.link_by_index(oif)
                    .map_err(Error::netlink("look up default-route interface"))?
                    .ok_or_else(|| {
                        Error::Config(format!("default-route interface {oif} vanished"))
                    })?
            }
        };
        let local_ip = match local_ip.or(route_src) {
            Some(ip) => ip,
            None => {
                let addrs = nl
                    .addrs(Some(link.index))
                    .map_err(Error::netlink(format!("list addresses of {}", link.name)))?;
                let usable = |v6: bool| {
                    addrs
                        .iter()
                        .filter(|a| a.addr.addr().is_ipv6() == v6)
                        .filter(|a| a.scope < SCOPE_LINK && !a.dadfailed)
                        .map(|a| a.addr.addr())
                        .next()
                };
                let pick = match family_v6 {
                    Some(v6) => usable(v6),
                    None => usable(false).or_else(|| usable(true)),
                };
                pick.ok_or_else(|| {
                    Error::Config(format!(
                        "underlay interface {} has no global address to use as the local VTEP IP",
                        link.name
                    ))
                })?
            }
        };
        Ok(Underlay {
            iface: link.name,
            local_ip,
            mtu: link.mtu,
        })
    }

    /// Bytes VXLAN adds on this underlay: 50 on IPv4, 70 on IPv6.
    pub fn encap_overhead(&self) -> u32 {
        if self.local_ip.is_ipv6() {
            VXLAN_OVERHEAD_V6
        } else {
            VXLAN_OVERHEAD_V4
        }
    }

    /// The largest MTU a VXLAN device on this underlay can have: MTU − overhead.
    pub fn overlay_mtu(&self) -> u32 {
        self.mtu.saturating_sub(self.encap_overhead())
    }
}

/// The primary overlay of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// VXLAN network identifier (default [`DEFAULT_VNI`]).
    pub vni: u32,
    /// UDP destination port (default [`DEFAULT_PORT`]).
    pub port: u16,
    /// VXLAN device name (default [`device_name`]`(vni)`, `meta.1`).
    pub device: String,
    /// The underlay.
    pub underlay: Underlay,
    /// The cluster CIDR (all pod subnets).
    pub cluster_cidr: IpNet,
    /// This node's pod subnet.
    pub pod_subnet: IpNet,
    /// VTEP MAC; `None` derives it from the underlay IP ([`vtep_mac_for`]).
    pub vtep_mac: Option<Mac>,
}

impl OverlayConfig {
    /// The defaults: VNI 1, port 8472, device `meta.1`, derived MAC.
    pub fn new(underlay: Underlay, cluster_cidr: IpNet, pod_subnet: IpNet) -> OverlayConfig {
        OverlayConfig {
            vni: DEFAULT_VNI,
            port: DEFAULT_PORT,
            device: device_name(DEFAULT_VNI),
            underlay,
            cluster_cidr: cluster_cidr.trunc(),
            pod_subnet: pod_subnet.trunc(),
            vtep_mac: None,
        }
    }

    /// Checks the values: VNI range, port, device name, subnet inside the cluster CIDR and
    /// big enough (a VTEP address, a gateway and pods), MTU.
    pub fn validate(&self) -> Result<()> {
        if self.vni == 0 || self.vni > MAX_VNI {
            return Err(Error::Config(format!(
                "VNI {} out of range (1..={MAX_VNI})",
                self.vni
            )));
        }
        if self.port == 0 {
            return Err(Error::Config("VXLAN port must not be 0".into()));
        }
        validate_ifname("VXLAN device", &self.device)?;
        let (c, s) = (self.cluster_cidr, self.pod_subnet);
        if c.addr().is_ipv4() != s.addr().is_ipv4() {
            return Err(Error::Config(format!(
                "pod subnet {s} and cluster CIDR {c} are of different address families"
            )));
        }
        if s.prefix_len() < c.prefix_len() || !c.contains(&s.network()) {
            return Err(Error::Config(format!(
                "pod subnet {s} is not inside the cluster CIDR {c}"
            )));
        }
        if s.max_prefix_len() - s.prefix_len() < 2 {
            return Err(Error::Config(format!(
                "pod subnet {s} is too small (it needs a VTEP address, a gateway and pods)"
            )));
        }
        if self.mtu() < 576 {
            return Err(Error::Config(format!(
                "underlay {} MTU {} leaves an overlay MTU of {}, too small",
                self.underlay.iface,
                self.underlay.mtu,
                self.mtu()
            )));
        }
        if let Some(m) = self.vtep_mac {
            check_unicast_mac(&m)?;
        }
        Ok(())
    }

    /// The overlay MTU: underlay MTU − 50 (− 70 on an IPv6 underlay).
    pub fn mtu(&self) -> u32 {
        self.underlay.overlay_mtu()
    }

    /// The VTEP MAC: the configured one, else derived from the underlay IP.
    pub fn vtep_mac(&self) -> Mac {
        self.vtep_mac
            .unwrap_or_else(|| vtep_mac_for(self.underlay.local_ip))
    }

    /// This node's VTEP address on the overlay: the pod subnet's network address.
    pub fn vtep_ip(&self) -> IpAddr {
        self.pod_subnet.network()
    }

    /// The record other nodes need to reach this one (what the agent publishes).
    pub fn record(&self, name: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_string(),
            pod_subnet: self.pod_subnet,
            vtep_mac: self.vtep_mac(),
            underlay_ip: self.underlay.local_ip,
        }
    }
}

/// What one node publishes so that the others can reach its pods.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Node name (for reports and logs only).
    pub name: String,
    /// The node's pod subnet.
    pub pod_subnet: IpNet,
    /// The MAC of the node's VXLAN device (`aa:bb:cc:dd:ee:ff` in JSON).
    #[serde(rename = "vtepMAC", with = "mac_serde")]
    pub vtep_mac: Mac,
    /// The node's underlay address (the remote VTEP).
    #[serde(rename = "underlayIP")]
    pub underlay_ip: IpAddr,
}

mod mac_serde {
    use meta_netlink::Mac;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_mac(m))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_mac(&s).map_err(serde::de::Error::custom)
    }
}

fn check_unicast_mac(m: &Mac) -> Result<()> {
    if *m == [0; 6] || m[0] & 1 == 1 {
        return Err(Error::Config(format!(
            "VTEP MAC {} is not a unicast address",
            format_mac(m)
        )));
    }
    Ok(())
}

/// Interface name check (1..=15 bytes, no `/`, whitespace, `:` or NUL).
pub(crate) fn validate_ifname(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if bad {
        return Err(Error::Config(format!(
            "{what} name {name:?} is not a valid interface name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meta_netlink::{AddrInfo, FakeNetlink, RouteInfo, TABLE_MAIN};

    pub(crate) fn fake_node(ip: &str) -> (FakeNetlink, Underlay) {
        let mut nl = FakeNetlink::new();
        nl.add_existing_link(LinkInfo {
            index: 2,
            name: "eth0".into(),
            mtu: 1500,
            up: true,
            mac: Some([2, 0, 0, 0, 0, 2]),
            ..Default::default()
        });
        let addr: IpNet = format!("{ip}/24").parse().unwrap();
        nl.add_existing_addr(AddrInfo {
            index: 2,
            addr,
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
        let u = Underlay::detect(&mut nl, None, None).unwrap();
        (nl, u)
    }

    #[test]
    fn detects_default_route_interface() {
        let (mut nl, u) = fake_node("192.168.77.2");
        assert_eq!(
            u,
            Underlay {
                iface: "eth0".into(),
                local_ip: "192.168.77.2".parse().unwrap(),
                mtu: 1500
            }
        );
        assert_eq!(u.overlay_mtu(), 1450);
        // by name, by IP
        assert_eq!(Underlay::detect(&mut nl, Some("eth0"), None).unwrap(), u);
        assert_eq!(
            Underlay::detect(&mut nl, None, Some("192.168.77.2".parse().unwrap())).unwrap(),
            u
        );
        let e = Underlay::detect(&mut nl, Some("nope"), None).unwrap_err();
        assert!(e.to_string().contains("\"nope\" does not exist"), "{e}");
        let e = Underlay::detect(&mut nl, None, Some("10.9.9.9".parse().unwrap())).unwrap_err();
        assert!(e.to_string().contains("10.9.9.9"), "{e}");
        let mut empty = FakeNetlink::new();
        let e = Underlay::detect(&mut empty, None, None).unwrap_err();
        assert!(e.to_string().contains("no default route"), "{e}");
    }

    #[test]
    fn config_validation() {
        let (_, u) = fake_node("192.168.77.2");
        let ok = OverlayConfig::new(
            u.clone(),
            "10.244.0.0/16".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        );
        ok.validate().unwrap();
        assert_eq!(ok.device, "meta.1");
        assert_eq!(ok.mtu(), 1450);
        assert_eq!(ok.vtep_ip().to_string(), "10.244.1.0");
        assert_eq!(ok.vtep_mac(), [0x02, 0x6d, 192, 168, 77, 2]);
        let bad = |f: &dyn Fn(&mut OverlayConfig), needle: &str| {
            let mut c = ok.clone();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e} lacks {needle}");
        };
        bad(&|c| c.vni = 0, "VNI 0");
        bad(&|c| c.vni = MAX_VNI + 1, "out of range");
        bad(&|c| c.port = 0, "port");
        bad(&|c| c.device = "way-too-long-name".into(), "not a valid");
        bad(
            &|c| c.pod_subnet = "10.245.1.0/24".parse().unwrap(),
            "not inside",
        );
        bad(
            &|c| c.pod_subnet = "10.0.0.0/8".parse().unwrap(),
            "not inside",
        );
        bad(
            &|c| c.pod_subnet = "10.244.1.0/31".parse().unwrap(),
            "too small",
        );
        bad(
            &|c| c.pod_subnet = "fd00::/64".parse().unwrap(),
            "address families",
        );
        bad(&|c| c.underlay.mtu = 600, "too small");
        bad(&|c| c.vtep_mac = Some([1, 0, 0, 0, 0, 1]), "unicast");
    }

    #[test]
    fn record_json() {
        let r = NodeRecord {
            name: "n1".into(),
            pod_subnet: "10.244.1.0/24".parse().unwrap(),
            vtep_mac: [0x02, 0x6d, 1, 2, 3, 4],
            underlay_ip: "192.168.77.2".parse().unwrap(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "n1", "podSubnet": "10.244.1.0/24",
                "vtepMAC": "02:6d:01:02:03:04", "underlayIP": "192.168.77.2"})
        );
        let back: NodeRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let bad = serde_json::json!({"name": "n1", "podSubnet": "10.244.1.0/24",
            "vtepMAC": "zz", "underlayIP": "192.168.77.2"});
        assert!(serde_json::from_value::<NodeRecord>(bad).is_err());
    }
}
