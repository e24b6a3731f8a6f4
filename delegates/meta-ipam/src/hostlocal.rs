//! host-local allocation: ADD, DEL, CHECK, STATUS and GC over the on-disk store.

use crate::config::{HostLocalConfig, Range, RangeSet};
use crate::ip::{canon, next_ip};
use crate::store::{Reservation, Store};
use cni_core::{Attachment, CniResult, Error, IpConfig, Result, code};
use ipnet::IpNet;
use serde_json::Map;
use std::collections::HashSet;
use std::net::IpAddr;

/// The reference's `RangeIter`: round-robin over a range set starting after the last
/// reserved address, wrapping once, skipping each range's gateway.
struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Self {
        let mut it = RangeIter {
            set,
            idx: 0,
            cur: None,
            start: None,
        };
        if let Some(last) = last_reserved
            && let Some(i) = set.0.iter().position(|r| r.contains(last))
        {
            it.idx = i;
            it.cur = Some(last);
        }
        it
    }

    fn next(&mut self) -> Option<(IpAddr, &'a Range)> {
        let n = self.set.0.len();
        loop {
            let r = self.set.0.get(self.idx)?;
            let (r, ip) = match self.cur {
                None => {
                    self.start = Some(r.range_start);
                    (r, r.range_start)
                }
                Some(cur) => {
                    let (r, ip) = if cur == r.range_end {
                        self.idx = (self.idx + 1) % n;
                        let r = self.set.0.get(self.idx)?;
                        (r, r.range_start)
                    } else {
                        (r, next_ip(cur))
                    };
                    match self.start {
                        None => self.start = Some(ip),
                        Some(s) if s == ip => {
                            self.cur = Some(ip);
                            return None;
                        }
                        Some(_) => {}
                    }
                    (r, ip)
                }
            };
            self.cur = Some(ip);
            if ip != r.gateway {
                return Some((ip, r));
            }
        }
    }
}

fn ip_config(ip: IpAddr, r: &Range) -> Result<IpConfig> {
    let address = IpNet::new(ip, r.subnet.prefix_len())
        .map_err(|e| Error::internal(format!("address {ip}/{}: {e}", r.subnet.prefix_len())))?;
    Ok(IpConfig {
        address,
        gateway: Some(r.gateway),
        interface: None,
        extra: Map::new(),
    })
}

/// What one ADD knows while it walks the range sets.
struct Alloc<'a> {
    store: &'a Store,
    /// Every reserved address when the lock was taken.
    taken: HashSet<IpAddr>,
    /// The addresses (container_id, ifname) held when the lock was taken.
    mine: Vec<IpAddr>,
    container_id: &'a str,
    ifname: &'a str,
}

/// Allocates from one range set (the reference's `IPAllocator.Get`).
fn get_one(
    a: &Alloc<'_>,
    set: &RangeSet,
    idx: usize,
    requested: Option<IpAddr>,
) -> Result<IpConfig> {
    let (store, container_id, ifname) = (a.store, a.container_id, a.ifname);
    if let Some(ip) = requested {
        let r = set
            .range_for(ip)
            .ok_or_else(|| Error::config(format!("requested IP {ip} is not in range set {set}")))?;
        if ip == r.gateway {
            return Err(Error::config(format!(
                "requested IP {ip} is the gateway of range {r}"
            )));
        }
        if !store.reserve(container_id, ifname, ip, idx)? {
            return Err(Error::internal(format!(
                "requested IP address {ip} is not available in range set {set}"
            )));
        }
        return ip_config(ip, r);
    }
    // Duplicate allocation is not allowed by the spec.
    if let Some(ip) = a.mine.iter().find(|ip| set.contains(**ip)) {
        return Err(Error::internal(format!(
            "{ip} has been allocated to {container_id}, duplicate allocation is not allowed"
        )));
    }
    let mut it = RangeIter::new(set, store.last_reserved_ip(idx));
    while let Some((ip, r)) = it.next() {
        if a.taken.contains(&ip) {
            continue;
        }
        if store.reserve(container_id, ifname, ip, idx)? {
            return ip_config(ip, r);
        }
    }
    Err(Error::internal(format!(
        "no IP addresses available in range set: {set}"
    )))
}

