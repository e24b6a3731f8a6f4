//! Node-side links shared by the delegates: the bridge a pod's veth is plugged into
//! (bridge and vxlan), and the default-route interface (the macvlan and ipvlan master
//! when none is configured).

use crate::nl;
use cni_core::{Error, Result};
use meta_netlink::{LinkInfo, LinkKind, LinkRequest, Mac, NetlinkOps};

/// What [`ensure_bridge`] creates when the bridge is absent.
#[derive(Debug, Clone, Default)]
pub struct BridgeSpec<'a> {
    /// The bridge's name.
    pub name: &'a str,
    /// `IFLA_BR_VLAN_FILTERING`.
    pub vlan_filtering: bool,
    /// MTU of a new bridge.
    pub mtu: Option<u32>,
    /// MAC of a new bridge (a fixed MAC keeps it from following its lowest port's).
    pub mac: Option<Mac>,
}

/// The bridge `spec.name`, created when absent, up; and whether this call created it.
/// An existing link of that name that is not a bridge is a configuration error (code 7).
pub fn ensure_bridge<N: NetlinkOps + ?Sized>(
    h: &mut N,
    spec: &BridgeSpec<'_>,
) -> Result<(LinkInfo, bool)> {
    let name = spec.name;
    let req = LinkRequest {
        name: name.to_string(),
        kind: LinkKind::Bridge {
            vlan_filtering: spec.vlan_filtering,
        },
        mtu: spec.mtu,
        mac: spec.mac,
        ..Default::default()
    };
    let (br, created) = match meta_netlink::get_or_create(h, &req, "bridge") {
        Ok(v) => v,
        Err(meta_netlink::Error::Invalid(_)) => {
            return Err(Error::config(format!(
                "{name:?} already exists but is not a bridge"
            )));
        }
        Err(e) if spec.vlan_filtering && e.errno() == Some(95) => {
            return Err(Error::internal(format!(
                "failed to create bridge {name:?}: this kernel does not support bridge VLAN \
                 filtering (CONFIG_BRIDGE_VLAN_FILTERING), which vlan/vlanTrunk need"
            )));
        }
        Err(e) => return Err(nl(format!("failed to create bridge {name:?}"))(e)),
    };
    let br = if br.up {
        br
    } else {
        h.link_set_up(br.index, true)
            .map_err(nl(format!("failed to set {name:?} up")))?;
        LinkInfo { up: true, ..br }
    };
    Ok((br, created))
}

/// CHECK: the bridge `name` still exists on the node and is a bridge (the reference
/// plugins' wording).
pub fn check_bridge<N: NetlinkOps + ?Sized>(h: &mut N, name: &str) -> Result<LinkInfo> {
    let br = h
        .link_by_name(name)
        .map_err(nl("failed to look up bridge"))?
        .ok_or_else(|| {
            Error::internal(format!(
                "CNI created bridge {name} in host namespace was not found"
            ))
        })?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(Error::internal(format!(
            "interface {name} does not have link type of bridge"
        )));
    }
    Ok(br)
}

/// The interface of the node's (or pod's) default route, as the reference plugins pick a
/// master when none is configured.
pub fn default_route_iface<N: NetlinkOps + ?Sized>(h: &mut N) -> Result<Option<LinkInfo>> {
    meta_netlink::default_route_link(h).map_err(nl(
        "failed to list routes to find the default route interface",
    ))
}
