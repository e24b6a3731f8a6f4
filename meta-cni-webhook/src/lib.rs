//! `meta-cni-webhook`: the validating admission webhook of meta-cni (NADs and pod network annotations).
#![deny(missing_docs)]

pub mod certs;
pub mod error;
pub mod metrics;
pub mod serve;
pub mod server;
pub mod tls;

pub use error::Error;
