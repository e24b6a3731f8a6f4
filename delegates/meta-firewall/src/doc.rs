//! Pure builders for the nftables JSON documents and a parser for `nft -j list` output.
//!
//! Layout (see the crate documentation):
//!
//! ```text
//! table inet meta_cni {
//!     chain postrouting {            # type nat hook postrouting priority srcnat (100)
//!         ip daddr 224.0.0.0/4 return comment "meta-cni:base"
//!         ip6 daddr ff00::/8 return comment "meta-cni:base"
//!         goto masq_checks comment "meta-cni:base"
//!     }
//!     chain masq_checks {            # one rule per attachment IP
//!         ip saddr 10.0.0.5 ip daddr != 10.0.0.0/24 masquerade comment "meta-cni:masq:<h>:eth0:<id>"
//!     }
//! }
//! table bridge meta_cni {
//!     chain prerouting {             # type filter hook prerouting priority -300
//!         iifname "veth1" jump mac_<h2> comment "meta-cni:mac:<h>:eth0:<id>"
//!     }
//!     chain mac_<h2> {               # one chain per attachment
//!         ether saddr 02:00:00:00:00:01 return comment "meta-cni:mac:<h>:eth0:<id>"
//!         drop comment "meta-cni:mac:<h>:eth0:<id>"
//!     }
//! }
//! ```
//!
//! `<h>` is the network hash ([`crate::network_hash`]), `<h2>` the hash computed by
//! [`mac_chain_name`].

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::Mac;
use crate::tag::{Tag, fnv1a64};

/// Name of both of our tables (`inet` and `bridge` family).
pub const TABLE: &str = "meta_cni";
/// Family of the masquerade table.
pub const MASQ_FAMILY: &str = "inet";
/// Base chain of the masquerade table.
pub const MASQ_BASE_CHAIN: &str = "postrouting";
/// Regular chain holding the per-attachment masquerade rules.
pub const MASQ_CHAIN: &str = "masq_checks";
/// Priority of the nat postrouting chain (`srcnat`).
pub const MASQ_PRIORITY: i32 = 100;
/// Family of the MAC spoof-check table.
pub const MAC_FAMILY: &str = "bridge";
/// Base chain of the MAC spoof-check table.
pub const MAC_BASE_CHAIN: &str = "prerouting";
/// Priority of the bridge prerouting filter chain (bridge `dstnat`, like the reference plugin).
pub const MAC_PRIORITY: i32 = -300;
/// Prefix of the per-attachment MAC spoof-check chains.
pub const MAC_CHAIN_PREFIX: &str = "mac_";
/// Comment on the rules of our base chains (not an attachment tag).
pub const BASE_COMMENT: &str = "meta-cni:base";

/// Name of the per-attachment MAC spoof-check chain of `container_id`/`ifname` on the
/// network whose [`crate::network_hash`] is `network_hash` (distinct per network, so the
/// same container ID and interface name on two networks never share a chain).
pub fn mac_chain_name(network_hash: &str, container_id: &str, ifname: &str) -> String {
    let key = format!("{network_hash}:{container_id}:{ifname}");
    format!("{MAC_CHAIN_PREFIX}{:016x}", fnv1a64(key.as_bytes()))
}

/// Formats a MAC address as nftables expects it (`aa:bb:cc:dd:ee:ff`).
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn table(family: &str) -> Value {
    json!({"table": {"family": family, "name": TABLE}})
}

fn base_chain(family: &str, name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"chain": {
        "family": family, "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept"
    }})
}

fn chain(family: &str, name: &str) -> Value {
    json!({"chain": {"family": family, "table": TABLE, "name": name}})
}

fn rule(family: &str, chain: &str, expr: Vec<Value>, comment: &str) -> Value {
    json!({"rule": {
        "family": family, "table": TABLE, "chain": chain,
        "expr": expr, "comment": comment
    }})
}

fn add(obj: Value) -> Value {
    json!({ "add": obj })
}

fn flush(obj: Value) -> Value {
    json!({ "flush": obj })
}

fn delete(obj: Value) -> Value {
    json!({ "delete": obj })
}

fn payload_match(op: &str, protocol: &str, field: &str, right: Value) -> Value {
    json!({"match": {
        "op": op,
        "left": {"payload": {"protocol": protocol, "field": field}},
        "right": right
    }})
}

fn prefix(net: &IpNet) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

/// One document holding the commands of all `docs` in order (one transaction), or `None`
/// when there are none.
pub fn merge(docs: Vec<Value>) -> Option<Value> {
    let cmds: Vec<Value> = docs
        .into_iter()
        .filter_map(|mut d| d.get_mut("nftables").map(Value::take))
        .filter_map(|c| match c {
            Value::Array(a) => Some(a),
            _ => None,
        })
        .flatten()
        .collect();
    (!cmds.is_empty()).then(|| document(cmds))
}

