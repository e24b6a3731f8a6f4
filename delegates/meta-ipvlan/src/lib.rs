//! The ipvlan delegate: an ipvlan link on a master interface, created directly in the pod
//! namespace, with addresses from IPAM or from a chained `prevResult` — the reference
//! `ipvlan` plugin's behaviour and configuration fields (`master`, `mode`, `mtu`,
//! `linkInContainer`), as a library (run in-process by the meta plugin) and as the
//! standalone `meta-ipvlan` binary.
//!
//! The logic ([`add_with`], [`del_with`], [`check_with`], [`status_with`], [`gc_with`]) is
//! written against [`NetlinkOps`], [`PodSysctl`] and [`IpamOps`], so that it runs on the
//! kernel through [`Kernel`] and, in tests, on [`testing`]'s fakes without root.
//!
//! A kernel without the ipvlan driver refuses the link; ADD then fails with a message
//! containing [`UNSUPPORTED_MSG`] and leaves nothing behind.
//!
//! # Differences from the reference plugin (containernetworking/plugins 1.1.1)
//!
//! * A failed ADD is rolled back (link deleted, IPAM released); the reference leaves the
//!   link in the pod when IPAM or the interface configuration fails.
//! * Addresses are required (an `ipam` type, or a chained `prevResult` with IPs) and this
//!   is checked before anything is created; the MTU must be 0 or 68..65535 and not above
//!   the master's, an existing `CNI_IFNAME` in the pod is reported before creating.
//!   Configuration errors carry code 7 (the reference mostly uses 999).
//! * DEL never resolves the master (the reference fails DEL without `master` when the node
//!   has no default route); it deletes the link, then releases IPAM.
//! * CHECK without `master` verifies that the link's parent still exists (the reference
//!   looks up an empty name and fails); with `master` it also verifies the link is on it.
//! * STATUS (the configured master exists on the node, code 50 otherwise; IPAM status)
//!   and GC (IPAM) are implemented; the reference 1.1.1 predates them.
//! * `l3s` refused by a kernel without `CONFIG_IPVLAN_L3S` is reported as such; default
//!   routes without a single output interface (multipath) are skipped when looking for
//!   the default master.

#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod testing;

pub use backend::{Backend, DelegateIpam, IpamOps, Kernel, PodSysctl};
pub use config::{IpvlanConf, Resolved};

use cni_core::{CmdArgs, CniResult, Error, Interface, Plugin, Result, code};
use meta_delegate::{
    DelegateType, Undo, check_container_link, check_iface_ips, check_iface_routes, configure_iface,
    del_link, del_link_named, mac_string, nl, set_iface_sysctls, transaction,
};
use meta_netlink::{IpvlanFlags, LinkKind, LinkRequest, NetlinkOps, Netns};

/// The ipvlan delegate's registration: its CNI type names (it implements every field of
/// the reference ipvlan plugin).
pub const DELEGATE: DelegateType = DelegateType {
    names: &["ipvlan", "meta-ipvlan"],
    unimplemented: &[],
    make: || Box::new(Ipvlan::new()),
    validate: |args, chained| validated(args, &meta_delegate::ipam::validate, chained).map(|_| ()),
};

/// ADD's checks before the kernel: the configuration, addresses to use (from IPAM, or
/// from the prevResult an earlier plugin gives when `chained`), and a bundled IPAM.
fn validated(
    args: &CmdArgs,
    ipam_validate: &dyn Fn(&CmdArgs) -> Result<()>,
    chained: bool,
) -> Result<config::Resolved> {
    let r = config::load(args)?;
    if !(chained && r.prev.is_none()) {
        r.require_addresses()?;
    }
    if r.ipam_type.is_some() {
        ipam_validate(args)?;
    }
    Ok(r)
}

/// The words every ADD error caused by a kernel without ipvlan support contains.
pub const UNSUPPORTED_MSG: &str = "ipvlan unsupported by this kernel";

/// `ENOTSUPP` (kernel-internal 524): what the ipvlan driver answers for `l3s` when it was
/// built without `CONFIG_IPVLAN_L3S`.
const ENOTSUPP: i32 = 524;

/// What ADD needs besides the two netlink handles.
pub struct AddCtx<'a> {
    /// The pod namespace (the link is created directly in it).
    pub pod_ns: &'a Netns,
    /// The pod namespace's sysctls.
    pub sysctl: &'a mut dyn PodSysctl,
    /// IPAM.
    pub ipam: &'a dyn IpamOps,
    /// The temporary name the link is created under before it is renamed in the pod.
    pub tmp_name: &'a str,
}

