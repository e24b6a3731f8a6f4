//! The Kubernetes objects of meta-ipam (group `ipam.meta-cni.io`): [`IpPool`] (one per
//! range of a network), [`IpBlock`] (one per claimed node block, holding that block's
//! allocations), [`IpReservation`] (one per address held, when `enable_overlapping_ranges`
//! cross-checks ranges that overlap) and the NPWG [`IpamClaim`]
//! (`k8s.cni.cncf.io/v1alpha1`, as k8snetworkplumbingwg/ipamclaims defines it). `meta-ipam-crdgen` prints their CRDs
//! (what `deploy/crds/` holds).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use kube::core::crd::v1::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of the pool and block objects.
pub const GROUP: &str = "ipam.meta-cni.io";
/// Label of a block naming its pool.
pub const POOL_LABEL: &str = "ipam.meta-cni.io/pool";
/// Label of a block naming its node.
pub const NODE_LABEL: &str = "ipam.meta-cni.io/node";

/// One range of one network, split into blocks of `blockPrefix`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "ipam.meta-cni.io",
    version = "v1alpha1",
    kind = "IpPool",
    plural = "ippools",
    singular = "ippool",
    doc = "A range of a meta-ipam network, split into per-node blocks."
)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// The pool's scope: whereabouts' `network_name` (empty when the configurations
    /// sharing this range set none; then absent, as the API server of Kubernetes 1.20
    /// refuses an empty string here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// The range's subnet (CIDR).
    pub cidr: String,
    /// Prefix length of the node blocks.
    pub block_prefix: u8,
}

/// One address held in a block.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The owner: pod UID (or container ID when the runtime passes no UID) and interface,
    /// `<uid>/<ifname>`; or `claim:<namespace>/<name>` for an IPAMClaim's address.
    pub owner: String,
    /// Pod namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Pod name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Pod UID (empty for a runtime that passes none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
    /// Container ID of the ADD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    /// The node whose ADD made it.
    pub node: String,
    /// When it was made (seconds since the epoch): the reconciler leaves younger ones.
    pub created: u64,
}

/// A block of a pool claimed by one node: the node allocates inside it; other nodes
/// borrow only offsets at or above `lendFrom`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "ipam.meta-cni.io",
    version = "v1alpha1",
    kind = "IpBlock",
    plural = "ipblocks",
    singular = "ipblock",
    doc = "A block of a meta-ipam pool claimed by a node, with its allocations."
)]
#[serde(rename_all = "camelCase")]
pub struct IpBlockSpec {
    /// The pool (IpPool name).
    pub pool: String,
    /// The block (CIDR).
    pub cidr: String,
    /// The node that claimed it.
    pub node: String,
    /// Offsets from here on may be lent to other nodes; the owner allocates below it while
    /// the API server is unreachable.
    pub lend_from: u32,
    /// When the block became empty (seconds since the epoch), for its release after a
    /// grace period; absent while it holds addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since: Option<u64>,
    /// Allocations by offset in the block (decimal string).
    #[serde(default)]
    pub allocations: BTreeMap<String, Allocation>,
}

/// One address held by one owner across every range of a scope (whereabouts'
/// OverlappingRangeIPReservation): named by the address (and the scope's `network_name`),
/// so the API server's create-if-absent decides between two overlapping ranges that picked
/// the same address.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "ipam.meta-cni.io",
    version = "v1alpha1",
    kind = "IpReservation",
    plural = "ipreservations",
    singular = "ipreservation",
    doc = "An address held across overlapping meta-ipam ranges of one network_name."
)]
#[serde(rename_all = "camelCase")]
pub struct IpReservationSpec {
    /// The address.
    pub ip: String,
    /// The pool whose block holds it.
    pub pool: String,
    /// Who holds it (the same record as the block's allocation).
    pub holder: Allocation,
}

/// NPWG IPAMClaim spec (k8snetworkplumbingwg/ipamclaims v1alpha1).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1alpha1",
    kind = "IPAMClaim",
    plural = "ipamclaims",
    singular = "ipamclaim",
    namespaced,
    status = "IPAMClaimStatus",
    doc = "IPAMClaim is the Schema for the IPAMClaim API"
)]
pub struct IPAMClaimSpec {
    /// The network name to which this persistent allocation belongs to
    pub network: String,
    /// The pod interface name for which this allocation was created
    pub interface: String,
}

/// NPWG IPAMClaim status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct IPAMClaimStatus {
    /// The list of IP addresses (v4, v6) that were allocated for the pod interface
    #[serde(default)]
    pub ips: Vec<String>,
}

/// The CRDs of meta-ipam, in the order to apply them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        IpPool::crd(),
        IpBlock::crd(),
        IpReservation::crd(),
        IPAMClaim::crd(),
    ]
}

/// The CRDs as one multi-document YAML (what `deploy/crds/meta-ipam.yaml` holds).
pub fn crds_yaml() -> Result<String, String> {
    let mut out = String::from(
        "# Generated by `cargo run -p meta-ipam-cluster --bin meta-ipam-crdgen`: do not edit.\n",
    );
    for c in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&c).map_err(|e| e.to_string())?);
    }
    Ok(out)
}