/// Wraps commands into a document for `nft -j -f -`.
pub fn document(commands: Vec<Value>) -> Value {
    json!({ "nftables": commands })
}

/// One rule from a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedRule {
    /// Chain the rule lives in.
    pub chain: String,
    /// Kernel handle of the rule.
    pub handle: u64,
    /// Comment, if any.
    pub comment: Option<String>,
    /// Jump/goto target, if the rule has one.
    pub target: Option<String>,
}

/// One chain from a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedChain {
    /// Chain name.
    pub name: String,
    /// Whether it is a base chain (has a hook).
    pub base: bool,
}

/// The content of one of our tables as returned by `nft -j list table <family> meta_cni`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// Chains of the table.
    pub chains: Vec<ListedChain>,
    /// Rules of the table.
    pub rules: Vec<ListedRule>,
}

impl Listing {
    /// Parses `nft -j list table ...` output, keeping only objects of `family`/[`TABLE`].
    pub fn parse(family: &str, text: &str) -> Result<Listing, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let items = v
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| "missing top-level `nftables` array".to_owned())?;
        let mut listing = Listing::default();
        for item in items {
            let ours = |o: &Value| {
                o.get("family").and_then(Value::as_str) == Some(family)
                    && o.get("table").and_then(Value::as_str) == Some(TABLE)
            };
            if let Some(c) = item.get("chain").filter(|c| ours(c)) {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("chain without name: {c}"))?;
                listing.chains.push(ListedChain {
                    name: name.to_owned(),
                    base: c.get("hook").is_some(),
                });
            } else if let Some(r) = item.get("rule").filter(|r| ours(r)) {
                let chain = r
                    .get("chain")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("rule without chain: {r}"))?;
                let handle = r
                    .get("handle")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("rule without handle: {r}"))?;
                let target = r
                    .get("expr")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find_map(|e| {
                        e.get("jump")
                            .or_else(|| e.get("goto"))
                            .and_then(|j| j.get("target"))
                            .and_then(Value::as_str)
                    });
                listing.rules.push(ListedRule {
                    chain: chain.to_owned(),
                    handle,
                    comment: r.get("comment").and_then(Value::as_str).map(str::to_owned),
                    target: target.map(str::to_owned),
                });
            }
        }
        Ok(listing)
    }

    /// All parseable attachment tags in the table.
    pub fn tags(&self) -> BTreeSet<Tag> {
        self.rules
            .iter()
            .filter_map(|r| r.comment.as_deref().and_then(Tag::parse))
            .collect()
    }
}

/// Commands removing every rule of `family` whose tag satisfies `doomed`, and every
/// per-attachment chain holding or targeted by such a rule (flushed, then deleted),
/// together with any rule that still jumps to a deleted chain. Rules inside `keep_chain`
/// are left alone (the caller flushes that chain itself).
pub fn delete_commands(
    family: &str,
    listing: &Listing,
    keep_chain: Option<&str>,
    doomed: impl Fn(&Tag) -> bool,
) -> Vec<Value> {
    let is_doomed = |r: &ListedRule| {
        r.comment
            .as_deref()
            .and_then(Tag::parse)
            .is_some_and(|t| doomed(&t))
    };
    let per_attachment = |name: &str| {
        name.starts_with(MAC_CHAIN_PREFIX)
            && Some(name) != keep_chain
            && listing.chains.iter().any(|c| c.name == name && !c.base)
    };
    let mut chains: BTreeSet<&str> = BTreeSet::new();
    for r in listing.rules.iter().filter(|r| is_doomed(r)) {
        if per_attachment(&r.chain) {
            chains.insert(&r.chain);
        }
        if let Some(t) = r.target.as_deref().filter(|t| per_attachment(t)) {
            chains.insert(t);
        }
    }
    let mut cmds = Vec::new();
    for r in &listing.rules {
        if chains.contains(r.chain.as_str()) || Some(r.chain.as_str()) == keep_chain {
            continue;
        }
        let jumps_to_deleted = r.target.as_deref().is_some_and(|t| chains.contains(t));
        if is_doomed(r) || jumps_to_deleted {
            cmds.push(delete(json!({"rule": {
                "family": family, "table": TABLE, "chain": r.chain, "handle": r.handle
            }})));
        }
    }
    for c in chains {
        cmds.push(flush(chain(family, c)));
        cmds.push(delete(chain(family, c)));
    }
    cmds
}

