//! The macvlan delegate: a macvlan on a master interface of the node (or, with
//! `linkInContainer`, of the pod), created straight in the pod namespace, with addresses
//! from IPAM or none (L2 only) — the reference `macvlan` plugin's behaviour and
//! configuration fields, as a library (run in-process by the meta plugin) and as the
//! standalone `meta-macvlan` binary.
//!
//! Differences from the reference (containernetworking/plugins 1.1.1):
//! * the link is created directly in the pod namespace under its final name; only when
//!   the kernel refuses the name (`EEXIST` while the pod has no such interface: older
//!   kernels check names in the creating namespace) is it created under a temporary name
//!   and renamed inside the pod;
//! * DEL never looks at the master (a deleted master takes its macvlans with it, and DEL
//!   must still release the addresses), nor at `mode`/`mtu`/`mac`;
//! * configuration errors (unknown mode, MTU above the master's, missing master, bad MAC)
//!   are code 7 and name the field, where the reference says 999;
//! * CHECK also verifies that the container interface's parent is the master;
//! * STATUS (1.1.0) reports code 50 when the master cannot be found, and asks IPAM.

#![deny(missing_docs)]

pub mod config;

use cni_core::{CmdArgs, CniResult, Error, Interface, Plugin, Result, code};
use config::Resolved;
use meta_delegate::link::default_route_iface;
use meta_delegate::{
    DelegateType, Undo, Unimplemented, about, check_container_link, check_iface_ips,
    check_iface_routes, configure_iface, del_link, del_link_and_ipam, ipam, mac_string, nl,
    open_netns, set_iface_sysctls, transaction,
};
use meta_netlink::{
    LinkInfo, LinkKind, LinkRequest, Mac, MacvlanMode, Netlink, NetlinkOps, Netns, random_veth_name,
};

/// The macvlan delegate's registration: its CNI type names and the reference 1.x fields
/// it does not implement.
pub const DELEGATE: DelegateType = DelegateType {
    names: &["macvlan", "meta-macvlan"],
    unimplemented: &[Unimplemented::field("bcqueuelen")],
    make: || Box::new(Macvlan),
    validate: |args, _chained| validated(args).map(|_| ()),
};

/// ADD's checks before the kernel: the configuration and its bundled IPAM.
fn validated(args: &CmdArgs) -> Result<config::Resolved> {
    let r = config::load(args)?;
    ipam::validate(args)?;
    Ok(r)
}

/// The macvlan plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Macvlan;

/// The master link, looked up through `h` (a handle in the namespace the master lives
/// in, named `where_` in messages): the configured one, else the default route's
/// interface. A missing master is a configuration error (code 7) naming the field.
pub fn resolve_master(h: &mut dyn NetlinkOps, r: &Resolved, where_: &str) -> Result<LinkInfo> {
    match &r.master {
        Some(name) => h
            .link_by_name(name)
            .map_err(nl(format!("failed to lookup master {name:?}")))?
            .ok_or_else(|| {
                Error::config(format!(
                    "invalid macvlan configuration: field \"master\": link {name:?} not found in the {where_} namespace"
                ))
            }),
        None => default_route_iface(h)?.ok_or_else(|| {
            Error::config(format!(
                "invalid macvlan configuration: field \"master\" is not set and the {where_} \
                 namespace has no default route interface"
            ))
        }),
    }
}

/// The netlink handles ADD uses: one in the master's namespace and one in the pod's (none
/// when the master lives in the pod: the master's handle then serves both).
pub struct Sides<'a> {
    /// A handle in the namespace of the master.
    pub master: &'a mut dyn NetlinkOps,
    /// A handle in the pod namespace, when that is not the master's.
    pub pod: Option<&'a mut dyn NetlinkOps>,
    /// The pod namespace to create the link in, when that is not the master's.
    pub pod_ns: Option<&'a Netns>,
}