/// ADD: allocates one address per range set for (container_id, ifname) and returns the
/// result the reference host-local would: `ips` in range-set order, each with its range's
/// gateway, the configured `routes`, and `dns` from `resolvConf` when set.
///
/// A requested address (see [`HostLocalConfig::requested_ips`]) is taken in its range
/// set; it must be free. Without one, the range set is walked round-robin after
/// `last_reserved_ip.<N>`. Errors: code 7 for requested addresses outside every range set,
/// equal to a gateway or two in one set; code 999 (as the reference) when a requested
/// address is taken, when (container_id, ifname) already holds an address in a range set
/// ("... duplicate allocation is not allowed") and when a range set is exhausted
/// ("no IP addresses available in range set: <start>-<end>"), each prefixed with
/// "failed to allocate for range <N>"; code 5 for I/O failures. On any failure the
/// addresses taken by this call are released.
pub fn allocate(conf: &HostLocalConfig, container_id: &str, ifname: &str) -> Result<CniResult> {
    // As the reference: each range set is allocated (a requested address in its turn, the
    // gateway refused then), and only afterwards do requested addresses that no set took
    // fail the ADD; what this call reserved is released, `last_reserved_ip` stays advanced.
    let (requested, left_over) = conf.requested_split();
    let mut result = CniResult::default();
    if let Some(path) = &conf.resolv_conf {
        result.dns = crate::dns::parse_resolv_conf(path)?;
    }
    let store = Store::open(&conf.data_dir, &conf.name)?;
    let existing = store.reservations()?;
    let taken: HashSet<IpAddr> = existing.iter().map(|r| r.ip).collect();
    let mine: Vec<IpAddr> = existing
        .iter()
        .filter(|r| r.is_exactly(container_id, ifname) || r.is_legacy_of(container_id))
        .map(|r| r.ip)
        .collect();
    let alloc = Alloc {
        store: &store,
        taken,
        mine,
        container_id,
        ifname,
    };
    let mut got: Vec<IpAddr> = Vec::new();
    for (idx, set) in conf.ranges.iter().enumerate() {
        let req = requested.get(idx).copied().flatten();
        match get_one(&alloc, set, idx, req) {
            Ok(ipc) => {
                got.push(ipc.address.addr());
                result.ips.push(ipc);
            }
            Err(e) => {
                if let Err(re) = store.remove_all(&got) {
                    tracing::warn!(error = %re, "host-local: releasing after failed ADD");
                }
                return Err(e.context(format!("failed to allocate for range {idx}")));
            }
        }
    }
    if !left_over.is_empty() {
        if let Err(re) = store.remove_all(&got) {
            tracing::warn!(error = %re, "host-local: releasing after failed ADD");
        }
        return Err(Error::config(format!(
            "failed to allocate all requested IPs: {}",
            left_over.join("; ")
        )));
    }
    tracing::debug!(network = %conf.name, container_id, ifname, ips = ?got, "host-local: allocated");
    result.routes = conf.routes.clone();
    Ok(result)
}

/// DEL: releases every address held by (container_id, ifname), with the reference's
/// fallback to legacy (id-only) reservation files. Succeeds when nothing is held.
pub fn release(conf: &HostLocalConfig, container_id: &str, ifname: &str) -> Result<()> {
    let store = Store::open(&conf.data_dir, &conf.name)?;
    // The reference releases once per range set; doing the same keeps its handling of
    // legacy files (released on a pass that finds no current-format file) identical.
    for _ in 0..conf.ranges.len().max(1) {
        store.release_by_id(container_id, ifname)?;
    }
    Ok(())
}

/// DEL from a raw configuration: [`release`] when it is valid; when it is not (a value ADD
/// would refuse: a bad range, gateway or requested IP), the reservations are still found
/// from `ipam.dataDir` and the network name alone, so a DEL never fails on a configuration
/// that cannot have allocated anything or that changed since. Only a configuration without
/// an `ipam` object or with a non-string `dataDir` is an error.
pub fn release_for_del(
    conf: &cni_core::NetConf,
    args: &cni_core::CniArgs,
    container_id: &str,
    ifname: &str,
) -> Result<()> {
    let invalid = match HostLocalConfig::from_conf(conf, args) {
        Ok(c) => return release(&c, container_id, ifname),
        Err(e) => e,
    };
    let ipam = conf
        .get("ipam")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| invalid.clone())?;
    let data_dir = crate::config::data_dir_of(ipam)?;
    tracing::info!(
        "host-local DEL with a configuration ADD would refuse ({invalid}); releasing by container ID in {}",
        data_dir.display()
    );
    let sets = ipam
        .get("ranges")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len)
        + usize::from(ipam.get("subnet").is_some_and(|v| !v.is_null()));
    let store = Store::open(&data_dir, conf.name())?;
    for _ in 0..sets.max(1) {
        store.release_by_id(container_id, ifname)?;
    }
    Ok(())
}

