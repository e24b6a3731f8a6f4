//! The meta-cni admission webhook: NADs and pod network requests checked at `kubectl
//! apply` with the parsers and rules of the plugin's ADD.
//!
//! - [`admission`]: the checks, pure functions of the settings, the known objects and one
//!   request; [`cli`]: their flags;
//! - [`world`]: what the checks know of the cluster; [`cache`]: that, kept by watches;
//! - [`review`]: AdmissionReview `admission.k8s.io/v1` decoding and encoding;
//!   [`handler`]: the checks as the server's handler;
//! - [`server`], [`tls`], [`certs`], [`metrics`], [`serve`]: HTTPS serving (rustls, TLS
//!   1.2 and 1.3), the self-provisioned (or mounted) serving certificate, Prometheus
//!   metrics, `meta-cni-webhook serve`;
//! - [`access`]: the API accesses it makes (deploy/'s RBAC is checked against it);
//! - [`offline`]: `meta-cni-webhook validate FILE...`.

#![deny(missing_docs)]

pub mod access;
pub mod admission;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod offline;
pub mod review;
pub mod serve;
pub mod server;
pub mod tls;
pub mod world;

pub use error::Error;
