//! The network-status annotation (`k8s.v1.cni.cncf.io/network-status`), field for field as
//! network-attachment-definition-client's `NetworkStatus` writes it (the Go struct's field
//! order and `omitempty` rules, `json.MarshalIndent` with four spaces, elements joined by `,`).
//!
//! Building a status from a CNI result is defined on [`ResultSummary`], a plain mirror of the
//! parts of a CNI 1.x result that matter here, so that this crate does not depend on the
//! delegate crates: the caller (meta-cni) converts its CNI result into it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Pod annotation carrying the attachment results.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The pre-v1.1 spelling that old Multus versions also wrote; read-only compatibility.
pub const OLD_NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks-status";

fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// DNS information of an attachment (the CNI result's `dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// DNS server addresses.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub domain: String,
    /// Search domains.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
}

macro_rules! string_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident => $key:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            $(
                $(#[$fm])*
                #[serde(
                    rename = $key,
                    default,
                    deserialize_with = "null_default",
                    skip_serializing_if = "String::is_empty"
                )]
                pub $field: String,
            )*
        }
    };
}

string_struct!(
    /// A PCI device (`device-info.pci`).
    PciDevice {
        /// PCI address, e.g. `0000:03:02.4`.
        pci_address => "pci-address",
        /// vhost-net device path.
        vhost_net => "vhost-net",
        /// RDMA device name.
        rdma_device => "rdma-device",
        /// PCI address of the physical function.
        pf_pci_address => "pf-pci-address",
        /// Representor netdev name.
        representor_device => "representor-device",
    }
);

string_struct!(
    /// A vDPA device (`device-info.vdpa`).
    VdpaDevice {
        /// Parent vDPA management device.
        parent_device => "parent-device",
        /// Bus driver (`vhost`, `virtio`).
        driver => "driver",
        /// Device path.
        path => "path",
        /// PCI address.
        pci_address => "pci-address",
        /// PCI address of the physical function.
        pf_pci_address => "pf-pci-address",
        /// Representor netdev name.
        representor_device => "representor-device",
    }
);

string_struct!(
    /// A vhost-user socket (`device-info.vhost-user`).
    VhostDevice {
        /// `client` or `server`.
        mode => "mode",
        /// Socket path.
        path => "path",
    }
);

string_struct!(
    /// A memif socket (`device-info.memif`).
    MemifDevice {
        /// `master` or `slave`.
        role => "role",
        /// Socket path.
        path => "path",
        /// `ethernet`, `ip` or `punt`.
        mode => "mode",
    }
);

/// Device information of an attachment (NPWG device-info spec, version 1.1.0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `pci`, `vdpa`, `vhost-user` or `memif`.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Device-info spec version, e.g. `1.1.0`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub version: String,
    /// PCI details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciDevice>,
    /// vDPA details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vdpa: Option<VdpaDevice>,
    /// vhost-user details.
    #[serde(
        rename = "vhost-user",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vhost_user: Option<VhostDevice>,
    /// memif details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memif: Option<MemifDevice>,
}

/// One entry of the network-status annotation.
///
/// Field order and omission rules are Go's: `name` always; `interface`, `ips`, `mac`, `mtu`
/// (0), `default` (false), `device-info` and `gateway` only when set; `dns` always, `{}` when
/// empty. Unknown keys are dropped when reading, as Go does, and `null` counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// The network: `namespace/name` of the NAD, or the cluster network's name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Interface name in the pod.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface: String,
    /// Addresses of the interface (Multus writes them without prefix length).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ips: Vec<String>,
    /// Hardware address of the interface.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac: String,
    /// MTU of the interface, 0 when unknown.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub mtu: u32,
    /// True for the cluster default network's entry.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_false"
    )]
    pub default: bool,
    /// DNS information.
    #[serde(default, deserialize_with = "null_default")]
    pub dns: Dns,
    /// Device information, for device-backed attachments.
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<DeviceInfo>,
    /// Gateways of the attachment's default routes.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateway: Vec<String>,
}

/// The annotation value for `statuses`, byte for byte as Multus writes it.
///
/// Each entry is pretty-printed with four-space indents, entries are joined by `,` inside
/// `[` `]`, and `<`, `>`, `&`, U+2028 and U+2029 are escaped as Go's encoder does.
pub fn network_status_annotation(statuses: &[NetworkStatus]) -> Result<String> {
    let mut parts = Vec::with_capacity(statuses.len());
    for status in statuses {
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        status
            .serialize(&mut ser)
            .map_err(|e| Error::Serialize(e.to_string()))?;
        let text = String::from_utf8(buf).map_err(|e| Error::Serialize(e.to_string()))?;
        parts.push(go_html_escape(&text));
    }
    Ok(format!("[{}]", parts.join(",")))
}

/// Go's `encoding/json` escapes these even in pretty output; they can only occur inside
/// JSON strings, so replacing them in the text is exact.
fn go_html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The JSON merge patch that sets a pod's network-status to `value` (for the `pods/status`
/// subresource), with the pod's UID as a precondition when given: the API server refuses
/// the patch (409 or 422) if the pod was deleted and recreated under the same name.
pub fn network_status_patch(value: &str, uid: Option<&str>) -> serde_json::Value {
    let mut meta = serde_json::json!({"annotations": {NETWORK_STATUS_ANNOTATION: value}});
    if let Some(u) = uid {
        meta["uid"] = serde_json::Value::String(u.to_string());
    }
    serde_json::json!({"metadata": meta})
}

