//! The in-process IPAM type `meta-ipam` (also served by the `meta-ipam` binary).

use crate::{ClusterIpamConfig, Owner};
use cni_core::registry::IpamType;
use cni_core::{CmdArgs, CniResult, Result, Version};

fn conf(a: &CmdArgs) -> Result<ClusterIpamConfig> {
    Ok(ClusterIpamConfig::from_conf(&a.conf, &a.env.args)?)
}

/// ADD.
pub fn cmd_add(a: &CmdArgs) -> Result<CniResult> {
    let c = conf(a)?;
    let r = crate::add(&c, &Owner::of(a))?;
    let v = a.conf.version();
    if v >= Version::V1_1_0 {
        return Ok(r);
    }
    CniResult::from_value(&r.to_value(v))
}

/// DEL: a configuration ADD would refuse has nothing allocated.
pub fn cmd_del(a: &CmdArgs) -> Result<()> {
    match ClusterIpamConfig::from_conf(&a.conf, &a.env.args) {
        Ok(c) => Ok(crate::del(&c, &Owner::of(a))?),
        Err(e) => {
            tracing::info!("DEL with a configuration ADD refuses ({e}): nothing to release");
            Ok(())
        }
    }
}

/// CHECK: the configuration is valid (the allocation lives in the API server; its
/// presence is the reconciler's business, not a reason to fail a CHECK offline).
pub fn cmd_check(a: &CmdArgs) -> Result<()> {
    conf(a).map(|_| ())
}

/// meta-ipam, in-process.
pub const META_IPAM: IpamType = IpamType {
    names: &["meta-ipam"],
    validate: |a| conf(a).map(|_| ()),
    add: cmd_add,
    del: cmd_del,
    check: cmd_check,
    status: cmd_check,
    gc: |_| Ok(()),
};
