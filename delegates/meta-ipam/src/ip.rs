//! Small address helpers shared by the host-local and static IPAMs.

use cni_core::{Error, Result};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The reference plugins' `canonicalizeIP`: an IPv4-mapped IPv6 address is IPv4.
pub(crate) fn canon(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address as a number (IPv4 in the low 32 bits).
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a number in the family of `like`.
pub(crate) fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        // Truncation is intended: IPv4 arithmetic stays within 32 bits.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The next address (wrapping, like the reference's `ip.NextIP`).
pub(crate) fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

/// Parses an address given either bare (`10.1.2.3`) or with a prefix (`10.1.2.3/24`,
/// the prefix is ignored), as the reference's `ip.IP` type does; canonicalized.
pub(crate) fn parse_ip_or_cidr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canon(ip));
    }
    s.parse::<IpNet>().ok().map(|n| canon(n.addr()))
}

/// An optional string field of a JSON object; code 7 naming `path.key` when it is not a
/// string. `null` is absent.
pub(crate) fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(Error::config(format!(
            "{path}.{key} must be a string, got {other}"
        ))),
    }
}

/// An optional address field; code 7 naming the field and value when it does not parse.
pub(crate) fn opt_ip(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>> {
    match opt_str(obj, key, path)? {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<IpAddr>()
            .map(|ip| Some(canon(ip)))
            .map_err(|_| Error::config(format!("{path}.{key}: invalid IP address {s:?}"))),
    }
}

/// An optional array of strings (`args.cni.ips`, `runtimeConfig.ips`).
pub(crate) fn opt_str_list(v: Option<&Value>, path: &str) -> Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(Error::config(format!(
                    "{path}[{i}] must be a string, got {other}"
                ))),
            })
            .collect(),
        Some(other) => Err(Error::config(format!(
            "{path} must be a list of strings, got {other}"
        ))),
    }
}

/// Parses `ipam.routes` (code 7 naming the entry on error). Unknown keys are dropped, as
/// the reference plugins do.
pub(crate) fn parse_routes(v: Option<&Value>, path: &str) -> Result<Vec<cni_core::Route>> {
    let arr = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(Error::config(format!(
                "{path} must be a list of routes, got {other}"
            )));
        }
    };
    arr.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut route: cni_core::Route = serde_json::from_value(r.clone())
                .map_err(|e| Error::config(format!("{path}[{i}]: invalid route {r}: {e}")))?;
            route.extra.clear();
            Ok(route)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        let a: IpAddr = "10.0.0.255".parse().unwrap();
        assert_eq!(next_ip(a).to_string(), "10.0.1.0");
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(canon(m).to_string(), "10.0.0.1");
        assert_eq!(
            from_u128(to_u128("fd00::ff".parse().unwrap()) + 1, m).to_string(),
            "fd00::100"
        );
        assert_eq!(
            parse_ip_or_cidr(" 10.1.2.3/24").unwrap().to_string(),
            "10.1.2.3"
        );
        assert!(parse_ip_or_cidr("nope").is_none());
        assert_eq!(
            next_ip("255.255.255.255".parse().unwrap()).to_string(),
            "0.0.0.0"
        );
    }
}
