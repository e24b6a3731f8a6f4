//! The macvlan configuration: the reference macvlan plugin's fields (`master`, `mode`,
//! `mtu`, `mac`, `linkInContainer`, `ipam`, `dns`), parsed and validated without touching
//! the kernel. What needs the kernel (the default master, the master's MTU) is checked by
//! [`check_mtu`] once the master is known.

use cni_core::{CmdArgs, Dns, Error, Result};
use meta_netlink::{Mac, MacvlanMode, parse_mac};
use serde::Deserialize;

/// The reference macvlan plugin's configuration fields.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct MacvlanConf {
    /// The parent interface; empty means the interface of the default route (in the node
    /// namespace, or in the pod namespace with `linkInContainer`).
    #[serde(default)]
    pub master: String,
    /// `bridge` (default), `private`, `vepa` or `passthru`.
    #[serde(default)]
    pub mode: String,
    /// MTU of the macvlan: 0 inherits the master's; at most the master's.
    #[serde(default)]
    pub mtu: i64,
    /// MAC of the macvlan (overridden by CNI_ARGS `MAC`, `args.cni.mac`,
    /// `runtimeConfig.mac`).
    #[serde(default)]
    pub mac: Option<String>,
    /// The master lives in the pod namespace, not in the node namespace.
    #[serde(rename = "linkInContainer", default)]
    pub link_in_container: bool,
}

/// The configuration after validation, with the values from the invocation applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The raw fields.
    pub conf: MacvlanConf,
    /// The macvlan mode.
    pub mode: MacvlanMode,
    /// The master named by the configuration; `None` for the default-route interface.
    pub master: Option<String>,
    /// The requested MTU; `None` inherits the master's.
    pub mtu: Option<u32>,
    /// The requested MAC of the container interface.
    pub mac: Option<Mac>,
    /// The IPAM type; `None` for an L2-only attachment.
    pub ipam_type: Option<String>,
    /// The configuration's `dns`, which is what the result carries (like the reference,
    /// DNS settings an IPAM plugin returns are not passed on).
    pub dns: Dns,
}

/// The mode a `mode` string names (`""` is `bridge`), code 7 naming the field otherwise.
pub fn parse_mode(s: &str) -> Result<MacvlanMode> {
    match s {
        "" | "bridge" => Ok(MacvlanMode::Bridge),
        "private" => Ok(MacvlanMode::Private),
        "vepa" => Ok(MacvlanMode::Vepa),
        "passthru" => Ok(MacvlanMode::Passthru),
        other => Err(Error::config(format!(
            "invalid macvlan configuration: field \"mode\": unknown macvlan mode {other:?} \
             (want bridge, private, vepa or passthru)"
        ))),
    }
}

/// The configuration string of a mode.
pub fn mode_str(m: MacvlanMode) -> &'static str {
    match m {
        MacvlanMode::Bridge => "bridge",
        MacvlanMode::Private => "private",
        MacvlanMode::Vepa => "vepa",
        MacvlanMode::Passthru => "passthru",
        MacvlanMode::Source => "source",
    }
}

/// The CNI_ARGS keys the macvlan plugin (and its bundled IPAM) understand.
pub const KNOWN_ARGS: &[&str] = &["MAC", "IP", "GATEWAY"];

/// Parses the typed fields only (JSON types), without semantic validation: what DEL needs,
/// so that DEL of an attachment never fails on a value only ADD cares about.
pub fn parse(args: &CmdArgs) -> Result<MacvlanConf> {
    args.conf.typed()
}

/// The IPAM type of a configuration; `None` when there is no `ipam` or no `type`.
pub fn ipam_type(args: &CmdArgs) -> Option<String> {
    args.conf.ipam_type().map(str::to_string)
}

fn nonempty_str<'a>(v: Option<&'a serde_json::Value>, field: &str) -> Result<Option<&'a str>> {
    match v {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::config(format!(
            "invalid macvlan configuration: field {field:?} must be a string, got {other}"
        ))),
    }
}

