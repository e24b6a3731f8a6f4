//! The delegate's configuration: primary (the cluster network, `eth0`) or secondary (an
//! L2 segment with its own VNI).
//!
//! # Mode
//!
//! `"mode": "primary"` or `"mode": "secondary"`; without `mode`, a configuration with a
//! `vni` is secondary and one without is primary. Keys of the other mode are refused
//! (code 2) rather than ignored, so a mistyped NAD fails loudly.
//!
//! # Primary keys
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `bridge` | `meta0` | the node bridge the pods are plugged into |
//! | `subnetFile` | `/run/meta-cni/subnet.env` | written by the node side ([`meta_overlay::write_subnet_file`]) |
//! | `subnet` | from the file | the node's pod subnet |
//! | `clusterCIDR` | from the file | the cluster CIDR (route in the pod, masquerade boundary) |
//! | `mtu` | from the file | the pods' MTU |
//! | `ipMasq` | `true` | masquerade pod traffic leaving the cluster CIDR |
//! | `ipam` | host-local on the node subnet | any IPAM; a host-local section without `ranges`/`subnet` (or without `type`) gets the node subnet |
//!
//! The file is read only when one of `subnet`, `clusterCIDR`, `mtu` is not given.
//!
//! # Secondary keys
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `vni` | (required) | 1..=16777215 |
//! | `port` | `4789` | UDP port |
//! | `mtu` | underlay MTU − 50 | device, bridge and pod MTU |
//! | `bridge` | `mbr<vni>` | the segment's bridge on each node |
//! | `peers` | (none) | underlay IPs of the other nodes: the flood list is made exactly this; absent = left alone (programmed by the agent) |
//! | `learning` | `true` | learn remote MACs on the VXLAN device |
//! | `underlayInterface` | default-route interface | where VXLAN packets leave |
//! | `localIP` | that interface's address | the local VTEP address |
//! | `stateDir` | `/run/meta-cni/vxlan` | records which network created each VNI's device (for conflict messages) |
//! | `ipam` | (none: L2 only) | the NAD's IPAM; with host-local, give every node a disjoint range |
//!
//! The VXLAN device of a segment is always `mvx<vni>`. Both modes accept the container MAC
//! like the bridge plugin (`CNI_ARGS` `MAC=`, `args.cni.mac`, `runtimeConfig.mac`).

use cni_core::{CmdArgs, Error, Result};
use ipnet::IpNet;
use meta_netlink::{Mac, parse_mac};
use meta_overlay::{
    DEFAULT_BRIDGE, DEFAULT_SEGMENT_PORT, DEFAULT_SUBNET_FILE, MAX_VNI, segment_bridge_name,
};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// Default `stateDir` of secondary segments.
pub use meta_overlay::DEFAULT_STATE_DIR;

/// The raw configuration fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VxlanConf {
    /// `primary` or `secondary`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Secondary: VNI.
    #[serde(default)]
    pub vni: Option<i64>,
    /// Secondary: UDP port.
    #[serde(default)]
    pub port: Option<i64>,
    /// MTU.
    #[serde(default)]
    pub mtu: Option<i64>,
    /// Bridge name.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Secondary: peer underlay IPs.
    #[serde(default)]
    pub peers: Option<Vec<String>>,
    /// Secondary: MAC learning.
    #[serde(default)]
    pub learning: Option<bool>,
    /// Secondary: underlay interface.
    #[serde(rename = "underlayInterface", default)]
    pub underlay_interface: Option<String>,
    /// Secondary: local VTEP IP.
    #[serde(rename = "localIP", default)]
    pub local_ip: Option<String>,
    /// Secondary: state directory.
    #[serde(rename = "stateDir", default)]
    pub state_dir: Option<String>,
    /// Primary: subnet file.
    #[serde(rename = "subnetFile", default)]
    pub subnet_file: Option<String>,
    /// Primary: node subnet.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Primary: cluster CIDR.
    #[serde(rename = "clusterCIDR", default)]
    pub cluster_cidr: Option<String>,
    /// Primary: masquerade.
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: Option<bool>,
}

/// Primary mode, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// Node bridge.
    pub bridge: String,
    /// Subnet file.
    pub subnet_file: PathBuf,
    /// Configured node subnet.
    pub subnet: Option<IpNet>,
    /// Configured cluster CIDR.
    pub cluster_cidr: Option<IpNet>,
    /// Configured MTU.
    pub mtu: Option<u32>,
    /// Masquerade traffic leaving the cluster CIDR.
    pub ip_masq: bool,
}

