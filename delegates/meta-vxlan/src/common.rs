//! Pieces both modes use: the bridge, the veth into the pod, the injected IPAM section,
//! rollback bookkeeping, CHECK of the pod side.

use cni_core::{CmdArgs, CniResult, Error, Interface, NetConf, Result};
use ipnet::IpNet;
use meta_delegate::{VethPair, mac_string};
use meta_netlink::{LinkInfo, Mac, Netlink, NetlinkOps};
use serde_json::{Value, json};
use std::net::IpAddr;

/// A documentation range (TEST-NET-1) used as the host-local range when the real subnet is
/// unknown at DEL/GC time: host-local releases by the files on disk, not by range.
pub(crate) const PLACEHOLDER_RANGE: &str = "192.0.2.0/24";

/// Converts an overlay error into a CNI error (conflicts and bad settings are config errors).
pub(crate) fn overlay_err(ctx: &str) -> impl FnOnce(meta_overlay::Error) -> Error + '_ {
    move |e| {
        use meta_overlay::Error as E;
        match e {
            E::Config(_) | E::Conflict(_) | E::SegmentConflict { .. } => {
                Error::config(format!("{ctx}: {e}"))
            }
            E::Io { .. } => Error::io(format!("{ctx}: {e}")),
            _ => Error::internal(format!("{ctx}: {e}")),
        }
    }
}

/// Makes sure `name` exists as a bridge and is up. A bridge we create gets `mtu` and `mac`
/// (a fixed MAC keeps the bridge from following its lowest port's MAC).
pub(crate) fn ensure_bridge(
    host: &mut Netlink,
    name: &str,
    mtu: Option<u32>,
    mac: Option<Mac>,
) -> Result<LinkInfo> {
    let spec = meta_delegate::link::BridgeSpec {
        name,
        vlan_filtering: false,
        mtu,
        mac,
    };
    meta_delegate::link::ensure_bridge(host, &spec).map(|(br, _)| br)
}

/// The three result interfaces: bridge, host veth, container veth.
pub(crate) fn interfaces(args: &CmdArgs, br: &LinkInfo, veth: &VethPair) -> Vec<Interface> {
    vec![
        Interface {
            name: br.name.clone(),
            mac: mac_string(br),
            ..Default::default()
        },
        Interface {
            name: veth.host.name.clone(),
            mac: mac_string(&veth.host),
            ..Default::default()
        },
        Interface {
            name: args.env.ifname.clone(),
            mac: mac_string(&veth.container),
            sandbox: args.env.netns.clone(),
            ..Default::default()
        },
    ]
}

/// Re-reads the MACs of the host-side interfaces (a bridge may change its MAC as ports come).
pub(crate) fn refresh_macs(host: &mut Netlink, result: &mut CniResult) {
    for i in 0..2 {
        let name = result.interfaces[i].name.clone();
        if let Ok(Some(l)) = host.link_by_name(&name) {
            result.interfaces[i].mac = mac_string(&l);
        }
    }
}

/// Applies a top-level `dns` section to the result, like the reference plugins.
pub(crate) fn apply_dns(args: &CmdArgs, result: &mut CniResult) -> Result<()> {
    if let Some(dns) = args.conf.get("dns") {
        let d: cni_core::Dns = serde_json::from_value(dns.clone())
            .map_err(|e| Error::config(format!("invalid dns: {e}")))?;
        if !d.is_empty() {
            result.dns = d;
        }
    }
    Ok(())
}

/// `args` with the node subnet put into the IPAM section: none, one without `type`, or a
/// host-local one without `ranges`/`subnet` becomes host-local on `subnet`; any other IPAM
/// section is left as it is. stdin is rewritten to match (exec'd IPAM reads it).
pub(crate) fn with_node_ipam(args: &CmdArgs, subnet: IpNet) -> Result<CmdArgs> {
    let mut conf: NetConf = args.conf.clone();
    let raw = conf.raw_mut();
    let mut ipam = match raw.get("ipam") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(Error::config(format!(
                "ipam must be an object, got {other}"
            )));
        }
    };
    let t = ipam
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if t.is_empty() {
        ipam.insert("type".into(), json!("host-local"));
    }
    let host_local = matches!(t.as_str(), "" | "host-local" | "meta-host-local");
    let has_range = ["ranges", "subnet"]
        .iter()
        .any(|k| ipam.get(*k).is_some_and(|v| !v.is_null()));
    if host_local && !has_range {
        ipam.insert("ranges".into(), json!([[{"subnet": subnet.to_string()}]]));
    }
    raw.insert("ipam".into(), Value::Object(ipam));
    let stdin = conf.to_bytes();
    Ok(CmdArgs {
        env: args.env.clone(),
        stdin,
        conf,
    })
}

/// The network address + 1 of a subnet: the default gateway.
pub(crate) fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(n) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(n).wrapping_add(1))),
        IpAddr::V6(n) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n).wrapping_add(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ipam: Value) -> CmdArgs {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "meta-vxlan"});
        if !ipam.is_null() {
            c["ipam"] = ipam;
        }
        crate::config::tests_support::args_for(c)
    }

    #[test]
    fn node_ipam_injection() {
        let s: IpNet = "10.244.1.0/24".parse().unwrap();
        let a = with_node_ipam(&args(Value::Null), s).unwrap();
        assert_eq!(
            a.conf.get("ipam").unwrap(),
            &json!({"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]})
        );
        let again: Value = serde_json::from_slice(&a.stdin).unwrap();
        assert_eq!(again["ipam"]["type"], "host-local");
        let a = with_node_ipam(&args(json!({"dataDir": "/x"})), s).unwrap();
        assert_eq!(a.conf.get("ipam").unwrap()["dataDir"], "/x");
        assert_eq!(a.conf.get("ipam").unwrap()["type"], "host-local");
        // A given range is kept.
        let a = with_node_ipam(
            &args(json!({"type": "host-local", "subnet": "10.244.1.0/25"})),
            s,
        )
        .unwrap();
        assert!(a.conf.get("ipam").unwrap().get("ranges").is_none());
        // Another IPAM is left alone.
        let a = with_node_ipam(&args(json!({"type": "dhcp"})), s).unwrap();
        assert_eq!(a.conf.get("ipam").unwrap(), &json!({"type": "dhcp"}));
        assert!(with_node_ipam(&args(json!(3)), s).is_err());
        assert_eq!(first_host(&s).to_string(), "10.244.1.1");
    }
}
