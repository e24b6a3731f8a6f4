//! CNI spec versions: parsing, ordering, negotiation.

use crate::error::{Error, code};
use std::fmt;

/// A CNI spec version this crate knows. Ordering follows the spec's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.1.0 (legacy result format; results only).
    V0_1_0,
    /// 0.2.0 (legacy result format; results only).
    V0_2_0,
    /// 0.3.0
    V0_3_0,
    /// 0.3.1
    V0_3_1,
    /// 0.4.0 (adds CHECK)
    V0_4_0,
    /// 1.0.0
    V1_0_0,
    /// 1.1.0 (adds STATUS, GC, interface mtu/socketPath/pciID, route mtu/advmss/priority/table/scope)
    V1_1_0,
}

/// The versions our plugins speak, oldest first.
pub const SUPPORTED: &[Version] = &[
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

/// Every version this crate knows, oldest first: what a meta plugin accepts in the
/// configurations it hands to delegates (libcni runs 0.1.0/0.2.0 plugins too).
pub const KNOWN: &[Version] = &[
    Version::V0_1_0,
    Version::V0_2_0,
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

/// The newest version.
pub const LATEST: Version = Version::V1_1_0;

impl Version {
    /// Parses "1.0.0" etc.
    pub fn parse(s: &str) -> Option<Version> {
        Some(match s {
            "0.1.0" => Version::V0_1_0,
            "0.2.0" => Version::V0_2_0,
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            _ => return None,
        })
    }
    /// The canonical string.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }
    /// Whether results of this version carry `ips[].version`.
    pub fn ips_have_version(self) -> bool {
        matches!(self, Version::V0_3_0 | Version::V0_3_1 | Version::V0_4_0)
    }
    /// Whether results of this version use the legacy `ip4`/`ip6` shape.
    pub fn is_legacy(self) -> bool {
        matches!(self, Version::V0_1_0 | Version::V0_2_0)
    }
    /// Whether our plugins accept configurations of this version.
    pub fn is_supported(self) -> bool {
        SUPPORTED.contains(&self)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The supported versions as strings.
pub fn supported_strings() -> Vec<&'static str> {
    SUPPORTED.iter().map(|v| v.as_str()).collect()
}

/// Negotiates a configuration's `cniVersion` against [`SUPPORTED`]: code 1 listing the
/// supported versions when it is unknown or unsupported. An empty version is "0.1.0", as
/// in libcni.
pub fn negotiate(conf_version: &str) -> Result<Version, Error> {
    negotiate_in(conf_version, SUPPORTED)
}

/// [`negotiate`] against another set of versions (e.g. [`KNOWN`]); the error lists them.
pub fn negotiate_in(conf_version: &str, accepted: &[Version]) -> Result<Version, Error> {
    let shown = if conf_version.is_empty() {
        "0.1.0 (cniVersion missing)"
    } else {
        conf_version
    };
    match Version::parse(if conf_version.is_empty() {
        "0.1.0"
    } else {
        conf_version
    }) {
        Some(v) if accepted.contains(&v) => Ok(v),
        _ => Err(
            Error::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                format!(
                    "config is {shown:?}, plugin supports [{}]",
                    accepted
                        .iter()
                        .map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        ),
    }
}

/// The VERSION verb's output.
pub fn version_info(cni_version: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": supported_strings(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_roundtrip_and_order() {
        for v in SUPPORTED {
            assert_eq!(Version::parse(v.as_str()), Some(*v));
        }
        assert!(Version::V0_3_1 < Version::V0_4_0);
        assert!(Version::V1_0_0 < Version::V1_1_0);
        assert_eq!(Version::parse("1.2.0"), None);
        assert_eq!(Version::parse(""), None);
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate("1.0.0").unwrap(), Version::V1_0_0);
        let e = negotiate("0.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.details.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            "{}",
            e.details
        );
        let e = negotiate("").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.details.contains("missing"));
        assert_eq!(negotiate("9.9.9").unwrap_err().code, 1);
        // What a meta plugin hands to delegates: the legacy versions too, and a missing
        // version is 0.1.0 as in libcni.
        assert_eq!(negotiate_in("0.2.0", KNOWN).unwrap(), Version::V0_2_0);
        assert_eq!(negotiate_in("", KNOWN).unwrap(), Version::V0_1_0);
        let e = negotiate_in("9.9.9", KNOWN).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.details.contains("0.1.0, 0.2.0, 0.3.0"), "{e:?}");
    }

    #[test]
    fn version_output() {
        let v = version_info("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
    }
}
