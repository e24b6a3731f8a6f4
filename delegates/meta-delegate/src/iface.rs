//! Kernel-side helpers every delegate uses: the veth pair into the pod, the container
//! interface's addresses and routes from a result (the reference `ipam.ConfigureIface`),
//! and the checks CHECK runs against a prevResult.

use cni_core::{CniResult, Error, Result};
use ipnet::IpNet;
use meta_netlink::{
    LinkInfo, LinkKind, LinkRequest, Mac, NetlinkOps, Netns, RouteSpec, format_mac,
    random_veth_name, wait_addrs_not_tentative,
};
use std::net::IpAddr;
use std::time::Duration;

/// Turns a netlink error into a CNI error (code 999) with context.
pub fn nl(ctx: impl std::fmt::Display) -> impl FnOnce(meta_netlink::Error) -> Error {
    // `ctx` describes the request with names; the error's own request label would add the
    // kernel's interface index (`dev 3`), so only the kernel's answer follows.
    move |e| Error::internal(format!("{ctx}: {}", e.cause()))
}

/// Turns any error (firewall, I/O, ...) into a CNI error (code 999) with context.
pub fn internal<E: std::fmt::Display>(ctx: impl std::fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| Error::internal(format!("{ctx}: {e}"))
}

/// Sysctls of the pod namespace. Keys are `/`-separated paths under `/proc/sys`
/// (`net/ipv4/conf/<ifname>/arp_notify`), so interface names with dots stay intact.
pub trait PodSysctl {
    /// Reads a key.
    fn get(&mut self, key: &str) -> meta_netlink::Result<String>;
    /// Writes a key.
    fn set(&mut self, key: &str, value: &str) -> meta_netlink::Result<()>;
}

impl PodSysctl for Netns {
    fn get(&mut self, key: &str) -> meta_netlink::Result<String> {
        self.sysctl_get(key)
    }
    fn set(&mut self, key: &str, value: &str) -> meta_netlink::Result<()> {
        self.sysctl_set(key, value)
    }
}

/// The per-interface sysctl key `net/<family>/conf/<ifname>/<key>` (`family`: `ipv4`
/// or `ipv6`).
pub fn iface_sysctl(family: &str, ifname: &str, key: &str) -> String {
    format!("net/{family}/conf/{ifname}/{key}")
}

/// Best-effort settings of the container interface (`arp_notify`, DAD, ...): a failure is
/// logged, as in the reference plugins, which ignore these errors too.
pub fn set_iface_sysctls(sysctl: &mut dyn PodSysctl, ifname: &str, kv: &[(&str, &str, &str)]) {
    for (family, key, value) in kv {
        let k = iface_sysctl(family, ifname, key);
        if let Err(e) = sysctl.set(&k, value) {
            tracing::debug!("sysctl {k}={value} in pod: {e}");
        }
    }
}

/// Opens the pod's namespace; code 3 (container unknown) when it does not exist.
pub fn open_netns(path: &str) -> Result<Netns> {
    Netns::open(path).map_err(|e| {
        if e.is_not_found() {
            Error::new(
                cni_core::code::UNKNOWN_CONTAINER,
                format!("netns {path:?} does not exist"),
            )
        } else {
            Error::internal(format!("failed to open netns {path:?}: {e}"))
        }
    })
}

/// Opens the pod's namespace for DEL: `None` when the path is empty or gone.
pub fn open_netns_for_del(path: &str) -> Result<Option<Netns>> {
    if path.is_empty() {
        return Ok(None);
    }
    match Netns::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.is_not_found() => Ok(None),
        // A path that exists but is no longer a namespace (runtime unmounted it): gone.
        Err(meta_netlink::Error::Invalid(_)) => Ok(None),
        Err(e) => Err(Error::internal(format!(
            "failed to open netns {path:?}: {e}"
        ))),
    }
}

/// The netlink handles of one invocation: the node's (the calling thread's namespace),
/// the pod's, and the pod namespace itself.
pub struct Handles {
    /// A handle in the node namespace.
    pub host: meta_netlink::Netlink,
    /// A handle bound to the pod namespace.
    pub pod: meta_netlink::Netlink,
    /// The pod namespace.
    pub ns: Netns,
}

