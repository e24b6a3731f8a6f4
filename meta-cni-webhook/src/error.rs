//! The one error type of the crate.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in `meta-cni-webhook` outside an admission verdict (a
/// refusal is a [`crate::admission::Decision`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that are missing, contradict each other or do not parse.
    #[error("invalid flags: {0}")]
    Flags(String),
    /// A file (a certificate, a key) could not be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address of `--listen`.
        addr: SocketAddr,
        /// What bind said.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or private key that TLS cannot use (bad PEM, key and certificate
    /// that do not match, an unsupported key type).
    #[error("TLS: {0}")]
    Tls(String),
    /// Generating or signing a certificate failed.
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),
    /// No Kubernetes client could be configured (kubeconfig, in-cluster environment).
    #[error("Kubernetes client configuration: {0}")]
    KubeConfig(String),
    /// A request body is not an AdmissionReview `admission.k8s.io/v1` request (HTTP 400).
    #[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
    Review(String),
    /// A file given to `validate` is not YAML or JSON Kubernetes objects.
    #[error("{}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {what}: {source}")]
    Kube {
        /// What was being done, e.g. `create Secret ns/name`.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A [`Error::Kube`] for `what`.
    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> Error {
        Error::Kube {
            what: what.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
