//! Namespace-bound rtnetlink handles, typed link/addr/route helpers, sysctl, and a fake client.
//!
//! * [`Netns`] / [`NamedNetns`]: network namespaces; [`Netns::run`] runs code in one
//!   on a thread inside it (a fresh one, or a held [`NetnsWorker`]'s long-lived one),
//!   never changing the caller's namespace.
//! * [`NetlinkOps`]: every link/address/route/neighbour/FDB operation the delegates
//!   need, implemented by [`Netlink`] (the kernel, through a socket bound to one
//!   namespace) and [`FakeNetlink`] (an in-memory model that records requests).
//! * [`sysctl_get`] / [`sysctl_set`] / [`SysctlGuard`].
//! * [`helpers`]: small procedures shared by the delegates.
//!
//! The API is synchronous: [`Netlink`] owns a current-thread tokio runtime.

#![deny(missing_docs)]

pub mod error;
pub mod fake;
pub mod helpers;
pub mod netns;
pub mod ops;
pub mod real;
pub mod sysctl;
pub mod types;

pub use error::{Error, Result};
pub use fake::FakeNetlink;
pub use helpers::{
    default_route, default_route_link, get_or_create, link_del_by_name_in, random_veth_name,
    wait_addrs_not_tentative,
};
pub use netns::{NETNS_RUN_DIR, NamedNetns, Netns, NetnsWorker};
pub use ops::{NetlinkOps, Request};
pub use real::Netlink;
pub use sysctl::{SysctlGuard, sysctl_get, sysctl_set};
pub use types::*;
