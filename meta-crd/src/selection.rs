//! The network-selection annotation (`k8s.v1.cni.cncf.io/networks`) and the Multus
//! default-network annotation (`v1.multus-cni.io/default-network`).
//!
//! Two formats, told apart as Multus does: a value containing any of `[`, `{` or `"` is the
//! JSON list form, anything else the comma-delimited form.
//!
//! Comma form: `name`, `namespace/name`, `name@ifname`, `namespace/name@ifname`, separated by
//! commas; whitespace around items and around the `/` and `@` separators is ignored (Multus
//! trims the same places).
//!
//! JSON form: a list of objects with the NPWG v1.3 keys `name`, `namespace`, `interface`,
//! `ips`, `mac`, `default-route`, `portMappings`, `bandwidth`, `cni-args`, `infiniband-guid`,
//! plus `deviceID` (Multus), `ipam-claim-reference` (network-attachment-definition-client)
//! and the pre-3.2 Multus alias `interfaceRequest`.
//!
//! Compatibility decisions (where Multus is lax and we are not, the annotation would have
//! failed later in Multus anyway, or the NPWG spec calls it invalid):
//! - Like Go's `encoding/json`, keys match case-insensitively when no exact match exists
//!   (with a warning), `null` counts as absent, and a repeated key's last value wins.
//! - Unknown keys are ignored, as Multus does, but kept in
//!   [`NetworkSelectionElement::extra`]; those without a `.` (NPWG reserves them) also produce
//!   a warning. Reverse-domain keys (`org.example.key`) are silent.
//! - `name` is required and, like `namespace`, must be a DNS-1123 label, in both forms
//!   (Multus checks this only in the comma form).
//! - `interface` must be a valid Linux interface name in both forms (Multus checks only the
//!   comma form, and not for `:`), and two elements may not request the same interface.
//! - An empty comma item (`a,,b`), an empty namespace before `/`, or an empty interface after
//!   `@` is an error (Multus would carry on with an empty name and fail later).
//! - An empty annotation value (or only whitespace) selects no network.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::validate::{
    HwAddr, IpRequest, parse_ip, validate_dns1123_subdomain, validate_interface_name,
    validate_namespace, validate_network_name,
};

/// Pod annotation that selects additional networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Pod annotation (Multus) that replaces the cluster default network.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// A host port mapping request (`portMappings` entry), passed to the delegate as the
/// `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host, 1..=65535.
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    /// Port in the pod, 1..=65535.
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (any case), as written; absent means the plugin's default (tcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host address to bind, absent for all.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// A traffic shaping request (`bandwidth`), passed to the delegate as the `bandwidth`
/// capability. Missing members are 0, as in Go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Ingress rate in bits per second.
    #[serde(rename = "ingressRate")]
    pub ingress_rate: u64,
    /// Ingress burst in bits.
    #[serde(rename = "ingressBurst")]
    pub ingress_burst: u64,
    /// Egress rate in bits per second.
    #[serde(rename = "egressRate")]
    pub egress_rate: u64,
    /// Egress burst in bits.
    #[serde(rename = "egressBurst")]
    pub egress_burst: u64,
}

/// One validated network selection (one attachment request).
///
/// Serializes to the canonical NPWG JSON element (absent fields omitted). Deserializing does
/// **not** validate; use [`parse_network_selection`] for untrusted input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSelectionElement {
    /// Name of the NetworkAttachmentDefinition.
    pub name: String,
    /// Its namespace; the default namespace was applied when the annotation gave none.
    pub namespace: String,
    /// Requested interface name in the pod (`CNI_IFNAME`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Requested addresses (`ips` capability / `args.cni.ips`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpRequest>,
    /// Requested MAC address (`mac` capability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<HwAddr>,
    /// Requested InfiniBand GUID (`infinibandGUID` capability).
    #[serde(
        rename = "infiniband-guid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub infiniband_guid: Option<HwAddr>,
    /// Requested host port mappings (`portMappings` capability).
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub port_mappings: Vec<PortMapping>,
    /// Requested traffic shaping (`bandwidth` capability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Extra CNI `args` merged into the delegate configuration (`args.cni`).
    #[serde(rename = "cni-args", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// Gateways whose default routes this attachment should own.
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_route: Vec<IpAddr>,
    /// Requested device (e.g. a PCI address), the `deviceID` capability (Multus key).
    #[serde(rename = "deviceID", default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Name of the IPAMClaim that holds this attachment's addresses.
    #[serde(
        rename = "ipam-claim-reference",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_claim_reference: Option<String>,
    /// Keys this crate does not interpret, verbatim (ignored, as Multus does).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NetworkSelectionElement {
    /// A selection of `namespace/name` with nothing else requested.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NetworkSelectionElement {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    /// `namespace/name`, the network name Multus uses in network-status and its cache.
    pub fn namespaced_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Which syntax the annotation used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionFormat {
    /// The value was empty or only whitespace.
    Empty,
    /// `ns/name@if, name2` style.
    CommaDelimited,
    /// `[{"name": ...}]` style.
    Json,
}

