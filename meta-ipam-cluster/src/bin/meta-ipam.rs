//! `meta-ipam`: the cluster-wide IPAM plugin (whereabouts-compatible configuration).

use cni_core::plugin::{self, CmdArgs, Plugin};
use cni_core::{CniResult, Result};
use meta_ipam_cluster::registry;

struct MetaIpam;

/// `CNI_ARGS` keys meta-ipam understands (besides the Kubernetes ones).
const KNOWN_ARGS: &[&str] = &["IP"];

impl Plugin for MetaIpam {
    fn about(&self) -> String {
        "meta-ipam: cluster-wide IPAM (meta-cni)".into()
    }
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        args.env.args.check_known(KNOWN_ARGS)?;
        registry::cmd_add(args)
    }
    fn del(&self, args: &CmdArgs) -> Result<()> {
        registry::cmd_del(args)
    }
    fn check(&self, args: &CmdArgs) -> Result<()> {
        registry::cmd_check(args)
    }
    fn status(&self, args: &CmdArgs) -> Result<()> {
        registry::cmd_check(args)
    }
    fn gc(&self, _args: &CmdArgs) -> Result<()> {
        Ok(())
    }
}

fn main() {
    plugin::run(MetaIpam)
}
