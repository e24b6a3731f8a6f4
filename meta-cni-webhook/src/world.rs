//! What the admission checks know of the cluster: the NADs (with what the checks need of
//! each, computed once when the NAD is stored) and, for deletion protection, which pods
//! are attached to which NAD. The webhook serves it from its watch caches
//! ([`crate::cache`]); `validate` builds it from the files it is given ([`Objects`]).

use ipnet::IpNet;
use meta_crd::{NadConfig, NetworkAttachmentDefinition};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A secondary VXLAN segment a NAD defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The plugin type as written (`vxlan`, `meta-vxlan`).
    pub plugin_type: String,
    /// The segment, as the vxlan delegate's ADD parser reads it.
    pub settings: meta_vxlan::config::Secondary,
}

/// An address range a NAD's bridge network allocates from (host-local or static).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRange {
    /// The node bridge.
    pub bridge: String,
    /// The range (host-local `subnet`/`ranges`, or a static address with its prefix).
    pub range: IpNet,
    /// The IPAM type.
    pub ipam_type: String,
}

/// One NAD as the checks see it.
#[derive(Debug, Clone)]
pub struct NadEntry {
    /// metadata.namespace.
    pub namespace: String,
    /// metadata.name.
    pub name: String,
    /// Its CNI configuration after the NPWG rules, or why there is none.
    pub config: Result<NadConfig, meta_crd::Error>,
    /// Its secondary VXLAN segments.
    pub segments: Vec<Segment>,
    /// The ranges its bridge plugins allocate from.
    pub ranges: Vec<BridgeRange>,
}

impl NadEntry {
    /// The entry for a NAD object (namespace and name from its metadata).
    pub fn new(nad: &NetworkAttachmentDefinition) -> NadEntry {
        let namespace = nad.metadata.namespace.clone().unwrap_or_default();
        let name = nad.metadata.name.clone().unwrap_or_default();
        let config = meta_crd::effective_config(nad);
        let list = config
            .as_ref()
            .ok()
            .and_then(NadConfig::json)
            .and_then(|v| match v {
                Value::Object(m) => Some(meta_bundle::as_conflist(m)),
                _ => None,
            });
        let (segments, ranges) = list.as_ref().map(facts).unwrap_or_default();
        NadEntry {
            namespace,
            name,
            config,
            segments,
            ranges,
        }
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The configuration list JSON (a single configuration made a list), if the NAD has
    /// a valid inline one.
    pub fn conflist(&self) -> Option<Value> {
        match self.config.as_ref().ok()?.json()? {
            Value::Object(m) => Some(meta_bundle::as_conflist(m)),
            _ => None,
        }
    }
}

/// The segments and bridge ranges of a configuration list (JSON). Plugins whose
/// configuration does not parse contribute nothing (the NAD check reports them).
pub fn facts(list: &Value) -> (Vec<Segment>, Vec<BridgeRange>) {
    let mut segments = Vec::new();
    let mut ranges = Vec::new();
    let Ok(parsed) = cni_core::ConfList::parse_delegated(list.to_string().as_bytes()) else {
        return (segments, ranges);
    };
    for i in 0..parsed.plugins().len() {
        let Ok(conf) = parsed.plugin_conf(i, None, &serde_json::Map::new()) else {
            continue;
        };
        let t = conf.plugin_type().to_string();
        let Some(d) = meta_bundle::bundled(&t) else {
            continue;
        };
        if d.serves("vxlan") {
            let args = cni_core::CmdArgs {
                env: meta_bundle::check_env(meta_bundle::CHECK_IFNAME),
                stdin: conf.to_bytes(),
                conf: conf.clone(),
            };
            if let Ok(r) = meta_vxlan::config::load(&args)
                && let meta_vxlan::config::Mode::Secondary(s) = r.mode
            {
                segments.push(Segment {
                    plugin_type: t.clone(),
                    settings: s,
                });
            }
        }
        if d.serves("bridge") {
            let bridge = conf
                .get("bridge")
                .and_then(Value::as_str)
                .filter(|b| !b.is_empty())
                .unwrap_or("cni0")
                .to_string();
            for (ipam_type, range) in ipam_ranges(conf.get("ipam")) {
                ranges.push(BridgeRange {
                    bridge: bridge.clone(),
                    range,
                    ipam_type,
                });
            }
        }
    }
    (segments, ranges)
}

/// The ranges of a host-local (`subnet`, `ranges[][].subnet`) or static
/// (`addresses[].address`) IPAM section.
fn ipam_ranges(ipam: Option<&Value>) -> Vec<(String, IpNet)> {
    let Some(ipam) = ipam else { return Vec::new() };
    let t = ipam.get("type").and_then(Value::as_str).unwrap_or("");
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| s.parse::<IpNet>().ok())
    };
    let mut out = Vec::new();
    match t {
        "host-local" | "meta-host-local" => {
            if let Some(n) = parse(ipam.get("subnet")) {
                out.push(n.trunc());
            }
            for set in ipam
                .get("ranges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for r in set.as_array().into_iter().flatten() {
                    if let Some(n) = parse(r.get("subnet")) {
                        out.push(n.trunc());
                    }
                }
            }
        }
        "static" | "meta-static" => {
            for a in ipam
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = parse(a.get("address")) {
                    out.push(IpNet::new(n.addr(), n.max_prefix_len()).unwrap_or(n));
                }
            }
        }
        _ => {}
    }
    out.into_iter().map(|n| (t.to_string(), n)).collect()
}

