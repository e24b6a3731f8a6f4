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
    // Every error names the network asking for the default route and its interface.
    let ctx = format!(
        "network {} ({ifname}): default-route",
        entry.attachments[d].network
    );
    let err = |what: String| Error::internal(format!("{ctx}: {what}"));
    let ns = meta_netlink::Netns::open(netns).map_err(|e| err(format!("open netns: {e}")))?;
    let mut nl =
        meta_netlink::Netlink::open(Some(&ns)).map_err(|e| err(format!("netlink: {e}")))?;
    let link = nl
        .link_by_name(&ifname)
        .map_err(|e| err(format!("look up {ifname}: {}", e.cause())))?
        .ok_or_else(|| err(format!("{ifname} not found in the pod")))?;
    for v6 in [false, true] {
        let fam: Vec<_> = gws.iter().filter(|g| g.is_ipv6() == v6).collect();
        let Some(gw) = fam.first() else { continue };
        let any: ipnet::IpNet = if v6 { "::/0" } else { "0.0.0.0/0" }
            .parse()
            .map_err(|_| Error::internal("literal"))?;
        for r in nl
            .routes(v6, None)
            .map_err(|e| err(format!("list routes: {}", e.cause())))?
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
                    let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                    let dev = r
                        .oif
                        .map(|i| format!(" dev {}", device(&mut nl, entry, i)))
                        .unwrap_or_default();
                    return Err(err(format!(
                        "delete the other default route {}{via}{dev}: {}",
                        r.dst,
                        e.cause()
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
            .map_err(|e| err(format!("set {any} via {gw} dev {ifname}: {}", e.cause())))?;
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

/// A pod interface by index, as a person reads it: its name and the network that made it
/// (`eth0 (network cluster)`), else its name, else the index.
fn device(nl: &mut meta_netlink::Netlink, entry: &Entry, index: u32) -> String {
    match nl.link_by_index(index) {
        Ok(Some(l)) => match entry.attachments.iter().find(|a| a.ifname == l.name) {
            Some(a) => format!("{} (network {})", l.name, a.network),
            None => l.name,
        },
        _ => format!("with index {index}"),
    }
}
