//! The agent's configuration: command-line flags and environment variables, parsed by
//! clap ([`Cli`]).
//!
//! Every option has a flag (`--name value` or `--name=value`) and an environment variable;
//! the flag wins, a repeated flag's last value wins, and an empty variable counts as unset.
//! `meta-cni-agent --help` is the reference. [`parse`] turns the command line and the
//! environment into an [`AgentConfig`].

use super::{Error, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use ipnet::IpNet;
use meta_overlay::{DEFAULT_PORT, DEFAULT_SUBNET_FILE, DEFAULT_VNI, MAX_VNI, device_name};
use std::ffi::OsString;
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
    /// The local API's unix socket (kube mode).
    pub socket: PathBuf,
    /// Kube mode: meta-cni's network configuration file; set = hot-plug on
    /// ([`crate::hotplug`]).
    pub hotplug_conf: Option<PathBuf>,
    /// The plugin's spool of records (Events, metrics).
    pub spool_dir: PathBuf,
    /// Where `/metrics` is served; `None` = nowhere.
    pub metrics_bind_address: Option<std::net::SocketAddr>,
    /// Full reconciliation period (also repairs drift in the kernel).
    pub resync: Duration,
    /// How long to wait for further changes before reconciling.
    pub debounce: Duration,
    /// How often to re-check the nodes file (local mode) or the own Node's `podCIDR`
    /// while waiting for it (kube mode).
    pub poll: Duration,
    /// Log filter (`info`, `debug`, `meta_cni_agent=debug,kube=info`, ...).
    pub log_level: String,
    /// Kube mode: period of the cluster IPAM's reconciliation ([`crate::ipam`]); it also
    /// runs shortly after each pod deletion. Zero = off.
    pub ipam_reconcile_interval: Duration,
    /// Allocations younger than this are never freed by the reconciliation.
    pub ipam_min_age: Duration,
    /// The cluster IPAM's data directories on this node (journals to sync).
    pub ipam_data_dirs: Vec<PathBuf>,
}

/// `--metrics-bind-address`'s default: the node's loopback (the agent runs in the host
/// network namespace), off the pod network.
pub const DEFAULT_METRICS_BIND_ADDRESS: &str = "127.0.0.1:9191";

/// The description at the top of `--help`.
const LONG_ABOUT: &str = "\
meta-cni-agent: the per-node daemon of meta-cni's primary VXLAN overlay.

Creates the overlay's VXLAN device, publishes this node's VTEP (kube mode: annotations
meta-cni.io/vtep-mac and meta-cni.io/underlay-ip on its Node), programs a neighbour entry,
an FDB entry and a route for every other node's pod subnet and removes those of nodes that
are gone, writes the subnet file the CNI side reads, and masquerades pod traffic leaving
the cluster CIDR (nftables). Exits on SIGTERM/SIGINT and leaves the kernel state in place.
Logs go to stderr.";

/// The text at the end of `--help`.
const AFTER_HELP: &str = "\
Every option can also be given as the environment variable shown; the flag wins, and an
empty variable counts as unset. DURATION: 500ms, 2s, 5m, 1h or plain seconds.";

/// Where the nodes come from (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Node objects of the Kubernetes API.
    #[value(alias = "kubernetes")]
    Kube,
    /// A static nodes file.
    Local,
}

