//! Attachment tags: the comments that identify the rules of one attachment.
//!
//! Formats (fields separated by `:`, which can occur neither in a container ID nor in an
//! interface name accepted here):
//!
//! * masquerade: `meta-cni:masq:<network-hash>:<ifname>:<container-id>`;
//! * MAC spoof check: `meta-cni:mac:<network-hash>:<ifname>:<container-id>`;
//!
//! where `<network-hash>` is [`network_hash`] of the network name (16 lowercase hex
//! digits). Both kinds therefore identify an attachment by network, container ID and
//! interface name, which lets garbage collection act on one network only.
//!
//! nftables limits comments to [`MAX_COMMENT_LEN`] bytes, which bounds the container ID
//! length: with a 15-byte interface name, at most 81 bytes for masquerade tags
//! (128 - 47 bytes of `meta-cni:masq:<16 hex>:<ifname>:`) and 82 bytes for MAC
//! spoof-check tags (128 - 46 bytes of `meta-cni:mac:<16 hex>:<ifname>:`); shorter
//! interface names leave correspondingly more room. 64-hex-digit IDs always fit; longer
//! IDs are rejected with [`Error::InvalidInput`].

use std::fmt;

use crate::error::{Error, Result};

/// Prefix of every comment this crate writes.
pub const TAG_PREFIX: &str = "meta-cni";
/// Longest comment nftables accepts from its parser.
pub const MAX_COMMENT_LEN: usize = 128;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Identifies the rules created for one attachment of one feature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tag {
    /// Masquerade rules of `container_id`/`ifname` on the network whose name hashes to
    /// `network_hash`.
    Masq {
        /// [`network_hash`] of the network name.
        network_hash: String,
        /// Container ID.
        container_id: String,
        /// Container-side interface name.
        ifname: String,
    },
    /// MAC spoof-check rules of `container_id`/`ifname` on the network whose name hashes
    /// to `network_hash`.
    MacSpoofChk {
        /// [`network_hash`] of the network name.
        network_hash: String,
        /// Container ID.
        container_id: String,
        /// Container-side interface name.
        ifname: String,
    },
}

impl Tag {
    /// Builds a validated masquerade tag.
    pub fn masq(network: &str, container_id: &str, ifname: &str) -> Result<Tag> {
        validate_container_id(container_id)?;
        validate_ifname("ifname", ifname)?;
        let tag = Tag::Masq {
            network_hash: network_hash(network),
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        };
        tag.check_len()?;
        Ok(tag)
    }

    /// Builds a validated MAC spoof-check tag.
    pub fn mac_spoof_chk(network: &str, container_id: &str, ifname: &str) -> Result<Tag> {
        validate_container_id(container_id)?;
        validate_ifname("ifname", ifname)?;
        let tag = Tag::MacSpoofChk {
            network_hash: network_hash(network),
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        };
        tag.check_len()?;
        Ok(tag)
    }

    fn check_len(&self) -> Result<()> {
        let len = self.to_string().len();
        if len > MAX_COMMENT_LEN {
            return Err(Error::InvalidInput(format!(
                "container ID too long: the rule comment `{self}` would be {len} bytes, \
                 nftables allows {MAX_COMMENT_LEN}"
            )));
        }
        Ok(())
    }

    /// Parses a rule comment; `None` if it is not a tag written by this crate.
    pub fn parse(comment: &str) -> Option<Tag> {
        let mut parts = comment.split(':');
        if parts.next()? != TAG_PREFIX {
            return None;
        }
        let kind = parts.next()?;
        let network_hash = parts.next()?;
        let ifname = parts.next()?.to_owned();
        let container_id = parts.next()?.to_owned();
        if network_hash.len() != 16
            || !network_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let network_hash = network_hash.to_owned();
        let tag = match kind {
            "masq" => Tag::Masq {
                network_hash,
                container_id,
                ifname,
            },
            "mac" => Tag::MacSpoofChk {
                network_hash,
                container_id,
                ifname,
            },
            _ => return None,
        };
        if parts.next().is_some()
            || validate_container_id(tag.container_id()).is_err()
            || validate_ifname("ifname", tag.ifname()).is_err()
        {
            return None;
        }
        Some(tag)
    }

