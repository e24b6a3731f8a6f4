//! Differential tests against the reference plugins (containernetworking/plugins v1.1.1 in
//! /usr/lib/cni): the same configurations and call sequences, separate data directories;
//! stdout JSON, data directory contents and error codes are compared.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Runs the same call on the reference (data dir `a`) and ours (data dir `b`).
struct Pair<'a> {
    refp: &'a str,
    ours: &'a str,
    netns: &'a Path,
    a: &'a Path,
    b: &'a Path,
}

fn with_dir(conf: &Value, dir: &Path) -> String {
    let mut c = conf.clone();
    if c["ipam"].is_object() {
        c["ipam"]["dataDir"] = json!(dir.to_str().expect("utf-8 path"));
    }
    c.to_string()
}

impl Pair<'_> {
    fn both(&self, cmd: &str, cid: &str, ifname: &str, args: &str, conf: &Value) -> (Out, Out) {
        let call = Call {
            cmd,
            cid,
            ifname,
            args,
            netns: self.netns,
        };
        let r = run(self.refp, &call, &with_dir(conf, self.a));
        let o = run(self.ours, &call, &with_dir(conf, self.b));
        (r, o)
    }

    /// Same exit code and, on success, the same stdout JSON; on failure the same code
    /// (and, when `same_msg`, the same message).
    fn same(
        &self,
        cmd: &str,
        cid: &str,
        ifname: &str,
        args: &str,
        conf: &Value,
        same_msg: bool,
    ) -> Out {
        let (r, o) = self.both(cmd, cid, ifname, args, conf);
        let ctx = format!(
            "{cmd} {cid}/{ifname} args={args:?} conf={conf}\nref: {}\nours: {} {}",
            r.raw, o.raw, o.stderr
        );
        assert_eq!(r.rc, o.rc, "exit codes differ: {ctx}");
        if r.rc == 0 {
            assert_eq!(r.json, o.json, "stdout differs: {ctx}");
        } else {
            assert_eq!(r.code(), o.code(), "error codes differ: {ctx}");
            if same_msg {
                assert_eq!(r.msg(), o.msg(), "messages differ: {ctx}");
            }
        }
        o
    }

    fn same_dirs(&self, name: &str, ctx: &str) {
        let ra = snapshot(&self.a.join(name));
        let ob = snapshot(&self.b.join(name));
        assert_eq!(ra, ob, "data directories differ after {ctx}");
    }
}

fn conf(version: &str, ipam: Value) -> Value {
    json!({"cniVersion": version, "name": "difnet", "type": "bridge", "ipam": ipam})
}

/// (description, configuration builder, a free address to request, addresses to use up)
fn host_local_cases(resolv: &str) -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "legacy single range with routes",
            json!({"type": "host-local", "subnet": "10.1.2.0/24",
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.2.254"}]}),
            "10.1.2.77",
        ),
        (
            "dual stack, multi-range set, custom gateways, resolvConf",
            json!({"type": "host-local", "resolvConf": resolv,
                "ranges": [
                    [{"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.12"},
                     {"subnet": "10.3.0.0/29", "gateway": "10.3.0.6"}],
                    [{"subnet": "fd00:1::/120", "gateway": "fd00:1::ff"}]
                ],
                "routes": [{"dst": "::/0"}]}),
            "fd00:1::42",
        ),
        (
            "small IPv4 range (exhaustion)",
            json!({"type": "host-local", "subnet": "10.4.0.0/29"}),
            "10.4.0.5",
        ),
        (
            "IPv6 /64",
            json!({"type": "host-local", "ranges": [[{"subnet": "2001:db8:1::/64"}]]}),
            "2001:db8:1::1:0",
        ),
    ]
}

