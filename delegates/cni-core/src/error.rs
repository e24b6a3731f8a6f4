//! The CNI error type: `{cniVersion, code, msg, details}` on stdout, non-zero exit.

use serde::{Deserialize, Serialize};

/// Well-known error codes of the CNI spec (SPEC.md "Error").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration; the message names the field.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables; the message names them.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (JSON, versions).
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Anything not covered by a well-known code (the reference plugins' ErrInternal).
    pub const INTERNAL: u32 = 999;
}

/// A CNI error: the one error type of this crate, and the shape every plugin failure takes
/// at the CNI boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct Error {
    /// The spec's error code.
    pub code: u32,
    /// A short message an operator can act on.
    pub msg: String,
    /// Longer details; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Error {
    /// A new error with a code and message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    /// Code 7, invalid network configuration.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }
    /// Code 2, unsupported field: the message names the field.
    pub fn unsupported_field(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            code::UNSUPPORTED_FIELD,
            format!("unsupported field {field:?}: {why}"),
        )
    }
    /// Code 4, invalid environment.
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }
    /// Code 6, decoding failure.
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(code::DECODING_FAILURE, msg)
    }
    /// Code 5, I/O failure.
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(code::IO_FAILURE, msg)
    }
    /// Code 999, internal / unclassified failure.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }
    /// Code 11, try again later.
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN_LATER, msg)
    }
    /// Prefixes the message with some context, keeping the code.
    pub fn context(mut self, ctx: impl std::fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The JSON document the spec wants on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("cniVersion".into(), cni_version.into());
        m.insert("code".into(), self.code.into());
        m.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            m.insert("details".into(), self.details.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// `Result` with the CNI error.
pub type Result<T> = std::result::Result<T, Error>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io(e.to_string())
    }
}
