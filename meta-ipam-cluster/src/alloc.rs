//! ADD and DEL: per-node blocks claimed by create-if-absent, addresses allocated under the
//! node's lock and journal, written to the block object with resourceVersion
//! preconditions; see docs/ARCHITECTURE.md ("Cluster-wide IPAM") for why this is safe.

use crate::api::{Kube, Write};
use crate::config::{ClusterIpamConfig, IpRange, from_u128, to_u128};
use crate::crd::{
    Allocation, IpBlock, IpBlockSpec, IpPool, IpPoolSpec, IpReservation, IpReservationSpec,
    NODE_LABEL, POOL_LABEL,
};
use crate::error::{Error, Result};
use crate::journal::{Applied, Locked, Op, Remote, ResOp, Reserved, State};
use crate::stats::{self, Counters};
use cni_core::{CniResult, IpConfig};
use ipnet::IpNet;
use kube::api::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

/// Bound of the API requests of a DEL: DEL journals first and never fails for the API
/// server, so it waits at most this long for it.
pub const DEL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Who holds an address: pod UID (or container ID) + interface, with the pod's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `<pod uid>/<ifname>`, or `<container id>/<ifname>` without a pod UID.
    pub key: String,
    /// Pod namespace ("" outside Kubernetes).
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Container ID.
    pub container_id: String,
}

impl Owner {
    /// The owner of an invocation: `K8S_POD_UID` when the runtime passes it.
    pub fn of(args: &cni_core::CmdArgs) -> Owner {
        let pod = args.env.args.k8s_pod();
        let uid = pod.as_ref().and_then(|p| p.uid.clone()).unwrap_or_default();
        let id = if uid.is_empty() {
            &args.env.container_id
        } else {
            &uid
        };
        Owner {
            key: format!("{id}/{}", args.env.ifname),
            namespace: pod
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_default(),
            pod: pod.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            pod_uid: uid,
            container_id: args.env.container_id.clone(),
        }
    }

    fn allocation(&self, node: &str) -> Allocation {
        Allocation {
            owner: self.key.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            pod_uid: self.pod_uid.clone(),
            container_id: self.container_id.clone(),
            node: node.to_string(),
            created: now(),
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn dns_part(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(100);
    out.trim_matches('-').to_string()
}

/// The pool of range `r` in scope `network_name` (whereabouts' `network_name`):
/// `<network_name>-<cidr>`, or `<cidr>` without one, in DNS-name form.
pub fn pool_name(network_name: &str, r: &IpRange) -> String {
    let cidr = dns_part(&r.subnet.to_string());
    match dns_part(network_name) {
        n if n.is_empty() => cidr,
        n => format!("{n}-{cidr}"),
    }
}

/// The reservation of `ip` in scope `network_name` (whereabouts' normalised IP):
/// `[<network_name>-]<ip>`, dots and colons as dashes, IPv6 written out in full so that two
/// addresses never share a name.
pub fn reservation_name(network_name: &str, ip: IpAddr) -> String {
    let addr = match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|g| format!("{g:04x}"))
            .collect::<Vec<_>>()
            .join("-"),
    };
    match dns_part(network_name) {
        n if n.is_empty() => addr,
        n => format!("{n}-{addr}"),
    }
}

/// How long an address found reserved through an overlapping range is skipped without
/// asking the API server again.
pub const FOREIGN_TTL: Duration = Duration::from_secs(300);

/// Bound of the addresses one ADD tries when overlapping ranges hold the ones it picks.
const OVERLAP_TRIES: usize = 256;

/// One range as blocks.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The range.
    pub range: IpRange,
    /// Pool name.
    pub pool: String,
    /// Block prefix length.
    pub prefix: u8,
    /// Addresses per block.
    pub size: u128,
    /// Number of blocks in the range's subnet.
    pub count: u128,
}

impl Layout {
    /// The layout of `r` under `c`.
    pub fn new(c: &ClusterIpamConfig, r: &IpRange) -> Layout {
        let prefix = c.block_prefix(r);
        let bits = r.subnet.max_prefix_len() - prefix;
        let size = 1u128 << bits.min(127);
        let count = 1u128 << (prefix - r.subnet.prefix_len()).min(127);
        Layout {
            range: r.clone(),
            pool: pool_name(&c.network_name, r),
            prefix,
            size,
            count,
        }
    }

    /// Name of block `i`.
    pub fn block_name(&self, i: u128) -> String {
        format!("{}-b{i}", self.pool)
    }

    /// First address of block `i`.
    pub fn block_base(&self, i: u128) -> IpAddr {
        from_u128(
            self.range.subnet.network(),
            to_u128(self.range.subnet.network()) + i * self.size,
        )
    }

    /// The block index and offset of `ip`.
    pub fn locate(&self, ip: IpAddr) -> Option<(u128, u32)> {
        if !self.range.subnet.contains(&ip) {
            return None;
        }
        let d = to_u128(ip) - to_u128(self.range.subnet.network());
        Some((d / self.size, (d % self.size) as u32))
    }

    /// The address at `offset` of block `i`.
    pub fn addr(&self, i: u128, offset: u32) -> IpAddr {
        from_u128(
            self.range.subnet.network(),
            to_u128(self.block_base(i)) + offset as u128,
        )
    }

    /// Index of a block from its name.
    pub fn index_of(&self, name: &str) -> Option<u128> {
        name.strip_prefix(&self.pool)?
            .strip_prefix("-b")?
            .parse()
            .ok()
    }

    /// Whether block `i` has any assignable address.
    pub fn usable(&self, i: u128) -> bool {
        (0..self.size.min(u32::MAX as u128) as u32).any(|o| self.range.assignable(self.addr(i, o)))
    }

