//! The webhook against the plugin: every NAD case of the fixture table whose verdict ADD
//! can give (a bundled type; not the cross-NAD checks, which are the webhook's own; not a
//! name the annotation cannot even name) is also added for real: the NAD in the plugin's
//! `localNadDir`, a pod naming it, an in-process ADD of the meta plugin (`MetaPlugin`,
//! delegates in-process) in a node namespace the test makes. A refused NAD must fail ADD
//! with the webhook's message after the attachment's context; an admitted one must attach
//! (and is deleted again), except where this kernel lacks a feature (ipvlan, bridge VLAN
//! filtering).

use meta_netlink::ops::NetlinkOps;
use meta_netlink::real::Netlink;
use meta_tests::{Invocation, World, run_plugin, veth_pair_in};
use serde_json::{Value, json};
use std::path::Path;

const NAD_PREFIX: &str = "NetworkAttachmentDefinition ns1/net: ";

/// Why a case is not run against ADD, if it is not.
fn skip_reason(c: &Value) -> Option<&'static str> {
    let r = &c["request"];
    let name = c["name"].as_str().unwrap_or("");
    let expect = &c["expect"];
    if r["kind"] != "NetworkAttachmentDefinition" || r["operation"] != "CREATE" {
        return Some("not a NAD creation");
    }
    if r["name"] != "net" || r["namespace"] != "ns1" {
        return Some("a NAD name check (the annotation cannot name it)");
    }
    if c["world"].as_object().is_some_and(|w| !w.is_empty()) || name.contains("VNI") {
        return Some("a cross-NAD check (the webhook's own)");
    }
    let config = r["object"]["spec"]["config"].as_str().unwrap_or("");
    if config.is_empty() {
        return Some("resolved from the nodes' confDir");
    }
    if !r["object"]["spec"]["config"].is_string() {
        return Some("not a NAD object");
    }
    let warnings = expect["warnings"].as_array().map(Vec::len).unwrap_or(0);
    if expect["allowed"] == true && warnings > 0 && c["settings"].get("forceExec").is_none() {
        return Some("needs a binary that is not bundled");
    }
    if expect["allowed"] == true && config.contains("\"primary\"") {
        return Some("the primary overlay needs the node's subnet");
    }
    None
}

/// The NAD's configuration with its host-side state moved into the test's directory
/// (host-local `dataDir`, the vxlan `stateDir`) where the case does not set it.
fn localized(config: &str, dir: &Path) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(config) else {
        return config.to_string();
    };
    let fix = |p: &mut Value| {
        let Some(p) = p.as_object_mut() else { return };
        if let Some(ipam) = p.get_mut("ipam").and_then(Value::as_object_mut)
            && !ipam.contains_key("dataDir")
        {
            ipam.insert("dataDir".into(), json!(dir.join("ipam")));
        }
        if p.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("vxlan"))
            && p.contains_key("vni")
            && !p.contains_key("stateDir")
        {
            p.insert("stateDir".into(), json!(dir.join("vxlan")));
        }
    };
    match v.get_mut("plugins").and_then(Value::as_array_mut) {
        Some(list) => list.iter_mut().for_each(fix),
        None => fix(&mut v),
    }
    v.to_string()
}

