//! Helpers shared by the macvlan integration tests.
#![allow(dead_code)]

use meta_netlink::{LinkKind, LinkRequest, MacvlanMode, Netlink, NetlinkOps, Netns, RouteSpec};
pub use meta_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Our binary.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meta-macvlan"))
}

/// The spec versions both we and the reference 1.1.1 speak.
pub const SHARED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// Every version we speak.
pub const OUR_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The default master's name in test node namespaces.
pub const MASTER: &str = "mvup0";

/// A macvlan config: `base` merged over the defaults, with the version and name set.
pub fn conf(version: &str, name: &str, base: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": name, "type": "macvlan"});
    if let (Some(m), Some(b)) = (c.as_object_mut(), base.as_object()) {
        for (k, v) in b {
            m.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A host-local ipam section with its own data dir.
pub fn host_local(data_dir: &Path, ranges: Value) -> Value {
    json!({"type": "host-local", "ranges": ranges, "dataDir": data_dir})
}

/// CNI_PATH for our plugin and the reference (IPAM binaries are looked up there).
pub fn cni_path() -> String {
    REFERENCE_DIR.to_string()
}

/// Adds a master in namespace `ns`: a veth pair `name` / `name`p, both ends up (so the
/// master has carrier), with the given MTU. With `default_route`, the master gets
/// 192.168.250.1/24 and the namespace a default route through it.
pub fn add_master_in(ns: &Netns, name: &str, mtu: u32, default_route: bool) {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let peer = format!("{name}p");
    nl.link_add(&LinkRequest {
        name: name.into(),
        kind: LinkKind::Veth {
            peer_name: peer.clone(),
            peer_netns: None,
            peer_mac: None,
            peer_mtu: Some(mtu),
        },
        mtu: Some(mtu),
        mac: None,
        netns: None,
        up: true,
    })
    .expect("create master veth");
    let m = nl.link_by_name(name).expect("links").expect("master");
    let p = nl.link_by_name(&peer).expect("links").expect("peer");
    nl.link_set_up(m.index, true).expect("up");
    nl.link_set_up(p.index, true).expect("peer up");
    if default_route {
        nl.addr_add(m.index, "192.168.250.1/24".parse().expect("net"))
            .expect("addr");
        nl.route_add(&RouteSpec {
            gw: Some("192.168.250.254".parse().expect("ip")),
            oif: Some(m.index),
            ..RouteSpec::new("0.0.0.0/0".parse().expect("net"))
        })
        .expect("default route");
    }
}

/// [`add_master_in`] in the world's node namespace.
pub fn add_master(w: &World, name: &str, mtu: u32, default_route: bool) {
    add_master_in(w.node.netns(), name, mtu, default_route);
}

/// A world with `pods` pods and the master [`MASTER`] (MTU 1500, default route) on the node.
pub fn world(pods: usize) -> World {
    let w = World::new(pods);
    add_master(&w, MASTER, 1500, true);
    w
}

/// Deletes a link of a namespace by name.
pub fn del_link(ns: &Netns, name: &str) {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let l = nl
        .link_by_name(name)
        .expect("links")
        .expect("link to delete");
    nl.link_del(l.index).expect("link_del");
}

/// The macvlan mode of `ifname` in `ns` (None when it is not there or not a macvlan).
pub fn macvlan_mode(ns: &Netns, ifname: &str) -> Option<MacvlanMode> {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    nl.link_by_name(ifname).expect("links")?.macvlan_mode
}

/// The MAC of `ifname` in `ns`, formatted.
pub fn mac_of(ns: &Netns, ifname: &str) -> Option<String> {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    nl.link_by_name(ifname)
        .expect("links")?
        .mac
        .map(|m| meta_netlink::format_mac(&m))
}

/// Runs one verb of `bin` in the world's node namespace against pod `pod`, with CNI_ARGS.
#[allow(clippy::too_many_arguments)]
pub fn invoke_args(
    w: &World,
    bin: &Path,
    verb: &str,
    cid: &str,
    pod: usize,
    ifname: &str,
    conf: &Value,
    args: &str,
) -> Run {
    let netns = w.pod(pod);
    let path = cni_path();
    let inv = Invocation {
        verb,
        container_id: cid,
        netns: &netns,
        ifname,
        args,
        path: &path,
        ..Default::default()
    };
    run_in(w.node.netns(), bin, &inv, conf.to_string().as_bytes())
}

/// Runs one verb of `bin` in the world's node namespace against pod `pod`.
pub fn invoke(
    w: &World,
    bin: &Path,
    verb: &str,
    cid: &str,
    pod: usize,
    ifname: &str,
    conf: &Value,
) -> Run {
    invoke_args(
        w,
        bin,
        verb,
        cid,
        pod,
        ifname,
        conf,
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
    )
}

/// `conf` with `prevResult` set.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// The host-local files of a data dir that are reservations (not locks or the
/// last-reserved markers).
pub fn ip_files(dir: &Path) -> Vec<String> {
    dir_contents(dir)
        .into_keys()
        .filter(|k| !k.ends_with("lock") && !k.contains("last_reserved_ip"))
        .collect()
}