/// Secondary mode, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secondary {
    /// VNI.
    pub vni: u32,
    /// UDP port.
    pub port: u16,
    /// Configured MTU (None: underlay MTU − overhead).
    pub mtu: Option<u32>,
    /// Bridge.
    pub bridge: String,
    /// Static peers (None: not managed here).
    pub peers: Option<Vec<IpAddr>>,
    /// MAC learning.
    pub learning: bool,
    /// Underlay interface.
    pub underlay_interface: Option<String>,
    /// Local VTEP IP.
    pub local_ip: Option<IpAddr>,
    /// State directory.
    pub state_dir: PathBuf,
}

/// The mode-specific part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The cluster network.
    Primary(Primary),
    /// A secondary segment.
    Secondary(Secondary),
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The mode.
    pub mode: Mode,
    /// MAC requested for the container interface.
    pub mac: Option<Mac>,
    /// IPAM type (None: no `ipam` section).
    pub ipam_type: Option<String>,
}

fn parse_cidr(field: &str, v: &Option<String>) -> Result<Option<IpNet>> {
    v.as_deref()
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| Error::config(format!("{field}: {s:?} is not a CIDR")))
        })
        .transpose()
}

fn parse_mtu(v: Option<i64>) -> Result<Option<u32>> {
    match v {
        None | Some(0) => Ok(None),
        Some(m) if (68..=65535).contains(&m) => Ok(Some(m as u32)),
        Some(m) => Err(Error::config(format!(
            "invalid mtu {m} (must be 68..65535)"
        ))),
    }
}

fn check_ifname(field: &str, name: &str) -> Result<()> {
    cni_core::env::validate_ifname(name)
        .map_err(|e| Error::config(format!("invalid {field} {name:?}: {}", e.msg)))
}

fn refuse(present: &[(&str, bool)], mode: &str) -> Result<()> {
    if let Some((k, _)) = present.iter().find(|(_, p)| *p) {
        return Err(Error::unsupported_field(
            k,
            format!("it is not a {mode}-mode setting"),
        ));
    }
    Ok(())
}

fn container_mac(args: &CmdArgs) -> Result<Option<Mac>> {
    args.env.args.check_known(&["MAC", "IP", "GATEWAY"])?;
    let mut mac_s: Option<String> = args.env.args.get("MAC").map(str::to_string);
    for v in [args.conf.args_cni("mac"), args.conf.runtime_config("mac")] {
        if let Some(m) = v.and_then(|v| v.as_str()).filter(|m| !m.is_empty()) {
            mac_s = Some(m.to_string());
        }
    }
    mac_s
        .map(|s| parse_mac(&s).map_err(|_| Error::config(format!("invalid MAC address {s:?}"))))
        .transpose()
}

