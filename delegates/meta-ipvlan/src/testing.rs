//! Fakes for root-free tests of the delegate: a node and a pod namespace as two
//! [`FakeNetlink`]s that see each other (a link created from the node with `netns` = the
//! pod appears in the pod), pod sysctls in a map, and an IPAM that records its calls.
//! Nothing here touches a real namespace, sysctl or IPAM store; the only real object is
//! a read-only handle on the test thread's own namespace, used as the pod's identity.

use crate::backend::{Backend, IpamOps, PodSysctl};
use cni_core::{CmdArgs, CniResult, Error, Result, code};
use meta_netlink::{
    AddrInfo, FakeNetlink, FdbSpec, LinkInfo, LinkKind, LinkRequest, Mac, NeighSpec, NetlinkOps,
    Netns, RouteInfo, RouteSpec,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// Path the fake pod namespace answers to.
pub const FAKE_POD_PATH: &str = "/var/run/netns/fake-pod";

/// The state shared by every handle of a [`FakeBackend`].
#[derive(Debug)]
pub struct FakeWorld {
    /// The node namespace.
    pub node: FakeNetlink,
    /// The pod namespace.
    pub pod: FakeNetlink,
    /// The pod's identity in link requests (`LinkRequest::netns`).
    pub pod_ns: Netns,
    /// The path `CNI_NETNS` must name to reach the pod.
    pub pod_path: String,
    /// False once the pod namespace is "gone" (DEL must cope).
    pub pod_present: bool,
    /// Pod sysctls (slash keys, e.g. `net/ipv6/conf/lo/disable_ipv6`); reading a missing
    /// key fails like a missing `/proc/sys` file.
    pub sysctls: BTreeMap<String, String>,
    /// Every sysctl write, in order.
    pub sysctl_writes: Vec<(String, String)>,
}

impl FakeWorld {
    /// A node with `lo`, `eth0` (index 2, up, 192.168.1.10/24, the default route via
    /// 192.168.1.1) and `eth1` (index 3, up, MTU 9000, no routes); a pod with `lo` only;
    /// the pod's `lo` has IPv6 disabled.
    pub fn new() -> meta_netlink::Result<FakeWorld> {
        let mut node = FakeNetlink::new();
        node.add_existing_link(LinkInfo {
            index: 2,
            name: "eth0".into(),
            mac: Some([0x02, 0, 0, 0, 0, 0x02]),
            mtu: 1500,
            up: true,
            ..Default::default()
        });
        node.add_existing_link(LinkInfo {
            index: 3,
            name: "eth1".into(),
            mac: Some([0x02, 0, 0, 0, 0, 0x03]),
            mtu: 9000,
            up: true,
            ..Default::default()
        });
        node.add_existing_addr(AddrInfo {
            index: 2,
            addr: "192.168.1.10/24"
                .parse()
                .map_err(|_| meta_netlink::Error::Invalid("literal".into()))?,
            tentative: false,
            dadfailed: false,
            scope: meta_netlink::SCOPE_UNIVERSE,
        });
        node.add_existing_route(default_route(2, "192.168.1.1")?);
        let mut sysctls = BTreeMap::new();
        sysctls.insert("net/ipv6/conf/lo/disable_ipv6".into(), "1".into());
        Ok(FakeWorld {
            node,
            pod: FakeNetlink::new(),
            pod_ns: Netns::current()?,
            pod_path: FAKE_POD_PATH.into(),
            pod_present: true,
            sysctls,
            sysctl_writes: Vec::new(),
        })
    }
}

/// An IPv4 default route via `gw` on link `oif`, as the kernel reports it.
pub fn default_route(oif: u32, gw: &str) -> meta_netlink::Result<RouteInfo> {
    let bad = |_| meta_netlink::Error::Invalid(format!("bad gateway {gw:?}"));
    Ok(RouteInfo {
        dst: "0.0.0.0/0"
            .parse()
            .map_err(|_| meta_netlink::Error::Invalid("literal".into()))?,
        gw: Some(gw.parse().map_err(bad)?),
        oif: Some(oif),
        table: meta_netlink::TABLE_MAIN,
        scope: meta_netlink::SCOPE_UNIVERSE,
        protocol: meta_netlink::PROTO_BOOT,
        priority: None,
        mtu: None,
        advmss: None,
        onlink: false,
        src: None,
    })
}

/// A netlink handle on one side of a [`FakeWorld`].
///
/// Every call goes to that side's [`FakeNetlink`] (so its request log and fault
/// injection apply). `link_add` on the node side with `netns` = the pod also puts the new
/// link into the pod, the way the kernel would: an ipvlan/macvlan with its master's MAC
/// and (unless set) MTU, its parent index and a link-netnsid; a veth end pointing to its
/// peer. To build that link it reads the node side through `link_by_index`/`links`, which
/// consume faults injected for those operations.
#[derive(Debug, Clone)]
pub struct FakeHandle {
    world: Rc<RefCell<FakeWorld>>,
    pod_side: bool,
}

impl FakeHandle {
    /// A handle on the node (`pod_side` false) or the pod.
    pub fn new(world: Rc<RefCell<FakeWorld>>, pod_side: bool) -> FakeHandle {
        FakeHandle { world, pod_side }
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeNetlink) -> R) -> R {
        let mut w = self.world.borrow_mut();
        if self.pod_side {
            f(&mut w.pod)
        } else {
            f(&mut w.node)
        }
    }
}