/// Something accepted but worth telling the user (a webhook can return these as admission
/// warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWarning {
    /// The annotation key.
    pub annotation: &'static str,
    /// Zero-based element index.
    pub index: usize,
    /// The key the warning is about, as written.
    pub key: String,
    /// What was done about it.
    pub message: String,
}

impl std::fmt::Display for ParseWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}].{}: {}",
            self.annotation, self.index, self.key, self.message
        )
    }
}

/// The parsed `k8s.v1.cni.cncf.io/networks` annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSelection {
    /// The syntax used.
    pub format: SelectionFormat,
    /// The selections, in annotation order.
    pub networks: Vec<NetworkSelectionElement>,
    /// Non-fatal findings (unknown keys, deprecated keys, ...).
    pub warnings: Vec<ParseWarning>,
}

/// The parsed `v1.multus-cni.io/default-network` annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultNetworkSelection {
    /// The network that replaces the cluster default network.
    pub network: NetworkSelectionElement,
    /// Non-fatal findings, including requests that are ignored for the default network.
    pub warnings: Vec<ParseWarning>,
}

/// Parses the `k8s.v1.cni.cncf.io/networks` annotation value.
///
/// `default_namespace` (the pod's namespace) is applied to every element that names none.
/// Fails on the first invalid element, with its index and field.
pub fn parse_network_selection(value: &str, default_namespace: &str) -> Result<NetworkSelection> {
    parse_annotation(NETWORKS_ANNOTATION, value, default_namespace)
}

/// Parses the `v1.multus-cni.io/default-network` annotation value (`name`, `ns/name`, or —
/// as Multus accepts — either syntax of the networks annotation with exactly one element).
///
/// `default_namespace` is where Multus looks when no namespace is given: its
/// `multusNamespace` setting (`kube-system` by default), not the pod's namespace.
/// Requests Multus ignores for the default network (interface, ips, mac, infiniband-guid,
/// portMappings, bandwidth, deviceID) are kept but reported as warnings.
pub fn parse_default_network(
    value: &str,
    default_namespace: &str,
) -> Result<DefaultNetworkSelection> {
    let ann = DEFAULT_NETWORK_ANNOTATION;
    let mut parsed = parse_annotation(ann, value, default_namespace)?;
    match parsed.networks.len() {
        1 => {}
        0 => {
            return Err(Error::Annotation {
                annotation: ann,
                reason: "names no network: exactly one network is required".to_string(),
            });
        }
        n => {
            return Err(Error::Annotation {
                annotation: ann,
                reason: format!("names {n} networks: exactly one network is required"),
            });
        }
    }
    let network = parsed.networks.remove(0);
    let ignored: [(&str, bool); 7] = [
        ("interface", network.interface.is_some()),
        ("ips", !network.ips.is_empty()),
        ("mac", network.mac.is_some()),
        ("infiniband-guid", network.infiniband_guid.is_some()),
        ("portMappings", !network.port_mappings.is_empty()),
        ("bandwidth", network.bandwidth.is_some()),
        ("deviceID", network.device_id.is_some()),
    ];
    for (key, present) in ignored {
        if present {
            parsed.warnings.push(ParseWarning {
                annotation: ann,
                index: 0,
                key: key.to_string(),
                message: "ignored for the cluster default network".to_string(),
            });
        }
    }
    Ok(DefaultNetworkSelection {
        network,
        warnings: parsed.warnings,
    })
}

