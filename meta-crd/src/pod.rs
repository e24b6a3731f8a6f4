//! The pod-level rules of a network request that the plugin's ADD and the admission
//! webhook share, so both give the same verdict with the same message: namespace
//! isolation (Multus's `namespaceIsolation` / `globalNamespaces`), the capability
//! arguments a selection element asks for and whether its network declares them, and the
//! interface rules across the pod (unique names, one `default-route`).
//!
//! Messages start with `pod NS/NAME:` like every other pod error of the plugin.

use crate::{Error, NetworkSelectionElement, Result};
use serde_json::{Map, Value};

/// The global namespace when `globalNamespaces` is unset (Multus's default).
pub const DEFAULT_GLOBAL_NAMESPACE: &str = "default";

/// Namespace isolation: which namespaces' NADs a pod may name in its annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// `namespaceIsolation`.
    pub enabled: bool,
    /// `globalNamespaces` as given (empty = unset).
    pub global_namespaces: Vec<String>,
}

impl Isolation {
    /// The namespaces whose NADs any pod may name under isolation: `globalNamespaces`, or
    /// `default` when it is unset (Multus's `NonIsolatedNamespaces`, whose default is
    /// `["default"]` and which a set `globalNamespaces` replaces).
    pub fn global_namespaces(&self) -> Vec<&str> {
        if self.global_namespaces.is_empty() {
            vec![DEFAULT_GLOBAL_NAMESPACE]
        } else {
            self.global_namespaces.iter().map(String::as_str).collect()
        }
    }

    /// Whether a pod in `pod_ns` may name a NAD of `nad_ns`: always without isolation;
    /// with it, only its own namespace and the global ones (Multus's rule in pkg/k8sclient
    /// `GetNetworkDelegates`). The meta plugin's `multusNamespace` is not special: it holds
    /// the networks the configuration names (cluster network, `defaultNetworks`), which
    /// isolation never restricts.
    pub fn may_use(&self, pod_ns: &str, nad_ns: &str) -> bool {
        !self.enabled || pod_ns == nad_ns || self.global_namespaces().contains(&nad_ns)
    }

    /// The isolation rule for what the pod `pod` (namespace, name) names as `what` (e.g.
    /// `networks[1]`, `default-network`): the NAD `id` of namespace `nad_ns` for the
    /// interface `ifname`. The error names the network, the interface, the rule and the
    /// way out.
    pub fn check(
        &self,
        pod: (&str, &str),
        what: &str,
        nad_ns: &str,
        id: &str,
        ifname: &str,
    ) -> std::result::Result<(), String> {
        let (pod_ns, pod_name) = pod;
        if self.may_use(pod_ns, nad_ns) {
            return Ok(());
        }
        let globals = if self.global_namespaces.is_empty() {
            format!("{DEFAULT_GLOBAL_NAMESPACE} (globalNamespaces unset)")
        } else {
            self.global_namespaces().join(", ")
        };
        Err(format!(
            "pod {pod_ns}/{pod_name}: {what} {id} ({ifname}) refused by namespaceIsolation: the NAD's namespace \
             {nad_ns:?} is neither the pod's namespace {pod_ns:?} nor a global namespace [{globals}]; \
             use a NAD of namespace {pod_ns:?} or list {nad_ns:?} in globalNamespaces"
        ))
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Serialize(e.to_string()))
}

/// The interface of the `n`-th network after the cluster network (counting
/// `defaultNetworks` first, from 1) when it names none: `net<n>`. ADD's plan
/// and the admission webhook both name interfaces with this.
pub fn default_ifname(n: usize) -> String {
    format!("net{n}")
}

/// [`default_ifname`], or the element's own `interface`.
pub fn element_ifname(el: &NetworkSelectionElement, n: usize) -> String {
    el.interface.clone().unwrap_or_else(|| default_ifname(n))
}

/// The capability arguments (`runtimeConfig` keys, as the runtime names them) a selection
/// element asks for: `ips`, `mac`, `portMappings`, `bandwidth`, `deviceID`,
/// `infinibandGUID`.
pub fn capability_args(el: &NetworkSelectionElement) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    if !el.ips.is_empty() {
        m.insert("ips".into(), to_value(&el.ips)?);
    }
    if let Some(mac) = &el.mac {
        m.insert("mac".into(), to_value(mac)?);
    }
    if !el.port_mappings.is_empty() {
        m.insert("portMappings".into(), to_value(&el.port_mappings)?);
    }
    if let Some(b) = &el.bandwidth {
        m.insert("bandwidth".into(), to_value(b)?);
    }
    if let Some(d) = &el.device_id {
        m.insert("deviceID".into(), Value::String(d.clone()));
    }
    if let Some(g) = &el.infiniband_guid {
        m.insert("infinibandGUID".into(), to_value(g)?);
    }
    Ok(m)
}

