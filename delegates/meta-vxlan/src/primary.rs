//! Primary mode: the pod's cluster network (`eth0`) on the node bridge.
//!
//! ADD: the node bridge (default `meta0`, MTU from the subnet file, a MAC derived from the
//! gateway address), a veth pair with the host end on the bridge, an address from the node
//! subnet (host-local unless another IPAM is configured), the gateway (the subnet's first
//! address unless IPAM says otherwise) on the bridge, IPv4/IPv6 forwarding on, and in the
//! pod a default route and a route to the cluster CIDR, both via the gateway. With `ipMasq`
//! (default), traffic from the pod to outside the cluster CIDR is masqueraded (one
//! meta-firewall rule per pod address: `saddr <pod ip> daddr != <cluster CIDR> masquerade`,
//! removed at DEL and GC). Pod-to-pod traffic between nodes is routed by the node through
//! the overlay device that the node side ([`meta_overlay`]) maintains.

use crate::Vxlan;
use crate::common::{
    PLACEHOLDER_RANGE, apply_dns, ensure_bridge, first_host, interfaces, refresh_macs,
    with_node_ipam,
};
use crate::config::{Primary, Resolved};
use cni_core::{CmdArgs, CniResult, Error, Result, Route, code};
use ipnet::IpNet;
use meta_delegate::link::check_bridge;
use meta_delegate::{
    Handles, Undo, check_veth_on_bridge, configure_iface, internal, ipam, nl, set_iface_sysctls,
    transaction, veth_on_bridge,
};
use meta_netlink::{LinkInfo, Mac, Netlink, NetlinkOps, SCOPE_LINK};
use meta_overlay::{SubnetFile, read_subnet_file};
use std::net::IpAddr;

/// The subnet, cluster CIDR and MTU: the configured values, the rest from the subnet file.
pub(crate) fn node_settings(p: &Primary) -> Result<SubnetFile> {
    if let (Some(subnet), Some(cluster_cidr), Some(mtu)) = (p.subnet, p.cluster_cidr, p.mtu) {
        return Ok(SubnetFile {
            cluster_cidr,
            subnet,
            mtu,
        });
    }
    let f = read_subnet_file(&p.subnet_file).map_err(|e| {
        if e.is_not_found() {
            Error::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "subnet file {} does not exist yet: the node's overlay is not set up \
                     (meta-cni-agent writes it), or configure subnet, clusterCIDR and mtu",
                    p.subnet_file.display()
                ),
            )
        } else {
            Error::io(e.to_string())
        }
    })?;
    let s = SubnetFile {
        cluster_cidr: p.cluster_cidr.unwrap_or(f.cluster_cidr),
        subnet: p.subnet.unwrap_or(f.subnet),
        mtu: p.mtu.unwrap_or(f.mtu),
    };
    if !s.cluster_cidr.contains(&s.subnet.network())
        || s.subnet.addr().is_ipv4() != s.cluster_cidr.addr().is_ipv4()
    {
        return Err(Error::config(format!(
            "subnet {} is not inside the cluster CIDR {}",
            s.subnet, s.cluster_cidr
        )));
    }
    Ok(s)
}

/// The subnet to put into the IPAM section at DEL/GC time, when the file may be gone.
fn subnet_for_release(args: &CmdArgs, p: &Primary) -> IpNet {
    if let Ok(s) = node_settings(p) {
        return s.subnet;
    }
    if let Ok(Some(prev)) = args.conf.prev_result()
        && let Some(ip) = prev.ips.first()
    {
        return ip.address.trunc();
    }
    PLACEHOLDER_RANGE.parse().unwrap_or_default()
}

/// The bridge's MAC: `02:6e` + the gateway's IPv4 address (or 4 hash bytes of an IPv6 one).
fn bridge_mac(gw: IpAddr) -> Mac {
    let mut m = meta_overlay::vtep_mac_for(gw);
    m[1] = 0x6e;
    m
}

/// Puts `gw` on the bridge, removing other global addresses of its family (the node
/// subnet changed: the bridge is ours).
fn ensure_gw_addr(host: &mut Netlink, br: &LinkInfo, gw: IpNet) -> Result<()> {
    let addrs = host
        .addrs(Some(br.index))
        .map_err(nl("could not get list of IP addresses"))?;
    for a in &addrs {
        if a.addr != gw && a.addr.addr().is_ipv4() == gw.addr().is_ipv4() && a.scope < SCOPE_LINK {
            tracing::warn!(bridge = %br.name, "replacing stale address {} by {gw}", a.addr);
            match host.addr_del(br.index, a.addr) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(nl(format!(
                        "could not remove {} from {:?}",
                        a.addr, br.name
                    ))(e));
                }
            }
        }
    }
    if !addrs.iter().any(|a| a.addr == gw) {
        match host.addr_add(br.index, gw) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(nl(format!("could not add {gw} to {:?}", br.name))(e)),
        }
    }
    Ok(())
}

