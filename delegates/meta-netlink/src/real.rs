//! The real rtnetlink client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData,
    InfoIpVlan, InfoKind, InfoMacVlan, InfoVeth, InfoVxlan, IpVlanFlags, IpVlanMode, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, LinkProtoInfoBridge,
    MacVlanMode,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::sys::AsyncSocket;

use crate::error::{Error, Result};
use crate::netns::{Netns, Registry, current_key};
use crate::ops::NetlinkOps;
use crate::types::*;

/// How long one netlink request may take before [`Error::Timeout`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `IFLA_BRPORT_MODE` (hairpin) inside `IFLA_PROTINFO`.
const IFLA_BRPORT_MODE: u16 = 4;
/// `NLMSGERR_ATTR_MSG` in an extended ack.
const NLMSGERR_ATTR_MSG: u16 = 1;
const IFNAMSIZ: usize = 16;

/// Real client: an rtnetlink connection whose socket was opened inside a
/// namespace (on a thread made for it); the socket stays bound to that namespace,
/// so every call, from any thread, acts there.
///
/// Connections are shared: while a `Netlink` of a namespace is alive, opening another
/// one of the same namespace gives a handle on the same connection (its socket, its
/// runtime) instead of a new socket, a new runtime and, for another namespace, a new
/// thread to open it from. So the in-process delegates of one pod, and meta-cni around
/// them, talk to each namespace over one socket as long as one holder keeps it open. A
/// live socket holds its namespace, so a namespace's (device, inode) cannot be reused
/// while an entry for it can still be upgraded.
///
/// Internally owns a tokio current-thread runtime and blocks on it: do not use it
/// from inside an async runtime.
pub struct Netlink {
    conn: Arc<Conn>,
}

struct Conn {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
    capped_acks: bool,
    /// One request at a time per connection: the kernel runs one dump per socket (a
    /// second is EBUSY), and the current-thread runtime is driven by one caller.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

/// Live connections by namespace.
static SHARED: Registry<Conn> = Registry::new();

fn connect() -> Result<Conn> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("build tokio runtime", e))?;
    let (mut conn, handle, _messages) = {
        let _guard = rt.enter();
        rtnetlink::new_connection().map_err(|e| Error::io("open rtnetlink socket", e))?
    };
    let sock = conn.socket_mut().socket_mut();
    // Extended acks give human-readable kernel error messages; capped acks keep
    // the echoed request short so those messages are easy to find.
    let capped = sock.set_cap_ack(true).is_ok();
    let _ = sock.set_ext_ack(true);
    rt.spawn(conn);
    Ok(Conn {
        rt,
        handle,
        capped_acks: capped,
        busy: Mutex::new(()),
    })
}

impl Netlink {
    /// Opens a connection in `ns`, or in the calling thread's namespace for None; a
    /// handle on the live connection of that namespace when there is one.
    pub fn open(ns: Option<&Netns>) -> Result<Netlink> {
        let key = match ns {
            Some(ns) => ns.key(),
            None => current_key()?,
        };
        if let Some(conn) = SHARED.get(key) {
            return Ok(Netlink { conn });
        }
        // Made outside the registry's lock: connecting in `ns` runs on its worker, which
        // may itself open a handle.
        let conn = Arc::new(match ns {
            None => connect()?,
            Some(ns) => ns.run(connect)??,
        });
        SHARED.insert(key, &conn);
        Ok(Netlink { conn })
    }

    /// Whether `self` and `other` share one connection.
    pub fn shares_connection_with(&self, other: &Netlink) -> bool {
        Arc::ptr_eq(&self.conn, &other.conn)
    }

    /// Sends one request and collects the inner messages of the answer.
    fn exec(
        &mut self,
        op: String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.conn.handle.clone();
        let capped = self.conn.capped_acks;
        let _one_at_a_time = self.conn.busy.lock().unwrap_or_else(|e| e.into_inner());
        self.conn.rt.block_on(async move {
            let mut stream = handle
                .request(req)
                .map_err(|e| Error::Protocol(format!("{op}: {e}")))?;
            let mut out = Vec::new();
            let collect = async {
                while let Some(m) = stream.next().await {
                    match m.payload {
                        NetlinkPayload::InnerMessage(i) => out.push(i),
                        NetlinkPayload::Error(e) => {
                            if let Some(code) = e.code {
                                let message = if capped {
                                    ext_ack_message(&e.header)
                                } else {
                                    String::new()
                                };
                                return Err(Error::Netlink {
                                    op: op.clone(),
                                    errno: code.get().abs(),
                                    message,
                                });
                            }
                        }
                        NetlinkPayload::Overrun(_) => {
                            return Err(Error::Protocol(format!("{op}: netlink buffer overrun")));
                        }
                        _ => {}
                    }
                }
                Ok(())
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, collect).await {
                Ok(r) => r?,
                Err(_) => return Err(Error::Timeout(format!("{op}: no answer from the kernel"))),
            }
            Ok(out)
        })
    }

