//! host-local configuration: parsing and validation equivalent to the reference's
//! `LoadIPAMConfig` + `Canonicalize`, with errors (code 7) that name the field and value.

use crate::ip::{canon, from_u128, next_ip, opt_ip, opt_str, opt_str_list, parse_routes, to_u128};
use cni_core::{CniArgs, Error, NetConf, Result, Route};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// The reference's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// One range of a range set, canonicalized: every field is filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address, no host bits).
    pub subnet: IpNet,
    /// First allocatable address, inclusive (default: network + 1).
    pub range_start: IpAddr,
    /// Last allocatable address, inclusive (default: broadcast - 1 for IPv4, the last
    /// address for IPv6).
    pub range_end: IpAddr,
    /// The gateway handed out with addresses of this range and never allocated
    /// (default: network + 1).
    pub gateway: IpAddr,
}

impl Range {
    /// Whether `ip` is an address of this range (same family, inside the subnet, between
    /// start and end inclusive). The gateway is "contained" too; allocation skips it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canon(ip);
        ip.is_ipv4() == self.subnet.addr().is_ipv4()
            && self.subnet.contains(&ip)
            && to_u128(ip) >= to_u128(self.range_start)
            && to_u128(ip) <= to_u128(self.range_end)
    }

    /// The reference's `Range.Overlaps`: same family and an endpoint of one lies in the other.
    pub fn overlaps(&self, o: &Range) -> bool {
        self.subnet.addr().is_ipv4() == o.subnet.addr().is_ipv4()
            && (self.contains(o.range_start)
                || self.contains(o.range_end)
                || o.contains(self.range_start)
                || o.contains(self.range_end))
    }

    /// How many addresses the allocator may hand out from this range (the gateway excluded).
    pub fn capacity(&self) -> u128 {
        let n = to_u128(self.range_end)
            .saturating_sub(to_u128(self.range_start))
            .saturating_add(1);
        if self.contains(self.gateway) {
            n.saturating_sub(1)
        } else {
            n
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range_start, self.range_end)
    }
}

/// A range set: non-overlapping ranges of one family; one address is allocated per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// The range holding `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }
    /// Whether a range of the set holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }
    /// Whether any range of this set overlaps one of `o`.
    pub fn overlaps(&self, o: &RangeSet) -> bool {
        self.0.iter().any(|a| o.0.iter().any(|b| a.overlaps(b)))
    }
    /// Whether this is an IPv4 set.
    pub fn is_ipv4(&self) -> bool {
        self.0.first().is_some_and(|r| r.subnet.addr().is_ipv4())
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Where a requested address came from (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    /// `CNI_ARGS` `IP=`.
    CniArgs,
    /// `args.cni.ips` in the network configuration.
    ArgsCni,
    /// `runtimeConfig.ips` (the `ips` capability).
    RuntimeConfig,
}

impl fmt::Display for IpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpSource::CniArgs => "CNI_ARGS IP",
            IpSource::ArgsCni => "args.cni.ips",
            IpSource::RuntimeConfig => "runtimeConfig.ips",
        })
    }
}

/// A validated host-local configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLocalConfig {
    /// The network name (the configuration's `name`): the directory under `data_dir`.
    pub name: String,
    /// Range sets in allocation order: `runtimeConfig.ipRanges`, then the legacy single
    /// range (`ipam.subnet` ...), then `ipam.ranges`.
    pub ranges: Vec<RangeSet>,
    /// `ipam.routes`, put in the result as they are.
    pub routes: Vec<Route>,
    /// `ipam.dataDir` (default [`DEFAULT_DATA_DIR`]).
    pub data_dir: PathBuf,
    /// `ipam.resolvConf`: a resolv.conf whose settings become the result's `dns`.
    pub resolv_conf: Option<PathBuf>,
    /// Requested addresses with their origin: `CNI_ARGS` `IP=` (comma-separated), then
    /// `args.cni.ips`, then `runtimeConfig.ips`; duplicates removed.
    pub requested_ips: Vec<(IpAddr, IpSource)>,
}

impl HostLocalConfig {
    /// Parses and validates the host-local configuration of `conf` (its `ipam` object),
    /// with the requested addresses of `args` (`IP=`), `args.cni.ips` and
    /// `runtimeConfig.ips`. Errors are code 7 (code 4 for a malformed `CNI_ARGS` `IP`) and
    /// name the offending field and value. Unknown `CNI_ARGS` keys are not checked here
    /// (the calling plugin knows which keys it accepts).
    pub fn from_conf(conf: &NetConf, args: &CniArgs) -> Result<HostLocalConfig> {
        let ipam = match conf.get("ipam") {
            None => return Err(Error::config("IPAM config missing 'ipam' key")),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(Error::config(format!(
                    "ipam must be an object, got {other}"
                )));
            }
        };

