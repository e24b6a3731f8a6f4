//! Plain data types describing kernel objects and requests.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// Formats a MAC as `aa:bb:cc:dd:ee:ff` (lowercase).
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-` separators, any case).
pub fn parse_mac(s: &str) -> Result<Mac> {
    let bad = || Error::Invalid(format!("bad MAC address {s:?}"));
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// Macvlan modes (`IFLA_MACVLAN_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacvlanMode {
    /// No traffic between macvlans of the same parent.
    Private,
    /// Traffic goes out to the adjacent switch.
    Vepa,
    /// Macvlans of the same parent talk directly.
    Bridge,
    /// One macvlan takes over the parent.
    Passthru,
    /// Source-MAC filtered.
    Source,
}

/// Ipvlan modes (`IFLA_IPVLAN_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvlanMode {
    /// Layer 2.
    L2,
    /// Layer 3.
    L3,
    /// Layer 3 with netfilter (l3s).
    L3s,
}

/// Ipvlan flags (`IFLA_IPVLAN_FLAGS`); `Bridge` is the default (no flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IpvlanFlags {
    /// Default: slaves can talk to each other.
    #[default]
    Bridge,
    /// `IPVLAN_F_PRIVATE`.
    Private,
    /// `IPVLAN_F_VEPA`.
    Vepa,
}

/// VXLAN parameters of an existing link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanInfo {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Destination UDP port (host order).
    pub port: u16,
    /// Local source address.
    pub local: Option<IpAddr>,
    /// Whether source MACs are learned.
    pub learning: bool,
    /// Underlay device index.
    pub dev: Option<u32>,
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND`: "veth", "bridge", "macvlan", "ipvlan", "vxlan", ...; None
    /// for devices without rtnl link ops (lo, physical NICs).
    pub kind: Option<String>,
    /// Hardware address, when it is 6 bytes long.
    pub mac: Option<Mac>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the master (bridge) device.
    pub master: Option<u32>,
    /// `IFF_PROMISC`.
    pub promisc: bool,
    /// `IFLA_LINK`: parent (macvlan/ipvlan/vxlan) or veth peer index; the index is
    /// in the namespace given by `link_netnsid` when that is set.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer/parent lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// Macvlan mode, for macvlan links.
    pub macvlan_mode: Option<MacvlanMode>,
    /// Ipvlan mode, for ipvlan links.
    pub ipvlan_mode: Option<IpvlanMode>,
    /// VXLAN parameters, for vxlan links.
    pub vxlan: Option<VxlanInfo>,
    /// `IFLA_BR_VLAN_FILTERING`, for bridges.
    pub bridge_vlan_filtering: Option<bool>,
}

/// What kind of link to create.
///
/// Namespaces are given as [`Netns`] (cheap to clone; compares by namespace identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A veth pair; the peer is created directly in `peer_netns` when set
    /// (otherwise in the same namespace as the link). The peer is left down.
    Veth {
        /// Name of the other end.
        peer_name: String,
        /// Namespace to create the peer in (`IFLA_NET_NS_FD` in `VETH_INFO_PEER`).
        peer_netns: Option<Netns>,
        /// MAC of the peer.
        peer_mac: Option<Mac>,
        /// MTU of the peer (defaults to the link's `mtu` when that is set).
        peer_mtu: Option<u32>,
    },
    /// A Linux bridge.
    Bridge {
        /// `IFLA_BR_VLAN_FILTERING`.
        vlan_filtering: bool,
    },
    /// A macvlan on `master` (an index in the namespace of the netlink handle).
    Macvlan {
        /// Parent device index.
        master: u32,
        /// Mode.
        mode: MacvlanMode,
    },
    /// An ipvlan on `master`.
    Ipvlan {
        /// Parent device index.
        master: u32,
        /// Mode.
        mode: IpvlanMode,
        /// Flags.
        flags: IpvlanFlags,
    },
    /// A VXLAN device.
    Vxlan {
        /// VXLAN network identifier.
        vni: u32,
        /// Destination UDP port (e.g. 4789).
        port: u16,
        /// Local source address.
        local: Option<IpAddr>,
        /// Learn source MACs.
        learning: bool,
        /// Underlay device index.
        dev: Option<u32>,
    },
}

impl LinkKind {
    /// The `IFLA_INFO_KIND` string of this kind.
    pub fn kind_str(&self) -> &'static str {
        match self {
            LinkKind::Veth { .. } => "veth",
            LinkKind::Bridge { .. } => "bridge",
            LinkKind::Macvlan { .. } => "macvlan",
            LinkKind::Ipvlan { .. } => "ipvlan",
            LinkKind::Vxlan { .. } => "vxlan",
        }
    }
}

/// A request to create a link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkRequest {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// What to create.
    pub kind: LinkKind,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC address.
    pub mac: Option<Mac>,
    /// Create the link directly in this namespace (`IFLA_NET_NS_FD`). Parent
    /// indexes (macvlan/ipvlan master, vxlan dev) still refer to the namespace of
    /// the netlink handle, and a veth peer without `peer_netns` is created in the
    /// handle's namespace (so `netns: Some(container)` + `peer_netns: None` gives
    /// the usual container-side/host-side pair in one call).
    pub netns: Option<Netns>,
    /// Bring the link up at creation.
    pub up: bool,
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddrInfo {
    /// Interface index.
    pub index: u32,
    /// Address with prefix length.
    pub addr: ipnet::IpNet,
    /// IPv6 duplicate address detection still running (`IFA_F_TENTATIVE`).
    pub tentative: bool,
    /// Duplicate address detection failed (`IFA_F_DADFAILED`).
    pub dadfailed: bool,
    /// Scope (0 universe, 200 site, 253 link, 254 host).
    pub scope: u8,
}

/// `RT_SCOPE_UNIVERSE`.
pub const SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`.
pub const SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_HOST`.
pub const SCOPE_HOST: u8 = 254;
/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RT_TABLE_LOCAL`.
pub const TABLE_LOCAL: u32 = 255;
/// `RTPROT_KERNEL`: routes the kernel made (connected prefixes).
pub const PROTO_KERNEL: u8 = 2;
/// `RTPROT_BOOT`: routes added by this crate (like iproute2).
pub const PROTO_BOOT: u8 = 3;

