//! The `ipam` section of a `meta-ipam` network: whereabouts' keys (`range`, `range_start`,
//! `range_end`, `exclude`, `gateway`, `ipRanges`, `network_name`,
//! `enable_overlapping_ranges`, `kubernetes.kubeconfig`), host-local's `routes` and `dns`,
//! and ours (`kubeconfig`, `blockSize`, `dataDir`, `nodeName`, `apiTimeoutMs`).
//! whereabouts' operational keys (`log_file`, `log_level`, `reconciler_cron_expression`,
//! leader election, `sleep_for_race`, `configuration_path`, `datastore`, `etcd_*`) are
//! accepted and ignored: they have no meaning here (there is no lease and no cron).

use crate::error::{Error, Result};
use cni_core::{CniArgs, Dns, NetConf, Route};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;

/// Where the node keeps its journal and lock by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/meta-ipam";
/// Default block prefix length for IPv4 (16 addresses per node block).
pub const DEFAULT_BLOCK_V4: u8 = 28;
/// Default block prefix length for IPv6.
pub const DEFAULT_BLOCK_V6: u8 = 120;
/// Default grace period before an empty block is released.
pub const DEFAULT_BLOCK_RELEASE_SECONDS: u64 = 300;
/// Default bound of one API request.
pub const DEFAULT_API_TIMEOUT_MS: u64 = 5000;

/// One address range: the subnet, the first and last assignable address, the excluded
/// subnets and the gateway (never assigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    /// The subnet (network address, prefix length).
    pub subnet: IpNet,
    /// First assignable address.
    pub start: IpAddr,
    /// Last assignable address.
    pub end: IpAddr,
    /// Subnets never assigned.
    pub exclude: Vec<IpNet>,
    /// The gateway: reported in the result, never assigned.
    pub gateway: Option<IpAddr>,
}

impl IpRange {
    /// Whether `ip` may be assigned: inside `[start, end]`, not excluded, not the gateway,
    /// not the subnet's network or broadcast address and (IPv4, as whereabouts) not ending
    /// in `.0`.
    pub fn assignable(&self, ip: IpAddr) -> bool {
        if !self.subnet.contains(&ip) || to_u128(ip) < to_u128(self.start) {
            return false;
        }
        if to_u128(ip) > to_u128(self.end) || Some(ip) == self.gateway {
            return false;
        }
        if self.exclude.iter().any(|e| e.contains(&ip)) {
            return false;
        }
        match ip {
            IpAddr::V4(v4) => {
                ip != self.subnet.network() && ip != self.subnet.broadcast() && v4.octets()[3] != 0
            }
            IpAddr::V6(_) => ip != self.subnet.network(),
        }
    }
}

/// A `meta-ipam` configuration.
#[derive(Debug, Clone)]
pub struct ClusterIpamConfig {
    /// The network name: whereabouts' `network_name`, else the configuration's `name` (for
    /// messages and metrics).
    pub network: String,
    /// whereabouts' `network_name` ("" when unset): the scope of the pools. As whereabouts
    /// names its IPPools, a pool is `<network_name>-<range>`, or `<range>` alone without
    /// it, so every configuration with the same range and `network_name` shares one pool:
    /// two NADs on one LAN with the same range never hand out the same address.
    pub network_name: String,
    /// One range per address family / pool (`range` or `ipRanges`).
    pub ranges: Vec<IpRange>,
    /// whereabouts' `enable_overlapping_ranges` (default true): every address is also
    /// reserved by an `IpReservation` across the ranges of the scope, so *different*
    /// ranges that overlap never hand out one address twice (whereabouts'
    /// OverlappingRangeIPReservation). False: only the pool's own blocks decide.
    pub enable_overlapping_ranges: bool,
    /// Routes for the result (host-local's `routes`).
    pub routes: Vec<Route>,
    /// DNS for the result (host-local's `dns`).
    pub dns: Dns,
    /// The kubeconfig: `kubeconfig`, `kubernetes.kubeconfig`, else `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Prefix length of IPv4 node blocks.
    pub block_v4: u8,
    /// Prefix length of IPv6 node blocks.
    pub block_v6: u8,
    /// This node's journal and lock.
    pub data_dir: PathBuf,
    /// This node's name: `nodeName`, `$NODE_NAME`, else the host name.
    pub node: String,
    /// Bound of one API request.
    pub api_timeout: std::time::Duration,
    /// How long a node's block stays claimed once empty (`blockReleaseSeconds`).
    pub block_release_grace: std::time::Duration,
    /// Addresses asked for (runtimeConfig.ips, args.cni.ips, CNI_ARGS IP=).
    pub requested: Vec<IpAddr>,
    /// NPWG `ipam-claim-reference` (runtimeConfig `ipam-claim-reference` or
    /// args.cni): the IPAMClaim name in the pod's namespace.
    pub claim: Option<String>,
}

