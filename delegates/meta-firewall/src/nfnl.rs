//! nf_tables over its own netlink protocol, in-process and without any library: the
//! default backend.
//!
//! The same JSON documents that libnftables and `nft -j -f -` apply ([`crate::doc`]) are
//! encoded here into the nfnetlink messages `nft` itself would send for them (the
//! expressions are those `nft --debug=netlink` shows for the equivalent rules, so `nft
//! list` prints them back as written) and sent as one batch, which the kernel commits as
//! one transaction. Listings are two dumps (chains and rules of one family) decoded into
//! the [`Listing`] the documents are built from. Only the vocabulary of [`crate::doc`] is
//! understood; anything else is refused with [`Error::InvalidInput`] before anything is
//! sent.
//!
//! Why: libnftables builds a full ruleset cache, evaluates and serialises on every call,
//! which made an ADD with ipMasq and macspoofchk cost ~30 ms more than one without; the
//! kernel's own work for such a batch is tens of microseconds.
//!
//! The socket is opened on the calling thread for each operation, so every operation acts
//! on that thread's network namespace, like the other backends.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde_json::Value;

use crate::doc::{ListedChain, ListedRule, Listing, TABLE};
use crate::error::{Error, Result};

// netlink / nfnetlink framing
const NETLINK_NETFILTER: i32 = 12;
const NETLINK_EXT_ACK: i32 = 11;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;

// nf_tables message types
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
/// libnftnl's rule user data TLV carrying the comment.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

// values
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_NFPROTO: u32 = 15;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_BRIDGE: u8 = 7;
const NFPROTO_IPV6: u8 = 10;
const IFNAMSIZ: usize = 16;

/// The nfgen family number of an nftables family name.
fn family_number(family: &str) -> Result<u8> {
    match family {
        "inet" => Ok(NFPROTO_INET),
        "ip" => Ok(NFPROTO_IPV4),
        "ip6" => Ok(NFPROTO_IPV6),
        "bridge" => Ok(NFPROTO_BRIDGE),
        other => Err(unsupported(format!("family {other:?}"))),
    }
}

fn unsupported(what: String) -> Error {
    Error::InvalidInput(format!(
        "the netlink nftables backend cannot encode {what} (only the documents meta-cni \
         builds are supported)"
    ))
}

/// One netlink message under construction.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// A message of nf_tables type `kind` for `family` (nfgenmsg with version 0).
    fn new(kind: u16, flags: u16, family: u8) -> Msg {
        Msg::raw((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, family, 0)
    }

    fn raw(kind: u16, flags: u16, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set by finish()
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn str(&mut self, kind: u16, s: &str) -> &mut Msg {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(kind, &v)
    }

    fn be32(&mut self, kind: u16, v: u32) -> &mut Msg {
        self.attr(kind, &v.to_be_bytes())
    }

    fn be64(&mut self, kind: u16, v: u64) -> &mut Msg {
        self.attr(kind, &v.to_be_bytes())
    }

    fn open(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn close(&mut self) -> &mut Msg {
        let start = self.nests.pop().expect("close() without open()");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// A nested `NFTA_DATA_VALUE` holding `bytes`, as attribute `kind`.
    fn data_value(&mut self, kind: u16, bytes: &[u8]) -> &mut Msg {
        self.open(kind).attr(NFTA_DATA_VALUE, bytes).close()
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        debug_assert!(self.nests.is_empty());
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A netlink attribute or message payload being read.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        if self.0.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.0[0], self.0[1]]) as usize;
        let kind = u16::from_ne_bytes([self.0[2], self.0[3]]) & !NLA_F_NESTED & 0x3fff;
        if len < 4 || len > self.0.len() {
            self.0 = &[];
            return None;
        }
        let data = &self.0[4..len];
        let next = len.div_ceil(4) * 4;
        self.0 = self.0.get(next..).unwrap_or(&[]);
        Some((kind, data))
    }
}

fn attr(payload: &[u8], kind: u16) -> Option<&[u8]> {
    Attrs(payload).find(|(k, _)| *k == kind).map(|(_, d)| d)
}

fn attr_str(payload: &[u8], kind: u16) -> Option<String> {
    let d = attr(payload, kind)?;
    let d = d.split(|b| *b == 0).next().unwrap_or(d);
    Some(String::from_utf8_lossy(d).into_owned())
}

/// What one batch message does, for error messages (`add rule inet meta_cni masq_checks`).
struct Described {
    msg: Msg,
    what: String,
}

fn s<'a>(o: &'a Value, key: &str) -> Result<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(format!("an object without string {key:?}: {o}")))
}

