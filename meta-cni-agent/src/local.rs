//! Local mode: the nodes come from a static JSON file, re-read when its content changes.
//!
//! The file is a JSON array of `{"name", "podSubnet", "underlayIP", "vtepMAC"?}` objects
//! ([`LocalNode`]); a missing `vtepMAC` means the MAC the agent derives from the underlay IP
//! (what an agent without an explicit MAC uses). The entry named like this node gives its
//! pod subnet, its underlay address (unless `--underlay-ip` is set) and, when present, its
//! VTEP MAC. The file is checked every poll period; a change of its bytes makes it parsed
//! again, and a file that does not parse is reported once and otherwise ignored (the last
//! good content stays in force).

use super::dataplane::{Dataplane, Own};
use super::records::{LocalNode, parse_nodes_file};
use super::{AgentConfig, Error, Result, Shutdown};
use meta_overlay::NodeRecord;
use std::path::Path;

/// Reads and parses the file: `Ok(None)` when it does not exist.
/// A nodes file as read: its bytes and its entries.
type Content = (Vec<u8>, Vec<LocalNode>);

fn read(path: &Path) -> std::result::Result<Option<Content>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let text =
        std::str::from_utf8(&bytes).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))?;
    let nodes = parse_nodes_file(text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some((bytes, nodes)))
}

fn records(nodes: &[LocalNode]) -> Vec<NodeRecord> {
    // parse_nodes_file validated every MAC, so record() cannot fail here.
    nodes.iter().filter_map(|n| n.record().ok()).collect()
}

/// Local mode: see the module docs.
pub async fn run(cfg: &AgentConfig, path: &Path, mut shutdown: Shutdown) -> Result<()> {
    let name = cfg.node_name.clone();
    // Wait for a file with our entry.
    let mut said = String::new();
    let (mut last, nodes, me) = loop {
        let status = match read(path) {
            Ok(Some((bytes, nodes))) => match nodes.iter().find(|n| n.name == name).cloned() {
                Some(me) => break (bytes, nodes, me),
                None => format!("{} has no entry for node {name:?}; waiting", path.display()),
            },
            Ok(None) => format!("{} does not exist yet; waiting", path.display()),
            Err(e) => format!("{e}; waiting for a valid file"),
        };
        if status != said {
            tracing::warn!("{status}");
            said = status;
        }
        if shutdown.until(tokio::time::sleep(cfg.poll)).await.is_none() {
            return Ok(());
        }
    };
    let own = Own {
        name: name.clone(),
        pod_subnet: me.pod_subnet.trunc(),
        vtep_mac: match &me.vtep_mac {
            Some(_) => Some(me.mac().map_err(Error::Config)?),
            None => None,
        },
        underlay_ip: Some(me.underlay_ip),
    };
    tracing::info!(node = %name, pod_subnet = %own.pod_subnet, file = %path.display(), "own entry");
    let (dp, ready) = Dataplane::spawn(
        super::settings(cfg),
        own.clone(),
        super::open_netlink,
        super::firewall(cfg),
    )?;
    let Some(ready) = shutdown.until(ready).await else {
        dp.stop();
        return Ok(());
    };
    let ready = ready.map_err(|_| Error::DataplaneGone)??;
    if ready.record.underlay_ip != me.underlay_ip {
        tracing::warn!(
            "{} says node {name:?} has underlay IP {}, but this node uses {}: the other nodes will send to the wrong address",
            path.display(),
            me.underlay_ip,
            ready.record.underlay_ip
        );
    }
    tracing::info!("nodes file: {} nodes", nodes.len());
    dp.update(records(&nodes));
    let mut bad_content: Option<Vec<u8>> = None;
    loop {
        if shutdown.until(tokio::time::sleep(cfg.poll)).await.is_none() {
            break;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                if bad_content.as_deref() != Some(&[]) {
                    tracing::warn!("read {}: {e}; keeping the last node list", path.display());
                    bad_content = Some(Vec::new());
                }
                continue;
            }
        };
        if bytes == last || bad_content.as_ref() == Some(&bytes) {
            continue;
        }
        match read(path) {
            Ok(Some((b, nodes))) => {
                match nodes.iter().find(|n| n.name == name) {
                    Some(m) if m.pod_subnet.trunc() != own.pod_subnet => tracing::warn!(
                        "{} now gives node {name:?} the pod subnet {}, the overlay uses {}; restart the agent to apply",
                        path.display(),
                        m.pod_subnet,
                        own.pod_subnet
                    ),
                    Some(_) => {}
                    None => tracing::warn!(
                        "{} has no entry for node {name:?} any more; keeping this node's overlay",
                        path.display()
                    ),
                }
                tracing::info!("nodes file changed: {} nodes", nodes.len());
                dp.update(records(&nodes));
                last = b;
                bad_content = None;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("{e}; keeping the last node list");
                bad_content = Some(bytes);
            }
        }
    }
    dp.stop();
    Ok(())
}