        // Requested addresses.
        let mut requested: Vec<(IpAddr, IpSource)> = Vec::new();
        let mut push = |ip: IpAddr, src: IpSource| {
            if !requested.iter().any(|(i, _)| *i == ip) {
                requested.push((ip, src));
            }
        };
        if let Some(raw) = args.get("IP") {
            for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let ip = crate::ip::parse_ip_or_cidr(item).ok_or_else(|| {
                    Error::env(format!("CNI_ARGS IP: invalid IP address {item:?}"))
                })?;
                push(ip, IpSource::CniArgs);
            }
        }
        for (src, v, path) in [
            (IpSource::ArgsCni, conf.args_cni("ips"), "args.cni.ips"),
            (
                IpSource::RuntimeConfig,
                conf.runtime_config("ips"),
                "runtimeConfig.ips",
            ),
        ] {
            for (i, s) in opt_str_list(v, path)?.iter().enumerate() {
                let ip = crate::ip::parse_ip_or_cidr(s).ok_or_else(|| {
                    Error::config(format!("{path}[{i}]: invalid IP address {s:?}"))
                })?;
                push(ip, src);
            }
        }

        // Range sets: runtimeConfig.ipRanges, then the legacy range, then ipam.ranges.
        let mut ranges = Vec::new();
        if let Some(v) = conf.runtime_config("ipRanges") {
            ranges.extend(parse_range_sets(v, "runtimeConfig.ipRanges")?);
        }
        if opt_str(ipam, "subnet", "ipam")?.is_some() {
            ranges.push(RangeSet(vec![parse_range(ipam, "ipam")?]));
        }
        if let Some(v) = ipam.get("ranges").filter(|v| !v.is_null()) {
            ranges.extend(parse_range_sets(v, "ipam.ranges")?);
        }
        if ranges.is_empty() {
            return Err(Error::config(
                "ipam: no IP ranges specified (set ipam.ranges or ipam.subnet)",
            ));
        }
        for i in 0..ranges.len() {
            for j in i + 1..ranges.len() {
                if ranges[i].overlaps(&ranges[j]) {
                    return Err(Error::config(format!(
                        "range set {i} ({}) overlaps with range set {j} ({})",
                        ranges[i], ranges[j]
                    )));
                }
            }
        }

        let data_dir = data_dir_of(ipam)?;
        let resolv_conf = opt_str(ipam, "resolvConf", "ipam")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let routes = parse_routes(ipam.get("routes"), "ipam.routes")?;

        Ok(HostLocalConfig {
            name: conf.name().to_string(),
            ranges,
            routes,
            data_dir,
            resolv_conf,
            requested_ips: requested,
        })
    }

    /// The network's state directory, `<dataDir>/<name>`.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }

    /// Checks the requested addresses against the range sets, as ADD needs them: each in
    /// some range set, not a gateway, at most one per range set (code 7 naming the
    /// address and where it came from). Returns, per range set, the requested address.
    pub fn requested_per_set(&self) -> Result<Vec<Option<IpAddr>>> {
        let (per, left_over) = self.requested_split();
        if let Some(why) = left_over.into_iter().next() {
            return Err(Error::config(why));
        }
        for (idx, ip) in per.iter().enumerate() {
            if let Some(ip) = ip
                && let Some(r) = self.ranges[idx].range_for(*ip)
                && *ip == r.gateway
            {
                let src = self.source_of(*ip);
                return Err(Error::config(format!(
                    "requested IP {ip} ({src}) is the gateway of range {r}"
                )));
            }
        }
        Ok(per)
    }

    fn source_of(&self, ip: IpAddr) -> IpSource {
        self.requested_ips
            .iter()
            .find(|(i, _)| *i == ip)
            .map_or(IpSource::CniArgs, |(_, s)| *s)
    }

    /// The requested addresses as the reference host-local assigns them at ADD: per range
    /// set, the first requested address it contains; and, as the reasons ADD fails after
    /// allocating every range set, the ones left over (in no range set, or a second one
    /// for a set).
    pub fn requested_split(&self) -> (Vec<Option<IpAddr>>, Vec<String>) {
        let mut per: Vec<Option<IpAddr>> = vec![None; self.ranges.len()];
        let mut left_over = Vec::new();
        for (ip, src) in &self.requested_ips {
            let Some(idx) = self.ranges.iter().position(|s| s.contains(*ip)) else {
                let all: Vec<String> = self.ranges.iter().map(|s| s.to_string()).collect();
                left_over.push(format!(
                    "requested IP {ip} ({src}) is not in any range set ({})",
                    all.join("; ")
                ));
                continue;
            };
            match per[idx] {
                Some(prev) => left_over.push(format!(
                    "requested IPs {prev} and {ip} ({src}) are both in range set {idx} ({}); \
                     only one address is allocated per range set",
                    self.ranges[idx]
                )),
                None => per[idx] = Some(*ip),
            }
        }
        (per, left_over)
    }
}