    /// The [`network_hash`] of the attachment's network name.
    pub fn network_hash(&self) -> &str {
        match self {
            Tag::Masq { network_hash, .. } | Tag::MacSpoofChk { network_hash, .. } => network_hash,
        }
    }

    /// The container ID of the attachment.
    pub fn container_id(&self) -> &str {
        match self {
            Tag::Masq { container_id, .. } | Tag::MacSpoofChk { container_id, .. } => container_id,
        }
    }

    /// The container-side interface name of the attachment.
    pub fn ifname(&self) -> &str {
        match self {
            Tag::Masq { ifname, .. } | Tag::MacSpoofChk { ifname, .. } => ifname,
        }
    }

    /// Whether garbage collection of the network whose [`network_hash`] is
    /// `network_hash`, keeping the `(container_id, ifname)` pairs of `valid`, removes this
    /// tag's rules: it belongs to that network and its attachment is not valid.
    pub(crate) fn is_garbage(
        &self,
        network_hash: &str,
        valid: &std::collections::HashSet<(String, String)>,
    ) -> bool {
        // HashSet<(String, String)> cannot be probed with borrowed strs; the copy is cheap.
        self.network_hash() == network_hash
            && !valid.contains(&(self.container_id().to_owned(), self.ifname().to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tag::Masq {
                network_hash,
                container_id,
                ifname,
            } => write!(
                f,
                "{TAG_PREFIX}:masq:{network_hash}:{ifname}:{container_id}"
            ),
            Tag::MacSpoofChk {
                network_hash,
                container_id,
                ifname,
            } => write!(f, "{TAG_PREFIX}:mac:{network_hash}:{ifname}:{container_id}"),
        }
    }
}

/// 64-bit FNV-1a; stable across Rust versions and platforms (unlike `DefaultHasher`).
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The 16-hex-digit hash of a network name used in tags (network names are arbitrary
/// strings, so they are hashed instead of embedded). FNV-1a 64: stable, not
/// cryptographic; a collision would need two networks with the same container ID and
/// interface name *and* colliding names.
pub fn network_hash(network: &str) -> String {
    format!("{:016x}", fnv1a64(network.as_bytes()))
}

/// Checks a container ID against `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn validate_container_id(id: &str) -> Result<()> {
    let mut bytes = id.bytes();
    let ok = match bytes.next() {
        Some(first) => {
            first.is_ascii_alphanumeric()
                && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "container ID {id:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
        )))
    }
}