const IGNORED_KEYS: &[&str] = &[
    "type",
    "log_file",
    "log_level",
    "reconciler_cron_expression",
    "leader_lease_duration",
    "leader_renew_deadline",
    "leader_retry_period",
    "sleep_for_race",
    "configuration_path",
    "datastore",
    "etcd_host",
    "etcd_username",
    "etcd_password",
    "etcd_key_file",
    "etcd_cert_file",
    "etcd_ca_cert_file",
    "node_slice_size",
];

fn cfg(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

fn str_of<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(cfg(format!("ipam.{k}: expected a string, got {v}"))),
    }
}

fn parse_ip(k: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| cfg(format!("ipam.{k}: {s:?} is not an IP address")))
}

fn parse_net(k: &str, s: &str) -> Result<IpNet> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    // A bare address in `exclude` is that one address.
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(cfg(format!("ipam.{k}: {s:?} is not a CIDR"))),
    }
}

/// The address as a number (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The address `n` of the family of `like`.
pub fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

/// One range of whereabouts' forms: `range` a CIDR (`192.168.2.0/24`), a CIDR with host
/// bits (`192.168.2.225/28`: the address is the first one assigned) or a dash range
/// (`192.168.2.225-192.168.2.230/28`); `range_start` / `range_end` narrow it.
fn parse_range(
    m: &Map<String, Value>,
    key_prefix: &str,
    gateway: Option<IpAddr>,
) -> Result<IpRange> {
    let k = |s: &str| format!("{key_prefix}{s}");
    let raw = str_of(m, "range")?.ok_or_else(|| cfg(format!("ipam.{}: missing", k("range"))))?;
    let (mut start, mut end, subnet) = match raw.split_once('-') {
        Some((a, rest)) => {
            let net = parse_net(&k("range"), rest)?;
            let a = parse_ip(&k("range"), a)?;
            (Some(a), Some(net.addr()), net)
        }
        None => {
            let net: IpNet = raw
                .trim()
                .parse()
                .map_err(|_| cfg(format!("ipam.{}: {raw:?} is not a CIDR", k("range"))))?;
            let host = net.addr() != net.network();
            (host.then_some(net.addr()), None, net)
        }
    };
    let subnet = subnet.trunc();
    if let Some(s) = str_of(m, "range_start")? {
        start = Some(parse_ip(&k("range_start"), s)?);
    }
    if let Some(s) = str_of(m, "range_end")? {
        end = Some(parse_ip(&k("range_end"), s)?);
    }
    let start = start.unwrap_or(subnet.network());
    let end = end.unwrap_or(match subnet {
        IpNet::V4(n) => IpAddr::V4(n.broadcast()),
        IpNet::V6(n) => IpAddr::V6(n.broadcast()),
    });
    for (name, ip) in [("range_start", start), ("range_end", end)] {
        if !subnet.contains(&ip) {
            return Err(cfg(format!(
                "ipam.{}: {ip} is not in range {subnet}",
                k(name)
            )));
        }
    }
    if to_u128(start) > to_u128(end) {
        return Err(cfg(format!(
            "ipam.{}: range_start {start} is after range_end {end}",
            k("range")
        )));
    }
    let exclude = match m.get("exclude") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => parse_net(&k("exclude"), s),
                v => Err(cfg(format!("ipam.{}: {v} is not a string", k("exclude")))),
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(cfg(format!(
                "ipam.{}: expected a list, got {v}",
                k("exclude")
            )));
        }
    };
    let gateway = gateway.filter(|g| subnet.contains(g));
    Ok(IpRange {
        subnet,
        start,
        end,
        exclude,
        gateway,
    })
}

