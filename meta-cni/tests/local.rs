//! The meta plugin in local mode (no Kubernetes): pod annotations from the runtime's
//! runtimeConfig, NADs from a directory. Three networks — the cluster network (bridge,
//! in-process), a NAD bridge (in-process) and the reference macvlan (exec'd, forced) on a
//! veth parent — then failure injection at every position, kill -9 in the middle of ADD,
//! DEL without netns or journal, and namespace isolation; every path must leave nothing.

mod common;
use common::*;
use serde_json::{Value, json};

#[test]
fn three_networks_add_check_del() {
    let e = setup(1);
    let conf = e.conf("ns1/br-net, ns1/mv-net", json!({}));
    let netns = e.w.pod(0);
    let args =
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod0;K8S_POD_INFRA_CONTAINER_ID=c3";
    let inv = Invocation {
        verb: "ADD",
        container_id: "c3",
        netns: &netns,
        ifname: "eth0",
        args,
        path: REFERENCE_DIR,
        extra_env: vec![("META_CNI_LOG", "debug")],
        ..Default::default()
    };
    let r = run_in(
        e.w.node.netns(),
        &meta_bin(),
        &inv,
        conf.to_string().as_bytes(),
    )
    .ok();
    assert!(
        r.stderr.contains("ADD bridge (eth0): in-process"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("ADD bridge (net1): in-process"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("ADD macvlan (net2): exec /usr/lib/cni/macvlan"),
        "{}",
        r.stderr
    );
    let res = r.value();
    assert_eq!(res["cniVersion"], "1.0.0");
    assert_eq!(
        res["ips"][0]["address"], "10.60.0.2/24",
        "the runtime gets the cluster network's result"
    );
    let pod = e.w.pods[0].netns();
    assert_eq!(link_names(pod), vec!["eth0", "lo", "net1", "net2"]);
    assert_eq!(
        iface_state(pod, "eth0").unwrap().addrs,
        vec!["10.60.0.2/24"]
    );
    assert_eq!(
        iface_state(pod, "net1").unwrap().addrs,
        vec!["10.61.0.2/24"]
    );
    let net2 = iface_state(pod, "net2").unwrap();
    assert_eq!(net2.kind.as_deref(), Some("macvlan"));
    assert_eq!(net2.addrs, vec!["10.62.0.2/24"]);
    // network-status, Multus's shape.
    let status_path = e.cache.join("status/ns1/pod0.json");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&status_path).unwrap()).unwrap();
    let st = st.as_array().unwrap();
    assert_eq!(st.len(), 3);
    assert_eq!(st[0]["name"], "cluster");
    assert_eq!(st[0]["interface"], "eth0");
    assert_eq!(st[0]["default"], true);
    assert_eq!(st[0]["ips"], json!(["10.60.0.2"]));
    assert_eq!(st[1]["name"], "ns1/br-net");
    assert_eq!(st[1]["interface"], "net1");
    assert!(st[1].get("default").is_none() || st[1]["default"] == false);
    assert_eq!(st[2]["name"], "ns1/mv-net");
    assert_eq!(st[2]["ips"], json!(["10.62.0.2"]));
    // CHECK over every attachment.
    e.run("CHECK", "c3", 0, "ns1", &conf).ok();
    // DEL three times.
    for _ in 0..3 {
        e.run("DEL", "c3", 0, "ns1", &conf).ok();
    }
    e.assert_clean(0, "after DEL");
}

#[test]
fn every_cni_version_gets_the_cluster_result_in_its_version() {
    let e = setup(1);
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let mut conf = e.conf("ns1/br-net", json!({}));
        conf["cniVersion"] = json!(v);
        let r = e.run("ADD", "cv", 0, "ns1", &conf).ok();
        assert_eq!(r.value()["cniVersion"], v);
        assert_eq!(
            r.value()["ips"][0].get("version").is_some(),
            v.starts_with("0.")
        );
        let chk = e.run("CHECK", "cv", 0, "ns1", &conf);
        if v < "0.4.0" {
            assert_eq!(chk.err_code(), 1);
        } else {
            assert_eq!(chk.code, 0, "{v}: {}", chk.stdout);
        }
        for verb in ["STATUS", "GC"] {
            let mut c = conf.clone();
            c["cni.dev/valid-attachments"] = json!([{"containerID": "cv", "ifname": "eth0"}]);
            let r = e.run(verb, "cv", 0, "ns1", &c);
            if v == "1.1.0" {
                assert_eq!(r.code, 0, "{verb}: {}", r.stdout);
            } else {
                assert_eq!(r.err_code(), 1);
            }
        }
        e.run("DEL", "cv", 0, "ns1", &conf).ok();
        e.assert_clean(0, v);
    }
}