#[test]
fn host_local_matches_reference() {
    require(REF_HOST_LOCAL);
    let tmp = tempfile::tempdir().expect("tempdir");
    let netns = fake_netns(tmp.path());
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "# test\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.com\nsearch a.example b.example\noptions ndots:2\n",
    )
    .expect("resolv.conf");
    for version in VERSIONS {
        for (what, ipam, req) in host_local_cases(resolv.to_str().expect("utf-8")) {
            let a = tempfile::tempdir().expect("tempdir");
            let b = tempfile::tempdir().expect("tempdir");
            let p = Pair {
                refp: REF_HOST_LOCAL,
                ours: OURS_HOST_LOCAL,
                netns: &netns,
                a: a.path(),
                b: b.path(),
            };
            let c = conf(version, ipam);
            let ctx = format!("{version} {what}");
            // ADDs: first, second container, second interface of the first
            let first = p.same("ADD", "c1", "eth0", "", &c, true);
            assert_eq!(first.rc, 0, "{ctx}: {}", first.raw);
            p.same("ADD", "c2", "eth0", "", &c, true);
            p.same("ADD", "c1", "eth1", "", &c, true);
            p.same_dirs("difnet", &format!("{ctx}: ADDs"));
            // duplicate allocation: same code and message
            let dup = p.same("ADD", "c1", "eth0", "", &c, true);
            assert_eq!(dup.rc, 1, "{ctx}");
            // requested address, then the same address again (taken)
            let args = format!("IgnoreUnknown=1;IP={req}");
            p.same("ADD", "c3", "eth0", &args, &c, true);
            let taken = p.same("ADD", "c4", "eth0", &args, &c, true);
            assert_eq!(taken.rc, 1, "{ctx}");
            p.same_dirs("difnet", &format!("{ctx}: requested IP"));
            // CHECK with the ADD result as prevResult
            if *version != "0.3.0" && *version != "0.3.1" {
                let mut cc = c.clone();
                cc["prevResult"] = first.json.clone();
                let o = p.same("CHECK", "c1", "eth0", "", &cc, false);
                assert_eq!(o.rc, 0, "{ctx}: {}", o.raw);
                let o = p.same("CHECK", "nobody", "eth0", "", &cc, false);
                assert_eq!(o.rc, 1, "{ctx}");
            }
            // DEL one, ADD continues round-robin after the last reserved address
            p.same("DEL", "c2", "eth0", "", &c, false);
            p.same("ADD", "c5", "eth0", "", &c, true);
            p.same_dirs("difnet", &format!("{ctx}: DEL + ADD"));
            // exhaust the small range (same message: "no IP addresses available ...")
            if what.starts_with("small") {
                p.same("ADD", "c6", "eth0", "", &c, true);
                p.same("ADD", "c7", "eth0", "", &c, true);
                let full = p.same("ADD", "c8", "eth0", "", &c, true);
                assert_eq!(full.rc, 1, "{ctx}: {}", full.raw);
                assert!(
                    full.msg()
                        .contains("no IP addresses available in range set"),
                    "{ctx}"
                );
                p.same_dirs("difnet", &format!("{ctx}: exhaustion"));
            }
            // DEL everything (twice: DEL is idempotent)
            for (cid, ifn) in [
                ("c1", "eth0"),
                ("c1", "eth1"),
                ("c3", "eth0"),
                ("c5", "eth0"),
                ("c6", "eth0"),
                ("c7", "eth0"),
                ("c2", "eth0"),
            ] {
                let o = p.same("DEL", cid, ifn, "", &c, false);
                assert_eq!((o.rc, o.raw.as_str()), (0, ""), "{ctx}");
            }
            p.same_dirs("difnet", &format!("{ctx}: DEL all"));
            let left: Vec<String> = snapshot(&b.path().join("difnet")).into_keys().collect();
            assert!(
                left.iter()
                    .all(|n| n == "lock" || n.starts_with("last_reserved_ip.")),
                "{ctx}: {left:?}"
            );
        }
    }
}

