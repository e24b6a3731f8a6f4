//! The bundled IPAM types as the delegates run them in-process: [`HOST_LOCAL`] and
//! [`STATIC`], each one [`IpamType`] of verb functions over the delegate's invocation.
//! Results are cut to the configuration's version, as an exec'd plugin's would be.

use crate::{HostLocalConfig, StaticConfig};
use cni_core::registry::IpamType;
use cni_core::{CmdArgs, CniResult, Result, Version};

/// host-local (also served as `meta-host-local`).
pub const HOST_LOCAL: IpamType = IpamType {
    names: &["host-local", "meta-host-local"],
    validate: |a| host_local(a).map(|_| ()),
    add: |a| {
        let c = host_local(a)?;
        crate::allocate(&c, &a.env.container_id, &a.env.ifname).and_then(|r| in_conf_version(a, r))
    },
    del: |a| crate::release_for_del(&a.conf, &a.env.args, &a.env.container_id, &a.env.ifname),
    check: |a| {
        let c = host_local(a)?;
        let ips: Vec<ipnet::IpNet> = a
            .conf
            .prev_result()?
            .map(|r| r.ips.iter().map(|i| i.address).collect())
            .unwrap_or_default();
        crate::check(&c, &a.env.container_id, &a.env.ifname, &ips)
    },
    status: |a| crate::status(&host_local(a)?),
    gc: |a| {
        let valid = a.conf.gc_valid_attachments()?;
        crate::gc(&host_local(a)?, &valid)
    },
};

/// static (also served as `meta-static`): nothing is held, so DEL, CHECK, STATUS and GC
/// have nothing to do.
pub const STATIC: IpamType = IpamType {
    names: &["static", "meta-static"],
    validate: |a| StaticConfig::from_conf(&a.conf, &a.env.args).map(|_| ()),
    add: |a| crate::static_result(&a.conf, &a.env.args).and_then(|r| in_conf_version(a, r)),
    del: nothing,
    check: nothing,
    status: nothing,
    gc: nothing,
};

fn nothing(_: &CmdArgs) -> Result<()> {
    Ok(())
}

fn host_local(args: &CmdArgs) -> Result<HostLocalConfig> {
    HostLocalConfig::from_conf(&args.conf, &args.env.args)
}

/// An in-process IPAM result as an exec'd plugin would have returned it in the
/// configuration's version: below 1.1.0 the route fields that version lacks (priority,
/// table, mtu, advmss, scope) are dropped, so they are neither installed nor reported.
fn in_conf_version(args: &CmdArgs, r: CniResult) -> Result<CniResult> {
    let v = args.conf.version();
    if v >= Version::V1_1_0 {
        return Ok(r);
    }
    CniResult::from_value(&r.to_value(v))
}