fn block_len(m: &Map<String, Value>, k: &str, default: u8, max: u8) -> Result<u8> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v as u8 as u64 == v && (v as u8) <= max && v >= 1 => Ok(v as u8),
            _ => Err(cfg(format!(
                "ipam.{k}: {n} is not a prefix length in 1..={max}"
            ))),
        },
        Some(v) => Err(cfg(format!("ipam.{k}: expected a prefix length, got {v}"))),
    }
}

impl ClusterIpamConfig {
    /// Parses the configuration's `ipam` section and the requested addresses / claim of
    /// the invocation (`runtimeConfig`, `args.cni`, `CNI_ARGS`).
    pub fn from_conf(conf: &NetConf, args: &CniArgs) -> Result<ClusterIpamConfig> {
        let m = conf
            .ipam()
            .ok_or_else(|| cfg("the configuration has no \"ipam\" section"))?;
        Self::from_ipam(conf.name(), m, conf, args)
    }

    fn from_ipam(
        name: &str,
        m: &Map<String, Value>,
        conf: &NetConf,
        args: &CniArgs,
    ) -> Result<ClusterIpamConfig> {
        const OURS: &[&str] = &[
            "range",
            "range_start",
            "range_end",
            "exclude",
            "gateway",
            "ipRanges",
            "network_name",
            "enable_overlapping_ranges",
            "routes",
            "dns",
            "kubeconfig",
            "kubernetes",
            "blockSize",
            "blockSizeV6",
            "dataDir",
            "nodeName",
            "apiTimeoutMs",
            "blockReleaseSeconds",
        ];
        for k in m.keys() {
            if !OURS.contains(&k.as_str()) && !IGNORED_KEYS.contains(&k.as_str()) {
                return Err(cfg(format!("ipam.{k}: unknown key for meta-ipam")));
            }
        }
        let gateway = str_of(m, "gateway")?
            .map(|g| parse_ip("gateway", g))
            .transpose()?;
        let mut ranges = Vec::new();
        if m.get("range").is_some_and(|v| !v.is_null()) {
            ranges.push(parse_range(m, "", gateway)?);
        }
        match m.get("ipRanges") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for (i, r) in a.iter().enumerate() {
                    let Value::Object(r) = r else {
                        return Err(cfg(format!("ipam.ipRanges[{i}]: expected an object")));
                    };
                    ranges.push(parse_range(r, &format!("ipRanges[{i}]."), gateway)?);
                }
            }
            Some(v) => return Err(cfg(format!("ipam.ipRanges: expected a list, got {v}"))),
        }
        if ranges.is_empty() {
            return Err(cfg(
                "ipam: no range: set \"range\" (e.g. \"10.1.0.0/22\") or \"ipRanges\"",
            ));
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.subnet.contains(&b.subnet.network()) || b.subnet.contains(&a.subnet.network())
                {
                    return Err(cfg(format!(
                        "ipam: ranges {} and {} overlap",
                        a.subnet, b.subnet
                    )));
                }
            }
        }
        let network_name = str_of(m, "network_name")?.unwrap_or_default().to_string();
        let network = if network_name.is_empty() {
            name.to_string()
        } else {
            network_name.clone()
        };
        let enable_overlapping_ranges = match m.get("enable_overlapping_ranges") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(cfg(format!(
                    "ipam.enable_overlapping_ranges: expected a boolean, got {v}"
                )));
            }
        };
        let routes = match m.get("routes") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| cfg(format!("ipam.routes: {e}")))?
            }
        };
        let dns = match m.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| cfg(format!("ipam.dns: {e}")))?
            }
        };
        let kubeconfig = match str_of(m, "kubeconfig")? {
            Some(k) => Some(PathBuf::from(k)),
            None => match m.get("kubernetes") {
                Some(Value::Object(k)) => str_of(k, "kubeconfig")?.map(PathBuf::from),
                None | Some(Value::Null) => None,
                Some(v) => {
                    return Err(cfg(format!("ipam.kubernetes: expected an object, got {v}")));
                }
            },
        }
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from));
        let data_dir = str_of(m, "dataDir")?
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let node = match str_of(m, "nodeName")? {
            Some(n) => n.to_string(),
            None => match std::env::var("NODE_NAME") {
                Ok(n) if !n.is_empty() => n,
                _ => nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .ok_or_else(|| cfg("no node name: set ipam.nodeName or NODE_NAME"))?,
            },
        };
        let api_timeout = match m.get("apiTimeoutMs") {
            None | Some(Value::Null) => DEFAULT_API_TIMEOUT_MS,
            Some(v) => v
                .as_u64()
                .filter(|v| *v > 0)
                .ok_or_else(|| cfg(format!("ipam.apiTimeoutMs: {v} is not a positive number")))?,
        };
        let grace = match m.get("blockReleaseSeconds") {
            None | Some(Value::Null) => DEFAULT_BLOCK_RELEASE_SECONDS,
            Some(v) => v.as_u64().ok_or_else(|| {
                cfg(format!(
                    "ipam.blockReleaseSeconds: {v} is not a number of seconds"
                ))
            })?,
        };
        let requested = requested_ips(conf, args)?;
        let claim = claim_ref(conf)?;
        if claim.is_some() && !requested.is_empty() {
            return Err(cfg(
                "ipam-claim-reference and ips are mutually exclusive: an IPAMClaim keeps its own addresses; drop one of them",
            ));
        }
        for ip in &requested {
            if !ranges.iter().any(|r| r.subnet.contains(ip)) {
                return Err(cfg(format!(
                    "requested IP {ip} is in none of the ranges of network {network}"
                )));
            }
        }
        Ok(ClusterIpamConfig {
            network,
            network_name,
            ranges,
            enable_overlapping_ranges,
            routes,
            dns,
            kubeconfig,
            block_v4: block_len(m, "blockSize", DEFAULT_BLOCK_V4, 32)?,
            block_v6: block_len(m, "blockSizeV6", DEFAULT_BLOCK_V6, 128)?,
            data_dir,
            node,
            api_timeout: std::time::Duration::from_millis(api_timeout),
            block_release_grace: std::time::Duration::from_secs(grace),
            requested,
            claim,
        })
    }

    /// A configuration that names only a data directory and a node: what syncing a journal
    /// needs (no ranges, no network).
    pub fn state_only(data_dir: &std::path::Path, node: &str) -> ClusterIpamConfig {
        ClusterIpamConfig {
            network: String::new(),
            network_name: String::new(),
            ranges: Vec::new(),
            enable_overlapping_ranges: true,
            routes: Vec::new(),
            dns: Dns::default(),
            kubeconfig: None,
            block_v4: DEFAULT_BLOCK_V4,
            block_v6: DEFAULT_BLOCK_V6,
            data_dir: data_dir.to_path_buf(),
            node: node.to_string(),
            api_timeout: std::time::Duration::from_millis(DEFAULT_API_TIMEOUT_MS),
            block_release_grace: std::time::Duration::from_secs(DEFAULT_BLOCK_RELEASE_SECONDS),
            requested: Vec::new(),
            claim: None,
        }
    }

    /// The block prefix length for `r` (never shorter than the range's own).
    pub fn block_prefix(&self, r: &IpRange) -> u8 {
        let want = match r.subnet {
            IpNet::V4(_) => self.block_v4,
            IpNet::V6(_) => self.block_v6,
        };
        want.max(r.subnet.prefix_len())
    }
}

