//! The bridge delegate: a Linux bridge on the node, a veth pair into the pod, addresses
//! from IPAM, optional gateway/masquerade/VLAN/hairpin/spoof-check — the reference
//! `bridge` plugin's behaviour and configuration fields, as a library (run in-process by
//! the meta plugin) and as the standalone `meta-bridge` binary.

pub mod config;

use cni_core::{CmdArgs, CniResult, Error, Interface, Plugin, Result, Route};
use config::Resolved;
use ipnet::IpNet;
use meta_delegate::link::BridgeSpec;
use meta_delegate::{
    DelegateType, Handles, Undo, Unimplemented, about, check_veth_on_bridge, configure_iface,
    del_link_and_ipam, internal, ipam, mac_string, nl, set_iface_sysctls, transaction,
    valid_attachments, veth_on_bridge,
};
use meta_firewall::{Firewall, Nftables};
use meta_netlink::{LinkInfo, Netlink, NetlinkOps};
use std::net::IpAddr;

/// The bridge delegate's registration: its CNI type names and the reference 1.x fields it
/// does not implement (masquerade is always nftables here).
pub const DELEGATE: DelegateType = DelegateType {
    names: &["bridge", "meta-bridge"],
    unimplemented: &[
        Unimplemented::field("portIsolation"),
        Unimplemented::field("disableContainerInterface"),
        Unimplemented::except("ipMasqBackend", &["nftables"]),
    ],
    make: || Box::new(Bridge::default()),
    validate: |args, _chained| validated(args).map(|_| ()),
};

/// ADD's checks before the kernel: the configuration and its bundled IPAM.
fn validated(args: &CmdArgs) -> Result<config::Resolved> {
    let r = config::load(args)?;
    ipam::validate(args)?;
    Ok(r)
}

/// The bridge plugin. The firewall backend is only used for `ipMasq` and `macspoofchk`.
pub struct Bridge {
    firewall: Box<dyn Firewall>,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge {
            firewall: Box::new(Nftables::default()),
        }
    }
}

impl Bridge {
    /// A bridge plugin with a given firewall backend.
    pub fn with_firewall(firewall: Box<dyn Firewall>) -> Self {
        Bridge { firewall }
    }
}

/// Makes sure the bridge exists, is a bridge, is up; returns it fresh.
fn ensure_bridge(host: &mut Netlink, r: &Resolved) -> Result<LinkInfo> {
    let name = &r.conf.bridge;
    let spec = BridgeSpec {
        name,
        vlan_filtering: r.conf.vlan != 0 || r.conf.vlan_trunk.is_some(),
        mtu: r.mtu,
        mac: None,
    };
    let (br, created) = meta_delegate::link::ensure_bridge(host, &spec)?;
    // Pin the random MAC the kernel gave a new bridge: otherwise it follows its lowest
    // port's MAC as pods come and go (and CHECK of older results fails).
    if created && let Some(mac) = br.mac.filter(|m| m.iter().any(|b| *b != 0)) {
        host.link_set_mac(br.index, mac)
            .map_err(nl("could not set bridge's mac"))?;
    }
    if r.conf.promisc_mode && !br.promisc {
        host.link_set_promisc(br.index, true)
            .map_err(nl(format!("could not set promiscuous mode on {name:?}")))?;
    }
    // We own the routes of this interface.
    let _ = meta_netlink::sysctl_set(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    Ok(br)
}

/// Puts `gw` (gateway address with the subnet's prefix) on the bridge, like the
/// reference's ensureAddr.
fn ensure_addr(host: &mut Netlink, br: &LinkInfo, gw: IpNet, force: bool) -> Result<()> {
    let addrs = host
        .addrs(Some(br.index))
        .map_err(nl("could not get list of IP addresses"))?;
    for a in addrs
        .iter()
        .filter(|a| a.addr.addr().is_ipv4() == gw.addr().is_ipv4())
    {
        if a.addr == gw {
            return Ok(());
        }
        if a.scope == meta_netlink::SCOPE_LINK {
            continue; // IPv6 link-local
        }
        let conflicts =
            gw.addr().is_ipv4() || a.addr.contains(&gw.addr()) || gw.contains(&a.addr.addr());
        if conflicts {
            if force {
                host.addr_del(br.index, a.addr).map_err(nl(format!(
                    "could not remove IP address from {:?}",
                    br.name
                )))?;
            } else {
                return Err(Error::internal(format!(
                    "{:?} already has an IP address different from {gw}",
                    br.name
                )));
            }
        }
    }
    match host.addr_add(br.index, gw) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(nl(format!("could not add IP address to {:?}", br.name))(e)),
    }
    // Pin the bridge's MAC, or it follows the lowest port MAC as ports churn. Read it
    // fresh: a bridge whose last port left has an all-zero MAC until a port joins again.
    let fresh = host
        .link_by_index(br.index)
        .map_err(nl("could not look up bridge"))?;
    if let Some(mac) = fresh
        .and_then(|b| b.mac)
        .filter(|m| m.iter().any(|b| *b != 0))
    {
        host.link_set_mac(br.index, mac)
            .map_err(nl("could not set bridge's mac"))?;
    }
    Ok(())
}

