//! The agent's configuration: command-line flags and environment variables.
//!
//! Every option has a flag (`--name value` or `--name=value`) and an environment variable;
//! the flag wins. [`HELP`] is the `--help` text and the reference.

use super::{Error, Result};
use ipnet::IpNet;
use meta_overlay::{DEFAULT_PORT, DEFAULT_SUBNET_FILE, DEFAULT_VNI, MAX_VNI, device_name};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the node list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The Kubernetes API: Node objects (`spec.podCIDR` and the agent's annotations).
    Kube {
        /// A kubeconfig file; `None` = in-cluster configuration (service account).
        kubeconfig: Option<PathBuf>,
    },
    /// A static JSON file of nodes, re-read when it changes.
    Local {
        /// The file.
        nodes_file: PathBuf,
    },
}

/// The agent's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// This node's name (the Node object, or the entry of the nodes file).
    pub node_name: String,
    /// Kubernetes or local mode.
    pub mode: Mode,
    /// The cluster CIDR (all pod subnets).
    pub cluster_cidr: IpNet,
    /// VXLAN network identifier of the primary overlay.
    pub vni: u32,
    /// UDP port of the primary overlay.
    pub port: u16,
    /// Name of the VXLAN device (default `meta.<vni>`).
    pub device: String,
    /// Underlay interface; `None` = the default route's (or the one holding `underlay_ip`).
    pub underlay_iface: Option<String>,
    /// Local underlay (VTEP) address; `None` = detected.
    pub underlay_ip: Option<IpAddr>,
    /// The subnet file the CNI side reads.
    pub subnet_file: PathBuf,
    /// Where meta-vxlan records the secondary segments it created (their owner files).
    pub segment_state_dir: PathBuf,
    /// Whether to install the node-level masquerade rule.
    pub masquerade: bool,
    /// The firewall's lock file.
    pub firewall_lock: PathBuf,
    /// Full reconciliation period (also repairs drift in the kernel).
    pub resync: Duration,
    /// How long to wait for further changes before reconciling.
    pub debounce: Duration,
    /// How often to re-check the nodes file (local mode) or the own Node's `podCIDR`
    /// while waiting for it (kube mode).
    pub poll: Duration,
    /// Log filter (`info`, `debug`, `meta_cni_agent=debug,kube=info`, ...).
    pub log_level: String,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the agent.
    Run(Box<AgentConfig>),
    /// Print [`HELP`].
    Help,
    /// Print the version.
    Version,
}

struct Opt {
    flag: &'static str,
    env: &'static str,
    meta: &'static str,
    help: &'static str,
}