/// Encodes one command of a document (`{"add": {"rule": ...}}`).
fn encode_command(cmd: &Value) -> Result<Described> {
    let (verb, obj) = cmd
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or_else(|| unsupported(format!("command {cmd}")))?;
    let (kind, o) = obj
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or_else(|| unsupported(format!("command {cmd}")))?;
    let family = s(o, "family")?;
    let fam = family_number(family)?;
    let table = match kind.as_str() {
        "table" => s(o, "name")?,
        _ => s(o, "table")?,
    };
    let what;
    let msg = match (verb.as_str(), kind.as_str()) {
        ("add", "table") => {
            what = format!("add table {family} {table}");
            let mut m = Msg::new(NFT_MSG_NEWTABLE, NLM_F_CREATE, fam);
            m.str(NFTA_TABLE_NAME, table);
            m
        }
        ("add", "chain") => {
            let name = s(o, "name")?;
            what = format!("add chain {family} {table} {name}");
            let mut m = Msg::new(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fam);
            m.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, name);
            if let Some(hook) = o.get("hook") {
                let hook = hook
                    .as_str()
                    .ok_or_else(|| unsupported(format!("hook {hook}")))?;
                let hooknum: u32 = match hook {
                    "prerouting" => 0,
                    "input" => 1,
                    "forward" => 2,
                    "output" => 3,
                    "postrouting" => 4,
                    other => return Err(unsupported(format!("hook {other:?}"))),
                };
                let prio = o
                    .get("prio")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| unsupported(format!("a base chain without prio: {o}")))?;
                let policy = match o.get("policy").and_then(Value::as_str) {
                    None | Some("accept") => NF_ACCEPT,
                    Some("drop") => NF_DROP,
                    Some(p) => return Err(unsupported(format!("policy {p:?}"))),
                };
                m.open(NFTA_CHAIN_HOOK)
                    .be32(NFTA_HOOK_HOOKNUM, hooknum)
                    .be32(NFTA_HOOK_PRIORITY, prio as i32 as u32)
                    .close();
                m.be32(NFTA_CHAIN_POLICY, policy as u32);
                m.str(NFTA_CHAIN_TYPE, s(o, "type")?);
            }
            m
        }
        ("add", "rule") => {
            let chain = s(o, "chain")?;
            what = format!("add rule {family} {table} {chain}");
            let mut m = Msg::new(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, fam);
            m.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
            let exprs = o
                .get("expr")
                .and_then(Value::as_array)
                .ok_or_else(|| unsupported(format!("a rule without expr: {o}")))?;
            m.open(NFTA_RULE_EXPRESSIONS);
            let mut deps = Vec::new();
            for e in exprs {
                encode_expr(&mut m, fam, e, &mut deps)?;
            }
            m.close();
            if let Some(c) = o.get("comment").and_then(Value::as_str) {
                if c.len() + 1 > u8::MAX as usize || c.contains('\0') {
                    return Err(Error::InvalidInput(format!("rule comment {c:?}")));
                }
                let mut ud = vec![NFTNL_UDATA_RULE_COMMENT, (c.len() + 1) as u8];
                ud.extend_from_slice(c.as_bytes());
                ud.push(0);
                m.attr(NFTA_RULE_USERDATA, &ud);
            }
            m
        }
        ("flush", "chain") => {
            let name = s(o, "name")?;
            what = format!("flush chain {family} {table} {name}");
            let mut m = Msg::new(NFT_MSG_DELRULE, 0, fam);
            m.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, name);
            m
        }
        ("delete", "rule") => {
            let chain = s(o, "chain")?;
            let handle = o
                .get("handle")
                .and_then(Value::as_u64)
                .ok_or_else(|| unsupported(format!("a rule deletion without handle: {o}")))?;
            what = format!("delete rule {family} {table} {chain} handle {handle}");
            let mut m = Msg::new(NFT_MSG_DELRULE, 0, fam);
            m.str(NFTA_RULE_TABLE, table)
                .str(NFTA_RULE_CHAIN, chain)
                .be64(NFTA_RULE_HANDLE, handle);
            m
        }
        ("delete", "chain") => {
            let name = s(o, "name")?;
            what = format!("delete chain {family} {table} {name}");
            let mut m = Msg::new(NFT_MSG_DELCHAIN, 0, fam);
            m.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, name);
            m
        }
        _ => return Err(unsupported(format!("command {cmd}"))),
    };
    Ok(Described { msg, what })
}

fn expr_start<'m>(m: &'m mut Msg, name: &str) -> &'m mut Msg {
    m.open(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, name)
}

fn meta_load(m: &mut Msg, key: u32) {
    expr_start(m, "meta")
        .open(NFTA_EXPR_DATA)
        .be32(NFTA_META_DREG, NFT_REG_1)
        .be32(NFTA_META_KEY, key)
        .close()
        .close();
}

fn payload_load(m: &mut Msg, base: u32, offset: u32, len: u32) {
    expr_start(m, "payload")
        .open(NFTA_EXPR_DATA)
        .be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
        .be32(NFTA_PAYLOAD_BASE, base)
        .be32(NFTA_PAYLOAD_OFFSET, offset)
        .be32(NFTA_PAYLOAD_LEN, len)
        .close()
        .close();
}

fn cmp(m: &mut Msg, op: u32, data: &[u8]) {
    expr_start(m, "cmp")
        .open(NFTA_EXPR_DATA)
        .be32(NFTA_CMP_SREG, NFT_REG_1)
        .be32(NFTA_CMP_OP, op)
        .data_value(NFTA_CMP_DATA, data)
        .close()
        .close();
}

fn bitwise(m: &mut Msg, mask: &[u8]) {
    expr_start(m, "bitwise")
        .open(NFTA_EXPR_DATA)
        .be32(NFTA_BITWISE_SREG, NFT_REG_1)
        .be32(NFTA_BITWISE_DREG, NFT_REG_1)
        .be32(NFTA_BITWISE_LEN, mask.len() as u32)
        .data_value(NFTA_BITWISE_MASK, mask)
        .data_value(NFTA_BITWISE_XOR, &vec![0; mask.len()])
        .close()
        .close();
}

