//! IPAM dispatch for delegates: the bundled `host-local` and `static` run in-process; any
//! other type (dhcp, whereabouts, ...) is exec'd from `CNI_PATH` with the delegate's own
//! configuration on stdin, like the reference plugins' `ipam.ExecAdd`. An operator can force
//! a bundled type to be exec'd instead by listing it in `META_CNI_FORCE_EXEC`
//! (comma-separated types).

use cni_core::registry::IpamType;
use cni_core::{CmdArgs, CniResult, Error, Result, Verb, Version, invoke};

/// The IPAM types that run in-process: one line per bundled type.
#[cfg(not(feature = "cluster-ipam"))]
pub const BUNDLED: &[&IpamType] = &[&meta_ipam::HOST_LOCAL, &meta_ipam::STATIC];
/// The IPAM types that run in-process: one line per bundled type (with the cluster-wide
/// `meta-ipam`, feature `cluster-ipam`).
#[cfg(feature = "cluster-ipam")]
pub const BUNDLED: &[&IpamType] = &[
    &meta_ipam::HOST_LOCAL,
    &meta_ipam::STATIC,
    &meta_ipam_cluster::META_IPAM,
];

/// How an IPAM type is served.
#[derive(Debug, Clone)]
pub enum Ipam {
    /// No `ipam` section: L2 only.
    None,
    /// A bundled type, in-process.
    Bundled(&'static IpamType),
    /// A binary found on `CNI_PATH`.
    Exec(String),
}

pub use cni_core::invoke::forced_exec;

/// Which IPAM serves this configuration.
pub fn which(args: &CmdArgs) -> Ipam {
    match args.conf.ipam_type().unwrap_or("") {
        "" => Ipam::None,
        t if forced_exec(t) => Ipam::Exec(t.to_string()),
        t => match BUNDLED.iter().find(|i| i.serves(t)) {
            Some(i) => Ipam::Bundled(i),
            None => Ipam::Exec(t.to_string()),
        },
    }
}

/// Validates a bundled IPAM's configuration before anything touches the kernel, so a bad
/// config fails without side effects (exec'd IPAM validates itself at ADD).
pub fn validate(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::Bundled(i) => (i.validate)(args),
        Ipam::None | Ipam::Exec(_) => Ok(()),
    }
}

/// ADD: allocates and returns the IPAM result (IPs without interface indexes).
pub fn add(args: &CmdArgs) -> Result<CniResult> {
    match which(args) {
        Ipam::None => Ok(CniResult::default()),
        Ipam::Bundled(i) => (i.add)(args),
        Ipam::Exec(t) => invoke::exec_add(&t, &args.env, &args.stdin),
    }
}

/// ADD into a delegate's result: allocates, refuses an empty answer (the reference's
/// "IPAM plugin returned missing IP config", after releasing whatever the IPAM plugin
/// holds), copies the IPs, routes and DNS into `result` and points every IP at interface
/// `iface` (the index of the container interface). On error nothing is allocated by this
/// call, so the caller releases IPAM on a later failure only once this returned `Ok`.
pub fn add_into(args: &CmdArgs, result: &mut CniResult, iface: usize) -> Result<()> {
    let r = add(args)?;
    if r.ips.is_empty() {
        if let Err(e) = del(args) {
            tracing::warn!("IPAM returned no IPs; releasing: {e}");
        }
        return Err(Error::internal("IPAM plugin returned missing IP config"));
    }
    result.ips = r.ips;
    result.routes = r.routes;
    result.dns = r.dns;
    for ip in &mut result.ips {
        ip.interface = Some(iface);
    }
    Ok(())
}

/// DEL: releases; succeeds when nothing is allocated, and for host-local also when the
/// configuration is one ADD would refuse.
pub fn del(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::None => Ok(()),
        Ipam::Bundled(i) => (i.del)(args),
        Ipam::Exec(t) => invoke::exec_verb(&t, Verb::Del, &args.env, &args.stdin),
    }
}

/// The start of a CHECK of an attachment in a pod: the prevResult (code 7 when there is
/// none), the pod namespace (code 3 when it is gone), then IPAM's CHECK of the allocation
/// (`ipam_args`: the invocation, or the configuration IPAM really ran with).
pub fn check_start(
    args: &CmdArgs,
    ipam_args: &CmdArgs,
) -> Result<(CniResult, meta_netlink::Netns)> {
    let prev = args
        .conf
        .prev_result()?
        .ok_or_else(|| Error::config("Required prevResult missing"))?;
    let pod = crate::open_netns(&args.env.netns)?;
    check(ipam_args)?;
    Ok((prev, pod))
}

/// CHECK: the allocation of the prevResult's IPs still exists.
pub fn check(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::None => Ok(()),
        Ipam::Bundled(i) => (i.check)(args),
        Ipam::Exec(t) => invoke::exec_verb(&t, Verb::Check, &args.env, &args.stdin),
    }
}

/// STATUS (config 1.1.0): whether IPAM can serve an ADD.
pub fn status(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::None => Ok(()),
        Ipam::Bundled(i) => (i.status)(args),
        Ipam::Exec(t) => exec_if_11(args, &t, Verb::Status),
    }
}

/// GC (config 1.1.0): releases allocations of attachments not listed as valid. A bad
/// `cni.dev/valid-attachments` list is refused whether or not there is an IPAM.
pub fn gc(args: &CmdArgs) -> Result<()> {
    args.conf.gc_valid_attachments()?;
    match which(args) {
        Ipam::None => Ok(()),
        Ipam::Bundled(i) => (i.gc)(args),
        Ipam::Exec(t) => exec_if_11(args, &t, Verb::Gc),
    }
}

fn exec_if_11(args: &CmdArgs, t: &str, verb: Verb) -> Result<()> {
    if args.conf.version() < Version::V1_1_0 {
        return Ok(());
    }
    match invoke::exec_verb(t, verb, &args.env, &args.stdin) {
        // A plugin that predates 1.1.0 cannot answer; that is not a failure of ours.
        Err(e) if e.code == cni_core::code::INCOMPATIBLE_VERSION => {
            tracing::info!("IPAM {t} does not support {}: {e}", verb.as_str());
            Ok(())
        }
        other => other.map_err(|e: Error| e.context(format!("IPAM {t}"))),
    }
}
