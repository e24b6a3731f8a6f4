//! Reconciliation, for the node agent (on pod deletion events and periodically) or any
//! process with the RBAC: frees allocations whose pod UID no longer exists (an
//! IPAMClaim's: whose claim no longer exists) and deletes empty blocks of nodes that are
//! gone; deletes the address reservations (`enable_overlapping_ranges`) that no block
//! allocation backs any more.
//!
//! It never races a fresh allocation: blocks are listed *before* pods, so every
//! allocation seen was made for a pod that existed before the pod list was taken (a CNI
//! ADD runs for an existing pod); it compares pod UIDs, never names; and it leaves
//! allocations younger than `min_age`. Every write is conditional on the resourceVersion
//! it was computed from. Reservations are listed before the blocks: an ADD writes its block
//! allocation before its reservation, so a reservation seen whose allocation is not in the
//! later block listing was released (or its ADD rolled back or killed); younger ones than
//! `min_age` are left, and a deletion is conditional on the reservation's UID.
//!
//! [`reconcile_node`] is the agent's pass: each agent judges the allocations made on its
//! own node (against the pods of its node only, a field-selected listing) and those made
//! on nodes that no longer exist, so no two agents write the same allocation unless a node
//! is gone, and then the preconditions settle it. [`reconcile`] judges every allocation of
//! the cluster at once (a tool, or a test).

use crate::alloc::{claim_owner, now};
use crate::api::{Kube, Write};
use crate::config::{from_u128, to_u128};
use crate::crd::{Allocation, IPAMClaim, IpBlock, IpPool, IpReservation};
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Allocations freed (pod UID gone).
    pub freed: usize,
    /// Blocks deleted (empty, node gone).
    pub blocks_deleted: usize,
    /// Allocations kept because they are younger than `min_age`.
    pub too_young: usize,
    /// Reservations deleted (no block allocation backs them).
    pub reservations_freed: usize,
}

/// The usage of one pool, as the pass saw it (after its own changes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// Pool name.
    pub pool: String,
    /// Addresses in the pool's subnet (0 when the IpPool object is not found).
    pub size: u128,
    /// Blocks claimed, by every node.
    pub blocks: usize,
    /// Addresses allocated, by every node.
    pub allocated: usize,
    /// Blocks claimed by this node.
    pub node_blocks: usize,
    /// Addresses allocated in this node's blocks.
    pub node_allocated: usize,
}

/// What [`reconcile_node`] did and saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodePass {
    /// Allocations freed, blocks deleted.
    pub report: Report,
    /// Usage per pool.
    pub pools: Vec<PoolUsage>,
    /// The IpBlock CRD is not installed (404): meta-ipam is not in use in this cluster.
    pub not_installed: bool,
}

fn api(what: &str, s: kube::core::Status) -> Error {
    Error::Api(format!(
        "{what}: API server answered {}: {}",
        s.code, s.message
    ))
}

/// Every block; `None` when the IpBlock type is not installed.
fn list_blocks(kube: &mut Kube) -> Result<Option<Vec<IpBlock>>> {
    match kube.raw("list IpBlocks", async |c| {
        Api::<IpBlock>::all(c).list(&ListParams::default()).await
    })? {
        Ok(l) => Ok(Some(l.items)),
        Err(s) if s.code == 404 => Ok(None),
        Err(s) => Err(api("list IpBlocks", s)),
    }
}

/// UIDs of the pods matching `fields` (every pod when empty).
fn pod_uids(kube: &mut Kube, fields: &str) -> Result<BTreeSet<String>> {
    let lp = if fields.is_empty() {
        ListParams::default()
    } else {
        ListParams::default().fields(fields)
    };
    let what = if fields.is_empty() {
        "list Pods".to_string()
    } else {
        format!("list Pods ({fields})")
    };
    Ok(kube
        .raw(&what, async move |c| {
            Api::<Pod>::all(c).list_metadata(&lp).await
        })?
        .map_err(|s| api(&what, s))?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect())
}