impl Sides<'_> {
    /// The handle in the pod namespace.
    pub fn pod(&mut self) -> &mut dyn NetlinkOps {
        match self.pod.as_deref_mut() {
            Some(p) => p,
            None => &mut *self.master,
        }
    }
}

/// What to create: the macvlan's parameters.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// The name in the pod.
    pub ifname: &'a str,
    /// The master link (in the master's namespace).
    pub master: &'a LinkInfo,
    /// The mode.
    pub mode: MacvlanMode,
    /// MTU (`None`: the master's).
    pub mtu: Option<u32>,
    /// MAC (`None`: random).
    pub mac: Option<Mac>,
}

fn exists_in_pod(ifname: &str) -> Error {
    Error::internal(format!(
        "container interface name provided ({ifname}) already exists in the pod"
    ))
}

fn create_err(s: &Spec, e: meta_netlink::Error) -> Error {
    let hint = match (s.mode, e.errno()) {
        (MacvlanMode::Passthru, Some(22)) => {
            " (passthru needs a master without other macvlans, and only one passthru per master)"
        }
        (_, Some(22)) if s.mac.is_some() => " (is the MAC valid for this master?)",
        (_, Some(98)) => " (the MAC is already used on this master)",
        _ => "",
    };
    Error::internal(format!(
        "failed to create macvlan {:?} on master {:?}: {e}{hint}",
        s.ifname, s.master.name
    ))
}

/// Creates the macvlan `spec.ifname` in the pod, down, and returns it as the pod sees it.
///
/// An interface of that name already in the pod is an error naming it. The link is
/// created directly in the pod under its final name; when the kernel answers `EEXIST`
/// although the pod has no such interface (kernels that check the name in the creating
/// namespace), it is created under a temporary name and renamed inside the pod.
pub fn create_macvlan(s: &mut Sides, spec: &Spec) -> Result<LinkInfo> {
    let ifname = spec.ifname;
    let lookup = |s: &mut Sides, name: &str| {
        s.pod()
            .link_by_name(name)
            .map_err(nl(format!("failed to look up {name:?} in the pod")))
    };
    if lookup(s, ifname)?.is_some() {
        return Err(exists_in_pod(ifname));
    }
    let req = |s: &Sides, name: &str| LinkRequest {
        name: name.to_string(),
        kind: LinkKind::Macvlan {
            master: spec.master.index,
            mode: spec.mode,
        },
        mtu: spec.mtu,
        mac: spec.mac,
        netns: s.pod_ns.cloned(),
        up: false,
    };
    let r = req(s, ifname);
    match s.master.link_add(&r) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {
            if lookup(s, ifname)?.is_some() {
                return Err(exists_in_pod(ifname));
            }
            tracing::debug!("{ifname:?} clashes outside the pod; creating under a temporary name");
            create_renamed(s, spec, &req)?;
        }
        Err(e) => return Err(create_err(spec, e)),
    }
    lookup(s, ifname)?
        .ok_or_else(|| Error::internal(format!("macvlan {ifname:?} vanished from the pod")))
}