/// The network address + 1 of an address's subnet (the reference's calcGatewayIP).
fn calc_gateway(addr: &IpNet) -> IpAddr {
    match addr.network() {
        IpAddr::V4(n) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(n).wrapping_add(1))),
        IpAddr::V6(n) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n).wrapping_add(1))),
    }
}

impl Bridge {
    /// The steps of ADD, each change recorded in `undo` as it lands.
    fn add_steps<'a>(
        &'a self,
        args: &'a CmdArgs,
        r: &Resolved,
        h: &mut Handles,
        undo: &mut Undo<'a, Handles>,
    ) -> Result<CniResult> {
        let env = &args.env;
        let ifname = env.ifname.as_str();
        let br = ensure_bridge(&mut h.host, r)?;
        let veth = veth_on_bridge(h, ifname, r.mtu, r.mac, &br, undo)?;
        let (host, podnl, pod) = (&mut h.host, &mut h.pod, &h.ns);
        let hname = veth.host.name.clone();
        host.bridge_port_set_hairpin(veth.host.index, r.conf.hairpin_mode)
            .map_err(nl(format!("failed to setup hairpin mode for {hname}")))?;
        if r.conf.vlan != 0 {
            host.bridge_vlan_add(veth.host.index, r.conf.vlan as u16, true, true)
                .map_err(nl(format!(
                    "failed to setup vlan tag on interface {hname:?}"
                )))?;
        }
        for v in &r.vlans {
            host.bridge_vlan_add(veth.host.index, *v, false, false)
                .map_err(nl(format!(
                    "failed to setup vlan tag on interface {hname:?}"
                )))?;
        }

        let mut result = CniResult {
            interfaces: vec![
                Interface {
                    name: br.name.clone(),
                    mac: mac_string(&br),
                    ..Default::default()
                },
                Interface {
                    name: hname.clone(),
                    mac: mac_string(&veth.host),
                    ..Default::default()
                },
                Interface {
                    name: env.ifname.clone(),
                    mac: mac_string(&veth.container),
                    sandbox: env.netns.clone(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };

        let spoof_check = if r.conf.macspoofchk {
            let mac = veth
                .container
                .mac
                .ok_or_else(|| Error::internal("container veth has no MAC"))?;
            Some((hname.as_str(), mac))
        } else {
            None
        };
        let mut masq: Option<Vec<IpNet>> = None;

        if r.ipam_type.is_some() {
            ipam::add_into(args, &mut result, 2)?;
            // Only now: an IPAM ADD that failed took nothing (a refused duplicate ADD of
            // the same container must not release the live attachment's addresses).
            undo.push("release IPAM", |_| ipam::del(args));
            // Gateways and the default route, per family (the reference's calcGateways).
            let mut gws: Vec<IpNet> = Vec::new();
            let mut default_found = [false, false];
            for i in 0..result.ips.len() {
                let ip = &mut result.ips[i];
                if ip.gateway.is_none() && r.conf.is_gateway {
                    ip.gateway = Some(calc_gateway(&ip.address));
                }
                let (addr, gw) = (ip.address, ip.gateway);
                let fam = usize::from(addr.addr().is_ipv6());
                if r.conf.is_default_gateway {
                    let any: IpNet = if fam == 0 {
                        "0.0.0.0/0"
                            .parse()
                            .map_err(|_| Error::internal("bad literal"))?
                    } else {
                        "::/0".parse().map_err(|_| Error::internal("bad literal"))?
                    };
                    if !default_found[fam] {
                        default_found[fam] = result
                            .routes
                            .iter()
                            .any(|rt| rt.gw.is_some() && rt.dst == any);
                    }
                    if !default_found[fam] {
                        result.routes.push(Route::new(any, gw));
                        default_found[fam] = true;
                    }
                }
                if r.conf.is_gateway
                    && let Some(g) = gw
                {
                    let gnet = IpNet::new(g, addr.prefix_len())
                        .map_err(|e| Error::internal(format!("bad gateway {g}: {e}")))?;
                    gws.push(gnet);
                }
            }
            let mut sysctl = pod.clone();
            let dad: &[(&str, &str, &str)] = if r.conf.enabledad {
                &[("ipv6", "enhanced_dad", "1"), ("ipv6", "accept_dad", "1")]
            } else {
                &[("ipv6", "accept_dad", "0")]
            };
            set_iface_sysctls(&mut sysctl, ifname, dad);
            set_iface_sysctls(&mut sysctl, ifname, &[("ipv4", "arp_notify", "1")]);
            configure_iface(podnl, &mut sysctl, ifname, &result)?;

            if r.conf.is_gateway {
                for g in &gws {
                    ensure_addr(host, &br, *g, r.conf.force_address)
                        .map_err(|e| e.context("failed to set bridge addr"))?;
                }
                if gws.iter().any(|g| g.addr().is_ipv4()) {
                    meta_delegate::enable_forwarding(false)?;
                }
                if gws.iter().any(|g| g.addr().is_ipv6()) {
                    meta_delegate::enable_forwarding(true)?;
                }
            }
            if r.conf.ip_masq {
                masq = Some(result.ips.iter().map(|i| i.address).collect());
            }
        } else {
            podnl
                .link_set_up(veth.container.index, true)
                .map_err(nl(format!("failed to set {:?} up", env.ifname)))?;
        }

        // ipMasq and macspoofchk: one firewall transaction for the verb.
        if masq.is_some() || spoof_check.is_some() {
            undo.push("remove the firewall rules", |_| {
                self.firewall
                    .teardown_attachment(args.conf.name(), &env.container_id, &env.ifname)
                    .map_err(internal("firewall teardown"))
            });
            let what = match (masq.is_some(), spoof_check.is_some()) {
                (true, true) => "failed to set up IP masquerade and MAC spoof check",
                (true, false) => "failed to set up IP masquerade",
                _ => "failed to set up MAC spoof check",
            };
            self.firewall
                .setup_attachment(
                    args.conf.name(),
                    &env.container_id,
                    &env.ifname,
                    masq.as_deref(),
                    spoof_check,
                )
                .map_err(internal(what))?;
        }

        // MACs may have changed (bridge takes a port's MAC; addresses pin it).
        if let Ok(Some(h)) = host.link_by_index(veth.host.index) {
            result.interfaces[1].mac = mac_string(&h);
        }
        if let Ok(Some(b)) = host.link_by_name(&br.name) {
            result.interfaces[0].mac = mac_string(&b);
        }
        if let Some(dns) = args.conf.get("dns") {
            let d: cni_core::Dns = serde_json::from_value(dns.clone())
                .map_err(|e| Error::config(format!("invalid dns: {e}")))?;
            if !d.is_empty() {
                result.dns = d;
            }
        }
        Ok(result)
    }
}

impl Plugin for Bridge {
    fn about(&self) -> String {
        about("meta-bridge", env!("CARGO_PKG_VERSION"), "bridge delegate")
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let r = validated(args)?;
        let mut h = Handles::open(&args.env.netns)?;
        transaction(&mut h, |h, undo| self.add_steps(args, &r, h, undo))
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        // JSON types only (the kit's DEL rule): ADD's validation never runs here.
        let conf = config::parse(args)?;
        let env = &args.env;
        del_link_and_ipam(args, args)?;
        // Unlike the reference, rules go even when the netns is already gone.
        // One transaction for both features (the rules of the one not configured are
        // absent, or left over from an earlier configuration: removed too).
        if conf.macspoofchk || (conf.ip_masq && args.conf.ipam_type().is_some()) {
            self.firewall
                .teardown_attachment(args.conf.name(), &env.container_id, &env.ifname)
                .map_err(internal(
                    "failed to remove the IP masquerade and MAC spoof check rules",
                ))?;
        }
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        let (prev, pod) = ipam::check_start(args, args)?;
        let Handles {
            mut host,
            pod: mut podnl,
            ..
        } = Handles::from_netns(pod)?;
        // The bridge.
        let br_if = prev
            .interfaces
            .iter()
            .find(|i| i.name == r.conf.bridge && i.sandbox.is_empty());
        let br = meta_delegate::link::check_bridge(&mut host, &r.conf.bridge)?;
        if let Some(b) = br_if
            && !b.mac.is_empty()
            && b.mac != mac_string(&br)
        {
            return Err(Error::internal(format!(
                "bridge interface {} MAC doesn't match: {}",
                br.name, b.mac
            )));
        }
        if br.promisc != r.conf.promisc_mode {
            return Err(Error::internal(format!(
                "bridge interface {} configured promisc mode {} doesn't match current state: {}",
                br.name, r.conf.promisc_mode, br.promisc
            )));
        }
        check_veth_on_bridge(args, &prev, &mut host, &mut podnl, &br)
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        if r.ipam_type.is_some() {
            ipam::status(args)?;
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        ipam::gc(args)?;
        if r.conf.ip_masq || r.conf.macspoofchk {
            self.firewall
                .gc(args.conf.name(), &valid_attachments(args)?)
                .map_err(internal("firewall GC"))?;
        }
        Ok(())
    }
}