fn parse_annotation(
    ann: &'static str,
    value: &str,
    default_namespace: &str,
) -> Result<NetworkSelection> {
    let mut warnings = Vec::new();
    let (format, mut networks) = if value.trim().is_empty() {
        (SelectionFormat::Empty, Vec::new())
    } else if value.contains(['[', '{', '"']) {
        (
            SelectionFormat::Json,
            parse_json(ann, value, &mut warnings)?,
        )
    } else {
        (SelectionFormat::CommaDelimited, parse_comma(ann, value)?)
    };

    let mut seen_ifnames: HashMap<String, usize> = HashMap::new();
    for (index, net) in networks.iter_mut().enumerate() {
        if net.namespace.is_empty() {
            if default_namespace.is_empty() {
                return Err(elem_err(
                    ann,
                    index,
                    Some("namespace"),
                    "no namespace given and no default namespace to apply",
                ));
            }
            net.namespace = default_namespace.to_string();
        }
        validate_namespace(&net.namespace)
            .map_err(|r| elem_err(ann, index, Some("namespace"), r))?;
        if let Some(ifname) = &net.interface {
            if let Some(first) = seen_ifnames.get(ifname) {
                return Err(elem_err(
                    ann,
                    index,
                    Some("interface"),
                    format!("interface {ifname:?} is already requested by element {first}"),
                ));
            }
            seen_ifnames.insert(ifname.clone(), index);
        }
    }
    Ok(NetworkSelection {
        format,
        networks,
        warnings,
    })
}

fn elem_err(
    annotation: &'static str,
    index: usize,
    field: Option<&str>,
    reason: impl Into<String>,
) -> Error {
    Error::Element {
        annotation,
        index,
        field: field.map(str::to_string),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------
// comma-delimited form

fn parse_comma(ann: &'static str, value: &str) -> Result<Vec<NetworkSelectionElement>> {
    let mut out = Vec::new();
    for (index, raw) in value.split(',').enumerate() {
        let item = raw.trim();
        let err = |field: Option<&str>, reason: String| elem_err(ann, index, field, reason);
        if item.is_empty() {
            return Err(err(
                None,
                "empty network reference (stray comma?)".to_string(),
            ));
        }
        let slash: Vec<&str> = item.split('/').collect();
        let (namespace, rest) = match slash.as_slice() {
            [rest] => (None, *rest),
            [ns, rest] => (Some(ns.trim()), *rest),
            _ => {
                return Err(err(
                    None,
                    format!(
                        "{item:?} has more than one '/': expected [namespace/]name[@interface]"
                    ),
                ));
            }
        };
        let at: Vec<&str> = rest.split('@').collect();
        let (name, interface) = match at.as_slice() {
            [name] => (name.trim(), None),
            [name, ifname] => (name.trim(), Some(ifname.trim())),
            _ => {
                return Err(err(
                    None,
                    format!(
                        "{item:?} has more than one '@': expected [namespace/]name[@interface]"
                    ),
                ));
            }
        };
        let namespace = match namespace {
            Some("") => {
                return Err(err(
                    Some("namespace"),
                    "empty namespace before '/'".to_string(),
                ));
            }
            Some(ns) => {
                validate_namespace(ns).map_err(|r| err(Some("namespace"), r))?;
                ns.to_string()
            }
            None => String::new(),
        };
        if name.is_empty() {
            return Err(err(Some("name"), "network name is required".to_string()));
        }
        validate_network_name(name).map_err(|r| err(Some("name"), r))?;
        let interface = match interface {
            Some("") => {
                return Err(err(
                    Some("interface"),
                    "empty interface name after '@'".to_string(),
                ));
            }
            Some(ifname) => {
                validate_interface_name(ifname).map_err(|r| err(Some("interface"), r))?;
                Some(ifname.to_string())
            }
            None => None,
        };
        out.push(NetworkSelectionElement {
            name: name.to_string(),
            namespace,
            interface,
            ..Default::default()
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// JSON form

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The keys of one JSON object resolved against a fixed key set the way Go's
/// `encoding/json` does: exact match, else ASCII case-insensitive; later occurrences win.
struct Fields<'a> {
    /// (canonical key, key as written, value), `null` values dropped.
    known: Vec<(&'static str, &'a str, &'a Value)>,
    /// Keys that matched nothing.
    unknown: Vec<(&'a str, &'a Value)>,
}

impl<'a> Fields<'a> {
    fn resolve(obj: &'a Map<String, Value>, keys: &[&'static str]) -> Self {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for (k, v) in obj {
            let canonical = keys
                .iter()
                .find(|c| **c == k.as_str())
                .or_else(|| keys.iter().find(|c| c.eq_ignore_ascii_case(k)));
            match canonical {
                Some(c) => {
                    known.retain(|(kc, _, _)| kc != c);
                    if !v.is_null() {
                        known.push((*c, k.as_str(), v));
                    }
                }
                None => unknown.push((k.as_str(), v)),
            }
        }
        Fields { known, unknown }
    }

    fn get(&self, key: &str) -> Option<(&'a str, &'a Value)> {
        self.known
            .iter()
            .find(|(c, _, _)| *c == key)
            .map(|(_, written, v)| (*written, *v))
    }
}

struct ElemCtx<'w> {
    ann: &'static str,
    index: usize,
    warnings: &'w mut Vec<ParseWarning>,
}

impl ElemCtx<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Element {
            annotation: self.ann,
            index: self.index,
            field: Some(field.into()),
            reason: reason.into(),
        }
    }

    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ParseWarning {
            annotation: self.ann,
            index: self.index,
            key: key.into(),
            message: message.into(),
        });
    }

    fn string<'v>(&self, field: &str, v: &'v Value) -> Result<&'v str> {
        v.as_str()
            .ok_or_else(|| self.err(field, format!("must be a string, got {}", type_name(v))))
    }

    fn string_list<'v>(&self, field: &str, v: &'v Value) -> Result<Vec<(String, &'v str)>> {
        let list = v.as_array().ok_or_else(|| {
            self.err(
                field,
                format!("must be a list of strings, got {}", type_name(v)),
            )
        })?;
        list.iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{field}[{i}]");
                let s = self.string(&path, item)?;
                Ok((path, s))
            })
            .collect()
    }

    fn int(&self, field: &str, v: &Value, min: u64, max: u64) -> Result<u64> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            _ => {
                return Err(self.err(field, format!("must be an integer, got {}", type_name(v))));
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(
                field,
                format!("must be an integer from {min} to {max}, got {v}"),
            )),
        }
    }
}