/// Parses and validates the configuration of one invocation (ADD, CHECK, STATUS, GC).
///
/// The MAC comes from the top-level `mac`, then CNI_ARGS `MAC`, then `args.cni.mac`, then
/// `runtimeConfig.mac`: the last one set wins.
pub fn load(args: &CmdArgs) -> Result<Resolved> {
    let conf = parse(args)?;
    let mode = parse_mode(&conf.mode)?;
    let master = if conf.master.is_empty() {
        None
    } else {
        cni_core::env::validate_ifname(&conf.master).map_err(|e| {
            Error::config(format!(
                "invalid macvlan configuration: field \"master\": invalid interface name {:?}: {}",
                conf.master, e.msg
            ))
        })?;
        Some(conf.master.clone())
    };
    if conf.mtu < 0 || conf.mtu > i64::from(u32::MAX) {
        return Err(Error::config(format!(
            "invalid macvlan configuration: field \"mtu\": invalid MTU {}, must be [0, master MTU]",
            conf.mtu
        )));
    }
    let mtu = u32::try_from(conf.mtu).ok().filter(|m| *m > 0);
    args.env.args.check_known(KNOWN_ARGS)?;
    let mut mac_s: Option<(String, &str)> = conf
        .mac
        .clone()
        .filter(|m| !m.is_empty())
        .map(|m| (m, "mac"));
    if let Some(m) = args.env.args.get("MAC").filter(|m| !m.is_empty()) {
        mac_s = Some((m.to_string(), "CNI_ARGS MAC"));
    }
    if let Some(m) = nonempty_str(args.conf.args_cni("mac"), "args.cni.mac")? {
        mac_s = Some((m.to_string(), "args.cni.mac"));
    }
    if let Some(m) = nonempty_str(args.conf.runtime_config("mac"), "runtimeConfig.mac")? {
        mac_s = Some((m.to_string(), "runtimeConfig.mac"));
    }
    let mac = match mac_s {
        Some((s, field)) => {
            let m = parse_mac(&s).map_err(|_| {
                Error::config(format!(
                    "invalid macvlan configuration: field {field:?}: invalid MAC address {s:?}"
                ))
            })?;
            if m[0] & 1 == 1 || m == [0; 6] {
                return Err(Error::config(format!(
                    "invalid macvlan configuration: field {field:?}: {s:?} is not a unicast MAC address"
                )));
            }
            Some(m)
        }
        None => None,
    };
    let dns = match args.conf.get("dns") {
        Some(d) => serde_json::from_value(d.clone()).map_err(|e| {
            Error::config(format!("invalid macvlan configuration: field \"dns\": {e}"))
        })?,
        None => Dns::default(),
    };
    Ok(Resolved {
        mode,
        master,
        mtu,
        mac,
        ipam_type: ipam_type(args),
        dns,
        conf,
    })
}