#[test]
fn failure_at_each_position_leaves_nothing() {
    let e = setup(1);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "cluster",
            json!({"delegates": [{"cniVersion": "1.0.0", "name": "cl-fail", "type": "failer"}], "clusterNetwork": null}),
            "ns1/br-net, ns1/mv-net",
        ),
        ("net1", json!({}), "ns1/fail-net, ns1/br-net, ns1/mv-net"),
        ("net2", json!({}), "ns1/br-net, ns1/fail-net, ns1/mv-net"),
        ("net3", json!({}), "ns1/br-net, ns1/mv-net, ns1/fail-net"),
    ];
    for (pos, extra, nets) in cases {
        let conf = e.conf(nets, extra);
        let r = e.run("ADD", "fx", 0, "ns1", &conf);
        assert_eq!(r.err_code(), 7, "{pos}: {}", r.stdout);
        let msg = r.err_msg();
        assert!(msg.contains("injected failure"), "{pos}: {msg}");
        if pos != "cluster" {
            assert!(
                msg.contains(&format!("ns1/fail-net ({pos})")),
                "{pos}: the error names the network: {msg}"
            );
        }
        e.assert_clean(0, pos);
    }
}

#[test]
fn kill_9_mid_add_then_del_or_gc_leaves_nothing() {
    for finisher in ["DEL", "GC"] {
        let e = setup(1);
        let mut conf = e.conf("ns1/br-net, ns1/mv-net, ns1/sleep-net", json!({}));
        conf["cniVersion"] = json!("1.1.0");
        let netns = e.w.pod(0);
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod0";
        let inv = Invocation {
            verb: "ADD",
            container_id: "k9",
            netns: &netns,
            ifname: "eth0",
            args,
            path: REFERENCE_DIR,
            ..Default::default()
        };
        let mut child = spawn_in(
            e.w.node.netns(),
            &meta_bin(),
            &inv,
            conf.to_string().as_bytes(),
        );
        // Wait until the sleeper (4th attachment) runs: three are added by then.
        let pidfile = e.bin.join("sleeper.pid");
        let t0 = std::time::Instant::now();
        while !pidfile.exists() {
            assert!(t0.elapsed().as_secs() < 30, "sleeper never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let sleeper: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sleeper),
            nix::sys::signal::Signal::SIGKILL,
        );
        std::fs::remove_file(&pidfile).unwrap();
        assert_eq!(
            link_names(e.w.pods[0].netns()),
            vec!["eth0", "lo", "net1", "net2"],
            "ADD got that far"
        );
        if finisher == "DEL" {
            e.run("DEL", "k9", 0, "ns1", &conf).ok();
        } else {
            let mut g = conf.clone();
            g["cni.dev/valid-attachments"] = json!([]);
            e.run("GC", "", 0, "ns1", &g).ok();
        }
        e.assert_clean(0, finisher);
    }
}

#[test]
fn del_with_netns_gone_and_with_journal_gone() {
    let mut e = setup(2);
    let conf = e.conf("ns1/br-net, ns1/mv-net", json!({}));
    e.run("ADD", "gone", 0, "ns1", &conf).ok();
    e.run("ADD", "nojournal", 1, "ns1", &conf).ok();
    // Journal gone for pod 1: DEL rebuilds the plan from config + runtime annotations.
    for f in std::fs::read_dir(&e.cache).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("nojournal:") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    e.run("DEL", "nojournal", 1, "ns1", &conf).ok();
    assert_eq!(link_names(e.w.pods[1].netns()), vec!["lo"]);
    // netns gone for pod 0.
    let path = e.w.pod(0);
    drop(e.w.pods.remove(0));
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod0";
    for _ in 0..2 {
        let inv = Invocation {
            verb: "DEL",
            container_id: "gone",
            netns: &path,
            ifname: "eth0",
            args,
            path: REFERENCE_DIR,
            ..Default::default()
        };
        run_in(
            e.w.node.netns(),
            &meta_bin(),
            &inv,
            conf.to_string().as_bytes(),
        )
        .ok();
    }
    e.assert_clean(0, "netns gone + journal gone");
}

#[test]
fn namespace_isolation() {
    let e = setup(1);
    let conf = e.conf("ns2/other-net", json!({"namespaceIsolation": true}));
    let r = e.run("ADD", "iso", 0, "ns1", &conf);
    assert_eq!(r.err_code(), 7);
    // The cause, the network and its interface.
    assert!(
        r.err_msg().starts_with(
            "pod ns1/pod0: networks[0] ns2/other-net (net1) refused by namespaceIsolation: \
             the NAD's namespace \"ns2\" is neither the pod's namespace \"ns1\" nor a global \
             namespace [default (globalNamespaces unset)]"
        ),
        "{}",
        r.err_msg()
    );
    e.assert_clean(0, "isolation");
    // globalNamespaces lifts it.
    let conf = e.conf(
        "ns2/other-net",
        json!({"namespaceIsolation": true, "globalNamespaces": "ns2"}),
    );
    e.run("ADD", "iso", 0, "ns1", &conf).ok();
    e.run("DEL", "iso", 0, "ns1", &conf).ok();
    e.assert_clean(0, "isolation lifted");
}

#[test]
fn bad_annotations_and_capabilities() {
    let e = setup(1);
    let cases = [
        ("ns1/br-net@eth0", "used twice"),
        (
            r#"[{"name": "br-net", "namespace": "ns1", "mac": "02:00:00:00:00:01"}]"#,
            "capability",
        ),
        (r#"[{"name": "br-net", "interface": "a/b"}]"#, "interface"),
        ("ns1/missing-net", "not found"),
        ("[{", "k8s.v1.cni.cncf.io/networks"),
    ];
    for (ann, want) in cases {
        let conf = e.conf(ann, json!({}));
        let r = e.run("ADD", "bad", 0, "ns1", &conf);
        assert_eq!(r.err_code(), 7, "{ann}: {}", r.stdout);
        assert!(r.err_msg().contains(want), "{ann}: {}", r.err_msg());
        e.assert_clean(0, ann);
    }
}

#[test]
fn default_route_moves_to_the_chosen_network() {
    let e = setup(1);
    let conf = e.conf(
        r#"[{"name": "br-net", "namespace": "ns1", "default-route": ["10.61.0.1"]}]"#,
        json!({}),
    );
    let r = e.run("ADD", "dr", 0, "ns1", &conf).ok();
    // The runtime's (cluster) result lost its default route...
    let routes = r.value()["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        routes.iter().all(|rt| rt["dst"] != "0.0.0.0/0"),
        "{routes:?}"
    );
    // ...and the pod's kernel default route now goes through net1.
    let pod = e.w.pods[0].netns();
    let eth0 = iface_state(pod, "eth0").unwrap();
    assert!(
        eth0.routes.iter().all(|r| !r.starts_with("0.0.0.0/0")),
        "{:?}",
        eth0.routes
    );
    let net1 = iface_state(pod, "net1").unwrap();
    assert!(
        net1.routes
            .iter()
            .any(|r| r.starts_with("0.0.0.0/0 via 10.61.0.1")),
        "{:?}",
        net1.routes
    );
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(e.cache.join("status/ns1/pod0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        st[0]["default"],
        Value::Null,
        "cluster is no longer default: {st}"
    );
    assert_eq!(st[1]["default"], true);
    assert_eq!(st[1]["gateway"], json!(["10.61.0.1"]));
    e.run("DEL", "dr", 0, "ns1", &conf).ok();
    e.assert_clean(0, "default-route");
}

/// A default-route the kernel refuses (a gateway not reachable from the interface): the
/// error names the network and the interface (never the kernel's interface index), and the
/// ADD is rolled back.
#[test]
fn default_route_error_names_network_and_interface() {
    let e = setup(1);
    let conf = e.conf(
        r#"[{"name": "br-net", "namespace": "ns1", "default-route": ["10.99.0.1"]}]"#,
        json!({}),
    );
    let r = e.run("ADD", "drx", 0, "ns1", &conf);
    let msg = r.err_msg();
    assert!(
        msg.starts_with(
            "network ns1/br-net (net1): default-route: set 0.0.0.0/0 via 10.99.0.1 dev net1: \
             Network is unreachable (errno 101)"
        ),
        "{}",
        r.stdout
    );
    assert!(
        !msg.split("dev ")
            .skip(1)
            .any(|w| w.starts_with(|c: char| c.is_ascii_digit())),
        "an interface index: {msg}"
    );
    e.assert_clean(0, "default-route refused");
    e.run("DEL", "drx", 0, "ns1", &conf).ok();
    e.assert_clean(0, "default-route refused, DEL");
}

/// A pod whose own namespace (K8S_POD_NAMESPACE) is invalid: the error says so, instead of
/// blaming a `networks[0].namespace` the user never wrote.
#[test]
fn invalid_pod_namespace_is_blamed_on_the_pod() {
    let e = setup(1);
    let conf = e.conf("br-net", json!({}));
    let r = e.run("ADD", "badns", 0, "Bad_NS", &conf);
    assert_eq!(r.err_code(), 4, "{}", r.stdout);
    let msg = r.err_msg();
    assert!(
        msg.starts_with(
            "pod Bad_NS/pod0: the pod's namespace \"Bad_NS\" (K8S_POD_NAMESPACE in CNI_ARGS) is invalid"
        ),
        "{msg}"
    );
    assert!(!msg.contains("networks[0]"), "{msg}");
    e.assert_clean(0, "invalid pod namespace");
    // DEL still succeeds (cluster network only).
    e.run("DEL", "badns", 0, "Bad_NS", &conf).ok();
    e.assert_clean(0, "invalid pod namespace, DEL");
}

#[test]
fn bundled_delegate_refuses_fields_it_does_not_implement() {
    let e = setup(1);
    nad(
        &e.nads,
        "ns1",
        "iso-net",
        json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "isobr",
        "portIsolation": true, "ipam": {"type": "host-local", "subnet": "10.64.0.0/24", "dataDir": e.w.path("ipam-br")}}),
    );
    let conf = e.conf("ns1/iso-net", json!({}));
    let r = e.run("ADD", "uf", 0, "ns1", &conf);
    assert_eq!(r.err_code(), 2, "{}", r.stdout);
    let msg = r.err_msg();
    assert!(
        msg.contains("portIsolation") && msg.contains("forceExec"),
        "{msg}"
    );
    assert!(msg.contains("ns1/iso-net (net1)"), "{msg}");
    e.assert_clean(0, "unimplemented field");
}

/// NADs written in the legacy CNI versions (0.2.0, or no `cniVersion`, which libcni and the
/// plugins take as 0.1.0) run as they do under Multus: the bundled bridge in-process, the
/// reference macvlan exec'd with its legacy `ip4` result, and a legacy chain whose second
/// plugin (the reference tuning) gets the prevResult in the legacy shape.
#[test]
fn legacy_cni_versions_in_nads() {
    let e = setup(1);
    let ipam = |n: &str, subnet: &str| json!({"type": "host-local", "subnet": subnet, "dataDir": e.w.path(&format!("ipam-{n}"))});
    nad(
        &e.nads,
        "ns1",
        "old-br",
        json!({"cniVersion": "0.2.0", "type": "bridge", "bridge": "oldbr", "ipam": ipam("br", "10.61.0.0/24")}),
    );
    nad(
        &e.nads,
        "ns1",
        "old-mv",
        json!({"type": "macvlan", "master": "mvpar0", "mode": "bridge", "ipam": ipam("mv", "10.62.0.0/24")}),
    );
    nad(
        &e.nads,
        "ns1",
        "old-chain",
        json!({"cniVersion": "0.2.0", "plugins": [
            {"type": "bridge", "bridge": "oldbr2", "ipam": ipam("other", "10.63.0.0/24")},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.net3.send_redirects": "0"}}
        ]}),
    );
    let conf = e.conf("ns1/old-br, ns1/old-mv, ns1/old-chain", json!({}));
    let r = e.run("ADD", "lg", 0, "ns1", &conf).ok();
    assert_eq!(r.value()["cniVersion"], "1.0.0");
    let pod = e.w.pods[0].netns();
    assert_eq!(link_names(pod), vec!["eth0", "lo", "net1", "net2", "net3"]);
    assert_eq!(
        iface_state(pod, "net1").unwrap().addrs,
        vec!["10.61.0.2/24"]
    );
    let net2 = iface_state(pod, "net2").unwrap();
    assert_eq!(net2.kind.as_deref(), Some("macvlan"));
    assert_eq!(net2.addrs, vec!["10.62.0.2/24"]);
    assert_eq!(
        iface_state(pod, "net3").unwrap().addrs,
        vec!["10.63.0.2/24"]
    );
    // tuning ran on net3 with the legacy prevResult.
    assert_eq!(
        read_in_ns_proc(pod, "net.ipv4.conf.net3.send_redirects").trim(),
        "0"
    );
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(e.cache.join("status/ns1/pod0.json")).unwrap(),
    )
    .unwrap();
    let st = st.as_array().unwrap();
    assert_eq!(st.len(), 4, "{st:?}");
    assert_eq!(st[1]["name"], "ns1/old-br");
    assert_eq!(st[1]["interface"], "net1");
    assert_eq!(st[2]["name"], "ns1/old-mv");
    // The legacy result names no interface; the status names the one it was asked for.
    assert_eq!(st[2]["interface"], "net2");
    assert_eq!(st[2]["ips"], json!(["10.62.0.2"]));
    assert_eq!(st[3]["name"], "ns1/old-chain");
    assert_eq!(st[3]["ips"], json!(["10.63.0.2"]));
    // CHECK does not exist below 0.4.0: the legacy networks are skipped, the rest checked.
    e.run("CHECK", "lg", 0, "ns1", &conf).ok();
    for _ in 0..2 {
        e.run("DEL", "lg", 0, "ns1", &conf).ok();
    }
    e.assert_clean(0, "legacy networks");
}