    fn ack(&mut self, op: String, msg: RouteNetlinkMessage, extra_flags: u16) -> Result<()> {
        self.exec(op, msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags)
            .map(|_| ())
    }

    fn dump(&mut self, op: String, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        self.exec(op, msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    fn get_link(&mut self, op: String, msg: LinkMessage) -> Result<Option<LinkInfo>> {
        match self.exec(op, RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `RTM_NEWLINK` without `NLM_F_CREATE` (like `ip link set`).
    fn change(&mut self, op: String, msg: LinkMessage) -> Result<()> {
        self.ack(op, RouteNetlinkMessage::NewLink(msg), 0)
    }

    /// AF_BRIDGE link dump (ports, and bridges with `RTEXT_FILTER_BRVLAN`).
    fn bridge_dump(&mut self, op: String, vlans: bool) -> Result<Vec<LinkMessage>> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        if vlans {
            msg.attributes
                .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        }
        Ok(self
            .dump(op, RouteNetlinkMessage::GetLink(msg))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }
}

/// Finds `NLMSGERR_ATTR_MSG` in the TLVs after a capped ack's echoed header.
fn ext_ack_message(h: &[u8]) -> String {
    let mut p = 16;
    while p + 4 <= h.len() {
        let len = u16::from_ne_bytes([h[p], h[p + 1]]) as usize;
        let ty = u16::from_ne_bytes([h[p + 2], h[p + 3]]) & 0x3fff;
        if len < 4 || p + len > h.len() {
            break;
        }
        if ty == NLMSGERR_ATTR_MSG {
            return String::from_utf8_lossy(&h[p + 4..p + len])
                .trim_end_matches('\0')
                .to_string();
        }
        p += (len + 3) & !3;
    }
    String::new()
}

/// Checks an interface name like the kernel's `dev_valid_name()`.
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() >= IFNAMSIZ
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err(Error::Invalid(format!(
            "bad interface name {name:?} (1-15 bytes, no '/', ':' or whitespace)"
        )));
    }
    Ok(())
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn mac_from(v: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(v).ok()
}

pub(crate) fn parse_link(m: &LinkMessage) -> LinkInfo {
    let mut li = LinkInfo {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        promisc: m.header.flags.contains(LinkFlags::Promisc),
        ..Default::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => li.name = n.clone(),
            LinkAttribute::Address(v) => li.mac = mac_from(v),
            LinkAttribute::Mtu(v) => li.mtu = *v,
            LinkAttribute::Controller(c) if *c != 0 => li.master = Some(*c),
            LinkAttribute::Link(l) if *l != 0 => li.link = Some(*l),
            LinkAttribute::LinkNetNsId(id) => li.link_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => li.kind = Some(k.to_string()),
                        NlLinkInfo::Data(d) => parse_info_data(d, &mut li),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    li
}

fn parse_info_data(d: &InfoData, li: &mut LinkInfo) {
    match d {
        InfoData::MacVlan(v) => {
            for x in v {
                if let InfoMacVlan::Mode(m) = x {
                    li.macvlan_mode = match m {
                        MacVlanMode::Private => Some(MacvlanMode::Private),
                        MacVlanMode::Vepa => Some(MacvlanMode::Vepa),
                        MacVlanMode::Bridge => Some(MacvlanMode::Bridge),
                        MacVlanMode::Passthrough => Some(MacvlanMode::Passthru),
                        MacVlanMode::Source => Some(MacvlanMode::Source),
                        _ => None,
                    }
                }
            }
        }
        InfoData::IpVlan(v) => {
            for x in v {
                if let InfoIpVlan::Mode(m) = x {
                    li.ipvlan_mode = match m {
                        IpVlanMode::L2 => Some(IpvlanMode::L2),
                        IpVlanMode::L3 => Some(IpvlanMode::L3),
                        IpVlanMode::L3S => Some(IpvlanMode::L3s),
                        _ => None,
                    }
                }
            }
        }
        InfoData::Vxlan(v) => {
            let mut vx = VxlanInfo::default();
            for x in v {
                match x {
                    InfoVxlan::Id(id) => vx.vni = *id,
                    InfoVxlan::Port(p) => vx.port = *p,
                    InfoVxlan::Local(a) => vx.local = Some(IpAddr::V4(*a)),
                    InfoVxlan::Local6(a) => vx.local = Some(IpAddr::V6(*a)),
                    InfoVxlan::Learning(l) => vx.learning = *l,
                    InfoVxlan::Link(l) if *l != 0 => vx.dev = Some(*l),
                    _ => {}
                }
            }
            li.vxlan = Some(vx);
        }
        InfoData::Bridge(v) => {
            for x in v {
                if let InfoBridge::VlanFiltering(f) = x {
                    li.bridge_vlan_filtering = Some(*f);
                }
            }
        }
        _ => {}
    }
}

fn link_add_msg(req: &LinkRequest) -> Result<LinkMessage> {
    check_ifname(&req.name)?;
    let mut m = LinkMessage::default();
    if req.up {
        m.header.flags |= LinkFlags::Up;
        m.header.change_mask |= LinkFlags::Up;
    }
    let a = &mut m.attributes;
    a.push(LinkAttribute::IfName(req.name.clone()));
    if let Some(mtu) = req.mtu {
        a.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = req.mac {
        a.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(ns) = &req.netns {
        a.push(LinkAttribute::NetNsFd(ns.fd().as_raw_fd()));
    }
    let (kind, data) = match &req.kind {
        LinkKind::Veth {
            peer_name,
            peer_netns,
            peer_mac,
            peer_mtu,
        } => {
            check_ifname(peer_name)?;
            let mut peer = LinkMessage::default();
            peer.attributes
                .push(LinkAttribute::IfName(peer_name.clone()));
            if let Some(mtu) = peer_mtu.or(req.mtu) {
                peer.attributes.push(LinkAttribute::Mtu(mtu));
            }
            if let Some(mac) = peer_mac {
                peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
            }
            if let Some(ns) = peer_netns {
                peer.attributes
                    .push(LinkAttribute::NetNsFd(ns.fd().as_raw_fd()));
            }
            (InfoKind::Veth, InfoData::Veth(InfoVeth::Peer(peer)))
        }
        // IFLA_BR_VLAN_FILTERING is only sent when enabling it: kernels built
        // without CONFIG_BRIDGE_VLAN_FILTERING reject the attribute even when 0.
        LinkKind::Bridge { vlan_filtering } => (
            InfoKind::Bridge,
            InfoData::Bridge(if *vlan_filtering {
                vec![InfoBridge::VlanFiltering(true)]
            } else {
                vec![]
            }),
        ),
        LinkKind::Macvlan { master, mode } => {
            a.push(LinkAttribute::Link(*master));
            let mode = match mode {
                MacvlanMode::Private => MacVlanMode::Private,
                MacvlanMode::Vepa => MacVlanMode::Vepa,
                MacvlanMode::Bridge => MacVlanMode::Bridge,
                MacvlanMode::Passthru => MacVlanMode::Passthrough,
                MacvlanMode::Source => MacVlanMode::Source,
            };
            (
                InfoKind::MacVlan,
                InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)]),
            )
        }
        LinkKind::Ipvlan {
            master,
            mode,
            flags,
        } => {
            a.push(LinkAttribute::Link(*master));
            let mode = match mode {
                IpvlanMode::L2 => IpVlanMode::L2,
                IpvlanMode::L3 => IpVlanMode::L3,
                IpvlanMode::L3s => IpVlanMode::L3S,
            };
            let flags = match flags {
                IpvlanFlags::Bridge => IpVlanFlags::empty(),
                IpvlanFlags::Private => IpVlanFlags::Private,
                IpvlanFlags::Vepa => IpVlanFlags::Vepa,
            };
            (
                InfoKind::IpVlan,
                InfoData::IpVlan(vec![InfoIpVlan::Mode(mode), InfoIpVlan::Flags(flags)]),
            )
        }
        LinkKind::Vxlan {
            vni,
            port,
            local,
            learning,
            dev,
        } => {
            let mut v = vec![
                InfoVxlan::Id(*vni),
                InfoVxlan::Port(*port),
                InfoVxlan::Learning(*learning),
            ];
            match local {
                Some(IpAddr::V4(l)) => v.push(InfoVxlan::Local(*l)),
                Some(IpAddr::V6(l)) => v.push(InfoVxlan::Local6(*l)),
                None => {}
            }
            if let Some(d) = dev {
                v.push(InfoVxlan::Link(*d));
            }
            (InfoKind::Vxlan, InfoData::Vxlan(v))
        }
    };
    a.push(LinkAttribute::LinkInfo(vec![
        NlLinkInfo::Kind(kind),
        NlLinkInfo::Data(data),
    ]));
    Ok(m)
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

fn parse_addr(m: &AddressMessage) -> Option<AddrInfo> {
    if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = Some(*f),
            _ => {}
        }
    }
    let ip = if m.header.family == AddressFamily::Inet {
        local.or(address)
    } else {
        address.or(local)
    }?;
    let flags =
        flags.unwrap_or_else(|| AddressFlags::from_bits_retain(m.header.flags.bits() as u32));
    Some(AddrInfo {
        index: m.header.index,
        addr: ipnet::IpNet::new(ip, m.header.prefix_len).ok()?,
        tentative: flags.contains(AddressFlags::Tentative),
        dadfailed: flags.contains(AddressFlags::Dadfailed),
        scope: m.header.scope.into(),
    })
}

fn addr_msg(index: u32, addr: ipnet::IpNet, with_brd: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    let ip = addr.addr();
    m.header.family = family_of(&ip);
    m.header.prefix_len = addr.prefix_len();
    m.header.index = index;
    m.header.scope = AddressScope::Universe;
    m.header.flags = AddressHeaderFlags::empty();
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    if let (true, ipnet::IpNet::V4(n)) = (with_brd, addr)
        && n.prefix_len() < 31
    {
        m.attributes
            .push(AddressAttribute::Broadcast(n.broadcast()));
    }
    m
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn parse_route(m: &RouteMessage) -> Option<RouteInfo> {
    let v6 = match m.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut dst_ip = None;
    let mut r = RouteInfo {
        dst: ipnet::IpNet::default(),
        gw: None,
        oif: None,
        table: m.header.table as u32,
        scope: m.header.scope.into(),
        protocol: m.header.protocol.into(),
        priority: None,
        mtu: None,
        advmss: None,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        src: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst_ip = route_addr(d),
            RouteAttribute::Gateway(g) => r.gw = route_addr(g),
            RouteAttribute::Oif(o) => r.oif = Some(*o),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.priority = Some(*p),
            RouteAttribute::PrefSource(s) => r.src = route_addr(s),
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    match x {
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        RouteMetric::Advmss(v) => r.advmss = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let dst_ip = dst_ip.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    r.dst = ipnet::IpNet::new(dst_ip, m.header.destination_prefix_length).ok()?;
    Some(r)
}

#[derive(Clone, Copy, PartialEq)]
enum RouteOp {
    Add,
    Replace,
    Del,
}

fn route_msg(r: &RouteSpec, op: RouteOp) -> Result<RouteMessage> {
    let dst = r.dst.trunc();
    let fam = family_of(&dst.addr());
    for (what, ip) in [("gateway", r.gw), ("source", r.src)] {
        if let Some(ip) = ip
            && family_of(&ip) != fam
        {
            return Err(Error::Invalid(format!(
                "route to {dst}: {what} {ip} is of another address family"
            )));
        }
    }
    let mut m = RouteMessage::default();
    let table = r.effective_table();
    m.header.address_family = fam;
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = if table < 256 {
        table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    if op == RouteOp::Del {
        m.header.protocol = RouteProtocol::Unspec;
        m.header.scope = r.scope.map(RouteScope::from).unwrap_or(RouteScope::NoWhere);
        m.header.kind = RouteType::Unspec;
    } else {
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::from(r.effective_scope());
        m.header.kind = RouteType::Unicast;
    }
    if r.onlink {
        m.header.flags |= RouteFlags::Onlink;
    }
    let a = &mut m.attributes;
    a.push(RouteAttribute::Table(table));
    if dst.prefix_len() > 0 {
        a.push(RouteAttribute::Destination(dst.addr().into()));
    }
    if let Some(gw) = r.gw {
        a.push(RouteAttribute::Gateway(gw.into()));
    }
    if let Some(oif) = r.oif {
        a.push(RouteAttribute::Oif(oif));
    }
    if let Some(p) = r.priority {
        a.push(RouteAttribute::Priority(p));
    }
    if let Some(s) = r.src {
        a.push(RouteAttribute::PrefSource(s.into()));
    }
    let mut metrics = Vec::new();
    if let Some(v) = r.mtu {
        metrics.push(RouteMetric::Mtu(v));
    }
    if let Some(v) = r.advmss {
        metrics.push(RouteMetric::Advmss(v));
    }
    if !metrics.is_empty() && op != RouteOp::Del {
        a.push(RouteAttribute::Metrics(metrics));
    }
    Ok(m)
}

fn neigh_msg(family: AddressFamily, index: u32, permanent: bool) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = if permanent {
        NeighbourState::Permanent
    } else {
        NeighbourState::Reachable
    };
    m
}

fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        NeighbourAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        NeighbourAddress::Other(b) => ip_from_bytes(b),
        _ => None,
    }
}

fn fdb_msg(f: &FdbSpec) -> NeighbourMessage {
    let mut m = neigh_msg(AddressFamily::Bridge, f.index, f.permanent);
    m.header.flags = if f.self_ {
        NeighbourFlags::Own
    } else {
        NeighbourFlags::Controller
    };
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
    if let Some(dst) = f.dst {
        m.attributes
            .push(NeighbourAttribute::Destination(dst.into()));
    }
    if let Some(vni) = f.vni {
        m.attributes.push(NeighbourAttribute::Vni(vni));
    }
    m
}

fn addr_label(addr: &ipnet::IpNet) -> String {
    addr.to_string()
}

impl NetlinkOps for Netlink {
    fn links(&mut self) -> Result<Vec<LinkInfo>> {
        let msgs = self.dump(
            "links".into(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        if check_ifname(name).is_err() {
            return Ok(None);
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(format!("link_by_name {name}"), m)
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<LinkInfo>> {
        if index == 0 || index > i32::MAX as u32 {
            return Ok(None);
        }
        self.get_link(format!("link_by_index {index}"), link_msg(index))
    }

    fn link_add(&mut self, req: &LinkRequest) -> Result<()> {
        let msg = link_add_msg(req)?;
        let op = format!("link_add {} ({})", req.name, req.kind.kind_str());
        self.ack(op, RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| match e {
                Error::Netlink { op, errno, message }
                    if errno == nix::errno::Errno::EOPNOTSUPP as i32 && message.is_empty() =>
                {
                    Error::Netlink {
                        op,
                        errno,
                        message: format!(
                            "this kernel does not support link kind {:?} or one of the requested options",
                            req.kind.kind_str()
                        ),
                    }
                }
                e => e,
            })
    }

    fn link_del(&mut self, index: u32) -> Result<()> {
        self.ack(
            format!("link_del {index}"),
            RouteNetlinkMessage::DelLink(link_msg(index)),
            0,
        )
    }

    fn link_set_group(&mut self, index: u32, group: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Group(group));
        self.change(format!("link_set_group {index} {group}"), m)
    }

    fn link_del_group(&mut self, group: u32) -> Result<()> {
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::Group(group));
        self.ack(
            format!("link_del_group {group}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        )
    }

    fn link_set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let mut m = link_msg(index);
        if up {
            m.header.flags |= LinkFlags::Up;
        }
        m.header.change_mask |= LinkFlags::Up;
        self.change(format!("link_set_up {index} {up}"), m)
    }

    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.change(format!("link_set_mtu {index} {mtu}"), m)
    }

    fn link_set_mac(&mut self, index: u32, mac: Mac) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.change(format!("link_set_mac {index} {}", format_mac(&mac)), m)
    }

    fn link_set_name(&mut self, index: u32, name: &str) -> Result<()> {
        check_ifname(name)?;
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.change(format!("link_set_name {index} {name}"), m)
    }

    fn link_set_master(&mut self, index: u32, master: Option<u32>) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::Controller(master.unwrap_or(0)));
        self.change(format!("link_set_master {index} {master:?}"), m)
    }

    fn link_set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        let mut m = link_msg(index);
        if on {
            m.header.flags |= LinkFlags::Promisc;
        }
        m.header.change_mask |= LinkFlags::Promisc;
        self.change(format!("link_set_promisc {index} {on}"), m)
    }

    fn link_set_netns(&mut self, index: u32, ns: &Netns) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::NetNsFd(ns.fd().as_raw_fd()));
        self.change(format!("link_set_netns {index} {}", ns.path().display()), m)
    }

    fn bridge_port_set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut m = link_msg(index);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::ProtoInfoBridge(vec![
            LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_MODE, vec![u8::from(on)])),
        ]));
        self.ack(
            format!("bridge_port_set_hairpin {index} {on}"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    fn bridge_port_hairpin(&mut self, index: u32) -> Result<bool> {
        let op = format!("bridge_port_hairpin {index}");
        let msgs = self.bridge_dump(op.clone(), false)?;
        let m = msgs
            .iter()
            .find(|m| m.header.index == index)
            .ok_or_else(|| Error::NotFound(format!("{op}: no bridge port with index {index}")))?;
        for a in &m.attributes {
            if let LinkAttribute::ProtoInfoBridge(v) = a {
                for p in v {
                    if let LinkProtoInfoBridge::Other(nla) = p
                        && rtnetlink::packet_core::Nla::kind(nla) == IFLA_BRPORT_MODE
                    {
                        let mut buf = [0u8; 1];
                        if rtnetlink::packet_core::Nla::value_len(nla) == 1 {
                            rtnetlink::packet_core::Nla::emit_value(nla, &mut buf);
                            return Ok(buf[0] != 0);
                        }
                    }
                }
            }
        }
        Err(Error::Protocol(format!(
            "{op}: no IFLA_BRPORT_MODE in the kernel's answer"
        )))
    }

    fn bridge_vlan_add(&mut self, index: u32, vid: u16, pvid: bool, untagged: bool) -> Result<()> {
        let op = format!("bridge_vlan_add {index} vid {vid}");
        if !(1..=4094).contains(&vid) {
            return Err(Error::Invalid(format!("{op}: VLAN id must be 1..=4094")));
        }
        let is_bridge = self
            .link_by_index(index)?
            .ok_or_else(|| Error::netlink(op.clone(), nix::errno::Errno::ENODEV as i32))?
            .kind
            .as_deref()
            == Some("bridge");
        let mut flags = BridgeVlanInfoFlags::empty();
        if pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        let mut spec = Vec::new();
        if is_bridge {
            spec.push(AfSpecBridge::Flags(BridgeFlag::LowerDev));
        }
        spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid }));
        let mut m = link_msg(index);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::AfSpecBridge(spec));
        self.ack(op, RouteNetlinkMessage::SetLink(m), 0)
    }

    fn bridge_vlans(&mut self, index: u32) -> Result<Vec<(u16, bool, bool)>> {
        let msgs = self.bridge_dump(format!("bridge_vlans {index}"), true)?;
        Ok(parse_bridge_vlans(&msgs, index))
    }

    fn addrs(&mut self, index: Option<u32>) -> Result<Vec<AddrInfo>> {
        let msgs = self.dump(
            "addrs".into(),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    fn addr_add(&mut self, index: u32, addr: ipnet::IpNet) -> Result<()> {
        let m = addr_msg(index, addr, true);
        self.ack(
            format!("addr_add {} dev {index}", addr_label(&addr)),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn addr_del(&mut self, index: u32, addr: ipnet::IpNet) -> Result<()> {
        let m = addr_msg(index, addr, false);
        self.ack(
            format!("addr_del {} dev {index}", addr_label(&addr)),
            RouteNetlinkMessage::DelAddress(m),
            0,
        )
    }

    fn routes(&mut self, v6: bool, table: Option<u32>) -> Result<Vec<RouteInfo>> {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let table = table.unwrap_or(TABLE_MAIN);
        let msgs = self.dump(
            format!("routes v6={v6} table {table}"),
            RouteNetlinkMessage::GetRoute(m),
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if !r.header.flags.contains(RouteFlags::Cloned) =>
                {
                    parse_route(r)
                }
                _ => None,
            })
            .filter(|r| r.table == table)
            .collect())
    }

    fn route_add(&mut self, r: &RouteSpec) -> Result<()> {
        let m = route_msg(r, RouteOp::Add)?;
        self.ack(
            format!("route_add {}", route_label(r)),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn route_replace(&mut self, r: &RouteSpec) -> Result<()> {
        let m = route_msg(r, RouteOp::Replace)?;
        self.ack(
            format!("route_replace {}", route_label(r)),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    fn route_del(&mut self, r: &RouteSpec) -> Result<()> {
        let m = route_msg(r, RouteOp::Del)?;
        self.ack(
            format!("route_del {}", route_label(r)),
            RouteNetlinkMessage::DelRoute(m),
            0,
        )
    }

    fn neigh_add(&mut self, n: &NeighSpec) -> Result<()> {
        let mut m = neigh_msg(family_of(&n.ip), n.index, n.permanent);
        m.attributes
            .push(NeighbourAttribute::Destination(n.ip.into()));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
        self.ack(
            format!(
                "neigh_add {} lladdr {} dev {}",
                n.ip,
                format_mac(&n.mac),
                n.index
            ),
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    fn neigh_del(&mut self, n: &NeighSpec) -> Result<()> {
        let mut m = neigh_msg(family_of(&n.ip), n.index, n.permanent);
        m.attributes
            .push(NeighbourAttribute::Destination(n.ip.into()));
        self.ack(
            format!("neigh_del {} dev {}", n.ip, n.index),
            RouteNetlinkMessage::DelNeighbour(m),
            0,
        )
    }

    fn neighs(&mut self, index: Option<u32>) -> Result<Vec<NeighSpec>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = NeighbourMessage::default();
            q.header.family = fam;
            for m in self.dump("neighs".into(), RouteNetlinkMessage::GetNeighbour(q))? {
                let RouteNetlinkMessage::NewNeighbour(m) = m else {
                    continue;
                };
                if m.header.family != fam || index.is_some_and(|i| i != m.header.ifindex) {
                    continue;
                }
                let mut ip = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(d) => ip = neigh_ip(d),
                        NeighbourAttribute::LinkLayerAddress(l) => mac = mac_from(l),
                        _ => {}
                    }
                }
                if let (Some(ip), Some(mac)) = (ip, mac) {
                    out.push(NeighSpec {
                        index: m.header.ifindex,
                        ip,
                        mac,
                        permanent: m.header.state == NeighbourState::Permanent,
                    });
                }
            }
        }
        Ok(out)
    }

    fn fdb_add(&mut self, f: &FdbSpec) -> Result<()> {
        let flags = if f.mac == [0; 6] {
            NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_CREATE | NLM_F_REPLACE
        };
        self.ack(
            format!(
                "fdb_add {} dst {:?} dev {}",
                format_mac(&f.mac),
                f.dst,
                f.index
            ),
            RouteNetlinkMessage::NewNeighbour(fdb_msg(f)),
            flags,
        )
    }

    fn fdb_del(&mut self, f: &FdbSpec) -> Result<()> {
        self.ack(
            format!(
                "fdb_del {} dst {:?} dev {}",
                format_mac(&f.mac),
                f.dst,
                f.index
            ),
            RouteNetlinkMessage::DelNeighbour(fdb_msg(f)),
            0,
        )
    }

    fn fdbs(&mut self, index: u32) -> Result<Vec<FdbSpec>> {
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Bridge;
        let mut out = Vec::new();
        for m in self.dump(
            format!("fdbs {index}"),
            RouteNetlinkMessage::GetNeighbour(q),
        )? {
            let RouteNetlinkMessage::NewNeighbour(m) = m else {
                continue;
            };
            if m.header.family != AddressFamily::Bridge || m.header.ifindex != index {
                continue;
            }
            let mut f = FdbSpec {
                index,
                mac: [0; 6],
                dst: None,
                vni: None,
                permanent: m.header.state == NeighbourState::Permanent,
                self_: m.header.flags.contains(NeighbourFlags::Own),
            };
            let mut have_mac = false;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        if let Some(mac) = mac_from(l) {
                            f.mac = mac;
                            have_mac = true;
                        }
                    }
                    NeighbourAttribute::Destination(d) => f.dst = neigh_ip(d),
                    NeighbourAttribute::Vni(v) => f.vni = Some(*v),
                    _ => {}
                }
            }
            if have_mac {
                out.push(f);
            }
        }
        Ok(out)
    }
}

