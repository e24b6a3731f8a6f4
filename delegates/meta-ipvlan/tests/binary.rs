//! The `meta-ipvlan` binary where no kernel object is needed: VERSION, bad input giving the
//! spec's error codes, CHECK refused before 0.4.0, STATUS/GC only in 1.1.0, DEL idempotent
//! when the namespace is gone. No namespace is entered and nothing reaches netlink: every
//! invocation fails or finishes before the plugin would open a netlink socket.

mod common;
use common::*;
use serde_json::{Value, json};

fn base<'a>(verb: &'a str, netns: &'a str) -> Invocation<'a> {
    Invocation {
        verb,
        container_id: "bin-test",
        netns,
        ifname: "net1",
        path: REFERENCE_DIR,
        ..Default::default()
    }
}

const GONE: &str = "/run/netns/meta-ipvlan-test-does-not-exist";

#[test]
fn version_in_every_version() {
    for v in OUR_VERSIONS {
        let r = run_plain(
            &ours(),
            &base("VERSION", ""),
            json!({"cniVersion": v}).to_string().as_bytes(),
        )
        .ok();
        assert_eq!(r.value()["cniVersion"], *v);
        assert_eq!(
            r.value()["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }
    let r = run_plain(&ours(), &base("VERSION", ""), b"").ok();
    assert_eq!(r.value()["cniVersion"], "1.1.0");
}

#[test]
fn bad_input_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = conf(
        "1.0.0",
        "bad",
        json!({"master": "eth0", "ipam": host_local(dir.path(), "10.40.0.0/24")}),
    );
    let g = good.to_string();
    let add = || base("ADD", GONE);
    let cases: Vec<(&str, String, Invocation, u64)> = vec![
        ("invalid JSON", "{nope".into(), add(), 6),
        ("not an object", "[1]".into(), add(), 6),
        ("missing name", json!({"cniVersion": "1.0.0", "type": "ipvlan"}).to_string(), add(), 7),
        ("bad name", json!({"cniVersion": "1.0.0", "name": "a b", "type": "ipvlan"}).to_string(), add(), 7),
        ("unsupported version", conf("0.2.0", "n", json!({})).to_string(), add(), 1),
        ("unknown version", conf("7.0.0", "n", json!({})).to_string(), add(), 1),
        ("missing env", g.clone(), Invocation { unset: vec!["CNI_NETNS", "CNI_IFNAME"], ..add() }, 4),
        ("bad container id", g.clone(), Invocation { container_id: "-x", ..add() }, 4),
        ("bad ifname", g.clone(), Invocation { ifname: "net1/1", ..add() }, 4),
        ("long ifname", g.clone(), Invocation { ifname: "abcdefghijklmnop", ..add() }, 4),
        ("unknown command", g.clone(), Invocation { verb: "FROB", ..add() }, 4),
        ("unknown CNI_ARGS key", g.clone(), Invocation { args: "FOO=bar", ..add() }, 4),
        ("bad CIDR", conf("1.0.0", "n", json!({"ipam": host_local(dir.path(), "10.0.0.0/33")})).to_string(), add(), 7),
        ("bad mode", conf("1.0.0", "n", json!({"mode": "l4", "ipam": host_local(dir.path(), "10.40.0.0/24")})).to_string(), add(), 7),
        ("bad mtu", conf("1.0.0", "n", json!({"mtu": -1, "ipam": host_local(dir.path(), "10.40.0.0/24")})).to_string(), add(), 7),
        ("wrong field type", conf("1.0.0", "n", json!({"master": 5})).to_string(), add(), 7),
        ("no ipam, not chained", conf("1.0.0", "n", json!({"master": "eth0"})).to_string(), add(), 7),
        ("chained without IPs", conf("1.0.0", "n", json!({"prevResult": {"interfaces": [{"name": "eth0"}]}})).to_string(), add(), 7),
        ("bad prevResult", conf("1.0.0", "n", json!({"prevResult": {"ips": 3}})).to_string(), add(), 6),
        ("netns missing", g.clone(), add(), 3),
        ("CHECK netns missing", with_prev(&good, &json!({"interfaces": [{"name": "net1", "sandbox": GONE}], "ips": [{"address": "10.40.0.2/24", "interface": 0}]})).to_string(), base("CHECK", GONE), 3),
    ];
    for (what, stdin, inv, code) in cases {
        let r = run_plain(&ours(), &inv, stdin.as_bytes());
        assert_eq!(r.err_code(), code, "{what}: {}", r.stdout);
        assert!(!r.err_msg().is_empty(), "{what}: empty message");
        assert_eq!(
            r.stdout.trim().lines().count(),
            1,
            "{what}: stdout must be one JSON document"
        );
    }
    assert!(ip_files(dir.path()).is_empty(), "no input allocated an IP");
}

#[test]
fn check_refused_before_0_4_0_and_needs_prev_result() {
    let dir = tempfile::tempdir().unwrap();
    for v in OUR_VERSIONS {
        let c = conf(
            v,
            "chk",
            json!({"master": "eth0", "ipam": host_local(dir.path(), "10.41.0.0/24")}),
        );
        let r = run_plain(&ours(), &base("CHECK", GONE), c.to_string().as_bytes());
        if v.starts_with("0.3") {
            assert_eq!(r.err_code(), 1, "{v}: CHECK must be refused");
            assert_eq!(r.value()["cniVersion"], *v);
        } else {
            assert_eq!(r.err_code(), 7, "{v}: CHECK without prevResult");
            assert!(r.err_msg().contains("prevResult"), "{}", r.err_msg());
        }
    }
}

#[test]
fn status_and_gc_only_in_1_1_0() {
    let dir = tempfile::tempdir().unwrap();
    for v in OUR_VERSIONS {
        // No master: STATUS has nothing to look up on the node, only IPAM.
        let c = conf(
            v,
            "stat",
            json!({"ipam": host_local(dir.path(), "10.42.0.0/24")}),
        );
        for verb in ["STATUS", "GC"] {
            let inv = Invocation {
                container_id: "",
                ifname: "",
                netns: "",
                ..base(verb, "")
            };
            let r = run_plain(&ours(), &inv, c.to_string().as_bytes());
            if *v == "1.1.0" {
                assert_eq!(r.code, 0, "{verb}: {} {}", r.stdout, r.stderr);
                assert!(r.stdout.trim().is_empty(), "{verb} prints nothing");
            } else {
                assert_eq!(r.err_code(), 1, "{v}: {verb} must be refused");
            }
        }
    }
}

#[test]
fn gc_releases_invalid_attachments() {
    let dir = tempfile::tempdir().unwrap();
    let c = conf(
        "1.1.0",
        "gc",
        json!({"ipam": host_local(dir.path(), "10.43.0.0/24")}),
    );
    // Allocate with the reference host-local (same store format).
    for cid in ["gc-a", "gc-b"] {
        let inv = Invocation {
            container_id: cid,
            ..base("ADD", GONE)
        };
        let mut hc = c.clone();
        hc["cniVersion"] = json!("1.0.0");
        run_plain(&reference("host-local"), &inv, hc.to_string().as_bytes()).ok();
    }
    assert_eq!(ip_files(dir.path()).len(), 2);
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "gc-b", "ifname": "net1"}]);
    let inv = Invocation {
        container_id: "",
        ifname: "",
        netns: "",
        ..base("GC", "")
    };
    run_plain(&ours(), &inv, g.to_string().as_bytes()).ok();
    let left: Vec<String> = dir_contents(dir.path())
        .into_iter()
        .filter(|(k, _)| !k.ends_with("lock") && !k.contains("last_reserved"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(left, vec!["gc-b\r\nnet1"]);
}

#[test]
fn del_is_idempotent_when_netns_is_gone_or_empty() {
    for v in OUR_VERSIONS {
        let dir = tempfile::tempdir().unwrap();
        let c = conf(
            v,
            "del",
            json!({"master": "eth0", "ipam": host_local(dir.path(), "10.44.0.0/24")}),
        );
        // An allocation made by the reference host-local, as ADD would have.
        let mut hc = c.clone();
        hc["cniVersion"] = json!("1.0.0");
        run_plain(
            &reference("host-local"),
            &base("ADD", GONE),
            hc.to_string().as_bytes(),
        )
        .ok();
        assert_eq!(ip_files(dir.path()).len(), 1, "{v}");
        for _ in 0..3 {
            let r = run_plain(&ours(), &base("DEL", GONE), c.to_string().as_bytes()).ok();
            assert!(r.stdout.trim().is_empty(), "DEL prints nothing");
        }
        assert!(ip_files(dir.path()).is_empty(), "{v}: IP not released");
        for _ in 0..3 {
            run_plain(&ours(), &base("DEL", ""), c.to_string().as_bytes()).ok();
        }
        // Chained (no ipam), with and without a prevResult, netns gone.
        let chained = conf(v, "del", json!({}));
        run_plain(&ours(), &base("DEL", GONE), chained.to_string().as_bytes()).ok();
        let prev = json!({"cniVersion": v, "interfaces": [{"name": "eth0"}],
                          "ips": [{"address": "10.44.0.9/24", "interface": 0, "version": "4"}]});
        run_plain(
            &ours(),
            &base("DEL", GONE),
            with_prev(&chained, &prev).to_string().as_bytes(),
        )
        .ok();
    }
}

#[test]
fn about_text_without_command() {
    let inv = Invocation {
        unset: vec!["CNI_COMMAND"],
        ..base("", "")
    };
    let r = run_plain(&ours(), &inv, b"");
    assert!(r.stderr.contains("meta-ipvlan"), "{}", r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("error JSON");
    assert_eq!(v["code"], 4);
}
