//! The crate's one error type.

/// Everything that can go wrong in this crate.
///
/// Messages are meant for humans (they end up in CNI errors, admission responses and pod
/// events): each names the annotation or object, the element index and the field at fault,
/// and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An annotation value is unusable as a whole (not valid JSON, not a list, ...).
    #[error("{annotation}: {reason}")]
    Annotation {
        /// The annotation key, e.g. `k8s.v1.cni.cncf.io/networks`.
        annotation: &'static str,
        /// Why the value was rejected.
        reason: String,
    },
    /// One element of an annotation list is invalid.
    #[error("{annotation}[{index}]{}: {reason}", field_suffix(field))]
    Element {
        /// The annotation key, e.g. `k8s.v1.cni.cncf.io/networks`.
        annotation: &'static str,
        /// Zero-based position of the element in the annotation list.
        index: usize,
        /// The offending field as a path below the element (`name`, `ips[1]`,
        /// `portMappings[0].hostPort`), or `None` when the element as a whole is wrong.
        field: Option<String>,
        /// Why the element was rejected.
        reason: String,
    },
    /// A NetworkAttachmentDefinition cannot be turned into a CNI configuration.
    #[error("NetworkAttachmentDefinition {nad}: {field}: {reason}")]
    Nad {
        /// `namespace/name` of the object (just `name` when it has no namespace).
        nad: String,
        /// The offending field, e.g. `spec.config` or `metadata.name`.
        field: String,
        /// Why the object was rejected.
        reason: String,
    },
    /// Serializing a generated object (CRD, annotation) failed.
    #[error("serialization failed: {0}")]
    Serialize(String),
    /// The node agent's socket could not be used (down, slow, or a broken answer).
    #[error("agent socket: {0}")]
    Agent(String),
}

fn field_suffix(field: &Option<String>) -> String {
    match field {
        Some(f) => format!(".{f}"),
        None => String::new(),
    }
}

impl Error {
    /// The element index for [`Error::Element`], `None` otherwise.
    pub fn index(&self) -> Option<usize> {
        match self {
            Error::Element { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The offending field for [`Error::Element`] and [`Error::Nad`], `None` otherwise.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Element { field, .. } => field.as_deref(),
            Error::Nad { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The reason alone, without the location prefix.
    pub fn reason(&self) -> &str {
        match self {
            Error::Annotation { reason, .. }
            | Error::Element { reason, .. }
            | Error::Nad { reason, .. } => reason,
            Error::Serialize(reason) | Error::Agent(reason) => reason,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
