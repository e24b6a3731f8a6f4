//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while programming the firewall.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument (container ID, interface name, ...) is not acceptable.
    #[error("invalid firewall input: {0}")]
    InvalidInput(String),

    /// The `nft` executable could not be found.
    #[error(
        "the `nft` binary was not found (looked in {searched}); install the nftables \
         package (e.g. `apt-get install nftables`) or configure its path"
    )]
    NftNotFound {
        /// Human readable list of the places that were searched.
        searched: String,
    },

    /// The `nft` executable exists but could not be run.
    #[error("failed to run {program}: {source}")]
    Spawn {
        /// The program that was executed.
        program: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The running kernel lacks nf_tables or one of the required expression modules.
    #[error(
        "the kernel does not support the required nftables features ({stderr}); load the \
         modules (e.g. `modprobe nf_tables nft_chain_nat nft_masq nf_tables_bridge`) or use a \
         kernel built with nf_tables"
    )]
    KernelUnsupported {
        /// What the backend reported (`nft`'s stderr, or the kernel's error).
        stderr: String,
    },

    /// `nft` was denied by the kernel (missing `CAP_NET_ADMIN`).
    #[error(
        "permission denied by the kernel while changing nftables ({stderr}); the plugin needs \
         CAP_NET_ADMIN in the target network namespace"
    )]
    PermissionDenied {
        /// What the backend reported (`nft`'s stderr, or the kernel's error).
        stderr: String,
    },

    /// `nft` failed for another reason.
    #[error("nft {operation} failed (exit status {status}): {stderr}")]
    Nft {
        /// Which operation was attempted (`apply`, `list table inet meta_cni`, ...).
        operation: String,
        /// Exit status of `nft` as printed by the OS.
        status: String,
        /// What `nft` printed on stderr.
        stderr: String,
    },

    /// The kernel refused a netlink request of the netlink backend.
    #[error("nftables {operation} failed: {message}")]
    Netlink {
        /// What was attempted (`add rule inet meta_cni masq_checks`, ...).
        operation: String,
        /// The kernel's errno (0 when the failure was not an errno).
        errno: i32,
        /// The error text, with the kernel's extended acknowledgement when it gave one.
        message: String,
    },

    /// `nft -j` printed something that is not the JSON we expected.
    #[error("could not parse the output of `nft -j {operation}`: {message}")]
    Parse {
        /// The listing command that produced the output.
        operation: String,
        /// What was wrong with it.
        message: String,
    },

    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {message}; make sure its directory is creatable and writable")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
