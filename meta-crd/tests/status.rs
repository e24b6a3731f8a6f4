//! network-status: byte-exact against annotation text in the shape Multus writes (Go's
//! `json.MarshalIndent(status, "", "    ")` per entry, joined by `,`), and the construction
//! from CNI results.

use std::net::IpAddr;

use meta_crd::status::PciDevice;
use meta_crd::{
    DeviceInfo, Dns, NetworkStatus, ResultInterface, ResultIp, ResultRoute, ResultSummary,
    network_status_annotation, network_statuses, parse_network_status,
};

/// Two entries as Multus writes them for a pod with one macvlan attachment.
const MULTUS_TWO_ENTRIES: &str = r#"[{
    "name": "kindnet",
    "interface": "eth0",
    "ips": [
        "10.244.1.7"
    ],
    "mac": "be:75:d3:da:da:c6",
    "default": true,
    "dns": {}
},{
    "name": "default/macvlan-conf",
    "interface": "net1",
    "ips": [
        "192.168.1.200"
    ],
    "mac": "8a:ce:ae:9d:03:18",
    "dns": {}
}]"#;

/// Every field, in the Go struct's order (mtu after mac, device-info and gateway last).
const MULTUS_ALL_FIELDS: &str = r#"[{
    "name": "sriov/sriov-net",
    "interface": "net1",
    "ips": [
        "10.56.217.61",
        "fd00::61"
    ],
    "mac": "5e:cb:31:1c:7b:29",
    "mtu": 9000,
    "dns": {
        "nameservers": [
            "10.56.217.1"
        ],
        "domain": "example.org",
        "search": [
            "svc.example.org",
            "example.org"
        ],
        "options": [
            "ndots:2"
        ]
    },
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:03:02.4",
            "pf-pci-address": "0000:03:00.0"
        }
    },
    "gateway": [
        "10.56.217.1"
    ]
}]"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn multus_two_entries_round_trip_byte_exact() {
    let statuses = parse_network_status(MULTUS_TWO_ENTRIES).unwrap();
    assert_eq!(
        statuses,
        vec![
            NetworkStatus {
                name: "kindnet".into(),
                interface: "eth0".into(),
                ips: vec!["10.244.1.7".into()],
                mac: "be:75:d3:da:da:c6".into(),
                default: true,
                ..Default::default()
            },
            NetworkStatus {
                name: "default/macvlan-conf".into(),
                interface: "net1".into(),
                ips: vec!["192.168.1.200".into()],
                mac: "8a:ce:ae:9d:03:18".into(),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        network_status_annotation(&statuses).unwrap(),
        MULTUS_TWO_ENTRIES
    );
}

#[test]
fn multus_all_fields_round_trip_byte_exact() {
    let statuses = parse_network_status(MULTUS_ALL_FIELDS).unwrap();
    let st = &statuses[0];
    assert_eq!(st.mtu, 9000);
    assert!(!st.default);
    assert_eq!(st.dns.domain, "example.org");
    assert_eq!(
        st.device_info,
        Some(DeviceInfo {
            kind: "pci".into(),
            version: "1.1.0".into(),
            pci: Some(PciDevice {
                pci_address: "0000:03:02.4".into(),
                pf_pci_address: "0000:03:00.0".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    );
    assert_eq!(st.gateway, vec!["10.56.217.1".to_string()]);
    assert_eq!(
        network_status_annotation(&statuses).unwrap(),
        MULTUS_ALL_FIELDS
    );
}

#[test]
fn empty_list_and_go_html_escaping() {
    assert_eq!(network_status_annotation(&[]).unwrap(), "[]");
    let st = NetworkStatus {
        name: "a&b<c>\u{2028}".into(),
        ..Default::default()
    };
    let text = network_status_annotation(std::slice::from_ref(&st)).unwrap();
    assert_eq!(
        text,
        "[{\n    \"name\": \"a\\u0026b\\u003cc\\u003e\\u2028\",\n    \"dns\": {}\n}]"
    );
    assert_eq!(parse_network_status(&text).unwrap(), vec![st]);
}

#[test]
fn reading_is_lenient_like_go() {
    // nulls are absent, unknown keys dropped, NPWG-style CIDR ips kept verbatim
    let text = r#"[{"name":"n","interface":null,"ips":["1.2.3.4/24"],"dns":null,"default":false,"org.example.x":1}]"#;
    let got = parse_network_status(text).unwrap();
    assert_eq!(
        got,
        vec![NetworkStatus {
            name: "n".into(),
            ips: vec!["1.2.3.4/24".into()],
            ..Default::default()
        }]
    );
    assert_eq!(parse_network_status("null").unwrap(), vec![]);
    let err = parse_network_status("{").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("k8s.v1.cni.cncf.io/network-status: invalid: "),
        "{err}"
    );
}

fn iface(name: &str, mac: &str, sandbox: bool) -> ResultInterface {
    ResultInterface {
        name: name.into(),
        mac: mac.into(),
        mtu: 0,
        sandbox: if sandbox {
            "/var/run/netns/cni-1".into()
        } else {
            String::new()
        },
    }
}

#[test]
fn bridge_style_result_gives_one_entry_for_the_pod_interface() {
    // bridge, host veth, pod interface: only the pod one is reported
    let result = ResultSummary {
        interfaces: vec![
            iface("cni0", "aa:aa:aa:aa:aa:01", false),
            iface("veth1234", "aa:aa:aa:aa:aa:02", false),
            ResultInterface {
                mtu: 1450,
                ..iface("eth0", "0a:58:0a:f4:01:05", true)
            },
        ],
        ips: vec![ResultIp {
            address: ip("10.244.1.5"),
            interface: Some(2),
            gateway: Some(ip("10.244.1.1")),
        }],
        routes: vec![ResultRoute {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some(ip("10.244.1.1")),
        }],
        dns: Dns::default(),
    };
    let got = network_statuses(&result, "meta-overlay", true, None);
    let want = r#"[{
    "name": "meta-overlay",
    "interface": "eth0",
    "ips": [
        "10.244.1.5"
    ],
    "mac": "0a:58:0a:f4:01:05",
    "mtu": 1450,
    "default": true,
    "dns": {},
    "gateway": [
        "10.244.1.1"
    ]
}]"#;
    assert_eq!(network_status_annotation(&got).unwrap(), want);
}

#[test]
fn single_interface_result_takes_every_address() {
    let result = ResultSummary {
        interfaces: vec![iface("net1", "02:00:00:00:00:01", true)],
        ips: vec![
            ResultIp {
                address: ip("192.168.1.200"),
                interface: Some(0),
                gateway: None,
            },
            ResultIp {
                address: ip("::ffff:192.168.1.201"),
                interface: None,
                gateway: None,
            },
        ],
        routes: vec![ResultRoute {
            dst: "10.0.0.0/8".parse().unwrap(),
            gw: Some(ip("192.168.1.1")),
        }],
        dns: Dns {
            nameservers: vec!["192.168.1.1".into()],
            ..Default::default()
        },
    };
    let got = network_statuses(&result, "default/macvlan-conf", false, None);
    assert_eq!(
        got,
        vec![NetworkStatus {
            name: "default/macvlan-conf".into(),
            interface: "net1".into(),
            ips: vec!["192.168.1.200".into(), "192.168.1.201".into()],
            mac: "02:00:00:00:00:01".into(),
            dns: Dns {
                nameservers: vec!["192.168.1.1".into()],
                ..Default::default()
            },
            ..Default::default()
        }]
    );
}

#[test]
fn multi_interface_result_maps_addresses_and_default() {
    let result = ResultSummary {
        interfaces: vec![
            iface("eth0", "02:00:00:00:00:01", true),
            iface("host0", "02:00:00:00:00:02", false),
            iface("eth1", "02:00:00:00:00:03", true),
        ],
        ips: vec![
            ResultIp {
                address: ip("10.0.0.2"),
                interface: Some(0),
                gateway: None,
            },
            ResultIp {
                address: ip("10.0.1.2"),
                interface: Some(2),
                gateway: Some(ip("10.0.1.1")),
            },
            ResultIp {
                address: ip("10.0.9.9"),
                interface: Some(1),
                gateway: None,
            },
            ResultIp {
                address: ip("10.0.2.2"),
                interface: None,
                gateway: None,
            },
        ],
        routes: vec![
            ResultRoute {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some(ip("10.0.1.1")),
            },
            ResultRoute {
                dst: "::/0".parse().unwrap(),
                gw: None,
            },
        ],
        dns: Dns::default(),
    };
    let got = network_statuses(&result, "cluster", true, None);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].interface, "eth0");
    assert!(
        !got[0].default,
        "the gateway's interface is the default one"
    );
    assert_eq!(got[0].ips, vec!["10.0.0.2".to_string()]);
    assert_eq!(got[1].interface, "eth1");
    assert!(got[1].default);
    // the address of the non-pod interface is dropped, the one without interface goes last
    assert_eq!(
        got[1].ips,
        vec!["10.0.1.2".to_string(), "10.0.2.2".to_string()]
    );
    for st in &got {
        assert_eq!(st.gateway, vec!["10.0.1.1".to_string()]);
    }

    // without any gateway-bearing address, the first pod interface is the default
    let mut no_gw = result.clone();
    for ip in &mut no_gw.ips {
        ip.gateway = None;
    }
    let got = network_statuses(&no_gw, "cluster", true, None);
    assert!(got[0].default && !got[1].default);

    // not the default network: nobody is default
    let got = network_statuses(&result, "ns/extra", false, None);
    assert!(got.iter().all(|s| !s.default));
}

#[test]
fn result_without_interfaces_gives_a_minimal_entry() {
    let result = ResultSummary {
        ips: vec![ResultIp {
            address: ip("10.1.0.4"),
            interface: None,
            gateway: None,
        }],
        ..Default::default()
    };
    let dev = DeviceInfo {
        kind: "pci".into(),
        version: "1.1.0".into(),
        ..Default::default()
    };
    let got = network_statuses(&result, "ns/ipam-only", false, Some(&dev));
    assert_eq!(
        got,
        vec![NetworkStatus {
            name: "ns/ipam-only".into(),
            ips: vec!["10.1.0.4".into()],
            device_info: Some(dev),
            ..Default::default()
        }]
    );
}

#[test]
fn network_status_patch_sets_only_the_annotation_with_the_uid_precondition() {
    use meta_crd::network_status_patch;
    assert_eq!(
        network_status_patch("[]", Some("u-1")),
        serde_json::json!({"metadata": {
            "annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"},
            "uid": "u-1"}})
    );
    assert_eq!(
        network_status_patch("[{}]", None),
        serde_json::json!({"metadata": {
            "annotations": {"k8s.v1.cni.cncf.io/network-status": "[{}]"}}})
    );
}