/// `ipam.dataDir`, [`DEFAULT_DATA_DIR`] when unset or empty.
pub(crate) fn data_dir_of(ipam: &Map<String, Value>) -> Result<PathBuf> {
    Ok(match opt_str(ipam, "dataDir", "ipam")? {
        None | Some("") => PathBuf::from(DEFAULT_DATA_DIR),
        Some(d) => PathBuf::from(d),
    })
}

fn parse_range_sets(v: &Value, path: &str) -> Result<Vec<RangeSet>> {
    let arr = v.as_array().ok_or_else(|| {
        Error::config(format!(
            "{path} must be a list of range sets (lists of ranges), got {v}"
        ))
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, set)| parse_range_set(set, &format!("{path}[{i}]")))
        .collect()
}

fn parse_range_set(v: &Value, path: &str) -> Result<RangeSet> {
    let arr = v
        .as_array()
        .ok_or_else(|| Error::config(format!("{path} must be a list of ranges, got {v}")))?;
    if arr.is_empty() {
        return Err(Error::config(format!("{path}: empty range set")));
    }
    let mut set = Vec::with_capacity(arr.len());
    for (j, r) in arr.iter().enumerate() {
        let rp = format!("{path}[{j}]");
        let obj = r
            .as_object()
            .ok_or_else(|| Error::config(format!("{rp} must be an object, got {r}")))?;
        let range = parse_range(obj, &rp)?;
        if let Some(first) = set.first() {
            let first: &Range = first;
            if first.subnet.addr().is_ipv4() != range.subnet.addr().is_ipv4() {
                return Err(Error::config(format!(
                    "{path}: mixed address families in one range set ({} and {})",
                    first.subnet, range.subnet
                )));
            }
        }
        set.push(range);
    }
    for a in 0..set.len() {
        for b in a + 1..set.len() {
            if set[a].overlaps(&set[b]) {
                return Err(Error::config(format!(
                    "{path}: ranges {a} ({} in {}) and {b} ({} in {}) overlap",
                    set[a], set[a].subnet, set[b], set[b].subnet
                )));
            }
        }
    }
    Ok(RangeSet(set))
}