fn verdict(m: &mut Msg, code: i32, chain: Option<&str>) {
    expr_start(m, "immediate")
        .open(NFTA_EXPR_DATA)
        .be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
        .open(NFTA_IMMEDIATE_DATA)
        .open(NFTA_DATA_VERDICT)
        .be32(NFTA_VERDICT_CODE, code as u32);
    if let Some(c) = chain {
        m.str(NFTA_VERDICT_CHAIN, c);
    }
    m.close().close().close().close();
}

fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Encodes one expression of a rule. `deps` records the `meta nfproto` dependencies
/// already emitted (nft emits one per protocol per rule in the inet family).
fn encode_expr(m: &mut Msg, fam: u8, e: &Value, deps: &mut Vec<u8>) -> Result<()> {
    let bad = || unsupported(format!("expression {e}"));
    let (kind, body) = e
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(bad)?;
    match kind.as_str() {
        "masquerade" => {
            expr_start(m, "masq").close();
        }
        "return" => verdict(m, NFT_RETURN, None),
        "drop" => verdict(m, NF_DROP, None),
        "accept" => verdict(m, NF_ACCEPT, None),
        "jump" | "goto" => {
            let target = body.get("target").and_then(Value::as_str).ok_or_else(bad)?;
            let code = if kind == "jump" { NFT_JUMP } else { NFT_GOTO };
            verdict(m, code, Some(target));
        }
        "match" => {
            let op = match body.get("op").and_then(Value::as_str) {
                Some("==") => NFT_CMP_EQ,
                Some("!=") => NFT_CMP_NEQ,
                _ => return Err(bad()),
            };
            let left = body.get("left").ok_or_else(bad)?;
            let right = body.get("right").ok_or_else(bad)?;
            if let Some(meta) = left.get("meta") {
                if meta.get("key").and_then(Value::as_str) != Some("iifname") {
                    return Err(bad());
                }
                let name = right.as_str().ok_or_else(bad)?;
                if name.len() >= IFNAMSIZ || name.contains('\0') {
                    return Err(Error::InvalidInput(format!("interface name {name:?}")));
                }
                let mut data = name.as_bytes().to_vec();
                data.resize(IFNAMSIZ, 0);
                meta_load(m, NFT_META_IIFNAME);
                cmp(m, op, &data);
                return Ok(());
            }
            let payload = left.get("payload").ok_or_else(bad)?;
            let protocol = payload
                .get("protocol")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            let field = payload
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            if protocol == "ether" {
                let offset = match field {
                    "daddr" => 0,
                    "saddr" => 6,
                    _ => return Err(bad()),
                };
                let mac = parse_mac(right.as_str().ok_or_else(bad)?).ok_or_else(bad)?;
                payload_load(m, NFT_PAYLOAD_LL_HEADER, offset, 6);
                cmp(m, op, &mac);
                return Ok(());
            }
            let (proto_num, offset, width) = match (protocol, field) {
                ("ip", "saddr") => (NFPROTO_IPV4, 12, 4),
                ("ip", "daddr") => (NFPROTO_IPV4, 16, 4),
                ("ip6", "saddr") => (NFPROTO_IPV6, 8, 16),
                ("ip6", "daddr") => (NFPROTO_IPV6, 24, 16),
                _ => return Err(bad()),
            };
            let (addr, len): (IpAddr, u32) = if let Some(p) = right.get("prefix") {
                let a: IpAddr = p
                    .get("addr")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(bad)?;
                let l = p.get("len").and_then(Value::as_u64).ok_or_else(bad)? as u32;
                (a, l)
            } else {
                let a: IpAddr = right
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(bad)?;
                (a, width * 8)
            };
            if addr.is_ipv4() != (proto_num == NFPROTO_IPV4) || len > width * 8 {
                return Err(bad());
            }
            match fam {
                NFPROTO_INET | NFPROTO_BRIDGE if !deps.contains(&proto_num) => {
                    if fam == NFPROTO_BRIDGE {
                        return Err(unsupported(format!("{protocol} matches in bridge tables")));
                    }
                    meta_load(m, NFT_META_NFPROTO);
                    cmp(m, NFT_CMP_EQ, &[proto_num]);
                    deps.push(proto_num);
                }
                NFPROTO_IPV4 | NFPROTO_IPV6 if fam != proto_num => {
                    return Err(unsupported(format!("{protocol} matches in this family")));
                }
                _ => {}
            }
            let net = addr_bytes(&addr);
            if len % 8 == 0 && len > 0 {
                // byte-aligned prefix (or a whole address): load and compare only its bytes
                let n = (len / 8) as usize;
                payload_load(m, NFT_PAYLOAD_NETWORK_HEADER, offset, n as u32);
                cmp(m, op, &net[..n]);
            } else {
                let mut mask = vec![0u8; width as usize];
                for (i, b) in mask.iter_mut().enumerate() {
                    let bits = len.saturating_sub(i as u32 * 8).min(8);
                    *b = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
                }
                let masked: Vec<u8> = net.iter().zip(&mask).map(|(a, m)| a & m).collect();
                payload_load(m, NFT_PAYLOAD_NETWORK_HEADER, offset, width);
                bitwise(m, &mask);
                cmp(m, op, &masked);
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Encodes a whole document into batch messages (without the batch framing).
fn encode(document: &Value) -> Result<Vec<Described>> {
    document
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported("a document without an `nftables` array".into()))?
        .iter()
        .map(encode_command)
        .collect()
}

/// A netlink socket of the netfilter family, bound in the calling thread's namespace.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    /// When this socket last committed a batch.
    committed: Option<std::time::Instant>,
}

fn os_error(operation: &str, err: std::io::Error) -> Error {
    errno_error(operation, err.raw_os_error().unwrap_or(0), String::new())
}

/// Maps a kernel error to the crate's error kinds.
fn errno_error(operation: &str, errno: i32, extack: String) -> Error {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let detail = if extack.is_empty() {
        text
    } else {
        format!("{text}: {extack}")
    };
    match errno {
        libc::EPERM | libc::EACCES => Error::PermissionDenied {
            stderr: format!("{operation}: {detail}"),
        },
        // no nf_tables (or no netfilter netlink) in this kernel
        libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => Error::KernelUnsupported {
            stderr: format!("{operation}: {detail}"),
        },
        libc::EOPNOTSUPP => Error::Netlink {
            operation: operation.to_owned(),
            errno,
            message: format!(
                "{detail} (the kernel lacks this feature, or an existing object of that name \
                 differs in a way the kernel cannot update, e.g. a base chain's hook)"
            ),
        },
        _ => Error::Netlink {
            operation: operation.to_owned(),
            errno,
            message: detail,
        },
    }
}

impl Socket {
    fn open() -> Result<Socket> {
        // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(os_error(
                "open a netfilter netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value of the right size. Extended acks
        // are best effort (they only improve error messages).
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: an all-zero sockaddr_nl (kernel-assigned port), then bind(2) with its size.
        let rc = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_error(
                "bind a netfilter netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Socket {
            fd,
            seq: seed,
            committed: None,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, operation: &str, buf: &[u8]) -> Result<()> {
        // SAFETY: send(2) of an initialised buffer on our descriptor.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(os_error(operation, std::io::Error::last_os_error()));
        }
        if n as usize != buf.len() {
            return Err(Error::Netlink {
                operation: operation.to_owned(),
                errno: 0,
                message: format!("short send: {n} of {} bytes", buf.len()),
            });
        }
        Ok(())
    }

    /// One datagram; `None` when nothing is queued and `wait` is false.
    fn recv(&self, operation: &str, buf: &mut [u8], wait: bool) -> Result<Option<usize>> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        loop {
            // SAFETY: recv(2) into a buffer we own, of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if !wait => return Ok(None),
                _ => return Err(os_error(operation, e)),
            }
        }
    }

    /// A dump request; calls `each` with the payload (after nfgenmsg) of every answer.
    fn dump(
        &mut self,
        operation: &str,
        mut msg: Msg,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let seq = self.next_seq();
        msg.buf[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        self.send(operation, &msg.finish(seq))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(n) = self.recv(operation, &mut buf, true)? else {
                continue;
            };
            for (kind, flags, mseq, body) in Messages(&buf[..n]) {
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let (errno, ext) = parse_error(flags, body);
                        if errno == 0 {
                            return Ok(());
                        }
                        return Err(errno_error(operation, errno, ext));
                    }
                    _ => {
                        if body.len() >= 4 {
                            each(&body[4..])?;
                        }
                        if flags & NLM_F_MULTI == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Sends `msgs` as one batch (one transaction) and checks every acknowledgement.
    fn batch(&mut self, msgs: Vec<Described>) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(msgs.iter().map(|d| d.msg.buf.len()).sum::<usize>() + 40);
        let begin_seq = self.next_seq();
        buf.extend(
            Msg::raw(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES)
                .finish(begin_seq),
        );
        let mut pending: Vec<(u32, String)> = Vec::with_capacity(msgs.len());
        for Described { mut msg, what } in msgs {
            let seq = self.next_seq();
            let flags = u16::from_ne_bytes([msg.buf[6], msg.buf[7]]) | NLM_F_REQUEST | NLM_F_ACK;
            msg.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
            buf.extend(msg.finish(seq));
            pending.push((seq, what));
        }
        let end_seq = self.next_seq();
        buf.extend(
            Msg::raw(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES).finish(end_seq),
        );
        self.send("send an nftables batch", &buf)?;
        self.committed = Some(std::time::Instant::now());
        // The kernel processes the whole batch inside send(2): every acknowledgement is
        // queued by now. Wait for the first, then drain what is queued.
        let mut rbuf = vec![0u8; 64 * 1024];
        let mut first_error: Option<Error> = None;
        let mut acked = 0usize;
        let mut wait = true;
        while acked < pending.len() {
            let Some(n) = self.recv(
                "read the nftables batch's acknowledgements",
                &mut rbuf,
                wait,
            )?
            else {
                break;
            };
            wait = false;
            for (kind, flags, seq, body) in Messages(&rbuf[..n]) {
                if kind != NLMSG_ERROR {
                    continue;
                }
                let Some(idx) = pending.iter().position(|(s, _)| *s == seq) else {
                    continue;
                };
                acked += 1;
                let (errno, ext) = parse_error(flags, body);
                if errno != 0 && first_error.is_none() {
                    first_error = Some(errno_error(&pending[idx].1, errno, ext));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if acked < pending.len() => Err(Error::Netlink {
                operation: "commit an nftables batch".into(),
                errno: 0,
                message: format!(
                    "the kernel acknowledged {acked} of {} messages",
                    pending.len()
                ),
            }),
            None => Ok(()),
        }
    }
}

/// The messages of one datagram: (type, flags, seq, payload).
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = (u16, u16, u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(self.0[0..4].try_into().ok()?) as usize;
        if len < 16 || len > self.0.len() {
            self.0 = &[];
            return None;
        }
        let kind = u16::from_ne_bytes([self.0[4], self.0[5]]);
        let flags = u16::from_ne_bytes([self.0[6], self.0[7]]);
        let seq = u32::from_ne_bytes(self.0[8..12].try_into().ok()?);
        let body = &self.0[16..len];
        let next = len.div_ceil(4) * 4;
        self.0 = self.0.get(next..).unwrap_or(&[]);
        Some((kind, flags, seq, body))
    }
}

/// An NLMSG_ERROR payload: the (positive) errno and the extended ack message, if any.
fn parse_error(flags: u16, body: &[u8]) -> (i32, String) {
    let Some(code) = body.get(0..4) else {
        return (libc::EIO, "truncated netlink error".into());
    };
    let errno = -i32::from_ne_bytes(code.try_into().unwrap_or([0; 4]));
    let mut ext = String::new();
    if flags & NLM_F_ACK_TLVS != 0 && body.len() >= 20 {
        // the echoed request header (its length tells how much of it was echoed)
        let echoed = u32::from_ne_bytes(body[4..8].try_into().unwrap_or([0; 4])) as usize;
        let skip = if flags & 0x100 != 0 { 20 } else { 4 + echoed };
        if let Some(tlvs) = body.get(skip.div_ceil(4) * 4..)
            && let Some(m) = attr_str(tlvs, NLMSGERR_ATTR_MSG)
        {
            ext = m;
        }
    }
    (errno, ext)
}

/// The netlink sockets of one driver, one per network namespace it was used in (a
/// socket is bound to the namespace of the thread that opened it, so the calling thread's
/// namespace picks the socket).
///
/// They are kept open for the driver's lifetime because closing a netfilter netlink
/// socket is not free: the kernel's release handler (`nft_rcv_nl_event`) first waits for
/// the deferred destruction of the last transactions, which includes an RCU grace period
/// (measured here: 5–20 ms per close after a commit). One socket per namespace pays that at
/// most once instead of once per listing and per transaction; and when the driver is
/// dropped soon after a commit, the last reference is handed to a short-lived detached
/// process ([`close_elsewhere`]) so that neither the caller nor its exit waits for the
/// kernel (a CNI plugin's exit is what the runtime waits for).
#[derive(Default)]
pub(crate) struct Sockets(std::sync::Mutex<Vec<((u64, u64), Socket)>>);

/// How long after a commit closing a socket may still wait for the kernel; later, it is
/// closed in place.
const CLOSE_ELSEWHERE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for Sockets {
    fn drop(&mut self) {
        let all = std::mem::take(self.0.get_mut().unwrap_or_else(|e| e.into_inner()));
        let recent = all.iter().any(|(_, s)| {
            s.committed
                .is_some_and(|t| t.elapsed() < CLOSE_ELSEWHERE_WITHIN)
        });
        let sockets: Vec<Socket> = all.into_iter().map(|(_, s)| s).collect();
        if recent {
            close_elsewhere(sockets);
        }
    }
}

/// How long the child of [`close_elsewhere`] waits before its close (see there).
const CLOSE_DELAY_NANOS: libc::c_long = 100_000_000;

/// Children of [`close_elsewhere`] not yet reaped (reaped without waiting at the next
/// hand-off; a process that exits leaves them to init).
static CLOSERS: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

/// Closes `sockets` so that the last reference is a child process's, which waits for the
/// kernel on its own; the caller's closes do not wait. Falls back to closing them here
/// when no process can be made.
///
/// The child keeps only the sockets and the read end of a pipe; it exits when the write
/// end is closed, which the caller does only after closing its own copies, so the child's
/// exit is the last close. It waits 100 ms before exiting: the kernel's release handler
/// holds the namespace's nf_tables commit mutex while it waits for the pending
/// destruction (one RCU grace period after the last commit anywhere on the node), so a
/// close right after a commit would stall whoever commits next in that namespace, e.g.
/// the next pod's verb. By then the destruction is normally done and the close is free. It is not waited for: earlier children that have exited are
/// reaped (without blocking) at the next hand-off, and a CNI plugin exits right after,
/// leaving any to init.
fn close_elsewhere(sockets: Vec<Socket>) {
    {
        let mut closers = CLOSERS.lock().unwrap_or_else(|e| e.into_inner());
        closers.retain(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid on a child of ours, without blocking.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
        });
    }
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 into a two-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let [rd, wr] = pipe;
    let mut keep: Vec<i32> = sockets
        .iter()
        .map(|s| s.fd.as_raw_fd())
        .chain([rd])
        .collect();
    keep.sort_unstable();
    // SAFETY: after fork() the child calls only async-signal-safe functions (close_range
    // through syscall, read, _exit) on data prepared before forking: no allocation, no
    // locks.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            let mut lo: u32 = 0;
            for &fd in &keep {
                let fd = fd as u32;
                if fd > lo {
                    libc::syscall(libc::SYS_close_range, lo, fd - 1, 0u32);
                }
                lo = fd + 1;
            }
            libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32);
            let mut b = 0u8;
            while libc::read(rd, (&mut b as *mut u8).cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            // Let the kernel's deferred destruction of the last transactions finish first:
            // a close while it is pending waits for it holding the namespace's nf_tables
            // commit mutex, which would stall the next commit there (the next verb's).
            let delay = libc::timespec {
                tv_sec: 0,
                tv_nsec: CLOSE_DELAY_NANOS,
            };
            libc::nanosleep(&delay, std::ptr::null_mut());
            libc::_exit(0);
        }
        libc::close(rd);
        if child > 0 {
            CLOSERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(child);
        }
        // our copies first, then the write end: the child closes last
        drop(sockets);
        libc::close(wr);
    }
}

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|v| v.len()).unwrap_or(0);
        write!(f, "Sockets({n} open)")
    }
}