/// The networks a pod is attached to, from its network-status annotation: the names of
/// its entries (`namespace/name` for NADs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAttachments {
    /// Network names in the pod's network-status.
    pub networks: Vec<String>,
}

impl PodAttachments {
    /// From a pod's annotations; a missing or unreadable network-status is no attachment.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> PodAttachments {
        let networks = annotations
            .get(meta_crd::NETWORK_STATUS_ANNOTATION)
            .and_then(|v| meta_crd::parse_network_status(v).ok())
            .map(|s| s.into_iter().map(|n| n.name).collect())
            .unwrap_or_default();
        PodAttachments { networks }
    }

    /// Whether the NAD `namespace/name` is among them.
    pub fn uses(&self, id: &str) -> bool {
        self.networks.iter().any(|n| n == id)
    }
}

/// What the checks may ask of the cluster.
pub trait World: Send + Sync {
    /// The NAD `namespace/name`, if it exists.
    fn nad(&self, namespace: &str, name: &str) -> Option<Arc<NadEntry>>;
    /// Calls `f` for every NAD.
    fn for_each_nad(&self, f: &mut dyn FnMut(&NadEntry));
    /// The pods (`namespace/name`, sorted) attached to the NAD `namespace/name`.
    fn pods_attached(&self, namespace: &str, name: &str) -> Vec<String>;
}

/// An in-memory world: the objects `validate` reads, and test fixtures.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    nads: BTreeMap<(String, String), Arc<NadEntry>>,
    pods: BTreeMap<(String, String), PodAttachments>,
}

impl Objects {
    /// Stores (or replaces) a NAD.
    pub fn put_nad(&mut self, nad: &NetworkAttachmentDefinition) {
        let e = NadEntry::new(nad);
        self.nads
            .insert((e.namespace.clone(), e.name.clone()), Arc::new(e));
    }

    /// Removes a NAD.
    pub fn remove_nad(&mut self, namespace: &str, name: &str) {
        self.nads.remove(&(namespace.to_string(), name.to_string()));
    }

    /// Stores (or replaces) a pod's attachments.
    pub fn put_pod(&mut self, namespace: &str, name: &str, a: PodAttachments) {
        self.pods
            .insert((namespace.to_string(), name.to_string()), a);
    }

    /// Removes a pod.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) {
        self.pods.remove(&(namespace.to_string(), name.to_string()));
    }

    /// How many NADs.
    pub fn nad_count(&self) -> usize {
        self.nads.len()
    }
}

impl World for Objects {
    fn nad(&self, namespace: &str, name: &str) -> Option<Arc<NadEntry>> {
        self.nads
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn for_each_nad(&self, f: &mut dyn FnMut(&NadEntry)) {
        for e in self.nads.values() {
            f(e);
        }
    }

    fn pods_attached(&self, namespace: &str, name: &str) -> Vec<String> {
        let id = format!("{namespace}/{name}");
        self.pods
            .iter()
            .filter(|(_, a)| a.uses(&id))
            .map(|((ns, n), _)| format!("{ns}/{n}"))
            .collect()
    }
}
