//! The bridge configuration: the reference bridge plugin's fields.

use cni_core::{CmdArgs, Error, Result};
use meta_netlink::{Mac, parse_mac};
use serde::Deserialize;

/// A `vlanTrunk` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VlanTrunk {
    /// First VLAN of a range.
    #[serde(rename = "minID", default)]
    pub min_id: Option<i64>,
    /// Last VLAN of a range.
    #[serde(rename = "maxID", default)]
    pub max_id: Option<i64>,
    /// A single VLAN.
    #[serde(rename = "id", default)]
    pub id: Option<i64>,
}

fn default_bridge() -> String {
    "cni0".into()
}
fn yes() -> bool {
    true
}

/// The reference bridge plugin's configuration fields.
#[derive(Debug, Clone, Deserialize)]
pub struct BridgeConf {
    /// Bridge name (default `cni0`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// Give the bridge the gateway addresses and enable forwarding.
    #[serde(rename = "isGateway", default)]
    pub is_gateway: bool,
    /// Add a default route via the gateway (implies isGateway).
    #[serde(rename = "isDefaultGateway", default)]
    pub is_default_gateway: bool,
    /// Replace a different address of the same family/subnet on the bridge.
    #[serde(rename = "forceAddress", default)]
    pub force_address: bool,
    /// Masquerade traffic leaving the pod's subnet.
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    /// MTU of the bridge and veth (0 = kernel default).
    #[serde(default)]
    pub mtu: i64,
    /// Hairpin mode on the host port.
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    /// Promiscuous mode on the bridge.
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    /// Access VLAN of the host port (0 = none).
    #[serde(default)]
    pub vlan: i64,
    /// Trunk VLANs of the host port.
    #[serde(rename = "vlanTrunk", default)]
    pub vlan_trunk: Option<Vec<VlanTrunk>>,
    /// Keep the default VLAN 1 on the port when setting VLANs.
    #[serde(rename = "preserveDefaultVlan", default = "yes")]
    pub preserve_default_vlan: bool,
    /// Drop frames from the pod whose source MAC is not the pod's.
    #[serde(default)]
    pub macspoofchk: bool,
    /// Keep IPv6 duplicate address detection on the container interface.
    #[serde(default)]
    pub enabledad: bool,
}

/// The configuration after validation, with the values from args applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The raw fields.
    pub conf: BridgeConf,
    /// Trunk VLANs, sorted and deduplicated.
    pub vlans: Vec<u16>,
    /// MAC requested for the container interface.
    pub mac: Option<Mac>,
    /// MTU, None for the kernel default.
    pub mtu: Option<u32>,
    /// IPAM type, None for L2-only.
    pub ipam_type: Option<String>,
}

fn collect_trunk(trunk: &[VlanTrunk]) -> Result<Vec<u16>> {
    let ok = |v: i64| (1..=4094).contains(&v);
    let mut out = std::collections::BTreeSet::new();
    for t in trunk {
        match (t.min_id, t.max_id) {
            (Some(lo), Some(hi)) => {
                if !ok(lo) {
                    return Err(Error::config(format!(
                        "vlanTrunk: incorrect minID {lo} (must be 1..4094)"
                    )));
                }
                if !ok(hi) {
                    return Err(Error::config(format!(
                        "vlanTrunk: incorrect maxID {hi} (must be 1..4094)"
                    )));
                }
                if hi < lo {
                    return Err(Error::config(format!(
                        "vlanTrunk: minID {lo} is greater than maxID {hi}"
                    )));
                }
                out.extend((lo..=hi).map(|v| v as u16));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "vlanTrunk: minID and maxID must be set together, minID is missing",
                ));
            }
            (Some(_), None) => {
                return Err(Error::config(
                    "vlanTrunk: minID and maxID must be set together, maxID is missing",
                ));
            }
            (None, None) => {}
        }
        if let Some(id) = t.id {
            if !ok(id) {
                return Err(Error::config(format!(
                    "vlanTrunk: incorrect id {id} (must be 1..4094)"
                )));
            }
            out.insert(id as u16);
        }
    }
    Ok(out.into_iter().collect())
}

/// What DEL needs: the JSON types only (a type error fails DEL, as in the reference), none
/// of ADD's validation (a bridge name, MTU, MAC or mode combination ADD refuses cannot
/// have attached anything, and DEL must not block the pod's teardown on it).
pub fn parse(args: &CmdArgs) -> Result<BridgeConf> {
    args.conf.typed()
}

/// Parses and validates the configuration of one invocation.
pub fn load(args: &CmdArgs) -> Result<Resolved> {
    let conf: BridgeConf = args.conf.typed()?;
    cni_core::env::validate_ifname(&conf.bridge)
        .map_err(|e| Error::config(format!("invalid bridge name {:?}: {}", conf.bridge, e.msg)))?;
    if !(0..=4094).contains(&conf.vlan) {
        return Err(Error::config(format!(
            "invalid VLAN ID {} (must be between 0 and 4094)",
            conf.vlan
        )));
    }
    let vlans = match &conf.vlan_trunk {
        Some(t) => collect_trunk(t)?,
        None => Vec::new(),
    };
    if conf.vlan > 0 && !vlans.is_empty() {
        return Err(Error::config(
            "cannot set vlan and vlanTrunk at the same time",
        ));
    }
    if !conf.preserve_default_vlan && (conf.vlan != 0 || !vlans.is_empty()) {
        return Err(Error::unsupported_field(
            "preserveDefaultVlan",
            "false is not supported yet (the port keeps the default VLAN 1)",
        ));
    }
    if conf.hairpin_mode && conf.promisc_mode {
        return Err(Error::config(
            "cannot set hairpin mode and promiscuous mode at the same time",
        ));
    }
    if !(0..=65535).contains(&conf.mtu) {
        return Err(Error::config(format!(
            "invalid mtu {} (must be 0..65535)",
            conf.mtu
        )));
    }
    // MAC: CNI_ARGS MAC=, then args.cni.mac, then runtimeConfig.mac (the last one set wins).
    args.conf_args_check()?;
    let mut mac_s: Option<String> = args.env.args.get("MAC").map(str::to_string);
    if let Some(m) = args.conf.args_cni("mac").and_then(|v| v.as_str())
        && !m.is_empty()
    {
        mac_s = Some(m.to_string());
    }
    if let Some(m) = args.conf.runtime_config("mac").and_then(|v| v.as_str())
        && !m.is_empty()
    {
        mac_s = Some(m.to_string());
    }
    let mac = match mac_s {
        Some(s) => {
            Some(parse_mac(&s).map_err(|_| Error::config(format!("invalid MAC address {s:?}")))?)
        }
        None => None,
    };
    let ipam_type = args.conf.ipam_type().map(str::to_string);
    let mtu = if conf.mtu > 0 {
        Some(conf.mtu as u32)
    } else {
        None
    };
    let mut conf = conf;
    if conf.is_default_gateway {
        conf.is_gateway = true;
    }
    Ok(Resolved {
        conf,
        vlans,
        mac,
        mtu,
        ipam_type,
    })
}

/// Extension used by [`load`]: the CNI_ARGS keys the bridge (and its IPAM) understand.
trait ArgsCheck {
    fn conf_args_check(&self) -> Result<()>;
}

impl ArgsCheck for CmdArgs {
    fn conf_args_check(&self) -> Result<()> {
        self.env.args.check_known(&["MAC", "IP", "GATEWAY"])
    }
}
