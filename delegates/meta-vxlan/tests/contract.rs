//! The delegate contract (meta_tests::contract) for the vxlan binary, in both modes:
//!
//! * `secondary`: a NAD with `vni` 4242 and a static peer, on an underlay `ul0` (a veth
//!   end inside the test's node namespace with 192.168.77.2/24 and the default route);
//!   the segment (`mvx4242` on `mbr4242`, its flood list, the owner file) stays for the
//!   next pod and is not residue, per-pod FDB entries would be;
//! * `primary`: the cluster network on the node bridge `meta0`, with the node subnet
//!   file the agent writes (10.244.1.0/24 of 10.244.0.0/16, MTU 1450) and masquerade
//!   (so firewall rules are part of what must not be left behind).
//!
//! Error tables: meta-tests/fixtures/contract/vxlan-{secondary,primary}.json.

use meta_netlink::{Netlink, NetlinkOps, RouteSpec};
use meta_tests::World;
use meta_tests::contract::KernelSubject;
use serde_json::{Value, json};

fn bin() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_meta-vxlan").into()
}

fn underlay(w: &World) {
    meta_tests::veth_pair_in(w.node.netns(), "ul0", "ul0p");
    let mut nl = Netlink::open(Some(w.node.netns())).expect("netlink");
    let ul = nl.link_by_name("ul0").expect("links").expect("ul0");
    nl.addr_add(ul.index, "192.168.77.2/24".parse().expect("net"))
        .expect("underlay address");
    nl.route_add(&RouteSpec {
        gw: Some("192.168.77.1".parse().expect("ip")),
        oif: Some(ul.index),
        ..RouteSpec::new("0.0.0.0/0".parse().expect("net"))
    })
    .expect("default route");
}

fn secondary_conf(w: &World, version: &str) -> Value {
    json!({"cniVersion": version, "name": "ctvx", "type": "meta-vxlan", "vni": 4242,
           "peers": ["192.168.77.9"], "stateDir": w.path("state"),
           "ipam": {"type": "host-local", "dataDir": w.path("ipam"),
                    "ranges": [[{"subnet": "10.98.0.0/24"}]]}})
}

fn secondary() -> KernelSubject {
    KernelSubject {
        name: "vxlan-secondary",
        bin: bin(),
        setup: underlay,
        conf: secondary_conf,
        infra: &["mvx4242", "mbr4242"],
        firewall: false,
    }
}

fn subnet_file(w: &World) {
    meta_overlay::write_subnet_file(
        &w.path("subnet.env"),
        "10.244.1.0/24".parse().expect("net"),
        1450,
        "10.244.0.0/16".parse().expect("net"),
    )
    .expect("subnet file");
}

fn primary_conf(w: &World, version: &str) -> Value {
    json!({"cniVersion": version, "name": "cluster", "type": "meta-vxlan",
           "subnetFile": w.path("subnet.env"),
           "ipam": {"dataDir": w.path("ipam")}})
}

fn primary() -> KernelSubject {
    KernelSubject {
        name: "vxlan-primary",
        bin: bin(),
        setup: subnet_file,
        conf: primary_conf,
        infra: &["meta0"],
        firewall: true,
    }
}

meta_tests::contract_tests!(secondary: secondary());
meta_tests::contract_tests!(primary: primary());
