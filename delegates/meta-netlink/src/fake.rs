//! In-memory fake of one network namespace, for root-free unit tests.
//!
//! It models what the delegates rely on, close to the kernel: EEXIST on duplicate
//! names/addresses/routes, not-found errnos on missing objects, veth pairs,
//! macvlan/ipvlan/vxlan parents (deleted with their parent), bridge masters,
//! connected routes for addresses on up links, IPv4 routes needing an up link,
//! and `link_set_netns` removing the link. Every mutating call is recorded in
//! order (also the ones that fail) and faults can be injected per operation.
//!
//! Approximations: IPv6 addresses are never tentative unless a test says so
//! ([`FakeNetlink::set_addr_flags`]); there is no local table, no multipath, and
//! taking a link down removes every route through it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::ops::{NetlinkOps, Request};
use crate::real::check_ifname;
use crate::types::*;

/// The fake client. See the [module docs](self).
#[derive(Debug)]
pub struct FakeNetlink {
    links: BTreeMap<u32, LinkInfo>,
    next_index: u32,
    addrs: Vec<AddrInfo>,
    routes: Vec<RouteInfo>,
    neighs: Vec<NeighSpec>,
    fdbs: Vec<FdbSpec>,
    hairpin: BTreeMap<u32, bool>,
    groups: BTreeMap<u32, u32>,
    vlans: BTreeMap<u32, Vec<(u16, bool, bool)>>,
    requests: Vec<Request>,
    faults: Vec<(String, Error)>,
}

impl Default for FakeNetlink {
    fn default() -> Self {
        Self::new()
    }
}

fn err(op: &str, errno: Errno) -> Error {
    Error::netlink(op, errno as i32)
}

fn is_v6(ip: &IpAddr) -> bool {
    ip.is_ipv6()
}

fn default_metric(v6: bool) -> u32 {
    if v6 { 1024 } else { 0 }
}

impl FakeNetlink {
    /// A namespace with only `lo` (index 1, down), like a fresh network namespace.
    pub fn new() -> Self {
        let mut links = BTreeMap::new();
        links.insert(
            1,
            LinkInfo {
                index: 1,
                name: "lo".into(),
                mac: Some([0; 6]),
                mtu: 65536,
                ..Default::default()
            },
        );
        FakeNetlink {
            links,
            next_index: 2,
            addrs: Vec::new(),
            routes: Vec::new(),
            neighs: Vec::new(),
            fdbs: Vec::new(),
            hairpin: BTreeMap::new(),
            groups: BTreeMap::new(),
            vlans: BTreeMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
        }
    }