/// A route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteInfo {
    /// Destination (`0.0.0.0/0` / `::/0` for default routes).
    pub dst: ipnet::IpNet,
    /// Gateway.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Routing table.
    pub table: u32,
    /// Scope.
    pub scope: u8,
    /// Protocol (2 kernel, 3 boot, ...).
    pub protocol: u8,
    /// Metric (`RTA_PRIORITY`).
    pub priority: Option<u32>,
    /// `RTAX_MTU`.
    pub mtu: Option<u32>,
    /// `RTAX_ADVMSS`.
    pub advmss: Option<u32>,
    /// `RTNH_F_ONLINK`.
    pub onlink: bool,
    /// Preferred source (`RTA_PREFSRC`).
    pub src: Option<IpAddr>,
}

/// A route to add, replace or delete. `None` fields let the kernel pick.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteSpec {
    /// Destination.
    pub dst: ipnet::IpNet,
    /// Gateway.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Table (None = main).
    pub table: Option<u32>,
    /// Scope; default: link scope without a gateway, universe with one.
    pub scope: Option<u8>,
    /// Metric.
    pub priority: Option<u32>,
    /// Path MTU.
    pub mtu: Option<u32>,
    /// Advertised MSS.
    pub advmss: Option<u32>,
    /// Gateway is on-link even without a covering prefix.
    pub onlink: bool,
    /// Preferred source address.
    pub src: Option<IpAddr>,
}

impl RouteSpec {
    /// A route to `dst` with everything else defaulted.
    pub fn new(dst: ipnet::IpNet) -> RouteSpec {
        RouteSpec {
            dst,
            ..Default::default()
        }
    }

    /// The scope that will be used: the explicit one, else link without a
    /// gateway and universe with one.
    pub fn effective_scope(&self) -> u8 {
        self.scope.unwrap_or(if self.gw.is_some() {
            SCOPE_UNIVERSE
        } else {
            SCOPE_LINK
        })
    }

    /// The table that will be used (main when None).
    pub fn effective_table(&self) -> u32 {
        self.table.unwrap_or(TABLE_MAIN)
    }
}

/// A neighbour (ARP / NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NeighSpec {
    /// Interface index.
    pub index: u32,
    /// IP address.
    pub ip: IpAddr,
    /// Link-layer address.
    pub mac: Mac,
    /// `NUD_PERMANENT` (otherwise `NUD_REACHABLE`).
    pub permanent: bool,
}

/// A bridge/VXLAN forwarding database entry (AF_BRIDGE neighbour).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FdbSpec {
    /// Device index (bridge port or vxlan device).
    pub index: u32,
    /// MAC address (all-zero for the VXLAN default/flood entries).
    pub mac: Mac,
    /// Remote VTEP (VXLAN).
    pub dst: Option<IpAddr>,
    /// VNI (VXLAN).
    pub vni: Option<u32>,
    /// `NUD_PERMANENT` (otherwise `NUD_REACHABLE`).
    pub permanent: bool,
    /// `NTF_SELF`: the device's own table (VXLAN); otherwise `NTF_MASTER`.
    pub self_: bool,
}

/// A plain bridge without VLAN filtering: the simplest kind, so that
/// `LinkRequest { name, ..Default::default() }` is a valid request.
impl Default for LinkKind {
    fn default() -> Self {
        LinkKind::Bridge {
            vlan_filtering: false,
        }
    }
}

impl Default for NeighSpec {
    fn default() -> Self {
        NeighSpec {
            index: 0,
            ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            mac: [0; 6],
            permanent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_roundtrip() {
        let m = parse_mac("AA:bb:0c:dd:ee:0F").unwrap();
        assert_eq!(m, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(format_mac(&m), "aa:bb:0c:dd:ee:0f");
        assert_eq!(
            parse_mac("aa-bb-cc-dd-ee-ff").unwrap(),
            [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        );
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:fg",
            "aaa:bb:cc:dd:ee:ff",
            "aa::cc:dd:ee:ff",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_defaults() {
        let r = RouteSpec::new("10.0.0.0/8".parse().unwrap());
        assert_eq!(r.effective_scope(), SCOPE_LINK);
        assert_eq!(r.effective_table(), TABLE_MAIN);
        let r = RouteSpec {
            gw: Some("10.0.0.1".parse().unwrap()),
            ..r
        };
        assert_eq!(r.effective_scope(), SCOPE_UNIVERSE);
    }
}