const OPTS: &[Opt] = &[
    Opt {
        flag: "node-name",
        env: "NODE_NAME",
        meta: "NAME",
        help: "this node's name (required; in a DaemonSet: fieldRef spec.nodeName)",
    },
    Opt {
        flag: "mode",
        env: "META_CNI_AGENT_MODE",
        meta: "kube|local",
        help: "where nodes come from: the Kubernetes API (default) or a static file",
    },
    Opt {
        flag: "kubeconfig",
        env: "KUBECONFIG",
        meta: "PATH",
        help: "kube mode: kubeconfig file; unset = in-cluster service account",
    },
    Opt {
        flag: "nodes-file",
        env: "META_CNI_AGENT_NODES_FILE",
        meta: "PATH",
        help: "local mode: JSON array [{name, podSubnet, underlayIP, vtepMAC?}] (required there)",
    },
    Opt {
        flag: "cluster-cidr",
        env: "META_CNI_AGENT_CLUSTER_CIDR",
        meta: "CIDR",
        help: "the cluster CIDR holding every pod subnet (required), e.g. 10.244.0.0/16",
    },
    Opt {
        flag: "vni",
        env: "META_CNI_AGENT_VNI",
        meta: "N",
        help: "VXLAN network identifier of the primary overlay (default 1)",
    },
    Opt {
        flag: "port",
        env: "META_CNI_AGENT_PORT",
        meta: "PORT",
        help: "VXLAN UDP port (default 8472)",
    },
    Opt {
        flag: "device",
        env: "META_CNI_AGENT_DEVICE",
        meta: "NAME",
        help: "VXLAN device name (default meta.<vni>)",
    },
    Opt {
        flag: "underlay-iface",
        env: "META_CNI_AGENT_UNDERLAY_IFACE",
        meta: "NAME",
        help: "underlay interface (default: the default route's, or the one holding --underlay-ip)",
    },
    Opt {
        flag: "underlay-ip",
        env: "META_CNI_AGENT_UNDERLAY_IP",
        meta: "IP",
        help: "local underlay (VTEP) address (default: detected; local mode: the own entry's underlayIP)",
    },
    Opt {
        flag: "subnet-file",
        env: "META_CNI_AGENT_SUBNET_FILE",
        meta: "PATH",
        help: "subnet file for the CNI side (default /run/meta-cni/subnet.env)",
    },
    Opt {
        flag: "segment-state-dir",
        env: "META_CNI_AGENT_SEGMENT_STATE_DIR",
        meta: "PATH",
        help: "where meta-vxlan records secondary segments (default /run/meta-cni/vxlan); segments without static peers get every node as peer",
    },
    Opt {
        flag: "masquerade",
        env: "META_CNI_AGENT_MASQUERADE",
        meta: "true|false",
        help: "masquerade pod traffic leaving the cluster CIDR (default true; --no-masquerade)",
    },
    Opt {
        flag: "firewall-lock",
        env: "META_CNI_AGENT_FIREWALL_LOCK",
        meta: "PATH",
        help: "lock file shared with the CNI side's firewall (default /run/meta-cni/firewall.lock)",
    },
    Opt {
        flag: "resync",
        env: "META_CNI_AGENT_RESYNC",
        meta: "DURATION",
        help: "full reconciliation period, repairs kernel drift (default 60s; 0 = never)",
    },
    Opt {
        flag: "debounce",
        env: "META_CNI_AGENT_DEBOUNCE",
        meta: "DURATION",
        help: "quiet time collecting changes before a reconciliation (default 100ms)",
    },
    Opt {
        flag: "poll",
        env: "META_CNI_AGENT_POLL",
        meta: "DURATION",
        help: "local mode: nodes-file check period; kube mode: podCIDR wait period (default 1s)",
    },
    Opt {
        flag: "log-level",
        env: "META_CNI_AGENT_LOG",
        meta: "FILTER",
        help: "tracing filter, e.g. info, debug, meta_cni_agent=debug (default info; RUST_LOG too)",
    },
];

/// The `--help` text.
pub const HELP: &str = "\
meta-cni-agent: the per-node daemon of meta-cni's primary VXLAN overlay.

Creates the overlay's VXLAN device, publishes this node's VTEP (kube mode: annotations
meta-cni.io/vtep-mac and meta-cni.io/underlay-ip on its Node), programs a neighbour entry,
an FDB entry and a route for every other node's pod subnet and removes those of nodes that
are gone, writes the subnet file the CNI side reads, and masquerades pod traffic leaving
the cluster CIDR (nftables). Exits on SIGTERM/SIGINT and leaves the kernel state in place.
Logs go to stderr.

USAGE: meta-cni-agent [OPTIONS]

Every option can also be given as the environment variable shown; the flag wins.
DURATION: 500ms, 2s, 5m or plain seconds.

OPTIONS:
";

/// The full help text: [`HELP`] plus the option table.
pub fn help() -> String {
    let mut s = String::from(HELP);
    for o in OPTS {
        let left = format!("  --{} {}", o.flag, o.meta);
        s.push_str(&format!("{left:<34} [{}]\n      {}\n", o.env, o.help));
    }
    s.push_str("  --help, -h                        this text\n  --version, -V                     the version\n");
    s
}

/// Parses a duration: `500ms`, `2s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 2s, 5m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_bool(flag: &str, s: &str) -> Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!(
            "--{flag}: {s:?} is not a boolean (true/false)"
        ))),
    }
}

