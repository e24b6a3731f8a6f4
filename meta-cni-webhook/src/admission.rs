//! The admission checks: pure functions of the settings, what the webhook knows of the
//! cluster ([`World`]) and one request. `serve` and `validate` both run [`admit`].
//!
//! Every check that ADD also makes runs the code ADD runs (meta-crd's parsers and pod
//! rules, meta-bundle's per-plugin checks), so a refusal here carries the message that the
//! pod's ADD would have failed with.

use crate::world::{NadEntry, World};
use meta_crd::pod::{self, Isolation, PlannedInterface};
use meta_crd::{NadConfig, NetworkAttachmentDefinition};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The ServiceAccounts that may write network-status by default (deploy/rbac.yaml): the
/// plugin's, and the node agent's (which patches it for the plugin).
pub const DEFAULT_STATUS_WRITERS: &[&str] = &[
    "system:serviceaccount:kube-system:meta-cni",
    "system:serviceaccount:kube-system:meta-cni-agent",
];

/// What to do with a pod that names a NAD that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingNads {
    /// Refuse the pod (the default: its ADD would fail).
    #[default]
    Refuse,
    /// Admit it with a warning (tools that create pods before their NADs).
    Warn,
}

/// The settings; those shared with the meta plugin's configuration have its meaning and
/// must be given the same values.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `namespaceIsolation` and `globalNamespaces`.
    pub isolation: Isolation,
    /// `multusNamespace`: where unqualified default-network references are looked up.
    pub multus_namespace: String,
    /// `defaultNetworks`: attached as net1.. before the annotation's networks.
    pub default_networks: Vec<String>,
    /// `systemNamespaces`: pods there get no `defaultNetworks`.
    pub system_namespaces: Vec<String>,
    /// `forceExec`: bundled types that nodes exec instead of running in-process.
    pub force_exec: Vec<String>,
    /// The cluster overlay's VNI, which no NAD may use.
    pub cluster_vni: u32,
    /// Pods that name a missing NAD.
    pub missing_nads: MissingNads,
    /// Refuse deleting a NAD that running pods are attached to.
    pub protect_in_use: bool,
    /// The users that may set or change network-status.
    pub status_writers: Vec<String>,
    /// The interface of the cluster network in every pod.
    pub cluster_ifname: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            isolation: Isolation::default(),
            multus_namespace: "kube-system".into(),
            default_networks: Vec::new(),
            system_namespaces: vec!["kube-system".into()],
            force_exec: Vec::new(),
            cluster_vni: meta_overlay::DEFAULT_VNI,
            missing_nads: MissingNads::Refuse,
            protect_in_use: true,
            status_writers: DEFAULT_STATUS_WRITERS
                .iter()
                .map(|w| w.to_string())
                .collect(),
            cluster_ifname: "eth0".into(),
        }
    }
}

/// The operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CREATE.
    Create,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// CONNECT or anything else.
    Other,
}

impl Operation {
    /// From the AdmissionReview's `operation`.
    pub fn parse(s: &str) -> Operation {
        match s {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            _ => Operation::Other,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Other => "other",
        }
    }
}

/// The kind of object of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `k8s.cni.cncf.io` NetworkAttachmentDefinition.
    Nad,
    /// core Pod (or its status subresource).
    Pod,
    /// Anything else (admitted).
    Other,
}

impl Kind {
    /// From the request's `kind` (group and kind).
    pub fn of(group: &str, kind: &str) -> Kind {
        match (group, kind) {
            ("k8s.cni.cncf.io", "NetworkAttachmentDefinition") => Kind::Nad,
            ("", "Pod") => Kind::Pod,
            _ => Kind::Other,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Nad => "NetworkAttachmentDefinition",
            Kind::Pod => "Pod",
            Kind::Other => "other",
        }
    }
}

/// One admission request, as the checks need it.
#[derive(Debug, Clone)]
pub struct Request {
    /// What it is about.
    pub kind: Kind,
    /// The subresource (`status` for pods/status), empty for the object itself.
    pub sub_resource: String,
    /// The operation.
    pub operation: Operation,
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The requesting user.
    pub user: String,
    /// The new object (CREATE, UPDATE).
    pub object: Option<Value>,
    /// The old object (UPDATE, DELETE).
    pub old_object: Option<Value>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Admitted?
    pub allowed: bool,
    /// Why not (or nothing).
    pub message: Option<String>,
    /// Admission warnings (shown by kubectl).
    pub warnings: Vec<String>,
}

impl Decision {
    fn allow(warnings: Vec<String>) -> Decision {
        Decision {
            allowed: true,
            message: None,
            warnings,
        }
    }