impl Handles {
    /// Opens the pod namespace `netns` (code 3 when it does not exist) and both handles.
    pub fn open(netns: &str) -> Result<Handles> {
        Self::from_netns(open_netns(netns)?)
    }

    /// Both handles for an already opened pod namespace.
    pub fn from_netns(ns: Netns) -> Result<Handles> {
        Ok(Handles {
            host: meta_netlink::Netlink::open(None).map_err(nl("failed to open netlink"))?,
            pod: meta_netlink::Netlink::open(Some(&ns))
                .map_err(nl("failed to open netlink in the pod"))?,
            ns,
        })
    }
}

/// What [`setup_veth`] made.
#[derive(Debug, Clone)]
pub struct VethPair {
    /// The host end (in the handle's namespace), up.
    pub host: LinkInfo,
    /// The container end, in the pod namespace, down.
    pub container: LinkInfo,
}

/// Creates a veth pair with the container end named `ifname` directly in `pod` and the
/// host end (random `vethXXXXXXXX` name) in the namespace of `host_nl`, then sets the host
/// end up. An existing `ifname` in the pod is an error naming it; a clash of the random
/// host name is retried.
pub fn setup_veth(
    host_nl: &mut impl NetlinkOps,
    pod_nl: &mut impl NetlinkOps,
    pod: &Netns,
    ifname: &str,
    mtu: Option<u32>,
    mac: Option<Mac>,
) -> Result<VethPair> {
    let exists =
        |pod_nl: &mut dyn FnMut() -> meta_netlink::Result<Option<LinkInfo>>| -> Result<()> {
            if pod_nl().map_err(nl("failed to list pod links"))?.is_some() {
                return Err(Error::internal(format!(
                    "container veth name provided ({ifname}) already exists"
                )));
            }
            Ok(())
        };
    exists(&mut || pod_nl.link_by_name(ifname))?;
    let mut last_err = None;
    for _ in 0..10 {
        let host_name = random_veth_name();
        if host_nl
            .link_by_name(&host_name)
            .map_err(nl("failed to list links"))?
            .is_some()
        {
            continue;
        }
        let req = LinkRequest {
            name: ifname.to_string(),
            kind: LinkKind::Veth {
                peer_name: host_name.clone(),
                peer_netns: None,
                peer_mac: None,
                peer_mtu: mtu,
            },
            mtu,
            mac,
            netns: Some(pod.clone()),
            up: false,
        };
        match host_nl.link_add(&req) {
            Ok(()) => {
                let host = host_nl
                    .link_by_name(&host_name)
                    .map_err(nl("failed to look up host veth"))?
                    .ok_or_else(|| Error::internal(format!("host veth {host_name} vanished")))?;
                let container = pod_nl
                    .link_by_name(ifname)
                    .map_err(nl("failed to look up container veth"))?
                    .ok_or_else(|| Error::internal(format!("container veth {ifname} vanished")))?;
                if let Err(e) = host_nl.link_set_up(host.index, true) {
                    let _ = host_nl.link_del(host.index);
                    return Err(nl(format!("failed to set {host_name} up"))(e));
                }
                return Ok(VethPair { host, container });
            }
            Err(e) if e.is_exists() => {
                // Either the pod got an `ifname` meanwhile, or the host name clashed.
                exists(&mut || pod_nl.link_by_name(ifname))?;
                last_err = Some(e);
            }
            Err(e) => return Err(nl(format!("failed to create veth pair for {ifname}"))(e)),
        }
    }
    Err(Error::internal(format!(
        "failed to find a free host veth name for {ifname}: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// A veth pair (see [`setup_veth`]) with its host end enslaved to `bridge`; its
/// deletion is recorded in `undo`.
pub fn veth_on_bridge<'a>(
    h: &mut Handles,
    ifname: &'a str,
    mtu: Option<u32>,
    mac: Option<Mac>,
    bridge: &LinkInfo,
    undo: &mut crate::Undo<'a, Handles>,
) -> Result<VethPair> {
    let veth = setup_veth(&mut h.host, &mut h.pod, &h.ns, ifname, mtu, mac)?;
    let idx = veth.container.index;
    undo.push("delete the container veth", move |h| {
        del_link(&mut h.pod, idx, ifname)
    });
    h.host
        .link_set_master(veth.host.index, Some(bridge.index))
        .map_err(nl(format!(
            "failed to connect {:?} to bridge {:?}",
            veth.host.name, bridge.name
        )))?;
    Ok(veth)
}

/// The family gateways of a result's IPs on `ifname` (first of each family).
fn family_gateways(result: &CniResult, ifname: &str) -> (Option<IpAddr>, Option<IpAddr>) {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &result.ips {
        if !ip_is_for(result, ip.interface, ifname) {
            continue;
        }
        if let Some(gw) = ip.gateway {
            match gw {
                IpAddr::V4(_) if v4.is_none() => v4 = Some(gw),
                IpAddr::V6(_) if v6.is_none() => v6 = Some(gw),
                _ => {}
            }
        }
    }
    (v4, v6)
}

fn ip_is_for(result: &CniResult, idx: Option<usize>, ifname: &str) -> bool {
    match idx {
        Some(i) => result
            .interfaces
            .get(i)
            .is_some_and(|iface| iface.name == ifname),
        None => false,
    }
}

/// The route the kernel gets for a result route: its own gateway, else the family
/// gateway of the interface's IPs, else none (on-link), with the 1.1 attributes.
pub fn route_spec(
    r: &cni_core::Route,
    oif: u32,
    gws: (Option<IpAddr>, Option<IpAddr>),
) -> RouteSpec {
    let gw = r.gw.or(if r.dst.addr().is_ipv4() { gws.0 } else { gws.1 });
    RouteSpec {
        dst: r.dst.trunc(),
        gw,
        oif: Some(oif),
        table: r.table,
        // Like the reference (ip.AddRoute), routes are universe-scoped unless the result
        // says otherwise.
        scope: Some(r.scope.unwrap_or(meta_netlink::SCOPE_UNIVERSE)),
        priority: r.priority,
        mtu: r.mtu,
        advmss: r.advmss,
        onlink: false,
        src: None,
    }
}

/// Configures the container interface `ifname` from `result`, inside the pod namespace
/// reached through `pod_nl`: enables IPv6 when an IPv6 address is coming, adds every IP
/// whose `interface` index names `ifname`, sets the link up, waits for IPv6 addresses to
/// leave tentative state when an IPv6 gateway is used, then adds the routes (a route
/// without a gateway uses the interface's gateway of its family; duplicates are skipped,
/// the first one wins).
pub fn configure_iface<N: NetlinkOps + ?Sized>(
    pod_nl: &mut N,
    sysctl: &mut dyn PodSysctl,
    ifname: &str,
    result: &CniResult,
) -> Result<()> {
    let link = pod_nl
        .link_by_name(ifname)
        .map_err(nl(format!("failed to look up {ifname}")))?
        .ok_or_else(|| Error::internal(format!("interface {ifname} not found in the pod")))?;
    let mut v6_enabled = false;
    for ip in &result.ips {
        let Some(i) = ip.interface else { continue };
        if result.interfaces.get(i).map(|x| x.name.as_str()) != Some(ifname) {
            return Err(Error::internal(format!(
                "failed to add IP addr {} to {ifname:?}: invalid interface index {i}",
                ip.address
            )));
        }
        if !v6_enabled && ip.address.addr().is_ipv6() {
            for dev in ["lo", ifname] {
                let key = iface_sysctl("ipv6", dev, "disable_ipv6");
                match sysctl.get(&key) {
                    Ok(v) if v.trim() == "0" => {}
                    Ok(_) => sysctl
                        .set(&key, "0")
                        .map_err(nl(format!("failed to enable IPv6 on {dev}")))?,
                    Err(e) => tracing::warn!("cannot read {key}: {e}"),
                }
            }
            v6_enabled = true;
        }
        pod_nl.addr_add(link.index, ip.address).map_err(nl(format!(
            "failed to add IP addr {} to {ifname:?}",
            ip.address
        )))?;
    }
    pod_nl
        .link_set_up(link.index, true)
        .map_err(nl(format!("failed to set {ifname} up")))?;
    let gws = family_gateways(result, ifname);
    if gws.1.is_some() {
        wait_addrs_not_tentative(pod_nl, link.index, Duration::from_secs(10))
            .map_err(nl(format!("IPv6 addresses of {ifname} did not settle")))?;
    }
    for r in &result.routes {
        let spec = route_spec(r, link.index, gws);
        match pod_nl.route_add(&spec) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                // The kernel's answer only: its request label names the device by index.
                let via = spec.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(Error::internal(format!(
                    "failed to add route {}{via} dev {ifname}: {}",
                    r.dst,
                    e.cause()
                )));
            }
        }
    }
    Ok(())
}

/// CHECK: every IP of the result that names `ifname` is on the interface.
pub fn check_iface_ips<N: NetlinkOps + ?Sized>(
    pod_nl: &mut N,
    ifname: &str,
    result: &CniResult,
) -> Result<()> {
    let link = pod_nl
        .link_by_name(ifname)
        .map_err(nl(format!("failed to look up {ifname}")))?
        .ok_or_else(|| Error::internal(format!("interface {ifname} not found in the pod")))?;
    let have: Vec<IpNet> = pod_nl
        .addrs(Some(link.index))
        .map_err(nl("failed to list addresses"))?
        .into_iter()
        .map(|a| a.addr)
        .collect();
    for ip in &result.ips {
        if !ip_is_for(result, ip.interface, ifname) {
            continue;
        }
        if !have.contains(&ip.address) {
            return Err(Error::internal(format!(
                "CHECK: {ifname} lacks address {} (has [{}])",
                ip.address,
                have.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

/// CHECK: every route of the result exists on `ifname` with the gateway it got at ADD
/// (a gateway-less route is looked up with the interface's family gateway, which is what
/// ADD installed — the reference 1.1.1 gets this case wrong).
pub fn check_iface_routes<N: NetlinkOps + ?Sized>(
    pod_nl: &mut N,
    ifname: &str,
    result: &CniResult,
) -> Result<()> {
    let link = pod_nl
        .link_by_name(ifname)
        .map_err(nl(format!("failed to look up {ifname}")))?
        .ok_or_else(|| Error::internal(format!("interface {ifname} not found in the pod")))?;
    let gws = family_gateways(result, ifname);
    for r in &result.routes {
        let want = route_spec(r, link.index, gws);
        let v6 = r.dst.addr().is_ipv6();
        let have = pod_nl
            .routes(v6, r.table)
            .map_err(nl("failed to list routes"))?;
        let found = have.iter().any(|h| {
            h.dst == want.dst && h.gw == want.gw && (h.oif == Some(link.index) || want.gw.is_some())
        });
        if !found {
            return Err(Error::internal(format!(
                "CHECK: route {} via {} on {ifname} not found",
                r.dst,
                want.gw
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "(on-link)".into())
            )));
        }
    }
    Ok(())
}

/// The MAC of a link, formatted, or empty.
pub fn mac_string(l: &LinkInfo) -> String {
    l.mac.as_ref().map(format_mac).unwrap_or_default()
}

/// DEL of the container interface: deletes `ifname` in the pod; a gone netns (or empty
/// `CNI_NETNS`) or a gone link is success.
pub fn del_pod_link(netns: &str, ifname: &str) -> Result<()> {
    let Some(pod) = open_netns_for_del(netns)? else {
        return Ok(());
    };
    let mut podnl =
        meta_netlink::Netlink::open(Some(&pod)).map_err(nl("failed to open netlink in the pod"))?;
    del_link_named(&mut podnl, ifname)
}

/// Deletes the link `ifname` through `h` when it exists; gone is success.
pub fn del_link_named<N: NetlinkOps + ?Sized>(h: &mut N, ifname: &str) -> Result<()> {
    if let Some(l) = h
        .link_by_name(ifname)
        .map_err(nl("failed to look up link"))?
    {
        del_link(h, l.index, ifname)?;
    }
    Ok(())
}

/// Deletes the link `index` (named `ifname` in messages); gone is success. Also the
/// undo step of every link an ADD created.
pub fn del_link<N: NetlinkOps + ?Sized>(h: &mut N, index: u32, ifname: &str) -> Result<()> {
    match h.link_del(index) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(nl(format!("failed to delete {ifname:?}"))(e)),
    }
}

/// The DEL of a delegate whose attachment is one interface in the pod plus an IPAM
/// allocation (bridge, macvlan, vxlan): the interface when the netns and the link are
/// still there, then the release by `ipam_args` (the invocation, or the configuration
/// IPAM really ran with). Nothing of ADD's validation runs: a DEL after a refused ADD, or
/// of a configuration that changed since, must succeed.
pub fn del_link_and_ipam(args: &cni_core::CmdArgs, ipam_args: &cni_core::CmdArgs) -> Result<()> {
    del_pod_link(&args.env.netns, &args.env.ifname)?;
    crate::ipam::del(ipam_args)
}

/// The about text of a bundled delegate (`CNI_COMMAND` unset).
pub fn about(binary: &str, version: &str, what: &str) -> String {
    format!("{binary} {version} (meta-cni {what})")
}

/// The attachments GC must keep, as (container ID, ifname) pairs.
pub fn valid_attachments(
    args: &cni_core::CmdArgs,
) -> Result<std::collections::HashSet<(String, String)>> {
    Ok(args
        .conf
        .gc_valid_attachments()?
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect())
}

/// CHECK of the container side against the prevResult (with the reference plugins'
/// messages): the prevResult's interface
/// `CNI_IFNAME` in sandbox `CNI_NETNS`, the link of that name in the pod, of the kernel
/// kind `kind` (`veth`, `macvlan`, ...), with the recorded MAC. Returns both.
pub fn check_container_link<N: NetlinkOps + ?Sized>(
    args: &cni_core::CmdArgs,
    prev: &CniResult,
    podnl: &mut N,
    kind: &str,
) -> Result<(cni_core::Interface, LinkInfo)> {
    let env = &args.env;
    let cont_if = prev
        .interfaces
        .iter()
        .find(|i| i.name == env.ifname && i.sandbox == env.netns)
        .ok_or_else(|| {
            Error::internal(format!(
                "Sandbox in prevResult doesn't match configured netns: no interface {} with sandbox {}",
                env.ifname, env.netns
            ))
        })?;
    let cont = podnl
        .link_by_name(&env.ifname)
        .map_err(nl("failed to look up container interface"))?
        .ok_or_else(|| {
            Error::internal(format!(
                "Container Interface name in prevResult: {} not found",
                env.ifname
            ))
        })?;
    if cont.kind.as_deref() != Some(kind) {
        return Err(Error::internal(format!(
            "Error: Container interface {} not of type {kind}",
            cont.name
        )));
    }
    if !cont_if.mac.is_empty() && cont_if.mac != mac_string(&cont) {
        return Err(Error::internal(format!(
            "Interface {} Mac {} doesn't match container MAC: {}",
            cont.name,
            cont_if.mac,
            mac_string(&cont)
        )));
    }
    Ok((cont_if.clone(), cont))
}

/// CHECK of a veth attachment on a bridge, against the prevResult: the container end
/// (see [`check_container_link`]), its host peer enslaved to `bridge` (with the recorded
/// MAC), the IPs and the routes.
pub fn check_veth_on_bridge<N: NetlinkOps + ?Sized>(
    args: &cni_core::CmdArgs,
    prev: &CniResult,
    host: &mut N,
    podnl: &mut N,
    bridge: &LinkInfo,
) -> Result<()> {
    let ifname = &args.env.ifname;
    let (_, cont) = check_container_link(args, prev, podnl, "veth")?;
    let host_ok = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && i.name != bridge.name)
        .any(|i| {
            matches!(host.link_by_name(&i.name), Ok(Some(l)) if l.kind.as_deref() == Some("veth")
                && l.master == Some(bridge.index)
                && cont.link == Some(l.index)
                && (i.mac.is_empty() || i.mac == mac_string(&l)))
        });
    if !host_ok {
        return Err(Error::internal(format!(
            "CNI veth created for bridge {} was not found",
            bridge.name
        )));
    }
    check_iface_ips(podnl, ifname, prev)?;
    check_iface_routes(podnl, ifname, prev)?;
    Ok(())
}

/// Turns on IP forwarding of one family in the calling thread's namespace (the node), only
/// writing when it is off.
pub fn enable_forwarding(v6: bool) -> Result<()> {
    let key = if v6 {
        "net.ipv6.conf.all.forwarding"
    } else {
        "net.ipv4.ip_forward"
    };
    if meta_netlink::sysctl_get(key)
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    meta_netlink::sysctl_set(key, "1").map_err(nl("failed to enable forwarding"))
}