    /// Every mutating call so far, in order (including calls that failed).
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&mut self) {
        self.requests.clear();
    }

    /// Adds (or replaces, by index) a link as if it already existed.
    pub fn add_existing_link(&mut self, info: LinkInfo) {
        self.next_index = self.next_index.max(info.index.saturating_add(1));
        if info.up {
            let idx = info.index;
            self.links.insert(idx, info);
            self.add_connected_routes(idx);
        } else {
            self.links.insert(info.index, info);
        }
    }

    /// Adds an address as if it already existed (no request recorded, no checks).
    pub fn add_existing_addr(&mut self, addr: AddrInfo) {
        let idx = addr.index;
        self.addrs.push(addr);
        self.add_connected_routes(idx);
    }

    /// Adds a route as if it already existed (no request recorded, no checks).
    pub fn add_existing_route(&mut self, route: RouteInfo) {
        self.routes.push(route);
    }

    /// Sets the DAD flags of an address (to test waiting for DAD). Returns false
    /// when there is no such address.
    pub fn set_addr_flags(
        &mut self,
        index: u32,
        addr: ipnet::IpNet,
        tentative: bool,
        dadfailed: bool,
    ) -> bool {
        match self
            .addrs
            .iter_mut()
            .find(|a| a.index == index && a.addr == addr)
        {
            Some(a) => {
                a.tentative = tentative;
                a.dadfailed = dadfailed;
                true
            }
            None => false,
        }
    }

    /// Makes the next call of `op` (a [`NetlinkOps`] method name such as
    /// `"link_add"` or `"addrs"`) fail with `err`. Several faults queue up.
    pub fn fail_next(&mut self, op: &str, err: Error) {
        self.faults.push((op.to_string(), err));
    }

    fn fault(&mut self, op: &str) -> Result<()> {
        match self.faults.iter().position(|(o, _)| o == op) {
            Some(i) => Err(self.faults.remove(i).1),
            None => Ok(()),
        }
    }

    fn record(&mut self, op: &str, r: Request) -> Result<()> {
        self.requests.push(r);
        self.fault(op)
    }

    fn link(&self, op: &str, index: u32) -> Result<&LinkInfo> {
        self.links.get(&index).ok_or_else(|| err(op, Errno::ENODEV))
    }

    fn link_mut(&mut self, op: &str, index: u32) -> Result<&mut LinkInfo> {
        self.links
            .get_mut(&index)
            .ok_or_else(|| err(op, Errno::ENODEV))
    }

    fn name_taken(&self, name: &str) -> bool {
        self.links.values().any(|l| l.name == name)
    }

    fn alloc_index(&mut self) -> u32 {
        let i = self.next_index;
        self.next_index += 1;
        i
    }

    fn fake_mac(index: u32) -> Mac {
        let b = index.to_be_bytes();
        [0x02, 0xfa, b[0], b[1], b[2], b[3]]
    }

    fn connected_route(a: &AddrInfo) -> Option<RouteInfo> {
        let ip = a.addr.addr();
        let v6 = is_v6(&ip);
        if a.addr.prefix_len() == a.addr.max_prefix_len() {
            return None;
        }
        Some(RouteInfo {
            dst: a.addr.trunc(),
            gw: None,
            oif: Some(a.index),
            table: TABLE_MAIN,
            scope: if v6 { SCOPE_UNIVERSE } else { SCOPE_LINK },
            protocol: PROTO_KERNEL,
            priority: if v6 { Some(256) } else { None },
            mtu: None,
            advmss: None,
            onlink: false,
            src: if v6 { None } else { Some(ip) },
        })
    }

    fn add_connected_routes(&mut self, index: u32) {
        if !self.links.get(&index).is_some_and(|l| l.up) {
            return;
        }
        let new: Vec<RouteInfo> = self
            .addrs
            .iter()
            .filter(|a| a.index == index)
            .filter_map(Self::connected_route)
            .collect();
        for r in new {
            if !self
                .routes
                .iter()
                .any(|x| x.dst == r.dst && x.oif == r.oif && x.protocol == PROTO_KERNEL)
            {
                self.routes.push(r);
            }
        }
    }

    /// Removes links and everything that hangs off them.
    fn del_one(&mut self, index: u32) -> Result<()> {
        let l = self.link("link_del", index)?.clone();
        let mut gone = vec![index];
        if l.kind.as_deref() == Some("veth")
            && let Some(p) = l.link
            && l.link_netnsid.is_none()
        {
            gone.push(p);
        }
        for c in self.links.values() {
            let child_of = |i: &u32| {
                matches!(c.kind.as_deref(), Some("macvlan" | "ipvlan")) && c.link == Some(*i)
                    || c.vxlan.as_ref().is_some_and(|v| v.dev == Some(*i))
            };
            if gone.iter().any(child_of) && !gone.contains(&c.index) {
                gone.push(c.index);
            }
        }
        self.forget_links(&gone);
        Ok(())
    }

    fn forget_links(&mut self, gone: &[u32]) {
        for i in gone {
            self.links.remove(i);
            self.hairpin.remove(i);
            self.groups.remove(i);
            self.vlans.remove(i);
        }
        self.addrs.retain(|a| !gone.contains(&a.index));
        self.routes
            .retain(|r| !r.oif.is_some_and(|o| gone.contains(&o)));
        self.neighs.retain(|n| !gone.contains(&n.index));
        self.fdbs.retain(|f| !gone.contains(&f.index));
        for l in self.links.values_mut() {
            if l.master.is_some_and(|m| gone.contains(&m)) {
                l.master = None;
            }
            if l.kind.as_deref() == Some("veth") && l.link.is_some_and(|p| gone.contains(&p)) {
                l.link = None;
            }
            if let Some(v) = &mut l.vxlan
                && v.dev.is_some_and(|d| gone.contains(&d))
            {
                v.dev = None;
            }
        }
    }

    fn route_matches_for_gw(&self, gw: &IpAddr, oif: Option<u32>, table: u32) -> Option<u32> {
        self.routes
            .iter()
            .filter(|r| r.table == table && r.gw.is_none() && r.dst.contains(gw))
            .filter(|r| oif.is_none() || r.oif == oif)
            .max_by_key(|r| r.dst.prefix_len())
            .and_then(|r| r.oif)
    }

    fn build_route(&self, op: &str, r: &RouteSpec) -> Result<RouteInfo> {
        let dst = r.dst.trunc();
        let v6 = is_v6(&dst.addr());
        for ip in [r.gw, r.src].into_iter().flatten() {
            if is_v6(&ip) != v6 {
                return Err(Error::Invalid(format!(
                    "{op}: {ip} is of another address family than {dst}"
                )));
            }
        }
        let table = r.effective_table();
        let mut oif = r.oif;
        if let Some(o) = oif {
            self.link(op, o)?;
        }
        if let Some(gw) = r.gw {
            let link_local = matches!(gw, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
            if r.onlink || link_local {
                if oif.is_none() {
                    return Err(err(op, Errno::EINVAL));
                }
            } else {
                match self.route_matches_for_gw(&gw, oif, table) {
                    Some(o) => oif = Some(o),
                    None => return Err(err(op, Errno::ENETUNREACH)),
                }
            }
        } else if oif.is_none() {
            return Err(err(op, Errno::ENODEV));
        }
        if !v6
            && let Some(o) = oif
            && !self.links.get(&o).is_some_and(|l| l.up)
        {
            return Err(err(op, Errno::ENETDOWN));
        }
        let priority = if v6 {
            Some(r.priority.unwrap_or(1024))
        } else {
            r.priority.filter(|p| *p != 0)
        };
        Ok(RouteInfo {
            dst,
            gw: r.gw,
            oif,
            table,
            scope: r.effective_scope(),
            protocol: PROTO_BOOT,
            priority,
            mtu: r.mtu,
            advmss: r.advmss,
            onlink: r.onlink,
            src: r.src,
        })
    }

    fn same_route_key(a: &RouteInfo, b: &RouteInfo) -> bool {
        let v6 = is_v6(&a.dst.addr());
        a.dst == b.dst
            && a.table == b.table
            && is_v6(&b.dst.addr()) == v6
            && a.priority.unwrap_or(default_metric(v6)) == b.priority.unwrap_or(default_metric(v6))
    }
}

