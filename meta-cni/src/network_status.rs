//! The pod's `k8s.v1.cni.cncf.io/network-status` annotation: built from the journal entry's
//! results (exactly as Multus writes it, through [`meta_crd::network_statuses`]), published
//! after ADD, cleared after DEL.

use crate::config::MetaConf;
use crate::journal::{Entry, PodRef};
use crate::source::{LocalSource, Source};
use cni_core::{CniResult, Error, Result};

/// Network-status entries for all added attachments. The one marked default is the
/// attachment owning the `default-route`, else the cluster network.
pub fn network_status(entry: &Entry) -> Vec<meta_crd::NetworkStatus> {
    let has_default_route = entry
        .attachments
        .iter()
        .any(|a| !a.default_route.is_empty());
    let mut out = Vec::new();
    for a in &entry.attachments {
        let Some(r) = a.cni_result() else { continue };
        let summary = summary(&r);
        let default = if has_default_route {
            !a.default_route.is_empty()
        } else {
            a.is_cluster
        };
        let mut statuses = meta_crd::network_statuses(&summary, &a.network, default, None);
        // A result naming no pod interface (a legacy 0.1.0/0.2.0 plugin's has none): the
        // interface is the one the plugin was asked to configure.
        if !summary.interfaces.iter().any(|i| !i.sandbox.is_empty())
            && let [only] = statuses.as_mut_slice()
        {
            only.interface = a.ifname.clone();
        }
        out.extend(statuses);
    }
    out
}

/// What meta-crd needs of a CNI result.
fn summary(r: &CniResult) -> meta_crd::ResultSummary {
    meta_crd::ResultSummary {
        interfaces: r
            .interfaces
            .iter()
            .map(|i| meta_crd::ResultInterface {
                name: i.name.clone(),
                mac: i.mac.clone(),
                mtu: i.mtu.unwrap_or(0),
                sandbox: i.sandbox.clone(),
            })
            .collect(),
        ips: r
            .ips
            .iter()
            .map(|ip| meta_crd::ResultIp {
                address: ip.address.addr(),
                interface: ip.interface,
                gateway: ip.gateway,
            })
            .collect(),
        routes: r
            .routes
            .iter()
            .map(|rt| meta_crd::ResultRoute {
                dst: rt.dst,
                gw: rt.gw,
            })
            .collect(),
        dns: meta_crd::Dns {
            nameservers: r.dns.nameservers.clone(),
            domain: r.dns.domain.clone(),
            search: r.dns.search.clone(),
            options: r.dns.options.clone(),
        },
    }
}

/// ADD: writes the entry's network-status on its pod (a merge patch of that one annotation
/// with the UID precondition, or the local status file). Nothing without a pod.
pub fn publish(src: &mut dyn Source, entry: &Entry) -> Result<()> {
    let Some(p) = &entry.pod else { return Ok(()) };
    let value = meta_crd::network_status_annotation(&network_status(entry))
        .map_err(|e| Error::internal(e.to_string()))?;
    src.set_network_status(&p.namespace, &p.name, p.uid.as_deref(), &value)
        .map_err(|e| e.context("network-status"))
}

/// DEL, local mode: the pod's status file in the cache dir goes.
pub fn clear_local(conf: &MetaConf, pod: &PodRef) -> Result<()> {
    if let Some(dir) = &conf.local_nad_dir {
        LocalSource::new(dir.clone(), conf.cache_dir.join("status"))
            .clear_network_status(&pod.namespace, &pod.name)?;
        let _ = std::fs::remove_dir(conf.cache_dir.join("status"));
    }
    Ok(())
}

/// DEL, Kubernetes mode: the pod's network-status becomes `[]` once its attachments are
/// deleted, as Multus does on a DEL that still has the netns (the first of a sandbox's
/// DELs), so a pod whose sandbox is gone (a finished Job, a sandbox being recreated) shows
/// no stale addresses. Handed off ([`crate::handoff`]): DEL writes a job and returns, and
/// never waits on the API server; a failure to hand off is logged and never fails the DEL
/// (the attachments are deleted). The UID precondition keeps a recreated pod of the same
/// name untouched.
pub fn clear_api(conf: &MetaConf, netns: &str, pod: &PodRef) {
    let Some(kubeconfig) = &conf.kubeconfig else {
        return;
    };
    if netns.is_empty() || !std::path::Path::new(netns).exists() {
        return;
    }
    let job = crate::handoff::Job::new(pod, kubeconfig, conf.api_timeout_seconds);
    match crate::handoff::hand_off(
        &conf.cache_dir,
        &job,
        conf.log_file.as_deref(),
        conf.log_level.as_deref(),
    ) {
        Ok(()) => tracing::debug!(
            "DEL: clearing network-status of pod {}/{} handed off",
            pod.namespace,
            pod.name
        ),
        Err(e) => tracing::warn!(
            "DEL: cannot hand off clearing network-status of pod {}/{}: {e} (ignored: the attachments are deleted)",
            pod.namespace,
            pod.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Attachment, State};
    use serde_json::{Map, Value, json};

    fn attachment(
        network: &str,
        ifname: &str,
        is_cluster: bool,
        result: Option<Value>,
    ) -> Attachment {
        Attachment {
            network: network.into(),
            ifname: ifname.into(),
            conf: json!({}),
            cap_args: Map::new(),
            cni_args: None,
            default_route: vec![],
            is_cluster,
            state: if result.is_some() {
                State::Added
            } else {
                State::Planned
            },
            result,
        }
    }

    #[test]
    fn statuses_of_added_attachments_and_the_default_one() {
        let eth0 = json!({"cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}]});
        // a legacy plugin's result names no interface
        let net1 = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"}]});
        let mut entry = Entry {
            version: Entry::VERSION,
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/p".into(),
            cni_args: String::new(),
            pod: None,
            attachments: vec![
                attachment("cluster", "eth0", true, Some(eth0)),
                attachment("ns/a", "net1", false, Some(net1)),
                attachment("ns/b", "net2", false, None),
            ],
        };
        let st = network_status(&entry);
        let got: Vec<_> = st
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.interface.as_str(),
                    s.ips.clone(),
                    s.default,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("cluster", "eth0", vec!["10.0.0.2".to_string()], true),
                ("ns/a", "net1", vec!["10.1.0.2".to_string()], false),
            ]
        );
        // the default-route owner is the default network
        entry.attachments[1].default_route = vec!["10.1.0.1".parse().unwrap()];
        let defaults: Vec<_> = network_status(&entry).iter().map(|s| s.default).collect();
        assert_eq!(defaults, vec![false, true]);
    }
}
