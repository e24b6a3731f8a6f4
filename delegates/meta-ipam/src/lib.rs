//! host-local and static compatible IPAM.
//!
//! * [`HostLocalConfig`] + [`allocate`] / [`release`] / [`check`] / [`status`] / [`gc`]:
//!   the reference host-local plugin as a library, with the reference's on-disk layout
//!   (`<dataDir>/<network>/<ip>`, `last_reserved_ip.<N>`, `lock`), so both can share a
//!   data directory.
//! * [`static_result`] / [`StaticConfig`]: the reference static plugin.
//!
//! The `meta-host-local` and `meta-static` binaries wrap these in the CNI protocol.

#![warn(missing_docs)]

pub mod config;
pub mod dns;
pub mod hostlocal;
mod ip;
pub mod registry;
pub mod static_ipam;
mod store;

pub use config::{DEFAULT_DATA_DIR, HostLocalConfig, IpSource, Range, RangeSet};
pub use hostlocal::{allocate, check, gc, release, release_for_del, status};
pub use registry::{HOST_LOCAL, STATIC};
pub use static_ipam::{StaticConfig, static_result};