/// The command line and environment of `meta-cni-agent`, as clap parses them; [`parse`]
/// checks what clap cannot and resolves the defaults into an [`AgentConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "meta-cni-agent",
    version,
    about = "The per-node daemon of meta-cni's primary VXLAN overlay",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    args_override_self = true,
    next_line_help = true
)]
pub struct Cli {
    /// This node's name (required; in a DaemonSet: fieldRef spec.nodeName)
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where nodes come from: the Kubernetes API or a static file
    #[arg(long, env = "META_CNI_AGENT_MODE", value_enum, default_value = "kube")]
    pub mode: ModeArg,
    /// Kube mode: kubeconfig file; unset = in-cluster service account
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Local mode: JSON array [{name, podSubnet, underlayIP, vtepMAC?}] (required there)
    #[arg(long, env = "META_CNI_AGENT_NODES_FILE", value_name = "PATH")]
    pub nodes_file: Option<PathBuf>,
    /// The cluster CIDR holding every pod subnet (required), e.g. 10.244.0.0/16
    #[arg(long, env = "META_CNI_AGENT_CLUSTER_CIDR", value_name = "CIDR")]
    pub cluster_cidr: Option<IpNet>,
    /// VXLAN network identifier of the primary overlay
    #[arg(long, env = "META_CNI_AGENT_VNI", value_name = "N", value_parser = parse_vni,
          default_value_t = DEFAULT_VNI)]
    pub vni: u32,
    /// VXLAN UDP port
    #[arg(long, env = "META_CNI_AGENT_PORT", value_name = "PORT", value_parser = parse_port,
          default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// VXLAN device name (default `meta.<vni>`)
    #[arg(
        long,
        env = "META_CNI_AGENT_DEVICE",
        value_name = "NAME",
        help = "VXLAN device name (default meta.<vni>)"
    )]
    pub device: Option<String>,
    /// Underlay interface (default: the default route's, or the one holding --underlay-ip)
    #[arg(long, env = "META_CNI_AGENT_UNDERLAY_IFACE", value_name = "NAME")]
    pub underlay_iface: Option<String>,
    /// Local underlay (VTEP) address (default: detected; local mode: the own entry's underlayIP)
    #[arg(long, env = "META_CNI_AGENT_UNDERLAY_IP", value_name = "IP")]
    pub underlay_ip: Option<IpAddr>,
    /// Subnet file for the CNI side
    #[arg(long, env = "META_CNI_AGENT_SUBNET_FILE", value_name = "PATH",
          default_value = DEFAULT_SUBNET_FILE)]
    pub subnet_file: PathBuf,
    /// Where meta-vxlan records secondary segments; segments without static peers get every node as peer
    #[arg(long, env = "META_CNI_AGENT_SEGMENT_STATE_DIR", value_name = "PATH",
          default_value = meta_overlay::DEFAULT_STATE_DIR)]
    pub segment_state_dir: PathBuf,
    /// Masquerade pod traffic leaving the cluster CIDR
    #[arg(long, env = "META_CNI_AGENT_MASQUERADE", value_name = "true|false",
          value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub masquerade: bool,
    /// The same as --masquerade false (the later of the two wins)
    #[arg(long)]
    pub no_masquerade: bool,
    /// Lock file shared with the CNI side's firewall
    #[arg(long, env = "META_CNI_AGENT_FIREWALL_LOCK", value_name = "PATH",
          default_value = meta_firewall::DEFAULT_LOCK_PATH)]
    pub firewall_lock: PathBuf,
    /// Kube mode: the local API's unix socket (NAD and pod caches for meta-cni; root only)
    #[arg(long, env = "META_CNI_AGENT_SOCKET", value_name = "PATH",
          default_value = meta_crd::agent_api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Kube mode: meta-cni's network configuration (e.g. /etc/cni/net.d/00-meta-cni.conflist); set = hot-plug of the networks annotation into running pods
    #[arg(long, env = "META_CNI_AGENT_HOTPLUG_CONF", value_name = "PATH")]
    pub hotplug_conf: Option<PathBuf>,
    /// The plugin's spool of ADD/DEL/CHECK records, turned into Events and metrics (default: spool next to --socket)
    #[arg(long, env = "META_CNI_AGENT_SPOOL_DIR", value_name = "PATH")]
    pub spool_dir: Option<PathBuf>,
    /// Prometheus metrics on http://ADDR/metrics; 0 or empty = off
    #[arg(long, env = "META_CNI_AGENT_METRICS_BIND_ADDRESS", value_name = "ADDR",
          default_value = DEFAULT_METRICS_BIND_ADDRESS)]
    pub metrics_bind_address: String,
    /// Full reconciliation period, repairs kernel drift (0 = never)
    #[arg(long, env = "META_CNI_AGENT_RESYNC", value_name = "DURATION",
          value_parser = parse_duration, default_value = "60s")]
    pub resync: Duration,
    /// Quiet time collecting changes before a reconciliation
    #[arg(long, env = "META_CNI_AGENT_DEBOUNCE", value_name = "DURATION",
          value_parser = parse_duration, default_value = "100ms")]
    pub debounce: Duration,
    /// Local mode: nodes-file check period; kube mode: podCIDR wait period
    #[arg(long, env = "META_CNI_AGENT_POLL", value_name = "DURATION",
          value_parser = parse_poll, default_value = "1s")]
    pub poll: Duration,
    /// Tracing filter, e.g. info, debug, meta_cni_agent=debug (RUST_LOG too)
    #[arg(
        long,
        env = "META_CNI_AGENT_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,
    /// Kube mode: period of the meta-ipam reconciliation (frees addresses of gone pods and nodes; also runs after each pod deletion); 0 = off
    #[arg(long, env = "META_CNI_AGENT_IPAM_RECONCILE_INTERVAL", value_name = "DURATION",
          value_parser = parse_duration, default_value = "60s")]
    pub ipam_reconcile_interval: Duration,
    /// meta-ipam allocations younger than this are never freed by the reconciliation
    #[arg(long, env = "META_CNI_AGENT_IPAM_MIN_AGE", value_name = "DURATION",
          value_parser = parse_duration, default_value = "60s")]
    pub ipam_min_age: Duration,
    /// meta-ipam data directories on this node (comma-separated), whose journals the agent writes to the API server
    #[arg(long, env = "META_CNI_AGENT_IPAM_DATA_DIR", value_name = "PATH[,PATH...]",
          value_delimiter = ',', default_value = DEFAULT_IPAM_DATA_DIR)]
    pub ipam_data_dir: Vec<PathBuf>,
}