    fn new_block(&self, i: u128, node: &str) -> IpBlock {
        let mut labels = BTreeMap::new();
        labels.insert(POOL_LABEL.to_string(), self.pool.clone());
        labels.insert(NODE_LABEL.to_string(), dns_part(node));
        let size = self.size.min(u32::MAX as u128) as u32;
        IpBlock {
            metadata: ObjectMeta {
                name: Some(self.block_name(i)),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: IpBlockSpec {
                pool: self.pool.clone(),
                cidr: format!("{}/{}", self.block_base(i), self.prefix),
                node: node.to_string(),
                // The owner keeps the lower three quarters for itself (usable while the API
                // server is unreachable); other nodes may borrow from the top quarter.
                lend_from: if size < 4 { size } else { size - size / 4 },
                empty_since: None,
                allocations: BTreeMap::new(),
            },
        }
    }
}

fn remote_of(b: &IpBlock) -> Option<(String, Remote)> {
    Some((
        b.metadata.name.clone()?,
        Remote {
            spec: b.spec.clone(),
            rv: b.metadata.resource_version.clone()?,
        },
    ))
}

/// One invocation's allocator: the locked state and the API client.
pub struct Allocator<'a> {
    conf: &'a ClusterIpamConfig,
    lock: Locked,
    /// The node's state.
    pub state: State,
    /// The API client.
    pub kube: Kube,
    /// Allocations and releases of this invocation (added to [`crate::stats`] on drop,
    /// with the client's requests and conflicts).
    taken: Counters,
    /// Addresses this invocation found reserved through an overlapping range.
    skip: BTreeSet<IpAddr>,
}

impl Drop for Allocator<'_> {
    fn drop(&mut self) {
        let mut c = self.taken;
        c.api_requests = self.kube.requests.into();
        c.conflicts = self.kube.conflicts.into();
        stats::record(&self.conf.network, &c);
    }
}

impl<'a> Allocator<'a> {
    /// Locks the node's data directory and loads its state.
    pub fn open(conf: &'a ClusterIpamConfig, kube: Kube) -> Result<Allocator<'a>> {
        let lock = Locked::open(&conf.data_dir)?;
        let state = lock.load()?;
        Ok(Allocator {
            conf,
            lock,
            state,
            kube,
            taken: Counters::default(),
            skip: BTreeSet::new(),
        })
    }

    fn save(&self) -> Result<()> {
        self.lock.save(&self.state)
    }

    /// Writes the pending ops of `block` to the server (resourceVersion preconditions,
    /// re-reading on conflict). Ops that cannot apply (the offset is another owner's) are
    /// dropped and returned.
    pub fn sync_block(&mut self, block: &str) -> Result<Vec<Op>> {
        let mut dropped = Vec::new();
        for _ in 0..16 {
            let ops: Vec<Op> = self
                .state
                .pending
                .iter()
                .filter(|o| o.block == block)
                .cloned()
                .collect();
            if ops.is_empty() {
                return Ok(dropped);
            }
            let Some(remote) = self.state.blocks.get(block).cloned() else {
                // Not seen yet (a journal from before the cache): read it.
                match self.kube.get_block(block)? {
                    Some(b) => {
                        let (n, r) = remote_of(&b).ok_or_else(|| {
                            Error::Api(format!("IpBlock {block} without resourceVersion"))
                        })?;
                        self.state.blocks.insert(n, r);
                        continue;
                    }
                    None => {
                        self.drop_ops(block, |_| true, &mut dropped);
                        self.save()?;
                        return Ok(dropped);
                    }
                }
            };
            let mut spec = remote.spec.clone();
            let t = now();
            let mut conflicts = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                if op.apply(&mut spec, t) == Applied::Conflict {
                    conflicts.push(i);
                }
            }
            if !conflicts.is_empty() {
                let bad: Vec<Op> = conflicts.iter().map(|&i| ops[i].clone()).collect();
                self.drop_ops(block, |o| bad.contains(o), &mut dropped);
                self.save()?;
                continue;
            }
            if spec == remote.spec {
                self.drop_ops(block, |_| true, &mut Vec::new());
                self.save()?;
                return Ok(dropped);
            }
            let obj = IpBlock {
                metadata: ObjectMeta {
                    name: Some(block.to_string()),
                    resource_version: Some(remote.rv.clone()),
                    labels: Some(BTreeMap::from([
                        (POOL_LABEL.to_string(), spec.pool.clone()),
                        (NODE_LABEL.to_string(), dns_part(&spec.node)),
                    ])),
                    ..ObjectMeta::default()
                },
                spec,
            };
            match self.kube.replace_block(&obj)? {
                Write::Done(b) => {
                    if let Some((n, r)) = remote_of(&b) {
                        self.state.blocks.insert(n, r);
                    }
                    self.state
                        .pending
                        .retain(|o| !(o.block == block && ops.contains(o)));
                    self.save()?;
                }
                Write::Conflict => match self.kube.get_block(block)? {
                    Some(b) => {
                        if let Some((n, r)) = remote_of(&b) {
                            self.state.blocks.insert(n, r);
                        }
                    }
                    None => {
                        self.state.blocks.remove(block);
                    }
                },
                Write::Gone => {
                    // Deleted meanwhile (released empty, or taken for a gone node's): this
                    // node's journalled allocations in its own block are handed out, so
                    // the block is created again with them; if another node claimed it
                    // first they cannot be kept and are dropped (and logged).
                    self.state.blocks.remove(block);
                    let mut fresh = remote.spec.clone();
                    fresh.allocations.clear();
                    fresh.empty_since = None;
                    let mut any = false;
                    for op in ops.iter().filter(|o| o.alloc.is_some()) {
                        any |= op.apply(&mut fresh, t) == Applied::Changed;
                    }
                    if any && remote.spec.node == self.conf.node {
                        let obj = IpBlock {
                            metadata: ObjectMeta {
                                name: Some(block.to_string()),
                                labels: Some(BTreeMap::from([
                                    (POOL_LABEL.to_string(), fresh.pool.clone()),
                                    (NODE_LABEL.to_string(), dns_part(&fresh.node)),
                                ])),
                                ..ObjectMeta::default()
                            },
                            spec: fresh,
                        };
                        if let Write::Done(b) = self.kube.create_block(&obj)?
                            && let Some((n, r)) = remote_of(&b)
                        {
                            self.state.blocks.insert(n, r);
                            self.state
                                .pending
                                .retain(|o| !(o.block == block && ops.contains(o)));
                            self.save()?;
                            return Ok(dropped);
                        }
                    }
                    self.drop_ops(block, |_| true, &mut dropped);
                    self.save()?;
                    return Ok(dropped);
                }
            }
        }
        Err(Error::Unreachable(format!(
            "IpBlock {block}: too many concurrent updates, try again"
        )))
    }