    fn deny(message: String, warnings: Vec<String>) -> Decision {
        Decision {
            allowed: false,
            message: Some(message),
            warnings,
        }
    }
}

/// The verdict on one request.
pub fn admit(settings: &Settings, world: &dyn World, req: &Request) -> Decision {
    match req.kind {
        Kind::Nad => admit_nad(settings, world, req),
        Kind::Pod => admit_pod(settings, world, req),
        Kind::Other => Decision::allow(Vec::new()),
    }
}

fn admit_nad(settings: &Settings, world: &dyn World, req: &Request) -> Decision {
    match req.operation {
        Operation::Create | Operation::Update => {}
        Operation::Delete => return check_nad_delete(settings, world, req),
        Operation::Other => return Decision::allow(Vec::new()),
    }
    let Some(object) = &req.object else {
        return Decision::deny(
            format!("{} has no object", req.operation.label()),
            Vec::new(),
        );
    };
    let mut nad: NetworkAttachmentDefinition = match serde_json::from_value(object.clone()) {
        Ok(n) => n,
        Err(e) => {
            return Decision::deny(
                format!(
                    "NetworkAttachmentDefinition {}/{}: not a NetworkAttachmentDefinition object: {e}",
                    req.namespace, req.name
                ),
                Vec::new(),
            );
        }
    };
    if nad.metadata.name.as_deref().unwrap_or("").is_empty() {
        nad.metadata.name = Some(req.name.clone());
    }
    if nad.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        nad.metadata.namespace = Some(req.namespace.clone());
    }
    let mut warnings = Vec::new();
    match check_nad(settings, world, &nad, &mut warnings) {
        Ok(()) => Decision::allow(warnings),
        Err(m) => Decision::deny(m, warnings),
    }
}