/// Parses and canonicalizes one range object (`path` names it in errors).
fn parse_range(obj: &Map<String, Value>, path: &str) -> Result<Range> {
    let Some(s) = opt_str(obj, "subnet", path)? else {
        return Err(Error::config(format!("{path}.subnet is missing")));
    };
    let given: IpNet = s
        .trim()
        .parse()
        .map_err(|_| Error::config(format!("{path}.subnet: invalid CIDR {s:?}")))?;
    if let IpAddr::V6(v6) = given.addr()
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(Error::config(format!(
            "{path}.subnet {s:?}: IPv4-mapped IPv6 subnets are not supported; write the IPv4 subnet"
        )));
    }
    let (min_host_bits, fam) = if given.addr().is_ipv4() {
        (2, "/30 for IPv4")
    } else {
        (2, "/126 for IPv6")
    };
    if given.prefix_len() > given.max_prefix_len() - min_host_bits {
        return Err(Error::config(format!(
            "{path}.subnet: network {given} too small to allocate from (at most {fam})"
        )));
    }
    let subnet = given.trunc();
    if subnet.addr() != given.addr() {
        return Err(Error::config(format!(
            "{path}.subnet {s:?} has host bits set; for a /{} the network address is {}",
            given.prefix_len(),
            subnet.addr()
        )));
    }
    let net_addr = subnet.network();
    let same_family_in = |ip: IpAddr| ip.is_ipv4() == net_addr.is_ipv4() && subnet.contains(&ip);

    let gateway = match opt_ip(obj, "gateway", path)? {
        None => next_ip(net_addr),
        Some(gw) => {
            if !same_family_in(gw) {
                return Err(Error::config(format!(
                    "{path}.gateway {gw} not in subnet {subnet}"
                )));
            }
            gw
        }
    };
    let range_start = match opt_ip(obj, "rangeStart", path)? {
        None => next_ip(net_addr),
        Some(ip) => {
            if !same_family_in(ip) {
                return Err(Error::config(format!(
                    "{path}.rangeStart {ip} not in subnet {subnet}"
                )));
            }
            ip
        }
    };
    let range_end = match opt_ip(obj, "rangeEnd", path)? {
        None => {
            let last = to_u128(subnet.broadcast());
            if net_addr.is_ipv4() {
                from_u128(last - 1, net_addr)
            } else {
                from_u128(last, net_addr)
            }
        }
        Some(ip) => {
            if !same_family_in(ip) {
                return Err(Error::config(format!(
                    "{path}.rangeEnd {ip} not in subnet {subnet}"
                )));
            }
            ip
        }
    };
    if to_u128(range_start) > to_u128(range_end) {
        return Err(Error::config(format!(
            "{path}.rangeStart {range_start} is after {path}.rangeEnd {range_end}"
        )));
    }
    Ok(Range {
        subnet,
        range_start,
        range_end,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(ipam: Value) -> NetConf {
        let j = json!({"cniVersion": "1.0.0", "name": "net", "type": "x", "ipam": ipam});
        NetConf::parse(j.to_string().as_bytes()).unwrap()
    }

    fn parse(ipam: Value) -> Result<HostLocalConfig> {
        HostLocalConfig::from_conf(&conf(ipam), &CniArgs::default())
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"type": "host-local", "subnet": "10.1.2.0/24"})).unwrap();
        assert_eq!(c.name, "net");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let r = &c.ranges[0].0[0];
        assert_eq!(r.to_string(), "10.1.2.1-10.1.2.254");
        assert_eq!(r.gateway.to_string(), "10.1.2.1");
        assert_eq!(r.capacity(), 253);
        let c = parse(json!({"ranges": [[{"subnet": "fd00::/120"}]]})).unwrap();
        let r = &c.ranges[0].0[0];
        assert_eq!(r.to_string(), "fd00::1-fd00::ff");
        assert_eq!(r.capacity(), 254);
    }

    #[test]
    fn order_of_sources() {
        let j = json!({"cniVersion": "1.0.0", "name": "net",
            "ipam": {"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.2.0.0/24"}]],
                     "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "x": 1}],
                     "dataDir": "/tmp/x", "resolvConf": "/etc/r"},
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24"}]], "ips": ["10.1.0.9/24"]},
            "args": {"cni": {"ips": ["10.2.0.9"]}}});
        let nc = NetConf::parse(j.to_string().as_bytes()).unwrap();
        let args = CniArgs::parse("IP=10.3.0.7, 10.2.0.9").unwrap();
        let c = HostLocalConfig::from_conf(&nc, &args).unwrap();
        let subnets: Vec<String> = c.ranges.iter().map(|s| s.0[0].subnet.to_string()).collect();
        assert_eq!(subnets, ["10.3.0.0/24", "10.1.0.0/24", "10.2.0.0/24"]);
        let req: Vec<String> = c.requested_ips.iter().map(|(i, _)| i.to_string()).collect();
        assert_eq!(req, ["10.3.0.7", "10.2.0.9", "10.1.0.9"]);
        assert_eq!(c.requested_ips[2].1, IpSource::RuntimeConfig);
        assert!(c.routes[0].extra.is_empty());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.resolv_conf, Some(PathBuf::from("/etc/r")));
        let per = c.requested_per_set().unwrap();
        assert_eq!(per.iter().flatten().count(), 3);
    }

    /// Every validation error: (ipam, code, substrings the message must contain).
    #[test]
    fn validation_fixture() {
        let cases: Vec<(Value, u32, &[&str])> = vec![
            (json!({}), 7, &["no IP ranges"]),
            (json!({"subnet": "garbage"}), 7, &["ipam.subnet", "garbage"]),
            (json!({"subnet": 5}), 7, &["ipam.subnet", "string"]),
            (
                json!({"subnet": "10.1.2.1/24"}),
                7,
                &["ipam.subnet", "host bits", "10.1.2.0"],
            ),
            (
                json!({"subnet": "10.1.2.0/31"}),
                7,
                &["ipam.subnet", "10.1.2.0/31", "too small"],
            ),
            (json!({"subnet": "10.1.2.0/32"}), 7, &["too small"]),
            (
                json!({"subnet": "fd00::/127"}),
                7,
                &["fd00::/127", "too small"],
            ),
            (json!({"subnet": "fd00::/128"}), 7, &["too small"]),
            (
                json!({"subnet": "10.1.2.0/24", "gateway": "10.1.3.1"}),
                7,
                &["ipam.gateway", "10.1.3.1", "10.1.2.0/24"],
            ),
            (
                json!({"subnet": "10.1.2.0/24", "gateway": "fd::1"}),
                7,
                &["ipam.gateway", "fd::1"],
            ),
            (
                json!({"subnet": "10.1.2.0/24", "gateway": "x"}),
                7,
                &["ipam.gateway", "\"x\""],
            ),
            (
                json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.3.1"}),
                7,
                &["ipam.rangeStart", "10.1.3.1"],
            ),
            (
                json!({"subnet": "10.1.2.0/24", "rangeEnd": "10.1.3.1"}),
                7,
                &["ipam.rangeEnd", "10.1.3.1"],
            ),
            (
                json!({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.50", "rangeEnd": "10.1.2.40"}),
                7,
                &["rangeStart 10.1.2.50", "rangeEnd 10.1.2.40"],
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "fd::/64"}]]}),
                7,
                &["ipam.ranges[0]", "mixed address families"],
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.2.0/25"}]]}),
                7,
                &["range set 0", "range set 1", "overlaps"],
            ),
            (
                json!({"ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.1.2.0/25"}]]}),
                7,
                &["ipam.ranges[0]", "overlap", "10.1.2.0/25"],
            ),
            (
                json!({"ranges": [[]]}),
                7,
                &["ipam.ranges[0]", "empty range set"],
            ),
            (
                json!({"ranges": [{"subnet": "10.1.2.0/24"}]}),
                7,
                &["ipam.ranges[0]", "list of ranges"],
            ),
            (
                json!({"ranges": [[{"gateway": "10.0.0.1"}]]}),
                7,
                &["ipam.ranges[0][0].subnet", "missing"],
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.0"}]]}),
                7,
                &["ipam.ranges[0][0].rangeEnd", "10.0.1.0"],
            ),
            (
                json!({"subnet": "::ffff:10.0.0.0/120"}),
                7,
                &["IPv4-mapped"],
            ),
            (
                json!({"subnet": "10.1.2.0/24", "routes": [{"dst": "bad"}]}),
                7,
                &["ipam.routes[0]"],
            ),
            (
                json!({"subnet": "10.1.2.0/24", "dataDir": 1}),
                7,
                &["ipam.dataDir"],
            ),
        ];
        for (ipam, code, needles) in cases {
            let e = parse(ipam.clone()).unwrap_err();
            assert_eq!(e.code, code, "{ipam}: {e}");
            for n in needles {
                assert!(e.msg.contains(n), "{ipam}: {:?} lacks {n:?}", e.msg);
            }
        }
        // no ipam key at all
        let nc = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
        let e = HostLocalConfig::from_conf(&nc, &CniArgs::default()).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam"));
    }

    #[test]
    fn requested_ip_errors() {
        let c = conf(json!({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/64"}]]}));
        let bad_arg = CniArgs::parse("IP=nope").unwrap();
        let e = HostLocalConfig::from_conf(&c, &bad_arg).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_ARGS IP") && e.msg.contains("nope"));
        let check = |args: &str| {
            HostLocalConfig::from_conf(&c, &CniArgs::parse(args).unwrap())
                .unwrap()
                .requested_per_set()
        };
        let e = check("IP=10.5.5.5").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("10.5.5.5") && e.msg.contains("CNI_ARGS IP"),
            "{e}"
        );
        let e = check("IP=10.1.2.1").unwrap_err();
        assert!(e.msg.contains("gateway"), "{e}");
        let e = check("IP=10.1.2.5,10.1.2.6").unwrap_err();
        assert!(e.msg.contains("both in range set 0"), "{e}");
        let per = check("IP=fd00::5,10.1.2.5").unwrap();
        assert_eq!(per[0].unwrap().to_string(), "10.1.2.5");
        assert_eq!(per[1].unwrap().to_string(), "fd00::5");
        let j = json!({"cniVersion": "1.0.0", "name": "net", "ipam": {"subnet": "10.1.2.0/24"},
            "runtimeConfig": {"ips": ["zz"]}});
        let e = HostLocalConfig::from_conf(
            &NetConf::parse(j.to_string().as_bytes()).unwrap(),
            &CniArgs::default(),
        )
        .unwrap_err();
        assert!(
            e.msg.contains("runtimeConfig.ips[0]") && e.msg.contains("zz"),
            "{e}"
        );
    }
}