/// Checks an interface name: 1..=15 bytes, no `/`, `:`, whitespace or NUL, not `.`/`..`.
pub fn validate_ifname(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if bad {
        Err(Error::InvalidInput(format!(
            "{what} {name:?} is not a valid interface name (1-{MAX_IFNAME_LEN} bytes, no '/', \
             ':' or whitespace)"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let t = Tag::masq("my net/with:colons", "abc-1.2_3", "eth0").unwrap();
        let s = t.to_string();
        assert_eq!(
            s,
            format!(
                "meta-cni:masq:{}:eth0:abc-1.2_3",
                network_hash("my net/with:colons")
            )
        );
        assert_eq!(Tag::parse(&s), Some(t.clone()));
        let m = Tag::mac_spoof_chk("my net", "c1", "net1").unwrap();
        let s = m.to_string();
        assert_eq!(
            s,
            format!("meta-cni:mac:{}:net1:c1", network_hash("my net"))
        );
        assert_eq!(Tag::parse(&s), Some(m.clone()));
        assert_eq!(m.network_hash(), network_hash("my net"));
        assert_eq!(t.network_hash(), network_hash("my net/with:colons"));
        // the same attachment on two networks has two distinct tags
        assert_ne!(m, Tag::mac_spoof_chk("other net", "c1", "net1").unwrap());
    }

    #[test]
    fn garbage_is_per_network() {
        let valid = std::collections::HashSet::from([("c1".to_owned(), "eth0".to_owned())]);
        let (a, b) = (network_hash("a"), network_hash("b"));
        for tag in [
            Tag::masq("a", "c2", "eth0").unwrap(),
            Tag::mac_spoof_chk("a", "c2", "eth0").unwrap(),
            Tag::masq("a", "c1", "eth1").unwrap(),
        ] {
            assert!(tag.is_garbage(&a, &valid), "{tag}");
            assert!(!tag.is_garbage(&b, &valid), "{tag}");
        }
        for tag in [
            Tag::masq("a", "c1", "eth0").unwrap(),
            Tag::mac_spoof_chk("a", "c1", "eth0").unwrap(),
        ] {
            assert!(!tag.is_garbage(&a, &valid), "{tag}");
            assert!(!tag.is_garbage(&b, &valid), "{tag}");
        }
    }

    #[test]
    fn parse_rejects_foreign() {
        for c in [
            "",
            "meta-cni",
            "meta-cni:base",
            "meta-cni:mac:eth0",
            // the pre-network MAC format is not ours any more
            "meta-cni:mac:eth0:c1",
            "meta-cni:mac:0123456789abcdef:eth0",
            "meta-cni:mac:0123456789abcdef:eth0:c1:extra",
            "meta-cni:mac:0123456789abcdef::c1",
            "meta-cni:mac:0123456789abcdef:eth0:-c1",
            "meta-cni:mac:0123456789abcdeF:eth0:c1",
            "meta-cni:nope:0123456789abcdef:eth0:c1",
            "meta-cni:masq:XYZ:eth0:c1",
            "meta-cni:masq:0123456789abcdeF:eth0:c1",
            "other:mac:0123456789abcdef:eth0:c1",
            "meta-cni:mac:0123456789abcdef:waytoolonginterfacename:c1",
        ] {
            assert_eq!(Tag::parse(c), None, "{c}");
        }
    }

    #[test]
    fn validation() {
        assert!(validate_container_id("").is_err());
        assert!(validate_container_id("_a").is_err());
        assert!(validate_container_id("a:b").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_container_id("A0_.-").is_ok());
        assert!(validate_ifname("x", "eth0").is_ok());
        assert!(validate_ifname("x", "").is_err());
        assert!(validate_ifname("x", "a b").is_err());
        assert!(validate_ifname("x", "a/b").is_err());
        assert!(validate_ifname("x", "a:b").is_err());
        assert!(validate_ifname("x", "0123456789abcdef").is_err());
        assert!(validate_ifname("x", "0123456789abcde").is_ok());
        // 64 hex digits always fit
        let id = "f".repeat(64);
        assert!(Tag::masq("n", &id, "0123456789abcde").is_ok());
        assert!(Tag::mac_spoof_chk("n", &id, "0123456789abcde").is_ok());
        // documented bounds with a 15-byte ifname: 81 (masq) and 82 (mac) bytes
        let ifname = "0123456789abcde";
        let t = Tag::masq("n", &"f".repeat(81), ifname).unwrap();
        assert_eq!(t.to_string().len(), MAX_COMMENT_LEN);
        let t = Tag::mac_spoof_chk("n", &"f".repeat(82), ifname).unwrap();
        assert_eq!(t.to_string().len(), MAX_COMMENT_LEN);
        assert!(matches!(
            Tag::masq("n", &"f".repeat(82), ifname),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            Tag::mac_spoof_chk("n", &"f".repeat(83), ifname),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(network_hash(""), "cbf29ce484222325");
    }
}
