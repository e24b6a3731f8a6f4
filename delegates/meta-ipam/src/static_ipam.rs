//! The static IPAM (reference `static`): addresses, routes and DNS straight from the
//! configuration, optionally replaced by the runtime.

use crate::ip::{opt_str, opt_str_list, parse_routes};
use cni_core::{CniArgs, CniResult, Dns, Error, IpConfig, NetConf, Result};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The static configuration, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    /// Addresses (host bits kept) with their gateways.
    pub addresses: Vec<(IpNet, Option<IpAddr>)>,
    /// Routes, as configured.
    pub routes: Vec<cni_core::Route>,
    /// DNS, as configured.
    pub dns: Dns,
}

fn parse_cidr(s: &str, field: &str, env: bool) -> Result<IpNet> {
    s.trim().parse::<IpNet>().map_err(|_| {
        let msg = format!("{field}: invalid CIDR {s:?} (want address/prefix, e.g. 10.1.2.3/24)");
        if env {
            Error::env(msg)
        } else {
            Error::config(msg)
        }
    })
}

impl StaticConfig {
    /// Resolves the addresses with the reference's precedence: `ipam.addresses`, plus
    /// `CNI_ARGS` `IP=` (comma-separated CIDRs, appended); `GATEWAY=` (comma-separated)
    /// sets the gateway of every `CNI_ARGS` address whose subnet contains it; `args.cni.ips` replaces
    /// all of those, and `runtimeConfig.ips` replaces everything. Errors are code 7 naming
    /// the field and value (code 4 for `CNI_ARGS` values).
    pub fn from_conf(conf: &NetConf, args: &CniArgs) -> Result<StaticConfig> {
        let ipam = match conf.get("ipam") {
            None => return Err(Error::config("IPAM config missing 'ipam' key")),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(Error::config(format!(
                    "ipam must be an object, got {other}"
                )));
            }
        };
        let mut addresses: Vec<(IpNet, Option<IpAddr>)> = Vec::new();
        match ipam.get("addresses") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for (i, entry) in a.iter().enumerate() {
                    let path = format!("ipam.addresses[{i}]");
                    let obj: &Map<String, Value> = entry.as_object().ok_or_else(|| {
                        Error::config(format!("{path} must be an object, got {entry}"))
                    })?;
                    let Some(addr) = opt_str(obj, "address", &path)? else {
                        return Err(Error::config(format!("{path}.address is missing")));
                    };
                    let net = parse_cidr(addr, &format!("{path}.address"), false)?;
                    let gw = crate::ip::opt_ip(obj, "gateway", &path)?;
                    addresses.push((net, gw));
                }
            }
            Some(other) => {
                return Err(Error::config(format!(
                    "ipam.addresses must be a list of {{address, gateway}}, got {other}"
                )));
            }
        }
        let from_config = addresses.len();
        if let Some(raw) = args.get("IP").filter(|s| !s.is_empty()) {
            for item in raw.split(',') {
                addresses.push((parse_cidr(item, "CNI_ARGS IP", true)?, None));
            }
        }
        if let Some(raw) = args.get("GATEWAY").filter(|s| !s.is_empty()) {
            for item in raw.split(',') {
                let gw: IpAddr = item.trim().parse().map_err(|_| {
                    Error::env(format!(
                        "CNI_ARGS GATEWAY: invalid gateway address {item:?}"
                    ))
                })?;
                // As in the reference, GATEWAY applies to the CNI_ARGS addresses only.
                for (net, g) in addresses.iter_mut().skip(from_config) {
                    if net.contains(&gw) {
                        *g = Some(gw);
                    }
                }
            }
        }
        for (v, path) in [
            (conf.args_cni("ips"), "args.cni.ips"),
            (conf.runtime_config("ips"), "runtimeConfig.ips"),
        ] {
            let list = opt_str_list(v, path)?;
            if !list.is_empty() {
                addresses = list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Ok((parse_cidr(s, &format!("{path}[{i}]"), false)?, None)))
                    .collect::<Result<_>>()?;
            }
        }
        let routes = parse_routes(ipam.get("routes"), "ipam.routes")?;
        let dns = match ipam.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| Error::config(format!("ipam.dns: invalid DNS settings {v}: {e}")))?,
        };
        Ok(StaticConfig {
            addresses,
            routes,
            dns,
        })
    }

    /// The result: the addresses in order with their gateways, routes and DNS.
    pub fn result(&self) -> CniResult {
        CniResult {
            ips: self
                .addresses
                .iter()
                .map(|(net, gw)| IpConfig {
                    address: *net,
                    gateway: *gw,
                    interface: None,
                    extra: Map::new(),
                })
                .collect(),
            routes: self.routes.clone(),
            dns: self.dns.clone(),
            ..Default::default()
        }
    }

    /// The reference's CHECK: every configured address found in `prev` must carry the
    /// configured gateway (when one is configured). Code 999 otherwise.
    pub fn check(&self, prev: &CniResult, ifname: &str) -> Result<()> {
        for (net, gw) in &self.addresses {
            if let Some(found) = prev.ips.iter().find(|i| i.address.addr() == net.addr())
                && gw.is_some()
                && *gw != found.gateway
            {
                return Err(Error::internal(format!(
                    "static: address {} on interface {ifname} has gateway {}, configured {}",
                    net.addr(),
                    found
                        .gateway
                        .map(|g| g.to_string())
                        .unwrap_or_else(|| "none".into()),
                    gw.map(|g| g.to_string()).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

/// ADD of the static IPAM: the result for `conf` (its `ipam` object) and `CNI_ARGS`
/// (`IP=`, `GATEWAY=`), with `args.cni.ips` and `runtimeConfig.ips` taking precedence as
/// in the reference (see [`StaticConfig::from_conf`]).
pub fn static_result(conf: &NetConf, args: &CniArgs) -> Result<CniResult> {
    Ok(StaticConfig::from_conf(conf, args)?.result())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(j: Value, args: &str) -> Result<CniResult> {
        let nc = NetConf::parse(j.to_string().as_bytes()).unwrap();
        static_result(&nc, &CniArgs::parse(args).unwrap())
    }

    fn addrs(r: &CniResult) -> Vec<String> {
        r.ips
            .iter()
            .map(|i| {
                format!(
                    "{}|{}",
                    i.address,
                    i.gateway.map(|g| g.to_string()).unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn precedence() {
        let base = json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
            "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                          {"address": "3ffe:ffff:0:01ff::1/64"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}}});
        let r = run(base.clone(), "").unwrap();
        assert_eq!(
            addrs(&r),
            ["10.10.0.1/24|10.10.0.254", "3ffe:ffff:0:1ff::1/64|"]
        );
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.dns.domain, "example.com");
        let r = run(
            base.clone(),
            "IP=10.20.0.5/16, 3ffe::5/64;GATEWAY=10.20.0.1,3ffe:ffff:0:01ff::9",
        )
        .unwrap();
        assert_eq!(
            addrs(&r),
            [
                "10.10.0.1/24|10.10.0.254",
                "3ffe:ffff:0:1ff::1/64|",
                "10.20.0.5/16|10.20.0.1",
                "3ffe::5/64|"
            ]
        );
        let mut j = base.clone();
        j["args"] = json!({"cni": {"ips": ["10.30.0.1/24"]}});
        assert_eq!(
            addrs(&run(j.clone(), "IP=10.20.0.5/16").unwrap()),
            ["10.30.0.1/24|"]
        );
        j["runtimeConfig"] = json!({"ips": ["10.40.0.1/24", "fd::1/64"]});
        assert_eq!(addrs(&run(j, "").unwrap()), ["10.40.0.1/24|", "fd::1/64|"]);
    }

    #[test]
    fn errors() {
        let cases: Vec<(Value, &str, u32, &[&str])> = vec![
            (
                json!({"cniVersion": "1.0.0", "name": "n"}),
                "",
                7,
                &["ipam"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"addresses": [{"address": "10.0.0.1"}]}}),
                "",
                7,
                &["ipam.addresses[0].address", "10.0.0.1"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"addresses": [{"address": "10.0.0.1/24", "gateway": "x"}]}}),
                "",
                7,
                &["ipam.addresses[0].gateway", "\"x\""],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"addresses": [{}]}}),
                "",
                7,
                &["ipam.addresses[0].address", "missing"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}}),
                "IP=bad",
                4,
                &["CNI_ARGS IP", "bad"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}}),
                "GATEWAY=bad",
                4,
                &["CNI_ARGS GATEWAY", "bad"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}, "runtimeConfig": {"ips": ["1.2.3.4"]}}),
                "",
                7,
                &["runtimeConfig.ips[0]", "1.2.3.4"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}, "args": {"cni": {"ips": "x"}}}),
                "",
                7,
                &["args.cni.ips"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"routes": [{"dst": "x"}]}}),
                "",
                7,
                &["ipam.routes[0]"],
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"dns": {"nameservers": "x"}}}),
                "",
                7,
                &["ipam.dns"],
            ),
        ];
        for (j, args, code, needles) in cases {
            let e = run(j.clone(), args).unwrap_err();
            assert_eq!(e.code, code, "{j}: {e}");
            for n in needles {
                assert!(e.msg.contains(n), "{j}: {:?} lacks {n:?}", e.msg);
            }
        }
        // empty ipam is an empty result
        assert!(
            run(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {}}), "")
                .unwrap()
                .ips
                .is_empty()
        );
    }

    #[test]
    fn check_gateways() {
        let nc = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{"addresses":[{"address":"10.0.0.2/24","gateway":"10.0.0.1"}]}}"#).unwrap();
        let sc = StaticConfig::from_conf(&nc, &CniArgs::default()).unwrap();
        sc.check(&sc.result(), "eth0").unwrap();
        let mut other = sc.result();
        other.ips[0].gateway = None;
        assert!(sc.check(&other, "eth0").is_err());
        sc.check(&CniResult::default(), "eth0").unwrap();
    }
}
