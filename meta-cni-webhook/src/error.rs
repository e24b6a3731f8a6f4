//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the webhook outside an admission verdict (a refusal
/// is a [`crate::admission::Decision`], not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request body is not an AdmissionReview `admission.k8s.io/v1` request (HTTP 400).
    #[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
    Review(String),
    /// A file given to `validate` cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file given to `validate` is not YAML or JSON Kubernetes objects.
    #[error("{}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