/// The master's name: the configured one; else, chained, the only interface of the
/// `prevResult`; else the default route's interface (in the pod namespace with
/// `linkInContainer`, else on the node).
pub fn resolve_master<N: NetlinkOps>(node: &mut N, pod: &mut N, r: &Resolved) -> Result<String> {
    if let Some(m) = &r.master {
        return Ok(m.clone());
    }
    if let Some(prev) = &r.prev {
        return match prev.interfaces.as_slice() {
            [only] if !only.name.is_empty() => Ok(only.name.clone()),
            _ => Err(Error::config(
                "chained master failure. PrevResult lacks a single named interface",
            )),
        };
    }
    let (h, where_) = if r.link_in_container {
        (pod, "pod")
    } else {
        (node, "node")
    };
    meta_delegate::link::default_route_iface(h)?
        .map(|l| l.name)
        .ok_or_else(|| {
            Error::internal(format!(
                "no default route interface found in the {where_} namespace (set \"master\")"
            ))
        })
}

fn create_err(master: &str, mode: meta_netlink::IpvlanMode, e: meta_netlink::Error) -> Error {
    if e.is_unsupported() {
        Error::internal(format!(
            "failed to create ipvlan: {UNSUPPORTED_MSG} (no ipvlan driver, CONFIG_IPVLAN): {e}"
        ))
    } else if e.errno() == Some(ENOTSUPP) && mode == meta_netlink::IpvlanMode::L3s {
        Error::internal(format!(
            "failed to create ipvlan: mode l3s {UNSUPPORTED_MSG} (CONFIG_IPVLAN_L3S): {e}"
        ))
    } else {
        Error::internal(format!("failed to create ipvlan on master {master:?}: {e}"))
    }
}

/// ADD: creates the ipvlan link in the pod, configures it from IPAM (or the chained
/// `prevResult`) and returns the result; on failure undoes what it did (link deleted,
/// IPAM released) and returns the error.
///
/// Requests, in order: the master lookup (and the default route, when needed; an MTU
/// above the master's is refused here), `link_add`
/// of an ipvlan named `tmp_name` on the master with the mode, default (bridge) flags and
/// MTU, `netns` = the pod (on the node handle; on the pod handle with `netns` unset with
/// `linkInContainer`), then in the pod: rename to `CNI_IFNAME`, addresses, up, routes.
pub fn add_with<N: NetlinkOps>(
    node: &mut N,
    pod: &mut N,
    cx: &mut AddCtx<'_>,
    args: &CmdArgs,
    r: &Resolved,
) -> Result<CniResult> {
    r.require_addresses()?;
    transaction(pod, |pod, undo| add_steps(node, pod, cx, args, r, undo))
}

