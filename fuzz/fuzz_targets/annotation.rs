//! The pod annotations: `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network`
//! through the parsers that ADD uses, then a pod carrying them through the webhook's checks
//! (NADs exist, isolation, interfaces, capabilities) against a world of NADs.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use meta_cni_webhook::admission::{Kind, Operation, Request, admit};
use serde_json::json;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line, when there are two, is the default network; the rest the networks.
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

    static WORLD: OnceLock<(meta_cni_webhook::admission::Settings, meta_cni_webhook::world::Objects)> =
        OnceLock::new();
    let (settings, world) = WORLD.get_or_init(|| (common::settings(), common::world()));
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
    common::check(&admit(settings, world, &req));
});
