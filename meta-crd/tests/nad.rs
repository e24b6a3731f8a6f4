//! NetworkAttachmentDefinition (de)serialization as the API server returns it.

use kube::Resource;
use meta_crd::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use serde_json::json;

#[test]
fn resource_identity() {
    assert_eq!(NetworkAttachmentDefinition::group(&()), "k8s.cni.cncf.io");
    assert_eq!(NetworkAttachmentDefinition::version(&()), "v1");
    assert_eq!(
        NetworkAttachmentDefinition::api_version(&()),
        "k8s.cni.cncf.io/v1"
    );
    assert_eq!(
        NetworkAttachmentDefinition::kind(&()),
        "NetworkAttachmentDefinition"
    );
    assert_eq!(
        NetworkAttachmentDefinition::plural(&()),
        "network-attachment-definitions"
    );
}

#[test]
fn multus_style_nad_round_trips() {
    let config = r#"{ "cniVersion": "0.3.1", "type": "macvlan", "master": "eth1", "mode": "bridge", "ipam": { "type": "host-local", "subnet": "192.168.1.0/24" } }"#;
    let obj = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {
            "name": "macvlan-conf",
            "namespace": "default",
            "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov"},
            "resourceVersion": "1234",
            "uid": "6f9c1b62-4cfe-4a0c-8d47-1c0f7f4d8a10"
        },
        "spec": {"config": config}
    });
    let nad: NetworkAttachmentDefinition = serde_json::from_value(obj.clone()).unwrap();
    assert_eq!(nad.spec.config.as_deref(), Some(config));
    assert_eq!(nad.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(serde_json::to_value(&nad).unwrap(), obj);
}

#[test]
fn nad_without_spec_deserializes_and_serializes_without_config() {
    let obj = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "a-bridge-network"}
    });
    let nad: NetworkAttachmentDefinition = serde_json::from_value(obj).unwrap();
    assert_eq!(nad.spec, NetworkAttachmentDefinitionSpec::default());
    let back = serde_json::to_value(&nad).unwrap();
    assert_eq!(back["spec"], json!({}));
}

#[test]
fn new_builds_a_named_object() {
    let nad = NetworkAttachmentDefinition::new(
        "net-a",
        NetworkAttachmentDefinitionSpec {
            config: Some(r#"{"type":"bridge"}"#.into()),
        },
    );
    assert_eq!(nad.metadata.name.as_deref(), Some("net-a"));
    let v = serde_json::to_value(&nad).unwrap();
    assert_eq!(v["apiVersion"], "k8s.cni.cncf.io/v1");
    assert_eq!(v["spec"]["config"], r#"{"type":"bridge"}"#);
}
