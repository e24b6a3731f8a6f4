//! The crate's error type and its CNI codes.

/// What can go wrong in meta-ipam.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration or the invocation is invalid (CNI code 7).
    #[error("{0}")]
    Config(String),
    /// The API server could not be reached or answered a transient error (CNI code 11).
    #[error("{0}")]
    Unreachable(String),
    /// No address is left (CNI code 999, the message says which range).
    #[error("{0}")]
    Exhausted(String),
    /// A requested address is held by someone else (CNI code 999).
    #[error("{0}")]
    Taken(String),
    /// The API server refused a request (RBAC, validation) (CNI code 999).
    #[error("{0}")]
    Api(String),
    /// Local storage (journal, lock) failed (CNI code 5).
    #[error("{0}")]
    Io(String),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for cni_core::Error {
    fn from(e: Error) -> cni_core::Error {
        use cni_core::code;
        let c = match &e {
            Error::Config(_) => code::INVALID_CONFIG,
            Error::Unreachable(_) => code::TRY_AGAIN_LATER,
            Error::Io(_) => code::IO_FAILURE,
            Error::Exhausted(_) | Error::Taken(_) | Error::Api(_) => code::INTERNAL,
        };
        cni_core::Error::new(c, format!("meta-ipam: {e}"))
    }
}