/// The node: a LAN veth `lan0` (macvlan/ipvlan master, VXLAN underlay) with an address
/// and a default route, both inside the node namespace.
fn node(w: &World) {
    let ns = w.node.netns();
    veth_pair_in(ns, "lan0", "lan1");
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let lan0 = nl.link_by_name("lan0").unwrap().unwrap().index;
    nl.addr_add(lan0, "192.168.50.1/24".parse().unwrap())
        .unwrap();
    nl.route_add(&meta_netlink::types::RouteSpec {
        dst: "0.0.0.0/0".parse().unwrap(),
        gw: Some("192.168.50.254".parse().unwrap()),
        oif: Some(lan0),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn webhook_verdicts_are_add_verdicts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission.json");
    let table: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let w = World::new(1);
    node(&w);
    let (nads, confdir, cache) = (w.path("nads"), w.path("net.d"), w.path("cache"));
    for d in [&nads, &confdir, &cache] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        confdir.join("10-cluster.conflist"),
        json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
            {"type": "bridge", "bridge": "clbr0",
             "ipam": {"type": "host-local", "subnet": "10.60.0.0/24", "dataDir": w.path("ipam-cluster")}}
        ]})
        .to_string(),
    )
    .unwrap();
    let netns = w.pod(0);
    let (mut compared, mut refused, mut attached, mut no_kernel) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (i, c) in table["cases"].as_array().unwrap().iter().enumerate() {
        let name = c["name"].as_str().unwrap();
        if skip_reason(c).is_some() {
            continue;
        }
        let config = localized(
            c["request"]["object"]["spec"]["config"].as_str().unwrap(),
            w.dir.path(),
        );
        let mut obj = c["request"]["object"].clone();
        obj["spec"]["config"] = json!(config);
        std::fs::create_dir_all(nads.join("ns1")).unwrap();
        std::fs::write(nads.join("ns1/net.json"), obj.to_string()).unwrap();
        let force_exec = c["settings"].get("forceExec").cloned().unwrap_or(json!([]));
        let conf = json!({
            "cniVersion": "1.0.0", "name": "meta", "type": "meta-cni",
            "clusterNetwork": "cluster", "confDir": confdir, "binDir": "/usr/lib/cni",
            "cniDir": cache, "localNadDir": nads, "forceExec": force_exec,
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "net"}}
        });
        let cid = format!("diff{i}");
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p{i};K8S_POD_INFRA_CONTAINER_ID={cid}"
        );
        let inv = |verb| Invocation {
            verb,
            container_id: &cid,
            netns: &netns,
            ifname: "eth0",
            args: &args,
            path: "/usr/lib/cni",
            ..Default::default()
        };
        let stdin = conf.to_string();
        let run = |verb| {
            let inv = inv(verb);
            let stdin = stdin.clone();
            w.node
                .netns()
                .run(move || run_plugin(&meta_cni::MetaPlugin, &inv, stdin.as_bytes()))
                .expect("thread in the node namespace")
        };
        let add = run("ADD");
        compared += 1;
        let expect = &c["expect"];
        if expect["allowed"] == true {
            if add.code == 0 {
                attached += 1;
                let del = run("DEL");
                assert_eq!(del.code, 0, "{name}: DEL: {}", del.stdout);
            } else if let Some(limit) = KERNEL_LIMITS.iter().find(|l| add.err_msg().contains(*l)) {
                no_kernel += 1;
                eprintln!(
                    "{name}: {limit} (the webhook admitted it; this kernel cannot show more)"
                );
            } else {
                failures.push(format!(
                    "{name}: admitted, but ADD failed: {}",
                    add.err_msg()
                ));
            }
            remove_node_bridges(&w);
            continue;
        }
        refused += 1;
        let message = expect["message"].as_str().unwrap();
        let got = add.err_msg();
        let ok = if let Some(inner) = message.strip_prefix(NAD_PREFIX)
            && !inner.starts_with("spec.config")
        {
            // A plugin's refusal: ADD's message is the attachment's context and the same.
            add.code != 0 && got == format!("network ns1/net (net1): {inner}")
        } else {
            // The NPWG rules (spec.config): ADD names the pod's element first.
            add.code != 0 && got == format!("pod ns1/p{i}: networks[0]: {message}")
        };
        if !ok {
            failures.push(format!(
                "{name}:\n  webhook: {message}\n  ADD ({}): {got}",
                add.code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{compared} NAD cases: {refused} refused by both, {attached} attached, {no_kernel} not supported by this kernel"
    );
    assert!(
        refused >= 80 && attached >= 15,
        "{compared} {refused} {attached}"
    );
}

/// The NAD bridges (and VXLAN devices) a case left on the node: bridges outlive DEL, and
/// the next case must find the node as the first one did (an existing bridge keeps its
/// settings, e.g. no VLAN filtering).
fn remove_node_bridges(w: &World) {
    let mut nl = Netlink::open(Some(w.node.netns())).expect("netlink");
    for l in nl.links().expect("links") {
        if matches!(l.kind.as_deref(), Some("bridge" | "vxlan")) && l.name != "clbr0" {
            nl.link_del(l.index).expect("delete a case's bridge");
        }
    }
}

/// What this machine's kernel lacks (no ipvlan driver, no bridge VLAN filtering): an
/// admitted NAD that needs it fails ADD with one of these, which is all ADD can show here.
const KERNEL_LIMITS: &[&str] = &[
    "ipvlan unsupported by this kernel",
    "does not support bridge VLAN filtering",
];