/// The masquerade setup transaction for `tag` and `ips`, replacing whatever `existing`
/// holds for the same tag (and the base chain's rules, when they are not as they should be).
pub fn masq_setup(tag: &Tag, ips: &[IpNet], existing: Option<&Listing>) -> Value {
    let f = MASQ_FAMILY;
    let mut cmds = vec![
        add(table(f)),
        add(chain(f, MASQ_CHAIN)),
        add(base_chain(
            f,
            MASQ_BASE_CHAIN,
            "nat",
            "postrouting",
            MASQ_PRIORITY,
        )),
    ];
    if let Some(listing) = existing {
        cmds.extend(delete_commands(f, listing, None, |t| t == tag));
    }
    // the base chain's fixed rules are rewritten only when they are not in place
    if !existing.is_some_and(masq_base_in_place) {
        masq_base_rules(&mut cmds);
    }
    let comment = tag.to_string();
    let mut seen = BTreeSet::new();
    for ip in ips {
        if !seen.insert(*ip) {
            continue;
        }
        let proto = match ip {
            IpNet::V4(_) => "ip",
            IpNet::V6(_) => "ip6",
        };
        cmds.push(add(rule(
            f,
            MASQ_CHAIN,
            vec![
                payload_match("==", proto, "saddr", json!(ip.addr().to_string())),
                payload_match("!=", proto, "daddr", prefix(&ip.trunc())),
                json!({"masquerade": null}),
            ],
            &comment,
        )));
    }
    document(cmds)
}

/// Flushes the masquerade base chain and adds its three fixed rules (multicast returns,
/// `goto masq_checks`).
fn masq_base_rules(cmds: &mut Vec<Value>) {
    let f = MASQ_FAMILY;
    cmds.push(flush(chain(f, MASQ_BASE_CHAIN)));
    let v4_multicast: IpNet = IpNet::V4(ipnet::Ipv4Net::new_assert([224, 0, 0, 0].into(), 4));
    let v6_multicast: IpNet = IpNet::V6(ipnet::Ipv6Net::new_assert(
        [0xff00, 0, 0, 0, 0, 0, 0, 0].into(),
        8,
    ));
    cmds.push(add(rule(
        f,
        MASQ_BASE_CHAIN,
        vec![
            payload_match("==", "ip", "daddr", prefix(&v4_multicast)),
            json!({"return": null}),
        ],
        BASE_COMMENT,
    )));
    cmds.push(add(rule(
        f,
        MASQ_BASE_CHAIN,
        vec![
            payload_match("==", "ip6", "daddr", prefix(&v6_multicast)),
            json!({"return": null}),
        ],
        BASE_COMMENT,
    )));
    cmds.push(add(rule(
        f,
        MASQ_BASE_CHAIN,
        vec![json!({"goto": {"target": MASQ_CHAIN}})],
        BASE_COMMENT,
    )));
}

/// Prefix of the comment on the node-level masquerade rule (see [`node_masq_comment`]).
/// Not an attachment [`Tag`]: per-network GC and attachment teardown never match it.
pub const NODE_MASQ_PREFIX: &str = "meta-cni:node-masq:";

/// The comment of the node-level masquerade rule for `subnet` and `cluster_cidr`:
/// `meta-cni:node-masq:<subnet>:<cluster CIDR>` (both in network-address form).
pub fn node_masq_comment(subnet: &IpNet, cluster_cidr: &IpNet) -> String {
    format!(
        "{NODE_MASQ_PREFIX}{}:{}",
        subnet.trunc(),
        cluster_cidr.trunc()
    )
}

/// Whether the masquerade base chain of `listing` is a base chain whose rules end in the
/// jump to [`MASQ_CHAIN`].
fn masq_base_in_place(listing: &Listing) -> bool {
    let base_chain = listing
        .chains
        .iter()
        .any(|c| c.name == MASQ_BASE_CHAIN && c.base);
    let has_chain = listing
        .chains
        .iter()
        .any(|c| c.name == MASQ_CHAIN && !c.base);
    let base: Vec<&ListedRule> = listing
        .rules
        .iter()
        .filter(|r| r.chain == MASQ_BASE_CHAIN)
        .collect();
    base_chain
        && has_chain
        && base.len() == 3
        && base
            .iter()
            .all(|r| r.comment.as_deref() == Some(BASE_COMMENT))
        && base[2].target.as_deref() == Some(MASQ_CHAIN)
}