fn create_renamed(
    s: &mut Sides,
    spec: &Spec,
    req: &dyn Fn(&Sides, &str) -> LinkRequest,
) -> Result<()> {
    let ifname = spec.ifname;
    let mut last = None;
    for _ in 0..8 {
        let tmp = random_veth_name();
        match s.master.link_add(&req(s, &tmp)) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(create_err(spec, e)),
        }
        let link = s
            .pod()
            .link_by_name(&tmp)
            .map_err(nl(format!("failed to look up {tmp:?} in the pod")))?
            .ok_or_else(|| Error::internal(format!("macvlan {tmp:?} vanished from the pod")))?;
        if let Err(e) = s.pod().link_set_name(link.index, ifname) {
            if let Err(d) = s.pod().link_del(link.index) {
                tracing::warn!("could not delete temporary macvlan {tmp:?}: {d}");
            }
            return Err(if e.is_exists() {
                exists_in_pod(ifname)
            } else {
                nl(format!("failed to rename macvlan to {ifname:?}"))(e)
            });
        }
        return Ok(());
    }
    Err(Error::internal(format!(
        "failed to find a free temporary name for macvlan {ifname:?}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

fn open_handles(r: &Resolved, pod: &Netns) -> Result<(Netlink, Option<Netlink>)> {
    let podnl = Netlink::open(Some(pod)).map_err(nl("failed to open netlink in the pod"))?;
    let host = if r.conf.link_in_container {
        None
    } else {
        Some(Netlink::open(None).map_err(nl("failed to open netlink"))?)
    };
    Ok((podnl, host))
}

fn master_of(host: Option<&mut Netlink>, podnl: &mut Netlink, r: &Resolved) -> Result<LinkInfo> {
    let master = match host {
        Some(h) => resolve_master(h, r, "node")?,
        None => resolve_master(podnl, r, "pod")?,
    };
    config::check_mtu(r, &master.name, master.mtu)?;
    Ok(master)
}

impl Macvlan {
    /// The steps of ADD, each change recorded in `undo` as it lands. `podnl` is the
    /// pod's handle, `host` the node's (none with `linkInContainer`).
    fn add_steps<'a>(
        &self,
        args: &'a CmdArgs,
        r: &Resolved,
        pod: &Netns,
        (podnl, host): &mut (Netlink, Option<Netlink>),
        undo: &mut Undo<'a, (Netlink, Option<Netlink>)>,
    ) -> Result<CniResult> {
        let env = &args.env;
        let master = master_of(host.as_mut(), podnl, r)?;
        let spec = Spec {
            ifname: &env.ifname,
            master: &master,
            mode: r.mode,
            mtu: r.mtu,
            mac: r.mac,
        };
        let link = {
            let mut sides = match host.as_mut() {
                Some(h) => Sides {
                    master: h,
                    pod: Some(&mut *podnl),
                    pod_ns: Some(pod),
                },
                None => Sides {
                    master: &mut *podnl,
                    pod: None,
                    pod_ns: None,
                },
            };
            create_macvlan(&mut sides, &spec)?
        };
        let (idx, ifname) = (link.index, env.ifname.as_str());
        undo.push("delete the macvlan", move |(podnl, _)| {
            del_link(podnl, idx, ifname)
        });

        let mut result = CniResult {
            interfaces: vec![Interface {
                name: env.ifname.clone(),
                mac: mac_string(&link),
                sandbox: env.netns.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        if r.ipam_type.is_some() {
            // (DNS: the reference macvlan reports the config's, set below.)
            ipam::add_into(args, &mut result, 0)?;
            // Only now: a failed IPAM ADD took nothing.
            undo.push("release IPAM", |_| ipam::del(args));
            let mut sysctl = pod.clone();
            set_iface_sysctls(
                &mut sysctl,
                ifname,
                &[("ipv4", "arp_notify", "1"), ("ipv6", "ndisc_notify", "1")],
            );
            configure_iface(podnl, &mut sysctl, ifname, &result)?;
        } else {
            podnl
                .link_set_up(link.index, true)
                .map_err(nl(format!("failed to set {:?} up", env.ifname)))?;
        }
        result.dns = r.dns.clone();
        Ok(result)
    }
}

impl Plugin for Macvlan {
    fn about(&self) -> String {
        about(
            "meta-macvlan",
            env!("CARGO_PKG_VERSION"),
            "macvlan delegate",
        )
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let r = validated(args)?;
        let pod = open_netns(&args.env.netns)?;
        let mut handles = open_handles(&r, &pod)?;
        transaction(&mut handles, |h, undo| {
            self.add_steps(args, &r, &pod, h, undo)
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        // Only the JSON types (the kit's DEL rule): the master, mode, MTU and MAC do not
        // matter to DEL.
        config::parse(args)?;
        del_link_and_ipam(args, args)
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        let env = &args.env;
        let (prev, pod) = ipam::check_start(args, args)?;
        let (mut podnl, mut host) = open_handles(&r, &pod)?;
        let master = master_of(host.as_mut(), &mut podnl, &r)?;
        let (_, cont) = check_container_link(args, &prev, &mut podnl, "macvlan")?;
        if cont.macvlan_mode != Some(r.mode) {
            return Err(Error::internal(format!(
                "container macvlan mode {} does not match expected value: {}",
                cont.macvlan_mode.map(config::mode_str).unwrap_or("unknown"),
                config::mode_str(r.mode)
            )));
        }
        if cont.link != Some(master.index) {
            return Err(Error::internal(format!(
                "container interface {} is not a macvlan of master {:?}",
                cont.name, master.name
            )));
        }
        check_iface_ips(&mut podnl, &env.ifname, &prev)?;
        check_iface_routes(&mut podnl, &env.ifname, &prev)?;
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        if !r.conf.link_in_container {
            let mut host = Netlink::open(None).map_err(nl("failed to open netlink"))?;
            let master = resolve_master(&mut host, &r, "node")
                .map_err(|e| Error::new(code::NOT_AVAILABLE, e.msg))?;
            config::check_mtu(&r, &master.name, master.mtu)?;
        }
        if r.ipam_type.is_some() {
            ipam::status(args)?;
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        config::load(args)?;
        ipam::gc(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meta_netlink::{FakeNetlink, RouteInfo, TABLE_MAIN};

    fn resolved(master: Option<&str>) -> Resolved {
        Resolved {
            conf: Default::default(),
            mode: MacvlanMode::Bridge,
            master: master.map(str::to_string),
            mtu: None,
            mac: None,
            ipam_type: None,
            dns: Default::default(),
        }
    }

    fn link(index: u32, name: &str, mtu: u32) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            kind: Some("veth".into()),
            mtu,
            up: true,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            ..Default::default()
        }
    }

    fn default_route(dst: &str, oif: Option<u32>) -> RouteInfo {
        RouteInfo {
            dst: dst.parse().unwrap(),
            oif,
            table: TABLE_MAIN,
            protocol: 3,
            ..Default::default()
        }
    }

    #[test]
    fn default_master_is_the_default_route_interface() {
        let mut f = FakeNetlink::new();
        f.add_existing_link(link(5, "up0", 1500));
        f.add_existing_link(link(6, "up1", 9000));
        assert_eq!(default_route_iface(&mut f).unwrap(), None);
        let e = resolve_master(&mut f, &resolved(None), "node").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"master\""), "{}", e.msg);
        // IPv6 default only.
        f.add_existing_route(default_route("::/0", Some(6)));
        assert_eq!(default_route_iface(&mut f).unwrap().unwrap().name, "up1");
        // IPv4 wins; a multipath route (no oif) is skipped.
        f.add_existing_route(default_route("0.0.0.0/0", None));
        f.add_existing_route(default_route("10.0.0.0/8", Some(6)));
        f.add_existing_route(default_route("0.0.0.0/0", Some(5)));
        let m = resolve_master(&mut f, &resolved(None), "node").unwrap();
        assert_eq!((m.name.as_str(), m.mtu), ("up0", 1500));
    }

    #[test]
    fn named_master() {
        let mut f = FakeNetlink::new();
        f.add_existing_link(link(5, "up0", 1500));
        assert_eq!(
            resolve_master(&mut f, &resolved(Some("up0")), "node")
                .unwrap()
                .index,
            5
        );
        let e = resolve_master(&mut f, &resolved(Some("nope0")), "pod").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("\"master\"") && e.msg.contains("nope0") && e.msg.contains("pod"),
            "{}",
            e.msg
        );
    }

    fn spec<'a>(master: &'a LinkInfo, mode: MacvlanMode) -> Spec<'a> {
        Spec {
            ifname: "net1",
            master,
            mode,
            mtu: Some(1400),
            mac: Some([2, 0, 0, 0, 0, 0x42]),
        }
    }

    #[test]
    fn creates_down_with_mode_mtu_mac() {
        let mut f = FakeNetlink::new();
        let m = link(5, "up0", 1500);
        f.add_existing_link(m.clone());
        let mut s = Sides {
            master: &mut f,
            pod: None,
            pod_ns: None,
        };
        let l = create_macvlan(&mut s, &spec(&m, MacvlanMode::Vepa)).unwrap();
        assert_eq!(l.name, "net1");
        assert_eq!(l.kind.as_deref(), Some("macvlan"));
        assert_eq!(l.macvlan_mode, Some(MacvlanMode::Vepa));
        assert_eq!(l.link, Some(5));
        assert_eq!(
            (l.mtu, l.mac, l.up),
            (1400, Some([2, 0, 0, 0, 0, 0x42]), false)
        );
    }

    #[test]
    fn existing_ifname_in_pod_is_refused_untouched() {
        let mut f = FakeNetlink::new();
        let m = link(5, "up0", 1500);
        f.add_existing_link(m.clone());
        f.add_existing_link(link(7, "net1", 1500));
        let mut s = Sides {
            master: &mut f,
            pod: None,
            pod_ns: None,
        };
        let e = create_macvlan(&mut s, &spec(&m, MacvlanMode::Bridge)).unwrap_err();
        assert!(
            e.msg.contains("net1") && e.msg.contains("already exists"),
            "{}",
            e.msg
        );
        assert!(f.requests().is_empty(), "{:?}", f.requests());
    }

    #[test]
    fn name_clash_outside_the_pod_falls_back_to_rename() {
        let mut f = FakeNetlink::new();
        let m = link(5, "up0", 1500);
        f.add_existing_link(m.clone());
        f.fail_next("link_add", meta_netlink::Error::netlink("link_add", 17));
        let mut s = Sides {
            master: &mut f,
            pod: None,
            pod_ns: None,
        };
        let l = create_macvlan(&mut s, &spec(&m, MacvlanMode::Bridge)).unwrap();
        assert_eq!(l.name, "net1");
        assert_eq!(l.macvlan_mode, Some(MacvlanMode::Bridge));
        let reqs = f.requests();
        assert_eq!(reqs.len(), 3, "{reqs:?}");
        match (&reqs[1], &reqs[2]) {
            (meta_netlink::Request::LinkAdd(r), meta_netlink::Request::SetName(_, n)) => {
                assert!(r.name.starts_with("veth"), "{}", r.name);
                assert_eq!(n, "net1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.links().unwrap().len(), 3, "no temporary link left");
    }

    #[test]
    fn failed_rename_deletes_the_temporary_link() {
        let mut f = FakeNetlink::new();
        let m = link(5, "up0", 1500);
        f.add_existing_link(m.clone());
        f.fail_next("link_add", meta_netlink::Error::netlink("link_add", 17));
        f.fail_next("link_set_name", meta_netlink::Error::netlink("set", 16));
        let mut s = Sides {
            master: &mut f,
            pod: None,
            pod_ns: None,
        };
        let e = create_macvlan(&mut s, &spec(&m, MacvlanMode::Bridge)).unwrap_err();
        assert!(e.msg.contains("rename"), "{}", e.msg);
        assert_eq!(f.links().unwrap().len(), 2, "temporary link left behind");
    }

    #[test]
    fn kernel_errors_get_hints() {
        let mut f = FakeNetlink::new();
        let m = link(5, "up0", 1500);
        f.add_existing_link(m.clone());
        f.fail_next("link_add", meta_netlink::Error::netlink("link_add", 22));
        let mut s = Sides {
            master: &mut f,
            pod: None,
            pod_ns: None,
        };
        let e = create_macvlan(&mut s, &spec(&m, MacvlanMode::Passthru)).unwrap_err();
        assert_eq!(e.code, 999);
        assert!(
            e.msg.contains("passthru") && e.msg.contains("up0"),
            "{}",
            e.msg
        );
    }
}
