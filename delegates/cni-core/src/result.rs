//! CNI results: one canonical (1.1.0) model, parsed from and emitted in any version.

use crate::error::{Error, Result};
use crate::version::Version;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// An interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address ("aa:bb:cc:dd:ee:ff"), may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Path of the sandbox (netns) the interface lives in; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// vhost-user socket path (1.1.0+).
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// PCI ID (1.1.0+).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    /// Unknown keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An IP configuration of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length (host bits kept: `10.1.2.3/24`).
    pub address: IpNet,
    /// Gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Unknown keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A route of a result or of an IPAM configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the interface's default gateway (or on-link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// MTU (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Priority / metric (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Table (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
    /// Unknown keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Route {
    /// A plain route.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
            extra: Map::new(),
        }
    }
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A result, in the canonical (1.1.0) model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// IP configurations.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
    /// Unknown top-level keys, kept.
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    interfaces: Option<Vec<Interface>>,
    #[serde(default)]
    ips: Option<Vec<RawIp>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawIp {
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
    #[serde(flatten)]
    ip: IpConfig,
}

#[derive(Deserialize)]
struct LegacyIp {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Deserialize)]
struct LegacyRaw {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Option<Dns>,
}

impl CniResult {
    /// Parses a result of any known version (its own `cniVersion` field decides; legacy
    /// 0.1.0/0.2.0 `ip4`/`ip6` results are converted up).
    pub fn from_value(v: &Value) -> Result<CniResult> {
        let obj = v
            .as_object()
            .ok_or_else(|| Error::decode("result is not a JSON object"))?;
        let ver = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        let version = Version::parse(ver);
        let legacy = match version {
            Some(v) => v.is_legacy(),
            None => obj.contains_key("ip4") || obj.contains_key("ip6"),
        };
        if legacy {
            let l: LegacyRaw = serde_json::from_value(v.clone())
                .map_err(|e| Error::decode(format!("failed to decode {ver} result: {e}")))?;
            let mut r = CniResult {
                dns: l.dns.unwrap_or_default(),
                ..Default::default()
            };
            for ip in [l.ip4, l.ip6].into_iter().flatten() {
                r.ips.push(IpConfig {
                    address: ip.ip,
                    gateway: ip.gateway,
                    interface: None,
                    extra: Map::new(),
                });
                r.routes.extend(ip.routes);
            }
            return Ok(r);
        }
        let raw: Raw = serde_json::from_value(v.clone())
            .map_err(|e| Error::decode(format!("failed to decode result: {e}")))?;
        let mut extra = raw.extra;
        extra.remove("cniVersion");
        let r = CniResult {
            interfaces: raw.interfaces.unwrap_or_default(),
            ips: raw
                .ips
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.ip)
                .collect(),
            routes: raw.routes.unwrap_or_default(),
            dns: raw.dns.unwrap_or_default(),
            extra,
        };
        for ip in &r.ips {
            if let Some(i) = ip.interface
                && i >= r.interfaces.len()
            {
                return Err(Error::decode(format!(
                    "result ip {} names interface index {i}, but there are {} interfaces",
                    ip.address,
                    r.interfaces.len()
                )));
            }
        }
        Ok(r)
    }

    /// Parses a result from bytes.
    pub fn from_slice(b: &[u8]) -> Result<CniResult> {
        let v: Value = serde_json::from_slice(b)
            .map_err(|e| Error::decode(format!("failed to decode result JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// Emits the result in `version` (fields a version does not know are dropped;
    /// 0.3.x/0.4.0 get `ips[].version`; 0.1.0/0.2.0 get the legacy shape).
    pub fn to_value(&self, version: Version) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), version.as_str().into());
        if version.is_legacy() {
            let pick = |v4: bool| {
                let ip = self.ips.iter().find(|i| i.address.addr().is_ipv4() == v4)?;
                let mut o = Map::new();
                o.insert("ip".into(), Value::String(ip.address.to_string()));
                if let Some(g) = ip.gateway {
                    o.insert("gateway".into(), Value::String(g.to_string()));
                }
                let routes: Vec<Value> = self
                    .routes
                    .iter()
                    .filter(|r| r.dst.addr().is_ipv4() == v4)
                    .map(|r| route_value(r, version))
                    .collect();
                if !routes.is_empty() {
                    o.insert("routes".into(), Value::Array(routes));
                }
                Some(Value::Object(o))
            };
            if let Some(v) = pick(true) {
                m.insert("ip4".into(), v);
            }
            if let Some(v) = pick(false) {
                m.insert("ip6".into(), v);
            }
            m.insert(
                "dns".into(),
                serde_json::to_value(&self.dns).unwrap_or_default(),
            );
            return Value::Object(m);
        }
        let new_fields = version >= Version::V1_1_0;
        if !self.interfaces.is_empty() {
            let ifs = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if !new_fields {
                        i.mtu = None;
                        i.socket_path = None;
                        i.pci_id = None;
                    }
                    serde_json::to_value(i).unwrap_or_default()
                })
                .collect();
            m.insert("interfaces".into(), Value::Array(ifs));
        }
        if !self.ips.is_empty() {
            let ips = self
                .ips
                .iter()
                .map(|ip| {
                    let mut o = Map::new();
                    if version.ips_have_version() {
                        let fam = if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        o.insert("version".into(), fam.into());
                    }
                    if let Some(i) = ip.interface {
                        o.insert("interface".into(), i.into());
                    }
                    o.insert("address".into(), Value::String(ip.address.to_string()));
                    if let Some(g) = ip.gateway {
                        o.insert("gateway".into(), Value::String(g.to_string()));
                    }
                    for (k, v) in &ip.extra {
                        o.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    Value::Object(o)
                })
                .collect();
            m.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes = self
                .routes
                .iter()
                .map(|r| route_value(r, version))
                .collect();
            m.insert("routes".into(), Value::Array(routes));
        }
        // Like the reference plugins (Go's omitempty does not omit structs), dns is always there.
        m.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).unwrap_or_default(),
        );
        for (k, v) in &self.extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(m)
    }

    /// Index of an interface by name and sandbox.
    pub fn interface_index(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox == sandbox)
    }
}