/// The node-level masquerade transaction: `ip saddr <subnet> ip daddr != <cluster CIDR>
/// masquerade` in [`MASQ_CHAIN`] (commented [`node_masq_comment`]), replacing any other
/// node-level rule (another subnet or cluster CIDR), with the base chain set up when it is
/// not in place. `None` when `existing` already holds exactly that (nothing to do).
pub fn node_masq_setup(
    subnet: &IpNet,
    cluster_cidr: &IpNet,
    existing: Option<&Listing>,
) -> Option<Value> {
    let f = MASQ_FAMILY;
    let comment = node_masq_comment(subnet, cluster_cidr);
    let is_node = |r: &&ListedRule| {
        r.comment
            .as_deref()
            .is_some_and(|c| c.starts_with(NODE_MASQ_PREFIX))
    };
    if let Some(l) = existing {
        let node_rules: Vec<&ListedRule> = l.rules.iter().filter(is_node).collect();
        if masq_base_in_place(l)
            && node_rules.len() == 1
            && node_rules[0].chain == MASQ_CHAIN
            && node_rules[0].comment.as_deref() == Some(comment.as_str())
        {
            return None;
        }
    }
    let mut cmds = vec![
        add(table(f)),
        add(chain(f, MASQ_CHAIN)),
        add(base_chain(
            f,
            MASQ_BASE_CHAIN,
            "nat",
            "postrouting",
            MASQ_PRIORITY,
        )),
    ];
    if let Some(l) = existing {
        for r in l.rules.iter().filter(is_node) {
            cmds.push(delete(json!({"rule": {
                "family": f, "table": TABLE, "chain": r.chain, "handle": r.handle
            }})));
        }
    }
    if !existing.is_some_and(masq_base_in_place) {
        masq_base_rules(&mut cmds);
    }
    let proto = match subnet {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    };
    cmds.push(add(rule(
        f,
        MASQ_CHAIN,
        vec![
            payload_match("==", proto, "saddr", prefix(&subnet.trunc())),
            payload_match("!=", proto, "daddr", prefix(&cluster_cidr.trunc())),
            json!({"masquerade": null}),
        ],
        &comment,
    )));
    Some(document(cmds))
}

/// Removal transaction of every node-level masquerade rule in `listing`, or `None` when
/// there is none.
pub fn node_masq_removal(listing: &Listing) -> Option<Value> {
    let cmds: Vec<Value> = listing
        .rules
        .iter()
        .filter(|r| {
            r.comment
                .as_deref()
                .is_some_and(|c| c.starts_with(NODE_MASQ_PREFIX))
        })
        .map(|r| {
            delete(json!({"rule": {
                "family": MASQ_FAMILY, "table": TABLE, "chain": r.chain, "handle": r.handle
            }}))
        })
        .collect();
    if cmds.is_empty() {
        None
    } else {
        Some(document(cmds))
    }
}

/// The MAC spoof-check setup transaction, replacing whatever `existing` holds for `tag`.
pub fn mac_setup(tag: &Tag, host_ifname: &str, mac: &Mac, existing: Option<&Listing>) -> Value {
    let f = MAC_FAMILY;
    let chain_name = mac_chain_name(tag.network_hash(), tag.container_id(), tag.ifname());
    let comment = tag.to_string();
    let mut cmds = vec![
        add(table(f)),
        add(base_chain(
            f,
            MAC_BASE_CHAIN,
            "filter",
            "prerouting",
            MAC_PRIORITY,
        )),
        add(chain(f, &chain_name)),
    ];
    if let Some(listing) = existing {
        cmds.extend(delete_commands(f, listing, Some(&chain_name), |t| t == tag));
    }
    cmds.push(flush(chain(f, &chain_name)));
    cmds.push(add(rule(
        f,
        &chain_name,
        vec![
            payload_match("==", "ether", "saddr", json!(format_mac(mac))),
            json!({"return": null}),
        ],
        &comment,
    )));
    cmds.push(add(rule(
        f,
        &chain_name,
        vec![json!({"drop": null})],
        &comment,
    )));
    cmds.push(add(rule(
        f,
        MAC_BASE_CHAIN,
        vec![
            json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": host_ifname}}),
            json!({"jump": {"target": chain_name}}),
        ],
        &comment,
    )));
    document(cmds)
}