fn thread_netns() -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| os_error("stat /proc/thread-self/ns/net", e))?;
    Ok((md.dev(), md.ino()))
}

/// The process's live [`Sockets`], if any driver holds them.
static SHARED: std::sync::Mutex<std::sync::Weak<Sockets>> =
    std::sync::Mutex::new(std::sync::Weak::new());

impl Sockets {
    /// The sockets every driver of the process shares while any of them is alive: the
    /// delegates of one pod's verb, each with its own driver, then use one socket per
    /// namespace (and one hand-off at the end) when the caller holds a driver for the
    /// verb.
    pub(crate) fn shared() -> std::sync::Arc<Sockets> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shared.upgrade() {
            return s;
        }
        let s = std::sync::Arc::new(Sockets::default());
        *shared = std::sync::Arc::downgrade(&s);
        s
    }

    /// Runs `f` with the socket of the calling thread's namespace, opening it on first
    /// use. A socket whose operation failed is closed (it may hold unread answers).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Socket) -> Result<R>) -> Result<R> {
        let key = thread_netns()?;
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let idx = match all.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                all.push((key, Socket::open()?));
                all.len() - 1
            }
        };
        let res = f(&mut all[idx].1);
        if res.is_err() {
            all.swap_remove(idx);
        }
        res
    }
}

