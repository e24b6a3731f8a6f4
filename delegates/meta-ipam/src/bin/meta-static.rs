//! `meta-static`: the static IPAM plugin.

use cni_core::plugin::{self, CmdArgs, Plugin};
use cni_core::{CniResult, Error, Result};
use meta_ipam::StaticConfig;

struct Static;

/// `CNI_ARGS` keys static understands.
const KNOWN_ARGS: &[&str] = &["IP", "GATEWAY"];

fn load(args: &CmdArgs) -> Result<StaticConfig> {
    args.env.args.check_known(KNOWN_ARGS)?;
    StaticConfig::from_conf(&args.conf, &args.env.args)
}

impl Plugin for Static {
    fn about(&self) -> String {
        "meta-static: static IPAM (meta-cni)".into()
    }
    fn add(&self, args: &CmdArgs) -> Result<CniResult> {
        Ok(load(args)?.result())
    }
    fn del(&self, _args: &CmdArgs) -> Result<()> {
        // Nothing was allocated (the reference does not even parse the configuration).
        Ok(())
    }
    fn check(&self, args: &CmdArgs) -> Result<()> {
        let c = load(args)?;
        let prev = args
            .conf
            .prev_result()?
            .ok_or_else(|| Error::config("static: CHECK requires prevResult"))?;
        c.check(&prev, &args.env.ifname)
    }
    fn status(&self, args: &CmdArgs) -> Result<()> {
        StaticConfig::from_conf(&args.conf, &args.env.args).map(|_| ())
    }
    fn gc(&self, _args: &CmdArgs) -> Result<()> {
        Ok(())
    }
}

fn main() {
    plugin::run(Static)
}
