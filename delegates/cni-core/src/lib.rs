//! CNI spec 1.1 core for meta-cni: network configuration and configuration lists (unknown
//! keys kept), `CNI_ARGS`, the environment validated per verb, versions and result
//! conversion, the spec's error JSON, and a plugin skeleton that keeps stdout for exactly
//! one JSON document.

pub mod args;
pub mod config;
pub mod env;
pub mod error;
pub mod invoke;
pub mod plugin;
pub mod registry;
pub mod result;
pub mod version;

pub use args::CniArgs;
pub use config::{Attachment, ConfList, NetConf};
pub use env::{Env, Verb};
pub use error::{Error, Result, code};
pub use plugin::{CmdArgs, Plugin};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::Version;