fn route_value(r: &Route, version: Version) -> Value {
    let mut r = r.clone();
    if version < Version::V1_1_0 {
        r.mtu = None;
        r.advmss = None;
        r.priority = None;
        r.table = None;
        r.scope = None;
    }
    serde_json::to_value(r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1450},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/p", "pciID": "0000:00:01.0"}
            ],
            "ips": [
                {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                {"interface": 2, "address": "fd00::5/64"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400, "table": 100},
                {"dst": "fd00:1::/64"}
            ],
            "dns": {"nameservers": ["10.1.0.53"]},
            "x-vendor": {"k": 1}
        })
    }

    #[test]
    fn roundtrip_latest() {
        let r = CniResult::from_value(&sample()).unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.5/24");
        assert_eq!(r.to_value(Version::V1_1_0), sample());
    }

    #[test]
    fn down_conversion_drops_new_fields_and_adds_ip_version() {
        let r = CniResult::from_value(&sample()).unwrap();
        let v = r.to_value(Version::V0_4_0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["interfaces"][2].get("pciID").is_none());
        assert_eq!(
            v["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.1.0.1"})
        );
        let v1 = r.to_value(Version::V1_0_0);
        assert!(v1["ips"][0].get("version").is_none());
        // up again: nothing lost but what 0.4.0 cannot carry
        let back = CniResult::from_value(&v).unwrap();
        assert_eq!(back.ips, r.ips);
        assert_eq!(back.to_value(Version::V0_4_0), v);
    }

    #[test]
    fn legacy_results() {
        let v = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
            "routes": [{"dst": "0.0.0.0/0"}]}, "dns": {}});
        let r = CniResult::from_value(&v).unwrap();
        assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.0.0.1");
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.to_value(Version::V0_2_0)["ip4"]["ip"], "10.0.0.2/24");
    }

    #[test]
    fn empty_result_keeps_dns() {
        let v = CniResult::default().to_value(Version::V1_0_0);
        assert_eq!(v, json!({"cniVersion": "1.0.0", "dns": {}}));
    }

    #[test]
    fn bad_results() {
        assert_eq!(CniResult::from_value(&json!([])).unwrap_err().code, 6);
        let bad_if =
            json!({"cniVersion": "1.0.0", "ips": [{"interface": 3, "address": "10.0.0.1/8"}]});
        assert_eq!(CniResult::from_value(&bad_if).unwrap_err().code, 6);
        let bad_ip = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/8"}]});
        assert_eq!(CniResult::from_value(&bad_ip).unwrap_err().code, 6);
    }
}