/// The steps of ADD, each change recorded in `undo` (over the pod handle) as it lands.
fn add_steps<'a, 'c: 'a, N: NetlinkOps>(
    node: &mut N,
    pod: &mut N,
    cx: &mut AddCtx<'c>,
    args: &'a CmdArgs,
    r: &Resolved,
    undo: &mut Undo<'a, N>,
) -> Result<CniResult> {
    let env = &args.env;
    let ifname = env.ifname.as_str();
    let master_name = resolve_master(node, pod, r)?;
    let master = {
        let h = if r.link_in_container {
            &mut *pod
        } else {
            &mut *node
        };
        h.link_by_name(&master_name)
            .map_err(nl(format!("failed to lookup master {master_name:?}")))?
            .ok_or_else(|| {
                Error::internal(format!(
                    "failed to lookup master {master_name:?}: Link not found"
                ))
            })?
    };
    // The ipvlan driver refuses an MTU above the master's (EINVAL); say so plainly.
    if let Some(mtu) = r.mtu.filter(|m| *m > master.mtu) {
        return Err(Error::config(format!(
            "invalid mtu {mtu}: larger than the MTU {} of master {master_name:?}",
            master.mtu
        )));
    }
    if pod
        .link_by_name(ifname)
        .map_err(nl("failed to list pod links"))?
        .is_some()
    {
        return Err(Error::internal(format!(
            "container interface name provided ({ifname}) already exists"
        )));
    }
    let req = LinkRequest {
        name: cx.tmp_name.to_string(),
        kind: LinkKind::Ipvlan {
            master: master.index,
            mode: r.mode,
            flags: IpvlanFlags::Bridge,
        },
        mtu: r.mtu,
        mac: None,
        netns: if r.link_in_container {
            None
        } else {
            Some(cx.pod_ns.clone())
        },
        up: false,
    };
    {
        let h = if r.link_in_container {
            &mut *pod
        } else {
            &mut *node
        };
        h.link_add(&req)
            .map_err(|e| create_err(&master_name, r.mode, e))?;
    }
    let tmp = cx.tmp_name;
    let link = match pod.link_by_name(tmp) {
        Ok(Some(l)) => l,
        other => {
            undo.push("delete the new ipvlan", move |pod| del_link_named(pod, tmp));
            return Err(match other {
                Err(e) => nl("failed to look up the new ipvlan")(e),
                _ => Error::internal(format!("the new ipvlan {tmp} is not in the pod namespace")),
            });
        }
    };
    let idx = link.index;
    undo.push("delete the ipvlan", move |pod| {
        del_link(pod, idx, &args.env.ifname)
    });
    pod.link_set_name(link.index, ifname)
        .map_err(nl(format!("failed to rename ipvlan to {ifname:?}")))?;
    let link = pod
        .link_by_index(link.index)
        .map_err(nl(format!("failed to refetch ipvlan {ifname:?}")))?
        .ok_or_else(|| Error::internal(format!("ipvlan {ifname:?} vanished")))?;

    let source = if r.ips_from_prev() {
        r.prev.clone().unwrap_or_default()
    } else {
        let ipam = cx.ipam;
        let res = ipam.add(args)?;
        // Only now: a failed IPAM ADD took nothing.
        undo.push("release IPAM", move |_| ipam.del(args));
        if res.ips.is_empty() {
            return Err(Error::internal("IPAM plugin returned missing IP config"));
        }
        res
    };
    let mut result = CniResult {
        interfaces: vec![Interface {
            name: ifname.to_string(),
            mac: mac_string(&link),
            sandbox: env.netns.clone(),
            ..Default::default()
        }],
        ips: source.ips,
        routes: source.routes,
        // Like the reference: the configuration's dns, whatever IPAM said.
        dns: r.dns.clone(),
        ..Default::default()
    };
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    set_iface_sysctls(
        cx.sysctl,
        ifname,
        &[("ipv4", "arp_notify", "1"), ("ipv6", "ndisc_notify", "1")],
    );
    configure_iface(pod, cx.sysctl, ifname, &result)?;
    Ok(result)
}

/// DEL: deletes `CNI_IFNAME` in the pod when the namespace (`pod`) is still there and the
/// link exists, then releases IPAM. Succeeds when the namespace, the link or the master
/// are already gone.
///
/// Like every delegate's DEL, it reads nothing of the configuration but the IPAM section:
/// ADD's validation never runs, so a DEL after a refused ADD succeeds.
pub fn del_with<N: NetlinkOps>(
    pod: Option<&mut N>,
    ipam: &dyn IpamOps,
    args: &CmdArgs,
) -> Result<()> {
    if let Some(pod) = pod {
        del_link_named(pod, &args.env.ifname)?;
    }
    if args.conf.ipam_type().is_some() {
        ipam.del(args)?;
    }
    Ok(())
}

/// CHECK: the `prevResult`'s container interface is an ipvlan of the configured mode (and
/// MAC) on an existing master, with the result's addresses and routes; IPAM's allocation
/// is checked too.
pub fn check_with<N: NetlinkOps>(
    node: &mut N,
    pod: &mut N,
    ipam: &dyn IpamOps,
    args: &CmdArgs,
    r: &Resolved,
) -> Result<()> {
    let env = &args.env;
    let ifname = env.ifname.as_str();
    let prev = r
        .prev
        .as_ref()
        .ok_or_else(|| Error::config("Required prevResult missing"))?;
    if r.ipam_type.is_some() {
        ipam.check(args)?;
    }
    // The mode is checked after the MAC here (the kit checks kind and MAC together);
    // both are CHECK failures either way.
    let (_, link) = check_container_link(args, prev, pod, "ipvlan")?;
    if link.ipvlan_mode != Some(r.mode) {
        return Err(Error::internal(format!(
            "Container IPVlan mode {} does not match expected value: {}",
            link.ipvlan_mode.map(config::mode_str).unwrap_or("unknown"),
            config::mode_str(r.mode)
        )));
    }
    // The master: the kernel reports the parent's index, in the pod's namespace when it
    // gives no link-netnsid, else in the peer namespace (the node's, where we run).
    let parent_reported_in_our_handle = r.link_in_container == link.link_netnsid.is_none();
    {
        let h = if r.link_in_container {
            &mut *pod
        } else {
            &mut *node
        };
        match &r.master {
            Some(m) => {
                let ml = h
                    .link_by_name(m)
                    .map_err(nl(format!("failed to lookup master {m:?}")))?
                    .ok_or_else(|| {
                        Error::internal(format!("failed to lookup master {m:?}: Link not found"))
                    })?;
                if parent_reported_in_our_handle && link.link.is_some_and(|i| i != ml.index) {
                    return Err(Error::internal(format!(
                        "Container interface {ifname} is not an ipvlan of master {m:?}"
                    )));
                }
            }
            None => {
                if let (true, Some(i)) = (parent_reported_in_our_handle, link.link)
                    && h.link_by_index(i)
                        .map_err(nl("failed to look up the master"))?
                        .is_none()
                {
                    return Err(Error::internal(format!(
                        "the master (index {i}) of container interface {ifname} is gone"
                    )));
                }
            }
        }
    }
    check_iface_ips(pod, ifname, prev)?;
    check_iface_routes(pod, ifname, prev)?;
    Ok(())
}

