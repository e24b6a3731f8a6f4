//! What the targets share: a world of NADs like the fixture table's, and the settings.

use meta_cni_webhook::admission::{Decision, Settings};
use meta_cni_webhook::world::Objects;
use serde_json::{Value, json};

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
