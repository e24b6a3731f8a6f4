//! Procedures shared by all delegates, written against [`NetlinkOps`].

use std::io::Read;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::ops::NetlinkOps;
use crate::real::Netlink;

/// Waits until no address of link `index` is tentative (IPv6 DAD finished).
///
/// Fails with [`Error::Timeout`] after `timeout`, and with [`Error::Invalid`] as
/// soon as an address reports `dadfailed` (a duplicate exists on the link).
pub fn wait_addrs_not_tentative<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    index: u32,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let addrs = nl.addrs(Some(index))?;
        if let Some(a) = addrs.iter().find(|a| a.dadfailed) {
            return Err(Error::Invalid(format!(
                "duplicate address detection failed for {} on link {index}",
                a.addr
            )));
        }
        let tentative: Vec<String> = addrs
            .iter()
            .filter(|a| a.tentative)
            .map(|a| a.addr.to_string())
            .collect();
        if tentative.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout(format!(
                "addresses {} on link {index} still tentative after {timeout:?}",
                tentative.join(", ")
            )));
        }
        std::thread::sleep(
            Duration::from_millis(50)
                .min(timeout.saturating_sub(start.elapsed()))
                .max(Duration::from_millis(1)),
        );
    }
}

/// `"veth"` + 8 random hex characters (from `/dev/urandom`), like the reference plugins.
pub fn random_veth_name() -> String {
    let mut b = [0u8; 4];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Extremely unlikely; fall back to time and pid so we still get a name.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (t ^ std::process::id().rotate_left(16)).to_ne_bytes();
    }
    format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_link_local()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Deletes link `name` in `ns` and returns the global unicast addresses it had
/// (like the reference plugins' `DelLinkByNameAddr`).
///
/// A missing link yields an error with [`Error::is_not_found`].
pub fn link_del_by_name_in(ns: &Netns, name: &str) -> Result<Vec<ipnet::IpNet>> {
    let mut nl = Netlink::open(Some(ns))?;
    link_del_by_name(&mut nl, name)
}

/// [`link_del_by_name_in`] through an existing handle.
pub fn link_del_by_name<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    name: &str,
) -> Result<Vec<ipnet::IpNet>> {
    let link = nl
        .link_by_name(name)?
        .ok_or_else(|| Error::NotFound(format!("link {name}")))?;
    let addrs = nl
        .addrs(Some(link.index))?
        .into_iter()
        .map(|a| a.addr)
        .filter(|a| is_global_unicast(&a.addr()))
        .collect();
    nl.link_del(link.index)?;
    Ok(addrs)
}

/// The default route (main table, a single output interface) that decides where traffic
/// leaves: IPv4 before IPv6, lowest metric first, like the reference plugins'
/// `getDefaultRouteInterfaceName`. Multipath defaults (no single interface) are skipped.
pub fn default_route<N: NetlinkOps + ?Sized>(h: &mut N) -> Result<Option<crate::RouteInfo>> {
    for v6 in [false, true] {
        let mut defaults: Vec<_> = h
            .routes(v6, None)?
            .into_iter()
            .filter(|r| r.dst.prefix_len() == 0 && r.oif.is_some())
            .collect();
        defaults.sort_by_key(|r| r.priority.unwrap_or(0));
        if let Some(r) = defaults.into_iter().next() {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// The interface of [`default_route`], when there is one and it still exists.
pub fn default_route_link<N: NetlinkOps + ?Sized>(h: &mut N) -> Result<Option<crate::LinkInfo>> {
    match default_route(h)?.and_then(|r| r.oif) {
        Some(oif) => h.link_by_index(oif),
        None => Ok(None),
    }
}

/// The link named `req.name`, created from `req` when absent (a concurrent creation,
/// `EEXIST`, is fine), and whether this call created it. An existing link of another
/// kind than `kind` (the kernel's name, e.g. `bridge`) is [`Error::Invalid`].
pub fn get_or_create<N: NetlinkOps + ?Sized>(
    h: &mut N,
    req: &crate::LinkRequest,
    kind: &str,
) -> Result<(crate::LinkInfo, bool)> {
    let (link, created) = match h.link_by_name(&req.name)? {
        Some(l) => (l, false),
        None => {
            let created = match h.link_add(req) {
                Ok(()) => true,
                Err(e) if e.is_exists() => false,
                Err(e) => return Err(e),
            };
            let l = h.link_by_name(&req.name)?.ok_or_else(|| {
                Error::Invalid(format!("{:?} vanished right after its creation", req.name))
            })?;
            (l, created)
        }
    };
    if link.kind.as_deref() != Some(kind) {
        return Err(Error::Invalid(format!(
            "{:?} already exists but is not a {kind}",
            req.name
        )));
    }
    Ok((link, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_take_trait_objects() {
        let mut f = crate::FakeNetlink::new();
        let dynf: &mut dyn NetlinkOps = &mut f;
        wait_addrs_not_tentative(dynf, 1, Duration::from_millis(1)).unwrap();
        assert!(link_del_by_name(dynf, "nope").unwrap_err().is_not_found());
    }

    #[test]
    fn thread_safety() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<crate::Netlink>();
        send::<crate::FakeNetlink>();
        send::<Netns>();
        sync::<Netns>();
        send::<crate::Error>();
        sync::<crate::Error>();
    }

    #[test]
    fn veth_names() {
        let a = random_veth_name();
        let b = random_veth_name();
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert!(
            a[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn global_unicast() {
        assert!(is_global_unicast(&"10.1.2.3".parse().unwrap()));
        assert!(is_global_unicast(&"2001:db8::1".parse().unwrap()));
        assert!(!is_global_unicast(&"fe80::1".parse().unwrap()));
        assert!(!is_global_unicast(&"127.0.0.1".parse().unwrap()));
        assert!(!is_global_unicast(&"169.254.1.1".parse().unwrap()));
    }
}