#[test]
fn host_local_runtime_args_and_legacy_files() {
    require(REF_HOST_LOCAL);
    let tmp = tempfile::tempdir().expect("tempdir");
    let netns = fake_netns(tmp.path());
    for version in VERSIONS {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let p = Pair {
            refp: REF_HOST_LOCAL,
            ours: OURS_HOST_LOCAL,
            netns: &netns,
            a: a.path(),
            b: b.path(),
        };
        let ipam = json!({"type": "host-local", "ranges": [[{"subnet": "10.5.0.0/24"}], [{"subnet": "fd05::/64"}]]});
        // args.cni.ips, runtimeConfig.ips (with and without prefix), runtimeConfig.ipRanges
        let mut c = conf(version, ipam.clone());
        c["args"] = json!({"cni": {"ips": ["10.5.0.50/24"]}});
        c["runtimeConfig"] = json!({"ips": ["fd05::50"]});
        p.same("ADD", "r1", "eth0", "", &c, true);
        let mut c2 = conf(version, ipam.clone());
        c2["runtimeConfig"] =
            json!({"ipRanges": [[{"subnet": "10.6.0.0/24", "rangeStart": "10.6.0.100"}]]});
        p.same("ADD", "r2", "eth0", "", &c2, true);
        p.same_dirs("difnet", &format!("{version}: runtime args"));
        // legacy (id-only) reservation files are released by DEL
        for d in [a.path(), b.path()] {
            std::fs::write(d.join("difnet").join("10.5.0.99"), "legacy-id").expect("legacy file");
            std::fs::write(d.join("difnet").join("fd05::99"), "legacy-id\n").expect("legacy file");
        }
        let c = conf(version, ipam);
        p.same("DEL", "legacy-id", "eth0", "", &c, false);
        p.same_dirs("difnet", &format!("{version}: legacy release"));
        assert!(!b.path().join("difnet/10.5.0.99").exists());
        p.same("DEL", "r1", "eth0", "", &c, false);
        p.same("DEL", "r2", "eth0", "", &c2, false);
        p.same_dirs("difnet", &format!("{version}: DEL"));
    }
}