/// GC: removes every reservation whose (containerID, ifname) is not in `valid`. A legacy
/// (id-only) reservation is kept when any valid attachment has its container ID. The
/// `lock` and `last_reserved_ip.*` files are kept.
pub fn gc(conf: &HostLocalConfig, valid: &[Attachment]) -> Result<()> {
    let store = Store::open(&conf.data_dir, &conf.name)?;
    let stale: Vec<Reservation> = store
        .reservations()?
        .into_iter()
        .filter(|r| {
            let (id, ifname) = r.owner();
            match ifname {
                Some(ifn) => !valid
                    .iter()
                    .any(|a| a.container_id.trim() == id && a.ifname == ifn),
                None => !valid.iter().any(|a| a.container_id.trim() == id),
            }
        })
        .collect();
    if !stale.is_empty() {
        let ips: Vec<IpAddr> = stale.iter().map(|r| r.ip).collect();
        tracing::info!(network = %conf.name, released = ?ips, "host-local: GC");
        for r in &stale {
            store.remove_name(&r.name)?;
        }
        store.sync()?;
    }
    Ok(())
}

/// STATUS: the data directory must be usable (created and lockable; code 50 otherwise),
/// and no range set may be exhausted: ADD needs an address from every range set, so one
/// full range set means ADD cannot succeed (code 50, "no IP addresses available in range
/// set ...").
pub fn status(conf: &HostLocalConfig) -> Result<()> {
    let store = Store::open(&conf.data_dir, &conf.name).map_err(|e| {
        Error::new(
            code::NOT_AVAILABLE,
            format!("host-local data directory unusable: {}", e.msg),
        )
    })?;
    let reserved = store
        .reservations()
        .map_err(|e| Error::new(code::NOT_AVAILABLE, e.msg))?;
    for (idx, set) in conf.ranges.iter().enumerate() {
        let capacity: u128 = set
            .0
            .iter()
            .map(Range::capacity)
            .fold(0, u128::saturating_add);
        let used = reserved
            .iter()
            .filter(|r| set.range_for(r.ip).is_some_and(|rg| rg.gateway != r.ip))
            .count() as u128;
        if used >= capacity {
            return Err(Error::new(
                code::NOT_AVAILABLE,
                format!(
                    "no IP addresses available in range set {idx}: {set} (all {capacity} addresses are allocated)"
                ),
            ));
        }
    }
    Ok(())
}

