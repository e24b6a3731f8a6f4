//! The same scenario against the fake and against the kernel (root, in a fresh
//! named namespace): keeps `FakeNetlink` honest about how the kernel behaves.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use meta_netlink::*;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn veth(name: &str, peer: &str) -> LinkRequest {
    LinkRequest {
        name: name.into(),
        kind: LinkKind::Veth {
            peer_name: peer.into(),
            peer_netns: None,
            peer_mac: None,
            peer_mtu: None,
        },
        mtu: None,
        mac: None,
        netns: None,
        up: false,
    }
}

fn idx(nl: &mut impl NetlinkOps, name: &str) -> u32 {
    nl.link_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} missing"))
        .index
}

/// `other` is a namespace the scenario may move links into.
fn scenario(nl: &mut impl NetlinkOps, other: &Netns) {
    // links
    nl.link_add(&LinkRequest {
        mtu: Some(1400),
        ..veth("c0", "c1")
    })
    .unwrap();
    assert!(nl.link_add(&veth("c0", "zz")).unwrap_err().is_exists());
    assert!(nl.link_add(&veth("zz", "c1")).unwrap_err().is_exists());
    let c0 = idx(nl, "c0");
    let c1 = idx(nl, "c1");
    let l0 = nl.link_by_index(c0).unwrap().unwrap();
    assert_eq!(
        (l0.kind.as_deref(), l0.mtu, l0.link, l0.up),
        (Some("veth"), 1400, Some(c1), false)
    );
    assert!(nl.link_by_index(c0 + 1000).unwrap().is_none());
    nl.link_set_up(c0, true).unwrap();
    nl.link_set_up(c1, true).unwrap();
    assert!(nl.link_set_name(c0, "c1").unwrap_err().is_exists());
    nl.link_set_name(c0, "renamed").unwrap();
    nl.link_set_name(c0, "c0").unwrap();
    assert!(nl.link_set_up(c0 + 1000, true).unwrap_err().is_not_found());
    assert!(nl.link_del(c0 + 1000).unwrap_err().is_not_found());
    let names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
    assert!(
        names.contains(&"lo".to_string()) && names.contains(&"c0".to_string()),
        "{names:?}"
    );

    // addresses and connected routes
    nl.addr_add(c0, net("10.60.0.1/24")).unwrap();
    assert!(
        nl.addr_add(c0, net("10.60.0.1/24"))
            .unwrap_err()
            .is_exists()
    );
    nl.addr_add(c0, net("fd00:60::1/64")).unwrap();
    assert!(
        nl.addr_add(c0, net("fd00:60::1/64"))
            .unwrap_err()
            .is_exists()
    );
    assert!(
        nl.addr_add(c0 + 1000, net("10.0.0.1/8"))
            .unwrap_err()
            .is_not_found()
    );
    let conn = nl.routes(false, None).unwrap();
    let conn = conn
        .iter()
        .find(|r| r.dst == net("10.60.0.0/24"))
        .expect("connected route");
    assert_eq!(
        (conn.protocol, conn.scope, conn.oif, conn.src),
        (PROTO_KERNEL, SCOPE_LINK, Some(c0), Some(ip("10.60.0.1")))
    );
    assert!(
        nl.routes(true, None)
            .unwrap()
            .iter()
            .any(|r| r.dst == net("fd00:60::/64") && r.oif == Some(c0))
    );

    // routes
    let via = RouteSpec {
        gw: Some(ip("10.60.0.254")),
        mtu: Some(1300),
        advmss: Some(1200),
        ..RouteSpec::new(net("10.61.0.0/16"))
    };
    nl.route_add(&via).unwrap();
    assert!(nl.route_add(&via).unwrap_err().is_exists());
    let r = nl
        .routes(false, None)
        .unwrap()
        .into_iter()
        .find(|r| r.dst == net("10.61.0.0/16"))
        .unwrap();
    assert_eq!(
        (
            r.gw, r.oif, r.scope, r.protocol, r.mtu, r.advmss, r.priority, r.table
        ),
        (
            Some(ip("10.60.0.254")),
            Some(c0),
            SCOPE_UNIVERSE,
            PROTO_BOOT,
            Some(1300),
            Some(1200),
            None,
            TABLE_MAIN
        )
    );
    nl.route_replace(&RouteSpec {
        mtu: Some(1280),
        ..via.clone()
    })
    .unwrap();
    let rs: Vec<RouteInfo> = nl
        .routes(false, None)
        .unwrap()
        .into_iter()
        .filter(|r| r.dst == net("10.61.0.0/16"))
        .collect();
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].mtu, Some(1280));
    let far = RouteSpec {
        gw: Some(ip("172.31.0.1")),
        oif: Some(c0),
        ..RouteSpec::new(net("0.0.0.0/0"))
    };
    assert!(nl.route_add(&far).is_err(), "unreachable gateway");
    nl.route_add(&RouteSpec {
        onlink: true,
        ..far.clone()
    })
    .unwrap();
    nl.route_add(&RouteSpec {
        table: Some(200),
        oif: Some(c0),
        ..RouteSpec::new(net("10.62.0.0/16"))
    })
    .unwrap();
    let t = nl.routes(false, Some(200)).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].scope, t[0].table), (SCOPE_LINK, 200));
    let v6 = RouteSpec {
        gw: Some(ip("fe80::1")),
        oif: Some(c0),
        ..RouteSpec::new(net("::/0"))
    };
    nl.route_add(&v6).unwrap();
    let d6 = nl
        .routes(true, None)
        .unwrap()
        .into_iter()
        .find(|r| r.dst == net("::/0"))
        .unwrap();
    assert_eq!((d6.gw, d6.priority), (Some(ip("fe80::1")), Some(1024)));
    nl.route_del(&via).unwrap();
    assert!(nl.route_del(&via).unwrap_err().is_not_found());
    nl.route_del(&v6).unwrap();

    // neighbours
    let n = NeighSpec {
        index: c0,
        ip: ip("10.60.0.7"),
        mac: [2, 0, 0, 0, 0x60, 7],
        permanent: true,
    };
    nl.neigh_add(&n).unwrap();
    nl.neigh_add(&n).unwrap();
    assert!(nl.neighs(Some(c0)).unwrap().contains(&n));
    nl.neigh_del(&n).unwrap();
    assert!(nl.neigh_del(&n).unwrap_err().is_not_found());

    // addresses go away
    nl.addr_del(c0, net("10.60.0.1/24")).unwrap();
    assert!(
        nl.addr_del(c0, net("10.60.0.1/24"))
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        !nl.routes(false, None)
            .unwrap()
            .iter()
            .any(|r| r.dst == net("10.60.0.0/24"))
    );

    // bridge + port + hairpin
    nl.link_add(&LinkRequest {
        name: "br0".into(),
        kind: LinkKind::Bridge {
            vlan_filtering: false,
        },
        mtu: None,
        mac: None,
        netns: None,
        up: true,
    })
    .unwrap();
    let br = idx(nl, "br0");
    assert!(nl.bridge_port_hairpin(c1).unwrap_err().is_not_found());
    nl.link_set_master(c1, Some(br)).unwrap();
    nl.bridge_port_set_hairpin(c1, true).unwrap();
    assert!(nl.bridge_port_hairpin(c1).unwrap());
    assert!(
        nl.link_set_master(c0, Some(c1)).is_err(),
        "only bridges are masters"
    );
    nl.link_set_master(c1, None).unwrap();
    assert_eq!(nl.link_by_index(c1).unwrap().unwrap().master, None);

    // macvlan on a veth parent, deleted with it
    nl.link_add(&LinkRequest {
        name: "mv0".into(),
        kind: LinkKind::Macvlan {
            master: c1,
            mode: MacvlanMode::Bridge,
        },
        mtu: None,
        mac: None,
        netns: None,
        up: false,
    })
    .unwrap();
    let mv = nl.link_by_name("mv0").unwrap().unwrap();
    assert_eq!(
        (mv.link, mv.macvlan_mode),
        (Some(c1), Some(MacvlanMode::Bridge))
    );

    // vxlan + fdb
    nl.link_add(&LinkRequest {
        name: "vx0".into(),
        kind: LinkKind::Vxlan {
            vni: 7,
            port: 4789,
            local: None,
            learning: true,
            dev: Some(c1),
        },
        mtu: None,
        mac: None,
        netns: None,
        up: false,
    })
    .unwrap();
    let vx = idx(nl, "vx0");
    let f = FdbSpec {
        index: vx,
        mac: [0; 6],
        dst: Some(ip("10.70.0.2")),
        vni: None,
        permanent: true,
        self_: true,
    };
    nl.fdb_add(&f).unwrap();
    nl.fdb_add(&f).unwrap();
    nl.fdb_add(&FdbSpec {
        dst: Some(ip("10.70.0.3")),
        ..f.clone()
    })
    .unwrap();
    let got = nl.fdbs(vx).unwrap();
    assert_eq!(got.iter().filter(|x| x.mac == [0; 6]).count(), 2, "{got:?}");
    assert!(got.contains(&f));
    nl.fdb_del(&f).unwrap();
    // the vxlan driver ignores deleting a remote the MAC's entry does not have
    nl.fdb_del(&f).unwrap();
    assert!(!nl.fdbs(vx).unwrap().contains(&f));
    // without dst, all remotes of the MAC go
    nl.fdb_del(&FdbSpec {
        dst: None,
        ..f.clone()
    })
    .unwrap();
    assert!(nl.fdb_del(&f).unwrap_err().is_not_found());
    assert!(!nl.fdbs(vx).unwrap().iter().any(|x| x.mac == [0; 6]));

    // move c0 away: its peer stays, seeing the other end elsewhere
    nl.link_set_netns(c0, other).unwrap();
    assert!(nl.link_by_name("c0").unwrap().is_none());
    assert!(
        nl.link_by_index(c1)
            .unwrap()
            .unwrap()
            .link_netnsid
            .is_some()
    );

    // deleting the parent deletes the macvlan and the vxlan
    nl.link_del(c1).unwrap();
    assert!(nl.link_by_name("mv0").unwrap().is_none());
    assert!(nl.link_by_name("vx0").unwrap().is_none());
    nl.link_del(br).unwrap();
    let left: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, vec!["lo".to_string()]);
}

#[test]
fn fake_conforms() {
    let mut f = FakeNetlink::new();
    let other = Netns::current().unwrap();
    scenario(&mut f, &other);
}

#[test]
fn kernel_conforms() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "kernel_conforms needs root (creates network namespaces)"
    );
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let ns = NamedNetns::create(&format!("mnl-conf-{}-{n}", std::process::id())).unwrap();
    let other = NamedNetns::create(&format!("mnl-conf2-{}-{n}", std::process::id())).unwrap();
    let mut nl = Netlink::open(Some(ns.netns())).unwrap();
    scenario(&mut nl, other.netns());
}