fn materialize(
    src: &mut FakeNetlink,
    dst: &mut FakeNetlink,
    req: &LinkRequest,
) -> meta_netlink::Result<()> {
    if dst.link_by_name(&req.name)?.is_some() {
        return Err(meta_netlink::Error::netlink(
            format!("link_add {}", req.name),
            17,
        ));
    }
    let index = dst
        .links()?
        .iter()
        .map(|l| l.index)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let mut info = LinkInfo {
        index,
        name: req.name.clone(),
        kind: Some(req.kind.kind_str().to_string()),
        mac: req.mac,
        mtu: req.mtu.unwrap_or(1500),
        up: req.up,
        link_netnsid: Some(0),
        ..Default::default()
    };
    match &req.kind {
        LinkKind::Ipvlan { master, mode, .. } => {
            let m = src.link_by_index(*master)?;
            info.link = Some(*master);
            info.ipvlan_mode = Some(*mode);
            info.mac = m.as_ref().and_then(|m| m.mac);
            if req.mtu.is_none() {
                info.mtu = m.map(|m| m.mtu).unwrap_or(1500);
            }
        }
        LinkKind::Macvlan { master, mode } => {
            let m = src.link_by_index(*master)?;
            info.link = Some(*master);
            info.macvlan_mode = Some(*mode);
            if req.mtu.is_none() {
                info.mtu = m.map(|m| m.mtu).unwrap_or(1500);
            }
        }
        LinkKind::Veth { peer_name, .. } => {
            info.link = src.link_by_name(peer_name)?.map(|p| p.index);
        }
        LinkKind::Bridge { .. } | LinkKind::Vxlan { .. } => info.link_netnsid = None,
    }
    let b = index.to_be_bytes();
    info.mac = info.mac.or(Some([0x02, 0xfb, b[0], b[1], b[2], b[3]]));
    dst.add_existing_link(info);
    Ok(())
}

