//! A NAD's spec.config through the webhook's NAD checks: the conf or conflist shape, every
//! bundled type's own parser (the one ADD uses: bridge, macvlan, ipvlan, vxlan, host-local,
//! static, ...) and the cross-NAD checks (VNIs, ranges on a bridge) against a world of NADs.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use meta_cni_webhook::admission::{Kind, Operation, Request, admit};
use serde_json::json;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = std::str::from_utf8(data) else {
        return;
    };
    static WORLD: OnceLock<(meta_cni_webhook::admission::Settings, meta_cni_webhook::world::Objects)> =
        OnceLock::new();
    let (settings, world) = WORLD.get_or_init(|| (common::settings(), common::world()));
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
        common::check(&admit(settings, world, &req));
    }
    // The facts the cross-NAD checks read (segments, ranges), from any JSON.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(config) {
        let _ = meta_cni_webhook::world::facts(&v);
    }
});
