//! The delegate kit: what every delegate of meta-cni (bridge, macvlan, ipvlan, vxlan) is
//! built from.
//!
//! * [`registry`]: the [`DelegateType`] a delegate crate exports (its CNI type names, the
//!   reference fields it does not implement, a constructor) and the bundled IPAM table
//!   ([`ipam::BUNDLED`]);
//! * [`undo`]: the undo stack of an ADD ([`undo::transaction`]);
//! * [`link`]: get-or-create of node links (bridges), the default-route interface;
//! * [`iface`]: the veth pair into the pod, the container interface's configuration from a
//!   result (the reference `ipam.ConfigureIface`), pod sysctls, CHECK helpers, and the one
//!   DEL rule ([`del_link_and_ipam`]: parse only what DEL needs, never ADD's validation);
//! * [`ipam`]: IPAM dispatch (bundled host-local/static in-process, anything else exec'd).

pub mod iface;
pub mod ipam;
pub mod link;
pub mod undo;

/// Registration types (re-exported from cni-core, where the IPAM crate can see them too).
pub mod registry {
    pub use cni_core::registry::{DelegateType, IpamType, Unimplemented, find};
}

pub use iface::{
    Handles, PodSysctl, VethPair, about, check_container_link, check_iface_ips, check_iface_routes,
    check_veth_on_bridge, configure_iface, del_link, del_link_and_ipam, del_link_named,
    del_pod_link, enable_forwarding, iface_sysctl, internal, mac_string, nl, open_netns,
    open_netns_for_del, set_iface_sysctls, setup_veth, valid_attachments, veth_on_bridge,
};
pub use registry::{DelegateType, Unimplemented};
pub use undo::{Undo, transaction};