/// Bad configurations: the reference fails with 999 (every Go error becomes ErrInternal);
/// we fail with the specific code (7 for configuration, 4 for CNI_ARGS) and name the field.
#[test]
fn host_local_error_codes() {
    require(REF_HOST_LOCAL);
    let tmp = tempfile::tempdir().expect("tempdir");
    let netns = fake_netns(tmp.path());
    let s = |ipam: Value| json!({"cniVersion": "1.0.0", "name": "difnet", "ipam": ipam});
    let cases: Vec<(&str, Value, &str, u64, &str)> = vec![
        (
            "no ipam",
            json!({"cniVersion": "1.0.0", "name": "difnet"}),
            "",
            7,
            "ipam",
        ),
        (
            "no ranges",
            s(json!({"type": "host-local"})),
            "",
            7,
            "no IP ranges",
        ),
        (
            "bad subnet",
            s(json!({"subnet": "garbage"})),
            "",
            7,
            "ipam.subnet",
        ),
        (
            "host bits",
            s(json!({"subnet": "10.1.2.1/24"})),
            "",
            7,
            "ipam.subnet",
        ),
        (
            "/31",
            s(json!({"subnet": "10.1.2.0/31"})),
            "",
            7,
            "too small",
        ),
        (
            "/32",
            s(json!({"subnet": "10.1.2.0/32"})),
            "",
            7,
            "too small",
        ),
        (
            "/127",
            s(json!({"subnet": "fd00::/127"})),
            "",
            7,
            "too small",
        ),
        (
            "/128",
            s(json!({"subnet": "fd00::/128"})),
            "",
            7,
            "too small",
        ),
        (
            "rangeStart",
            s(json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.3.1"})),
            "",
            7,
            "ipam.rangeStart",
        ),
        (
            "rangeEnd",
            s(json!({"subnet": "10.1.2.0/24", "rangeEnd": "10.1.3.1"})),
            "",
            7,
            "ipam.rangeEnd",
        ),
        (
            "start after end",
            s(json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.50", "rangeEnd": "10.1.2.40"})),
            "",
            7,
            "rangeStart",
        ),
        (
            "mixed",
            s(json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "fd::/64"}]]})),
            "",
            7,
            "mixed address families",
        ),
        (
            "overlapping sets",
            s(json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.2.0/25"}]]})),
            "",
            7,
            "overlaps",
        ),
        (
            "overlap in set",
            s(json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.1.2.0/25"}]]})),
            "",
            7,
            "overlap",
        ),
        (
            "empty set",
            s(json!({"ranges": [[]]})),
            "",
            7,
            "empty range set",
        ),
        (
            "bad route",
            s(json!({"subnet": "10.1.2.0/24", "routes": [{"dst": "bad"}]})),
            "",
            7,
            "ipam.routes[0]",
        ),
        (
            "missing resolvConf",
            s(json!({"subnet": "10.1.2.0/24", "resolvConf": "/nonexistent/resolv.conf"})),
            "",
            7,
            "resolvConf",
        ),
        (
            "requested IP outside",
            s(json!({"subnet": "10.1.2.0/24"})),
            "IP=10.9.9.9",
            7,
            "10.9.9.9",
        ),
        (
            "requested gateway",
            s(json!({"subnet": "10.1.2.0/24"})),
            "IP=10.1.2.1",
            7,
            "gateway",
        ),
        (
            "bad CNI_ARGS IP",
            s(json!({"subnet": "10.1.2.0/24"})),
            "IP=garbage",
            4,
            "CNI_ARGS IP",
        ),
        (
            "unknown CNI_ARGS",
            s(json!({"subnet": "10.1.2.0/24"})),
            "FOO=1",
            4,
            "FOO",
        ),
        (
            "bad args.cni.ips",
            json!({"cniVersion": "1.0.0", "name": "difnet", "ipam": {"subnet": "10.1.2.0/24"}, "args": {"cni": {"ips": ["zz"]}}}),
            "",
            7,
            "args.cni.ips[0]",
        ),
    ];
    for (what, c, args, code, needle) in cases {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let p = Pair {
            refp: REF_HOST_LOCAL,
            ours: OURS_HOST_LOCAL,
            netns: &netns,
            a: a.path(),
            b: b.path(),
        };
        let (r, o) = p.both("ADD", "c1", "eth0", args, &c);
        assert_eq!((r.rc, r.code()), (1, 999), "{what}: reference: {}", r.raw);
        assert_eq!((o.rc, o.code()), (1, code), "{what}: ours: {}", o.raw);
        assert!(
            o.msg().contains(needle),
            "{what}: {:?} lacks {needle:?}",
            o.msg()
        );
        // No address stays reserved, and the data directories are the same (a requested
        // address no range set takes fails only after every set was allocated, so
        // `last_reserved_ip` advances in both).
        let left: Vec<String> = snapshot(&b.path().join("difnet")).into_keys().collect();
        assert!(
            left.iter()
                .all(|n| n == "lock" || n.starts_with("last_reserved_ip")),
            "{what}: {left:?}"
        );
        p.same_dirs("difnet", what);
    }
    // The sequence that shows it: a request outside every range fails, and the next
    // dynamic ADD gets the same address from both.
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let p = Pair {
        refp: REF_HOST_LOCAL,
        ours: OURS_HOST_LOCAL,
        netns: &netns,
        a: a.path(),
        b: b.path(),
    };
    let c = s(json!({"subnet": "10.1.2.0/24"}));
    p.same("ADD", "c1", "eth0", "IP=10.1.2.200", &c, false);
    for (cid, args) in [("c2", "IP=10.9.0.1"), ("c3", "IP=10.1.2.1")] {
        // Both fail (codes differ by design: 999 there, 7 here).
        let (r, o) = p.both("ADD", cid, "eth0", args, &c);
        assert_eq!((r.rc, o.rc), (1, 1), "{args}: {} / {}", r.raw, o.raw);
        p.same_dirs("difnet", args);
    }
    p.same("ADD", "c4", "eth0", "", &c, false);
    p.same_dirs("difnet", "failed requests then a dynamic ADD");
    // Documented deviation: a gateway outside its subnet is accepted by v1.1.1 (later
    // reference versions reject it, as we do).
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let p = Pair {
        refp: REF_HOST_LOCAL,
        ours: OURS_HOST_LOCAL,
        netns: &netns,
        a: a.path(),
        b: b.path(),
    };
    let (r, o) = p.both(
        "ADD",
        "c1",
        "eth0",
        "",
        &s(json!({"subnet": "10.1.2.0/24", "gateway": "10.1.3.1"})),
    );
    assert_eq!(r.rc, 0, "{}", r.raw);
    assert_eq!((o.rc, o.code()), (1, 7), "{}", o.raw);
    assert!(o.msg().contains("ipam.gateway 10.1.3.1"), "{}", o.msg());
}

