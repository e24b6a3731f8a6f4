//! The overlay's error type.

use std::path::PathBuf;

/// Everything that can go wrong while setting up or reconciling the overlay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink request failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The netlink error (keeps the errno).
        #[source]
        source: meta_netlink::Error,
    },
    /// The configuration is not usable.
    #[error("invalid overlay configuration: {0}")]
    Config(String),
    /// A kernel object with our name exists but is something else, or belongs to a
    /// different setup.
    #[error("{0}")]
    Conflict(String),
    /// A VXLAN segment's device exists with other parameters than requested.
    #[error(
        "VNI {vni} is already set up on this node (device {device}: {existing}) with settings \
         that differ from the requested ones ({requested})"
    )]
    SegmentConflict {
        /// The VNI.
        vni: u32,
        /// The existing device.
        device: String,
        /// What the existing device has.
        existing: super::SegmentParams,
        /// What was asked for.
        requested: super::SegmentParams,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The subnet file is malformed.
    #[error("subnet file {}: {msg}", path.display())]
    SubnetFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
}

impl Error {
    /// A closure wrapping a netlink error with context, for `map_err`.
    pub(crate) fn netlink(context: impl Into<String>) -> impl FnOnce(meta_netlink::Error) -> Error {
        let context = context.into();
        move |source| Error::Netlink { context, source }
    }

    /// True when the underlying cause is a missing file or object.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Netlink { source, .. } => source.is_not_found(),
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Result alias of the overlay module.
pub type Result<T> = std::result::Result<T, Error>;