/// Applies `document` as one transaction in `sock`'s namespace.
pub(crate) fn apply(sock: &mut Socket, document: &Value) -> Result<()> {
    let msgs = encode(document)?;
    sock.batch(msgs)
}

/// Lists our table of `family` (chains and rules); `None` when it does not exist.
pub(crate) fn list(sock: &mut Socket, family: &str) -> Result<Option<Listing>> {
    let fam = family_number(family)?;
    let mut listing = Listing::default();
    let operation = format!("list chains of table {family} {TABLE}");
    sock.dump(&operation, Msg::new(NFT_MSG_GETCHAIN, 0, fam), |p| {
        if attr_str(p, NFTA_CHAIN_TABLE).as_deref() == Some(TABLE)
            && let Some(name) = attr_str(p, NFTA_CHAIN_NAME)
        {
            listing.chains.push(ListedChain {
                name,
                base: attr(p, NFTA_CHAIN_HOOK).is_some(),
            });
        }
        Ok(())
    })?;
    if listing.chains.is_empty() {
        return Ok(None);
    }
    let operation = format!("list rules of table {family} {TABLE}");
    let mut req = Msg::new(NFT_MSG_GETRULE, 0, fam);
    req.str(NFTA_RULE_TABLE, TABLE);
    sock.dump(&operation, req, |p| {
        if attr_str(p, NFTA_RULE_TABLE).as_deref() != Some(TABLE) {
            return Ok(());
        }
        let (Some(chain), Some(handle)) = (attr_str(p, NFTA_RULE_CHAIN), attr(p, NFTA_RULE_HANDLE))
        else {
            return Ok(());
        };
        let handle = u64::from_be_bytes(handle.try_into().map_err(|_| Error::Parse {
            operation: operation.clone(),
            message: "a rule handle that is not 8 bytes".into(),
        })?);
        listing.rules.push(ListedRule {
            chain,
            handle,
            comment: attr(p, NFTA_RULE_USERDATA).and_then(comment),
            target: attr(p, NFTA_RULE_EXPRESSIONS).and_then(jump_target),
        });
        Ok(())
    })?;
    Ok(Some(listing))
}

