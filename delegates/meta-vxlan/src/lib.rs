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

pub use secondary::{Owner, read_owner as read_segment_owner};

use cni_core::{CmdArgs, CniResult, Error, Plugin, Result};
use common::Progress;
use config::Mode;
use meta_delegate::ipam;
use meta_firewall::{Firewall, Nftables};
use meta_netlink::{Netlink, NetlinkOps};

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

    fn rollback(&self, args: &CmdArgs, r: &config::Resolved, p: &Progress) {
        let env = &args.env;
        if p.masq
            && let Err(e) =
                self.firewall
                    .teardown_masq(args.conf.name(), &env.container_id, &env.ifname)
        {
            tracing::warn!("rollback: masquerade teardown: {e}");
        }
        if let (Some(pod), Some(idx)) = (&p.pod, p.container_index) {
            match Netlink::open(Some(pod)) {
                Ok(mut n) => {
                    if let Err(e) = n.link_del(idx)
                        && !e.is_not_found()
                    {
                        tracing::warn!("rollback: delete {}: {e}", env.ifname);
                    }
                }
                Err(e) => tracing::warn!("rollback: netlink: {e}"),
            }
        }
        if p.ipam_allocated {
            let res = match &r.mode {
                Mode::Primary(pr) => primary::node_settings(pr)
                    .and_then(|n| common::with_node_ipam(args, n.subnet))
                    .and_then(|a| ipam::del(&a)),
                Mode::Secondary(_) => ipam::del(args),
            };
            if let Err(e) = res {
                tracing::warn!("rollback: IPAM release: {e}");
            }
        }
    }
}

pub(crate) fn fw_err(ctx: &str) -> impl FnOnce(meta_firewall::Error) -> Error + '_ {
    move |e| Error::internal(format!("{ctx}: {e}"))
}

impl Plugin for Vxlan {
    fn about(&self) -> String {
        format!(
            "meta-vxlan {} (meta-cni vxlan delegate: primary overlay and secondary VXLAN segments)",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let r = config::load(args)?;
        let mut p = Progress::default();
        let res = match &r.mode {
            Mode::Primary(pr) => self.primary_add(args, &r, pr, &mut p),
            Mode::Secondary(s) => self.secondary_add(args, &r, s, &mut p),
        };
        res.inspect_err(|_| self.rollback(args, &r, &p))
    }

    fn del(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        match &r.mode {
            Mode::Primary(pr) => self.primary_del(args, pr),
            Mode::Secondary(_) => self.secondary_del(args, &r),
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<()> {
        let r = config::load(args)?;
        match &r.mode {
            Mode::Primary(pr) => self.primary_check(args, pr),
            Mode::Secondary(s) => self.secondary_check(args, &r, s),
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
            Mode::Secondary(_) => self.secondary_gc(args, &r),
        }
    }
}
