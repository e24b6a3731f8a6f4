//! The fuzz targets' bodies, and what they share: a world of NADs of every bundled type and
//! the settings. `fuzz_targets/*.rs` call these under libFuzzer; the webhook's
//! `tests/fuzz_corpus.rs` runs every input of `fuzz/corpus/` through them in `cargo test`,
//! so the corpora are also a regression suite.

// Each includer uses some of the bodies.
#![allow(dead_code)]

use meta_cni_webhook::admission::{Decision, Kind, Operation, Request, Settings, admit};
use meta_cni_webhook::review;
use meta_cni_webhook::world::Objects;
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Settings with isolation on, so that its paths are reached too.
pub fn settings() -> Settings {
    let mut s = Settings::default();
    s.isolation.enabled = true;
    s
}

fn nad(ns: &str, name: &str, config: &str) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"config": config},
    })
}

/// A few NADs of every bundled type, in two namespaces, for the cross-object checks.
pub fn world() -> Objects {
    let mut o = Objects::default();
    let nads = [
        nad(
            "ns1",
            "br",
            r#"{"cniVersion":"1.0.0","type":"bridge","bridge":"br-f","ipam":{"type":"host-local","subnet":"10.10.0.0/24"}}"#,
        ),
        nad(
            "ns1",
            "mac",
            r#"{"cniVersion":"1.0.0","type":"macvlan","master":"lan0","ipam":{"type":"static"},"capabilities":{"ips":true,"mac":true}}"#,
        ),
        nad(
            "ns1",
            "vx",
            r#"{"cniVersion":"1.0.0","type":"vxlan","vni":4242,"subnet":"10.30.0.0/24"}"#,
        ),
        nad(
            "default",
            "ipv",
            r#"{"cniVersion":"0.4.0","plugins":[{"type":"ipvlan","master":"lan0","ipam":{"type":"host-local","subnet":"10.40.0.0/24"}},{"type":"tuning"}]}"#,
        ),
        nad("ns1", "empty", ""),
    ];
    for n in nads {
        let nad = serde_json::from_value(n).expect("the fuzz world's NADs are NADs");
        o.put_nad(&nad);
    }
    o
}

/// What every decision must be: a refusal has a message, an admission none.
pub fn check(d: &Decision) {
    assert_eq!(d.allowed, d.message.is_none(), "{d:?}");
    if let Some(m) = &d.message {
        assert!(!m.is_empty(), "an empty refusal message: {d:?}");
    }
}

fn shared() -> &'static (Settings, Objects) {
    static WORLD: OnceLock<(Settings, Objects)> = OnceLock::new();
    WORLD.get_or_init(|| (settings(), world()))
}

/// The pod annotations: `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network`
/// (the first line, when there are two) through the parsers ADD uses, then a pod carrying
/// them through the webhook's checks (NADs exist, isolation, interfaces, capabilities).
pub fn annotation(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (default_net, networks) = match text.split_once('\n') {
        Some((d, n)) if !d.is_empty() => (Some(d), n),
        _ => (None, text),
    };
    if let Ok(sel) = meta_crd::selection::parse_network_selection(networks, "ns1") {
        for el in &sel.networks {
            assert!(!el.name.is_empty(), "an element without a name: {el:?}");
            let _ = meta_crd::pod::capability_args(el);
        }
    }
    if let Some(d) = default_net {
        let _ = meta_crd::selection::parse_default_network(d, "kube-system");
    }
    let (settings, world) = shared();
    let mut annotations = serde_json::Map::new();
    annotations.insert("k8s.v1.cni.cncf.io/networks".into(), networks.into());
    if let Some(d) = default_net {
        annotations.insert("v1.multus-cni.io/default-network".into(), d.into());
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns1", "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    });
    let req = Request {
        kind: Kind::Pod,
        sub_resource: String::new(),
        operation: Operation::Create,
        namespace: "ns1".into(),
        name: "p".into(),
        user: "alice".into(),
        object: Some(pod),
        old_object: None,
    };
    check(&admit(settings, world, &req));
}

/// A NAD's spec.config through the webhook's NAD checks: the conf or conflist shape, every
/// bundled type's own parser (the one ADD uses) and the cross-NAD checks (VNIs, ranges on a
/// bridge), on CREATE and UPDATE.
pub fn nad_config(data: &[u8]) {
    let Ok(config) = std::str::from_utf8(data) else {
        return;
    };
    let (settings, world) = shared();
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "fuzzed", "namespace": "ns1"},
        "spec": {"config": config},
    });
    for operation in [Operation::Create, Operation::Update] {
        let req = Request {
            kind: Kind::Nad,
            sub_resource: String::new(),
            operation,
            namespace: "ns1".into(),
            name: "fuzzed".into(),
            user: "alice".into(),
            object: Some(nad.clone()),
            old_object: None,
        };
        check(&admit(settings, world, &req));
    }
    // The facts the cross-NAD checks read (segments, ranges), from any JSON.
    if let Ok(v) = serde_json::from_str::<Value>(config) {
        let _ = meta_cni_webhook::world::facts(&v);
    }
}

/// An AdmissionReview body as the server receives it on POST /validate: decoded (anything
/// but an admission.k8s.io/v1 request is an error, never a panic), admitted, and the
/// response encoded and read back with the request's uid.
pub fn admission_review(data: &[u8]) {
    let Ok(decoded) = review::decode(data) else {
        return;
    };
    let (settings, world) = shared();
    let decision = admit(settings, world, &decoded.request);
    check(&decision);
    let body = review::encode(&decoded.uid, &decision);
    let back: Value = serde_json::from_slice(&body).expect("the encoded response is JSON");
    assert_eq!(back["response"]["uid"], decoded.uid.as_str());
    assert_eq!(back["response"]["allowed"], decision.allowed);
}
