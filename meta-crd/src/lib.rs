//! Kubernetes-facing types of meta-cni, compatible with Multus and the NPWG multi-network
//! spec (v1.3):
//!
//! - [`nad`]: the `NetworkAttachmentDefinition` custom resource (`k8s.cni.cncf.io/v1`), its
//!   CRD (see the `crdgen` binary and `deploy/crds/`), and [`effective_config`], the NPWG rules
//!   that turn a NAD into a CNI configuration (conf vs conflist, name injection).
//! - [`selection`]: the `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network`
//!   annotation parsers, with validation errors that name the element and the field.
//! - [`status`]: the `k8s.v1.cni.cncf.io/network-status` annotation, written byte for byte as
//!   Multus writes it, and built from a CNI result summary.
//! - [`pod`]: the pod-level rules the plugin's ADD and the webhook share (namespace
//!   isolation, requested capabilities, interface names across the pod).
//! - [`validate`]: the name, interface, MAC and IP validators the parsers use.
//! - [`agent_api`]: the node agent's unix-socket protocol (the plugin asks it for NADs and
//!   pods), shared by both sides.
//! - [`spool`]: the records the plugin drops for the agent (Events and metrics), shared by
//!   both sides.
//!
//! This crate knows no delegate crate (see ARCHITECTURE.md); it links kube for the derive
//! only. As a library it enables no `k8s-openapi` version feature: the final binary does.

#![deny(missing_docs)]

pub mod agent_api;
pub mod error;
pub mod nad;
pub mod pod;
pub mod selection;
pub mod spool;
pub mod status;
pub mod validate;

pub use error::{Error, Result};
pub use nad::{
    NadConfig, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec, config_from_spec, crd,
    crd_yaml, effective_config,
};
pub use pod::Isolation;
pub use selection::{
    Bandwidth, DEFAULT_NETWORK_ANNOTATION, DefaultNetworkSelection, NETWORKS_ANNOTATION,
    NetworkSelection, NetworkSelectionElement, ParseWarning, PortMapping, SelectionFormat,
    parse_default_network, parse_network_selection,
};
pub use status::{
    DeviceInfo, Dns, NETWORK_STATUS_ANNOTATION, NetworkStatus, ResultInterface, ResultIp,
    ResultRoute, ResultSummary, network_status_annotation, network_status_patch, network_statuses,
    parse_network_status,
};
pub use validate::{HwAddr, IpRequest};