/// cniVersion 1.1.0 (ours only; the reference v1.1.1 does not speak it): ADD, CHECK,
/// STATUS, GC, DEL.
#[test]
fn host_local_v1_1_verbs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let netns = fake_netns(tmp.path());
    let c = conf(
        "1.1.0",
        json!({"type": "host-local", "subnet": "10.7.0.0/29"}),
    );
    let cs = with_dir(&c, tmp.path());
    let call = |cmd: &'static str, cid: &'static str, stdin: &str| {
        run(
            OURS_HOST_LOCAL,
            &Call {
                cmd,
                cid,
                ifname: "eth0",
                args: "",
                netns: &netns,
            },
            stdin,
        )
    };
    let add = call("ADD", "c1", &cs);
    assert_eq!(add.rc, 0, "{}", add.raw);
    assert_eq!(add.json["cniVersion"], "1.1.0");
    assert_eq!(
        add.json["ips"],
        json!([{"address": "10.7.0.2/29", "gateway": "10.7.0.1"}])
    );
    let mut cc = c.clone();
    cc["prevResult"] = add.json.clone();
    assert_eq!(call("CHECK", "c1", &with_dir(&cc, tmp.path())).rc, 0);
    assert_eq!(call("STATUS", "", &cs).rc, 0);
    for cid in ["c2", "c3", "c4", "c5"] {
        assert_eq!(call("ADD", cid, &cs).rc, 0);
    }
    let st = call("STATUS", "", &cs);
    assert_eq!((st.rc, st.code()), (1, 50), "{}", st.raw);
    assert!(
        st.msg().contains("no IP addresses available"),
        "{}",
        st.msg()
    );
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    let gc = call("GC", "", &with_dir(&g, tmp.path()));
    assert_eq!(gc.rc, 0, "{}", gc.raw);
    let mut left: Vec<String> = snapshot(&tmp.path().join("difnet")).into_keys().collect();
    left.sort();
    assert_eq!(left, ["10.7.0.2", "last_reserved_ip.0", "lock"]);
    assert_eq!(call("STATUS", "", &cs).rc, 0);
    assert_eq!(call("DEL", "c1", &cs).rc, 0);
    let left: Vec<String> = snapshot(&tmp.path().join("difnet")).into_keys().collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

fn static_cases() -> Vec<(&'static str, Value, &'static str)> {
    let ipam = json!({"type": "static",
        "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"},
                      {"address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}, {"dst": "3ffe:ffff:0:01ff::1/64"}],
        "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"], "options": ["ndots:2"]}});
    let mut with_args = json!({"cniVersion": "x", "name": "s", "ipam": ipam.clone()});
    with_args["args"] = json!({"cni": {"ips": ["10.30.0.1/24", "fd30::1/64"]}});
    let mut with_rc = with_args.clone();
    with_rc["runtimeConfig"] = json!({"ips": ["10.40.0.1/16"]});
    vec![
        (
            "addresses, routes, dns",
            json!({"cniVersion": "x", "name": "s", "ipam": ipam.clone()}),
            "",
        ),
        (
            "CNI_ARGS IP and GATEWAY",
            json!({"cniVersion": "x", "name": "s", "ipam": ipam.clone()}),
            "IgnoreUnknown=1;IP=10.20.0.5/16,3ffe::5/64;GATEWAY=10.20.0.1,3ffe:ffff:0:01ff::9",
        ),
        ("args.cni.ips replaces", with_args, "IP=10.20.0.5/16"),
        ("runtimeConfig.ips replaces", with_rc, ""),
        (
            "empty ipam",
            json!({"cniVersion": "x", "name": "s", "ipam": {"type": "static"}}),
            "",
        ),
        (
            "only CNI_ARGS",
            json!({"cniVersion": "x", "name": "s", "ipam": {"type": "static"}}),
            "IP=192.168.1.5/24;GATEWAY=192.168.1.1",
        ),
    ]
}