/// CHECK: (container_id, ifname) must hold a reservation for each of `ips` that lies in
/// one of the range sets (addresses outside them belong to someone else and are
/// skipped); with no such address, it must hold at least one reservation (the
/// reference's check). Legacy (id-only) files count. Code 999 otherwise, naming the
/// address.
pub fn check(
    conf: &HostLocalConfig,
    container_id: &str,
    ifname: &str,
    ips: &[IpNet],
) -> Result<()> {
    let store = Store::open(&conf.data_dir, &conf.name)?;
    let reserved = store.reservations()?;
    let held = |ip: IpAddr| {
        reserved.iter().any(|r| {
            r.ip == ip && (r.is_exactly(container_id, ifname) || r.is_legacy_of(container_id))
        })
    };
    let ours: Vec<IpAddr> = ips
        .iter()
        .map(|n| canon(n.addr()))
        .filter(|ip| conf.ranges.iter().any(|s| s.contains(*ip)))
        .collect();
    if ours.is_empty() {
        let any = reserved
            .iter()
            .any(|r| r.is_exactly(container_id, ifname) || r.is_legacy_of(container_id));
        if !any {
            return Err(Error::internal(format!(
                "host-local: Failed to find address added by container {container_id} (ifname {ifname}) in {}",
                store.dir().display()
            )));
        }
        return Ok(());
    }
    for ip in ours {
        if !held(ip) {
            return Err(Error::internal(format!(
                "host-local: address {ip} is not reserved for container {container_id} (ifname {ifname}) in {}",
                store.dir().display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::{CniArgs, NetConf};
    use serde_json::{Value, json};
    use std::fs;
    use std::path::Path;

    fn cfg(dir: &Path, ipam: Value, args: &str) -> HostLocalConfig {
        let mut ipam = ipam;
        ipam["dataDir"] = json!(dir.to_str().unwrap());
        let j = json!({"cniVersion": "1.0.0", "name": "net", "ipam": ipam});
        let nc = NetConf::parse(j.to_string().as_bytes()).unwrap();
        HostLocalConfig::from_conf(&nc, &CniArgs::parse(args).unwrap()).unwrap()
    }

    fn ips(r: &CniResult) -> Vec<String> {
        r.ips.iter().map(|i| i.address.to_string()).collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_robin_wrap_exhaustion() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(
            d.path(),
            json!({"subnet": "10.0.0.0/29", "routes": [{"dst": "0.0.0.0/0"}]}),
            "",
        );
        // .1 is the gateway: .2 ... .6 are allocatable
        let mut got = Vec::new();
        for i in 0..5 {
            let r = allocate(&c, &format!("c{i}"), "eth0").unwrap();
            assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.0.0.1");
            assert_eq!(r.routes.len(), 1);
            got.extend(ips(&r));
        }
        assert_eq!(
            got,
            [
                "10.0.0.2/29",
                "10.0.0.3/29",
                "10.0.0.4/29",
                "10.0.0.5/29",
                "10.0.0.6/29"
            ]
        );
        let e = allocate(&c, "c9", "eth0").unwrap_err();
        assert_eq!(e.code, 999);
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6"
        );
        assert_eq!(status(&c).unwrap_err().code, 50);
        // free .3; last reserved is .6: wrap around and find .3
        release(&c, "c1", "eth0").unwrap();
        status(&c).unwrap();
        assert_eq!(ips(&allocate(&c, "c9", "eth0").unwrap()), ["10.0.0.3/29"]);
        // free .2 and .5; last is .3: next is .5 (round-robin), then .2
        release(&c, "c0", "eth0").unwrap();
        release(&c, "c3", "eth0").unwrap();
        assert_eq!(ips(&allocate(&c, "c10", "eth0").unwrap()), ["10.0.0.5/29"]);
        assert_eq!(ips(&allocate(&c, "c11", "eth0").unwrap()), ["10.0.0.2/29"]);
    }

    #[test]
    fn multi_range_set_iteration_and_gateway_skip() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(
            d.path(),
            json!({"ranges": [[
                {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.11"},
                {"subnet": "10.0.1.0/24", "rangeStart": "10.0.1.1", "rangeEnd": "10.0.1.2", "gateway": "10.0.1.2"}
            ]]}),
            "",
        );
        let a: Vec<String> = (0..3)
            .map(|i| ips(&allocate(&c, &format!("c{i}"), "eth0").unwrap())[0].clone())
            .collect();
        assert_eq!(a, ["10.0.0.10/24", "10.0.0.11/24", "10.0.1.1/24"]);
        assert!(allocate(&c, "c3", "eth0").is_err());
        // after the end of the last range, wrap to the first range
        release(&c, "c0", "eth0").unwrap();
        let r = allocate(&c, "c4", "eth0").unwrap();
        assert_eq!(ips(&r), ["10.0.0.10/24"]);
        assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.0.0.1");
    }

    #[test]
    fn dual_stack_requested_and_duplicate() {
        let d = tempfile::tempdir().unwrap();
        let ipam = json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/120"}]]});
        let c = cfg(d.path(), ipam.clone(), "");
        let r = allocate(&c, "c1", "eth0").unwrap();
        assert_eq!(ips(&r), ["10.1.2.2/24", "fd00::2/120"]);
        assert_eq!(r.ips[1].gateway.unwrap().to_string(), "fd00::1");
        let e = allocate(&c, "c1", "eth0").unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: 10.1.2.2 has been allocated to c1, duplicate allocation is not allowed"
        );
        // another interface of the same container is fine
        assert_eq!(
            ips(&allocate(&c, "c1", "eth1").unwrap()),
            ["10.1.2.3/24", "fd00::3/120"]
        );
        // requested
        let c2 = cfg(d.path(), ipam.clone(), "IP=fd00::80,10.1.2.77");
        assert_eq!(
            ips(&allocate(&c2, "c2", "eth0").unwrap()),
            ["10.1.2.77/24", "fd00::80/120"]
        );
        let e = allocate(&c2, "c3", "eth0").unwrap_err();
        assert_eq!(e.code, 999);
        assert!(e.msg.contains("10.1.2.77 is not available"), "{e}");
        // the failure in range 0 happened before anything was taken; a failure in range 1
        // releases range 0's address
        let c3 = cfg(d.path(), ipam.clone(), "IP=fd00::80");
        let before = files(d.path());
        assert!(allocate(&c3, "c4", "eth0").is_err());
        assert_eq!(files(d.path()), before);
        // requested outside every range
        let c4 = cfg(d.path(), ipam, "IP=10.9.9.9");
        assert_eq!(allocate(&c4, "c5", "eth0").unwrap_err().code, 7);
        // DEL everything
        for (cid, ifn) in [("c1", "eth0"), ("c1", "eth1"), ("c2", "eth0")] {
            release(&c, cid, ifn).unwrap();
        }
        release(&c, "never", "eth0").unwrap();
        assert_eq!(
            files(d.path()),
            ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
        );
    }

    #[test]
    fn legacy_files_gc_check() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), json!({"subnet": "10.1.2.0/24"}), "");
        let net = d.path().join("net");
        let a = allocate(&c, "a", "eth0").unwrap();
        allocate(&c, "b", "eth0").unwrap();
        allocate(&c, "b", "eth1").unwrap();
        fs::write(net.join("10.1.2.100"), "old\n").unwrap();
        fs::write(net.join("10.1.2.101"), "gone").unwrap();
        // legacy files block duplicate allocation and count for CHECK
        assert!(
            allocate(&c, "old", "eth0")
                .unwrap_err()
                .msg
                .contains("10.1.2.100 has been allocated to old")
        );
        check(&c, "old", "eth0", &[]).unwrap();
        check(&c, "a", "eth0", &[a.ips[0].address]).unwrap();
        check(&c, "a", "eth0", &["192.168.0.1/24".parse().unwrap()]).unwrap();
        let e = check(&c, "a", "eth0", &["10.1.2.3/24".parse().unwrap()]).unwrap_err();
        assert!(e.msg.contains("10.1.2.3"), "{e}");
        assert!(check(&c, "zzz", "eth0", &[]).is_err());
        // gc: keep a/eth0, b/eth0 and legacy "old"
        let keep = |c: &str, i: &str| Attachment {
            container_id: c.into(),
            ifname: i.into(),
        };
        gc(
            &c,
            &[keep("a", "eth0"), keep("b", "eth0"), keep("old", "eth9")],
        )
        .unwrap();
        assert_eq!(
            files(d.path()),
            [
                "10.1.2.100",
                "10.1.2.2",
                "10.1.2.3",
                "last_reserved_ip.0",
                "lock"
            ]
        );
        // release of a legacy file
        release(&c, "old", "eth0").unwrap();
        gc(&c, &[]).unwrap();
        assert_eq!(files(d.path()), ["last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn resolv_conf_and_v6_defaults() {
        let d = tempfile::tempdir().unwrap();
        let rc = d.path().join("resolv.conf");
        fs::write(&rc, "nameserver 1.1.1.1\nsearch x.y\n").unwrap();
        let c = cfg(
            d.path(),
            json!({"ranges": [[{"subnet": "fd00::/126"}]], "resolvConf": rc.to_str().unwrap()}),
            "",
        );
        let r = allocate(&c, "c", "eth0").unwrap();
        assert_eq!(r.dns.nameservers, ["1.1.1.1"]);
        assert_eq!(ips(&r), ["fd00::2/126"]);
        // fd00::3 is allocatable (no broadcast in IPv6); then exhausted
        assert_eq!(ips(&allocate(&c, "d", "eth0").unwrap()), ["fd00::3/126"]);
        assert!(allocate(&c, "e", "eth0").is_err());
        assert_eq!(status(&c).unwrap_err().code, 50);
    }

    #[test]
    fn iterator_matches_reference_on_single_gateway_range() {
        let set = RangeSet(vec![Range {
            subnet: "10.0.0.0/24".parse().unwrap(),
            range_start: "10.0.0.1".parse().unwrap(),
            range_end: "10.0.0.1".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
        }]);
        assert!(RangeIter::new(&set, None).next().is_none());
        assert!(
            RangeIter::new(&set, Some("10.0.0.1".parse().unwrap()))
                .next()
                .is_none()
        );
    }
}