/// `--ipam-data-dir`'s default: meta-ipam's own default `dataDir`.
pub const DEFAULT_IPAM_DATA_DIR: &str = "/var/lib/cni/meta-ipam";

/// The clap command of [`Cli`] over the current environment: variables' values stay out of
/// `--help`, and a variable that is set but empty counts as unset (still listed in
/// `--help`).
pub fn command() -> clap::Command {
    Cli::command().mut_args(|a| {
        let a = a.hide_env_values(true);
        match a.get_env().map(ToOwned::to_owned) {
            Some(name) if std::env::var_os(&name).is_some_and(|v| v.is_empty()) => {
                // clap would take the empty string as the value: forget the variable,
                // and name it in the help text as clap does for the others.
                let help = match a.get_help() {
                    Some(h) => format!("{h} [env: {}]", name.to_string_lossy()),
                    None => format!("[env: {}]", name.to_string_lossy()),
                };
                a.env(None::<&str>).help(help)
            }
            _ => a,
        }
    })
}

/// Parses the command line `args` (the program name first, as in [`std::env::args_os`])
/// over the process environment. `--help`, `--version` and what clap refuses (unknown
/// options, missing or invalid values) come back as [`Error::Cli`]; missing required
/// settings as [`Error::Config`].
pub fn parse<I, T>(args: I) -> Result<AgentConfig>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    // --no-masquerade and --masquerade: the later on the command line wins, and either
    // wins over META_CNI_AGENT_MASQUERADE (clap's overrides_with would refuse the flag
    // beside the variable as a conflict).
    if cli.no_masquerade
        && matches.value_source("masquerade") == Some(ValueSource::CommandLine)
        && matches.index_of("masquerade") > matches.index_of("no_masquerade")
    {
        cli.no_masquerade = false;
    }
    cli.into_config()
}

impl Cli {
    /// Checks the settings clap cannot (required values, the nodes file of local mode)
    /// and resolves the defaults that depend on other settings.
    fn into_config(self) -> Result<AgentConfig> {
        let cfg_err = |m: &str| Error::Config(m.to_string());
        let node_name = self
            .node_name
            .ok_or_else(|| cfg_err("the node name is required: --node-name or NODE_NAME"))?;
        let mode = match self.mode {
            ModeArg::Kube => Mode::Kube {
                kubeconfig: self.kubeconfig,
            },
            ModeArg::Local => Mode::Local {
                nodes_file: self.nodes_file.ok_or_else(|| {
                    cfg_err(
                        "local mode needs the nodes file: --nodes-file or META_CNI_AGENT_NODES_FILE",
                    )
                })?,
            },
        };
        let cluster_cidr = self.cluster_cidr.ok_or_else(|| {
            cfg_err("the cluster CIDR is required: --cluster-cidr or META_CNI_AGENT_CLUSTER_CIDR")
        })?;
        let metrics_bind_address = match self.metrics_bind_address.trim() {
            "" | "0" => None,
            a => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
                Error::Config(format!(
                    "--metrics-bind-address {a:?}: {e} (IP:PORT, or 0 to turn metrics off)"
                ))
            })?),
        };
        let spool_dir = self.spool_dir.unwrap_or_else(|| {
            self.socket
                .parent()
                .map_or_else(|| PathBuf::from("spool"), |p| p.join("spool"))
        });
        Ok(AgentConfig {
            node_name,
            mode,
            cluster_cidr: cluster_cidr.trunc(),
            vni: self.vni,
            port: self.port,
            device: self.device.unwrap_or_else(|| device_name(self.vni)),
            underlay_iface: self.underlay_iface,
            underlay_ip: self.underlay_ip,
            subnet_file: self.subnet_file,
            segment_state_dir: self.segment_state_dir,
            masquerade: self.masquerade && !self.no_masquerade,
            firewall_lock: self.firewall_lock,
            socket: self.socket,
            hotplug_conf: self.hotplug_conf,
            spool_dir,
            metrics_bind_address,
            resync: self.resync,
            debounce: self.debounce,
            poll: self.poll,
            log_level: self.log_level,
            ipam_reconcile_interval: self.ipam_reconcile_interval,
            ipam_min_age: self.ipam_min_age,
            ipam_data_dirs: self
                .ipam_data_dir
                .into_iter()
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        })
    }
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