#[test]
fn static_matches_reference() {
    require(REF_STATIC);
    let tmp = tempfile::tempdir().expect("tempdir");
    let netns = fake_netns(tmp.path());
    let p = Pair {
        refp: REF_STATIC,
        ours: OURS_STATIC,
        netns: &netns,
        a: tmp.path(),
        b: tmp.path(),
    };
    for version in VERSIONS {
        for (what, c, args) in static_cases() {
            let mut c = c;
            c["cniVersion"] = json!(version);
            let add = p.same("ADD", "c1", "eth0", args, &c, true);
            assert_eq!(add.rc, 0, "{version} {what}: {}", add.raw);
            if *version == "0.4.0" || *version == "1.0.0" {
                let mut cc = c.clone();
                cc["prevResult"] = add.json.clone();
                let o = p.same("CHECK", "c1", "eth0", args, &cc, false);
                assert_eq!(o.rc, 0, "{version} {what}: {}", o.raw);
            }
            let del = p.same("DEL", "c1", "eth0", args, &c, false);
            assert_eq!((del.rc, del.raw.as_str()), (0, ""), "{version} {what}");
        }
    }
    // 1.1.0: ours only
    let mut c = static_cases()[0].1.clone();
    c["cniVersion"] = json!("1.1.0");
    let o = run(
        OURS_STATIC,
        &Call {
            cmd: "ADD",
            cid: "c1",
            ifname: "eth0",
            args: "",
            netns: &netns,
        },
        &c.to_string(),
    );
    assert_eq!(o.rc, 0, "{}", o.raw);
    assert_eq!(
        o.json["ips"][1],
        json!({"address": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff::1"})
    );
    for cmd in ["STATUS", "GC"] {
        let o = run(
            OURS_STATIC,
            &Call {
                cmd,
                cid: "",
                ifname: "",
                args: "",
                netns: &netns,
            },
            &c.to_string(),
        );
        assert_eq!(o.rc, 0, "{cmd}: {}", o.raw);
    }
}

#[test]
fn static_error_codes() {
    require(REF_STATIC);
    let tmp = tempfile::tempdir().expect("tempdir");
    let netns = fake_netns(tmp.path());
    let p = Pair {
        refp: REF_STATIC,
        ours: OURS_STATIC,
        netns: &netns,
        a: tmp.path(),
        b: tmp.path(),
    };
    let s = |ipam: Value| json!({"cniVersion": "1.0.0", "name": "s", "ipam": ipam});
    let cases: Vec<(&str, Value, &str, u64, &str)> = vec![
        (
            "no ipam",
            json!({"cniVersion": "1.0.0", "name": "s"}),
            "",
            7,
            "ipam",
        ),
        (
            "no prefix",
            s(json!({"addresses": [{"address": "10.0.0.1"}]})),
            "",
            7,
            "ipam.addresses[0].address",
        ),
        (
            "bad gateway",
            s(json!({"addresses": [{"address": "10.0.0.1/24", "gateway": "x"}]})),
            "",
            7,
            "ipam.addresses[0].gateway",
        ),
        (
            "bad CNI_ARGS IP",
            s(json!({})),
            "IP=10.0.0.1",
            4,
            "CNI_ARGS IP",
        ),
        (
            "bad CNI_ARGS GATEWAY",
            s(json!({})),
            "IP=10.0.0.1/24;GATEWAY=nope",
            4,
            "CNI_ARGS GATEWAY",
        ),
        ("unknown CNI_ARGS", s(json!({})), "FOO=bar", 4, "FOO"),
        (
            "bad runtimeConfig.ips",
            json!({"cniVersion": "1.0.0", "name": "s", "ipam": {}, "runtimeConfig": {"ips": ["10.0.0.1"]}}),
            "",
            7,
            "runtimeConfig.ips[0]",
        ),
        (
            "bad args.cni.ips",
            json!({"cniVersion": "1.0.0", "name": "s", "ipam": {}, "args": {"cni": {"ips": ["x/99"]}}}),
            "",
            7,
            "args.cni.ips[0]",
        ),
    ];
    for (what, c, args, code, needle) in cases {
        let (r, o) = p.both("ADD", "c1", "eth0", args, &c);
        assert_eq!((r.rc, r.code()), (1, 999), "{what}: reference: {}", r.raw);
        assert_eq!((o.rc, o.code()), (1, code), "{what}: ours: {}", o.raw);
        assert!(
            o.msg().contains(needle),
            "{what}: {:?} lacks {needle:?}",
            o.msg()
        );
    }
    // CHECK: a gateway that differs from the prevResult's fails in both
    let mut c = s(json!({"addresses": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]}));
    c["prevResult"] =
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.9"}]});
    let (r, o) = p.both("CHECK", "c1", "eth0", "", &c);
    assert_eq!((r.rc, o.rc), (1, 1), "ref {} ours {}", r.raw, o.raw);
    assert_eq!(r.code(), o.code());
}