/// Parses and validates the configuration of one invocation.
pub fn load(args: &CmdArgs) -> Result<Resolved> {
    let c: VxlanConf = args.conf.typed()?;
    let secondary = match c.mode.as_deref() {
        None | Some("") => c.vni.is_some(),
        Some("primary") => false,
        Some("secondary") => true,
        Some(m) => {
            return Err(Error::config(format!(
                "invalid mode {m:?} (must be \"primary\" or \"secondary\")"
            )));
        }
    };
    let mtu = parse_mtu(c.mtu)?;
    let mode = if secondary {
        refuse(
            &[
                ("subnetFile", c.subnet_file.is_some()),
                ("subnet", c.subnet.is_some()),
                ("clusterCIDR", c.cluster_cidr.is_some()),
                ("ipMasq", c.ip_masq.is_some()),
            ],
            "primary",
        )
        .map_err(|e| e.with_details("secondary VXLAN networks are plain L2 segments"))?;
        let vni = match c.vni {
            None => return Err(Error::config("secondary mode needs a \"vni\"")),
            Some(v) if (1..=i64::from(MAX_VNI)).contains(&v) => v as u32,
            Some(v) => {
                return Err(Error::config(format!(
                    "invalid vni {v} (must be 1..{MAX_VNI})"
                )));
            }
        };
        let port = match c.port {
            None | Some(0) => DEFAULT_SEGMENT_PORT,
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => {
                return Err(Error::config(format!(
                    "invalid port {p} (must be 1..65535)"
                )));
            }
        };
        let bridge = c.bridge.clone().unwrap_or_else(|| segment_bridge_name(vni));
        check_ifname("bridge name", &bridge)?;
        let peers = c
            .peers
            .as_ref()
            .map(|ps| {
                ps.iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.trim().parse::<IpAddr>().map_err(|_| {
                            Error::config(format!("peers[{i}]: {p:?} is not an IP address"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        if let Some(i) = &c.underlay_interface {
            check_ifname("underlayInterface", i)?;
        }
        let local_ip = c
            .local_ip
            .as_deref()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| Error::config(format!("localIP: {s:?} is not an IP address")))
            })
            .transpose()?;
        if let (Some(ps), Some(l)) = (&peers, local_ip)
            && ps.iter().any(|p| p.is_ipv4() != l.is_ipv4())
        {
            return Err(Error::config(format!(
                "peers must be of the address family of localIP {l}"
            )));
        }
        Mode::Secondary(Secondary {
            vni,
            port,
            mtu,
            bridge,
            peers,
            learning: c.learning.unwrap_or(true),
            underlay_interface: c.underlay_interface.clone(),
            local_ip,
            state_dir: PathBuf::from(c.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR)),
        })
    } else {
        refuse(
            &[
                ("vni", c.vni.is_some()),
                ("port", c.port.is_some()),
                ("peers", c.peers.is_some()),
                ("learning", c.learning.is_some()),
                ("underlayInterface", c.underlay_interface.is_some()),
                ("localIP", c.local_ip.is_some()),
                ("stateDir", c.state_dir.is_some()),
            ],
            "secondary",
        )
        .map_err(|e| {
            e.with_details(
                "the primary overlay's device and peers are the node agent's (see overlay::OverlayConfig)",
            )
        })?;
        let bridge = c.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into());
        check_ifname("bridge name", &bridge)?;
        let subnet = parse_cidr("subnet", &c.subnet)?;
        let cluster_cidr = parse_cidr("clusterCIDR", &c.cluster_cidr)?;
        if let (Some(s), Some(cc)) = (subnet, cluster_cidr)
            && (s.addr().is_ipv4() != cc.addr().is_ipv4()
                || !cc.contains(&s.network())
                || s.prefix_len() < cc.prefix_len())
        {
            return Err(Error::config(format!(
                "subnet {s} is not inside clusterCIDR {cc}"
            )));
        }
        Mode::Primary(Primary {
            bridge,
            subnet_file: PathBuf::from(c.subnet_file.as_deref().unwrap_or(DEFAULT_SUBNET_FILE)),
            subnet,
            cluster_cidr,
            mtu,
            ip_masq: c.ip_masq.unwrap_or(true),
        })
    };
    let ipam_type = args.conf.ipam_type().map(str::to_string);
    Ok(Resolved {
        mode,
        mac: container_mac(args)?,
        ipam_type,
    })
}

/// What DEL needs to know, by mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelMode {
    /// Primary: where the node subnet comes from (to point host-local at it) and whether
    /// masquerade rules may exist.
    Primary(Primary),
    /// Secondary: the container interface and the NAD's IPAM, nothing else.
    Secondary,
}