    fn drop_ops(&mut self, block: &str, which: impl Fn(&Op) -> bool, out: &mut Vec<Op>) {
        let mut keep = Vec::new();
        for o in self.state.pending.drain(..) {
            if o.block == block && which(&o) {
                if o.alloc.is_some() {
                    tracing::error!(
                        "journalled allocation {}@{} for {} could not be written: {}",
                        o.offset,
                        block,
                        o.owner,
                        "the address is held by another owner"
                    );
                }
                out.push(o);
            } else {
                keep.push(o);
            }
        }
        self.state.pending = keep;
    }

    /// Writes every pending op it can, blocks first and then reservations; stops at the
    /// first transport failure (the rest stays journalled).
    pub fn sync_all(&mut self) -> Result<()> {
        let blocks: BTreeSet<String> = self.state.pending.iter().map(|o| o.block.clone()).collect();
        for b in blocks {
            self.sync_block(&b)?;
        }
        for (op, who) in self.sync_reservations()? {
            // Journalled while the API server was unreachable: another range of the scope
            // handed out the same address meanwhile.
            self.taken.overlap_conflicts += 1;
            tracing::error!(
                "{} was handed to {} while the API server was unreachable, and is also held by {who} through an overlapping range: delete one of the two pods",
                op.ip,
                op.owner
            );
        }
        Ok(())
    }

