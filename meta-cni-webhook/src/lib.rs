//! The meta-cni admission webhook: NADs and pod network requests checked at `kubectl
//! apply` with the parsers and rules of the plugin's ADD.
//!
//! - [`admission`]: the checks, pure functions of the settings, the known objects and one
//!   request;
//! - [`world`]: what the checks know of the cluster; [`cache`]: that, kept by watches;
//! - [`review`]: AdmissionReview `admission.k8s.io/v1` decoding and encoding;
//! - [`access`]: the API accesses it makes (deploy/'s RBAC is checked against it);
//! - [`offline`]: `meta-cni-webhook validate FILE...`.

#![deny(missing_docs)]

pub mod access;
pub mod admission;
pub mod cache;
pub mod error;
pub mod offline;
pub mod review;
pub mod world;
