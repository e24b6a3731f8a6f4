//! How a bundled plugin announces itself to the code that runs it in-process.
//!
//! Every delegate crate exports one [`DelegateType`] (its CNI type names, the reference
//! fields it does not implement, and a constructor); every bundled IPAM type is an
//! [`IpamType`]. The meta plugin builds its in-process table and its "field not
//! implemented" check from the delegates' exports, and the delegate kit dispatches IPAM
//! through the IPAM exports, so adding a type is one line in one table.

use crate::{CmdArgs, CniResult, NetConf, Plugin, Result};
use serde_json::Value;

/// A reference-plugin field that a bundled type does not implement: given with any value
/// other than "off" (absent, `null`, `false`, `""`, `"false"`) or one of `accepted`, the
/// in-process type refuses the configuration at ADD (code 2) instead of ignoring it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unimplemented {
    /// The configuration key.
    pub field: &'static str,
    /// String values that are implemented after all (e.g. `ipMasqBackend: "nftables"`).
    pub accepted: &'static [&'static str],
}

impl Unimplemented {
    /// A field that is not implemented with any value.
    pub const fn field(field: &'static str) -> Self {
        Unimplemented {
            field,
            accepted: &[],
        }
    }

    /// A field of which only the `accepted` string values are implemented.
    pub const fn except(field: &'static str, accepted: &'static [&'static str]) -> Self {
        Unimplemented { field, accepted }
    }

    /// The value of this field in `conf` when it asks for something not implemented.
    pub fn given(&self, conf: &NetConf) -> Option<Value> {
        let v = conf.get(self.field)?;
        let off = matches!(v, Value::Null | Value::Bool(false))
            || v.as_str().is_some_and(|s| s.is_empty() || s == "false");
        let accepted = v.as_str().is_some_and(|s| self.accepted.contains(&s));
        (!off && !accepted).then(|| v.clone())
    }
}

/// A bundled delegate type, as its crate exports it.
pub struct DelegateType {
    /// The CNI `type` names it serves (the reference name and our binary's name).
    pub names: &'static [&'static str],
    /// Reference-plugin fields it does not implement.
    pub unimplemented: &'static [Unimplemented],
    /// A fresh instance of the plugin.
    pub make: fn() -> Box<dyn Plugin>,
    /// ADD's checks of a configuration that need no kernel, no file and no IPAM state:
    /// the very parser and validation that ADD runs first, so an admission webhook (or
    /// the meta plugin before it touches anything) gets the verdict and the message ADD
    /// would give. `chained` = an earlier plugin of the list will give this one a
    /// `prevResult` that is not in `args` yet.
    pub validate: fn(&CmdArgs, bool) -> Result<()>,
}

impl DelegateType {
    /// Whether `plugin_type` names this delegate.
    pub fn serves(&self, plugin_type: &str) -> bool {
        self.names.contains(&plugin_type)
    }

    /// The first field of `conf` that this delegate does not implement, with its value.
    pub fn unimplemented_field(&self, conf: &NetConf) -> Option<(&'static str, Value)> {
        self.unimplemented
            .iter()
            .find_map(|u| u.given(conf).map(|v| (u.field, v)))
    }

    /// ADD's refusal of a reference field this delegate does not implement (code 2,
    /// naming the field, the value and the way out: `forceExec`).
    pub fn refuse_unimplemented(&self, conf: &NetConf) -> Result<()> {
        let Some((field, value)) = self.unimplemented_field(conf) else {
            return Ok(());
        };
        let t = conf.plugin_type();
        Err(crate::Error::unsupported_field(
            field,
            format!(
                "{value} is not implemented by the bundled {t} delegate; set \"forceExec\": [\"{t}\"] in the meta-cni configuration to run the {t} binary from binDir instead"
            ),
        ))
    }
}

impl std::fmt::Debug for DelegateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegateType")
            .field("names", &self.names)
            .field("unimplemented", &self.unimplemented)
            .finish_non_exhaustive()
    }
}

/// The first entry of `table` that serves `plugin_type`.
pub fn find<'a>(table: &[&'a DelegateType], plugin_type: &str) -> Option<&'a DelegateType> {
    table.iter().copied().find(|d| d.serves(plugin_type))
}

/// A bundled IPAM type, run in-process by the delegates: one function per verb, each
/// given the delegate's own invocation (its configuration holds the `ipam` section).
#[derive(Debug, Clone, Copy)]
pub struct IpamType {
    /// The `ipam.type` names it serves.
    pub names: &'static [&'static str],
    /// Checks the IPAM configuration before anything touches the kernel (ADD).
    pub validate: fn(&CmdArgs) -> Result<()>,
    /// Allocates; the result in the configuration's version.
    pub add: fn(&CmdArgs) -> Result<CniResult>,
    /// Releases; succeeds when nothing is allocated and on values ADD would refuse.
    pub del: fn(&CmdArgs) -> Result<()>,
    /// The prevResult's allocation still exists.
    pub check: fn(&CmdArgs) -> Result<()>,
    /// Whether an ADD could be served.
    pub status: fn(&CmdArgs) -> Result<()>,
    /// Releases the allocations of attachments not listed as valid.
    pub gc: fn(&CmdArgs) -> Result<()>,
}

impl IpamType {
    /// Whether `ipam_type` names this IPAM.
    pub fn serves(&self, ipam_type: &str) -> bool {
        self.names.contains(&ipam_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> NetConf {
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn unimplemented_fields_ignore_off_values_and_accepted_ones() {
        let u = Unimplemented::field("portIsolation");
        for off in [json!(null), json!(false), json!(""), json!("false")] {
            let c = conf(
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "portIsolation": off}),
            );
            assert_eq!(u.given(&c), None);
        }
        let c =
            conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "portIsolation": true}));
        assert_eq!(u.given(&c), Some(json!(true)));
        let b = Unimplemented::except("ipMasqBackend", &["nftables"]);
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipMasqBackend": "nftables"}),
        );
        assert_eq!(b.given(&c), None);
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipMasqBackend": "iptables"}),
        );
        assert_eq!(b.given(&c), Some(json!("iptables")));
    }
}