/// Whether STATUS looks at the node: only a configured master on the node can be checked
/// there (a default one depends on the pod or the chain).
pub fn status_needs_node(r: &Resolved) -> bool {
    r.master.is_some() && !r.link_in_container
}

/// STATUS: the configured master exists on the node (code 50 otherwise), and IPAM can
/// serve an ADD. `node` is only used when [`status_needs_node`].
pub fn status_with<N: NetlinkOps>(
    node: Option<&mut N>,
    ipam: &dyn IpamOps,
    args: &CmdArgs,
    r: &Resolved,
) -> Result<()> {
    if let (true, Some(node), Some(m)) = (status_needs_node(r), node, &r.master)
        && node
            .link_by_name(m)
            .map_err(nl(format!("failed to lookup master {m:?}")))?
            .is_none()
    {
        return Err(Error::new(
            code::NOT_AVAILABLE,
            format!("master {m:?} not found on the node"),
        ));
    }
    if r.ipam_type.is_some() {
        ipam.status(args)?;
    }
    Ok(())
}

/// GC: IPAM releases the allocations of attachments not listed as valid (the links
/// themselves went with their pods' namespaces).
pub fn gc_with(ipam: &dyn IpamOps, args: &CmdArgs, r: &Resolved) -> Result<()> {
    meta_delegate::valid_attachments(args)?;
    if r.ipam_type.is_some() {
        ipam.gc(args)?;
    }
    Ok(())
}

/// The ipvlan plugin over a [`Backend`] ([`Kernel`] by default).
#[derive(Debug, Default)]
pub struct Ipvlan<B: Backend = Kernel> {
    backend: B,
}

impl Ipvlan<Kernel> {
    /// The plugin on the real kernel.
    pub fn new() -> Self {
        Ipvlan { backend: Kernel }
    }
}

impl<B: Backend> Ipvlan<B> {
    /// The plugin over another backend (tests: [`testing::FakeBackend`]).
    pub fn with_backend(backend: B) -> Self {
        Ipvlan { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: Backend> Plugin for Ipvlan<B> {
    fn about(&self) -> String {
        meta_delegate::about("meta-ipvlan", env!("CARGO_PKG_VERSION"), "ipvlan delegate")
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let r = validated(args, &|a| self.backend.ipam().validate(a), false)?;
        let pod_ns = self.backend.open_pod(&args.env.netns)?;
        let mut node = self.backend.node_nl()?;
        let mut pod = self.backend.pod_nl(&pod_ns)?;
        let mut sysctl = self.backend.pod_sysctl(&pod_ns);
        let tmp = self.backend.tmp_name();
        let mut cx = AddCtx {
            pod_ns: &pod_ns,
            sysctl: sysctl.as_mut(),
            ipam: self.backend.ipam(),
            tmp_name: &tmp,
        };
        add_with(&mut node, &mut pod, &mut cx, args, &r)
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        // JSON types only (the kit's DEL rule).
        let _: IpvlanConf = args.conf.typed()?;
        let mut pod = match self.backend.open_pod_for_del(&args.env.netns)? {
            Some(ns) => Some(self.backend.pod_nl(&ns)?),
            None => None,
        };
        del_with(pod.as_mut(), self.backend.ipam(), args)
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        if r.prev.is_none() {
            return Err(Error::config("Required prevResult missing"));
        }
        let pod_ns = self.backend.open_pod(&args.env.netns)?;
        let mut node = self.backend.node_nl()?;
        let mut pod = self.backend.pod_nl(&pod_ns)?;
        check_with(&mut node, &mut pod, self.backend.ipam(), args, &r)
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        let mut node = if status_needs_node(&r) {
            Some(self.backend.node_nl()?)
        } else {
            None
        };
        status_with(node.as_mut(), self.backend.ipam(), args, &r)
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        gc_with(self.backend.ipam(), args, &r)
    }
}
