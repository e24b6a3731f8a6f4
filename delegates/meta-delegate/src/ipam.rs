//! IPAM dispatch for delegates: the bundled `host-local` and `static` run in-process; any
//! other type (dhcp, whereabouts, ...) is exec'd from `CNI_PATH` with the delegate's own
//! configuration on stdin, like the reference plugins' `ipam.ExecAdd`. An operator can force
//! a bundled type to be exec'd instead by listing it in `META_CNI_FORCE_EXEC`
//! (comma-separated types).

use cni_core::{CmdArgs, CniResult, Error, Result, Verb, Version, invoke};
use meta_ipam::HostLocalConfig;

/// How an IPAM type is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipam {
    /// No `ipam` section: L2 only.
    None,
    /// Bundled host-local, in-process.
    HostLocal,
    /// Bundled static, in-process.
    Static,
    /// A binary found on `CNI_PATH`.
    Exec(String),
}

pub use cni_core::invoke::forced_exec;

/// Which IPAM serves this configuration.
pub fn which(args: &CmdArgs) -> Ipam {
    match args.conf.ipam_type().unwrap_or("") {
        "" => Ipam::None,
        t if forced_exec(t) => Ipam::Exec(t.to_string()),
        "host-local" | "meta-host-local" => Ipam::HostLocal,
        "static" | "meta-static" => Ipam::Static,
        t => Ipam::Exec(t.to_string()),
    }
}

fn host_local(args: &CmdArgs) -> Result<HostLocalConfig> {
    HostLocalConfig::from_conf(&args.conf, &args.env.args)
}

/// Validates a bundled IPAM's configuration before anything touches the kernel, so a bad
/// config fails without side effects (exec'd IPAM validates itself at ADD).
pub fn validate(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::HostLocal => host_local(args).map(|_| ()),
        Ipam::Static => meta_ipam::StaticConfig::from_conf(&args.conf, &args.env.args).map(|_| ()),
        Ipam::None | Ipam::Exec(_) => Ok(()),
    }
}

/// ADD: allocates and returns the IPAM result (IPs without interface indexes).
pub fn add(args: &CmdArgs) -> Result<CniResult> {
    match which(args) {
        Ipam::None => Ok(CniResult::default()),
        Ipam::HostLocal => {
            let c = host_local(args)?;
            meta_ipam::allocate(&c, &args.env.container_id, &args.env.ifname)
                .and_then(|r| in_conf_version(args, r))
        }
        Ipam::Static => meta_ipam::static_result(&args.conf, &args.env.args)
            .and_then(|r| in_conf_version(args, r)),
        Ipam::Exec(t) => invoke::exec_add(&t, &args.env, &args.stdin),
    }
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
        Ipam::None | Ipam::Static => Ok(()),
        Ipam::HostLocal => meta_ipam::release_for_del(
            &args.conf,
            &args.env.args,
            &args.env.container_id,
            &args.env.ifname,
        ),
        Ipam::Exec(t) => invoke::exec_verb(&t, Verb::Del, &args.env, &args.stdin),
    }
}

/// CHECK: the allocation of the prevResult's IPs still exists.
pub fn check(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::None | Ipam::Static => Ok(()),
        Ipam::HostLocal => {
            let c = host_local(args)?;
            let ips: Vec<ipnet::IpNet> = args
                .conf
                .prev_result()?
                .map(|r| r.ips.iter().map(|i| i.address).collect())
                .unwrap_or_default();
            meta_ipam::check(&c, &args.env.container_id, &args.env.ifname, &ips)
        }
        Ipam::Exec(t) => invoke::exec_verb(&t, Verb::Check, &args.env, &args.stdin),
    }
}

/// STATUS (config 1.1.0): whether IPAM can serve an ADD.
pub fn status(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::None | Ipam::Static => Ok(()),
        Ipam::HostLocal => meta_ipam::status(&host_local(args)?),
        Ipam::Exec(t) => exec_if_11(args, &t, Verb::Status),
    }
}

/// GC (config 1.1.0): releases allocations of attachments not listed as valid.
pub fn gc(args: &CmdArgs) -> Result<()> {
    match which(args) {
        Ipam::None | Ipam::Static => Ok(()),
        Ipam::HostLocal => {
            let valid = args.conf.gc_valid_attachments()?;
            meta_ipam::gc(&host_local(args)?, &valid)
        }
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