/// The capabilities that any plugin of a configuration list (JSON) declares `true`.
pub fn declared_capabilities(list: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in list
        .get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = p.get("capabilities").and_then(Value::as_object) {
            out.extend(
                c.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone()),
            );
        }
    }
    out
}

/// A capability that element `index` (network `id`) of pod `pod` asks for but that no
/// plugin of its network list declares is refused: the runtime would drop it silently.
pub fn check_capabilities(
    pod: (&str, &str),
    index: usize,
    id: &str,
    caps: &Map<String, Value>,
    list: &Value,
) -> std::result::Result<(), String> {
    let declared = declared_capabilities(list);
    match caps.keys().find(|c| !declared.contains(c)) {
        None => Ok(()),
        Some(cap) => Err(format!(
            "pod {}/{}: networks[{index}] {id} requests {cap:?} but no plugin of that network declares the {cap:?} capability",
            pod.0, pod.1
        )),
    }
}

/// One interface of the pod's plan, for [`check_interfaces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedInterface<'a> {
    /// The interface name in the pod.
    pub ifname: &'a str,
    /// The network it attaches (`ns/name`, or the cluster network's name).
    pub network: &'a str,
    /// Whether it asks for `default-route`.
    pub default_route: bool,
}

/// The rules across a pod's interfaces, in plan order (eth0 first): every interface name
/// once, and `default-route` on at most one network.
pub fn check_interfaces(
    pod: (&str, &str),
    planned: &[PlannedInterface<'_>],
) -> std::result::Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for p in planned {
        if !seen.insert(p.ifname) {
            return Err(format!(
                "pod {}/{}: interface name {:?} is used twice (network {})",
                pod.0, pod.1, p.ifname, p.network
            ));
        }
    }
    if planned.iter().filter(|p| p.default_route).count() > 1 {
        return Err(format!(
            "pod {}/{}: more than one network asks for default-route",
            pod.0, pod.1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn isolation_rules() {
        let off = Isolation::default();
        assert!(off.may_use("a", "b"));
        let on = Isolation {
            enabled: true,
            global_namespaces: vec![],
        };
        assert!(on.may_use("a", "a"));
        assert!(on.may_use("a", "default"));
        assert!(!on.may_use("a", "kube-system"));
        let e = on
            .check(("a", "p"), "networks[0]", "b", "b/n", "net1")
            .unwrap_err();
        assert!(e.contains("[default (globalNamespaces unset)]"), "{e}");
        let g = Isolation {
            enabled: true,
            global_namespaces: vec!["x".into(), "y".into()],
        };
        assert!(!g.may_use("a", "default"));
        assert!(g.may_use("a", "y"));
        let e = g
            .check(("a", "p"), "networks[0]", "b", "b/n", "net1")
            .unwrap_err();
        assert!(e.contains("[x, y]"), "{e}");
    }

    #[test]
    fn capabilities_and_interfaces() {
        let list = json!({"plugins": [{"type": "a", "capabilities": {"mac": true, "ips": false}}]});
        assert_eq!(declared_capabilities(&list), vec!["mac".to_string()]);
        let mut caps = Map::new();
        caps.insert("mac".into(), json!("02:00:00:00:00:01"));
        assert!(check_capabilities(("n", "p"), 0, "n/x", &caps, &list).is_ok());
        caps.insert("ips".into(), json!(["10.0.0.1/24"]));
        let e = check_capabilities(("n", "p"), 0, "n/x", &caps, &list).unwrap_err();
        assert!(e.contains("requests \"ips\""), "{e}");
        let i = |ifname, default_route| PlannedInterface {
            ifname,
            network: "n/x",
            default_route,
        };
        assert!(check_interfaces(("n", "p"), &[i("eth0", false), i("net1", true)]).is_ok());
        let e = check_interfaces(("n", "p"), &[i("eth0", false), i("eth0", false)]).unwrap_err();
        assert!(e.contains("\"eth0\" is used twice"), "{e}");
        let e = check_interfaces(("n", "p"), &[i("net1", true), i("net2", true)]).unwrap_err();
        assert!(
            e.contains("more than one network asks for default-route"),
            "{e}"
        );
    }
}