/// `(vid, pvid, untagged)` of `index` from an AF_BRIDGE dump.
fn parse_bridge_vlans(msgs: &[LinkMessage], index: u32) -> Vec<(u16, bool, bool)> {
    let mut out = Vec::new();
    for m in msgs.iter().filter(|m| m.header.index == index) {
        for a in &m.attributes {
            let LinkAttribute::AfSpecBridge(v) = a else {
                continue;
            };
            let mut range_start = None;
            for s in v {
                let AfSpecBridge::VlanInfo(i) = s else {
                    continue;
                };
                let pvid = i.flags.contains(BridgeVlanInfoFlags::Pvid);
                let untagged = i.flags.contains(BridgeVlanInfoFlags::Untagged);
                if i.flags.contains(BridgeVlanInfoFlags::RangeBegin) {
                    range_start = Some(i.vid);
                    continue;
                }
                let first = if i.flags.contains(BridgeVlanInfoFlags::RangeEnd) {
                    range_start.take().unwrap_or(i.vid)
                } else {
                    i.vid
                };
                for vid in first..=i.vid {
                    let e = (vid, pvid, untagged);
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
            }
        }
    }
    out
}

fn route_label(r: &RouteSpec) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev {oif}"));
    }
    if let Some(t) = r.table {
        s.push_str(&format!(" table {t}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_parsing() {
        let mut h = vec![0u8; 16];
        // NLMSGERR_ATTR_MSG "bad\0" (len 8), then another attr
        h.extend_from_slice(&8u16.to_ne_bytes());
        h.extend_from_slice(&1u16.to_ne_bytes());
        h.extend_from_slice(b"bad\0");
        assert_eq!(ext_ack_message(&h), "bad");
        assert_eq!(ext_ack_message(&h[..10]), "");
        assert_eq!(ext_ack_message(&[0u8; 30]), "");
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a234567890abcde").is_ok());
        assert!(check_ifname("a234567890abcdef").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
    }

    #[test]
    fn route_msg_rejects_mixed_families() {
        let r = RouteSpec {
            gw: Some("fe80::1".parse().unwrap()),
            ..RouteSpec::new("10.0.0.0/8".parse().unwrap())
        };
        assert!(route_msg(&r, RouteOp::Add).is_err());
    }

    #[test]
    fn bridge_vlan_parsing() {
        let mut m = link_msg(5);
        m.header.interface_family = AddressFamily::Bridge;
        let vi = |vid, flags| AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid });
        m.attributes.push(LinkAttribute::AfSpecBridge(vec![
            vi(1, BridgeVlanInfoFlags::empty()),
            vi(
                100,
                BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
            ),
            vi(200, BridgeVlanInfoFlags::RangeBegin),
            vi(202, BridgeVlanInfoFlags::RangeEnd),
        ]));
        let other = link_msg(6);
        let got = parse_bridge_vlans(&[other, m], 5);
        assert_eq!(
            got,
            vec![
                (1, false, false),
                (100, true, true),
                (200, false, false),
                (201, false, false),
                (202, false, false)
            ]
        );
        assert!(parse_bridge_vlans(&[], 5).is_empty());
    }

    #[test]
    fn bridge_without_vlan_filtering_sends_no_option() {
        let req = LinkRequest {
            name: "br0".into(),
            kind: LinkKind::Bridge {
                vlan_filtering: false,
            },
            mtu: None,
            mac: None,
            netns: None,
            up: false,
        };
        let li = parse_link(&link_add_msg(&req).unwrap());
        assert_eq!(li.kind.as_deref(), Some("bridge"));
        assert_eq!(li.bridge_vlan_filtering, None);
        let req = LinkRequest {
            kind: LinkKind::Bridge {
                vlan_filtering: true,
            },
            ..req
        };
        assert_eq!(
            parse_link(&link_add_msg(&req).unwrap()).bridge_vlan_filtering,
            Some(true)
        );
    }

    #[test]
    fn link_msg_roundtrip() {
        let req = LinkRequest {
            name: "mv0".into(),
            kind: LinkKind::Macvlan {
                master: 7,
                mode: MacvlanMode::Bridge,
            },
            mtu: Some(1400),
            mac: Some([2, 0, 0, 0, 0, 1]),
            netns: None,
            up: true,
        };
        let m = link_add_msg(&req).unwrap();
        let li = parse_link(&m);
        assert_eq!(li.name, "mv0");
        assert_eq!(li.kind.as_deref(), Some("macvlan"));
        assert_eq!(li.macvlan_mode, Some(MacvlanMode::Bridge));
        assert_eq!(li.link, Some(7));
        assert_eq!(li.mtu, 1400);
        assert!(li.up);
    }
}