/// Removal transaction for `doomed` tags in `listing`, or `None` if there is nothing to do.
pub fn removal(family: &str, listing: &Listing, doomed: impl Fn(&Tag) -> bool) -> Option<Value> {
    let cmds = delete_commands(family, listing, None, doomed);
    if cmds.is_empty() {
        None
    } else {
        Some(document(cmds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network_hash;
    use std::collections::HashSet;

    fn masq_tag() -> Tag {
        Tag::masq("net", "c1", "eth0").unwrap()
    }

    #[test]
    fn masq_setup_fresh() {
        let tag = masq_tag();
        let c = tag.to_string();
        let ips: Vec<IpNet> = vec![
            "10.1.2.5/24".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
            "10.1.2.5/24".parse().unwrap(),
        ];
        let got = masq_setup(&tag, &ips, None);
        let want = json!({"nftables": [
            {"add": {"table": {"family": "inet", "name": "meta_cni"}}},
            {"add": {"chain": {"family": "inet", "table": "meta_cni", "name": "masq_checks"}}},
            {"add": {"chain": {"family": "inet", "table": "meta_cni", "name": "postrouting",
                "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}},
            {"flush": {"chain": {"family": "inet", "table": "meta_cni", "name": "postrouting"}}},
            {"add": {"rule": {"family": "inet", "table": "meta_cni", "chain": "postrouting",
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}},
                    {"return": null}
                ], "comment": "meta-cni:base"}}},
            {"add": {"rule": {"family": "inet", "table": "meta_cni", "chain": "postrouting",
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                        "right": {"prefix": {"addr": "ff00::", "len": 8}}}},
                    {"return": null}
                ], "comment": "meta-cni:base"}}},
            {"add": {"rule": {"family": "inet", "table": "meta_cni", "chain": "postrouting",
                "expr": [{"goto": {"target": "masq_checks"}}], "comment": "meta-cni:base"}}},
            {"add": {"rule": {"family": "inet", "table": "meta_cni", "chain": "masq_checks",
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "right": "10.1.2.5"}},
                    {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "right": {"prefix": {"addr": "10.1.2.0", "len": 24}}}},
                    {"masquerade": null}
                ], "comment": c}}},
            {"add": {"rule": {"family": "inet", "table": "meta_cni", "chain": "masq_checks",
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                        "right": "fd00::5"}},
                    {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                        "right": {"prefix": {"addr": "fd00::", "len": 64}}}},
                    {"masquerade": null}
                ], "comment": c}}},
        ]});
        assert_eq!(got, want);
    }

    fn listed(chain: &str, handle: u64, comment: Option<&str>, target: Option<&str>) -> ListedRule {
        ListedRule {
            chain: chain.into(),
            handle,
            comment: comment.map(Into::into),
            target: target.map(Into::into),
        }
    }

    #[test]
    fn masq_setup_replaces_only_own_rules() {
        let tag = masq_tag();
        let other = Tag::masq("net", "c2", "eth0").unwrap().to_string();
        let other_net = Tag::masq("net2", "c1", "eth0").unwrap().to_string();
        let listing = Listing {
            chains: vec![
                ListedChain {
                    name: "postrouting".into(),
                    base: true,
                },
                ListedChain {
                    name: "masq_checks".into(),
                    base: false,
                },
            ],
            rules: vec![
                listed("postrouting", 2, Some(BASE_COMMENT), None),
                listed("postrouting", 4, Some(BASE_COMMENT), Some("masq_checks")),
                listed("masq_checks", 5, Some(&tag.to_string()), None),
                listed("masq_checks", 6, Some(&other), None),
                listed("masq_checks", 7, Some(&other_net), None),
                listed("masq_checks", 8, Some(&tag.to_string()), None),
                listed("masq_checks", 9, None, None),
            ],
        };
        let doc = masq_setup(&tag, &[], Some(&listing));
        let cmds = doc["nftables"].as_array().unwrap();
        let deletes: Vec<&Value> = cmds.iter().filter(|c| c.get("delete").is_some()).collect();
        assert_eq!(
            deletes,
            vec![
                &json!({"delete": {"rule": {"family": "inet", "table": "meta_cni", "chain": "masq_checks", "handle": 5}}}),
                &json!({"delete": {"rule": {"family": "inet", "table": "meta_cni", "chain": "masq_checks", "handle": 8}}}),
            ]
        );
        // deletions come before the flush of the base chain
        let pos = |k: &str| cmds.iter().position(|c| c.get(k).is_some()).unwrap();
        assert!(pos("delete") < pos("flush"));
    }

    #[test]
    fn mac_setup_shape() {
        let tag = Tag::mac_spoof_chk("net", "c1", "eth0").unwrap();
        let chain = mac_chain_name(tag.network_hash(), "c1", "eth0");
        assert!(chain.starts_with("mac_") && chain.len() == 20);
        let other_net = network_hash("net2");
        assert_ne!(chain, mac_chain_name(&other_net, "c1", "eth0"));
        let c = tag.to_string();
        let existing = Listing {
            chains: vec![
                ListedChain {
                    name: "prerouting".into(),
                    base: true,
                },
                ListedChain {
                    name: chain.clone(),
                    base: false,
                },
            ],
            rules: vec![
                listed("prerouting", 3, Some(&c), Some(&chain)),
                listed(&chain, 4, Some(&c), None),
                listed(&chain, 5, Some(&c), None),
            ],
        };
        let got = mac_setup(&tag, "veth1", &[0x02, 0, 0, 0, 0xab, 1], Some(&existing));
        let want = json!({"nftables": [
            {"add": {"table": {"family": "bridge", "name": "meta_cni"}}},
            {"add": {"chain": {"family": "bridge", "table": "meta_cni", "name": "prerouting",
                "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}}},
            {"add": {"chain": {"family": "bridge", "table": "meta_cni", "name": chain}}},
            {"delete": {"rule": {"family": "bridge", "table": "meta_cni", "chain": "prerouting", "handle": 3}}},
            {"flush": {"chain": {"family": "bridge", "table": "meta_cni", "name": chain}}},
            {"add": {"rule": {"family": "bridge", "table": "meta_cni", "chain": chain,
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                        "right": "02:00:00:00:ab:01"}},
                    {"return": null}
                ], "comment": c}}},
            {"add": {"rule": {"family": "bridge", "table": "meta_cni", "chain": chain,
                "expr": [{"drop": null}], "comment": c}}},
            {"add": {"rule": {"family": "bridge", "table": "meta_cni", "chain": "prerouting",
                "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth1"}},
                    {"jump": {"target": chain}}
                ], "comment": c}}},
        ]});
        assert_eq!(got, want);
    }

    #[test]
    fn mac_removal_deletes_jump_then_chain() {
        let keep = Tag::mac_spoof_chk("net", "c1", "eth0").unwrap();
        let gone = Tag::mac_spoof_chk("net", "c2", "eth0").unwrap();
        let (kc, gc) = (
            mac_chain_name(keep.network_hash(), "c1", "eth0"),
            mac_chain_name(gone.network_hash(), "c2", "eth0"),
        );
        let listing = Listing {
            chains: vec![
                ListedChain {
                    name: "prerouting".into(),
                    base: true,
                },
                ListedChain {
                    name: kc.clone(),
                    base: false,
                },
                ListedChain {
                    name: gc.clone(),
                    base: false,
                },
            ],
            rules: vec![
                listed("prerouting", 3, Some(&keep.to_string()), Some(&kc)),
                listed("prerouting", 6, Some(&gone.to_string()), Some(&gc)),
                listed(&kc, 4, Some(&keep.to_string()), None),
                listed(&gc, 7, Some(&gone.to_string()), None),
                listed(&gc, 8, Some(&gone.to_string()), None),
            ],
        };
        let got = removal(MAC_FAMILY, &listing, |t| *t == gone).unwrap();
        let want = json!({"nftables": [
            {"delete": {"rule": {"family": "bridge", "table": "meta_cni", "chain": "prerouting", "handle": 6}}},
            {"flush": {"chain": {"family": "bridge", "table": "meta_cni", "name": gc}}},
            {"delete": {"chain": {"family": "bridge", "table": "meta_cni", "name": gc}}},
        ]});
        assert_eq!(got, want);
        assert!(removal(MAC_FAMILY, &listing, |_| false).is_none());
        assert!(removal(MAC_FAMILY, &Listing::default(), |_| true).is_none());
    }

    /// Listing of one table holding the per-attachment rules of `(network, container,
    /// ifname)` triples: masquerade rules in `masq_checks`, or MAC jump + chain rules.
    fn listing_of(family: &str, attachments: &[(&str, &str, &str)]) -> Listing {
        let mut l = Listing::default();
        let mut handle = 10;
        let mut next = || {
            handle += 1;
            handle
        };
        if family == MASQ_FAMILY {
            l.chains.push(ListedChain {
                name: MASQ_BASE_CHAIN.into(),
                base: true,
            });
            l.chains.push(ListedChain {
                name: MASQ_CHAIN.into(),
                base: false,
            });
            l.rules.push(listed(
                MASQ_BASE_CHAIN,
                next(),
                Some(BASE_COMMENT),
                Some(MASQ_CHAIN),
            ));
            for (n, c, i) in attachments {
                let t = Tag::masq(n, c, i).unwrap().to_string();
                l.rules.push(listed(MASQ_CHAIN, next(), Some(&t), None));
            }
        } else {
            l.chains.push(ListedChain {
                name: MAC_BASE_CHAIN.into(),
                base: true,
            });
            for (n, c, i) in attachments {
                let t = Tag::mac_spoof_chk(n, c, i).unwrap();
                let ch = mac_chain_name(t.network_hash(), c, i);
                let t = t.to_string();
                l.chains.push(ListedChain {
                    name: ch.clone(),
                    base: false,
                });
                l.rules
                    .push(listed(MAC_BASE_CHAIN, next(), Some(&t), Some(&ch)));
                l.rules.push(listed(&ch, next(), Some(&t), None));
                l.rules.push(listed(&ch, next(), Some(&t), None));
            }
        }
        l
    }

    #[test]
    fn gc_removal_is_per_network() {
        // the same container/ifname on both networks, plus one stale attachment on each
        let attachments = [
            ("A", "c1", "eth0"),
            ("A", "c2", "eth0"),
            ("B", "c1", "eth0"),
            ("B", "c3", "eth0"),
        ];
        // GC of A with only (c1, eth0) valid: A's c2 goes, nothing of B goes (B's c3 is
        // not in A's valid set, but belongs to B)
        let valid = HashSet::from([("c1".to_owned(), "eth0".to_owned())]);
        let a = network_hash("A");
        let doomed = |t: &Tag| t.is_garbage(&a, &valid);

        let l = listing_of(MASQ_FAMILY, &attachments);
        let gone = Tag::masq("A", "c2", "eth0").unwrap().to_string();
        let handle = l
            .rules
            .iter()
            .find(|r| r.comment.as_deref() == Some(gone.as_str()))
            .unwrap()
            .handle;
        assert_eq!(
            removal(MASQ_FAMILY, &l, doomed).unwrap(),
            json!({"nftables": [
                {"delete": {"rule": {"family": "inet", "table": "meta_cni",
                    "chain": "masq_checks", "handle": handle}}},
            ]})
        );

        let l = listing_of(MAC_FAMILY, &attachments);
        let gone = Tag::mac_spoof_chk("A", "c2", "eth0").unwrap();
        let gone_chain = mac_chain_name(gone.network_hash(), "c2", "eth0");
        let gone = gone.to_string();
        let jump = l
            .rules
            .iter()
            .find(|r| r.chain == MAC_BASE_CHAIN && r.comment.as_deref() == Some(gone.as_str()))
            .unwrap()
            .handle;
        assert_eq!(
            removal(MAC_FAMILY, &l, doomed).unwrap(),
            json!({"nftables": [
                {"delete": {"rule": {"family": "bridge", "table": "meta_cni",
                    "chain": "prerouting", "handle": jump}}},
                {"flush": {"chain": {"family": "bridge", "table": "meta_cni", "name": gone_chain}}},
                {"delete": {"chain": {"family": "bridge", "table": "meta_cni", "name": gone_chain}}},
            ]})
        );

        // GC of a network without rules here removes nothing, whatever `valid` says
        let c = network_hash("C");
        for family in [MASQ_FAMILY, MAC_FAMILY] {
            let l = listing_of(family, &attachments);
            assert!(removal(family, &l, |t| t.is_garbage(&c, &HashSet::new())).is_none());
        }
    }

    #[test]
    fn parse_real_listing() {
        let c = Tag::mac_spoof_chk("net", "c1", "eth0").unwrap().to_string();
        let text = format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6", "json_schema_version": 1}}}},
            {{"table": {{"family": "bridge", "name": "meta_cni", "handle": 1}}}},
            {{"chain": {{"family": "bridge", "table": "meta_cni", "name": "prerouting", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}}}},
            {{"chain": {{"family": "bridge", "table": "meta_cni", "name": "mac_x", "handle": 2}}}},
            {{"rule": {{"family": "bridge", "table": "meta_cni", "chain": "prerouting", "handle": 5, "comment": "{c}", "expr": [{{"match": {{"op": "==", "left": {{"meta": {{"key": "iifname"}}}}, "right": "veth1"}}}}, {{"jump": {{"target": "mac_x"}}}}]}}}},
            {{"rule": {{"family": "bridge", "table": "meta_cni", "chain": "mac_x", "handle": 6, "expr": [{{"drop": null}}]}}}},
            {{"rule": {{"family": "bridge", "table": "other", "chain": "mac_x", "handle": 7, "expr": []}}}}]}}"#
        );
        let l = Listing::parse("bridge", &text).unwrap();
        assert_eq!(
            l.chains,
            vec![
                ListedChain {
                    name: "prerouting".into(),
                    base: true
                },
                ListedChain {
                    name: "mac_x".into(),
                    base: false
                },
            ]
        );
        assert_eq!(
            l.rules,
            vec![
                listed("prerouting", 5, Some(&c), Some("mac_x")),
                listed("mac_x", 6, None, None),
            ]
        );
        assert_eq!(l.tags().len(), 1);
        assert!(Listing::parse("bridge", "{}").is_err());
        assert!(Listing::parse("bridge", "garbage").is_err());
    }

    /// An ADD on a node whose base chain is in place only adds the attachment's rules.
    #[test]
    fn masq_setup_leaves_a_base_chain_in_place_alone() {
        let tag = masq_tag();
        let ip: IpNet = "10.0.0.5/24".parse().unwrap();
        let doc = masq_setup(&tag, &[ip], Some(&masq_listing(vec![])));
        let cmds = doc["nftables"].as_array().unwrap();
        assert!(cmds.iter().all(|c| c.get("flush").is_none()), "{cmds:#?}");
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["chain"], MASQ_CHAIN);
    }

    fn masq_listing(extra: Vec<ListedRule>) -> Listing {
        let mut rules = vec![
            listed("postrouting", 2, Some(BASE_COMMENT), None),
            listed("postrouting", 3, Some(BASE_COMMENT), None),
            listed("postrouting", 4, Some(BASE_COMMENT), Some("masq_checks")),
        ];
        rules.extend(extra);
        Listing {
            chains: vec![
                ListedChain {
                    name: "postrouting".into(),
                    base: true,
                },
                ListedChain {
                    name: "masq_checks".into(),
                    base: false,
                },
            ],
            rules,
        }
    }

    #[test]
    fn node_masq_setup_fresh_noop_and_replace() {
        let subnet: IpNet = "10.244.1.0/24".parse().unwrap();
        let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
        let c = node_masq_comment(&subnet, &cluster);
        assert_eq!(c, "meta-cni:node-masq:10.244.1.0/24:10.244.0.0/16");
        // Not an attachment tag: GC and teardown never see it.
        assert_eq!(Tag::parse(&c), None);
        let v6 = node_masq_comment(
            &"fd00:1:2:3::/64".parse().unwrap(),
            &"fd00::/16".parse().unwrap(),
        );
        assert_eq!(Tag::parse(&v6), None);

        // Fresh: table, chains, base rules, the rule.
        let doc = node_masq_setup(&subnet, &cluster, None).unwrap();
        let cmds = doc["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 3 + 1 + 3 + 1, "{doc}");
        assert_eq!(
            cmds.last().unwrap(),
            &json!({"add": {"rule": {"family": "inet", "table": "meta_cni", "chain": "masq_checks",
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "right": {"prefix": {"addr": "10.244.1.0", "len": 24}}}},
                    {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
                    {"masquerade": null}
                ], "comment": c}}})
        );

        // In place (next to attachment rules): nothing to do.
        let pod = Tag::masq("net", "c1", "eth0").unwrap().to_string();
        let here = masq_listing(vec![
            listed("masq_checks", 5, Some(&pod), None),
            listed("masq_checks", 6, Some(&c), None),
        ]);
        assert_eq!(node_masq_setup(&subnet, &cluster, Some(&here)), None);

        // Another subnet: the old node rule goes, the base chain is left alone, the
        // attachment rule stays.
        let other = node_masq_comment(&"10.244.9.0/24".parse().unwrap(), &cluster);
        let l = masq_listing(vec![
            listed("masq_checks", 5, Some(&pod), None),
            listed("masq_checks", 7, Some(&other), None),
        ]);
        let doc = node_masq_setup(&subnet, &cluster, Some(&l)).unwrap();
        let cmds = doc["nftables"].as_array().unwrap();
        let deletes: Vec<&Value> = cmds.iter().filter(|c| c.get("delete").is_some()).collect();
        assert_eq!(
            deletes,
            vec![
                &json!({"delete": {"rule": {"family": "inet", "table": "meta_cni", "chain": "masq_checks", "handle": 7}}})
            ]
        );
        assert!(cmds.iter().all(|c| c.get("flush").is_none()), "{doc}");

        // Two copies, or a broken base chain: repaired.
        let dup = masq_listing(vec![
            listed("masq_checks", 6, Some(&c), None),
            listed("masq_checks", 8, Some(&c), None),
        ]);
        let doc = node_masq_setup(&subnet, &cluster, Some(&dup)).unwrap();
        assert_eq!(
            doc["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c.get("delete").is_some())
                .count(),
            2
        );
        let mut broken = masq_listing(vec![listed("masq_checks", 6, Some(&c), None)]);
        broken.rules.remove(2);
        let doc = node_masq_setup(&subnet, &cluster, Some(&broken)).unwrap();
        assert!(
            doc["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.get("flush").is_some())
        );

        // Removal.
        assert_eq!(
            node_masq_removal(&masq_listing(vec![listed(
                "masq_checks",
                5,
                Some(&pod),
                None
            )])),
            None
        );
        let doc = node_masq_removal(&here).unwrap();
        assert_eq!(
            doc,
            json!({"nftables": [{"delete": {"rule": {"family": "inet", "table": "meta_cni", "chain": "masq_checks", "handle": 6}}}]})
        );
    }
}