impl NetlinkOps for FakeNetlink {
    fn links(&mut self) -> Result<Vec<LinkInfo>> {
        self.fault("links")?;
        Ok(self.links.values().cloned().collect())
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        self.fault("link_by_name")?;
        Ok(self.links.values().find(|l| l.name == name).cloned())
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<LinkInfo>> {
        self.fault("link_by_index")?;
        Ok(self.links.get(&index).cloned())
    }

    fn link_add(&mut self, req: &LinkRequest) -> Result<()> {
        const OP: &str = "link_add";
        self.record(OP, Request::LinkAdd(req.clone()))?;
        check_ifname(&req.name)?;
        let here = req.netns.is_none();
        if here && self.name_taken(&req.name) {
            return Err(err(OP, Errno::EEXIST));
        }
        let mut info = LinkInfo {
            name: req.name.clone(),
            kind: Some(req.kind.kind_str().to_string()),
            mac: req.mac,
            mtu: req.mtu.unwrap_or(1500),
            up: req.up,
            ..Default::default()
        };
        let mut peer = None;
        match &req.kind {
            LinkKind::Veth {
                peer_name,
                peer_netns,
                peer_mac,
                peer_mtu,
            } => {
                check_ifname(peer_name)?;
                if peer_netns.is_none() {
                    if self.name_taken(peer_name) || (here && *peer_name == req.name) {
                        return Err(err(OP, Errno::EEXIST));
                    }
                    peer = Some(LinkInfo {
                        name: peer_name.clone(),
                        kind: Some("veth".into()),
                        mac: *peer_mac,
                        mtu: peer_mtu.or(req.mtu).unwrap_or(1500),
                        ..Default::default()
                    });
                }
            }
            LinkKind::Bridge { vlan_filtering } => {
                info.bridge_vlan_filtering = Some(*vlan_filtering)
            }
            LinkKind::Macvlan { master, mode } => {
                let m = self.link(OP, *master)?;
                info.link = Some(*master);
                info.macvlan_mode = Some(*mode);
                if req.mtu.is_none() {
                    info.mtu = m.mtu;
                }
            }
            LinkKind::Ipvlan { master, mode, .. } => {
                let m = self.link(OP, *master)?;
                info.link = Some(*master);
                info.ipvlan_mode = Some(*mode);
                info.mac = m.mac;
                if req.mtu.is_none() {
                    info.mtu = m.mtu;
                }
            }
            LinkKind::Vxlan {
                vni,
                port,
                local,
                learning,
                dev,
            } => {
                if let Some(d) = dev {
                    self.link(OP, *d)?;
                }
                info.vxlan = Some(VxlanInfo {
                    vni: *vni,
                    port: *port,
                    local: *local,
                    learning: *learning,
                    dev: *dev,
                });
            }
        }
        let idx = if here { Some(self.alloc_index()) } else { None };
        let peer_idx = peer.as_ref().map(|_| self.alloc_index());
        if let Some(i) = idx {
            info.index = i;
            info.mac = info.mac.or(Some(Self::fake_mac(i)));
            if let LinkKind::Veth { .. } = req.kind {
                info.link = peer_idx;
                info.link_netnsid = if peer_idx.is_some() { None } else { Some(0) };
            }
            if info.bridge_vlan_filtering == Some(true) {
                self.vlans.insert(i, vec![(1, true, true)]);
            }
            self.links.insert(i, info);
        }
        if let (Some(mut p), Some(pi)) = (peer, peer_idx) {
            p.index = pi;
            p.mac = p.mac.or(Some(Self::fake_mac(pi)));
            p.link = idx;
            p.link_netnsid = if idx.is_some() { None } else { Some(0) };
            self.links.insert(pi, p);
        }
        Ok(())
    }

    fn link_set_group(&mut self, index: u32, group: u32) -> Result<()> {
        const OP: &str = "link_set_group";
        self.record(OP, Request::SetGroup(index, group))?;
        self.link(OP, index)?;
        self.groups.insert(index, group);
        Ok(())
    }

    fn link_del_group(&mut self, group: u32) -> Result<()> {
        const OP: &str = "link_del_group";
        self.record(OP, Request::LinkDelGroup(group))?;
        let members: Vec<u32> = self
            .groups
            .iter()
            .filter(|(_, g)| **g == group)
            .map(|(i, _)| *i)
            .collect();
        if members.is_empty() {
            return Err(err(OP, Errno::ENODEV));
        }
        for i in members {
            if self.links.contains_key(&i) {
                self.del_one(i)?;
            }
        }
        Ok(())
    }

    fn link_del(&mut self, index: u32) -> Result<()> {
        const OP: &str = "link_del";
        self.record(OP, Request::LinkDel(index))?;
        self.del_one(index)
    }

    fn link_set_up(&mut self, index: u32, up: bool) -> Result<()> {
        const OP: &str = "link_set_up";
        self.record(OP, Request::SetUp(index, up))?;
        self.link_mut(OP, index)?.up = up;
        if up {
            self.add_connected_routes(index);
        } else {
            self.routes.retain(|r| r.oif != Some(index));
        }
        Ok(())
    }

    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        const OP: &str = "link_set_mtu";
        self.record(OP, Request::SetMtu(index, mtu))?;
        let l = self.link_mut(OP, index)?;
        if mtu < 68 {
            return Err(err(OP, Errno::EINVAL));
        }
        l.mtu = mtu;
        Ok(())
    }

