//! Reconciliation, for the node agent (on pod deletion events and periodically) or any
//! process with the RBAC: frees allocations whose pod UID no longer exists (an
//! IPAMClaim's: whose claim no longer exists) and deletes
//! empty blocks of nodes that are gone. Never races a fresh allocation: blocks are listed
//! *before* pods, so every allocation seen was made for a pod that existed before the pod
//! list was taken (a CNI ADD runs for an existing pod); it compares pod UIDs, never
//! names; and it leaves allocations younger than `min_age`. Every write is conditional on
//! the resourceVersion it was computed from.

use crate::alloc::now;
use crate::api::{Kube, Write};
use crate::crd::IpBlock;
use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
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
}

fn api(what: &str, s: kube::core::Status) -> Error {
    Error::Api(format!(
        "{what}: API server answered {}: {}",
        s.code, s.message
    ))
}

/// One reconciliation pass over every block of the cluster.
pub fn reconcile(kube: &mut Kube, min_age: Duration) -> Result<Report> {
    let blocks: Vec<IpBlock> = kube
        .raw("list IpBlocks", async |c| {
            Api::<IpBlock>::all(c).list(&ListParams::default()).await
        })?
        .map_err(|s| api("list IpBlocks", s))?
        .items;
    let pods: BTreeSet<String> = kube
        .raw("list Pods", async |c| {
            Api::<Pod>::all(c)
                .list_metadata(&ListParams::default())
                .await
        })?
        .map_err(|s| api("list Pods", s))?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let nodes: BTreeSet<String> = kube
        .raw("list Nodes", async |c| {
            Api::<Node>::all(c)
                .list_metadata(&ListParams::default())
                .await
        })?
        .map_err(|s| api("list Nodes", s))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let claims: BTreeSet<String> = kube
        .raw("list IPAMClaims", async |c| {
            Api::<crate::crd::IPAMClaim>::all(c)
                .list_metadata(&ListParams::default())
                .await
        })?
        .map_err(|s| api("list IPAMClaims", s))?
        .items
        .into_iter()
        .filter_map(|m| {
            Some(crate::alloc::claim_owner(
                &m.metadata.namespace?,
                &m.metadata.name?,
            ))
        })
        .collect();
    let mut report = Report::default();
    let t = now();
    for mut b in blocks {
        let Some(name) = b.metadata.name.clone() else {
            continue;
        };
        // Decided on this listing only: a re-read after a conflict may hold allocations
        // made after the pod list was taken, which must not be judged against it.
        let dead: Vec<(String, String)> = b
            .spec
            .allocations
            .iter()
            .filter(|(_, a)| {
                if a.owner.starts_with("claim:") {
                    !claims.contains(&a.owner)
                } else {
                    !a.pod_uid.is_empty() && !pods.contains(&a.pod_uid)
                }
            })
            .filter(|(_, a)| {
                let young = a.created + min_age.as_secs() > t;
                if young {
                    report.too_young += 1;
                }
                !young
            })
            .map(|(o, a)| (o.clone(), a.owner.clone()))
            .collect();
        for _ in 0..8 {
            let mut nb = b.clone();
            let mut n = 0;
            for (o, owner) in &dead {
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
                break;
            }
            if nb.spec.allocations.is_empty() && nb.spec.empty_since.is_none() {
                nb.spec.empty_since = Some(t);
            }
            match kube.replace_block(&nb)? {
                Write::Done(done) => {
                    report.freed += n;
                    b = done;
                    break;
                }
                Write::Conflict => match kube.get_block(&name)? {
                    Some(fresh) => b = fresh,
                    None => break,
                },
                Write::Gone => break,
            }
        }
        if !nodes.contains(&b.spec.node)
            && b.spec.allocations.is_empty()
            && let Some(rv) = b.metadata.resource_version.clone()
            && let Write::Done(()) = kube.delete_block(&name, &rv)?
        {
            tracing::info!("deleted block {} of gone node {}", b.spec.cidr, b.spec.node);
            report.blocks_deleted += 1;
        }
    }
    Ok(report)
}
