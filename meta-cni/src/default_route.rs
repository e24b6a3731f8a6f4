//! The `default-route` of the network-selection annotation, applied after every attachment
//! is added: the chosen attachment owns the default route of each family its gateways are
//! in; other attachments' default routes of those families go, in the pod and in their
//! results (as Multus does).

use crate::journal::Entry;
use cni_core::{Error, Result, Route};
use meta_netlink::NetlinkOps;

/// Adjusts the pod's routes and the entry's results. Returns whether anything changed (the
/// journal then needs the adjusted results).
pub fn apply(entry: &mut Entry, netns: &str) -> Result<bool> {
    let Some(d) = entry
        .attachments
        .iter()
        .position(|a| !a.default_route.is_empty())
    else {
        return Ok(false);
    };
    let gws = entry.attachments[d].default_route.clone();
    let ifname = entry.attachments[d].ifname.clone();
    let ns = meta_netlink::Netns::open(netns)
        .map_err(|e| Error::internal(format!("default-route: open netns: {e}")))?;
    let mut nl = meta_netlink::Netlink::open(Some(&ns))
        .map_err(|e| Error::internal(format!("default-route: netlink: {e}")))?;
    let link = nl
        .link_by_name(&ifname)
        .map_err(|e| Error::internal(format!("default-route: {e}")))?
        .ok_or_else(|| Error::internal(format!("default-route: {ifname} not found in the pod")))?;
    for v6 in [false, true] {
        let fam: Vec<_> = gws.iter().filter(|g| g.is_ipv6() == v6).collect();
        let Some(gw) = fam.first() else { continue };
        let any: ipnet::IpNet = if v6 { "::/0" } else { "0.0.0.0/0" }
            .parse()
            .map_err(|_| Error::internal("literal"))?;
        for r in nl
            .routes(v6, None)
            .map_err(|e| Error::internal(format!("default-route: {e}")))?
        {
            if r.dst.prefix_len() == 0 {
                let spec = meta_netlink::RouteSpec {
                    dst: r.dst,
                    gw: r.gw,
                    oif: r.oif,
                    ..Default::default()
                };
                if let Err(e) = nl.route_del(&spec)
                    && !e.is_not_found()
                {
                    return Err(Error::internal(format!(
                        "default-route: delete {}: {e}",
                        r.dst
                    )));
                }
            }
        }
        let spec = meta_netlink::RouteSpec {
            dst: any,
            gw: Some(**gw),
            oif: Some(link.index),
            ..Default::default()
        };
        nl.route_replace(&spec)
            .map_err(|e| Error::internal(format!("default-route via {gw} dev {ifname}: {e}")))?;
        for (i, a) in entry.attachments.iter_mut().enumerate() {
            let Some(mut r) = a.cni_result() else {
                continue;
            };
            r.routes
                .retain(|rt| !(rt.dst.prefix_len() == 0 && rt.dst.addr().is_ipv6() == v6));
            if i == d {
                r.routes.push(Route::new(any, Some(**gw)));
            }
            a.record(&r);
        }
    }
    Ok(true)
}