/// The addresses masquerade rules are made for: each pod IP with the cluster CIDR's prefix
/// length, so that the rule reads `saddr <pod ip> daddr != <cluster CIDR>`.
fn masq_nets(result: &CniResult, cluster: IpNet) -> Vec<IpNet> {
    result
        .ips
        .iter()
        .filter(|i| i.address.addr().is_ipv4() == cluster.addr().is_ipv4())
        .filter_map(|i| IpNet::new(i.address.addr(), cluster.prefix_len()).ok())
        .collect()
}

impl Vxlan {
    /// ADD in primary mode: `iargs` is the invocation with the node subnet's IPAM.
    pub(crate) fn primary_add(
        &self,
        args: &CmdArgs,
        r: &Resolved,
        p: &Primary,
    ) -> Result<CniResult> {
        let node = node_settings(p)?;
        let iargs = with_node_ipam(args, node.subnet)?;
        ipam::validate(&iargs)?;
        let mut h = Handles::open(&args.env.netns)?;
        transaction(&mut h, |h, undo| {
            self.primary_steps(args, &iargs, r, p, &node, h, undo)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn primary_steps<'a>(
        &'a self,
        args: &'a CmdArgs,
        iargs: &'a CmdArgs,
        r: &Resolved,
        p: &Primary,
        node: &SubnetFile,
        h: &mut Handles,
        undo: &mut Undo<'a, Handles>,
    ) -> Result<CniResult> {
        let env = &args.env;
        let ifname = env.ifname.as_str();
        let br = ensure_bridge(
            &mut h.host,
            &p.bridge,
            Some(node.mtu),
            Some(bridge_mac(first_host(&node.subnet))),
        )?;
        let veth = veth_on_bridge(h, ifname, Some(node.mtu), r.mac, &br, undo)?;
        let (host, podnl, pod) = (&mut h.host, &mut h.pod, &h.ns);
        let mut result = CniResult {
            interfaces: interfaces(args, &br, &veth),
            ..Default::default()
        };
        ipam::add_into(iargs, &mut result, 2)?;
        // Only now: a failed IPAM ADD took nothing.
        undo.push("release IPAM", |_| ipam::del(iargs));
        let mut gws: Vec<IpNet> = Vec::new();
        for ip in &mut result.ips {
            let gw = *ip.gateway.get_or_insert_with(|| first_host(&ip.address));
            let gnet = IpNet::new(gw, ip.address.prefix_len())
                .map_err(|e| Error::internal(format!("bad gateway {gw}: {e}")))?;
            if !gws.iter().any(|g| g.addr().is_ipv4() == gw.is_ipv4()) {
                gws.push(gnet);
            }
        }
        // Routes: the cluster CIDR and the default route via the gateway of their family.
        let fam_gw = |v4: bool| {
            gws.iter()
                .find(|g| g.addr().is_ipv4() == v4)
                .map(|g| g.addr())
        };
        let cluster = node.cluster_cidr;
        if let Some(gw) = fam_gw(cluster.addr().is_ipv4())
            && !result.routes.iter().any(|rt| rt.dst == cluster)
        {
            result.routes.push(Route::new(cluster, Some(gw)));
        }
        for g in &gws {
            let any: IpNet = if g.addr().is_ipv4() {
                IpNet::V4(Default::default())
            } else {
                IpNet::V6(Default::default())
            };
            if !result.routes.iter().any(|rt| rt.dst == any) {
                result.routes.push(Route::new(any, Some(g.addr())));
            }
        }
        for g in &gws {
            ensure_gw_addr(host, &br, *g)?;
        }
        let mut sysctl = pod.clone();
        set_iface_sysctls(
            &mut sysctl,
            ifname,
            &[("ipv6", "accept_dad", "0"), ("ipv4", "arp_notify", "1")],
        );
        configure_iface(podnl, &mut sysctl, ifname, &result)?;
        if gws.iter().any(|g| g.addr().is_ipv4()) {
            meta_delegate::enable_forwarding(false)?;
        }
        if gws.iter().any(|g| g.addr().is_ipv6()) {
            meta_delegate::enable_forwarding(true)?;
        }
        if p.ip_masq {
            let nets = masq_nets(&result, cluster);
            if !nets.is_empty() {
                undo.push("remove the masquerade", |_| {
                    self.firewall
                        .teardown_masq(args.conf.name(), &env.container_id, &env.ifname)
                        .map_err(internal("masquerade teardown"))
                });
                self.firewall
                    .setup_masq(args.conf.name(), &env.container_id, &env.ifname, &nets)
                    .map_err(internal("failed to set up IP masquerade"))?;
            }
        }
        refresh_macs(host, &mut result);
        apply_dns(args, &mut result)?;
        Ok(result)
    }

    pub(crate) fn primary_del(&self, args: &CmdArgs, p: &Primary) -> Result<()> {
        let env = &args.env;
        // The node subnet is only a placeholder here when the file is gone: host-local
        // releases by container ID and ifname.
        meta_delegate::del_link_and_ipam(
            args,
            &with_node_ipam(args, subnet_for_release(args, p))?,
        )?;
        if p.ip_masq {
            self.firewall
                .teardown_masq(args.conf.name(), &env.container_id, &env.ifname)
                .map_err(internal("failed to remove IP masquerade"))?;
        }
        Ok(())
    }

    pub(crate) fn primary_check(&self, args: &CmdArgs, p: &Primary) -> Result<()> {
        let node = node_settings(p)?;
        let iargs = with_node_ipam(args, node.subnet)?;
        let (prev, pod) = ipam::check_start(args, &iargs)?;
        let Handles {
            mut host,
            pod: mut podnl,
            ..
        } = Handles::from_netns(pod)?;
        let br = check_bridge(&mut host, &p.bridge)?;
        check_veth_on_bridge(args, &prev, &mut host, &mut podnl, &br)?;
        // The gateway of each address is on the bridge.
        let have: Vec<IpAddr> = host
            .addrs(Some(br.index))
            .map_err(nl("failed to list bridge addresses"))?
            .into_iter()
            .map(|a| a.addr.addr())
            .collect();
        for ip in &prev.ips {
            if let Some(gw) = ip.gateway
                && !have.contains(&gw)
            {
                return Err(Error::internal(format!(
                    "gateway {gw} of {} is not on bridge {}",
                    ip.address, br.name
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn primary_status(&self, args: &CmdArgs, p: &Primary) -> Result<()> {
        let node = node_settings(p).map_err(|e| Error::new(code::NOT_AVAILABLE, e.msg))?;
        ipam::status(&with_node_ipam(args, node.subnet)?)
    }

    pub(crate) fn primary_gc(&self, args: &CmdArgs, p: &Primary) -> Result<()> {
        let valid = meta_delegate::valid_attachments(args)?;
        ipam::gc(&with_node_ipam(args, subnet_for_release(args, p))?)?;
        if p.ip_masq {
            self.firewall
                .gc(args.conf.name(), &valid)
                .map_err(internal("firewall GC"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::IpConfig;

    #[test]
    fn masquerade_rules_use_the_cluster_cidr() {
        let res = CniResult {
            ips: vec![
                IpConfig {
                    address: "10.244.1.5/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                    extra: Default::default(),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                    interface: None,
                    extra: Default::default(),
                },
            ],
            ..Default::default()
        };
        let nets = masq_nets(&res, "10.244.0.0/16".parse().unwrap());
        assert_eq!(nets, vec!["10.244.1.5/16".parse::<IpNet>().unwrap()]);
        assert_eq!(nets[0].trunc().to_string(), "10.244.0.0/16");
    }

    #[test]
    fn settings_from_config_or_file() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("subnet.env");
        let mut p = Primary {
            bridge: "meta0".into(),
            subnet_file: file.clone(),
            subnet: None,
            cluster_cidr: None,
            mtu: None,
            ip_masq: true,
        };
        let e = node_settings(&p).unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains("does not exist yet"), "{e}");
        meta_overlay::write_subnet_file(
            &file,
            "10.244.3.0/24".parse().unwrap(),
            1450,
            "10.244.0.0/16".parse().unwrap(),
        )
        .unwrap();
        let s = node_settings(&p).unwrap();
        assert_eq!(
            (s.subnet.to_string(), s.mtu),
            ("10.244.3.0/24".into(), 1450)
        );
        p.mtu = Some(1400);
        assert_eq!(node_settings(&p).unwrap().mtu, 1400);
        p.subnet = Some("10.9.0.0/24".parse().unwrap());
        assert!(node_settings(&p).unwrap_err().msg.contains("not inside"));
        // Everything configured: the file is not needed.
        p.subnet_file = d.path().join("absent");
        p.subnet = Some("10.9.0.0/24".parse().unwrap());
        p.cluster_cidr = Some("10.9.0.0/16".parse().unwrap());
        assert!(node_settings(&p).is_ok());
    }

    #[test]
    fn bridge_macs() {
        assert_eq!(
            bridge_mac("10.244.1.1".parse().unwrap()),
            [2, 0x6e, 10, 244, 1, 1]
        );
    }
}
