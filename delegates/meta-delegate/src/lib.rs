//! Helpers shared by meta-cni's delegates (bridge, macvlan, ipvlan, vxlan): the veth pair
//! into the pod, the container interface's configuration from a result, CHECK helpers,
//! and IPAM dispatch (bundled host-local/static in-process, anything else exec'd).

pub mod iface;
pub mod ipam;

pub use iface::{
    VethPair, check_iface_ips, check_iface_routes, check_veth_on_bridge, configure_iface,
    del_pod_link, enable_forwarding, mac_string, nl, open_netns, open_netns_for_del, rollback_ipam,
    rollback_link, setup_veth,
};
