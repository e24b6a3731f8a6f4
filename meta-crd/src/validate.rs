//! Validators and small value types shared by the annotation parsers (and by the webhook).
//!
//! Each `validate_*` function returns `Err(reason)` with a human sentence that names the value;
//! the parsers wrap it into [`crate::Error`] with the element index and field.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Maximum length of a DNS-1123 label (Kubernetes namespace names).
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Maximum length of a DNS-1123 subdomain (Kubernetes object names).
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Maximum length of a Linux interface name in bytes (`IFNAMSIZ - 1`).
pub const IFNAME_MAX_LEN: usize = 15;

const LABEL_RULE: &str = "must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn label_syntax_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.chars().all(is_label_char)
        && s.chars().next().is_some_and(alnum)
        && s.chars().last().is_some_and(alnum)
}

/// Checks `[a-z0-9]([-a-z0-9]*[a-z0-9])?` and a maximum length.
fn check_label(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if !label_syntax_ok(s) {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 label: it {LABEL_RULE}"
        ));
    }
    if s.len() > max {
        return Err(format!(
            "{s:?} is too long: must be no more than {max} characters, got {}",
            s.len()
        ));
    }
    Ok(())
}

/// A namespace name: a DNS-1123 label of at most 63 characters.
pub fn validate_namespace(s: &str) -> Result<(), String> {
    check_label(s, DNS1123_LABEL_MAX_LEN)
}

/// A network (NetworkAttachmentDefinition) name as referenced from a pod annotation.
///
/// NPWG v1 section 3.3 requires DNS-1123 label syntax (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, so no
/// dots, although Kubernetes itself would accept a dotted subdomain as an object name); the
/// length limit is the Kubernetes object-name limit of 253 (NPWG only *recommends* 63).
pub fn validate_network_name(s: &str) -> Result<(), String> {
    check_label(s, DNS1123_SUBDOMAIN_MAX_LEN)
}

/// A DNS-1123 subdomain (Kubernetes object names such as an IPAMClaim's): dot-separated
/// labels, at most 253 characters.
pub fn validate_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        return Err(format!(
            "{s:?} is too long: must be no more than {DNS1123_SUBDOMAIN_MAX_LEN} characters, got {}",
            s.len()
        ));
    }
    if !s.split('.').all(label_syntax_ok) {
        return Err(format!(
            "{s:?} is not a valid DNS-1123 subdomain: each '.'-separated part {LABEL_RULE}"
        ));
    }
    Ok(())
}

/// A Linux network interface name, by the kernel's `dev_valid_name()` rules: 1 to 15 bytes,
/// not `.` or `..`, and no `/`, `:`, whitespace or NUL.
pub fn validate_interface_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("interface name must not be empty".to_string());
    }
    if s.len() > IFNAME_MAX_LEN {
        return Err(format!(
            "{s:?} is too long: an interface name is at most {IFNAME_MAX_LEN} bytes, got {}",
            s.len()
        ));
    }
    if s == "." || s == ".." {
        return Err(format!("{s:?} is not a valid interface name"));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        let shown = match c {
            '/' | ':' => format!("'{c}'"),
            '\0' => "a NUL byte".to_string(),
            _ => "whitespace".to_string(),
        };
        return Err(format!(
            "{s:?} contains {shown}: interface names cannot contain '/', ':' or whitespace"
        ));
    }
    Ok(())
}

/// A hardware address as Go's `net.ParseMAC` accepts it: 6 (Ethernet MAC), 8 (EUI-64,
/// InfiniBand GUID) or 20 (IP over InfiniBand) bytes, written as `xx:xx:..`, `xx-xx-..` or
/// `xxxx.xxxx...`. Displays (and serializes) as lower-case colon-separated hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HwAddr(Vec<u8>);

impl HwAddr {
    /// The address bytes (6, 8 or 20 of them).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(hex_val(hi)? << 4 | hex_val(lo)?)
}

impl FromStr for HwAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            Err(format!(
                "{s:?} is not a valid hardware address: expected 6, 8 or 20 hex bytes such as \"02:00:5e:10:00:01\""
            ))
        };
        let b = s.as_bytes();
        if b.len() < 14 {
            return bad();
        }
        let mut out = Vec::new();
        if b[2] == b':' || b[2] == b'-' {
            if !(b.len() + 1).is_multiple_of(3) {
                return bad();
            }
            let n = (b.len() + 1) / 3;
            if n != 6 && n != 8 && n != 20 {
                return bad();
            }
            let sep = b[2];
            for i in 0..n {
                let x = i * 3;
                let Some(v) = hex_byte(b[x], b[x + 1]) else {
                    return bad();
                };
                if x + 2 < b.len() && b[x + 2] != sep {
                    return bad();
                }
                out.push(v);
            }
        } else if b[4] == b'.' {
            if !(b.len() + 1).is_multiple_of(5) {
                return bad();
            }
            let n = 2 * (b.len() + 1) / 5;
            if n != 6 && n != 8 && n != 20 {
                return bad();
            }
            for i in 0..n / 2 {
                let x = i * 5;
                let (Some(v1), Some(v2)) = (hex_byte(b[x], b[x + 1]), hex_byte(b[x + 2], b[x + 3]))
                else {
                    return bad();
                };
                if x + 4 < b.len() && b[x + 4] != b'.' {
                    return bad();
                }
                out.push(v1);
                out.push(v2);
            }
        } else {
            return bad();
        }
        Ok(HwAddr(out))
    }
}