impl NetlinkOps for FakeHandle {
    fn links(&mut self) -> meta_netlink::Result<Vec<LinkInfo>> {
        self.with(|f| f.links())
    }
    fn link_by_name(&mut self, name: &str) -> meta_netlink::Result<Option<LinkInfo>> {
        self.with(|f| f.link_by_name(name))
    }
    fn link_by_index(&mut self, index: u32) -> meta_netlink::Result<Option<LinkInfo>> {
        self.with(|f| f.link_by_index(index))
    }
    fn link_add(&mut self, req: &LinkRequest) -> meta_netlink::Result<()> {
        let mut w = self.world.borrow_mut();
        let w = &mut *w;
        if self.pod_side {
            return w.pod.link_add(req);
        }
        w.node.link_add(req)?;
        if req.netns.as_ref() == Some(&w.pod_ns) {
            materialize(&mut w.node, &mut w.pod, req)?;
        }
        Ok(())
    }
    fn link_del(&mut self, index: u32) -> meta_netlink::Result<()> {
        self.with(|f| f.link_del(index))
    }
    fn link_set_up(&mut self, index: u32, up: bool) -> meta_netlink::Result<()> {
        self.with(|f| f.link_set_up(index, up))
    }
    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> meta_netlink::Result<()> {
        self.with(|f| f.link_set_mtu(index, mtu))
    }
    fn link_set_mac(&mut self, index: u32, mac: Mac) -> meta_netlink::Result<()> {
        self.with(|f| f.link_set_mac(index, mac))
    }
    fn link_set_name(&mut self, index: u32, name: &str) -> meta_netlink::Result<()> {
        self.with(|f| f.link_set_name(index, name))
    }
    fn link_set_master(&mut self, index: u32, master: Option<u32>) -> meta_netlink::Result<()> {
        self.with(|f| f.link_set_master(index, master))
    }
    fn link_set_promisc(&mut self, index: u32, on: bool) -> meta_netlink::Result<()> {
        self.with(|f| f.link_set_promisc(index, on))
    }
    fn link_set_netns(&mut self, index: u32, ns: &Netns) -> meta_netlink::Result<()> {
        self.with(|f| f.link_set_netns(index, ns))
    }
    fn bridge_port_set_hairpin(&mut self, index: u32, on: bool) -> meta_netlink::Result<()> {
        self.with(|f| f.bridge_port_set_hairpin(index, on))
    }
    fn bridge_port_hairpin(&mut self, index: u32) -> meta_netlink::Result<bool> {
        self.with(|f| f.bridge_port_hairpin(index))
    }
    fn bridge_vlan_add(
        &mut self,
        index: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
    ) -> meta_netlink::Result<()> {
        self.with(|f| f.bridge_vlan_add(index, vid, pvid, untagged))
    }
    fn bridge_vlans(&mut self, index: u32) -> meta_netlink::Result<Vec<(u16, bool, bool)>> {
        self.with(|f| f.bridge_vlans(index))
    }
    fn addrs(&mut self, index: Option<u32>) -> meta_netlink::Result<Vec<AddrInfo>> {
        self.with(|f| f.addrs(index))
    }
    fn addr_add(&mut self, index: u32, addr: ipnet::IpNet) -> meta_netlink::Result<()> {
        self.with(|f| f.addr_add(index, addr))
    }
    fn addr_del(&mut self, index: u32, addr: ipnet::IpNet) -> meta_netlink::Result<()> {
        self.with(|f| f.addr_del(index, addr))
    }
    fn routes(&mut self, v6: bool, table: Option<u32>) -> meta_netlink::Result<Vec<RouteInfo>> {
        self.with(|f| f.routes(v6, table))
    }
    fn route_add(&mut self, r: &RouteSpec) -> meta_netlink::Result<()> {
        self.with(|f| f.route_add(r))
    }
    fn route_replace(&mut self, r: &RouteSpec) -> meta_netlink::Result<()> {
        self.with(|f| f.route_replace(r))
    }
    fn route_del(&mut self, r: &RouteSpec) -> meta_netlink::Result<()> {
        self.with(|f| f.route_del(r))
    }
    fn neigh_add(&mut self, n: &NeighSpec) -> meta_netlink::Result<()> {
        self.with(|f| f.neigh_add(n))
    }
    fn neigh_del(&mut self, n: &NeighSpec) -> meta_netlink::Result<()> {
        self.with(|f| f.neigh_del(n))
    }
    fn neighs(&mut self, index: Option<u32>) -> meta_netlink::Result<Vec<NeighSpec>> {
        self.with(|f| f.neighs(index))
    }
    fn fdb_add(&mut self, fdb: &FdbSpec) -> meta_netlink::Result<()> {
        self.with(|f| f.fdb_add(fdb))
    }
    fn fdb_del(&mut self, fdb: &FdbSpec) -> meta_netlink::Result<()> {
        self.with(|f| f.fdb_del(fdb))
    }
    fn fdbs(&mut self, index: u32) -> meta_netlink::Result<Vec<FdbSpec>> {
        self.with(|f| f.fdbs(index))
    }
}

/// The pod sysctls of a [`FakeWorld`].
#[derive(Debug, Clone)]
pub struct FakeSysctl(pub Rc<RefCell<FakeWorld>>);

impl PodSysctl for FakeSysctl {
    fn get(&mut self, key: &str) -> meta_netlink::Result<String> {
        self.0
            .borrow()
            .sysctls
            .get(key)
            .cloned()
            .ok_or_else(|| meta_netlink::Error::NotFound(format!("sysctl {key}")))
    }
    fn set(&mut self, key: &str, value: &str) -> meta_netlink::Result<()> {
        let mut w = self.0.borrow_mut();
        w.sysctl_writes.push((key.to_string(), value.to_string()));
        w.sysctls.insert(key.to_string(), value.to_string());
        Ok(())
    }
}

#[derive(Debug, Default)]
struct IpamState {
    result: CniResult,
    reserved: BTreeSet<(String, String)>,
    calls: Vec<String>,
    faults: Vec<(String, Error)>,
}

/// An IPAM that hands out one configured result, remembers reservations by
/// (container ID, ifname), records its calls (`"add"`, `"del"`, ...) and can be told to
/// fail.
#[derive(Debug, Default)]
pub struct FakeIpam {
    state: RefCell<IpamState>,
}