    /// Writes the pending reservation changes in order. Returns the creations refused
    /// because another owner holds the address, with who holds it.
    fn sync_reservations(&mut self) -> Result<Vec<(ResOp, String)>> {
        let mut refused = Vec::new();
        let mut tries = 0;
        while let Some(op) = self.state.pending_res.first().cloned() {
            tries += 1;
            if tries > 4 * self.state.pending_res.len() + 16 {
                return Err(Error::Unreachable(format!(
                    "IpReservation {}: too many concurrent changes, try again",
                    op.name
                )));
            }
            match &op.holder {
                Some(h) => {
                    let obj = IpReservation {
                        metadata: ObjectMeta {
                            name: Some(op.name.clone()),
                            labels: Some(BTreeMap::from([(
                                POOL_LABEL.to_string(),
                                op.pool.clone(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        spec: IpReservationSpec {
                            ip: op.ip.clone(),
                            pool: op.pool.clone(),
                            holder: h.clone(),
                        },
                    };
                    let cur = match self.kube.create_reservation(&obj)? {
                        Write::Done(r) => r,
                        Write::Conflict | Write::Gone => {
                            match self.kube.get_reservation(&op.name)? {
                                Some(r) => r,
                                // Released meanwhile: create again.
                                None => continue,
                            }
                        }
                    };
                    let uid = cur.metadata.uid.clone().unwrap_or_default();
                    if cur.spec.holder.owner == op.owner {
                        self.state.reservations.insert(
                            op.name.clone(),
                            Reserved {
                                owner: op.owner.clone(),
                                uid,
                            },
                        );
                    } else {
                        let a = &cur.spec.holder;
                        let who = format!(
                            "{} (pod {}/{}, node {}, pool {})",
                            a.owner, a.namespace, a.pod, a.node, cur.spec.pool
                        );
                        self.state.foreign.insert(op.ip.clone(), now());
                        refused.push((op.clone(), who));
                    }
                }
                None => {
                    let known = self
                        .state
                        .reservations
                        .get(&op.name)
                        .filter(|r| r.owner == op.owner)
                        .map(|r| r.uid.clone());
                    let uid = match known {
                        Some(u) => Some(u),
                        None => self
                            .kube
                            .get_reservation(&op.name)?
                            .filter(|r| r.spec.holder.owner == op.owner)
                            .and_then(|r| r.metadata.uid),
                    };
                    if let Some(uid) = uid {
                        // Done, Gone (deleted already) and Conflict (the name holds
                        // another owner's object now) all end this change.
                        self.kube.delete_reservation(&op.name, &uid)?;
                    }
                    if self
                        .state
                        .reservations
                        .get(&op.name)
                        .is_some_and(|r| r.owner == op.owner)
                    {
                        self.state.reservations.remove(&op.name);
                    }
                }
            }
            self.state.pending_res.remove(0);
            self.save()?;
        }
        Ok(refused)
    }

    /// Learns the pools of the scope whose subnets overlap `l`'s (one listing).
    fn learn_overlaps(&mut self, l: &Layout) -> Result<()> {
        let pools = self.kube.list_pools()?;
        let mine = l.range.subnet;
        let over: BTreeSet<String> = pools
            .into_iter()
            .filter(|p| p.spec.network == self.conf.network_name)
            .filter_map(|p| {
                let n: IpNet = p.spec.cidr.parse().ok()?;
                let name = p.metadata.name?;
                (name != l.pool && (n.contains(&mine.network()) || mine.contains(&n.network())))
                    .then_some(name)
            })
            .collect();
        self.state.overlaps.insert(l.pool.clone(), over);
        self.save()
    }

    /// Reserves `ip` for `owner` across the overlapping ranges of the scope. `Ok(None)`
    /// when it holds (or is journalled: the API server is unreachable and no overlapping
    /// pool is known); `Ok(Some(who))` when another range's owner holds it.
    fn reserve(&mut self, l: &Layout, owner: &Owner, ip: IpAddr) -> Result<Option<String>> {
        let name = reservation_name(&self.conf.network_name, ip);
        if self
            .state
            .reservations
            .get(&name)
            .is_some_and(|r| r.owner == owner.key)
        {
            return Ok(None);
        }
        let op = ResOp {
            name: name.clone(),
            ip: ip.to_string(),
            pool: l.pool.clone(),
            owner: owner.key.clone(),
            holder: Some(owner.allocation(&self.conf.node)),
        };
        if !self
            .state
            .pending_res
            .iter()
            .any(|o| o.name == name && o.owner == owner.key && o.holder.is_some())
        {
            self.state.pending_res.push(op);
            self.save()?;
        }
        let why = match self.kube.offline() {
            Some(why) => why.to_string(),
            None => match self.sync_reservations() {
                Ok(refused) => {
                    let mut mine = None;
                    for (o, who) in refused {
                        if o.name == name && o.owner == owner.key {
                            mine = Some(who);
                        } else {
                            self.taken.overlap_conflicts += 1;
                            tracing::error!(
                                "{} was handed to {} while the API server was unreachable, and is also held by {who} through an overlapping range: delete one of the two pods",
                                o.ip,
                                o.owner
                            );
                        }
                    }
                    return Ok(mine);
                }
                Err(Error::Unreachable(why)) => why,
                Err(e) => return Err(e),
            },
        };
        match self.state.overlaps.get(&l.pool) {
            Some(over) if !over.is_empty() => {
                let over: Vec<&str> = over.iter().map(String::as_str).collect();
                self.state
                    .pending_res
                    .retain(|o| !(o.name == name && o.owner == owner.key && o.holder.is_some()));
                self.save()?;
                Err(Error::Unreachable(format!(
                    "{why}; range {} overlaps pool(s) {} of the same network_name, and enable_overlapping_ranges needs the API server to reserve {ip} across them: retry when it is reachable, or set enable_overlapping_ranges to false",
                    l.range.subnet,
                    over.join(", ")
                )))
            }
            // No overlapping pool known: journalled, written when the API server is back.
            _ => Ok(None),
        }
    }

    /// Releases `owner`'s allocation of `ip` in `l` (an address an overlapping range holds).
    fn release_ip(&mut self, l: &Layout, owner: &str, ip: IpAddr) -> Result<()> {
        let Some((i, o)) = l.locate(ip) else {
            return Ok(());
        };
        self.state.pending.push(Op {
            block: l.block_name(i),
            offset: o,
            owner: owner.to_string(),
            alloc: None,
        });
        self.save()?;
        self.taken.allocations = self.taken.allocations.saturating_sub(1);
        match self.sync_block(&l.block_name(i)) {
            Ok(_) | Err(Error::Unreachable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether `ip` is skipped: found reserved through an overlapping range by this
    /// invocation, or by this node within [`FOREIGN_TTL`].
    fn skipped(&self, ip: IpAddr) -> bool {
        self.skip.contains(&ip)
            || self
                .state
                .foreign
                .get(&ip.to_string())
                .is_some_and(|t| t + FOREIGN_TTL.as_secs() > now())
    }

    /// The address held by `owner` in layout `l`, as this node sees it.
    fn held(&self, l: &Layout, owner: &str) -> Option<IpAddr> {
        let t = now();
        for name in self.state.blocks.keys() {
            let Some(i) = l.index_of(name) else { continue };
            let v = self.state.view(name, t)?;
            if let Some((o, _)) = v.allocations.iter().find(|(_, a)| a.owner == owner) {
                return o.parse().ok().map(|o| l.addr(i, o));
            }
        }
        None
    }

    /// Journals `op` and, online, writes it; `Ok(true)` when it holds.
    fn take(&mut self, op: Op) -> Result<bool> {
        let block = op.block.clone();
        self.state.pending.push(op.clone());
        self.save()?;
        let held = if self.kube.offline().is_some() {
            true
        } else {
            match self.sync_block(&block) {
                Ok(dropped) => !dropped.contains(&op),
                // Journalled: it is ours, and is written later.
                Err(Error::Unreachable(_)) => true,
                Err(e) => return Err(e),
            }
        };
        if held {
            self.taken.allocations += 1;
        }
        Ok(held)
    }

    fn free_offset(
        &self,
        l: &Layout,
        name: &str,
        i: u128,
        only_below: Option<u32>,
        from: u32,
    ) -> Option<u32> {
        let v = self.state.view(name, now())?;
        let end = only_below
            .unwrap_or(u32::MAX)
            .min(l.size.min(u32::MAX as u128) as u32);
        (from..end).find(|o| {
            let ip = l.addr(i, *o);
            !v.allocations.contains_key(&o.to_string())
                && l.range.assignable(ip)
                && !self.skipped(ip)
        })
    }

    /// Tries this node's blocks of `l`: offline only below each block's lend line.
    fn in_own_blocks(&mut self, l: &Layout, owner: &Owner) -> Result<Option<IpAddr>> {
        for _ in 0..64 {
            let offline = self.kube.offline().is_some();
            let mut mine: Vec<(u128, String, u32)> = self
                .state
                .blocks
                .iter()
                .filter(|(_, r)| r.spec.node == self.conf.node)
                .filter_map(|(n, r)| Some((l.index_of(n)?, n.clone(), r.spec.lend_from)))
                .collect();
            mine.sort();
            let pick = mine.iter().find_map(|(i, n, lend)| {
                let lim = offline.then_some(*lend);
                self.free_offset(l, n, *i, lim, 0)
                    .map(|o| (*i, n.clone(), o))
            });
            let Some((i, name, o)) = pick else {
                return Ok(None);
            };
            let op = Op {
                block: name,
                offset: o,
                owner: owner.key.clone(),
                alloc: Some(owner.allocation(&self.conf.node)),
            };
            if self.take(op)? {
                return Ok(Some(l.addr(i, o)));
            }
        }
        Ok(None)
    }

    fn refresh(&mut self, l: &Layout) -> Result<Vec<IpBlock>> {
        let blocks = self.kube.list_blocks(&l.pool)?;
        let names: std::collections::BTreeSet<String> = blocks
            .iter()
            .filter_map(|b| b.metadata.name.clone())
            .collect();
        // Forget blocks of this pool the server no longer has (released), unless journalled.
        let pending: std::collections::BTreeSet<String> =
            self.state.pending.iter().map(|o| o.block.clone()).collect();
        self.state
            .blocks
            .retain(|n, _| l.index_of(n).is_none() || names.contains(n) || pending.contains(n));
        for b in &blocks {
            if let Some((n, r)) = remote_of(b) {
                self.state.blocks.insert(n, r);
            }
        }
        self.save()?;
        Ok(blocks)
    }

    fn ensure_pool(&mut self, l: &Layout) -> Result<()> {
        if self.state.pools.contains(&l.pool) {
            return Ok(());
        }
        let want = IpPoolSpec {
            network: self.conf.network_name.clone(),
            cidr: l.range.subnet.to_string(),
            block_prefix: l.prefix,
        };
        let p = self.kube.ensure_pool(&IpPool {
            metadata: ObjectMeta {
                name: Some(l.pool.clone()),
                ..ObjectMeta::default()
            },
            spec: want.clone(),
        })?;
        if p.spec != want {
            return Err(Error::Config(format!(
                "IpPool {} exists with network_name {:?} cidr {} blockPrefix {}, this configuration wants network_name {:?} cidr {} blockPrefix {}: blockSize cannot change while the pool holds blocks",
                l.pool,
                p.spec.network,
                p.spec.cidr,
                p.spec.block_prefix,
                want.network,
                want.cidr,
                want.block_prefix
            )));
        }
        self.state.pools.insert(l.pool.clone());
        self.save()?;
        if self.conf.enable_overlapping_ranges {
            self.learn_overlaps(l)?;
        }
        Ok(())
    }

    /// Allocates one address of layout `l` for `owner` (idempotent: an owner that holds
    /// one gets it again). With `enable_overlapping_ranges` the address is also reserved
    /// across the scope's ranges; one another range holds is released and skipped.
    pub fn allocate(
        &mut self,
        l: &Layout,
        owner: &Owner,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr> {
        let t = now();
        self.state
            .foreign
            .retain(|_, s| *s + FOREIGN_TTL.as_secs() > t);
        for _ in 0..OVERLAP_TRIES {
            let ip = self.allocate_in_pool(l, owner, requested)?;
            if !self.conf.enable_overlapping_ranges {
                return Ok(ip);
            }
            let held = match self.reserve(l, owner, ip) {
                Ok(h) => h,
                Err(e) => {
                    self.release_ip(l, &owner.key, ip)?;
                    return Err(e);
                }
            };
            let Some(who) = held else {
                return Ok(ip);
            };
            self.release_ip(l, &owner.key, ip)?;
            self.taken.overlap_skips += 1;
            if requested.is_some() {
                return Err(Error::Taken(format!(
                    "requested IP {ip} is held by {who} through an overlapping range"
                )));
            }
            tracing::info!("{ip} is held by {who} through an overlapping range: skipped");
            self.skip.insert(ip);
        }
        Err(Error::Exhausted(format!(
            "range {} of network {}: the {OVERLAP_TRIES} addresses tried are all held through overlapping ranges",
            l.range.subnet, self.conf.network
        )))
    }

    fn allocate_in_pool(
        &mut self,
        l: &Layout,
        owner: &Owner,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr> {
        if let Err(e) = self.sync_all() {
            tracing::info!("journal not synced: {e}");
        }
        if let Some(ip) = self.held(l, &owner.key) {
            if requested.is_some_and(|r| r != ip) {
                return Err(Error::Taken(format!(
                    "{} already holds {ip} in network {}, not the requested {}",
                    owner.key,
                    self.conf.network,
                    requested.unwrap_or(ip)
                )));
            }
            return Ok(ip);
        }
        if let Some(ip) = requested {
            return self.allocate_requested(l, owner, ip);
        }
        if self.kube.offline().is_none()
            && let Err(e) = self.ensure_pool(l)
            && !matches!(e, Error::Unreachable(_))
        {
            return Err(e);
        }
        if let Some(ip) = self.in_own_blocks(l, owner)? {
            return Ok(ip);
        }
        if let Some(why) = self.kube.offline() {
            return Err(Error::Unreachable(format!(
                "{why}; this node's blocks of pool {} have no free address it may use offline, and claiming a new block needs the API server: retry when it is reachable",
                l.pool
            )));
        }
        let blocks = self.refresh(l)?;
        if self.conf.enable_overlapping_ranges {
            self.learn_overlaps(l)?;
        }
        // A block of ours the cache did not know (lost state) may have room.
        if let Some(ip) = self.in_own_blocks(l, owner)? {
            return Ok(ip);
        }
        let taken: std::collections::BTreeSet<u128> = blocks
            .iter()
            .filter_map(|b| l.index_of(b.metadata.name.as_deref()?))
            .collect();
        let mut i = 0u128;
        while i < l.count {
            if !taken.contains(&i) && l.usable(i) {
                match self.kube.create_block(&l.new_block(i, &self.conf.node))? {
                    Write::Done(b) => {
                        if let Some((n, r)) = remote_of(&b) {
                            self.state.blocks.insert(n, r);
                        }
                        self.save()?;
                        tracing::info!("claimed block {} of pool {}", b.spec.cidr, l.pool);
                        if let Some(ip) = self.in_own_blocks(l, owner)? {
                            return Ok(ip);
                        }
                    }
                    Write::Conflict | Write::Gone => {}
                }
            }
            i += 1;
        }
        // No free block: borrow single addresses from other nodes' blocks (lend area).
        let foreign: Vec<(u128, String, u32)> = self
            .state
            .blocks
            .iter()
            .filter(|(_, r)| r.spec.node != self.conf.node)
            .filter_map(|(n, r)| Some((l.index_of(n)?, n.clone(), r.spec.lend_from)))
            .collect();
        for (i, name, lend) in foreign {
            for _ in 0..16 {
                let Some(o) = self.free_offset(l, &name, i, None, lend) else {
                    break;
                };
                let op = Op {
                    block: name.clone(),
                    offset: o,
                    owner: owner.key.clone(),
                    alloc: Some(owner.allocation(&self.conf.node)),
                };
                if self.take(op)? {
                    return Ok(l.addr(i, o));
                }
            }
        }
        let used: usize = self
            .state
            .blocks
            .iter()
            .filter(|(n, _)| l.index_of(n).is_some())
            .map(|(_, r)| r.spec.allocations.len())
            .sum();
        Err(Error::Exhausted(format!(
            "no free address in range {} of network {}: every block is claimed and full ({used} addresses in use); delete pods or widen the range",
            l.range.subnet, self.conf.network
        )))
    }

    fn allocate_requested(&mut self, l: &Layout, owner: &Owner, ip: IpAddr) -> Result<IpAddr> {
        if !l.range.assignable(ip) {
            return Err(Error::Config(format!(
                "requested IP {ip} is not assignable in range {} (outside range_start..range_end, excluded, the gateway, or a network/broadcast address)",
                l.range.subnet
            )));
        }
        let (i, o) = l.locate(ip).ok_or_else(|| {
            Error::Config(format!("requested IP {ip} is not in {}", l.range.subnet))
        })?;
        let name = l.block_name(i);
        if self.kube.offline().is_none() {
            self.ensure_pool(l)?;
            match self.kube.get_block(&name)? {
                Some(b) => {
                    if let Some((n, r)) = remote_of(&b) {
                        self.state.blocks.insert(n, r);
                    }
                }
                None => {
                    if let Write::Done(b) =
                        self.kube.create_block(&l.new_block(i, &self.conf.node))?
                        && let Some((n, r)) = remote_of(&b)
                    {
                        self.state.blocks.insert(n, r);
                    }
                    if let Some(b) = self.kube.get_block(&name)?
                        && let Some((n, r)) = remote_of(&b)
                    {
                        self.state.blocks.insert(n, r);
                    }
                }
            }
        }
        let Some(remote) = self.state.blocks.get(&name).cloned() else {
            return Err(Error::Unreachable(format!(
                "{}: requested IP {ip} is in a block this node has not seen",
                self.kube.offline().unwrap_or("API server unreachable")
            )));
        };
        let mine = remote.spec.node == self.conf.node;
        if !mine && o < remote.spec.lend_from {
            return Err(Error::Taken(format!(
                "requested IP {ip} is in block {} of node {} below its lend line (offset {o} < {}): that node may hand it out while the API server is unreachable, so it can only be requested on node {}",
                remote.spec.cidr, remote.spec.node, remote.spec.lend_from, remote.spec.node
            )));
        }
        if self.kube.offline().is_some() && (!mine || o >= remote.spec.lend_from) {
            return Err(Error::Unreachable(format!(
                "{}: requested IP {ip} is in the lend area of block {}, which needs the API server",
                self.kube.offline().unwrap_or_default(),
                remote.spec.cidr
            )));
        }
        if let Some(a) = self
            .state
            .view(&name, now())
            .and_then(|v| v.allocations.get(&o.to_string()).cloned())
        {
            return Err(Error::Taken(format!(
                "requested IP {ip} is already allocated to {} (pod {}/{}, node {})",
                a.owner, a.namespace, a.pod, a.node
            )));
        }
        let op = Op {
            block: name,
            offset: o,
            owner: owner.key.clone(),
            alloc: Some(owner.allocation(&self.conf.node)),
        };
        if self.take(op)? {
            Ok(ip)
        } else {
            Err(Error::Taken(format!(
                "requested IP {ip} was allocated to another pod meanwhile"
            )))
        }
    }

    /// Makes sure the claim `owner` holds `ip` (recorded in its status): the block's
    /// allocation is the claim's already, or the address is free and taken for it.
    pub fn claimed(&mut self, l: &Layout, owner: &Owner, ip: IpAddr) -> Result<IpAddr> {
        let ip = self.claimed_in_pool(l, owner, ip)?;
        if !self.conf.enable_overlapping_ranges {
            return Ok(ip);
        }
        match self.reserve(l, owner, ip)? {
            None => Ok(ip),
            Some(who) => Err(Error::Taken(format!(
                "IPAMClaim address {ip} is held by {who} through an overlapping range"
            ))),
        }
    }

    fn claimed_in_pool(&mut self, l: &Layout, owner: &Owner, ip: IpAddr) -> Result<IpAddr> {
        let (i, o) = l.locate(ip).ok_or_else(|| {
            Error::Config(format!(
                "IPAMClaim address {ip} is not in {}",
                l.range.subnet
            ))
        })?;
        if let Some(b) = self.kube.get_block(&l.block_name(i))?
            && let Some((n, r)) = remote_of(&b)
        {
            self.state.blocks.insert(n, r);
            if let Some(a) = b.spec.allocations.get(&o.to_string()) {
                if a.owner == owner.key {
                    return Ok(ip);
                }
                return Err(Error::Taken(format!(
                    "IPAMClaim address {ip} is allocated to {} (pod {}/{}): the claim's record and the block disagree",
                    a.owner, a.namespace, a.pod
                )));
            }
        }
        self.allocate_requested(l, owner, ip)
    }

    /// Releases everything `owner` holds in layout `l`: journalled first, then written
    /// when the API server answers. Returns the number of addresses released.
    pub fn release(&mut self, l: &Layout, owner: &str) -> Result<usize> {
        let n = self.release_held(l, owner)?;
        self.taken.releases += n as u64;
        Ok(n)
    }

    fn release_held(&mut self, l: &Layout, owner: &str) -> Result<usize> {
        let t = now();
        let mut ops = Vec::new();
        for name in self.state.blocks.keys() {
            if l.index_of(name).is_none() {
                continue;
            }
            if let Some(v) = self.state.view(name, t) {
                for (o, a) in &v.allocations {
                    if a.owner == owner
                        && let Ok(o) = o.parse()
                    {
                        ops.push(Op {
                            block: name.clone(),
                            offset: o,
                            owner: owner.to_string(),
                            alloc: None,
                        });
                    }
                }
            }
        }
        let n = ops.len();
        if n > 0 {
            let res = self.release_reservations(l, &ops);
            self.state.pending.extend(ops);
            self.state.pending_res.extend(res);
            self.save()?;
        }
        match self.sync_all() {
            Ok(()) => {}
            Err(Error::Unreachable(e)) => {
                tracing::info!("release of {owner} journalled, not yet written: {e}");
                return Ok(n);
            }
            Err(e) => return Err(e),
        }
        if n == 0 && self.kube.offline().is_none() {
            // Not known here (state lost, or allocated elsewhere): look on the server.
            let blocks = match self.refresh(l) {
                Ok(b) => b,
                Err(Error::Unreachable(_)) => return Ok(0),
                Err(e) => return Err(e),
            };
            let mut found = Vec::new();
            for b in blocks {
                let Some(name) = b.metadata.name.clone() else {
                    continue;
                };
                for (o, a) in &b.spec.allocations {
                    if a.owner == owner
                        && let Ok(o) = o.parse()
                    {
                        found.push(Op {
                            block: name.clone(),
                            offset: o,
                            owner: owner.to_string(),
                            alloc: None,
                        });
                    }
                }
            }
            let res = self.release_reservations(l, &found);
            let n = found.len();
            self.state.pending.extend(found);
            self.state.pending_res.extend(res);
            if n > 0 {
                self.save()?;
                if let Err(e) = self.sync_all() {
                    tracing::info!("release of {owner} journalled, not yet written: {e}");
                }
            }
            return Ok(n);
        }
        Ok(n)
    }

    /// The reservation releases that go with the block releases `ops` (when overlapping
    /// ranges are cross-checked, or this node holds the reservation).
    fn release_reservations(&self, l: &Layout, ops: &[Op]) -> Vec<ResOp> {
        ops.iter()
            .filter_map(|op| {
                let ip = l.addr(l.index_of(&op.block)?, op.offset);
                let name = reservation_name(&self.conf.network_name, ip);
                (self.conf.enable_overlapping_ranges || self.state.reservations.contains_key(&name))
                    .then(|| ResOp {
                        name,
                        ip: ip.to_string(),
                        pool: l.pool.clone(),
                        owner: op.owner.clone(),
                        holder: None,
                    })
            })
            .collect()
    }

    /// Deletes this node's blocks of `l` that have been empty for `grace` (precondition:
    /// the resourceVersion in which they were seen empty). Returns how many.
    pub fn release_empty_blocks(&mut self, l: &Layout, grace: Duration) -> Result<usize> {
        let t = now();
        let pending: std::collections::BTreeSet<String> =
            self.state.pending.iter().map(|o| o.block.clone()).collect();
        let empty: Vec<(String, String)> = self
            .state
            .blocks
            .iter()
            .filter(|(n, r)| {
                l.index_of(n).is_some()
                    && r.spec.node == self.conf.node
                    && !pending.contains(*n)
                    && r.spec.allocations.is_empty()
                    && r.spec.empty_since.is_some_and(|s| s + grace.as_secs() <= t)
            })
            .map(|(n, r)| (n.clone(), r.rv.clone()))
            .collect();
        let mut n = 0;
        for (name, rv) in empty {
            match self.kube.delete_block(&name, &rv)? {
                Write::Done(()) | Write::Gone => {
                    self.state.blocks.remove(&name);
                    n += 1;
                }
                Write::Conflict => {}
            }
        }
        self.save()?;
        Ok(n)
    }
}

/// The address `ip` in `r` as a CNI IP config.
fn ip_config(ip: IpAddr, r: &IpRange) -> Result<IpConfig> {
    Ok(IpConfig {
        address: IpNet::new(ip, r.subnet.prefix_len())
            .map_err(|e| Error::Config(format!("{ip}/{}: {e}", r.subnet.prefix_len())))?,
        gateway: r.gateway,
        interface: None,
        extra: Default::default(),
    })
}

/// Writes the node's journal to the API server (the agent calls this periodically, so
/// what an ADD or DEL journalled while the API server was unreachable is written even
/// when no further CNI call comes). Returns the number of ops still pending.
pub fn sync_journal(conf: &ClusterIpamConfig) -> Result<usize> {
    let kube = Kube::new(conf.kubeconfig.as_deref(), conf.api_timeout)?;
    let mut a = Allocator::open(conf, kube)?;
    match a.sync_all() {
        Ok(()) | Err(Error::Unreachable(_)) => Ok(a.state.pending.len()),
        Err(e) => Err(e),
    }
}

/// Writes the journal of the data directory `data_dir` of node `node` (the agent's
/// periodic pass: it knows the directories, not the networks' configurations). A directory
/// without state yet is left alone. Returns the number of ops still pending.
pub fn sync_data_dir(data_dir: &std::path::Path, node: &str, kube: Kube) -> Result<usize> {
    if !data_dir.join("state.json").exists() {
        return Ok(0);
    }
    let conf = ClusterIpamConfig::state_only(data_dir, node);
    let mut a = Allocator::open(&conf, kube)?;
    match a.sync_all() {
        Ok(()) | Err(Error::Unreachable(_)) => Ok(a.state.pending.len()),
        Err(e) => Err(e),
    }
}

/// ADD: one address per range for `owner`; on failure of a later range the earlier ones
/// are released again.
pub fn add(conf: &ClusterIpamConfig, owner: &Owner) -> Result<CniResult> {
    let kube = Kube::new(conf.kubeconfig.as_deref(), conf.api_timeout)?;
    let mut a = Allocator::open(conf, kube)?;
    if let Some(claim) = &conf.claim {
        return add_claimed(&mut a, conf, owner, claim);
    }
    let mut ips = Vec::new();
    for r in &conf.ranges {
        let l = Layout::new(conf, r);
        let req = conf
            .requested
            .iter()
            .copied()
            .find(|ip| r.subnet.contains(ip));
        match a.allocate(&l, owner, req) {
            Ok(ip) => ips.push(ip_config(ip, r)?),
            Err(e) => {
                for r2 in &conf.ranges[..ips.len()] {
                    let _ = a.release(&Layout::new(conf, r2), &owner.key);
                }
                return Err(e);
            }
        }
    }
    tracing::debug!("ADD {}: {} API requests", owner.key, a.kube.requests);
    Ok(CniResult {
        ips,
        routes: conf.routes.clone(),
        dns: conf.dns.clone(),
        ..CniResult::default()
    })
}

/// The owner key of an IPAMClaim's addresses.
pub fn claim_owner(namespace: &str, name: &str) -> String {
    format!("claim:{namespace}/{name}")
}

fn answered(what: &str, s: kube::core::Status) -> Error {
    Error::Api(format!(
        "{what}: API server answered {}: {}",
        s.code, s.message
    ))
}

/// ADD through an NPWG IPAMClaim: the claim's `status.ips` are the pod's addresses (kept
/// in the blocks under the claim's owner key, not the pod's); a claim without addresses
/// for a range gets one allocated and recorded in its status.
fn add_claimed(
    a: &mut Allocator<'_>,
    conf: &ClusterIpamConfig,
    pod: &Owner,
    claim: &str,
) -> Result<CniResult> {
    use crate::crd::IPAMClaim;
    use kube::api::{Api, Patch, PatchParams};
    if pod.namespace.is_empty() {
        return Err(Error::Config(format!(
            "ipam-claim-reference {claim}: the runtime passed no K8S_POD_NAMESPACE"
        )));
    }
    let ns = pod.namespace.clone();
    let what = format!("get IPAMClaim {ns}/{claim}");
    let (n2, c2) = (ns.clone(), claim.to_string());
    let obj = match a.kube.raw(&what, async move |c| {
        Api::<IPAMClaim>::namespaced(c, &n2).get(&c2).await
    })? {
        Ok(o) => o,
        Err(s) if s.code == 404 => {
            return Err(Error::Config(format!(
                "IPAMClaim {ns}/{claim} (ipam-claim-reference) does not exist"
            )));
        }
        Err(s) => return Err(answered(&what, s)),
    };
    let owner = Owner {
        key: claim_owner(&ns, claim),
        pod_uid: String::new(),
        ..pod.clone()
    };
    let have: Vec<IpAddr> = obj
        .status
        .as_ref()
        .map(|s| {
            s.ips
                .iter()
                .filter_map(|i| {
                    i.parse::<IpNet>()
                        .map(|n| n.addr())
                        .or_else(|_| i.parse())
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ips = Vec::new();
    for r in &conf.ranges {
        let l = Layout::new(conf, r);
        let ip = match have.iter().copied().find(|ip| r.subnet.contains(ip)) {
            Some(ip) => a.claimed(&l, &owner, ip)?,
            None => a.allocate(&l, &owner, None)?,
        };
        ips.push(ip_config(ip, r)?);
    }
    let want: Vec<String> = ips.iter().map(|i| i.address.to_string()).collect();
    if obj.status.as_ref().map(|s| &s.ips) != Some(&want) {
        let what = format!("update IPAMClaim {ns}/{claim} status");
        let c2 = claim.to_string();
        let patch = serde_json::json!({"status": {"ips": want}});
        a.kube
            .raw(&what, async move |c| {
                Api::<IPAMClaim>::namespaced(c, &ns)
                    .patch_status(&c2, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            })?
            .map_err(|s| answered(&what, s))?;
    }
    Ok(CniResult {
        ips,
        routes: conf.routes.clone(),
        dns: conf.dns.clone(),
        ..CniResult::default()
    })
}

/// DEL: releases what `owner` holds; never fails because the API server is unreachable
/// (the release is journalled and written later), and waits for it at most
/// [`DEL_TIMEOUT`] per request.
pub fn del(conf: &ClusterIpamConfig, owner: &Owner) -> Result<()> {
    if let Some(claim) = &conf.claim {
        // The claim keeps its addresses until it is deleted (the reconciler frees them).
        tracing::info!("DEL {}: addresses stay with IPAMClaim {claim}", owner.key);
        return Ok(());
    }
    let mut kube = Kube::new(conf.kubeconfig.as_deref(), conf.api_timeout)?;
    kube.set_timeout(conf.api_timeout.min(DEL_TIMEOUT));
    let mut a = Allocator::open(conf, kube)?;
    for r in &conf.ranges {
        let l = Layout::new(conf, r);
        a.release(&l, &owner.key)?;
        if a.kube.offline().is_none()
            && let Err(e) = a.release_empty_blocks(&l, conf.block_release_grace)
        {
            tracing::info!("empty blocks of {} not released: {e}", l.pool);
        }
    }
    Ok(())
}
