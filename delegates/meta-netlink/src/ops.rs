//! The netlink operations as a trait, so that logic can be tested without root.

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::types::{
    AddrInfo, FdbSpec, LinkInfo, LinkRequest, Mac, NeighSpec, RouteInfo, RouteSpec,
};

/// Everything the delegates do through rtnetlink, in one namespace.
///
/// Implemented by [`crate::Netlink`] (the kernel) and [`crate::FakeNetlink`]
/// (in-memory). Errors keep the kernel's errno: missing objects satisfy
/// [`Error::is_not_found`], duplicates [`Error::is_exists`].
pub trait NetlinkOps {
    /// All links.
    fn links(&mut self) -> Result<Vec<LinkInfo>>;
    /// The link named `name`, None when there is none.
    fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfo>>;
    /// The link with index `index`, None when there is none.
    fn link_by_index(&mut self, index: u32) -> Result<Option<LinkInfo>>;
    /// Creates a link (`NLM_F_CREATE|NLM_F_EXCL`: an existing name is EEXIST).
    fn link_add(&mut self, req: &LinkRequest) -> Result<()>;
    /// Deletes a link (a veth deletes its peer too).
    fn link_del(&mut self, index: u32) -> Result<()>;
    /// Puts a link into interface group `group` (`IFLA_GROUP`). Handles that cannot answer
    /// [`Error::Unsupported`], and callers fall back to deleting links one by one.
    fn link_set_group(&mut self, index: u32, group: u32) -> Result<()> {
        let _ = (index, group);
        Err(Error::Unsupported("interface groups".into()))
    }
    /// Deletes every link of interface group `group` in one request (`RTM_DELLINK` with
    /// only `IFLA_GROUP`): the kernel unregisters them together, paying one RCU grace
    /// period for all instead of one per device. Not found when no link is in the group.
    fn link_del_group(&mut self, group: u32) -> Result<()> {
        let _ = group;
        Err(Error::Unsupported("interface groups".into()))
    }
    /// Sets `IFF_UP`.
    fn link_set_up(&mut self, index: u32, up: bool) -> Result<()>;
    /// Sets the MTU.
    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()>;
    /// Sets the MAC address.
    fn link_set_mac(&mut self, index: u32, mac: Mac) -> Result<()>;
    /// Renames a link (older kernels require it to be down: EBUSY).
    fn link_set_name(&mut self, index: u32, name: &str) -> Result<()>;
    /// Enslaves to `master`, or releases with None.
    fn link_set_master(&mut self, index: u32, master: Option<u32>) -> Result<()>;
    /// Sets `IFF_PROMISC`.
    fn link_set_promisc(&mut self, index: u32, on: bool) -> Result<()>;
    /// Moves a link to another namespace.
    fn link_set_netns(&mut self, index: u32, ns: &Netns) -> Result<()>;
    /// Sets hairpin mode of a bridge port (`IFLA_BRPORT_MODE` in `IFLA_PROTINFO`).
    fn bridge_port_set_hairpin(&mut self, index: u32, on: bool) -> Result<()>;
    /// Reads hairpin mode of a bridge port. Not-found when `index` is not a bridge port.
    fn bridge_port_hairpin(&mut self, index: u32) -> Result<bool> {
        Err(Error::Unsupported(format!(
            "bridge_port_hairpin({index}) not implemented"
        )))
    }
    /// Adds a VLAN to a bridge port (or to the bridge itself, with `self`).
    fn bridge_vlan_add(&mut self, index: u32, vid: u16, pvid: bool, untagged: bool) -> Result<()>;
    /// VLANs of a bridge port or bridge: `(vid, pvid, untagged)`.
    fn bridge_vlans(&mut self, index: u32) -> Result<Vec<(u16, bool, bool)>>;
    /// Addresses of one link, or of all links.
    fn addrs(&mut self, index: Option<u32>) -> Result<Vec<AddrInfo>>;
    /// Adds an address (EEXIST when present).
    fn addr_add(&mut self, index: u32, addr: ipnet::IpNet) -> Result<()>;
    /// Removes an address (not-found when absent).
    fn addr_del(&mut self, index: u32, addr: ipnet::IpNet) -> Result<()>;
    /// Routes of one family in `table` (None = main); cloned/cache entries excluded.
    fn routes(&mut self, v6: bool, table: Option<u32>) -> Result<Vec<RouteInfo>>;
    /// Adds a route (`NLM_F_CREATE|NLM_F_EXCL`).
    fn route_add(&mut self, r: &RouteSpec) -> Result<()>;
    /// Adds or replaces a route (`NLM_F_CREATE|NLM_F_REPLACE`).
    fn route_replace(&mut self, r: &RouteSpec) -> Result<()>;
    /// Deletes a route; unset fields match anything.
    fn route_del(&mut self, r: &RouteSpec) -> Result<()>;
    /// Adds or replaces a neighbour entry (`NLM_F_CREATE|NLM_F_REPLACE`, like
    /// `ip neigh replace`: learned entries may already exist).
    fn neigh_add(&mut self, n: &NeighSpec) -> Result<()>;
    /// Deletes a neighbour entry (matched by index and ip).
    fn neigh_del(&mut self, n: &NeighSpec) -> Result<()>;
    /// IPv4 and IPv6 neighbour entries with a link-layer address.
    fn neighs(&mut self, index: Option<u32>) -> Result<Vec<NeighSpec>>;
    /// Adds an FDB entry: replaces the entry for the MAC, except for the all-zero
    /// MAC where it appends another remote (`bridge fdb append`; appending a
    /// remote that is already there is a no-op, as in the kernel).
    fn fdb_add(&mut self, f: &FdbSpec) -> Result<()>;
    /// Deletes an FDB entry (matched by index, MAC, and dst when set). Like the
    /// vxlan driver: not-found when the MAC has no entry; a dst the entry does not
    /// have is ignored (Ok); no dst removes all remotes of the MAC.
    fn fdb_del(&mut self, f: &FdbSpec) -> Result<()>;
    /// FDB entries of a device.
    fn fdbs(&mut self, index: u32) -> Result<Vec<FdbSpec>>;
}