const ELEMENT_KEYS: &[&str] = &[
    "name",
    "namespace",
    "ips",
    "mac",
    "infiniband-guid",
    "interface",
    "interfaceRequest",
    "portMappings",
    "bandwidth",
    "deviceID",
    "cni-args",
    "default-route",
    "ipam-claim-reference",
];

fn note_key_spelling(ctx: &mut ElemCtx<'_>, fields: &Fields<'_>) {
    let case_variants: Vec<(String, &str)> = fields
        .known
        .iter()
        .filter(|(c, written, _)| c != written)
        .map(|(c, written, _)| (written.to_string(), *c))
        .collect();
    for (written, canonical) in case_variants {
        ctx.warn(
            written,
            format!(
                "matched key {canonical:?} case-insensitively (as Go does); write {canonical:?}"
            ),
        );
    }
}

fn parse_json(
    ann: &'static str,
    value: &str,
    warnings: &mut Vec<ParseWarning>,
) -> Result<Vec<NetworkSelectionElement>> {
    let doc: Value = serde_json::from_str(value).map_err(|e| Error::Annotation {
        annotation: ann,
        reason: format!("invalid JSON: {e}"),
    })?;
    let list = match doc {
        Value::Array(list) => list,
        other => {
            return Err(Error::Annotation {
                annotation: ann,
                reason: format!(
                    "must be a JSON list of objects ([{{\"name\": ...}}, ...]), got {}",
                    type_name(&other)
                ),
            });
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let mut ctx = ElemCtx {
            ann,
            index,
            warnings,
        };
        out.push(parse_element(&mut ctx, item)?);
    }
    Ok(out)
}

fn parse_element(ctx: &mut ElemCtx<'_>, item: &Value) -> Result<NetworkSelectionElement> {
    let Value::Object(obj) = item else {
        return Err(Error::Element {
            annotation: ctx.ann,
            index: ctx.index,
            field: None,
            reason: format!("must be a JSON object, got {}", type_name(item)),
        });
    };
    let fields = Fields::resolve(obj, ELEMENT_KEYS);
    note_key_spelling(ctx, &fields);
    let mut el = NetworkSelectionElement::default();

    // name (required)
    match fields.get("name") {
        Some((_, v)) => {
            let name = ctx.string("name", v)?;
            if name.is_empty() {
                return Err(ctx.err("name", "network name is required"));
            }
            validate_network_name(name).map_err(|r| ctx.err("name", r))?;
            el.name = name.to_string();
        }
        None => return Err(ctx.err("name", "network name is required")),
    }

    // namespace (empty = default, applied by the caller)
    if let Some((_, v)) = fields.get("namespace") {
        let ns = ctx.string("namespace", v)?;
        if !ns.is_empty() {
            validate_namespace(ns).map_err(|r| ctx.err("namespace", r))?;
            el.namespace = ns.to_string();
        }
    }

    // interface, with the pre-3.2 Multus alias
    let mut ifname = None;
    if let Some((_, v)) = fields.get("interface") {
        let s = ctx.string("interface", v)?;
        if !s.is_empty() {
            ifname = Some(("interface", s));
        }
    }
    if let Some((written, v)) = fields.get("interfaceRequest") {
        let s = ctx.string("interfaceRequest", v)?;
        if ifname.is_none() && !s.is_empty() {
            ifname = Some(("interfaceRequest", s));
            ctx.warn(written, "deprecated Multus key; use \"interface\"");
        } else {
            ctx.warn(
                written,
                "deprecated Multus key ignored: \"interface\" is set",
            );
        }
    }
    if let Some((field, s)) = ifname {
        validate_interface_name(s).map_err(|r| ctx.err(field, r))?;
        el.interface = Some(s.to_string());
    }

    // ips
    if let Some((written, v)) = fields.get("ips") {
        let list = ctx.string_list("ips", v)?;
        if list.is_empty() {
            ctx.warn(
                written,
                "empty list ignored (NPWG requires at least one address)",
            );
        }
        for (path, s) in list {
            el.ips
                .push(s.parse().map_err(|r: String| ctx.err(path, r))?);
        }
    }

    // mac, infiniband-guid (both validated with net.ParseMAC, as Multus does)
    for key in ["mac", "infiniband-guid"] {
        if let Some((_, v)) = fields.get(key) {
            let s = ctx.string(key, v)?;
            if !s.is_empty() {
                let hw: HwAddr = s.parse().map_err(|r: String| ctx.err(key, r))?;
                if key == "mac" {
                    el.mac = Some(hw);
                } else {
                    el.infiniband_guid = Some(hw);
                }
            }
        }
    }

    // default-route
    if let Some((_, v)) = fields.get("default-route") {
        for (path, s) in ctx.string_list("default-route", v)? {
            el.default_route
                .push(parse_ip(s).map_err(|r| ctx.err(path, r))?);
        }
    }

    // portMappings
    if let Some((_, v)) = fields.get("portMappings") {
        let list = v.as_array().ok_or_else(|| {
            ctx.err(
                "portMappings",
                format!("must be a list of objects, got {}", type_name(v)),
            )
        })?;
        for (i, pm) in list.iter().enumerate() {
            el.port_mappings
                .push(parse_port_mapping(ctx, &format!("portMappings[{i}]"), pm)?);
        }
    }

    // bandwidth
    if let Some((_, v)) = fields.get("bandwidth") {
        el.bandwidth = Some(parse_bandwidth(ctx, v)?);
    }

    // cni-args
    if let Some((_, v)) = fields.get("cni-args") {
        match v {
            Value::Object(m) => el.cni_args = Some(m.clone()),
            other => {
                return Err(ctx.err(
                    "cni-args",
                    format!("must be an object, got {}", type_name(other)),
                ));
            }
        }
    }

    // deviceID
    if let Some((_, v)) = fields.get("deviceID") {
        let s = ctx.string("deviceID", v)?;
        if !s.is_empty() {
            el.device_id = Some(s.to_string());
        }
    }

    // ipam-claim-reference
    if let Some((_, v)) = fields.get("ipam-claim-reference") {
        let s = ctx.string("ipam-claim-reference", v)?;
        if !s.is_empty() {
            validate_dns1123_subdomain(s).map_err(|r| ctx.err("ipam-claim-reference", r))?;
            if !el.ips.is_empty() {
                return Err(ctx.err(
                    "ipam-claim-reference",
                    "cannot be used together with \"ips\": the IPAMClaim decides the addresses; drop one of them",
                ));
            }
            el.ipam_claim_reference = Some(s.to_string());
        }
    }

    for (k, v) in &fields.unknown {
        if !k.contains('.') {
            ctx.warn(
                *k,
                "unknown key ignored (keys without a '.' are reserved by the NPWG spec)",
            );
        }
        el.extra.insert(k.to_string(), (*v).clone());
    }
    Ok(el)
}

fn parse_port_mapping(ctx: &mut ElemCtx<'_>, path: &str, v: &Value) -> Result<PortMapping> {
    let Value::Object(obj) = v else {
        return Err(ctx.err(path, format!("must be an object, got {}", type_name(v))));
    };
    let fields = Fields::resolve(obj, &["hostPort", "containerPort", "protocol", "hostIP"]);
    let port = |key: &str| -> Result<u16> {
        let field = format!("{path}.{key}");
        match fields.get(key) {
            Some((_, v)) => ctx.int(&field, v, 1, 65535).map(|n| n as u16),
            None => Err(ctx.err(field, "is required")),
        }
    };
    let host_port = port("hostPort")?;
    let container_port = port("containerPort")?;
    let mut pm = PortMapping {
        host_port,
        container_port,
        protocol: None,
        host_ip: None,
    };
    if let Some((_, v)) = fields.get("protocol") {
        let field = format!("{path}.protocol");
        let s = ctx.string(&field, v)?;
        if !s.is_empty() {
            if !["tcp", "udp", "sctp"]
                .iter()
                .any(|p| p.eq_ignore_ascii_case(s))
            {
                return Err(ctx.err(
                    field,
                    format!("{s:?} is not a supported protocol: expected tcp, udp or sctp"),
                ));
            }
            pm.protocol = Some(s.to_string());
        }
    }
    if let Some((_, v)) = fields.get("hostIP") {
        let field = format!("{path}.hostIP");
        let s = ctx.string(&field, v)?;
        if !s.is_empty() {
            pm.host_ip = Some(parse_ip(s).map_err(|r| ctx.err(field, r))?);
        }
    }
    note_nested_keys(ctx, path, &fields);
    Ok(pm)
}

fn parse_bandwidth(ctx: &mut ElemCtx<'_>, v: &Value) -> Result<Bandwidth> {
    let Value::Object(obj) = v else {
        return Err(ctx.err(
            "bandwidth",
            format!("must be an object, got {}", type_name(v)),
        ));
    };
    let fields = Fields::resolve(
        obj,
        &["ingressRate", "ingressBurst", "egressRate", "egressBurst"],
    );
    let get = |key: &str| -> Result<u64> {
        match fields.get(key) {
            Some((_, v)) => ctx.int(&format!("bandwidth.{key}"), v, 0, i64::MAX as u64),
            None => Ok(0),
        }
    };
    let bw = Bandwidth {
        ingress_rate: get("ingressRate")?,
        ingress_burst: get("ingressBurst")?,
        egress_rate: get("egressRate")?,
        egress_burst: get("egressBurst")?,
    };
    note_nested_keys(ctx, "bandwidth", &fields);
    Ok(bw)
}

fn note_nested_keys(ctx: &mut ElemCtx<'_>, path: &str, fields: &Fields<'_>) {
    let mut notes = Vec::new();
    for (c, written, _) in &fields.known {
        if c != written {
            notes.push((
                format!("{path}.{written}"),
                format!("matched key {c:?} case-insensitively (as Go does); write {c:?}"),
            ));
        }
    }
    for (k, _) in &fields.unknown {
        notes.push((format!("{path}.{k}"), "unknown key ignored".to_string()));
    }
    for (k, m) in notes {
        ctx.warn(k, m);
    }
}