/// Requested addresses: `runtimeConfig.ips`, `args.cni.ips` and `CNI_ARGS` `IP=`
/// (comma-separated), each an address or an address with prefix.
fn requested_ips(conf: &NetConf, args: &CniArgs) -> Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |what: &str, s: &str| -> Result<()> {
        let s = s.trim();
        let ip = s
            .parse::<IpAddr>()
            .or_else(|_| s.parse::<IpNet>().map(|n| n.addr()))
            .map_err(|_| cfg(format!("{what}: {s:?} is not an IP address")))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
        Ok(())
    };
    for (what, v) in [
        ("runtimeConfig.ips", conf.runtime_config("ips")),
        ("args.cni.ips", conf.args_cni("ips")),
    ] {
        match v {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for v in a {
                    match v {
                        Value::String(s) => push(what, s)?,
                        v => return Err(cfg(format!("{what}: {v} is not a string"))),
                    }
                }
            }
            Some(v) => return Err(cfg(format!("{what}: expected a list, got {v}"))),
        }
    }
    if let Some(ips) = args.get("IP") {
        for s in ips.split(',').filter(|s| !s.trim().is_empty()) {
            push("CNI_ARGS IP", s)?;
        }
    }
    Ok(out)
}

/// The NPWG `ipam-claim-reference` (runtimeConfig, as Multus passes it, or args.cni).
fn claim_ref(conf: &NetConf) -> Result<Option<String>> {
    for v in [
        conf.runtime_config("ipam-claim-reference"),
        conf.args_cni("ipam-claim-reference"),
    ] {
        match v {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(v) => {
                return Err(cfg(format!(
                    "ipam-claim-reference: expected an IPAMClaim name, got {v}"
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(ipam: Value, runtime: Value, cni_args: &str) -> Result<ClusterIpamConfig> {
        let conf = NetConf::from_map(
            json!({"cniVersion": "1.0.0", "name": "net1", "type": "macvlan",
                   "ipam": ipam, "runtimeConfig": runtime})
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
        let args = CniArgs::parse(cni_args).unwrap();
        ClusterIpamConfig::from_conf(&conf, &args)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn whereabouts_readme_examples() {
        // README: a range with exclude.
        let c = parse(
            json!({"type": "meta-ipam", "range": "192.168.2.0/24",
                   "exclude": ["192.168.2.0/28", "192.168.2.255/32"], "nodeName": "n"}),
            json!({}),
            "",
        )
        .unwrap();
        let r = &c.ranges[0];
        assert_eq!(r.subnet, "192.168.2.0/24".parse::<IpNet>().unwrap());
        assert!(!r.assignable(ip("192.168.2.15")));
        assert!(r.assignable(ip("192.168.2.16")));
        assert!(!r.assignable(ip("192.168.2.255")));
        assert_eq!(c.network, "net1");
        assert!(c.enable_overlapping_ranges);
        // README: host bits mean the first address, with routes.
        let c = parse(
            json!({"type": "meta-ipam", "range": "192.168.2.225/28", "nodeName": "n",
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
                   "log_file": "/tmp/whereabouts.log", "log_level": "debug",
                   "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"}}),
            json!({}),
            "",
        )
        .unwrap();
        let r = &c.ranges[0];
        assert_eq!(r.subnet, "192.168.2.224/28".parse::<IpNet>().unwrap());
        assert_eq!(r.start, ip("192.168.2.225"));
        assert!(!r.assignable(ip("192.168.2.224")));
        assert!(r.assignable(ip("192.168.2.225")));
        assert!(!r.assignable(ip("192.168.2.239")));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(
            c.kubeconfig.as_deref(),
            Some(std::path::Path::new(
                "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"
            ))
        );
        // Dash form and range_start / range_end.
        let c = parse(
            json!({"range": "192.168.2.225-192.168.2.230/28", "nodeName": "n"}),
            json!({}),
            "",
        )
        .unwrap();
        assert_eq!(
            (c.ranges[0].start, c.ranges[0].end),
            (ip("192.168.2.225"), ip("192.168.2.230"))
        );
        let c = parse(
            json!({"range": "10.0.0.0/24", "range_start": "10.0.0.10", "range_end": "10.0.0.20",
                   "gateway": "10.0.0.1", "network_name": "shared", "nodeName": "n"}),
            json!({}),
            "",
        )
        .unwrap();
        assert_eq!(c.network, "shared");
        assert_eq!(c.ranges[0].gateway, Some(ip("10.0.0.1")));
        assert!(!c.ranges[0].assignable(ip("10.0.0.21")));
    }

    #[test]
    fn dual_stack_ip_ranges() {
        let c = parse(
            json!({"ipRanges": [{"range": "192.168.10.0/24"}, {"range": "abcd::0/64", "exclude": ["abcd::1/128"]}],
                   "enable_overlapping_ranges": false, "nodeName": "n", "blockSize": 26}),
            json!({}),
            "",
        )
        .unwrap();
        assert_eq!(c.ranges.len(), 2);
        assert!(!c.enable_overlapping_ranges);
        assert!(!c.ranges[1].assignable(ip("abcd::1")));
        assert!(c.ranges[1].assignable(ip("abcd::2")));
        assert_eq!(c.block_prefix(&c.ranges[0]), 26);
        assert_eq!(c.block_prefix(&c.ranges[1]), 120);
    }

    #[test]
    fn requested_ips_and_claims() {
        let c = parse(
            json!({"range": "10.0.0.0/24", "nodeName": "n"}),
            json!({"ips": ["10.0.0.7/24"]}),
            "IP=10.0.0.8",
        )
        .unwrap();
        assert_eq!(c.requested, vec![ip("10.0.0.7"), ip("10.0.0.8")]);
        let e = parse(
            json!({"range": "10.0.0.0/24", "nodeName": "n"}),
            json!({"ips": ["10.9.0.7"]}),
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("none of the ranges"), "{e}");
        let c = parse(
            json!({"range": "10.0.0.0/24", "nodeName": "n"}),
            json!({"ipam-claim-reference": "db-0"}),
            "",
        )
        .unwrap();
        assert_eq!(c.claim.as_deref(), Some("db-0"));
        let e = parse(
            json!({"range": "10.0.0.0/24", "nodeName": "n"}),
            json!({"ipam-claim-reference": "db-0", "ips": ["10.0.0.7"]}),
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("mutually exclusive"), "{e}");
    }

    #[test]
    fn bad_input_is_refused() {
        for (ipam, want) in [
            (json!({"nodeName": "n"}), "no range"),
            (json!({"range": "nonsense", "nodeName": "n"}), "not a CIDR"),
            (
                json!({"range": "10.0.0.0/24", "range_start": "10.0.1.1", "nodeName": "n"}),
                "not in range",
            ),
            (
                json!({"range": "10.0.0.0/24", "range_start": "10.0.0.9", "range_end": "10.0.0.2", "nodeName": "n"}),
                "after",
            ),
            (
                json!({"range": "10.0.0.0/24", "bogus": 1, "nodeName": "n"}),
                "unknown key",
            ),
            (
                json!({"range": "10.0.0.0/24", "blockSize": 40, "nodeName": "n"}),
                "prefix length",
            ),
            (
                json!({"ipRanges": [{"range": "10.0.0.0/24"}, {"range": "10.0.0.128/25"}], "nodeName": "n"}),
                "overlap",
            ),
            (
                json!({"range": "10.0.0.0/24", "exclude": "10.0.0.1", "nodeName": "n"}),
                "expected a list",
            ),
        ] {
            let e = parse(ipam.clone(), json!({}), "").unwrap_err();
            assert!(e.to_string().contains(want), "{ipam}: {e}");
        }
    }
}