impl fmt::Display for HwAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for HwAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HwAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One entry of a selection element's `ips`: a plain address or an address with a prefix
/// length, as Multus accepts them (`net.ParseIP`, or `net.ParseCIDR` when the text has a `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpRequest {
    /// A bare address, e.g. `10.1.1.5`.
    Address(IpAddr),
    /// An address with a prefix length, e.g. `10.1.1.5/24` (host bits are kept).
    Cidr(IpNet),
}

impl IpRequest {
    /// The requested address, whichever the form.
    pub fn addr(&self) -> IpAddr {
        match self {
            IpRequest::Address(a) => *a,
            IpRequest::Cidr(n) => n.addr(),
        }
    }
}

impl FromStr for IpRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('/') {
            s.parse::<IpNet>()
                .map(IpRequest::Cidr)
                .map_err(|_| format!("{s:?} is not a valid CIDR"))
        } else {
            s.parse::<IpAddr>()
                .map(IpRequest::Address)
                .map_err(|_| format!("{s:?} is not a valid IP address"))
        }
    }
}

impl fmt::Display for IpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpRequest::Address(a) => write!(f, "{a}"),
            IpRequest::Cidr(n) => write!(f, "{}/{}", n.addr(), n.prefix_len()),
        }
    }
}

impl Serialize for IpRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A bare IP address as Go's `net.ParseIP` accepts it (no prefix, no zone).
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not a valid IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(validate_namespace("a").is_ok());
        assert!(validate_namespace("a-0").is_ok());
        assert!(validate_namespace(&"a".repeat(63)).is_ok());
        assert!(validate_namespace(&"a".repeat(64)).is_err());
        assert!(validate_network_name(&"a".repeat(253)).is_ok());
        assert!(validate_network_name(&"a".repeat(254)).is_err());
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "a b", "é"] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
            assert!(validate_network_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_dns1123_subdomain("a.b-c.d").is_ok());
        assert!(validate_dns1123_subdomain("a..b").is_err());
        assert!(validate_dns1123_subdomain(".a").is_err());
    }

    #[test]
    fn ifnames() {
        for ok in [
            "net1",
            "eth0.100",
            "a",
            "123456789012345",
            "veth-x_y@z",
            "ä",
        ] {
            assert!(validate_interface_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\0",
            "a\u{a0}b",
        ] {
            assert!(validate_interface_name(bad).is_err(), "{bad:?}");
        }
        // 15 bytes, not characters
        assert!(validate_interface_name(&"ä".repeat(8)).is_err());
    }

    #[test]
    fn hwaddrs() {
        let ok = [
            ("00:00:5e:00:53:01", "00:00:5e:00:53:01"),
            ("00-00-5E-00-53-01", "00:00:5e:00:53:01"),
            ("0000.5e00.5301", "00:00:5e:00:53:01"),
            ("02:00:5e:10:00:00:00:01", "02:00:5e:10:00:00:00:01"),
            ("0200.5e10.0000.0001", "02:00:5e:10:00:00:00:01"),
            (
                "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
                "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
            ),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<HwAddr>().unwrap().to_string(), want, "{s}");
        }
        for bad in [
            "",
            "00:00:5e:00:53",
            "00:00:5e:00:53:01:02",
            "00:00:5e-00:53:01",
            "0:00:5e:00:53:01",
            "00:00:5e:00:53:0g",
            "00:00:5e:00:53:01:",
            "0000.5e00.530",
            "0000:5e00:5301",
            "00005e005301",
            "ab:cd:ef:01:23:4é",
        ] {
            assert!(bad.parse::<HwAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ip_requests() {
        assert_eq!(
            "10.1.1.5/24".parse::<IpRequest>().unwrap().to_string(),
            "10.1.1.5/24"
        );
        assert_eq!(
            "2001:DB8::1".parse::<IpRequest>().unwrap().to_string(),
            "2001:db8::1"
        );
        for bad in [
            "10.1.1.256",
            "10.1.1.0/33",
            "010.1.1.1",
            "fe80::1%eth0",
            "",
            "/24",
        ] {
            assert!(bad.parse::<IpRequest>().is_err(), "{bad:?}");
        }
    }
}