/// Reads a network-status annotation value (ours, Multus', or any NPWG implementation's).
pub fn parse_network_status(value: &str) -> Result<Vec<NetworkStatus>> {
    serde_json::from_str::<Option<Vec<NetworkStatus>>>(value)
        .map(Option::unwrap_or_default)
        .map_err(|e| Error::Annotation {
            annotation: NETWORK_STATUS_ANNOTATION,
            reason: format!("invalid: {e}"),
        })
}

/// An interface of a CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultInterface {
    /// Interface name.
    pub name: String,
    /// Hardware address, empty when unknown.
    pub mac: String,
    /// MTU, 0 when unknown.
    pub mtu: u32,
    /// Network namespace path; non-empty means the interface is in the pod.
    pub sandbox: String,
}

/// An address of a CNI result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultIp {
    /// The address (the prefix length is not part of the status).
    pub address: IpAddr,
    /// Index into [`ResultSummary::interfaces`].
    pub interface: Option<usize>,
    /// The address's gateway.
    pub gateway: Option<IpAddr>,
}

/// A route of a CNI result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
}

/// The parts of a CNI 1.x result the network-status is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSummary {
    /// `interfaces`.
    pub interfaces: Vec<ResultInterface>,
    /// `ips`.
    pub ips: Vec<ResultIp>,
    /// `routes`.
    pub routes: Vec<ResultRoute>,
    /// `dns`.
    pub dns: Dns,
}

fn ip_string(ip: IpAddr) -> String {
    // Go prints an IPv4-mapped IPv6 address as dotted IPv4.
    ip.to_canonical().to_string()
}

/// Gateways of the default routes, as Multus picks them: routes whose destination address is
/// unspecified (`0.0.0.0/x`, `::/x`). Routes without a next hop are skipped (Multus would
/// write the string `<nil>`).
fn default_gateways(result: &ResultSummary) -> Vec<String> {
    result
        .routes
        .iter()
        .filter(|r| r.dst.addr().is_unspecified())
        .filter_map(|r| r.gw.map(ip_string))
        .collect()
}

/// The network-status entries for one attachment, by Multus' `CreateNetworkStatuses`
/// (network-attachment-definition-client):
///
/// - exactly one interface in the result: one entry with all of the result's addresses and
///   the interface's name, MAC and MTU if it is a pod (sandbox) interface;
/// - several interfaces: one entry per pod interface, each with the addresses that point at
///   it; addresses naming no interface go to the last entry; with `default` set, the entry of
///   the first address that has a gateway and an interface is the default one, else the first
///   pod interface's;
/// - no interface at all: one minimal entry with the addresses (NPWG 5.1.1; Multus would
///   write none).
///
/// `network_name` is `namespace/name` for a NAD or the cluster network's name; every entry
/// gets the result's DNS, its default-route gateways and `device_info`.
pub fn network_statuses(
    result: &ResultSummary,
    network_name: &str,
    default: bool,
    device_info: Option<&DeviceInfo>,
) -> Vec<NetworkStatus> {
    let gateway = default_gateways(result);
    let base = NetworkStatus {
        name: network_name.to_string(),
        dns: result.dns.clone(),
        device_info: device_info.cloned(),
        gateway,
        ..Default::default()
    };
    if result.interfaces.len() <= 1 {
        let mut st = NetworkStatus {
            default,
            ips: result.ips.iter().map(|ip| ip_string(ip.address)).collect(),
            ..base
        };
        if let Some(iface) = result.interfaces.iter().find(|i| !i.sandbox.is_empty()) {
            st.interface = iface.name.clone();
            st.mac = iface.mac.clone();
            st.mtu = iface.mtu;
        }
        return vec![st];
    }

    let gw_iface = if default {
        result
            .ips
            .iter()
            .find(|ip| ip.gateway.is_some() && ip.interface.is_some())
            .and_then(|ip| ip.interface)
    } else {
        None
    };
    let mut statuses: Vec<NetworkStatus> = Vec::new();
    let mut index_map = std::collections::HashMap::new();
    let mut did_set_default = false;
    for (i, iface) in result.interfaces.iter().enumerate() {
        if iface.sandbox.is_empty() {
            continue;
        }
        let is_default = default
            && !did_set_default
            && match gw_iface {
                Some(g) => g == i,
                None => true,
            };
        did_set_default |= is_default;
        index_map.insert(i, statuses.len());
        statuses.push(NetworkStatus {
            default: is_default,
            interface: iface.name.clone(),
            mac: iface.mac.clone(),
            mtu: iface.mtu,
            ..base.clone()
        });
    }
    for ip in &result.ips {
        let target = match ip.interface {
            Some(i) => index_map.get(&i).copied(),
            None => statuses.len().checked_sub(1),
        };
        if let Some(t) = target {
            statuses[t].ips.push(ip_string(ip.address));
        }
    }
    statuses
}