impl FakeIpam {
    /// Sets the result ADD returns.
    pub fn set_result(&self, r: CniResult) {
        self.state.borrow_mut().result = r;
    }
    /// Current reservations: (container ID, ifname).
    pub fn reserved(&self) -> Vec<(String, String)> {
        self.state.borrow().reserved.iter().cloned().collect()
    }
    /// The calls so far, by verb (`"validate"`, `"add"`, `"del"`, `"check"`, `"status"`,
    /// `"gc"`).
    pub fn calls(&self) -> Vec<String> {
        self.state.borrow().calls.clone()
    }
    /// Makes the next call of `verb` fail with `e`.
    pub fn fail_next(&self, verb: &str, e: Error) {
        self.state.borrow_mut().faults.push((verb.to_string(), e));
    }

    fn enter(&self, verb: &str) -> Result<()> {
        let mut s = self.state.borrow_mut();
        s.calls.push(verb.to_string());
        match s.faults.iter().position(|(v, _)| v == verb) {
            Some(i) => Err(s.faults.remove(i).1),
            None => Ok(()),
        }
    }

    fn key(args: &CmdArgs) -> (String, String) {
        (args.env.container_id.clone(), args.env.ifname.clone())
    }
}

impl IpamOps for FakeIpam {
    fn validate(&self, _args: &CmdArgs) -> Result<()> {
        self.enter("validate")
    }
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        self.enter("add")?;
        let mut s = self.state.borrow_mut();
        s.reserved.insert(Self::key(args));
        Ok(s.result.clone())
    }
    fn del(&self, args: &CmdArgs) -> Result<()> {
        self.enter("del")?;
        self.state.borrow_mut().reserved.remove(&Self::key(args));
        Ok(())
    }
    fn check(&self, args: &CmdArgs) -> Result<()> {
        self.enter("check")?;
        if self.state.borrow().reserved.contains(&Self::key(args)) {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "IPAM: no allocation for {} {}",
                args.env.container_id, args.env.ifname
            )))
        }
    }
    fn status(&self, _args: &CmdArgs) -> Result<()> {
        self.enter("status")
    }
    fn gc(&self, args: &CmdArgs) -> Result<()> {
        self.enter("gc")?;
        let valid: BTreeSet<(String, String)> = args
            .conf
            .gc_valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        self.state
            .borrow_mut()
            .reserved
            .retain(|k| valid.contains(k));
        Ok(())
    }
}

/// A [`Backend`] over a [`FakeWorld`] and a [`FakeIpam`]; temporary link names are
/// `ivtmp0`, `ivtmp1`, ...
#[derive(Debug)]
pub struct FakeBackend {
    /// The namespaces and sysctls.
    pub world: Rc<RefCell<FakeWorld>>,
    /// IPAM.
    pub ipam: FakeIpam,
    names: Cell<u32>,
}

impl FakeBackend {
    /// A backend over [`FakeWorld::new`].
    pub fn new() -> meta_netlink::Result<FakeBackend> {
        Ok(FakeBackend {
            world: Rc::new(RefCell::new(FakeWorld::new()?)),
            ipam: FakeIpam::default(),
            names: Cell::new(0),
        })
    }

    /// A handle on the node side.
    pub fn node(&self) -> FakeHandle {
        FakeHandle::new(self.world.clone(), false)
    }

    /// A handle on the pod side.
    pub fn pod(&self) -> FakeHandle {
        FakeHandle::new(self.world.clone(), true)
    }
}

impl Backend for FakeBackend {
    type Nl = FakeHandle;
    fn open_pod(&self, path: &str) -> Result<Netns> {
        let w = self.world.borrow();
        if w.pod_present && path == w.pod_path {
            Ok(w.pod_ns.clone())
        } else {
            Err(Error::new(
                code::UNKNOWN_CONTAINER,
                format!("netns {path:?} does not exist"),
            ))
        }
    }
    fn open_pod_for_del(&self, path: &str) -> Result<Option<Netns>> {
        let w = self.world.borrow();
        Ok((w.pod_present && path == w.pod_path).then(|| w.pod_ns.clone()))
    }
    fn node_nl(&self) -> Result<FakeHandle> {
        Ok(self.node())
    }
    fn pod_nl(&self, _pod: &Netns) -> Result<FakeHandle> {
        Ok(self.pod())
    }
    fn pod_sysctl(&self, _pod: &Netns) -> Box<dyn PodSysctl> {
        Box::new(FakeSysctl(self.world.clone()))
    }
    fn ipam(&self) -> &dyn IpamOps {
        &self.ipam
    }
    fn tmp_name(&self) -> String {
        let n = self.names.get();
        self.names.set(n.wrapping_add(1));
        format!("ivtmp{n}")
    }
}