    fn link_set_mac(&mut self, index: u32, mac: Mac) -> Result<()> {
        const OP: &str = "link_set_mac";
        self.record(OP, Request::SetMac(index, mac))?;
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(err(OP, Errno::EADDRNOTAVAIL));
        }
        self.link_mut(OP, index)?.mac = Some(mac);
        Ok(())
    }

    fn link_set_name(&mut self, index: u32, name: &str) -> Result<()> {
        const OP: &str = "link_set_name";
        self.record(OP, Request::SetName(index, name.to_string()))?;
        check_ifname(name)?;
        let l = self.link(OP, index)?;
        if l.name == name {
            return Ok(());
        }
        // Recent kernels rename links that are up too (older ones say EBUSY).
        if self.name_taken(name) {
            return Err(err(OP, Errno::EEXIST));
        }
        self.link_mut(OP, index)?.name = name.to_string();
        Ok(())
    }

    fn link_set_master(&mut self, index: u32, master: Option<u32>) -> Result<()> {
        const OP: &str = "link_set_master";
        self.record(OP, Request::SetMaster(index, master))?;
        self.link(OP, index)?;
        if let Some(m) = master {
            let ml = self.link(OP, m)?;
            if m == index {
                return Err(err(OP, Errno::ELOOP));
            }
            if ml.kind.as_deref() != Some("bridge") {
                return Err(err(OP, Errno::EOPNOTSUPP));
            }
            let filtering = ml.bridge_vlan_filtering == Some(true);
            self.link_mut(OP, index)?.master = Some(m);
            if filtering {
                self.vlans.insert(index, vec![(1, true, true)]);
            }
        } else {
            self.link_mut(OP, index)?.master = None;
            self.hairpin.remove(&index);
            self.vlans.remove(&index);
        }
        Ok(())
    }

    fn link_set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        const OP: &str = "link_set_promisc";
        self.record(OP, Request::SetPromisc(index, on))?;
        self.link_mut(OP, index)?.promisc = on;
        Ok(())
    }

    fn link_set_netns(&mut self, index: u32, ns: &Netns) -> Result<()> {
        const OP: &str = "link_set_netns";
        self.record(OP, Request::SetNetns(index, ns.clone()))?;
        let l = self.link(OP, index)?.clone();
        // The peer of a veth now sees its other end in another namespace.
        if l.kind.as_deref() == Some("veth")
            && let Some(p) = l.link
            && l.link_netnsid.is_none()
            && let Some(pl) = self.links.get_mut(&p)
        {
            pl.link_netnsid = Some(0);
        }
        // Children stay (the kernel keeps macvlans when the parent moves).
        let children: Vec<(u32, LinkInfo)> = self
            .links
            .iter()
            .filter(|(_, c)| c.link == Some(index) && c.kind.as_deref() != Some("veth"))
            .map(|(i, c)| (*i, c.clone()))
            .collect();
        self.forget_links(&[index]);
        for (i, c) in children {
            self.links.insert(i, c);
        }
        Ok(())
    }

    fn bridge_port_set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        const OP: &str = "bridge_port_set_hairpin";
        self.record(OP, Request::SetHairpin(index, on))?;
        if self.link(OP, index)?.master.is_none() {
            return Err(err(OP, Errno::EOPNOTSUPP));
        }
        self.hairpin.insert(index, on);
        Ok(())
    }

    fn bridge_port_hairpin(&mut self, index: u32) -> Result<bool> {
        self.fault("bridge_port_hairpin")?;
        match self.links.get(&index) {
            Some(l) if l.master.is_some() => Ok(self.hairpin.get(&index).copied().unwrap_or(false)),
            _ => Err(Error::NotFound(format!(
                "bridge_port_hairpin {index}: no bridge port with index {index}"
            ))),
        }
    }

    fn bridge_vlan_add(&mut self, index: u32, vid: u16, pvid: bool, untagged: bool) -> Result<()> {
        const OP: &str = "bridge_vlan_add";
        self.record(OP, Request::BridgeVlanAdd(index, vid, pvid, untagged))?;
        if !(1..=4094).contains(&vid) {
            return Err(Error::Invalid(format!("{OP}: VLAN id must be 1..=4094")));
        }
        let l = self.link(OP, index)?;
        if l.kind.as_deref() != Some("bridge") && l.master.is_none() {
            return Err(err(OP, Errno::EOPNOTSUPP));
        }
        let v = self.vlans.entry(index).or_default();
        if pvid {
            for e in v.iter_mut() {
                e.1 = false;
            }
        }
        v.retain(|e| e.0 != vid);
        v.push((vid, pvid, untagged));
        v.sort();
        Ok(())
    }

    fn bridge_vlans(&mut self, index: u32) -> Result<Vec<(u16, bool, bool)>> {
        self.fault("bridge_vlans")?;
        Ok(self.vlans.get(&index).cloned().unwrap_or_default())
    }

    fn addrs(&mut self, index: Option<u32>) -> Result<Vec<AddrInfo>> {
        self.fault("addrs")?;
        Ok(self
            .addrs
            .iter()
            .filter(|a| index.is_none_or(|i| a.index == i))
            .cloned()
            .collect())
    }

    fn addr_add(&mut self, index: u32, addr: ipnet::IpNet) -> Result<()> {
        const OP: &str = "addr_add";
        self.record(OP, Request::AddrAdd(index, addr))?;
        self.link(OP, index)?;
        let ip = addr.addr();
        let dup = self.addrs.iter().any(|a| {
            a.index == index
                && a.addr.addr() == ip
                && (is_v6(&ip) || a.addr.prefix_len() == addr.prefix_len())
        });
        if dup {
            return Err(err(OP, Errno::EEXIST));
        }
        let link_local = match ip {
            IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
            IpAddr::V4(a) => a.is_link_local(),
        };
        self.addrs.push(AddrInfo {
            index,
            addr,
            tentative: false,
            dadfailed: false,
            scope: if link_local {
                SCOPE_LINK
            } else {
                SCOPE_UNIVERSE
            },
        });
        self.add_connected_routes(index);
        Ok(())
    }

    fn addr_del(&mut self, index: u32, addr: ipnet::IpNet) -> Result<()> {
        const OP: &str = "addr_del";
        self.record(OP, Request::AddrDel(index, addr))?;
        self.link(OP, index)?;
        let pos = self
            .addrs
            .iter()
            .position(|a| a.index == index && a.addr == addr);
        let Some(pos) = pos else {
            return Err(err(OP, Errno::EADDRNOTAVAIL));
        };
        let removed = self.addrs.remove(pos);
        if let Some(cr) = Self::connected_route(&removed) {
            let still = self.addrs.iter().any(|a| {
                a.index == index && Self::connected_route(a).is_some_and(|r| r.dst == cr.dst)
            });
            if !still {
                self.routes.retain(|r| {
                    !(r.dst == cr.dst && r.oif == Some(index) && r.protocol == PROTO_KERNEL)
                });
            }
        }
        Ok(())
    }

    fn routes(&mut self, v6: bool, table: Option<u32>) -> Result<Vec<RouteInfo>> {
        self.fault("routes")?;
        let table = table.unwrap_or(TABLE_MAIN);
        Ok(self
            .routes
            .iter()
            .filter(|r| is_v6(&r.dst.addr()) == v6 && r.table == table)
            .cloned()
            .collect())
    }

    fn route_add(&mut self, r: &RouteSpec) -> Result<()> {
        const OP: &str = "route_add";
        self.record(OP, Request::RouteAdd(r.clone()))?;
        let new = self.build_route(OP, r)?;
        if self.routes.iter().any(|x| Self::same_route_key(x, &new)) {
            return Err(err(OP, Errno::EEXIST));
        }
        self.routes.push(new);
        Ok(())
    }

    fn route_replace(&mut self, r: &RouteSpec) -> Result<()> {
        const OP: &str = "route_replace";
        self.record(OP, Request::RouteReplace(r.clone()))?;
        let new = self.build_route(OP, r)?;
        match self
            .routes
            .iter_mut()
            .find(|x| Self::same_route_key(x, &new))
        {
            Some(x) => *x = new,
            None => self.routes.push(new),
        }
        Ok(())
    }

    fn route_del(&mut self, r: &RouteSpec) -> Result<()> {
        const OP: &str = "route_del";
        self.record(OP, Request::RouteDel(r.clone()))?;
        let dst = r.dst.trunc();
        let table = r.effective_table();
        let pos = self.routes.iter().position(|x| {
            x.dst == dst
                && x.table == table
                && r.gw.is_none_or(|g| x.gw == Some(g))
                && r.oif.is_none_or(|o| x.oif == Some(o))
                && r.scope.is_none_or(|s| x.scope == s)
                && r.priority.is_none_or(|p| x.priority.unwrap_or(0) == p)
        });
        match pos {
            Some(p) => {
                self.routes.remove(p);
                Ok(())
            }
            None => Err(err(OP, Errno::ESRCH)),
        }
    }

    fn neigh_add(&mut self, n: &NeighSpec) -> Result<()> {
        const OP: &str = "neigh_add";
        self.record(OP, Request::NeighAdd(n.clone()))?;
        self.link(OP, n.index)?;
        self.neighs
            .retain(|x| !(x.index == n.index && x.ip == n.ip));
        self.neighs.push(n.clone());
        Ok(())
    }

    fn neigh_del(&mut self, n: &NeighSpec) -> Result<()> {
        const OP: &str = "neigh_del";
        self.record(OP, Request::NeighDel(n.clone()))?;
        self.link(OP, n.index)?;
        let before = self.neighs.len();
        self.neighs
            .retain(|x| !(x.index == n.index && x.ip == n.ip));
        if self.neighs.len() == before {
            return Err(err(OP, Errno::ENOENT));
        }
        Ok(())
    }

    fn neighs(&mut self, index: Option<u32>) -> Result<Vec<NeighSpec>> {
        self.fault("neighs")?;
        Ok(self
            .neighs
            .iter()
            .filter(|n| index.is_none_or(|i| n.index == i))
            .cloned()
            .collect())
    }

    fn fdb_add(&mut self, f: &FdbSpec) -> Result<()> {
        const OP: &str = "fdb_add";
        self.record(OP, Request::FdbAdd(f.clone()))?;
        self.link(OP, f.index)?;
        if f.mac == [0; 6] {
            if !self
                .fdbs
                .iter()
                .any(|x| x.index == f.index && x.mac == f.mac && x.dst == f.dst)
            {
                self.fdbs.push(f.clone());
            }
        } else {
            self.fdbs
                .retain(|x| !(x.index == f.index && x.mac == f.mac));
            self.fdbs.push(f.clone());
        }
        Ok(())
    }

    fn fdb_del(&mut self, f: &FdbSpec) -> Result<()> {
        const OP: &str = "fdb_del";
        self.record(OP, Request::FdbDel(f.clone()))?;
        self.link(OP, f.index)?;
        // Like the vxlan driver: no entry for the MAC is ENOENT; a remote that the
        // MAC's entry does not have is silently ignored; no dst removes all remotes.
        if !self
            .fdbs
            .iter()
            .any(|x| x.index == f.index && x.mac == f.mac)
        {
            return Err(err(OP, Errno::ENOENT));
        }
        self.fdbs.retain(|x| {
            !(x.index == f.index && x.mac == f.mac && (f.dst.is_none() || x.dst == f.dst))
        });
        Ok(())
    }

    fn fdbs(&mut self, index: u32) -> Result<Vec<FdbSpec>> {
        self.fault("fdbs")?;
        Ok(self
            .fdbs
            .iter()
            .filter(|f| f.index == index)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    fn veth(name: &str, peer: &str) -> LinkRequest {
        LinkRequest {
            name: name.into(),
            kind: LinkKind::Veth {
                peer_name: peer.into(),
                peer_netns: None,
                peer_mac: None,
                peer_mtu: None,
            },
            mtu: None,
            mac: None,
            netns: None,
            up: false,
        }
    }

    #[test]
    fn fresh_has_lo_only() {
        let mut f = FakeNetlink::new();
        let l = f.links().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "lo");
        assert!(f.requests().is_empty());
    }

    #[test]
    fn veth_both_ends_and_records() {
        let mut f = FakeNetlink::new();
        let req = LinkRequest {
            mtu: Some(1400),
            up: true,
            ..veth("a", "b")
        };
        f.link_add(&req).unwrap();
        let a = f.link_by_name("a").unwrap().unwrap();
        let b = f.link_by_name("b").unwrap().unwrap();
        assert_eq!(a.link, Some(b.index));
        assert_eq!(b.link, Some(a.index));
        assert_eq!((a.mtu, b.mtu), (1400, 1400));
        assert!(a.up && !b.up);
        assert!(a.mac.is_some() && a.mac != b.mac);
        assert!(f.link_add(&veth("a", "c")).unwrap_err().is_exists());
        assert!(f.link_add(&veth("c", "b")).unwrap_err().is_exists());
        assert!(f.link_add(&veth("c", "c")).unwrap_err().is_exists());
        assert!(f.link_add(&veth("waytoolongname123", "c")).is_err());
        f.link_del(b.index).unwrap();
        assert!(f.link_by_name("a").unwrap().is_none());
        assert!(f.link_del(b.index).unwrap_err().is_not_found());
        assert_eq!(f.requests().len(), 7);
        assert_eq!(f.requests()[0], Request::LinkAdd(req));
        assert_eq!(f.requests()[5], Request::LinkDel(b.index));
    }

    #[test]
    fn veth_peer_elsewhere_and_netns_moves() {
        let ns = Netns::current().unwrap();
        let mut f = FakeNetlink::new();
        f.link_add(&LinkRequest {
            name: "eth0".into(),
            kind: LinkKind::Veth {
                peer_name: "vethx".into(),
                peer_netns: None,
                peer_mac: None,
                peer_mtu: None,
            },
            mtu: None,
            mac: None,
            netns: Some(ns.clone()),
            up: false,
        })
        .unwrap();
        assert!(f.link_by_name("eth0").unwrap().is_none());
        let host = f.link_by_name("vethx").unwrap().unwrap();
        assert_eq!(host.link_netnsid, Some(0));

        f.link_add(&veth("c0", "c1")).unwrap();
        let c0 = f.link_by_name("c0").unwrap().unwrap();
        f.link_set_up(c0.index, true).unwrap();
        f.addr_add(c0.index, net("10.0.0.1/24")).unwrap();
        f.link_set_netns(c0.index, &ns).unwrap();
        assert!(f.link_by_name("c0").unwrap().is_none());
        assert!(f.addrs(None).unwrap().is_empty());
        assert!(f.routes(false, None).unwrap().is_empty());
        assert_eq!(f.link_by_name("c1").unwrap().unwrap().link_netnsid, Some(0));
        assert_eq!(f.requests().last(), Some(&Request::SetNetns(c0.index, ns)));
    }

    #[test]
    fn setters_and_master() {
        let mut f = FakeNetlink::new();
        f.link_add(&LinkRequest {
            name: "br0".into(),
            kind: LinkKind::Bridge {
                vlan_filtering: true,
            },
            mtu: None,
            mac: None,
            netns: None,
            up: true,
        })
        .unwrap();
        f.link_add(&veth("p0", "p1")).unwrap();
        let br = f.link_by_name("br0").unwrap().unwrap().index;
        let p0 = f.link_by_name("p0").unwrap().unwrap().index;
        let p1 = f.link_by_name("p1").unwrap().unwrap().index;
        f.link_set_mtu(p0, 9000).unwrap();
        assert!(f.link_set_mtu(p0, 10).is_err());
        f.link_set_mac(p0, [2, 0, 0, 0, 0, 9]).unwrap();
        assert!(f.link_set_mac(p0, [1, 0, 0, 0, 0, 9]).is_err());
        f.link_set_promisc(p0, true).unwrap();
        f.link_set_up(p0, true).unwrap();
        f.link_set_up(p0, false).unwrap();
        assert!(f.link_set_name(p0, "p1").unwrap_err().is_exists());
        f.link_set_name(p0, "port0").unwrap();
        let l = f.link_by_index(p0).unwrap().unwrap();
        assert_eq!(
            (l.name.as_str(), l.mtu, l.mac, l.promisc),
            ("port0", 9000, Some([2, 0, 0, 0, 0, 9]), true)
        );

        assert!(f.bridge_port_set_hairpin(p0, true).is_err());
        assert!(f.link_set_master(p0, Some(p1)).is_err(), "not a bridge");
        assert!(f.link_set_master(p0, Some(999)).unwrap_err().is_not_found());
        f.link_set_master(p0, Some(br)).unwrap();
        assert_eq!(f.link_by_index(p0).unwrap().unwrap().master, Some(br));
        assert_eq!(f.bridge_vlans(p0).unwrap(), vec![(1, true, true)]);
        f.bridge_port_set_hairpin(p0, true).unwrap();
        assert!(f.bridge_port_hairpin(p0).unwrap());
        assert!(f.bridge_port_hairpin(p1).unwrap_err().is_not_found());
        f.bridge_vlan_add(p0, 10, true, true).unwrap();
        f.bridge_vlan_add(p0, 20, false, false).unwrap();
        assert_eq!(
            f.bridge_vlans(p0).unwrap(),
            vec![(1, false, true), (10, true, true), (20, false, false)]
        );
        assert!(f.bridge_vlan_add(p1, 10, false, false).is_err());
        assert!(f.bridge_vlan_add(p0, 4095, false, false).is_err());
        f.link_del(br).unwrap();
        assert_eq!(f.link_by_index(p0).unwrap().unwrap().master, None);
    }

    #[test]
    fn macvlan_ipvlan_vxlan_parents() {
        let mut f = FakeNetlink::new();
        f.add_existing_link(LinkInfo {
            index: 7,
            name: "eth0".into(),
            mtu: 9000,
            up: true,
            ..Default::default()
        });
        let mk = |name: &str, kind| LinkRequest {
            name: name.into(),
            kind,
            mtu: None,
            mac: None,
            netns: None,
            up: false,
        };
        f.link_add(&mk(
            "mv",
            LinkKind::Macvlan {
                master: 7,
                mode: MacvlanMode::Bridge,
            },
        ))
        .unwrap();
        f.link_add(&mk(
            "iv",
            LinkKind::Ipvlan {
                master: 7,
                mode: IpvlanMode::L3,
                flags: IpvlanFlags::Private,
            },
        ))
        .unwrap();
        f.link_add(&mk(
            "vx",
            LinkKind::Vxlan {
                vni: 5,
                port: 4789,
                local: None,
                learning: true,
                dev: Some(7),
            },
        ))
        .unwrap();
        assert!(
            f.link_add(&mk(
                "bad",
                LinkKind::Macvlan {
                    master: 99,
                    mode: MacvlanMode::Bridge
                }
            ))
            .unwrap_err()
            .is_not_found()
        );
        let mv = f.link_by_name("mv").unwrap().unwrap();
        assert_eq!(
            (mv.link, mv.macvlan_mode, mv.mtu),
            (Some(7), Some(MacvlanMode::Bridge), 9000)
        );
        assert_eq!(
            f.link_by_name("iv").unwrap().unwrap().ipvlan_mode,
            Some(IpvlanMode::L3)
        );
        let vx = f.link_by_name("vx").unwrap().unwrap();
        assert_eq!(
            vx.vxlan.as_ref().map(|v| (v.vni, v.dev)),
            Some((5, Some(7)))
        );
        assert!(index_above(&vx, 7));
        let fd = FdbSpec {
            index: vx.index,
            mac: [0; 6],
            dst: Some("10.0.0.2".parse().unwrap()),
            vni: None,
            permanent: true,
            self_: true,
        };
        f.fdb_add(&fd).unwrap();
        f.fdb_add(&fd).unwrap();
        f.fdb_add(&FdbSpec {
            dst: Some("10.0.0.3".parse().unwrap()),
            ..fd.clone()
        })
        .unwrap();
        let m1 = FdbSpec {
            mac: [2, 0, 0, 0, 0, 1],
            ..fd.clone()
        };
        f.fdb_add(&m1).unwrap();
        f.fdb_add(&FdbSpec {
            dst: Some("10.0.0.9".parse().unwrap()),
            ..m1.clone()
        })
        .unwrap();
        assert_eq!(f.fdbs(vx.index).unwrap().len(), 3);
        f.fdb_del(&fd).unwrap();
        f.fdb_del(&fd).unwrap();
        assert_eq!(f.fdbs(vx.index).unwrap().len(), 2);
        f.fdb_del(&FdbSpec {
            dst: None,
            ..fd.clone()
        })
        .unwrap();
        assert!(f.fdb_del(&fd).unwrap_err().is_not_found());
        assert_eq!(f.fdbs(vx.index).unwrap().len(), 1);
        f.link_del(7).unwrap();
        assert_eq!(
            f.links().unwrap().len(),
            1,
            "children deleted with the parent"
        );
    }

    fn index_above(l: &LinkInfo, i: u32) -> bool {
        l.index > i
    }

    #[test]
    fn addrs_and_connected_routes() {
        let mut f = FakeNetlink::new();
        f.link_add(&veth("a", "b")).unwrap();
        let a = f.link_by_name("a").unwrap().unwrap().index;
        f.addr_add(a, net("10.1.0.1/24")).unwrap();
        f.addr_add(a, net("10.1.0.1/16")).unwrap();
        assert!(f.addr_add(a, net("10.1.0.1/24")).unwrap_err().is_exists());
        f.addr_add(a, net("fd00::1/64")).unwrap();
        assert!(f.addr_add(a, net("fd00::1/80")).unwrap_err().is_exists());
        f.addr_add(a, net("fe80::1/64")).unwrap();
        assert!(
            f.addr_add(99, net("10.0.0.1/8"))
                .unwrap_err()
                .is_not_found()
        );
        assert!(f.routes(false, None).unwrap().is_empty(), "link is down");
        f.link_set_up(a, true).unwrap();
        let r4 = f.routes(false, None).unwrap();
        assert_eq!(r4.len(), 2);
        assert!(
            r4.iter()
                .all(|r| r.protocol == PROTO_KERNEL && r.scope == SCOPE_LINK && r.oif == Some(a))
        );
        let r6 = f.routes(true, None).unwrap();
        assert!(
            r6.iter()
                .any(|r| r.dst == net("fd00::/64") && r.priority == Some(256))
        );
        let addrs = f.addrs(Some(a)).unwrap();
        assert_eq!(addrs.len(), 4);
        assert_eq!(
            addrs
                .iter()
                .find(|x| x.addr == net("fe80::1/64"))
                .unwrap()
                .scope,
            SCOPE_LINK
        );
        f.addr_del(a, net("10.1.0.1/24")).unwrap();
        assert!(
            f.addr_del(a, net("10.1.0.1/24"))
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(f.routes(false, None).unwrap().len(), 1);
        f.link_set_up(a, false).unwrap();
        assert!(f.routes(false, None).unwrap().is_empty());
    }

    #[test]
    fn routes_like_the_kernel() {
        let mut f = FakeNetlink::new();
        f.link_add(&veth("a", "b")).unwrap();
        let a = f.link_by_name("a").unwrap().unwrap().index;
        let far = RouteSpec {
            gw: Some("192.168.1.1".parse().unwrap()),
            oif: Some(a),
            ..RouteSpec::new(net("0.0.0.0/0"))
        };
        assert_eq!(
            f.route_add(&RouteSpec {
                onlink: true,
                ..far.clone()
            })
            .unwrap_err()
            .errno(),
            Some(Errno::ENETDOWN as i32)
        );
        f.link_set_up(a, true).unwrap();
        f.addr_add(a, net("10.0.0.2/24")).unwrap();
        assert_eq!(
            f.route_add(&far).unwrap_err().errno(),
            Some(Errno::ENETUNREACH as i32)
        );
        f.route_add(&RouteSpec {
            onlink: true,
            ..far.clone()
        })
        .unwrap();
        let via = RouteSpec {
            gw: Some("10.0.0.1".parse().unwrap()),
            mtu: Some(1400),
            ..RouteSpec::new(net("10.9.0.0/16"))
        };
        f.route_add(&via).unwrap();
        assert!(f.route_add(&via).unwrap_err().is_exists());
        let got = f.routes(false, None).unwrap();
        let r = got.iter().find(|r| r.dst == net("10.9.0.0/16")).unwrap();
        assert_eq!(
            (r.oif, r.scope, r.protocol, r.mtu),
            (Some(a), SCOPE_UNIVERSE, PROTO_BOOT, Some(1400))
        );
        f.route_replace(&RouteSpec {
            mtu: Some(1300),
            ..via.clone()
        })
        .unwrap();
        let got = f.routes(false, None).unwrap();
        assert_eq!(
            got.iter().filter(|r| r.dst == net("10.9.0.0/16")).count(),
            1
        );
        assert!(
            got.iter()
                .any(|r| r.dst == net("10.9.0.0/16") && r.mtu == Some(1300))
        );
        f.route_add(&RouteSpec {
            priority: Some(5),
            ..via.clone()
        })
        .unwrap();
        f.route_add(&RouteSpec {
            table: Some(100),
            oif: Some(a),
            ..RouteSpec::new(net("10.8.0.0/16"))
        })
        .unwrap();
        assert_eq!(f.routes(false, Some(100)).unwrap().len(), 1);
        assert!(
            f.route_add(&RouteSpec::new(net("10.7.0.0/16"))).is_err(),
            "no gw, no dev"
        );
        assert!(
            f.route_add(&RouteSpec {
                gw: Some("fd00::1".parse().unwrap()),
                ..RouteSpec::new(net("10.7.0.0/16"))
            })
            .is_err()
        );
        // v6 routes do not need an up link; link-local gateways need a device
        f.route_add(&RouteSpec {
            gw: Some("fe80::1".parse().unwrap()),
            oif: Some(a),
            ..RouteSpec::new(net("::/0"))
        })
        .unwrap();
        assert_eq!(f.routes(true, None).unwrap()[0].priority, Some(1024));
        f.route_del(&RouteSpec::new(net("10.9.0.0/16"))).unwrap();
        f.route_del(&RouteSpec::new(net("10.9.0.0/16"))).unwrap();
        assert!(
            f.route_del(&RouteSpec::new(net("10.9.0.0/16")))
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn neighbours() {
        let mut f = FakeNetlink::new();
        f.link_add(&veth("a", "b")).unwrap();
        let a = f.link_by_name("a").unwrap().unwrap().index;
        let n = NeighSpec {
            index: a,
            ip: "10.0.0.5".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 5],
            permanent: true,
        };
        f.neigh_add(&n).unwrap();
        f.neigh_add(&NeighSpec {
            mac: [2, 0, 0, 0, 0, 6],
            ..n.clone()
        })
        .unwrap();
        assert_eq!(
            f.neighs(Some(a)).unwrap(),
            vec![NeighSpec {
                mac: [2, 0, 0, 0, 0, 6],
                ..n.clone()
            }]
        );
        f.neigh_del(&n).unwrap();
        assert!(f.neigh_del(&n).unwrap_err().is_not_found());
        assert!(
            f.neigh_add(&NeighSpec { index: 99, ..n })
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn fault_injection() {
        let mut f = FakeNetlink::new();
        f.fail_next("link_add", Error::netlink("link_add", Errno::ENOSPC as i32));
        f.fail_next("links", Error::Timeout("x".into()));
        let e = f.link_add(&veth("a", "b")).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOSPC as i32));
        assert!(
            f.link_by_name("a").unwrap().is_none(),
            "failed call had no effect"
        );
        assert_eq!(f.requests().len(), 1, "failed calls are recorded too");
        assert!(matches!(f.links(), Err(Error::Timeout(_))));
        f.link_add(&veth("a", "b")).unwrap();
        assert_eq!(f.links().unwrap().len(), 3);
        f.clear_requests();
        assert!(f.requests().is_empty());
    }

    #[test]
    fn dad_flags_for_helpers() {
        let mut f = FakeNetlink::new();
        f.link_add(&veth("a", "b")).unwrap();
        let a = f.link_by_name("a").unwrap().unwrap().index;
        f.addr_add(a, net("fd00::1/64")).unwrap();
        assert!(f.set_addr_flags(a, net("fd00::1/64"), true, false));
        assert!(!f.set_addr_flags(a, net("fd00::2/64"), true, false));
        let e = crate::wait_addrs_not_tentative(&mut f, a, std::time::Duration::from_millis(60))
            .unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        f.set_addr_flags(a, net("fd00::1/64"), false, true);
        let e = crate::wait_addrs_not_tentative(&mut f, a, std::time::Duration::from_secs(1))
            .unwrap_err();
        assert!(
            e.to_string().contains("duplicate address detection failed"),
            "{e}"
        );
        f.set_addr_flags(a, net("fd00::1/64"), false, false);
        crate::wait_addrs_not_tentative(&mut f, a, std::time::Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn link_group_deletion() {
        let mut f = FakeNetlink::new();
        f.link_add(&veth("a", "b")).unwrap();
        f.link_add(&veth("c", "d")).unwrap();
        let a = f.link_by_name("a").unwrap().unwrap().index;
        f.link_set_group(a, 9).unwrap();
        f.link_del_group(9).unwrap();
        let names: Vec<String> = f.links().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["lo", "c", "d"]);
        assert_eq!(f.link_del_group(9).unwrap_err().errno(), Some(19));
    }

    #[test]
    fn link_del_by_name_through_handle() {
        let mut f = FakeNetlink::new();
        f.link_add(&veth("a", "b")).unwrap();
        let a = f.link_by_name("a").unwrap().unwrap().index;
        f.addr_add(a, net("10.0.0.1/24")).unwrap();
        f.addr_add(a, net("fe80::1/64")).unwrap();
        let got = crate::helpers::link_del_by_name(&mut f, "a").unwrap();
        assert_eq!(got, vec![net("10.0.0.1/24")]);
        assert!(
            crate::helpers::link_del_by_name(&mut f, "a")
                .unwrap_err()
                .is_not_found()
        );
    }
}
