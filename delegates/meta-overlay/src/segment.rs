//! Secondary VXLAN segments: one VXLAN device + one bridge per VNI per node.

use super::reconcile::{Change, Failure};
use super::{DEFAULT_SEGMENT_PORT, Error, MAX_VNI, Report, Result, Underlay, validate_ifname};
use meta_netlink::{FdbSpec, LinkInfo, LinkKind, LinkRequest, NetlinkOps};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

/// The VXLAN device of a segment: `mvx<vni>` (at most 11 bytes).
pub fn segment_device_name(vni: u32) -> String {
    format!("mvx{vni}")
}

/// The default bridge of a segment: `mbr<vni>`.
pub fn segment_bridge_name(vni: u32) -> String {
    format!("mbr{vni}")
}

/// One secondary VXLAN segment on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port (default [`DEFAULT_SEGMENT_PORT`]).
    pub port: u16,
    /// MTU of the device, the bridge and the pods (default: underlay MTU − overhead).
    pub mtu: u32,
    /// VXLAN device name ([`segment_device_name`]).
    pub device: String,
    /// Bridge name (default [`segment_bridge_name`]).
    pub bridge: String,
    /// Learn remote MACs from received packets (default true), so unicast goes to the
    /// right VTEP after the first reply instead of being replicated to every peer.
    pub learning: bool,
    /// The underlay.
    pub underlay: Underlay,
}

impl SegmentConfig {
    /// The defaults for `vni` on `underlay`.
    pub fn new(vni: u32, underlay: Underlay) -> SegmentConfig {
        SegmentConfig {
            vni,
            port: DEFAULT_SEGMENT_PORT,
            mtu: underlay.overlay_mtu(),
            device: segment_device_name(vni),
            bridge: segment_bridge_name(vni),
            learning: true,
            underlay,
        }
    }

    /// The parameters two users of one VNI on a node must agree on.
    pub fn params(&self) -> SegmentParams {
        SegmentParams {
            port: self.port,
            mtu: self.mtu,
            bridge: Some(self.bridge.clone()),
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.vni == 0 || self.vni > MAX_VNI {
            return Err(Error::Config(format!(
                "VNI {} out of range (1..={MAX_VNI})",
                self.vni
            )));
        }
        if self.port == 0 {
            return Err(Error::Config("VXLAN port must not be 0".into()));
        }
        validate_ifname("VXLAN device", &self.device)?;
        validate_ifname("bridge", &self.bridge)?;
        if self.bridge == self.device {
            return Err(Error::Config(format!(
                "bridge and VXLAN device cannot both be named {:?}",
                self.bridge
            )));
        }
        let max = self.underlay.overlay_mtu();
        if self.mtu < 68 || self.mtu > max {
            return Err(Error::Config(format!(
                "MTU {} out of range: 68..={max} (underlay {} MTU {} minus {} bytes of VXLAN \
                 encapsulation)",
                self.mtu,
                self.underlay.iface,
                self.underlay.mtu,
                self.underlay.encap_overhead()
            )));
        }
        Ok(())
    }
}

/// What two configurations of one VNI must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentParams {
    /// UDP port.
    pub port: u16,
    /// MTU.
    pub mtu: u32,
    /// Bridge (None: the device is not enslaved yet).
    pub bridge: Option<String>,
}

impl fmt::Display for SegmentParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "port {}, MTU {}, bridge {}",
            self.port,
            self.mtu,
            self.bridge.as_deref().unwrap_or("(none)")
        )
    }
}

/// What [`ensure_segment`] set up.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The VXLAN device.
    pub device: LinkInfo,
    /// The bridge.
    pub bridge: LinkInfo,
    /// The VXLAN device was created by this call.
    pub created: bool,
}

fn look_up<N: NetlinkOps + ?Sized>(nl: &mut N, name: &str) -> Result<Option<LinkInfo>> {
    nl.link_by_name(name)
        .map_err(Error::netlink(format!("look up {name}")))
}

/// The params of an existing segment device.
fn existing_params<N: NetlinkOps + ?Sized>(nl: &mut N, l: &LinkInfo) -> Result<SegmentParams> {
    let bridge = match l.master {
        Some(m) => nl
            .link_by_index(m)
            .map_err(Error::netlink(format!("look up the master of {}", l.name)))?
            .map(|b| b.name),
        None => None,
    };
    Ok(SegmentParams {
        port: l.vxlan.as_ref().map(|v| v.port).unwrap_or_default(),
        mtu: l.mtu,
        bridge,
    })
}

