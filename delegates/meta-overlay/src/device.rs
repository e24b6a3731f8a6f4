//! The primary overlay's VXLAN device.

use super::{Error, OverlayConfig, Result};
use ipnet::IpNet;
use meta_netlink::{LinkInfo, LinkKind, LinkRequest, Mac, NetlinkOps, SCOPE_LINK, format_mac};
use std::net::IpAddr;

/// The VTEP MAC of a node, derived from its underlay IP: `02:6d:a:b:c:d` for IPv4
/// `a.b.c.d` (locally administered, unicast), and for IPv6 `02:6d` + 4 bytes of the
/// address's FNV-1a hash. Deterministic, so a re-created device keeps its MAC and the
/// other nodes' neighbour and FDB entries stay valid.
pub fn vtep_mac_for(ip: IpAddr) -> Mac {
    let b: [u8; 4] = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let mut h: u32 = 0x811c_9dc5;
            for x in a.octets() {
                h ^= u32::from(x);
                h = h.wrapping_mul(0x0100_0193);
            }
            h.to_be_bytes()
        }
    };
    [0x02, 0x6d, b[0], b[1], b[2], b[3]]
}

/// Makes sure the primary overlay's VXLAN device exists as `cfg` describes it and returns
/// it as it is now. Idempotent: when everything is in place it sends no mutating request.
///
/// * missing: created (VNI, port, local IP, learning off, bound to the underlay interface,
///   MTU = underlay MTU − overhead, the VTEP MAC);
/// * present with other VXLAN parameters (VNI, port, local IP, underlay, learning):
///   deleted and created again (this device is ours; its routes and entries go with it and
///   the next [`super::reconcile`] puts them back);
/// * a non-VXLAN link with the name: error, nothing touched;
/// * MTU or MAC different: set; the subnet's network address as a host address (`/32` or
///   `/128`), other global addresses of that family removed; set up.
pub fn ensure_device<N: NetlinkOps + ?Sized>(nl: &mut N, cfg: &OverlayConfig) -> Result<LinkInfo> {
    cfg.validate()?;
    let under = nl
        .link_by_name(&cfg.underlay.iface)
        .map_err(Error::netlink("look up the underlay interface"))?
        .ok_or_else(|| {
            Error::Config(format!(
                "underlay interface {:?} does not exist",
                cfg.underlay.iface
            ))
        })?;
    let name = &cfg.device;
    let mtu = cfg.mtu();
    let mac = cfg.vtep_mac();
    let kind = LinkKind::Vxlan {
        vni: cfg.vni,
        port: cfg.port,
        local: Some(cfg.underlay.local_ip),
        learning: false,
        dev: Some(under.index),
    };
    let matches = |l: &LinkInfo| {
        l.vxlan.as_ref().is_some_and(|v| {
            v.vni == cfg.vni
                && v.port == cfg.port
                && v.local == Some(cfg.underlay.local_ip)
                && !v.learning
                && v.dev == Some(under.index)
        })
    };
    let existing = nl
        .link_by_name(name)
        .map_err(Error::netlink(format!("look up {name}")))?;
    let mut link = match existing {
        Some(l) if l.kind.as_deref() != Some("vxlan") => {
            return Err(Error::Conflict(format!(
                "{name} exists but is a {} link, not a VXLAN device; remove it or configure \
                 another overlay device name",
                l.kind.as_deref().unwrap_or("physical")
            )));
        }
        Some(l) if matches(&l) => l,
        other => {
            if let Some(l) = other {
                tracing::warn!(
                    device = %name,
                    have = ?l.vxlan,
                    "overlay device has other VXLAN parameters; re-creating it"
                );
                match nl.link_del(l.index) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(Error::netlink(format!("delete stale {name}"))(e)),
                }
            }
            let req = LinkRequest {
                name: name.clone(),
                kind: kind.clone(),
                mtu: Some(mtu),
                mac: Some(mac),
                netns: None,
                up: false,
            };
            match nl.link_add(&req) {
                Ok(()) => {}
                // Someone else made it meanwhile: check it below.
                Err(e) if e.is_exists() => {}
                Err(e) => {
                    return Err(Error::netlink(format!(
                        "create VXLAN device {name} (VNI {}, port {}, local {}, dev {})",
                        cfg.vni, cfg.port, cfg.underlay.local_ip, under.name
                    ))(e));
                }
            }
            let l = nl
                .link_by_name(name)
                .map_err(Error::netlink(format!("look up {name}")))?
                .ok_or_else(|| Error::Conflict(format!("{name} vanished after creation")))?;
            if !matches(&l) {
                return Err(Error::Conflict(format!(
                    "{name} exists with other VXLAN parameters ({:?}) than requested",
                    l.vxlan
                )));
            }
            l
        }
    };
    if link.mtu != mtu {
        nl.link_set_mtu(link.index, mtu)
            .map_err(Error::netlink(format!("set MTU {mtu} on {name}")))?;
    }
    if link.mac != Some(mac) {
        nl.link_set_mac(link.index, mac)
            .map_err(Error::netlink(format!(
                "set MAC {} on {name}",
                format_mac(&mac)
            )))?;
    }
    let vtep_ip = cfg.vtep_ip();
    let want = IpNet::new(vtep_ip, if vtep_ip.is_ipv4() { 32 } else { 128 })
        .map_err(|e| Error::Config(format!("VTEP address {vtep_ip}: {e}")))?;
    let addrs = nl
        .addrs(Some(link.index))
        .map_err(Error::netlink(format!("list addresses of {name}")))?;
    for a in &addrs {
        if a.addr != want
            && a.addr.addr().is_ipv4() == want.addr().is_ipv4()
            && a.scope < SCOPE_LINK
        {
            match nl.addr_del(link.index, a.addr) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(Error::netlink(format!(
                        "remove stale address {} from {name}",
                        a.addr
                    ))(e));
                }
            }
        }
    }
    if !addrs.iter().any(|a| a.addr == want) {
        match nl.addr_add(link.index, want) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(Error::netlink(format!("add {want} to {name}"))(e)),
        }
    }
    if !link.up {
        nl.link_set_up(link.index, true)
            .map_err(Error::netlink(format!("set {name} up")))?;
    }
    link = nl
        .link_by_index(link.index)
        .map_err(Error::netlink(format!("look up {name}")))?
        .ok_or_else(|| Error::Conflict(format!("{name} vanished")))?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::super::tests::fake_node;
    use super::*;
    use meta_netlink::Request;

    fn cfg(u: super::super::Underlay) -> OverlayConfig {
        OverlayConfig::new(
            u,
            "10.244.0.0/16".parse().unwrap(),
            "10.244.1.0/24".parse().unwrap(),
        )
    }

    #[test]
    fn creates_then_is_idempotent() {
        let (mut nl, u) = fake_node("192.168.77.2");
        let c = cfg(u);
        let l = ensure_device(&mut nl, &c).unwrap();
        assert_eq!(l.name, "meta.1");
        assert_eq!(l.mtu, 1450);
        assert!(l.up);
        assert_eq!(l.mac, Some([0x02, 0x6d, 192, 168, 77, 2]));
        let v = l.vxlan.clone().unwrap();
        assert_eq!(
            (v.vni, v.port, v.learning, v.dev),
            (1, 8472, false, Some(2))
        );
        assert_eq!(v.local, Some("192.168.77.2".parse().unwrap()));
        let addrs: Vec<String> = nl
            .addrs(Some(l.index))
            .unwrap()
            .iter()
            .map(|a| a.addr.to_string())
            .collect();
        assert_eq!(addrs, vec!["10.244.1.0/32"]);
        nl.clear_requests();
        let again = ensure_device(&mut nl, &c).unwrap();
        assert_eq!(again, l);
        assert!(nl.requests().is_empty(), "{:?}", nl.requests());
    }

    #[test]
    fn fixes_drift_and_recreates_on_parameter_change() {
        let (mut nl, u) = fake_node("192.168.77.2");
        let mut c = cfg(u);
        let l = ensure_device(&mut nl, &c).unwrap();
        // Drift: MTU, a stale address, down.
        nl.link_set_mtu(l.index, 1400).unwrap();
        nl.addr_add(l.index, "10.244.9.0/32".parse().unwrap())
            .unwrap();
        nl.link_set_up(l.index, false).unwrap();
        nl.clear_requests();
        let l2 = ensure_device(&mut nl, &c).unwrap();
        assert_eq!(l2.index, l.index);
        assert_eq!(l2.mtu, 1450);
        assert!(l2.up);
        assert_eq!(
            nl.requests(),
            &[
                Request::SetMtu(l.index, 1450),
                Request::AddrDel(l.index, "10.244.9.0/32".parse().unwrap()),
                Request::SetUp(l.index, true),
            ]
        );
        // A new port: re-created.
        c.port = 4790;
        let l3 = ensure_device(&mut nl, &c).unwrap();
        assert_ne!(l3.index, l.index);
        assert_eq!(l3.vxlan.unwrap().port, 4790);
    }

    #[test]
    fn foreign_link_is_an_error() {
        let (mut nl, u) = fake_node("192.168.77.2");
        nl.link_add(&LinkRequest {
            name: "meta.1".into(),
            kind: LinkKind::Bridge {
                vlan_filtering: false,
            },
            mtu: None,
            mac: None,
            netns: None,
            up: false,
        })
        .unwrap();
        let e = ensure_device(&mut nl, &cfg(u)).unwrap_err().to_string();
        assert!(e.contains("not a VXLAN device"), "{e}");
    }

    #[test]
    fn macs() {
        assert_eq!(
            vtep_mac_for("10.0.0.1".parse().unwrap()),
            [2, 0x6d, 10, 0, 0, 1]
        );
        let a = vtep_mac_for("fd00::1".parse().unwrap());
        let b = vtep_mac_for("fd00::2".parse().unwrap());
        assert_ne!(a, b);
        assert_eq!(a[0], 2);
    }
}
