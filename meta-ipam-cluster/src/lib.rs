//! meta-ipam: cluster-wide IPAM with whereabouts-compatible configuration.
//!
//! * [`config::ClusterIpamConfig`]: the `ipam` section (whereabouts' keys, host-local's
//!   `routes` / `dns`, `kubeconfig`, block size).
//! * [`crd`]: the IpPool / IpBlock objects (group `ipam.meta-cni.io`) and the NPWG
//!   IPAMClaim.
//! * [`journal`]: the node's lock, state file and journal.
//! * [`alloc`]: ADD / DEL over per-node blocks; see docs/ARCHITECTURE.md.
//! * [`reconcile::reconcile_node`]: the node agent's pass: frees this node's allocations
//!   of pods that are gone and those of nodes that are gone, deletes gone nodes' empty
//!   blocks, and reports pool usage ([`reconcile::reconcile`]: the same cluster-wide).
//! * [`stats`]: the process's allocation, release, conflict and request counters.
//! * [`registry::META_IPAM`]: the in-process IPAM type (`meta-ipam`), also served by the
//!   `meta-ipam` binary.

#![warn(missing_docs)]

pub mod alloc;
pub mod api;
pub mod config;
pub mod crd;
pub mod error;
pub mod journal;
pub mod reconcile;
pub mod registry;
pub mod stats;

pub use alloc::{Owner, add, del, sync_data_dir, sync_journal};
pub use config::ClusterIpamConfig;
pub use error::{Error, Result};
pub use registry::META_IPAM;
