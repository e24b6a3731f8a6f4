//! `meta-host-local`: the host-local IPAM plugin (reference-compatible data directory).

use cni_core::plugin::{self, CmdArgs, Plugin};
use cni_core::{CniResult, Result};
use meta_ipam::HostLocalConfig;

struct HostLocal;

/// `CNI_ARGS` keys host-local understands.
const KNOWN_ARGS: &[&str] = &["IP"];

fn load(args: &CmdArgs) -> Result<HostLocalConfig> {
    args.env.args.check_known(KNOWN_ARGS)?;
    HostLocalConfig::from_conf(&args.conf, &args.env.args)
}

impl Plugin for HostLocal {
    fn about(&self) -> String {
        "meta-host-local: host-local compatible IPAM (meta-cni)".into()
    }
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        let c = load(args)?;
        meta_ipam::allocate(&c, &args.env.container_id, &args.env.ifname)
    }
    fn del(&self, args: &CmdArgs) -> Result<()> {
        args.env.args.check_known(KNOWN_ARGS)?;
        meta_ipam::release_for_del(
            &args.conf,
            &args.env.args,
            &args.env.container_id,
            &args.env.ifname,
        )
    }
    fn check(&self, args: &CmdArgs) -> Result<()> {
        let c = load(args)?;
        let ips: Vec<ipnet::IpNet> = args
            .conf
            .prev_result()?
            .map(|p| p.ips.iter().map(|i| i.address).collect())
            .unwrap_or_default();
        meta_ipam::check(&c, &args.env.container_id, &args.env.ifname, &ips)
    }
    fn status(&self, args: &CmdArgs) -> Result<()> {
        let c = HostLocalConfig::from_conf(&args.conf, &args.env.args)?;
        meta_ipam::status(&c)
    }
    fn gc(&self, args: &CmdArgs) -> Result<()> {
        let c = HostLocalConfig::from_conf(&args.conf, &args.env.args)?;
        let valid = args.conf.gc_valid_attachments()?;
        meta_ipam::gc(&c, &valid)
    }
}

fn main() {
    plugin::run(HostLocal)
}
