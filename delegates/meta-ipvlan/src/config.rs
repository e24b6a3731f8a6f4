//! The ipvlan configuration: the reference ipvlan plugin's fields (`master`, `mode`,
//! `mtu`, `linkInContainer`), plus what the invocation brings (`ipam`, `prevResult`, `dns`).

use cni_core::{CmdArgs, CniResult, Dns, Error, Result};
use meta_netlink::IpvlanMode;
use serde::Deserialize;

/// The reference ipvlan plugin's configuration fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpvlanConf {
    /// Parent interface. Unset: the only interface of a chained `prevResult`, else the
    /// interface of the default route (in the pod namespace with `linkInContainer`).
    #[serde(default)]
    pub master: Option<String>,
    /// `l2` (default), `l3` or `l3s`.
    #[serde(default)]
    pub mode: Option<String>,
    /// MTU of the ipvlan link (0 or unset: the master's).
    #[serde(default)]
    pub mtu: Option<i64>,
    /// The master lives in the pod namespace, and the link is created from there.
    #[serde(rename = "linkInContainer", default)]
    pub link_in_container: Option<bool>,
}

/// The configuration after validation.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The master named in the configuration (None when unset or empty).
    pub master: Option<String>,
    /// The ipvlan mode.
    pub mode: IpvlanMode,
    /// MTU of the link; None to inherit the master's.
    pub mtu: Option<u32>,
    /// Look the master up, and create the link, inside the pod namespace.
    pub link_in_container: bool,
    /// IPAM type; None when there is no `ipam` section (chained use).
    pub ipam_type: Option<String>,
    /// The parsed `prevResult`, when chained.
    pub prev: Option<CniResult>,
    /// The configuration's `dns` (what the reference puts in the result).
    pub dns: Dns,
}

impl Resolved {
    /// Whether the IPs come from `prevResult` rather than from IPAM: no `ipam` type and a
    /// `prevResult` that has IPs (the reference's rule).
    pub fn ips_from_prev(&self) -> bool {
        self.ipam_type.is_none() && self.prev.as_ref().is_some_and(|p| !p.ips.is_empty())
    }

    /// ADD needs addresses: from IPAM, or from a chained `prevResult`. Fails with code 7
    /// before anything touches the kernel otherwise.
    pub fn require_addresses(&self) -> Result<()> {
        if self.ipam_type.is_some() || self.ips_from_prev() {
            return Ok(());
        }
        let why = match &self.prev {
            Some(_) => "the prevResult has no IPs",
            None => "there is no prevResult",
        };
        Err(Error::config(format!(
            "ipvlan needs an \"ipam\" section with a \"type\" ({why} to take addresses from)"
        )))
    }
}

/// Parses an ipvlan mode (`""` is `l2`, like the reference).
pub fn parse_mode(s: &str) -> Result<IpvlanMode> {
    match s {
        "" | "l2" => Ok(IpvlanMode::L2),
        "l3" => Ok(IpvlanMode::L3),
        "l3s" => Ok(IpvlanMode::L3s),
        other => Err(Error::config(format!("unknown ipvlan mode: {other:?}"))),
    }
}

/// The configuration spelling of a mode.
pub fn mode_str(m: IpvlanMode) -> &'static str {
    match m {
        IpvlanMode::L2 => "l2",
        IpvlanMode::L3 => "l3",
        IpvlanMode::L3s => "l3s",
    }
}

