//! The vxlan delegate of meta-cni: [`Vxlan`], the CNI plugin (in-process for the meta
//! plugin, and the `meta-vxlan` binary), in two modes ([`config`]):
//!
//! * **primary** (default without `vni`): the pod's cluster network on the node bridge
//!   `meta0`, addresses from the node subnet, default route and cluster-CIDR route via
//!   the bridge gateway, MTU from the subnet file, masquerade out of the cluster CIDR;
//! * **secondary** (`vni` given): an L2 segment per VNI (`mvx<vni>` on `mbr<vni>`), the
//!   NAD's IPAM, a static flood list from `peers`.
//!
//! The node side of the overlay (device, peers, subnet file, segments) is the
//! `meta-overlay` crate, shared with the node agent.
//!
//! DEL is idempotent in both modes (netns gone, interface gone, subnet file gone); CHECK,
//! STATUS and GC follow the bridge delegate.

#![deny(missing_docs)]

mod common;
pub mod config;
mod primary;
mod secondary;

use cni_core::{CmdArgs, CniResult, Plugin, Result};
use config::Mode;
use meta_delegate::DelegateType;
use meta_firewall::{Firewall, Nftables};

/// The vxlan plugin. The firewall backend is used for the primary mode's `ipMasq`.
pub struct Vxlan {
    firewall: Box<dyn Firewall>,
}

impl Default for Vxlan {
    fn default() -> Self {
        Vxlan {
            firewall: Box::new(Nftables::default()),
        }
    }
}

impl Vxlan {
    /// A plugin with a given firewall backend.
    pub fn with_firewall(firewall: Box<dyn Firewall>) -> Self {
        Vxlan { firewall }
    }
}

/// The vxlan delegate's registration: its CNI type names (every field it accepts is
/// its own: there is no reference vxlan plugin).
pub const DELEGATE: DelegateType = DelegateType {
    names: &["vxlan", "meta-vxlan"],
    unimplemented: &[],
    make: || Box::new(Vxlan::default()),
    validate: validate_add,
};

/// ADD's checks that need no node state: the configuration, and a secondary segment's
/// bundled IPAM (the primary's IPAM range is the node's subnet, known on the node only).
fn validate_add(args: &CmdArgs, _chained: bool) -> Result<()> {
    match config::load(args)?.mode {
        Mode::Primary(_) => Ok(()),
        Mode::Secondary(_) => meta_delegate::ipam::validate(args),
    }
}

impl Plugin for Vxlan {
    fn about(&self) -> String {
        meta_delegate::about(
            "meta-vxlan",
            env!("CARGO_PKG_VERSION"),
            "vxlan delegate: primary overlay and secondary VXLAN segments",
        )
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let r = config::load(args)?;
        match &r.mode {
            Mode::Primary(pr) => self.primary_add(args, &r, pr),
            Mode::Secondary(s) => self.secondary_add(args, &r, s),
        }
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        // The kit's DEL rule: only what DEL needs, leniently (config::for_del).
        match config::for_del(args)? {
            config::DelMode::Primary(pr) => self.primary_del(args, &pr),
            config::DelMode::Secondary => self.secondary_del(args),
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        match &r.mode {
            Mode::Primary(pr) => self.primary_check(args, pr),
            Mode::Secondary(s) => self.secondary_check(args, s),
        }
    }

    fn status(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        match &r.mode {
            Mode::Primary(pr) => self.primary_status(args, pr),
            Mode::Secondary(s) => self.secondary_status(args, &r, s),
        }
    }

    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        match &r.mode {
            Mode::Primary(pr) => self.primary_gc(args, pr),
            Mode::Secondary(_) => self.secondary_gc(args),
        }
    }
}
