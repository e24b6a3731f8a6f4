//! The CNI environment: `CNI_COMMAND` and friends, validated per verb.

use crate::args::CniArgs;
use crate::error::{Error, Result, code};
use std::path::PathBuf;

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// ADD
    Add,
    /// DEL
    Del,
    /// CHECK (0.4.0+)
    Check,
    /// STATUS (1.1.0+)
    Status,
    /// GC (1.1.0+)
    Gc,
    /// VERSION
    Version,
}

impl Verb {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "ADD" => Verb::Add,
            "DEL" => Verb::Del,
            "CHECK" => Verb::Check,
            "STATUS" => Verb::Status,
            "GC" => Verb::Gc,
            "VERSION" => Verb::Version,
            _ => return None,
        })
    }
    /// The oldest configuration version in which the verb exists (CHECK 0.4.0, STATUS and
    /// GC 1.1.0).
    pub fn min_version(self) -> crate::version::Version {
        use crate::version::Version;
        match self {
            Verb::Check => Version::V0_4_0,
            Verb::Status | Verb::Gc => Version::V1_1_0,
            _ => Version::V0_3_0,
        }
    }
    /// The `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Status => "STATUS",
            Verb::Gc => "GC",
            Verb::Version => "VERSION",
        }
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// CNI_COMMAND
    pub verb: Verb,
    /// CNI_CONTAINERID (empty for STATUS, GC, VERSION)
    pub container_id: String,
    /// CNI_NETNS (may be empty on DEL)
    pub netns: String,
    /// CNI_IFNAME
    pub ifname: String,
    /// CNI_ARGS, parsed
    pub args: CniArgs,
    /// CNI_ARGS, raw
    pub args_raw: String,
    /// CNI_PATH, split on ':'
    pub path: Vec<PathBuf>,
}

/// Where the spec requires a variable, by verb.
fn required(var: &str, verb: Verb) -> bool {
    use Verb::*;
    match var {
        "CNI_CONTAINERID" | "CNI_IFNAME" | "CNI_PATH" => matches!(verb, Add | Del | Check),
        "CNI_NETNS" => matches!(verb, Add | Check),
        _ => false,
    }
}

/// Validates a container ID (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
pub fn validate_container_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::new(code::UNKNOWN_CONTAINER, "missing containerID"));
    }
    if !valid_name(id) {
        return Err(Error::env("invalid characters in containerID").with_details(id.to_string()));
    }
    Ok(())
}

/// The spec's name rule, shared by container IDs and network names.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Validates an interface name: non-empty, at most 15 bytes, not `.`/`..`, no `/`, `:` or
/// whitespace (code 4).
pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::env("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(Error::env(format!("interface name {name:?} is too long"))
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(Error::env("interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(Error::env(format!(
            "interface name {name:?} contains / or : or whitespace characters"
        )));
    }
    Ok(())
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Result<Env> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads and validates the environment from any lookup (tests use a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        if cmd.is_empty() {
            return Err(Error::env("required env variables [CNI_COMMAND] missing"));
        }
        let Some(verb) = Verb::parse(&cmd) else {
            return Err(Error::env(format!(
                "unknown CNI_COMMAND: {cmd:?} (want ADD, DEL, CHECK, STATUS, GC or VERSION)"
            )));
        };
        let vars = [
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
        ];
        let missing: Vec<&str> = vars
            .iter()
            .copied()
            .filter(|v| required(v, verb) && get(v).unwrap_or_default().is_empty())
            .collect();
        if !missing.is_empty() {
            return Err(Error::env(format!(
                "required env variables [{}] missing",
                missing.join(",")
            )));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if matches!(verb, Verb::Add | Verb::Del | Verb::Check) {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname)?;
        }
        let args_raw = get("CNI_ARGS").unwrap_or_default();
        let args = CniArgs::parse(&args_raw)?;
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(Env {
            verb,
            container_id,
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname,
            args,
            args_raw,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    fn with(cmd: &str, drop: &[&str], over: &[(&str, &str)]) -> Result<Env> {
        let mut v: Vec<(&str, &str)> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| !drop.contains(k))
            .collect();
        v.push(("CNI_COMMAND", cmd));
        for (k, val) in over {
            v.retain(|(kk, _)| kk != k);
            v.push((k, val));
        }
        env(&v)
    }

    #[test]
    fn required_per_verb() {
        let e = with("ADD", &["CNI_NETNS", "CNI_PATH"], &[]).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(e.msg, "required env variables [CNI_NETNS,CNI_PATH] missing");
        // DEL does not need a netns
        let d = with("DEL", &["CNI_NETNS"], &[]).unwrap();
        assert_eq!(d.netns, "");
        assert_eq!(d.path.len(), 2);
        assert!(with("CHECK", &["CNI_NETNS"], &[]).is_err());
        // STATUS / GC / VERSION need none of them
        for v in ["STATUS", "GC", "VERSION"] {
            assert!(env(&[("CNI_COMMAND", v)]).is_ok(), "{v}");
        }
        assert_eq!(env(&[]).unwrap_err().code, 4);
        assert!(
            env(&[("CNI_COMMAND", "FROB")])
                .unwrap_err()
                .msg
                .contains("FROB")
        );
    }

    #[test]
    fn container_id_rules() {
        assert!(with("ADD", &[], &[("CNI_CONTAINERID", "a.b_c-1")]).is_ok());
        for bad in ["-abc", "a/b", "a b", ".x", "a:b"] {
            let e = with("ADD", &[], &[("CNI_CONTAINERID", bad)]).unwrap_err();
            assert_eq!(e.code, 4, "{bad}");
        }
    }

    #[test]
    fn ifname_rules() {
        assert!(with("ADD", &[], &[("CNI_IFNAME", "net1234567890ab")]).is_ok());
        for bad in ["net1234567890abc", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            let e = with("ADD", &[], &[("CNI_IFNAME", bad)]).unwrap_err();
            assert_eq!(e.code, 4, "{bad}");
        }
    }

    #[test]
    fn bad_args_are_env_errors() {
        let e = with("ADD", &[], &[("CNI_ARGS", "garbage")]).unwrap_err();
        assert_eq!(e.code, 4);
    }
}