/// Parses and validates the configuration of one invocation. Nothing here touches the
/// kernel; the master default (prevResult or default route) is resolved at ADD.
pub fn load(args: &CmdArgs) -> Result<Resolved> {
    let conf: IpvlanConf = args.conf.typed()?;
    let master = conf.master.filter(|m| !m.is_empty());
    if let Some(m) = &master {
        cni_core::env::validate_ifname(m)
            .map_err(|e| Error::config(format!("invalid master {m:?}: {}", e.msg)))?;
    }
    let mode = parse_mode(conf.mode.as_deref().unwrap_or(""))?;
    let mtu = match conf.mtu.unwrap_or(0) {
        0 => None,
        m if (68..=65535).contains(&m) => Some(m as u32),
        m => {
            return Err(Error::config(format!(
                "invalid mtu {m} (must be 0 for the master's, or 68..65535)"
            )));
        }
    };
    let ipam_type = args.conf.ipam_type().map(str::to_string);
    // The bundled IPAMs run in-process: check CNI_ARGS as the reference host-local/static
    // would (an exec'd IPAM checks them itself; chained use ignores them, like the reference).
    if matches!(
        meta_delegate::ipam::which(args),
        meta_delegate::ipam::Ipam::Bundled(_)
    ) {
        args.env.args.check_known(&["IP", "GATEWAY"])?;
    }
    let prev = args.conf.prev_result()?;
    let dns = match args.conf.get("dns") {
        Some(d) => serde_json::from_value(d.clone())
            .map_err(|e| Error::config(format!("invalid dns: {e}")))?,
        None => Dns::default(),
    };
    Ok(Resolved {
        master,
        mode,
        mtu,
        link_in_container: conf.link_in_container.unwrap_or(false),
        ipam_type,
        prev,
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::{Env, NetConf};
    use serde_json::{Value, json};

    fn args(conf: Value, cni_args: &str) -> CmdArgs {
        let env = Env::from_lookup(|k| {
            Some(
                match k {
                    "CNI_COMMAND" => "ADD",
                    "CNI_CONTAINERID" => "c1",
                    "CNI_NETNS" => "/fake/netns",
                    "CNI_IFNAME" => "net1",
                    "CNI_PATH" => "/usr/lib/cni",
                    "CNI_ARGS" => cni_args,
                    _ => return None,
                }
                .to_string(),
            )
        })
        .expect("env");
        let stdin = conf.to_string().into_bytes();
        let conf = NetConf::parse(&stdin).expect("conf");
        CmdArgs { env, stdin, conf }
    }

    fn base(extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "ipvlan"});
        if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        c
    }

    #[test]
    fn defaults() {
        let r = load(&args(base(json!({})), "")).unwrap();
        assert_eq!(r.master, None);
        assert_eq!(r.mode, IpvlanMode::L2);
        assert_eq!(r.mtu, None);
        assert!(!r.link_in_container);
        assert_eq!(r.ipam_type, None);
        assert!(r.prev.is_none());
        assert!(r.dns.is_empty());
        let e = r.require_addresses().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam"), "{}", e.msg);
    }

    #[test]
    fn fields() {
        let r = load(&args(
            base(
                json!({"master": "eth1", "mode": "l3s", "mtu": 1400, "linkInContainer": true,
                        "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"},
                        "dns": {"nameservers": ["10.0.0.53"]}}),
            ),
            "",
        ))
        .unwrap();
        assert_eq!(r.master.as_deref(), Some("eth1"));
        assert_eq!(r.mode, IpvlanMode::L3s);
        assert_eq!(r.mtu, Some(1400));
        assert!(r.link_in_container);
        assert_eq!(r.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(r.dns.nameservers, vec!["10.0.0.53"]);
        r.require_addresses().unwrap();
        for (m, want) in [
            ("", IpvlanMode::L2),
            ("l2", IpvlanMode::L2),
            ("l3", IpvlanMode::L3),
        ] {
            assert_eq!(parse_mode(m).unwrap(), want);
            assert_eq!(parse_mode(mode_str(want)).unwrap(), want);
        }
        // null fields are unset, like Go's zero values
        let r = load(&args(
            base(json!({"master": null, "mode": null, "mtu": null})),
            "",
        ))
        .unwrap();
        assert_eq!((r.master, r.mode, r.mtu), (None, IpvlanMode::L2, None));
    }

    #[test]
    fn prev_result_supplies_addresses() {
        let prev = json!({"cniVersion": "1.0.0",
                          "interfaces": [{"name": "eth0"}],
                          "ips": [{"address": "10.1.0.5/24", "interface": 0}]});
        let r = load(&args(base(json!({"prevResult": prev})), "")).unwrap();
        assert!(r.ips_from_prev());
        r.require_addresses().unwrap();
        let r = load(&args(
            base(json!({"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]}})),
            "",
        ))
        .unwrap();
        assert!(!r.ips_from_prev());
        let e = r.require_addresses().unwrap_err();
        assert!(e.msg.contains("prevResult has no IPs"), "{}", e.msg);
    }

    #[test]
    fn invalid() {
        for (c, needle) in [
            (json!({"mode": "l4"}), "unknown ipvlan mode"),
            (json!({"mode": 3}), "mode"),
            (json!({"mtu": -1}), "invalid mtu"),
            (json!({"mtu": 70000}), "invalid mtu"),
            (json!({"mtu": "1500"}), "mtu"),
            (json!({"master": "a/b"}), "invalid master"),
            (json!({"master": "waytoolongname123"}), "invalid master"),
            (json!({"linkInContainer": "yes"}), "linkInContainer"),
            (json!({"dns": {"nameservers": "x"}}), "invalid dns"),
        ] {
            let e = load(&args(base(c.clone()), "")).unwrap_err();
            assert_eq!(e.code, 7, "{c}");
            assert!(e.msg.contains(needle), "{c}: {}", e.msg);
        }
        let e = load(&args(base(json!({"prevResult": {"ips": "x"}})), "")).unwrap_err();
        assert!(e.msg.contains("prevResult"), "{}", e.msg);
    }

    #[test]
    fn cni_args_checked_for_bundled_ipam_only() {
        let hl = base(json!({"ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}));
        let e = load(&args(hl.clone(), "FOO=bar")).unwrap_err();
        assert_eq!(e.code, 4);
        load(&args(hl.clone(), "IP=10.0.0.9;K8S_POD_NAME=p")).unwrap();
        load(&args(hl, "IgnoreUnknown=1;FOO=bar")).unwrap();
        load(&args(base(json!({})), "FOO=bar")).unwrap();
    }
}