/// Parses the command line `args` (without the program name) over the environment `env`.
pub fn parse<I, S>(args: I, env: &BTreeMap<String, String>) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut vals: BTreeMap<&'static str, String> = BTreeMap::new();
    for o in OPTS {
        if let Some(v) = env.get(o.env).filter(|v| !v.is_empty()) {
            vals.insert(o.flag, v.clone());
        }
    }
    let mut it = args.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--no-masquerade" => {
                vals.insert("masquerade", "false".into());
                continue;
            }
            _ => {}
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(Error::Config(format!(
                "unexpected argument {arg:?} (see --help)"
            )));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let opt = OPTS
            .iter()
            .find(|o| o.flag == name)
            .ok_or_else(|| Error::Config(format!("unknown option --{name} (see --help)")))?;
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| Error::Config(format!("--{name} needs a value ({})", opt.meta)))?,
        };
        vals.insert(opt.flag, value);
    }
    build(&vals).map(|c| Command::Run(Box::new(c)))
}

fn build(vals: &BTreeMap<&'static str, String>) -> Result<AgentConfig> {
    let get = |k: &str| vals.get(k).map(String::as_str);
    let cfg_err = |m: String| Error::Config(m);
    let node_name = get("node-name")
        .ok_or_else(|| cfg_err("the node name is required: --node-name or NODE_NAME".into()))?
        .to_string();
    let mode = match get("mode").unwrap_or("kube") {
        "kube" | "kubernetes" => Mode::Kube {
            kubeconfig: get("kubeconfig").map(PathBuf::from),
        },
        "local" => Mode::Local {
            nodes_file: get("nodes-file").map(PathBuf::from).ok_or_else(|| {
                cfg_err(
                    "local mode needs the nodes file: --nodes-file or META_CNI_AGENT_NODES_FILE"
                        .into(),
                )
            })?,
        },
        other => return Err(cfg_err(format!("--mode {other:?}: use kube or local"))),
    };
    let cluster_cidr: IpNet = get("cluster-cidr")
        .ok_or_else(|| {
            cfg_err(
                "the cluster CIDR is required: --cluster-cidr or META_CNI_AGENT_CLUSTER_CIDR"
                    .into(),
            )
        })?
        .parse()
        .map_err(|e| cfg_err(format!("--cluster-cidr: {e}")))?;
    let vni: u32 = match get("vni") {
        Some(v) => v
            .parse()
            .map_err(|_| cfg_err(format!("--vni {v:?} is not a number")))?,
        None => DEFAULT_VNI,
    };
    if vni == 0 || vni > MAX_VNI {
        return Err(cfg_err(format!("--vni {vni} out of range (1..={MAX_VNI})")));
    }
    let port: u16 = match get("port") {
        Some(v) => v
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| cfg_err(format!("--port {v:?} is not a UDP port (1..=65535)")))?,
        None => DEFAULT_PORT,
    };
    let device = get("device")
        .map(str::to_string)
        .unwrap_or_else(|| device_name(vni));
    let underlay_ip = get("underlay-ip")
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|e| cfg_err(format!("--underlay-ip {s:?}: {e}")))
        })
        .transpose()?;
    let dur = |k: &str, default: Duration| -> Result<Duration> {
        match get(k) {
            Some(v) => parse_duration(v).map_err(|e| cfg_err(format!("--{k}: {e}"))),
            None => Ok(default),
        }
    };
    let poll = dur("poll", Duration::from_secs(1))?;
    if poll.is_zero() {
        return Err(cfg_err("--poll must be greater than 0".into()));
    }
    let log_level = get("log-level").unwrap_or("info").to_string();
    Ok(AgentConfig {
        node_name,
        mode,
        cluster_cidr: cluster_cidr.trunc(),
        vni,
        port,
        device,
        underlay_iface: get("underlay-iface").map(str::to_string),
        underlay_ip,
        subnet_file: get("subnet-file")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SUBNET_FILE)),
        segment_state_dir: get("segment-state-dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(meta_vxlan::config::DEFAULT_STATE_DIR)),
        masquerade: match get("masquerade") {
            Some(v) => parse_bool("masquerade", v)?,
            None => true,
        },
        firewall_lock: get("firewall-lock")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(meta_firewall::DEFAULT_LOCK_PATH)),
        resync: dur("resync", Duration::from_secs(60))?,
        debounce: dur("debounce", Duration::from_millis(100))?,
        poll,
        log_level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(args: &[&str], e: &[(&str, &str)]) -> Result<AgentConfig> {
        match parse(args.iter().copied(), &env(e))? {
            Command::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_from_env() {
        let c = run(
            &[],
            &[
                ("NODE_NAME", "n1"),
                ("META_CNI_AGENT_CLUSTER_CIDR", "10.244.3.0/16"),
            ],
        )
        .unwrap();
        assert_eq!(c.node_name, "n1");
        assert_eq!(c.mode, Mode::Kube { kubeconfig: None });
        assert_eq!(c.cluster_cidr.to_string(), "10.244.0.0/16");
        assert_eq!((c.vni, c.port, c.device.as_str()), (1, 8472, "meta.1"));
        assert_eq!(c.subnet_file, PathBuf::from("/run/meta-cni/subnet.env"));
        assert!(c.masquerade);
        assert_eq!(c.resync, Duration::from_secs(60));
        assert_eq!(c.debounce, Duration::from_millis(100));
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn flags_win_over_env() {
        let c = run(
            &[
                "--node-name=n2",
                "--mode",
                "local",
                "--nodes-file",
                "/tmp/n.json",
                "--vni",
                "7",
                "--port=4790",
                "--underlay-ip",
                "192.168.1.2",
                "--no-masquerade",
                "--resync",
                "5m",
                "--debounce=250ms",
                "--cluster-cidr",
                "fd00::/48",
            ],
            &[
                ("NODE_NAME", "n1"),
                ("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8"),
                ("META_CNI_AGENT_MASQUERADE", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.node_name, "n2");
        assert_eq!(
            c.mode,
            Mode::Local {
                nodes_file: "/tmp/n.json".into()
            }
        );
        assert_eq!((c.vni, c.port, c.device.as_str()), (7, 4790, "meta.7"));
        assert_eq!(c.underlay_ip, Some("192.168.1.2".parse().unwrap()));
        assert!(!c.masquerade);
        assert_eq!(c.resync, Duration::from_secs(300));
        assert_eq!(c.debounce, Duration::from_millis(250));
        assert_eq!(c.cluster_cidr.to_string(), "fd00::/48");
    }

    #[test]
    fn errors_name_the_option() {
        let base = [
            ("NODE_NAME", "n"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8"),
        ];
        let e = |args: &[&str], env: &[(&str, &str)]| run(args, env).unwrap_err().to_string();
        assert!(e(&[], &[("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8")]).contains("NODE_NAME"));
        assert!(e(&[], &[("NODE_NAME", "n")]).contains("cluster CIDR"));
        assert!(e(&["--vni", "0"], &base).contains("--vni"));
        assert!(e(&["--vni", "x"], &base).contains("--vni"));
        assert!(e(&["--port", "0"], &base).contains("--port"));
        assert!(e(&["--mode", "x"], &base).contains("--mode"));
        assert!(e(&["--mode", "local"], &base).contains("nodes file"));
        assert!(e(&["--bogus", "1"], &base).contains("unknown option --bogus"));
        assert!(e(&["stray"], &base).contains("unexpected argument"));
        assert!(e(&["--resync", "5x"], &base).contains("--resync"));
        assert!(e(&["--masquerade", "maybe"], &base).contains("boolean"));
        assert!(e(&["--underlay-ip", "1.2.3"], &base).contains("--underlay-ip"));
        assert!(e(&["--vni"], &base).contains("needs a value"));
        assert!(e(&["--poll", "0"], &base).contains("--poll"));
    }

    #[test]
    fn help_lists_every_option_and_env() {
        assert_eq!(parse(["--help"], &BTreeMap::new()).unwrap(), Command::Help);
        assert_eq!(parse(["-V"], &BTreeMap::new()).unwrap(), Command::Version);
        let h = help();
        for o in OPTS {
            assert!(h.contains(&format!("--{}", o.flag)), "{}", o.flag);
            assert!(h.contains(o.env), "{}", o.env);
        }
        assert!(h.contains("meta-cni.io/vtep-mac"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1d").is_err());
    }
}