fn node_names(kube: &mut Kube) -> Result<BTreeSet<String>> {
    Ok(kube
        .raw("list Nodes", async |c| {
            Api::<Node>::all(c)
                .list_metadata(&ListParams::default())
                .await
        })?
        .map_err(|s| api("list Nodes", s))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// The owner keys of every IPAMClaim; `None` when the IPAMClaim type is not installed
/// (then no claim allocation is judged).
fn claim_owners(kube: &mut Kube) -> Result<Option<BTreeSet<String>>> {
    match kube.raw("list IPAMClaims", async |c| {
        Api::<IPAMClaim>::all(c)
            .list_metadata(&ListParams::default())
            .await
    })? {
        Ok(l) => Ok(Some(
            l.items
                .into_iter()
                .filter_map(|m| Some(claim_owner(&m.metadata.namespace?, &m.metadata.name?)))
                .collect(),
        )),
        Err(s) if s.code == 404 => Ok(None),
        Err(s) => Err(api("list IPAMClaims", s)),
    }
}

/// Every reservation; `None` when the IpReservation type is not installed.
fn list_reservations(kube: &mut Kube) -> Result<Option<Vec<IpReservation>>> {
    match kube.raw("list IpReservations", async |c| {
        Api::<IpReservation>::all(c)
            .list(&ListParams::default())
            .await
    })? {
        Ok(l) => Ok(Some(l.items)),
        Err(s) if s.code == 404 => Ok(None),
        Err(s) => Err(api("list IpReservations", s)),
    }
}

/// `(owner, address)` of every allocation in `blocks`.
fn held_addresses<'a>(blocks: impl Iterator<Item = &'a IpBlock>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for b in blocks {
        let Ok(net) = b.spec.cidr.parse::<ipnet::IpNet>() else {
            continue;
        };
        let base = to_u128(net.network());
        for (o, a) in &b.spec.allocations {
            if let Ok(o) = o.parse::<u128>() {
                let ip = from_u128(net.network(), base + o);
                out.insert((a.owner.clone(), ip.to_string()));
            }
        }
    }
    out
}

/// Deletes the reservations `judge` selects that no allocation in `held` backs and that
/// are older than `min_age`.
fn free_reservations(
    kube: &mut Kube,
    reservations: Vec<IpReservation>,
    held: &BTreeSet<(String, String)>,
    judge: impl Fn(&Allocation) -> bool,
    min_age: Duration,
    report: &mut Report,
) -> Result<()> {
    let t = now();
    for r in reservations {
        let h = &r.spec.holder;
        if !judge(h) || held.contains(&(h.owner.clone(), r.spec.ip.clone())) {
            continue;
        }
        if h.created + min_age.as_secs() > t {
            report.too_young += 1;
            continue;
        }
        let (Some(name), Some(uid)) = (&r.metadata.name, &r.metadata.uid) else {
            continue;
        };
        if let Write::Done(()) = kube.delete_reservation(name, uid)? {
            tracing::info!(
                "deleted reservation of {} for {}: no block allocation backs it",
                r.spec.ip,
                h.owner
            );
            report.reservations_freed += 1;
        }
    }
    Ok(())
}

fn is_claim(a: &Allocation) -> bool {
    a.owner.starts_with("claim:")
}

/// Removes from `b` the allocations `dead` says are dead and older than `min_age`
/// (decided on this listing only: a re-read after a conflict may hold allocations made
/// after the pod list was taken, which must not be judged against it). Returns the block
/// as last written or read.
fn free(
    kube: &mut Kube,
    mut b: IpBlock,
    dead: impl Fn(&Allocation) -> bool,
    min_age: Duration,
    report: &mut Report,
) -> Result<Option<IpBlock>> {
    let Some(name) = b.metadata.name.clone() else {
        return Ok(Some(b));
    };
    let t = now();
    let doomed: Vec<(String, String)> = b
        .spec
        .allocations
        .iter()
        .filter(|(_, a)| dead(a))
        .filter(|(_, a)| {
            let young = a.created + min_age.as_secs() > t;
            if young {
                report.too_young += 1;
            }
            !young
        })
        .map(|(o, a)| (o.clone(), a.owner.clone()))
        .collect();
    if doomed.is_empty() {
        return Ok(Some(b));
    }
    for _ in 0..8 {
        let mut nb = b.clone();
        let mut n = 0;
        for (o, owner) in &doomed {
            if nb
                .spec
                .allocations
                .get(o)
                .is_some_and(|a| &a.owner == owner)
            {
                nb.spec.allocations.remove(o);
                n += 1;
            }
        }
        if n == 0 {
            return Ok(Some(b));
        }
        if nb.spec.allocations.is_empty() && nb.spec.empty_since.is_none() {
            nb.spec.empty_since = Some(t);
        }
        match kube.replace_block(&nb)? {
            Write::Done(done) => {
                for (o, owner) in &doomed {
                    tracing::info!(
                        "freed {} offset {o} of {owner}: its pod is gone",
                        nb.spec.cidr
                    );
                }
                report.freed += n;
                return Ok(Some(done));
            }
            Write::Conflict => match kube.get_block(&name)? {
                Some(fresh) => b = fresh,
                None => return Ok(None),
            },
            Write::Gone => return Ok(None),
        }
    }
    Ok(Some(b))
}

/// Deletes `b` if it is empty and its node is not in `nodes`; `true` when deleted.
fn delete_if_orphaned(kube: &mut Kube, b: &IpBlock, nodes: &BTreeSet<String>) -> Result<bool> {
    if nodes.contains(&b.spec.node) || !b.spec.allocations.is_empty() {
        return Ok(false);
    }
    let (Some(name), Some(rv)) = (&b.metadata.name, &b.metadata.resource_version) else {
        return Ok(false);
    };
    if let Write::Done(()) = kube.delete_block(name, rv)? {
        tracing::info!("deleted block {} of gone node {}", b.spec.cidr, b.spec.node);
        return Ok(true);
    }
    Ok(false)
}

/// Whether an allocation is dead, given the pods and claims that exist.
fn dead_by(a: &Allocation, pods: &BTreeSet<String>, claims: Option<&BTreeSet<String>>) -> bool {
    if is_claim(a) {
        claims.is_some_and(|c| !c.contains(&a.owner))
    } else {
        !a.pod_uid.is_empty() && !pods.contains(&a.pod_uid)
    }
}

/// One reconciliation pass over every block of the cluster.
pub fn reconcile(kube: &mut Kube, min_age: Duration) -> Result<Report> {
    let mut report = Report::default();
    let reservations = list_reservations(kube)?;
    let Some(blocks) = list_blocks(kube)? else {
        return Ok(report);
    };
    let pods = pod_uids(kube, "")?;
    let nodes = node_names(kube)?;
    let claims = claim_owners(kube)?;
    let mut kept = Vec::new();
    for b in blocks {
        let b = free(
            kube,
            b,
            |a| dead_by(a, &pods, claims.as_ref()),
            min_age,
            &mut report,
        )?;
        if let Some(b) = b {
            if delete_if_orphaned(kube, &b, &nodes)? {
                report.blocks_deleted += 1;
            } else {
                kept.push(b);
            }
        }
    }
    if let Some(r) = reservations {
        let held = held_addresses(kept.iter());
        free_reservations(kube, r, &held, |_| true, min_age, &mut report)?;
    }
    Ok(report)
}

/// Addresses in a pool's subnet, from its IpPool object.
fn pool_sizes(kube: &mut Kube) -> Result<BTreeMap<String, u128>> {
    let pools = match kube.raw("list IpPools", async |c| {
        Api::<IpPool>::all(c).list(&ListParams::default()).await
    })? {
        Ok(l) => l.items,
        Err(s) if s.code == 404 => Vec::new(),
        Err(s) => return Err(api("list IpPools", s)),
    };
    Ok(pools
        .into_iter()
        .filter_map(|p| {
            let net: ipnet::IpNet = p.spec.cidr.parse().ok()?;
            let bits = u32::from(net.max_prefix_len() - net.prefix_len());
            Some((
                p.metadata.name?,
                1u128.checked_shl(bits).unwrap_or(u128::MAX),
            ))
        })
        .collect())
}

/// The node agent's pass for node `node`: frees the allocations made on this node whose
/// pod (by UID, among this node's pods) or IPAMClaim is gone, and those made on nodes
/// that are gone whose pod is gone; deletes the empty blocks of gone nodes; and reports
/// every pool's usage. Allocations younger than `min_age` are left.
pub fn reconcile_node(kube: &mut Kube, node: &str, min_age: Duration) -> Result<NodePass> {
    let mut pass = NodePass::default();
    let reservations = list_reservations(kube)?;
    let Some(blocks) = list_blocks(kube)? else {
        pass.not_installed = true;
        return Ok(pass);
    };
    let nodes = node_names(kube)?;
    let mine = |a: &Allocation| a.node == node;
    let orphan = |a: &Allocation| a.node != node && !nodes.contains(&a.node);
    let any = |f: &dyn Fn(&Allocation) -> bool, claims: bool| {
        blocks.iter().any(|b| {
            b.spec
                .allocations
                .values()
                .any(|a| f(a) && is_claim(a) == claims)
        })
    };
    // Each listing only when something needs it.
    let own_pods = if any(&mine, false) {
        pod_uids(kube, &format!("spec.nodeName={node}"))?
    } else {
        BTreeSet::new()
    };
    let all_pods = if any(&orphan, false) {
        pod_uids(kube, "")?
    } else {
        BTreeSet::new()
    };
    let claims = if any(&mine, true) || any(&orphan, true) {
        claim_owners(kube)?
    } else {
        None
    };
    let sizes = pool_sizes(kube)?;
    let mut usage: BTreeMap<String, PoolUsage> = BTreeMap::new();
    let mut kept = Vec::new();
    for b in blocks {
        let dead = |a: &Allocation| {
            if mine(a) {
                dead_by(a, &own_pods, claims.as_ref())
            } else if orphan(a) {
                dead_by(a, &all_pods, claims.as_ref())
            } else {
                false
            }
        };
        let Some(b) = free(kube, b, dead, min_age, &mut pass.report)? else {
            continue;
        };
        if delete_if_orphaned(kube, &b, &nodes)? {
            pass.report.blocks_deleted += 1;
            continue;
        }
        let u = usage
            .entry(b.spec.pool.clone())
            .or_insert_with(|| PoolUsage {
                pool: b.spec.pool.clone(),
                size: sizes.get(&b.spec.pool).copied().unwrap_or(0),
                ..PoolUsage::default()
            });
        u.blocks += 1;
        u.allocated += b.spec.allocations.len();
        if b.spec.node == node {
            u.node_blocks += 1;
            u.node_allocated += b.spec.allocations.len();
        }
        kept.push(b);
    }
    if let Some(r) = reservations {
        let held = held_addresses(kept.iter());
        let judge = |a: &Allocation| a.node == node || !nodes.contains(&a.node);
        free_reservations(kube, r, &held, judge, min_age, &mut pass.report)?;
    }
    for (pool, size) in sizes {
        usage.entry(pool.clone()).or_insert(PoolUsage {
            pool,
            size,
            ..PoolUsage::default()
        });
    }
    pass.pools = usage.into_values().collect();
    Ok(pass)
}