/// The comment TLV of a rule's user data.
fn comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if kind == NFTNL_UDATA_RULE_COMMENT {
            let value = value.split(|b| *b == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// The chain a rule jumps or goes to, from its expressions.
fn jump_target(exprs: &[u8]) -> Option<String> {
    Attrs(exprs)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .find_map(|(_, e)| {
            if attr_str(e, NFTA_EXPR_NAME).as_deref() != Some("immediate") {
                return None;
            }
            let data = attr(
                attr(attr(e, NFTA_EXPR_DATA)?, NFTA_IMMEDIATE_DATA)?,
                NFTA_DATA_VERDICT,
            )?;
            let code = i32::from_be_bytes(attr(data, NFTA_VERDICT_CODE)?.try_into().ok()?);
            if code == NFT_JUMP || code == NFT_GOTO {
                attr_str(data, NFTA_VERDICT_CHAIN)
            } else {
                None
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The expressions of an encoded rule, as (name, data) pairs.
    fn exprs(d: &Described) -> Vec<(String, Vec<u8>)> {
        let body = &d.msg.buf[20..];
        let e = attr(body, NFTA_RULE_EXPRESSIONS).unwrap();
        Attrs(e)
            .map(|(_, x)| {
                (
                    attr_str(x, NFTA_EXPR_NAME).unwrap(),
                    attr(x, NFTA_EXPR_DATA).unwrap_or(&[]).to_vec(),
                )
            })
            .collect()
    }

    fn cmp_value(data: &[u8]) -> Vec<u8> {
        attr(attr(data, NFTA_CMP_DATA).unwrap(), NFTA_DATA_VALUE)
            .unwrap()
            .to_vec()
    }

    fn payload(data: &[u8]) -> (u32, u32, u32) {
        let g = |k| u32::from_be_bytes(attr(data, k).unwrap().try_into().unwrap());
        (
            g(NFTA_PAYLOAD_BASE),
            g(NFTA_PAYLOAD_OFFSET),
            g(NFTA_PAYLOAD_LEN),
        )
    }

    fn rule(expr: Value) -> Value {
        json!({"add": {"rule": {"family": "inet", "table": "meta_cni", "chain": "c",
            "expr": expr, "comment": "meta-cni:x"}}})
    }

    #[test]
    fn masq_rule_matches_what_nft_sends() {
        // nft --debug=netlink: ip saddr 10.1.2.5 ip daddr != 10.1.2.0/24 masquerade
        let d = encode_command(&rule(json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.1.2.5"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": {"prefix": {"addr": "10.1.2.0", "len": 24}}}},
            {"masquerade": null}
        ])))
        .unwrap();
        let e = exprs(&d);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["meta", "cmp", "payload", "cmp", "payload", "cmp", "masq"]
        );
        assert_eq!(cmp_value(&e[1].1), [2]);
        assert_eq!(payload(&e[2].1), (1, 12, 4));
        assert_eq!(cmp_value(&e[3].1), [10, 1, 2, 5]);
        assert_eq!(payload(&e[4].1), (1, 16, 3));
        assert_eq!(cmp_value(&e[5].1), [10, 1, 2]);
        let body = &d.msg.buf[20..];
        assert_eq!(
            attr(body, NFTA_RULE_USERDATA).unwrap(),
            b"\x00\x0bmeta-cni:x\x00"
        );
        assert_eq!(d.what, "add rule inet meta_cni c");
    }

    #[test]
    fn unaligned_prefixes_use_a_mask() {
        // nft: ip daddr 224.0.0.0/4 → 4b load, bitwise & 0xf0, cmp 0xe0
        let d = encode_command(&rule(json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}},
            {"return": null}
        ])))
        .unwrap();
        let e = exprs(&d);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["meta", "cmp", "payload", "bitwise", "cmp", "immediate"]
        );
        assert_eq!(payload(&e[2].1), (1, 16, 4));
        let mask = attr(attr(&e[3].1, NFTA_BITWISE_MASK).unwrap(), NFTA_DATA_VALUE).unwrap();
        assert_eq!(mask, [0xf0, 0, 0, 0]);
        assert_eq!(cmp_value(&e[4].1), [0xe0, 0, 0, 0]);
        // ip6 /60: 16 bytes, mask ff.. f0 00..
        let d = encode_command(&rule(json!([
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                "right": {"prefix": {"addr": "fd00:1::", "len": 60}}}}
        ])))
        .unwrap();
        let e = exprs(&d);
        assert_eq!(cmp_value(&e[1].1), [10]);
        let mask = attr(attr(&e[3].1, NFTA_BITWISE_MASK).unwrap(), NFTA_DATA_VALUE).unwrap();
        assert_eq!(mask[..8], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0]);
        assert!(mask[8..].iter().all(|b| *b == 0));
    }

    #[test]
    fn one_nfproto_dependency_per_protocol() {
        let d = encode_command(&rule(json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "fd00::5"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                "right": {"prefix": {"addr": "fd00::", "len": 64}}}},
            {"masquerade": null}
        ])))
        .unwrap();
        let metas = exprs(&d).iter().filter(|(n, _)| n == "meta").count();
        assert_eq!(metas, 1);
    }

    #[test]
    fn bridge_rules() {
        let d = encode_command(
            &json!({"add": {"rule": {"family": "bridge", "table": "meta_cni",
            "chain": "prerouting", "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth1"}},
                {"jump": {"target": "mac_1"}}
            ], "comment": "c"}}}),
        )
        .unwrap();
        let e = exprs(&d);
        assert_eq!(cmp_value(&e[1].1), *b"veth1\0\0\0\0\0\0\0\0\0\0\0");
        let body = &d.msg.buf[20..];
        assert_eq!(
            jump_target(attr(body, NFTA_RULE_EXPRESSIONS).unwrap()).as_deref(),
            Some("mac_1")
        );
        let d = encode_command(
            &json!({"add": {"rule": {"family": "bridge", "table": "meta_cni",
            "chain": "mac_1", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                    "right": "02:00:00:00:00:01"}},
                {"return": null}
            ]}}}),
        )
        .unwrap();
        let e = exprs(&d);
        assert_eq!(payload(&e[0].1), (0, 6, 6));
        assert_eq!(cmp_value(&e[1].1), [2, 0, 0, 0, 0, 1]);
        // an ip match in a bridge table would need an ether type dependency: refused
        assert!(
            encode_command(&json!({"add": {"rule": {"family": "bridge", "table": "t",
            "chain": "c", "expr": [{"match": {"op": "==",
                "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.1"}}]}}}))
            .is_err()
        );
    }

    #[test]
    fn unknown_vocabulary_is_refused() {
        for bad in [
            json!({"insert": {"rule": {"family": "inet", "table": "t", "chain": "c", "expr": []}}}),
            json!({"add": {"set": {"family": "inet", "table": "t", "name": "s"}}}),
            json!({"add": {"table": {"family": "arp", "name": "t"}}}),
            rule(json!([{"counter": null}])),
            rule(
                json!([{"match": {"op": "<", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "1.2.3.4"}}]),
            ),
            rule(
                json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "fd00::1"}}]),
            ),
            rule(
                json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": "10.0.0.0", "len": 33}}}}]),
            ),
            rule(
                json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "a-name-longer-than-15"}}]),
            ),
            json!({"add": {"chain": {"family": "inet", "table": "t", "name": "c", "type": "nat",
                "hook": "egress", "prio": 0}}}),
        ] {
            assert!(
                matches!(encode_command(&bad), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
        assert!(encode(&json!({"x": []})).is_err());
    }

    #[test]
    fn attributes_nest_and_pad() {
        let mut m = Msg::new(NFT_MSG_NEWCHAIN, 0, NFPROTO_INET);
        m.str(NFTA_CHAIN_TABLE, "ab")
            .open(NFTA_CHAIN_HOOK)
            .be32(NFTA_HOOK_HOOKNUM, 4)
            .be32(NFTA_HOOK_PRIORITY, 100)
            .close();
        let buf = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize,
            buf.len()
        );
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        let body = &buf[20..];
        assert_eq!(attr_str(body, NFTA_CHAIN_TABLE).as_deref(), Some("ab"));
        let hook = attr(body, NFTA_CHAIN_HOOK).unwrap();
        assert_eq!(
            attr(hook, NFTA_HOOK_PRIORITY).unwrap(),
            100u32.to_be_bytes()
        );
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn comments_and_errors_decode() {
        assert_eq!(
            comment(b"\x01\x02ab\x00\x04abc\x00").as_deref(),
            Some("abc")
        );
        assert_eq!(comment(b"\x00\x09"), None);
        assert!(matches!(
            errno_error("x", libc::EPERM, String::new()),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            errno_error("x", libc::EPROTONOSUPPORT, String::new()),
            Error::KernelUnsupported { .. }
        ));
        assert!(
            errno_error("x", libc::EOPNOTSUPP, String::new())
                .to_string()
                .contains("hook")
        );
        let e = errno_error(
            "add rule inet meta_cni c",
            libc::ENOENT,
            "chain not found".into(),
        );
        assert!(e.to_string().contains("add rule inet meta_cni c"), "{e}");
        assert!(e.to_string().contains("chain not found"), "{e}");
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:00:01"), None);
    }

    /// Drivers alive at the same time share one socket set, across threads (meta-cni
    /// holds one for the verb, so its delegates' drivers join it). (Whether the set goes
    /// with its last driver is not checked here: other tests of this binary make drivers
    /// concurrently.)
    #[test]
    fn live_drivers_share_their_sockets() {
        let a = Sockets::shared();
        let b = std::thread::spawn(Sockets::shared).join().unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
    }

    /// A driver dropped right after a commit hands its socket to a child that holds
    /// nothing else but its pipe (not the caller's stdout, which a runtime reads to EOF),
    /// in the caller's namespace, and that exits on its own.
    #[test]
    fn dropped_sockets_are_closed_by_a_child_that_holds_only_them() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (a network namespace of its own)"
        );
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let (_, ino) = thread_netns().unwrap();
            let socks = Sockets::default();
            let doc =
                json!({"nftables": [{"add": {"table": {"family": "inet", "name": "meta_cni_t"}}}]});
            socks.with(|s| apply(s, &doc)).unwrap();
            let before = CLOSERS.lock().unwrap().clone();
            drop(socks);
            let child = *CLOSERS
                .lock()
                .unwrap()
                .iter()
                .find(|p| !before.contains(p))
                .expect("a closer child");
            let fds = |pid: i32| -> Vec<String> {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| {
                        d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                            .map(|l| l.display().to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            // it closes everything else as soon as it runs: the socket and its pipe are left
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut seen = fds(child);
            while seen.len() != 2 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
                seen = fds(child);
            }
            seen.sort();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(seen[0].starts_with("pipe:["), "{seen:?}");
            assert!(seen[1].starts_with("socket:["), "{seen:?}");
            let ns = std::fs::read_link(format!("/proc/{child}/ns/net")).unwrap();
            assert_eq!(ns.display().to_string(), format!("net:[{ino}]"));
            // and exits by itself
            let mut status = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                // SAFETY: waitpid on our own child, without blocking.
                let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
                if r == child {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the closer never exited"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            CLOSERS.lock().unwrap().retain(|p| *p != child);
        })
        .join()
        .unwrap();
    }
}