/// Checks an existing device against `cfg`: a conflict error when the port, the MTU or
/// the bridge it is enslaved to differ.
fn check_device<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    cfg: &SegmentConfig,
    l: &LinkInfo,
) -> Result<()> {
    let Some(v) = l
        .vxlan
        .as_ref()
        .filter(|_| l.kind.as_deref() == Some("vxlan"))
    else {
        return Err(Error::Conflict(format!(
            "{} exists but is a {} link, not the VXLAN device of VNI {}",
            l.name,
            l.kind.as_deref().unwrap_or("physical"),
            cfg.vni
        )));
    };
    if v.vni != cfg.vni {
        return Err(Error::Conflict(format!(
            "{} exists but carries VNI {}, not {}",
            l.name, v.vni, cfg.vni
        )));
    }
    let have = existing_params(nl, l)?;
    let want = cfg.params();
    let differs = have.port != want.port
        || have.mtu != want.mtu
        || (have.bridge.is_some() && have.bridge != want.bridge);
    if differs {
        return Err(Error::SegmentConflict {
            vni: cfg.vni,
            device: l.name.clone(),
            existing: have,
            requested: want,
        });
    }
    Ok(())
}

/// Makes sure the segment of `cfg.vni` exists on this node: the VXLAN device (VNI, port,
/// local IP, underlay interface, learning, MTU), the bridge (same MTU), the device enslaved
/// to the bridge, both up. Idempotent.
///
/// Errors, with nothing changed:
/// * the device exists with another port, MTU or bridge ([`Error::SegmentConflict`]:
///   two configurations claim the VNI with different settings);
/// * another VXLAN device already has this VNI on this port (e.g. the primary overlay);
/// * the bridge already carries another VNI (two VNIs would merge into one segment);
/// * a link with one of the names is not of the expected kind.
///
/// The device's local IP and underlay interface are not compared: a device made when the
/// underlay was different is used as it is.
pub fn ensure_segment<N: NetlinkOps + ?Sized>(nl: &mut N, cfg: &SegmentConfig) -> Result<Segment> {
    cfg.validate()?;
    let under = look_up(nl, &cfg.underlay.iface)?.ok_or_else(|| {
        Error::Config(format!(
            "underlay interface {:?} does not exist",
            cfg.underlay.iface
        ))
    })?;
    let links = nl.links().map_err(Error::netlink("list links"))?;
    if let Some(other) = links.iter().find(|l| {
        l.name != cfg.device
            && l.vxlan
                .as_ref()
                .is_some_and(|v| v.vni == cfg.vni && v.port == cfg.port)
    }) {
        return Err(Error::Conflict(format!(
            "VNI {} on port {} is already used on this node by VXLAN device {}",
            cfg.vni, cfg.port, other.name
        )));
    }
    let mut created = false;
    let dev = match look_up(nl, &cfg.device)? {
        Some(l) => {
            check_device(nl, cfg, &l)?;
            l
        }
        None => {
            let req = LinkRequest {
                name: cfg.device.clone(),
                kind: LinkKind::Vxlan {
                    vni: cfg.vni,
                    port: cfg.port,
                    local: Some(cfg.underlay.local_ip),
                    learning: cfg.learning,
                    dev: Some(under.index),
                },
                mtu: Some(cfg.mtu),
                mac: None,
                netns: None,
                up: false,
            };
            match nl.link_add(&req) {
                Ok(()) => created = true,
                Err(e) if e.is_exists() => {}
                Err(e) => {
                    return Err(Error::netlink(format!(
                        "create VXLAN device {} (VNI {}, port {}, local {}, dev {})",
                        cfg.device, cfg.vni, cfg.port, cfg.underlay.local_ip, under.name
                    ))(e));
                }
            }
            let l = look_up(nl, &cfg.device)?
                .ok_or_else(|| Error::Conflict(format!("{} vanished", cfg.device)))?;
            check_device(nl, cfg, &l)?;
            l
        }
    };

    // The bridge.
    let br = match look_up(nl, &cfg.bridge)? {
        Some(b) => b,
        None => {
            let req = LinkRequest {
                name: cfg.bridge.clone(),
                kind: LinkKind::Bridge {
                    vlan_filtering: false,
                },
                mtu: Some(cfg.mtu),
                mac: None,
                netns: None,
                up: false,
            };
            match nl.link_add(&req) {
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => {
                    return Err(Error::netlink(format!("create bridge {}", cfg.bridge))(e));
                }
            }
            look_up(nl, &cfg.bridge)?
                .ok_or_else(|| Error::Conflict(format!("bridge {} vanished", cfg.bridge)))?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(Error::Conflict(format!(
            "{} exists but is not a bridge",
            cfg.bridge
        )));
    }
    let links = nl.links().map_err(Error::netlink("list links"))?;
    if let Some(other) = links.iter().find(|l| {
        l.master == Some(br.index) && l.index != dev.index && l.kind.as_deref() == Some("vxlan")
    }) {
        return Err(Error::Conflict(format!(
            "bridge {} already carries VXLAN device {} (VNI {}); VNI {} needs a bridge of its own",
            cfg.bridge,
            other.name,
            other.vxlan.as_ref().map(|v| v.vni).unwrap_or_default(),
            cfg.vni
        )));
    }
    if !br.up {
        nl.link_set_up(br.index, true)
            .map_err(Error::netlink(format!("set {} up", cfg.bridge)))?;
    }
    if dev.master != Some(br.index) {
        nl.link_set_master(dev.index, Some(br.index))
            .map_err(Error::netlink(format!(
                "enslave {} to {}",
                cfg.device, cfg.bridge
            )))?;
    }
    if !dev.up {
        nl.link_set_up(dev.index, true)
            .map_err(Error::netlink(format!("set {} up", cfg.device)))?;
    }
    let device = nl
        .link_by_index(dev.index)
        .map_err(Error::netlink(format!("look up {}", cfg.device)))?
        .ok_or_else(|| Error::Conflict(format!("{} vanished", cfg.device)))?;
    let bridge = nl
        .link_by_index(br.index)
        .map_err(Error::netlink(format!("look up {}", cfg.bridge)))?
        .ok_or_else(|| Error::Conflict(format!("{} vanished", cfg.bridge)))?;
    Ok(Segment {
        device,
        bridge,
        created,
    })
}

/// Makes the flood list of the VXLAN device `device` exactly `peers` (the local IP, when
/// given, is left out): one all-zero-MAC FDB entry per peer (head-end replication of
/// broadcast, multicast and unknown unicast). Adds the missing entries, removes the
/// others; a second call with the same peers sends no mutating request. For the delegate's
/// static `peers` list and for the agent alike.
pub fn reconcile_peers<N: NetlinkOps + ?Sized>(
    nl: &mut N,
    device: &str,
    local_ip: Option<IpAddr>,
    peers: &[IpAddr],
) -> Result<Report> {
    let dev = look_up(nl, device)?
        .ok_or_else(|| Error::Config(format!("VXLAN device {device} does not exist")))?;
    let have: BTreeSet<IpAddr> = nl
        .fdbs(dev.index)
        .map_err(Error::netlink(format!("list FDB of {device}")))?
        .into_iter()
        .filter(|f| f.mac == [0; 6] && f.self_)
        .filter_map(|f| f.dst)
        .collect();
    let want: BTreeSet<IpAddr> = peers
        .iter()
        .copied()
        .filter(|p| Some(*p) != local_ip)
        .collect();
    let mut report = Report::default();
    let spec = |dst| FdbSpec {
        index: dev.index,
        mac: [0; 6],
        dst: Some(dst),
        vni: None,
        permanent: true,
        self_: true,
    };
    for dst in have.difference(&want) {
        match nl.fdb_del(&spec(*dst)) {
            Ok(()) => report.changes.push(Change::FloodDel { dst: *dst }),
            Err(e) if e.is_not_found() => {}
            Err(e) => report.failed.push(Failure {
                node: dst.to_string(),
                error: format!("remove flood entry to {dst} from {device}: {e}"),
            }),
        }
    }
    let mut add_failures = 0;
    for dst in want.difference(&have) {
        match nl.fdb_add(&spec(*dst)) {
            Ok(()) => report.changes.push(Change::FloodAdd { dst: *dst }),
            Err(e) => {
                add_failures += 1;
                report.failed.push(Failure {
                    node: dst.to_string(),
                    error: format!("add flood entry to {dst} on {device}: {e}"),
                });
            }
        }
    }
    report.programmed = want.len() - add_failures;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::tests::fake_node;
    use super::*;

    #[test]
    fn creates_segment_idempotently() {
        let (mut nl, u) = fake_node("192.168.77.2");
        let c = SegmentConfig::new(42, u);
        let s = ensure_segment(&mut nl, &c).unwrap();
        assert!(s.created);
        assert_eq!(s.device.name, "mvx42");
        assert_eq!(s.bridge.name, "mbr42");
        assert_eq!(s.device.master, Some(s.bridge.index));
        assert_eq!(s.device.mtu, 1450);
        assert!(s.device.up && s.bridge.up);
        let v = s.device.vxlan.clone().unwrap();
        assert_eq!((v.vni, v.port, v.learning), (42, 4789, true));
        nl.clear_requests();
        let s2 = ensure_segment(&mut nl, &c).unwrap();
        assert!(!s2.created);
        assert!(nl.requests().is_empty(), "{:?}", nl.requests());
    }

    #[test]
    fn conflicting_settings_name_both() {
        let (mut nl, u) = fake_node("192.168.77.2");
        let a = SegmentConfig::new(42, u);
        ensure_segment(&mut nl, &a).unwrap();
        for (f, needle) in [
            (
                Box::new(|c: &mut SegmentConfig| c.port = 4790) as Box<dyn Fn(&mut SegmentConfig)>,
                "port 4790",
            ),
            (Box::new(|c: &mut SegmentConfig| c.mtu = 1400), "MTU 1400"),
            (
                Box::new(|c: &mut SegmentConfig| c.bridge = "other".into()),
                "bridge other",
            ),
        ] {
            let mut b = a.clone();
            f(&mut b);
            nl.clear_requests();
            let e = ensure_segment(&mut nl, &b).unwrap_err();
            assert!(matches!(e, Error::SegmentConflict { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("port 4789, MTU 1450, bridge mbr42"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert!(nl.requests().is_empty());
        }
    }

    #[test]
    fn other_conflicts() {
        let (mut nl, u) = fake_node("192.168.77.2");
        let a = SegmentConfig::new(42, u.clone());
        ensure_segment(&mut nl, &a).unwrap();
        // Another VNI on the same bridge.
        let mut b = SegmentConfig::new(43, u.clone());
        b.bridge = "mbr42".into();
        let e = ensure_segment(&mut nl, &b).unwrap_err().to_string();
        assert!(
            e.contains("already carries VXLAN device mvx42 (VNI 42)"),
            "{e}"
        );
        // The same VNI+port under another device name (e.g. the primary overlay).
        let mut c = SegmentConfig::new(42, u.clone());
        c.device = "custom42".into();
        let e = ensure_segment(&mut nl, &c).unwrap_err().to_string();
        assert!(
            e.contains("already used on this node by VXLAN device mvx42"),
            "{e}"
        );
        // MTU above what the underlay allows.
        let mut d = SegmentConfig::new(44, u);
        d.mtu = 1460;
        let e = ensure_segment(&mut nl, &d).unwrap_err().to_string();
        assert!(e.contains("68..=1450"), "{e}");
    }

    #[test]
    fn peers_converge() {
        let (mut nl, u) = fake_node("192.168.77.2");
        let c = SegmentConfig::new(42, u);
        ensure_segment(&mut nl, &c).unwrap();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let local = Some(ip("192.168.77.2"));
        let r = reconcile_peers(
            &mut nl,
            "mvx42",
            local,
            &[ip("192.168.77.3"), ip("192.168.77.2"), ip("192.168.77.4")],
        )
        .unwrap();
        assert_eq!(r.changes.len(), 2, "{r}");
        assert_eq!(r.programmed, 2);
        nl.clear_requests();
        let r = reconcile_peers(
            &mut nl,
            "mvx42",
            local,
            &[ip("192.168.77.4"), ip("192.168.77.3")],
        )
        .unwrap();
        assert!(r.is_noop());
        assert!(nl.requests().is_empty());
        let r = reconcile_peers(&mut nl, "mvx42", local, &[ip("192.168.77.4")]).unwrap();
        assert_eq!(
            r.changes,
            vec![Change::FloodDel {
                dst: ip("192.168.77.3")
            }]
        );
        let dev = nl.link_by_name("mvx42").unwrap().unwrap().index;
        let dsts: Vec<_> = nl.fdbs(dev).unwrap().into_iter().map(|f| f.dst).collect();
        assert_eq!(dsts, vec![Some(ip("192.168.77.4"))]);
    }
}