/// A mutating call, as recorded by [`crate::FakeNetlink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `link_add`.
    LinkAdd(LinkRequest),
    /// `link_del(index)`.
    LinkDel(u32),
    /// `link_set_group(index, group)`.
    SetGroup(u32, u32),
    /// `link_del_group(group)`.
    LinkDelGroup(u32),
    /// `link_set_up(index, up)`.
    SetUp(u32, bool),
    /// `link_set_mtu(index, mtu)`.
    SetMtu(u32, u32),
    /// `link_set_mac(index, mac)`.
    SetMac(u32, Mac),
    /// `link_set_name(index, name)`.
    SetName(u32, String),
    /// `link_set_master(index, master)`.
    SetMaster(u32, Option<u32>),
    /// `link_set_promisc(index, on)`.
    SetPromisc(u32, bool),
    /// `link_set_netns(index, ns)`.
    SetNetns(u32, Netns),
    /// `bridge_port_set_hairpin(index, on)`.
    SetHairpin(u32, bool),
    /// `bridge_vlan_add(index, vid, pvid, untagged)`.
    BridgeVlanAdd(u32, u16, bool, bool),
    /// `addr_add(index, addr)`.
    AddrAdd(u32, ipnet::IpNet),
    /// `addr_del(index, addr)`.
    AddrDel(u32, ipnet::IpNet),
    /// `route_add`.
    RouteAdd(RouteSpec),
    /// `route_replace`.
    RouteReplace(RouteSpec),
    /// `route_del`.
    RouteDel(RouteSpec),
    /// `neigh_add`.
    NeighAdd(NeighSpec),
    /// `neigh_del`.
    NeighDel(NeighSpec),
    /// `fdb_add`.
    FdbAdd(FdbSpec),
    /// `fdb_del`.
    FdbDel(FdbSpec),
}