/// Checks the requested MTU against the master's (code 7 naming the field).
pub fn check_mtu(r: &Resolved, master: &str, master_mtu: u32) -> Result<()> {
    match r.mtu {
        Some(m) if m > master_mtu => Err(Error::config(format!(
            "invalid macvlan configuration: field \"mtu\": invalid MTU {m}, must be [0, master MTU({master_mtu})] \
             (master {master:?})"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::{Env, NetConf};
    use serde_json::{Value, json};

    fn args_with(conf: Value, cni_args: &str) -> CmdArgs {
        let stdin = conf.to_string().into_bytes();
        let env = Env::from_lookup(|k| {
            Some(
                match k {
                    "CNI_COMMAND" => "ADD",
                    "CNI_CONTAINERID" => "c1",
                    "CNI_NETNS" => "/run/netns/x",
                    "CNI_IFNAME" => "eth0",
                    "CNI_PATH" => "/opt/cni/bin",
                    "CNI_ARGS" => cni_args,
                    _ => return None,
                }
                .to_string(),
            )
        })
        .expect("env");
        CmdArgs {
            env,
            conf: NetConf::parse(&stdin).expect("conf"),
            stdin,
        }
    }

    fn conf(extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"});
        if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        c
    }

    fn load_c(extra: Value) -> Result<Resolved> {
        load(&args_with(conf(extra), ""))
    }

    #[test]
    fn defaults() {
        let r = load_c(json!({})).unwrap();
        assert_eq!(r.mode, MacvlanMode::Bridge);
        assert_eq!(r.master, None);
        assert_eq!(r.mtu, None);
        assert_eq!(r.mac, None);
        assert_eq!(r.ipam_type, None);
        assert!(r.dns.is_empty());
        assert!(!r.conf.link_in_container);
    }

    #[test]
    fn every_field() {
        let r = load_c(
            json!({"master": "eth1", "mode": "vepa", "mtu": 1400, "mac": "02:00:00:00:00:01",
                              "linkInContainer": true, "ipam": {"type": "host-local"},
                              "dns": {"nameservers": ["10.0.0.53"]}}),
        )
        .unwrap();
        assert_eq!(r.master.as_deref(), Some("eth1"));
        assert_eq!(r.mode, MacvlanMode::Vepa);
        assert_eq!(r.mtu, Some(1400));
        assert_eq!(r.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(r.conf.link_in_container);
        assert_eq!(r.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(r.dns.nameservers, vec!["10.0.0.53".to_string()]);
    }

    #[test]
    fn modes() {
        for (s, m) in [
            ("", MacvlanMode::Bridge),
            ("bridge", MacvlanMode::Bridge),
            ("private", MacvlanMode::Private),
            ("vepa", MacvlanMode::Vepa),
            ("passthru", MacvlanMode::Passthru),
        ] {
            assert_eq!(parse_mode(s).unwrap(), m, "{s}");
            if !s.is_empty() {
                assert_eq!(mode_str(m), s);
            }
        }
        for bad in ["Bridge", "source", "passthrough", "x"] {
            let e = load_c(json!({"mode": bad})).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(e.msg.contains("\"mode\""), "{}", e.msg);
            assert!(e.msg.contains(bad), "{}", e.msg);
        }
    }

    #[test]
    fn mtu_bounds() {
        let e = load_c(json!({"mtu": -1})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"mtu\""), "{}", e.msg);
        assert_eq!(load_c(json!({"mtu": 0})).unwrap().mtu, None);
        let r = load_c(json!({"mtu": 1500})).unwrap();
        assert!(check_mtu(&r, "eth0", 1500).is_ok());
        let e = check_mtu(&r, "eth0", 1400).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("\"mtu\"") && e.msg.contains("1400"),
            "{}",
            e.msg
        );
        let e = load_c(json!({"mtu": 1e20})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("mtu"), "{}", e.msg);
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (field, v) in [
            ("master", json!(1)),
            ("mode", json!(true)),
            ("mtu", json!("1500")),
            ("mac", json!(5)),
            ("linkInContainer", json!("yes")),
        ] {
            let e = load_c(json!({ field: v })).unwrap_err();
            assert_eq!(e.code, 7, "{field}");
            assert!(e.msg.contains(field), "{field}: {}", e.msg);
        }
        let e = load_c(json!({"runtimeConfig": {"mac": 1}})).unwrap_err();
        assert!(e.msg.contains("runtimeConfig.mac"), "{}", e.msg);
        let e = load_c(json!({"dns": {"nameservers": "x"}})).unwrap_err();
        assert!(e.msg.contains("dns"), "{}", e.msg);
    }

    #[test]
    fn bad_master_name() {
        for bad in ["a/b", "abcdefghijklmnopq", "a b"] {
            let e = load_c(json!({ "master": bad })).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(e.msg.contains("master"), "{}", e.msg);
        }
    }

    #[test]
    fn mac_precedence() {
        let base = conf(json!({"mac": "02:00:00:00:00:01"}));
        assert_eq!(
            load(&args_with(base.clone(), "")).unwrap().mac,
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            load(&args_with(base.clone(), "MAC=02:00:00:00:00:02"))
                .unwrap()
                .mac,
            Some([2, 0, 0, 0, 0, 2])
        );
        let mut c = base.clone();
        c["args"] = json!({"cni": {"mac": "02:00:00:00:00:03"}});
        assert_eq!(
            load(&args_with(c.clone(), "MAC=02:00:00:00:00:02"))
                .unwrap()
                .mac,
            Some([2, 0, 0, 0, 0, 3])
        );
        c["runtimeConfig"] = json!({"mac": "02:00:00:00:00:04"});
        assert_eq!(
            load(&args_with(c.clone(), "MAC=02:00:00:00:00:02"))
                .unwrap()
                .mac,
            Some([2, 0, 0, 0, 0, 4])
        );
        // Empty values do not override.
        c["runtimeConfig"] = json!({"mac": ""});
        assert_eq!(
            load(&args_with(c, "")).unwrap().mac,
            Some([2, 0, 0, 0, 0, 3])
        );
    }

    #[test]
    fn bad_macs() {
        for (extra, args, field) in [
            (json!({"mac": "zz"}), "", "mac"),
            (json!({}), "MAC=01:00:5e:00:00:01", "CNI_ARGS MAC"),
            (
                json!({"runtimeConfig": {"mac": "00:00:00:00:00:00"}}),
                "",
                "runtimeConfig.mac",
            ),
            (
                json!({"args": {"cni": {"mac": "1:2:3"}}}),
                "",
                "args.cni.mac",
            ),
        ] {
            let e = load(&args_with(conf(extra), args)).unwrap_err();
            assert_eq!(e.code, 7, "{field}");
            assert!(e.msg.contains(field), "{field}: {}", e.msg);
        }
    }

    #[test]
    fn cni_args_keys() {
        let e = load(&args_with(conf(json!({})), "FOO=1")).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("FOO"));
        assert!(load(&args_with(conf(json!({})), "IgnoreUnknown=1;FOO=1")).is_ok());
        assert!(
            load(&args_with(
                conf(json!({})),
                "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns;IP=10.0.0.2/24"
            ))
            .is_ok()
        );
    }

    #[test]
    fn parse_is_lenient_for_del() {
        // DEL parses only the JSON types: a bad mode or MAC does not stop it.
        let a = args_with(conf(json!({"mode": "nope", "mac": "zz", "mtu": 99999})), "");
        let c = parse(&a).unwrap();
        assert_eq!(c.mode, "nope");
        assert!(load(&a).is_err());
        assert_eq!(ipam_type(&a), None);
        let a = args_with(conf(json!({"ipam": {"type": ""}})), "");
        assert_eq!(ipam_type(&a), None);
        let a = args_with(conf(json!({"ipam": {"type": "static"}})), "");
        assert_eq!(ipam_type(&a).as_deref(), Some("static"));
    }
}