/// The checks of a NAD that is created or updated, against the other NADs of `world`
/// (the NAD itself, when `world` has it, is not compared with itself). `Err` is the
/// refusal; `warnings` gets what is worth saying either way.
pub fn check_nad(
    settings: &Settings,
    world: &dyn World,
    nad: &NetworkAttachmentDefinition,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let namespace = nad.metadata.namespace.as_deref().unwrap_or("");
    let name = nad.metadata.name.as_deref().unwrap_or("");
    let id = format!("{namespace}/{name}");
    meta_crd::validate::validate_dns1123_subdomain(name)
        .map_err(|r| format!("NetworkAttachmentDefinition {id}: metadata.name: {r}"))?;
    let entry = NadEntry::new(nad);
    let list = match &entry.config {
        Err(e) => return Err(e.to_string()),
        Ok(NadConfig::ConfDir { name: n }) => {
            warnings.push(format!(
                "NetworkAttachmentDefinition {id}: spec.config is empty: every node must have network {n:?} in the meta plugin's confDir"
            ));
            return Ok(());
        }
        Ok(_) => entry.conflist().unwrap_or(Value::Null),
    };
    let env = meta_bundle::check_env(meta_bundle::CHECK_IFNAME);
    let notes = meta_bundle::check_list(&list, &Map::new(), None, &settings.force_exec, &env)
        .map_err(|e| format!("NetworkAttachmentDefinition {id}: {}", e.msg))?;
    warnings.extend(
        notes
            .iter()
            .map(|n| format!("NetworkAttachmentDefinition {id}: {n}")),
    );
    // Across NADs.
    for s in &entry.segments {
        if s.settings.vni == settings.cluster_vni {
            return Err(format!(
                "NetworkAttachmentDefinition {id}: plugin {}: vni {} is the VNI of the cluster overlay; choose another VNI",
                s.plugin_type, s.settings.vni
            ));
        }
    }
    let mut conflict = None;
    let mut overlaps = Vec::new();
    world.for_each_nad(&mut |other| {
        if conflict.is_some() || (other.namespace == namespace && other.name == name) {
            return;
        }
        for s in &entry.segments {
            for o in &other.segments {
                if o.settings.vni == s.settings.vni && conflict.is_none() {
                    let diff = differences(&s.settings, &o.settings);
                    if !diff.is_empty() {
                        conflict = Some(format!(
                            "NetworkAttachmentDefinition {id}: plugin {}: vni {} is already used by NetworkAttachmentDefinition {} with other settings ({}); one VNI is one segment: use the same settings or another VNI",
                            s.plugin_type,
                            s.settings.vni,
                            other.id(),
                            diff.join(", ")
                        ));
                    }
                }
            }
        }
        for r in &entry.ranges {
            for o in &other.ranges {
                if o.bridge == r.bridge
                    && (o.range.contains(&r.range.network()) || r.range.contains(&o.range.network()))
                {
                    overlaps.push(format!(
                        "NetworkAttachmentDefinition {id}: {} range {} on bridge {:?} overlaps {} range {} of NetworkAttachmentDefinition {}: pods of both networks can get the same address",
                        r.ipam_type,
                        r.range,
                        r.bridge,
                        o.ipam_type,
                        o.range,
                        other.id()
                    ));
                }
            }
        }
    });
    warnings.extend(overlaps);
    match conflict {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

/// The settings in which two segments with the same VNI differ, `field: here vs there`.
fn differences(
    a: &meta_vxlan::config::Secondary,
    b: &meta_vxlan::config::Secondary,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |field: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{field}: {x} here, {y} there"));
        }
    };
    cmp("port", a.port.to_string(), b.port.to_string());
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unset".into());
    cmp(
        "mtu",
        opt(a.mtu.map(|m| m.to_string())),
        opt(b.mtu.map(|m| m.to_string())),
    );
    cmp(
        "bridge",
        format!("{:?}", a.bridge),
        format!("{:?}", b.bridge),
    );
    let peers = |p: &Option<Vec<std::net::IpAddr>>| {
        opt(p.as_ref().map(|p| {
            format!(
                "[{}]",
                p.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }))
    };
    cmp("peers", peers(&a.peers), peers(&b.peers));
    cmp("learning", a.learning.to_string(), b.learning.to_string());
    cmp(
        "underlayInterface",
        format!("{:?}", a.underlay_interface),
        format!("{:?}", b.underlay_interface),
    );
    cmp(
        "localIP",
        format!("{:?}", a.local_ip),
        format!("{:?}", b.local_ip),
    );
    cmp(
        "stateDir",
        a.state_dir.display().to_string(),
        b.state_dir.display().to_string(),
    );
    out
}

/// How many attached pods a refused NAD deletion names.
const MAX_PODS_NAMED: usize = 10;

fn check_nad_delete(settings: &Settings, world: &dyn World, req: &Request) -> Decision {
    if !settings.protect_in_use {
        return Decision::allow(Vec::new());
    }
    let pods = world.pods_attached(&req.namespace, &req.name);
    if pods.is_empty() {
        return Decision::allow(Vec::new());
    }
    let mut named = pods
        .iter()
        .take(MAX_PODS_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if pods.len() > MAX_PODS_NAMED {
        named.push_str(&format!(" and {} more", pods.len() - MAX_PODS_NAMED));
    }
    Decision::deny(
        format!(
            "NetworkAttachmentDefinition {}/{} is in use by {} running pod{}: {named}; delete {} first (deletion protection: --protect-nads-in-use)",
            req.namespace,
            req.name,
            pods.len(),
            if pods.len() == 1 { "" } else { "s" },
            if pods.len() == 1 { "it" } else { "them" },
        ),
        Vec::new(),
    )
}

/// The annotations of an object (`metadata.annotations`), without decoding the rest.
fn annotations(object: Option<&Value>) -> BTreeMap<String, String> {
    object
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn admit_pod(settings: &Settings, world: &dyn World, req: &Request) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Decision::allow(Vec::new());
    }
    let new = annotations(req.object.as_ref());
    let old = annotations(req.old_object.as_ref());
    let changed = |key: &str| match req.operation {
        Operation::Create => new.contains_key(key),
        _ => new.get(key) != old.get(key),
    };
    // Who may write network-status.
    if changed(meta_crd::NETWORK_STATUS_ANNOTATION)
        && !settings.status_writers.iter().any(|w| w == &req.user)
    {
        return Decision::deny(
            format!(
                "pod {}/{}: annotation {} may be set or changed only by {} (the webhook's --status-writers), not by {:?}: it tells other tools which addresses the pod has",
                req.namespace,
                req.name,
                meta_crd::NETWORK_STATUS_ANNOTATION,
                settings.status_writers.join(", "),
                req.user
            ),
            Vec::new(),
        );
    }
    // The networks requested: on creation, and when the requests change (a status
    // update cannot change annotations that matter to ADD).
    if req.sub_resource.is_empty()
        && (changed(meta_crd::NETWORKS_ANNOTATION) || changed(meta_crd::DEFAULT_NETWORK_ANNOTATION))
    {
        let mut warnings = Vec::new();
        return match check_pod(
            settings,
            world,
            (&req.namespace, &req.name),
            &new,
            &mut warnings,
        ) {
            Ok(()) => Decision::allow(warnings),
            Err(m) => Decision::deny(m, warnings),
        };
    }
    Decision::allow(Vec::new())
}

/// The checks of a pod's network requests (its annotations), in the order of its ADD:
/// eth0 (the default-network annotation, if any), `defaultNetworks` as net1.., then the
/// networks annotation.
pub fn check_pod(
    settings: &Settings,
    world: &dyn World,
    pod: (&str, &str),
    annotations: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let (pod_ns, pod_name) = pod;
    let env_for = |ifname: &str| meta_bundle::check_env(ifname);
    let mut planned: Vec<(String, String, bool)> = Vec::new();
    // eth0.
    if let Some(value) = annotations.get(meta_crd::DEFAULT_NETWORK_ANNOTATION) {
        let sel = meta_crd::parse_default_network(value, &settings.multus_namespace)
            .map_err(|e| format!("pod {pod_ns}/{pod_name}: {e}"))?;
        let el = sel.network;
        let id = el.namespaced_name();
        settings.isolation.check(
            pod,
            "default-network",
            &el.namespace,
            &id,
            &settings.cluster_ifname,
        )?;
        if let Some(list) = nad_list(settings, world, &el.namespace, &el.name, warnings, || {
            format!("pod {pod_ns}/{pod_name}: default-network")
        })? {
            meta_bundle::check_list(
                &list,
                &Map::new(),
                None,
                &settings.force_exec,
                &env_for(&settings.cluster_ifname),
            )
            .map_err(|e| {
                format!(
                    "pod {pod_ns}/{pod_name}: network {id} ({}): {}",
                    settings.cluster_ifname, e.msg
                )
            })?;
        }
        planned.push((settings.cluster_ifname.clone(), id, false));
    } else {
        planned.push((
            settings.cluster_ifname.clone(),
            "cluster network".into(),
            false,
        ));
    }
    let mut idx = 0usize;
    if !settings.system_namespaces.iter().any(|s| s == pod_ns) {
        for dn in &settings.default_networks {
            idx += 1;
            planned.push((pod::default_ifname(idx), dn.clone(), false));
        }
    }
    if let Some(value) = annotations.get(meta_crd::NETWORKS_ANNOTATION) {
        let sel = meta_crd::parse_network_selection(value, pod_ns)
            .map_err(|e| format!("pod {pod_ns}/{pod_name}: {e}"))?;
        warnings.extend(
            sel.warnings
                .iter()
                .map(|w| format!("pod {pod_ns}/{pod_name}: {w}")),
        );
        for (i, el) in sel.networks.iter().enumerate() {
            idx += 1;
            let id = el.namespaced_name();
            let ifname = pod::element_ifname(el, idx);
            settings.isolation.check(
                pod,
                &format!("networks[{i}]"),
                &el.namespace,
                &id,
                &ifname,
            )?;
            let caps = pod::capability_args(el).map_err(|e| e.to_string())?;
            if let Some(list) =
                nad_list(settings, world, &el.namespace, &el.name, warnings, || {
                    format!("pod {pod_ns}/{pod_name}: networks[{i}]")
                })?
            {
                pod::check_capabilities(pod, i, &id, &caps, &list)?;
                meta_bundle::check_list(
                    &list,
                    &caps,
                    el.cni_args.as_ref(),
                    &settings.force_exec,
                    &env_for(&ifname),
                )
                .map_err(|e| {
                    format!(
                        "pod {pod_ns}/{pod_name}: network {id} ({ifname}): {}",
                        e.msg
                    )
                })?;
            }
            planned.push((ifname, id, !el.default_route.is_empty()));
        }
    }
    let planned: Vec<PlannedInterface<'_>> = planned
        .iter()
        .map(|(ifname, network, default_route)| PlannedInterface {
            ifname,
            network,
            default_route: *default_route,
        })
        .collect();
    pod::check_interfaces(pod, &planned)
}

/// The configuration list of the NAD a pod names (`None` when it cannot be known here:
/// a missing NAD under [`MissingNads::Warn`], or a NAD resolved from the nodes'
/// confDir). `what` is the context ADD puts before a lookup error.
fn nad_list(
    settings: &Settings,
    world: &dyn World,
    namespace: &str,
    name: &str,
    warnings: &mut Vec<String>,
    what: impl Fn() -> String,
) -> Result<Option<Value>, String> {
    let Some(entry) = world.nad(namespace, name) else {
        let m = format!(
            "{}: NetworkAttachmentDefinition {namespace}/{name} not found",
            what()
        );
        return match settings.missing_nads {
            MissingNads::Refuse => Err(m),
            MissingNads::Warn => {
                warnings.push(format!("{m}: the pod's ADD fails until it exists"));
                Ok(None)
            }
        };
    };
    match &entry.config {
        Err(e) => Err(format!("{}: {e}", what())),
        Ok(NadConfig::ConfDir { .. }) => Ok(None),
        Ok(_) => Ok(entry.conflist()),
    }
}