/// `--poll`: a duration greater than 0.
fn parse_poll(s: &str) -> std::result::Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than 0".into()),
        d => Ok(d),
    }
}

/// `--vni`: 1..=[`MAX_VNI`].
fn parse_vni(s: &str) -> std::result::Result<u32, String> {
    let vni: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if vni == 0 || vni > MAX_VNI {
        return Err(format!("{vni} out of range (1..={MAX_VNI})"));
    }
    Ok(vni)
}

/// `--port`: a UDP port other than 0.
fn parse_port(s: &str) -> std::result::Result<u16, String> {
    s.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?} is not a UDP port (1..=65535)"))
}

/// `--masquerade`: 1/true/yes/on or 0/false/no/off, any case.
fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true/false)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    /// The variable that marks a child process of [`in_env`]: the case it runs.
    const CASE: &str = "META_CNI_AGENT_CONFIG_TEST_CASE";

    /// Runs `body` in a child process of this test binary (the test `test` again, alone)
    /// whose environment is exactly `env`: clap reads the variables from the process
    /// environment, the caller's must not leak in, and changing this process's environment
    /// would race with the other test threads. In that child, `body` of the matching
    /// `case` runs; the parent checks that it ran and passed.
    fn in_env(test: &str, case: &str, env: &[(&str, &str)], body: impl FnOnce()) {
        let id = format!("{test}/{case}");
        match std::env::var(CASE) {
            Ok(c) if c == id => body(),
            Ok(_) => {} // the child of another case of the same test
            Err(_) => {
                let module = module_path!().split_once("::").expect("crate::module").1;
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args([&format!("{module}::{test}"), "--exact", "--test-threads=1"])
                    .env_clear()
                    .envs(env.iter().copied())
                    .env(CASE, &id)
                    .output()
                    .expect("run the test binary");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && stdout.contains("test result: ok. 1 passed"),
                    "{id} in a child process:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// [`parse`] of `args` after the program name.
    fn run(args: &[&str]) -> Result<AgentConfig> {
        parse(std::iter::once("meta-cni-agent").chain(args.iter().copied()))
    }

    /// The error of `run(args)`, with its kind and exit code when clap refused it.
    fn refused(args: &[&str]) -> (String, Option<ErrorKind>, u8) {
        let e = run(args).unwrap_err();
        let kind = match &e {
            Error::Cli(c) => Some(c.kind()),
            _ => None,
        };
        (e.to_string(), kind, e.exit_code())
    }

    const BASE: &[(&str, &str)] = &[
        ("NODE_NAME", "n"),
        ("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8"),
    ];

    #[test]
    fn defaults_from_env() {
        let env = [
            ("NODE_NAME", "n1"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.244.3.0/16"),
        ];
        in_env("defaults_from_env", "env", &env, || {
            let c = run(&[]).unwrap();
            assert_eq!(c.node_name, "n1");
            assert_eq!(c.mode, Mode::Kube { kubeconfig: None });
            assert_eq!(c.cluster_cidr.to_string(), "10.244.0.0/16");
            assert_eq!((c.vni, c.port, c.device.as_str()), (1, 8472, "meta.1"));
            assert_eq!((c.underlay_iface, c.underlay_ip), (None, None));
            assert_eq!(c.subnet_file, PathBuf::from("/run/meta-cni/subnet.env"));
            assert_eq!(c.segment_state_dir, PathBuf::from("/run/meta-cni/vxlan"));
            assert_eq!(
                c.firewall_lock,
                PathBuf::from("/run/meta-cni/firewall.lock")
            );
            assert_eq!(c.socket, PathBuf::from("/run/meta-cni/agent.sock"));
            assert_eq!(c.spool_dir, PathBuf::from("/run/meta-cni/spool"));
            assert_eq!(
                c.metrics_bind_address,
                Some("127.0.0.1:9191".parse().unwrap())
            );
            assert!(c.masquerade);
            assert_eq!(c.resync, Duration::from_secs(60));
            assert_eq!(c.debounce, Duration::from_millis(100));
            assert_eq!(c.poll, Duration::from_secs(1));
            assert_eq!(c.log_level, "info");
            assert_eq!(c.ipam_reconcile_interval, Duration::from_secs(60));
            assert_eq!(c.ipam_min_age, Duration::from_secs(60));
            assert_eq!(
                c.ipam_data_dirs,
                vec![PathBuf::from("/var/lib/cni/meta-ipam")]
            );
        });
    }

    #[test]
    fn every_setting_from_env() {
        let env = [
            ("NODE_NAME", "n1"),
            ("META_CNI_AGENT_MODE", "local"),
            ("META_CNI_AGENT_NODES_FILE", "/tmp/nodes.json"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.244.0.0/16"),
            ("META_CNI_AGENT_VNI", "9"),
            ("META_CNI_AGENT_PORT", "4789"),
            ("META_CNI_AGENT_DEVICE", "ovl9"),
            ("META_CNI_AGENT_UNDERLAY_IFACE", "ul0"),
            ("META_CNI_AGENT_UNDERLAY_IP", "fd00::2"),
            ("META_CNI_AGENT_SUBNET_FILE", "/tmp/subnet.env"),
            ("META_CNI_AGENT_SEGMENT_STATE_DIR", "/tmp/vxlan"),
            ("META_CNI_AGENT_MASQUERADE", "OFF"),
            ("META_CNI_AGENT_FIREWALL_LOCK", "/tmp/fw.lock"),
            ("META_CNI_AGENT_SOCKET", "/tmp/agent.sock"),
            ("META_CNI_AGENT_SPOOL_DIR", "/tmp/spool"),
            ("META_CNI_AGENT_METRICS_BIND_ADDRESS", "0"),
            ("META_CNI_AGENT_RESYNC", "0"),
            ("META_CNI_AGENT_DEBOUNCE", "1.5s"),
            ("META_CNI_AGENT_POLL", "20ms"),
            ("META_CNI_AGENT_LOG", "debug"),
            ("META_CNI_AGENT_IPAM_RECONCILE_INTERVAL", "0"),
            ("META_CNI_AGENT_IPAM_MIN_AGE", "5s"),
            ("META_CNI_AGENT_IPAM_DATA_DIR", "/tmp/ipam-a,/tmp/ipam-b"),
        ];
        in_env("every_setting_from_env", "env", &env, || {
            let c = run(&[]).unwrap();
            let want = AgentConfig {
                node_name: "n1".into(),
                mode: Mode::Local {
                    nodes_file: "/tmp/nodes.json".into(),
                },
                cluster_cidr: "10.244.0.0/16".parse().unwrap(),
                vni: 9,
                port: 4789,
                device: "ovl9".into(),
                underlay_iface: Some("ul0".into()),
                underlay_ip: Some("fd00::2".parse().unwrap()),
                subnet_file: "/tmp/subnet.env".into(),
                segment_state_dir: "/tmp/vxlan".into(),
                masquerade: false,
                firewall_lock: "/tmp/fw.lock".into(),
                socket: "/tmp/agent.sock".into(),
                hotplug_conf: None,
                spool_dir: "/tmp/spool".into(),
                metrics_bind_address: None,
                resync: Duration::ZERO,
                debounce: Duration::from_millis(1500),
                poll: Duration::from_millis(20),
                log_level: "debug".into(),
                ipam_reconcile_interval: Duration::ZERO,
                ipam_min_age: Duration::from_secs(5),
                ipam_data_dirs: vec!["/tmp/ipam-a".into(), "/tmp/ipam-b".into()],
            };
            assert_eq!(c, want);
        });
        let kube = [
            ("NODE_NAME", "n1"),
            ("META_CNI_AGENT_MODE", "kubernetes"),
            ("KUBECONFIG", "/etc/kube.conf"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.244.0.0/16"),
        ];
        in_env("every_setting_from_env", "kubeconfig", &kube, || {
            let c = run(&[]).unwrap();
            assert_eq!(
                c.mode,
                Mode::Kube {
                    kubeconfig: Some("/etc/kube.conf".into())
                }
            );
        });
    }

    #[test]
    fn flags_win_over_env() {
        let env = [
            ("NODE_NAME", "n1"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8"),
            ("META_CNI_AGENT_MASQUERADE", "true"),
            ("META_CNI_AGENT_VNI", "3"),
        ];
        in_env("flags_win_over_env", "env", &env, || {
            let c = run(&[
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
            ])
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
            // The last of --masquerade / --no-masquerade wins, and so does a repeated flag.
            let m = |args: &[&str]| run(args).unwrap().masquerade;
            assert!(!m(&["--masquerade", "yes", "--no-masquerade"]));
            assert!(m(&["--no-masquerade", "--masquerade=1"]));
            assert!(!m(&["--masquerade=on", "--masquerade", "0"]));
            assert!(!m(&[
                "--no-masquerade",
                "--masquerade=1",
                "--no-masquerade"
            ]));
            assert!(m(&["--no-masquerade", "--no-masquerade", "--masquerade=1"]));
            assert_eq!(run(&["--vni", "5", "--vni=6"]).unwrap().vni, 6);
            assert_eq!(run(&[]).unwrap().device, "meta.3");
        });
        // A flag replaces a variable it would refuse; --no-masquerade, another option,
        // does not (clap checks the variable's value then).
        let bad = [
            ("NODE_NAME", "n1"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8"),
            ("META_CNI_AGENT_MASQUERADE", "maybe"),
        ];
        in_env("flags_win_over_env", "bad-env", &bad, || {
            assert!(run(&["--masquerade", "true"]).unwrap().masquerade);
            let (e, kind, code) = refused(&["--no-masquerade"]);
            assert!(e.contains("--masquerade") && e.contains("boolean"), "{e}");
            assert_eq!((kind, code), (Some(ErrorKind::ValueValidation), 2));
        });
    }

    #[test]
    fn empty_variables_are_unset() {
        let env = [
            ("NODE_NAME", "n1"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8"),
            ("KUBECONFIG", ""),
            ("META_CNI_AGENT_VNI", ""),
            ("META_CNI_AGENT_MASQUERADE", ""),
            ("META_CNI_AGENT_RESYNC", ""),
            ("META_CNI_AGENT_DEVICE", ""),
        ];
        in_env("empty_variables_are_unset", "env", &env, || {
            let c = run(&[]).unwrap();
            assert_eq!(c.mode, Mode::Kube { kubeconfig: None });
            assert_eq!((c.vni, c.device.as_str()), (1, "meta.1"));
            assert!(c.masquerade);
            assert_eq!(c.resync, Duration::from_secs(60));
            // still documented
            let help = command().render_long_help().to_string();
            for v in ["KUBECONFIG", "META_CNI_AGENT_VNI", "META_CNI_AGENT_DEVICE"] {
                assert!(help.contains(&format!("[env: {v}]")), "{v}:\n{help}");
            }
        });
        in_env(
            "empty_variables_are_unset",
            "required",
            &[("NODE_NAME", "")],
            || {
                let (e, kind, code) = refused(&["--cluster-cidr=10.0.0.0/8"]);
                assert!(e.contains("node name is required"), "{e}");
                assert_eq!((kind, code), (None, 2));
            },
        );
    }

    #[test]
    fn errors_name_the_option() {
        in_env("errors_name_the_option", "no-node", &BASE[1..], || {
            let (e, kind, code) = refused(&[]);
            assert!(e.contains("NODE_NAME") && e.contains("--node-name"), "{e}");
            assert_eq!((kind, code), (None, 2));
        });
        in_env("errors_name_the_option", "no-cidr", &BASE[..1], || {
            let (e, kind, code) = refused(&[]);
            assert!(e.contains("cluster CIDR is required"), "{e}");
            assert!(e.contains("META_CNI_AGENT_CLUSTER_CIDR"), "{e}");
            assert_eq!((kind, code), (None, 2));
        });
        in_env("errors_name_the_option", "flags", BASE, || {
            let cases: &[(&[&str], &str, Option<ErrorKind>)] = &[
                (&["--vni", "0"], "--vni", Some(ErrorKind::ValueValidation)),
                (
                    &["--vni", "0"],
                    "out of range",
                    Some(ErrorKind::ValueValidation),
                ),
                (&["--vni", "x"], "--vni", Some(ErrorKind::ValueValidation)),
                (
                    &["--vni", "x"],
                    "not a number",
                    Some(ErrorKind::ValueValidation),
                ),
                (
                    &["--vni=16777216"],
                    "out of range",
                    Some(ErrorKind::ValueValidation),
                ),
                (&["--port", "0"], "--port", Some(ErrorKind::ValueValidation)),
                (
                    &["--port", "65536"],
                    "not a UDP port",
                    Some(ErrorKind::ValueValidation),
                ),
                (&["--mode", "x"], "--mode", Some(ErrorKind::InvalidValue)),
                (&["--mode", "local"], "nodes file", None),
                (&["--mode", "local"], "--nodes-file", None),
                (
                    &["--bogus", "1"],
                    "--bogus",
                    Some(ErrorKind::UnknownArgument),
                ),
                (
                    &["stray"],
                    "unexpected argument",
                    Some(ErrorKind::UnknownArgument),
                ),
                (
                    &["--resync", "5x"],
                    "--resync",
                    Some(ErrorKind::ValueValidation),
                ),
                (
                    &["--resync", "5x"],
                    "unknown unit",
                    Some(ErrorKind::ValueValidation),
                ),
                (
                    &["--masquerade", "maybe"],
                    "boolean",
                    Some(ErrorKind::ValueValidation),
                ),
                (
                    &["--underlay-ip", "1.2.3"],
                    "--underlay-ip",
                    Some(ErrorKind::ValueValidation),
                ),
                (
                    &["--cluster-cidr", "10.0.0.0/33"],
                    "--cluster-cidr",
                    Some(ErrorKind::ValueValidation),
                ),
                (&["--vni"], "--vni", Some(ErrorKind::InvalidValue)),
                (
                    &["--vni"],
                    "a value is required",
                    Some(ErrorKind::InvalidValue),
                ),
                (&["--poll", "0"], "--poll", Some(ErrorKind::ValueValidation)),
                (
                    &["--poll", "0"],
                    "greater than 0",
                    Some(ErrorKind::ValueValidation),
                ),
            ];
            for (args, needle, want) in cases {
                let (e, kind, code) = refused(args);
                assert!(e.contains(needle), "{args:?}: {e:?} lacks {needle:?}");
                assert_eq!((kind, code), (*want, 2), "{args:?}: {e}");
            }
        });
        // Values from the environment are checked like flags, and name the flag.
        let bad = [
            ("NODE_NAME", "n"),
            ("META_CNI_AGENT_CLUSTER_CIDR", "10.0.0.0/8"),
            ("META_CNI_AGENT_VNI", "x"),
        ];
        in_env("errors_name_the_option", "env", &bad, || {
            let (e, kind, code) = refused(&[]);
            assert!(e.contains("--vni") && e.contains("not a number"), "{e}");
            assert_eq!((kind, code), (Some(ErrorKind::ValueValidation), 2));
        });
    }

    /// The interface deploy/daemonset.yaml, the tests and the docs use: every flag with
    /// its variable.
    const OPTIONS: &[(&str, Option<&str>)] = &[
        ("node-name", Some("NODE_NAME")),
        ("mode", Some("META_CNI_AGENT_MODE")),
        ("kubeconfig", Some("KUBECONFIG")),
        ("nodes-file", Some("META_CNI_AGENT_NODES_FILE")),
        ("cluster-cidr", Some("META_CNI_AGENT_CLUSTER_CIDR")),
        ("vni", Some("META_CNI_AGENT_VNI")),
        ("port", Some("META_CNI_AGENT_PORT")),
        ("device", Some("META_CNI_AGENT_DEVICE")),
        ("underlay-iface", Some("META_CNI_AGENT_UNDERLAY_IFACE")),
        ("underlay-ip", Some("META_CNI_AGENT_UNDERLAY_IP")),
        ("subnet-file", Some("META_CNI_AGENT_SUBNET_FILE")),
        (
            "segment-state-dir",
            Some("META_CNI_AGENT_SEGMENT_STATE_DIR"),
        ),
        ("masquerade", Some("META_CNI_AGENT_MASQUERADE")),
        ("no-masquerade", None),
        ("firewall-lock", Some("META_CNI_AGENT_FIREWALL_LOCK")),
        ("socket", Some("META_CNI_AGENT_SOCKET")),
        ("hotplug-conf", Some("META_CNI_AGENT_HOTPLUG_CONF")),
        ("spool-dir", Some("META_CNI_AGENT_SPOOL_DIR")),
        (
            "metrics-bind-address",
            Some("META_CNI_AGENT_METRICS_BIND_ADDRESS"),
        ),
        ("resync", Some("META_CNI_AGENT_RESYNC")),
        ("debounce", Some("META_CNI_AGENT_DEBOUNCE")),
        ("poll", Some("META_CNI_AGENT_POLL")),
        ("log-level", Some("META_CNI_AGENT_LOG")),
        (
            "ipam-reconcile-interval",
            Some("META_CNI_AGENT_IPAM_RECONCILE_INTERVAL"),
        ),
        ("ipam-min-age", Some("META_CNI_AGENT_IPAM_MIN_AGE")),
        ("ipam-data-dir", Some("META_CNI_AGENT_IPAM_DATA_DIR")),
    ];

    #[test]
    fn metrics_address_and_spool_dir() {
        in_env("metrics_address_and_spool_dir", "flags", BASE, || {
            let c = run(&["--metrics-bind-address", "", "--socket", "/x/a.sock"]).unwrap();
            assert_eq!(c.metrics_bind_address, None);
            assert_eq!(c.spool_dir, PathBuf::from("/x/spool"));
            let c = run(&["--metrics-bind-address=[::1]:9300"]).unwrap();
            assert_eq!(c.metrics_bind_address, Some("[::1]:9300".parse().unwrap()));
            let (msg, _, code) = refused(&["--metrics-bind-address", "localhost"]);
            assert!(msg.contains("metrics-bind-address") && code == 2, "{msg}");
        });
    }

    #[test]
    fn help_lists_every_option_and_env() {
        in_env("help_lists_every_option_and_env", "env", &[], || {
            command().debug_assert();
            let cmd = command();
            let args: Vec<(String, Option<String>)> = cmd
                .get_arguments()
                .filter_map(|a| {
                    let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                    Some((a.get_long()?.to_string(), env))
                })
                .filter(|(l, _)| l != "help" && l != "version")
                .collect();
            let want: Vec<(String, Option<String>)> = OPTIONS
                .iter()
                .map(|(l, e)| (l.to_string(), e.map(str::to_string)))
                .collect();
            assert_eq!(args, want);
            let help = command().render_long_help().to_string();
            for (flag, env) in OPTIONS {
                assert!(help.contains(&format!("--{flag}")), "{flag}:\n{help}");
                if let Some(env) = env {
                    assert!(help.contains(&format!("[env: {env}]")), "{env}:\n{help}");
                }
            }
            assert!(help.contains("meta-cni.io/vtep-mac"), "{help}");
            assert!(help.contains("[default: 8472]"), "{help}");
            for (args, kind) in [
                (["--help"], ErrorKind::DisplayHelp),
                (["-h"], ErrorKind::DisplayHelp),
                (["--version"], ErrorKind::DisplayVersion),
                (["-V"], ErrorKind::DisplayVersion),
            ] {
                // Help and version come first, whatever else is missing.
                let (out, k, code) = refused(&args);
                assert_eq!((k, code), (Some(kind), 0), "{args:?}: {out}");
            }
            let (v, _, _) = refused(&["--version"]);
            assert_eq!(
                v.trim(),
                format!("meta-cni-agent {}", env!("CARGO_PKG_VERSION"))
            );
        });
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
        assert!(parse_poll("0").is_err());
        assert_eq!(parse_poll("5ms").unwrap(), Duration::from_millis(5));
    }

    #[test]
    fn values() {
        for t in ["1", "true", "TRUE", "yes", "On"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "false", "No", "off"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        assert!(parse_bool("y").is_err());
        assert_eq!(parse_vni("16777215"), Ok(MAX_VNI));
        assert!(parse_vni("-1").is_err());
        assert_eq!(parse_port("65535"), Ok(65535));
        assert!(parse_port("").is_err());
    }
}