/// The configuration as DEL reads it (the kit's DEL rule): only the JSON types are
/// checked, never ADD's validation, so a DEL after a refused ADD (or of a configuration
/// that changed since) succeeds. Values ADD would refuse are ignored: an unknown `mode`
/// counts as "secondary when there is a `vni`", an unparsable `subnet`/`clusterCIDR` as
/// absent, keys of the other mode are not looked at.
pub fn for_del(args: &CmdArgs) -> Result<DelMode> {
    let c: VxlanConf = args.conf.typed()?;
    let secondary = match c.mode.as_deref() {
        Some("primary") => false,
        Some("secondary") => true,
        _ => c.vni.is_some(),
    };
    if secondary {
        return Ok(DelMode::Secondary);
    }
    let lenient = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| s.parse::<IpNet>().ok())
            .map(|n| n.trunc())
    };
    Ok(DelMode::Primary(Primary {
        bridge: c.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into()),
        subnet_file: PathBuf::from(c.subnet_file.as_deref().unwrap_or(DEFAULT_SUBNET_FILE)),
        subnet: lenient(&c.subnet),
        cluster_cidr: lenient(&c.cluster_cidr),
        mtu: parse_mtu(c.mtu).ok().flatten(),
        ip_masq: c.ip_masq.unwrap_or(true),
    }))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use cni_core::{CmdArgs, Env, NetConf};
    use serde_json::Value;

    /// ADD arguments for a configuration.
    pub(crate) fn args_for(conf: Value) -> CmdArgs {
        let stdin = conf.to_string().into_bytes();
        let env = Env::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/var/run/netns/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            _ => None,
        })
        .unwrap();
        CmdArgs {
            env,
            conf: NetConf::parse(&stdin).unwrap(),
            stdin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::args_for;
    use super::*;
    use serde_json::{Value, json};

    fn conf(extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "meta-vxlan"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn primary_defaults() {
        let r = load(&args_for(conf(json!({})))).unwrap();
        assert_eq!(
            r.mode,
            Mode::Primary(Primary {
                bridge: "meta0".into(),
                subnet_file: DEFAULT_SUBNET_FILE.into(),
                subnet: None,
                cluster_cidr: None,
                mtu: None,
                ip_masq: true
            })
        );
        assert_eq!(r.ipam_type, None);
        let r = load(&args_for(conf(
            json!({"mode": "primary", "subnet": "10.1.2.3/24",
            "clusterCIDR": "10.1.0.0/16", "mtu": 1400, "ipMasq": false, "bridge": "b0"}),
        )))
        .unwrap();
        let Mode::Primary(p) = r.mode else { panic!() };
        assert_eq!(p.subnet.unwrap().to_string(), "10.1.2.0/24");
        assert_eq!(p.mtu, Some(1400));
        assert!(!p.ip_masq);
    }

    #[test]
    fn secondary_defaults_and_values() {
        let r = load(&args_for(conf(json!({"vni": 42})))).unwrap();
        let Mode::Secondary(s) = r.mode else { panic!() };
        assert_eq!(
            (s.vni, s.port, s.bridge.as_str(), s.learning, s.mtu),
            (42, 4789, "mbr42", true, None)
        );
        assert_eq!(s.peers, None);
        let r = load(&args_for(conf(json!({"vni": 7, "port": 4790, "mtu": 1400,
            "peers": ["192.0.2.2", " 192.0.2.3"], "learning": false, "bridge": "seg7",
            "underlayInterface": "eth1", "localIP": "192.0.2.1", "stateDir": "/tmp/s"}))))
        .unwrap();
        let Mode::Secondary(s) = r.mode else { panic!() };
        assert_eq!(s.peers.unwrap().len(), 2);
        assert_eq!(s.bridge, "seg7");
        assert_eq!(s.local_ip, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_field() {
        for (c, code, needle) in [
            (json!({"mode": "tertiary"}), 7, "invalid mode"),
            (json!({"mode": "secondary"}), 7, "needs a \"vni\""),
            (json!({"vni": 0}), 7, "invalid vni 0"),
            (json!({"vni": 16777216}), 7, "invalid vni"),
            (json!({"vni": "x"}), 7, "vni"),
            (json!({"vni": 1, "port": 70000}), 7, "invalid port"),
            (json!({"vni": 1, "mtu": 20}), 7, "invalid mtu"),
            (json!({"vni": 1, "peers": ["nope"]}), 7, "peers[0]"),
            (json!({"vni": 1, "localIP": "x"}), 7, "localIP"),
            (
                json!({"vni": 1, "peers": ["fd00::1"], "localIP": "192.0.2.1"}),
                7,
                "family",
            ),
            (
                json!({"vni": 1, "bridge": "waytoolongbridgename"}),
                7,
                "bridge name",
            ),
            (json!({"vni": 1, "subnet": "10.0.0.0/24"}), 2, "subnet"),
            (json!({"vni": 1, "ipMasq": true}), 2, "ipMasq"),
            (json!({"peers": []}), 2, "peers"),
            (json!({"mode": "primary", "vni": 3}), 2, "vni"),
            (json!({"subnet": "x"}), 7, "subnet"),
            (
                json!({"subnet": "10.2.0.0/24", "clusterCIDR": "10.1.0.0/16"}),
                7,
                "not inside",
            ),
        ] {
            let e = load(&args_for(conf(c.clone()))).unwrap_err();
            assert_eq!(e.code, code, "{c}: {e}");
            assert!(e.to_string().contains(needle), "{c}: {e}");
        }
    }
}
